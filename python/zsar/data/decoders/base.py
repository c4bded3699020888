"""The decoder contract and registry, in the vocabulary of the op backends (:mod:`zsar.ops._dispatch`).

A decoder is an object with a ``name``, its capabilities as data (the device it decodes on, the
codecs it decodes, its dispatch ``priority``), :meth:`Decoder.not_supported_reasons` derived from
them, and one :meth:`Decoder.read_frames` signature. A decoder that can also decode, resize, crop
and normalise whole batches (DALI) offers :meth:`Decoder.clip_pipeline`; the loader then feeds it
encoded files instead of decoding one file at a time.

How to add a decoder: subclass :class:`Decoder`, set ``name``, ``device_type``, ``codecs`` and
``priority``, implement :meth:`Decoder.read_frames` (and :meth:`Decoder.unavailable` when it needs an
optional package), and decorate the class with :func:`register_decoder`. ``read_frames(...,
backend="auto")``, :class:`~zsar.data.VideoLoader` and :class:`~zsar.data.VideoClipDataset` then
offer it by name and try it in priority order.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..._registry import Registry
from ...ops import Dispatcher
from ..video import VideoInfo

log = logging.getLogger(__name__)

__all__ = ["DECODERS", "DecodeRequest", "Decoder", "DecoderUnavailableError", "decoder_dispatcher", "decoder_names",
           "fallback_decoder", "get_decoder", "register_decoder", "select_decoder"]


class DecoderUnavailableError(ValueError):
    """A named decoder cannot decode a file on the requested device (the message names the file,
    its codec, the decoder and why)."""


@dataclass(frozen=True)
class DecodeRequest:
    """What dispatch asks a decoder.

    Attributes:
        codec: the file's video codec (FFmpeg decoder name), or None to ask about the decoder alone.
        device: where the caller lets decoding run: ``cpu`` admits CPU decoders only, ``cuda[:i]``
            admits GPU decoders on that device and CPU decoders too.
    """

    codec: str | None
    device: torch.device

    @classmethod
    def of(cls, info: VideoInfo | None, device: str | torch.device | None = None) -> "DecodeRequest":
        """The request for the file ``info`` (None: no file); ``device`` None means the current CUDA
        device when there is one, else the CPU."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(info.codec if info is not None else None, torch.device(device))


class Decoder:
    """Base class of every registered decoder (see the module docstring)."""

    #: Registry name ("pyav", "dali-cpu", ...).
    name: ClassVar[str] = ""
    #: Where it decodes and where its frames land: "cpu" or "cuda".
    device_type: ClassVar[str] = "cpu"
    #: Codecs it decodes (FFmpeg decoder names); None: every codec FFmpeg decodes.
    codecs: ClassVar[frozenset[str] | None] = None
    #: Dispatch order of ``backend="auto"``: lower first (the fastest decoder that can serve wins).
    priority: ClassVar[int] = 100

    def unavailable(self) -> str | None:
        """Why this decoder cannot run in this environment at all (a missing package), or None."""
        return None

    def can_serve(self, request: DecodeRequest) -> bool:
        """Whether this decoder can serve ``request`` (what the dispatcher asks)."""
        return not self.not_supported_reasons(request)

    def not_supported_reasons(self, request: DecodeRequest) -> list[str]:
        """Why this decoder cannot serve ``request``; empty when it can. Derived from the class's
        capabilities (:attr:`device_type`, :attr:`codecs`) and :meth:`unavailable`."""
        reasons = []
        missing = self.unavailable()
        if missing:
            reasons.append(missing)
        if self.device_type == "cuda":
            if not torch.cuda.is_available():
                reasons.append("no CUDA device")
            elif request.device.type != "cuda":
                reasons.append(f"decodes on a CUDA device, {request.device.type} requested")
        if self.codecs is not None and request.codec is not None and request.codec not in self.codecs:
            reasons.append(f"does not decode {request.codec} (it decodes {', '.join(sorted(self.codecs))})")
        return reasons

    def output_device(self, device: torch.device) -> torch.device:
        """Where :meth:`read_frames` puts frames when asked for ``device``."""
        if self.device_type == "cuda":
            return torch.device("cuda", device.index if device.type == "cuda" and device.index is not None
                                else torch.cuda.current_device())
        return torch.device("cpu")

    def read_frames(self, path: str | os.PathLike, indices: np.ndarray, device: torch.device,
                    info: VideoInfo) -> torch.Tensor:
        """Frames ``indices`` of the video ``path`` as uint8 ``(T, H, W, 3)`` RGB on
        :meth:`output_device` ``(device)``.

        Args:
            path: the video file.
            indices: 1-D int64 frame indices, each in ``[0, info.num_frames)``, any order, repeats allowed.
            device: the requested device (see :class:`DecodeRequest`).
            info: the file's :func:`~zsar.data.probe_video` result (not truncated).

        Raises:
            VideoError: naming the file when it cannot be decoded.
        """
        raise NotImplementedError

    #: Whether :meth:`clip_pipeline` is implemented.
    has_clip_pipeline: ClassVar[bool] = False

    def clip_pipeline(self, source, spec, batch_size: int, num_threads: int, device: torch.device, seed: int):
        """A batch pipeline that decodes, resizes, crops and normalises whole batches (optional).

        ``source`` is the loader's batch callback (see :class:`zsar.data.loader.VideoLoader`); the
        pipeline outputs ``clips`` and ``position`` per sample.
        """
        raise NotImplementedError(f"decoder {self.name!r} has no batch pipeline")

    def __repr__(self) -> str:
        return f"<decoder {self.name}>"


#: Name -> the registered :class:`Decoder` instance (a read-only view; add one with :func:`register_decoder`).
DECODERS: Registry[Decoder] = Registry("decoder", "backend")
_dispatcher: tuple[int, Dispatcher[Decoder]] | None = None  # (DECODERS.version it was built at, dispatcher)


def register_decoder(cls: type[Decoder]) -> type[Decoder]:
    """Class decorator: registers one instance of ``cls`` under ``cls.name``.

    Raises:
        TypeError / ValueError: not a named :class:`Decoder` subclass, a bad ``device_type``, or a
            name already registered (``DECODERS.unregister(name)`` first to replace it).
    """
    if not (isinstance(cls, type) and issubclass(cls, Decoder)) or not cls.name:
        raise TypeError(f"register_decoder: expected a Decoder subclass with a name, got {cls!r}")
    if cls.device_type not in ("cpu", "cuda"):
        raise ValueError(f"register_decoder: {cls.__name__}.device_type must be 'cpu' or 'cuda', "
                         f"got {cls.device_type!r}")
    DECODERS.register(cls.name, cls())
    return cls


def decoder_dispatcher() -> Dispatcher[Decoder]:
    """The registered decoders in dispatch order, as an op :class:`~zsar.ops.Dispatcher`."""
    global _dispatcher
    if _dispatcher is None or _dispatcher[0] != DECODERS.version:
        _dispatcher = (DECODERS.version,
                       Dispatcher("read_frames", sorted(DECODERS.values(), key=lambda d: d.priority)))
    return _dispatcher[1]


def decoder_names() -> tuple[str, ...]:
    """The registered decoders' names, in dispatch order."""
    return decoder_dispatcher().names


def fallback_decoder(backend: str = "auto") -> str:
    """``backend``, or for ``"auto"`` the decoder that reads any file without looking at it first:
    the first registered decoder, in dispatch order, that decodes every codec on the CPU and is
    installed (built-in: ``pyav``). Readers that cannot choose per codec use it (a dataset whose
    workers open files one by one, a loader whose first file is unreadable).

    Raises:
        ValueError: an unknown ``backend``, or no registered decoder decodes every codec on the CPU.
    """
    if backend != "auto":
        return get_decoder(backend).name
    request = DecodeRequest(None, torch.device("cpu"))
    for decoder in decoder_dispatcher().backends:
        if decoder.codecs is None and decoder.device_type == "cpu" and decoder.can_serve(request):
            return decoder.name
    raise ValueError(f"no registered decoder decodes every codec on the CPU (registered: {', '.join(decoder_names())})")


def get_decoder(name: str) -> Decoder:
    """The registered decoder ``name``; ``ValueError`` listing the names (and ``auto``) otherwise."""
    return DECODERS.get(name, extra=("auto",))


_SAID: set[tuple] = set()  # the kinds of file (codec, device type, decoder) whose decoder was already said


def _say_choice(info: VideoInfo, request: DecodeRequest, chosen: str, passed: list[str]) -> None:
    """Log the decoder ``auto`` chose, at info level once per kind of file (codec and device), so that a
    run says which decoder its numbers came from (decoders' pixels differ slightly, e.g. DALI's VP9 vs
    PyAV's); the per-file detail stays at debug level."""
    kind = (info.codec, str(request.device), chosen)
    why = f" (passed over {'; '.join(passed)})" if passed else ""
    if kind not in _SAID:
        _SAID.add(kind)
        log.info("decoding %s videos with %s%s (e.g. %s; --backend/backend= picks another)", info.codec, chosen,
                 why, info.path)
    log.debug("%s: decoding %s with %s%s", info.path, info.codec, chosen, why)


def select_decoder(info: VideoInfo | None, backend: str = "auto",
                   device: str | torch.device | None = None) -> Decoder:
    """The decoder for the file ``info`` (None: the decoder alone): ``backend="auto"`` takes the
    first that can serve it on ``device`` and logs why the earlier ones were passed over; a named
    one is checked.

    Raises:
        ValueError: an unknown name.
        DecoderUnavailableError: the named decoder cannot serve the file, naming the file, its codec,
            the decoder and why.
    """
    request = DecodeRequest.of(info, device)
    if backend == "auto":
        dispatcher = decoder_dispatcher()
        chosen = dispatcher.select(request)
        passed = [f"{name}: {'; '.join(why)}" for name, why in dispatcher.reasons(request).items()
                  if why and dispatcher.names.index(name) < dispatcher.names.index(chosen.name)]
        if info is not None:
            _say_choice(info, request, chosen.name, passed)
        return chosen
    decoder = get_decoder(backend)
    why = decoder.not_supported_reasons(request)
    if why:
        what = f"{info.path}: backend {backend!r} cannot decode this {info.codec} video" if info is not None \
            else f"backend {backend!r} is not usable here"
        raise DecoderUnavailableError(f"{what}: {'; '.join(why)}")
    return decoder

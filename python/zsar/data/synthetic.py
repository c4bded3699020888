"""A synthetic compositional action benchmark, rendered procedurally and written as real video files.

Every class is a composition of one value per *part*: a colour, a shape and a motion, labelled in
plain words ("red circle moving left", "blue star shrinking"). A seeded split holds out whole
compositions as the unseen classes, so every unseen label shares words with seen labels (the
compositional hypothesis behind ResT's semantic transfer: "red circle moving left" is close to
"red circle moving right", "blue circle moving left" and "red square moving left", and so should
its visual prototype be). By default the split guarantees that each pair of parts of an unseen class
(colour + shape, colour + motion, shape + motion) occurs in some seen class.

What the renderer draws, and why:

* ResT's frame encoder ends in global average pooling, so a class must be recognisable from
  position-free per-frame statistics and their order in time. Colour is a pooled statistic; shape
  is a local pattern; a motion is drawn as a *motion trail* (fading copies of the object at its
  recent past states, like motion blur or phosphor persistence), so the direction of travel is a
  local, translation-invariant pattern in every frame, and size changes show in the pooled
  statistics over time.
* Nuisances, scaled by the config: grey distractor objects drifting about (never in a label's
  colour or shape), a textured background of random brightness and gradient, per-pixel noise,
  camera shake, and jitter of speed, size, colour and orientation.
* Optional audio (for audio-visual models): a tone whose pitch is set by one part (the shape by
  default), with a little noise.

The audio-visual variant (:meth:`SyntheticConfig.audio_visual`, for MZST) adds a fourth part, a
*sound* ("circle falling beeping", "square growing humming"), heard in the audio track and never
drawn, while the shape and motion are drawn and never heard (the colour becomes a random nuisance,
not part of the label). Each sound has its own timbre and rhythm (:data:`SOUNDS`), with jittered
pitch, rate and loudness. Its ``split="crossed"`` holds out unions of 2 x 2 blocks (two visible
compositions x two sounds), so every unseen class shares its visible parts with another unseen class
and its sound with yet another: on the unseen classes neither modality alone is enough.

Videos are written through :func:`zsar.data.video.write_video` (VP9 ``.webm`` by default, which
DALI's CPU decoder reads; ``.mp4`` H.264 and ``.avi`` MJPEG on request), in parallel worker
processes. Each video's content depends only on ``(seed, composition, subset, index)``, never on the
split or the number of workers, so one seed always produces the same files.

The output folder holds ``videos/``, the generic list files ``seen_train.txt``, ``seen_test.txt`` and
``unseen_test.txt`` (``relative/path label_index`` per line, indices into ``classes_seen.txt`` or
``classes_unseen.txt``) and ``split.json`` (config, parts, seen and unseen classes, counts).

    bench = generate_benchmark(SyntheticConfig(seed=0), "runs/synthetic")
    bench.seen_train        # VideoList over bench.seen_classes
    bench.unseen_test       # VideoList over bench.unseen_classes
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from .._utils import read_json
from ..config import from_dict as config_from_dict
from .records import VideoList, VideoRecord
from .video import write_video

__all__ = [
    "COLORS",
    "SHAPES",
    "MOTIONS",
    "SyntheticConfig",
    "SyntheticBenchmark",
    "generate_benchmark",
    "load_benchmark",
    "label_of",
    "split_compositions",
    "render_video",
    "render_audio",
    "render_sound",
    "SOUNDS",
    "PART_MODALITY",
]

#: Colour words and their RGB in [0, 1] (hues far apart, so jitter never turns one into another).
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "green": (0.10, 0.78, 0.20),
    "blue": (0.15, 0.30, 0.98),
    "yellow": (0.98, 0.88, 0.10),
    "purple": (0.62, 0.18, 0.88),
    "orange": (1.00, 0.52, 0.05),
    "cyan": (0.08, 0.86, 0.92),
}
#: Shape words (see :func:`_shape_sdf` for their geometry).
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
#: Motion phrases. "blinking" toggles visibility; the others move, grow or shrink the object.
MOTIONS = ("falling", "rising", "sliding", "shaking", "spinning", "growing", "shrinking", "blinking",
           "moving left", "moving right", "moving up", "moving down")
#: Direction of travel; "sliding" goes left or right at random.
_DIRECTIONS = {"moving left": (-1.0, 0.0), "moving right": (1.0, 0.0), "moving up": (0.0, -1.0),
               "moving down": (0.0, 1.0), "falling": (0.0, 1.0), "rising": (0.0, -1.0), "sliding": (1.0, 0.0)}
#: Shapes whose rotation cannot be seen: "spinning" is refused with them.
_ROUND = ("circle", "ring")
#: Sound words and what :func:`render_sound` plays for them (pitch, rate and loudness are jittered).
SOUNDS: dict[str, str] = {
    "beeping": "a 1 kHz tone switched on and off about 5 times a second",
    "humming": "a low 130 Hz tone with two overtones and a slow swell",
    "buzzing": "a harsh 220 Hz sawtooth",
    "whistling": "a 2.4 kHz tone with vibrato",
    "clicking": "short broadband clicks, about 8 a second",
    "ringing": "bell strikes (inharmonic partials, decaying) about twice a second",
    "rumbling": "low-passed noise below about 150 Hz",
    "chirping": "short rising sweeps from 2 to 4 kHz, about 3 a second",
}
#: The parts a label may have, in label order, and which sense each reaches: the renderer draws the
#: visible parts and plays the audible one.
PART_MODALITY = {"color": "visible", "shape": "visible", "motion": "visible", "sound": "audible"}
_SPLITS = ("random", "crossed")
_SUBSETS = ("seen_train", "seen_test", "unseen_test")
_MANIFEST_VERSION = 1


@dataclass
class SyntheticConfig:
    """Size, difficulty and split of the synthetic benchmark (every field round-trips through JSON).

    Size: ``colors`` × ``shapes`` × ``motions`` (× ``sounds``) compositions; ``train_per_class`` and
    ``test_per_class`` videos per seen class, ``unseen_per_class`` per unseen class; ``frames`` per
    video at ``fps``; ``size`` × ``size`` pixels (even, for the 4:2:0 codecs); ``object_size``: the
    labelled object's radius as a fraction of ``size``.

    Split: ``num_unseen`` compositions (default: ``unseen_fraction`` of them) are held out, drawn
    with ``split_seed`` (default: ``seed``) among the splits in which every pair of parts of every
    unseen class also occurs in a seen class (``pair_coverage``). Alternatively ``unseen`` lists the
    held-out labels explicitly. ``split="crossed"`` (needs a sound part) holds out unions of 2 x 2
    blocks of (visible parts) x (sound), so that on the unseen classes neither modality suffices.

    Parts: ``colors``, ``shapes`` and ``motions`` are drawn; ``sounds`` (:data:`SOUNDS`, default none)
    are only heard, and need ``audio=True`` and ``audio_part="sound"``. With ``colors=()`` the colour
    is a random nuisance and not part of the label. Labels join the parts' words in the order
    colour, shape, motion, sound.

    Difficulty: ``noise`` (std of per-pixel Gaussian noise, in [0, 1] intensity units),
    ``distractors`` (grey objects per video), ``jitter`` (0: every video of a class alike; 1: strong
    variation of speed, size, colour, orientation and camera shake), ``trail`` (ghost copies drawn
    behind a moving object; 0 removes the motion trail, leaving motion to temporal order alone).

    Files: ``ext`` picks the container and codec (``.webm`` VP9, ``.mp4`` H.264, ``.avi`` MJPEG,
    ``.mkv`` VP9); ``audio`` adds an audio track: the sound part when there is one, otherwise a
    tone whose pitch is set by the part ``audio_part``.
    """

    colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple")
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "star")
    motions: tuple[str, ...] = ("falling", "sliding", "shaking", "growing", "blinking")
    sounds: tuple[str, ...] = ()
    unseen_fraction: float = 0.25
    num_unseen: int | None = None
    unseen: tuple[str, ...] | None = None
    pair_coverage: bool = True
    train_per_class: int = 12
    test_per_class: int = 3
    unseen_per_class: int = 8
    frames: int = 24
    fps: float = 12.0
    size: int = 64
    object_size: float = 0.13
    noise: float = 0.04
    distractors: int = 2
    jitter: float = 0.5
    trail: int = 4
    ext: str = ".webm"
    audio: bool = False
    audio_part: str = "shape"
    sample_rate: int = 16000
    seed: int = 0
    split_seed: int | None = None
    split: str = "random"

    @classmethod
    def audio_visual(cls, **overrides) -> "SyntheticConfig":
        """The audio-visual variant: labels "<shape> <motion> <sound>" (3 x 3 x 3 classes), colour a
        nuisance, an audio track playing the sound, 8 unseen classes held out in crossed blocks."""
        defaults = dict(colors=(), shapes=("circle", "square", "triangle"), motions=("falling", "sliding", "growing"),
                        sounds=("beeping", "humming", "buzzing"), audio=True, audio_part="sound", split="crossed",
                        num_unseen=8)
        return cls(**{**defaults, **overrides})

    @property
    def parts(self) -> dict[str, tuple[str, ...]]:
        """The labelled parts and their values, in label order (parts with no values are left out)."""
        values = {"color": self.colors, "shape": self.shapes, "motion": self.motions, "sound": self.sounds}
        return {p: v for p, v in values.items() if v}

    def __post_init__(self):
        # Lists from JSON/YAML become tuples, so configs compare equal however they were built.
        for name in ("colors", "shapes", "motions", "sounds"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.unseen is not None:
            self.unseen = tuple(self.unseen)
        for name, values, known in (("colors", self.colors, COLORS), ("shapes", self.shapes, SHAPES),
                                    ("motions", self.motions, MOTIONS), ("sounds", self.sounds, SOUNDS)):
            unknown = [v for v in values if v not in known]
            if unknown:
                raise ValueError(f"unknown {name} {unknown}; available: {list(known)}")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} contains duplicates: {list(values)}")
            if not values and name in ("shapes", "motions"):  # colours and sounds may be left out
                raise ValueError(f"{name} must not be empty")
        if "spinning" in self.motions and set(self.shapes) & set(_ROUND):
            raise ValueError(f"a spinning {sorted(set(self.shapes) & set(_ROUND))[0]} looks still: "
                             "'spinning' cannot be combined with round shapes")
        if math.prod(len(v) for v in self.parts.values()) < 3:
            raise ValueError("need at least 3 compositions (2 seen, 1 unseen)")
        for name in ("train_per_class", "unseen_per_class", "frames", "size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.test_per_class < 0 or self.distractors < 0 or self.trail < 0:
            raise ValueError("test_per_class, distractors and trail must be >= 0")
        if self.size % 2 or self.size < 16:
            raise ValueError(f"size must be even and >= 16 (4:2:0 video), got {self.size}")
        if not 0.0 < self.unseen_fraction < 1.0:
            raise ValueError(f"unseen_fraction must be in (0, 1), got {self.unseen_fraction}")
        if not 0.03 <= self.object_size <= 0.25:
            raise ValueError(f"object_size must be in [0.03, 0.25] (radius / frame size), got {self.object_size}")
        if self.noise < 0 or not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"noise must be >= 0 and jitter in [0, 1], got {self.noise}, {self.jitter}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.ext not in (".webm", ".mp4", ".avi", ".mkv"):
            raise ValueError(f"ext must be one of .webm, .mp4, .avi, .mkv; got {self.ext!r}")
        if self.audio_part not in self.parts:
            raise ValueError(f"audio_part must be one of the labelled parts {list(self.parts)}, got {self.audio_part!r}")
        if self.sounds and not (self.audio and self.audio_part == "sound"):
            raise ValueError("a sound part is only heard: sounds need audio=True and audio_part='sound' "
                             "(SyntheticConfig.audio_visual() sets both)")
        if self.split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {self.split!r}")
        if self.split == "crossed" and (len(self.sounds) < 2 or len(self.compositions) // len(self.sounds) < 2):
            raise ValueError("split='crossed' needs at least 2 sounds and 2 visible compositions")

    @property
    def compositions(self) -> list[tuple[str, ...]]:
        """Every composition (one value per part of :attr:`parts`), in a fixed order (first part major)."""
        return list(itertools.product(*self.parts.values()))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SyntheticConfig":
        """The config of a dict (e.g. from JSON); unknown keys and mistyped values raise, naming the key."""
        return config_from_dict(cls, data)


def label_of(composition: Sequence[str]) -> str:
    """The class label of a composition (e.g. colour, shape, motion): its words joined by spaces."""
    return " ".join(composition)


@dataclass
class SyntheticBenchmark:
    """A generated benchmark: where it lies, its classes and its three video lists."""

    root: Path
    config: SyntheticConfig
    seen_classes: list[str]
    unseen_classes: list[str]
    seen_train: VideoList
    seen_test: VideoList
    unseen_test: VideoList
    parts: dict[str, list[str]] = field(default_factory=dict)  # label -> its part values, in label order

    @property
    def chance(self) -> float:
        """Top-1 accuracy of guessing among the unseen classes."""
        return 1.0 / len(self.unseen_classes)


# ---- split ---------------------------------------------------------------------------------------


def _pairs(c: tuple[str, ...]) -> set[tuple]:
    return {(i, c[i], k, c[k]) for i, k in itertools.combinations(range(len(c)), 2)}


def _covered(unseen: set, compositions: list[tuple[str, ...]]) -> bool:
    """Whether every pair of parts of every unseen composition occurs in a seen composition."""
    seen_pairs = set()
    for c in compositions:
        if c not in unseen:
            seen_pairs |= _pairs(c)
    return all(_pairs(u) <= seen_pairs for u in unseen)


def _crossed_proposal(rng: np.random.Generator, config: SyntheticConfig, n_unseen: int) -> set | None:
    """A union of random 2 x 2 blocks (two visible compositions x two sounds) of ``n_unseen``
    compositions, or None when the blocks overshoot. The sound is the last part of a composition."""
    visible = sorted({c[:-1] for c in config.compositions})
    unseen: set = set()
    while len(unseen) < n_unseen:
        pick_v = rng.choice(len(visible), size=2, replace=False)
        pick_s = rng.choice(len(config.sounds), size=2, replace=False)
        unseen |= {visible[v] + (config.sounds[a],) for v in pick_v for a in pick_s}
    return unseen if len(unseen) == n_unseen else None


def split_compositions(config: SyntheticConfig, max_tries: int = 10000) -> tuple[list[str], list[str]]:
    """(seen labels, unseen labels) of the config's held-out-composition split.

    Deterministic in ``split_seed`` (default ``seed``). ``split="crossed"`` draws unions of 2 x 2
    blocks of (visible parts) x (sound) instead of single compositions. With ``pair_coverage`` (the default) only
    splits in which every pair of parts of each unseen class appears in some seen class are
    accepted, so each unseen class shares two words with at least three seen classes' labels;
    without it, each unseen class still shares words with some seen class. Raises ``ValueError``
    when no acceptable split is found (too many unseen classes for the parts given).
    """
    comps = config.compositions
    labels = [label_of(c) for c in comps]
    if config.unseen is not None:
        missing = [u for u in config.unseen if u not in labels]
        if missing:
            raise ValueError(f"unseen labels {missing} are not compositions of the configured parts")
        unseen = set(config.unseen)
        if not unseen or len(unseen) >= len(labels):
            raise ValueError("unseen must name at least one and fewer than all compositions")
        return [v for v in labels if v not in unseen], [v for v in labels if v in unseen]
    n_unseen = config.num_unseen if config.num_unseen is not None else round(config.unseen_fraction * len(comps))
    if not 1 <= n_unseen <= len(comps) - 2:
        raise ValueError(f"num_unseen must be in [1, {len(comps) - 2}] for {len(comps)} compositions, got {n_unseen}")
    if config.split == "crossed" and n_unseen < 4:
        raise ValueError(f"split='crossed' holds out 2 x 2 blocks: num_unseen must be at least 4, got {n_unseen}")
    rng = np.random.default_rng([config.seed if config.split_seed is None else config.split_seed, 0x5B17])
    for _ in range(max_tries):
        if config.split == "crossed":
            unseen = _crossed_proposal(rng, config, n_unseen)
            if unseen is None:
                continue
        else:
            unseen = {comps[i] for i in rng.choice(len(comps), size=n_unseen, replace=False)}
        if not config.pair_coverage or _covered(unseen, comps):
            break
    else:
        blocks = " in crossed 2 x 2 blocks" if config.split == "crossed" else ""
        raise ValueError(f"no split of {len(comps)} compositions with {n_unseen} unseen classes{blocks} keeps every "
                         f"pair of parts of the unseen classes among the seen ones ({max_tries} tries); hold out "
                         "fewer classes, add part values, or set pair_coverage=False")
    unseen_labels = {label_of(c) for c in unseen}
    return [v for v in labels if v not in unseen_labels], [v for v in labels if v in unseen_labels]


# ---- rendering -----------------------------------------------------------------------------------


def _polygon_sdf(x: np.ndarray, y: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points to a closed polygon, by edges and crossings."""
    dist = np.full(x.shape, np.inf, dtype=np.float32)
    inside = np.zeros(x.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(verts, np.roll(verts, -1, axis=0)):
        ex, ey = bx - ax, by - ay
        wx, wy = x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(wx - t * ex, wy - t * ey))
        if ay != by:  # even-odd rule: does a ray to the right cross this edge?
            crosses = ((ay > y) != (by > y)) & (x < ax + (y - ay) * ex / ey)
            inside ^= crosses
    return np.where(inside, -dist, dist)


def _regular(n: int, radius: float, phase: float) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _shape_sdf(shape: str, x: np.ndarray, y: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Signed distance to ``shape`` of nominal radius ``r`` centred at the origin, rotated by ``angle``.

    Sizes are scaled so that the shapes cover similar areas (a circle of radius r covers πr²).
    """
    if shape == "circle":
        return np.hypot(x, y) - r
    if shape == "ring":
        return np.abs(np.hypot(x, y) - 1.05 * r) - 0.38 * r
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * x + s * y, -s * x + c * y  # rotate the points by -angle
    if shape == "square":
        h = 0.89 * r
        return np.maximum(np.abs(u), np.abs(v)) - h
    if shape == "cross":
        h, w = 1.15 * r, 0.42 * r
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - h, av - w), np.maximum(au - w, av - h))
    if shape == "triangle":
        return _polygon_sdf(u, v, _regular(3, 1.35 * r, -np.pi / 2))
    if shape == "star":
        outer, inner = _regular(5, 1.45 * r, -np.pi / 2), _regular(5, 0.62 * r, -np.pi / 2 + np.pi / 5)
        verts = np.empty((10, 2))
        verts[0::2], verts[1::2] = outer, inner
        return _polygon_sdf(u, v, verts)
    raise ValueError(f"unknown shape {shape!r}")


def _ellipse_sdf(x, y, rx, ry, angle):
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    # Not a true distance, but a 1-pixel antialiasing ramp only needs its sign and rough scale.
    return (np.hypot(u / rx, v / ry) - 1.0) * min(rx, ry)


class _Sprites:
    """Antialiased coverage masks of shapes, cached by (shape, size, orientation, sub-pixel offset).

    A frame draws each object (and each ghost of its trail) by blending a cached mask into the
    canvas: objects keep their shape from frame to frame, so most masks are computed once per video.
    Sub-pixel positions are kept to a quarter pixel.
    """

    def __init__(self):
        self.cache: dict[tuple, np.ndarray] = {}

    def get(self, key: tuple, sdf_fn, extent: float, fx: float, fy: float) -> np.ndarray:
        full = key + (extent, fx, fy)
        mask = self.cache.get(full)
        if mask is None:
            n = 2 * int(math.ceil(extent)) + 3
            c = n // 2
            yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
            mask = np.clip(0.5 - sdf_fn(xx + 0.5 - c - fx, yy + 0.5 - c - fy), 0.0, 1.0).astype(np.float32)
            self.cache[full] = mask
        return mask

    def draw(self, canvas: np.ndarray, key: tuple, sdf_fn, extent: float, cx: float, cy: float, rgb,
             alpha: float) -> None:
        """Blends ``rgb`` into ``canvas`` where the object centred at (cx, cy) covers it."""
        if alpha <= 0:
            return
        ix, iy = math.floor(cx), math.floor(cy)
        fx, fy = round((cx - ix) * 4) / 4, round((cy - iy) * 4) / 4
        mask = self.get(key, sdf_fn, round(extent), fx, fy)
        n = mask.shape[0]
        x0, y0 = ix - n // 2, iy - n // 2
        h, w = canvas.shape[:2]
        sx0, sy0 = max(0, -x0), max(0, -y0)
        sx1, sy1 = min(n, w - x0), min(n, h - y0)
        if sx0 >= sx1 or sy0 >= sy1:
            return
        region = canvas[y0 + sy0:y0 + sy1, x0 + sx0:x0 + sx1]
        cover = mask[sy0:sy1, sx0:sx1, None] * alpha
        region += cover * (np.asarray(rgb, dtype=np.float32) - region)


def _object_state(params: dict, t: float) -> tuple[float, float, float, float, float]:
    """(x, y, radius, angle, visibility) of the labelled object at frame ``t`` (may be negative:
    the trail of the first frames shows where the object came from)."""
    motion = params["motion"]
    x, y = params["x0"] + params["vx"] * t, params["y0"] + params["vy"] * t
    r, angle = params["r"], params["angle"]
    if motion in ("growing", "shrinking"):
        frac = min(max(t / max(params["frames"] - 1, 1), 0.0), 1.0)
        r = params["r_start"] + (params["r_end"] - params["r_start"]) * frac
    elif motion == "shaking":  # fast side-to-side oscillation
        x += params["amplitude"] * math.sin(2 * math.pi * (t / params["period"] + params["phase"]))
    elif motion == "spinning":
        angle += params["spin"] * t
    visible = 1.0
    if motion == "blinking":
        visible = 1.0 if math.floor(t / params["period"] + params["phase"]) % 2 == 0 else 0.0
    return x, y, r, angle, visible


def _sample_params(rng: np.random.Generator, composition: Sequence[str], cfg: SyntheticConfig) -> dict:
    """Every random choice of one video, drawn up front so rendering is a pure function of them."""
    values = dict(zip(cfg.parts, composition))
    shape, motion = values["shape"], values["motion"]
    # Without a colour part the colour is a nuisance. (Drawn only then: the other configs' videos stay as they were.)
    color = values["color"] if "color" in values else list(COLORS)[int(rng.integers(len(COLORS)))]
    size, n, j = cfg.size, cfg.frames, cfg.jitter
    r = size * cfg.object_size * (1.0 + 0.25 * j * rng.uniform(-1, 1))
    rgb = np.clip(np.asarray(COLORS[color]) * (1.0 + 0.15 * j * rng.uniform(-1, 1))
                  + 0.06 * j * rng.uniform(-1, 1, 3), 0, 1)
    p = dict(shape=shape, motion=motion, frames=n, r=r, rgb=rgb.tolist(), vx=0.0, vy=0.0,
             angle=float(rng.uniform(-0.25, 0.25) * j) if shape != "triangle" else float(rng.uniform(-0.2, 0.2) * j))
    margin = 1.5 * r + 2
    if motion in _DIRECTIONS:
        dx, dy = _DIRECTIONS[motion]
        if motion == "sliding" and rng.random() < 0.5:
            dx = -dx
        # Travel most of the frame over the video, so every clip of it shows motion.
        travel = (size - 2 * margin) * rng.uniform(0.75 - 0.25 * j, 0.95)
        speed = travel / max(n - 1, 1)
        p["vx"], p["vy"] = dx * speed, dy * speed
        p["x0"] = size / 2 - dx * travel / 2 + (0 if dx else rng.uniform(-1, 1) * (size / 2 - margin))
        p["y0"] = size / 2 - dy * travel / 2 + (0 if dy else rng.uniform(-1, 1) * (size / 2 - margin))
        # Ghosts a third of the radius apart, whatever the speed: the trail is a streak about one
        # radius long behind the object, visible even when the frame leaves little room to travel.
        p["trail_dt"] = max(1.0, 0.33 * r / speed)
    else:
        small, big = 0.45 * r, 1.5 * r
        p["r_start"], p["r_end"] = (small, big) if motion == "growing" else (big, small)
        # Blinking: frames per on/off phase. Shaking: frames per oscillation, amplitude in pixels.
        p["period"] = rng.uniform(2.0, 3.5) if motion == "blinking" else rng.uniform(3.0, 4.5)
        p["phase"] = rng.uniform(0, 2)
        p["amplitude"] = 0.5 * r * rng.uniform(0.8, 1.2)
        p["spin"] = float(rng.choice([-1, 1]) * rng.uniform(0.2, 0.35))  # radians per frame
        extent = big if motion in ("growing", "shrinking") else 1.2 * r + (p["amplitude"] if motion == "shaking" else 0)
        edge = size / 2 - 1.3 * extent - 1
        p["x0"], p["y0"] = size / 2 + rng.uniform(-1, 1, 2) * max(edge, 0) * 0.8
        # Ghosts sit at the object's state a little earlier: a halo when shrinking, a smear on both
        # sides when shaking, a rotational blur when spinning, nothing visible when growing.
        p["trail_dt"] = {"shaking": 0.5, "spinning": 1.0}.get(motion, 2.0)
    # Background: a grey level, a linear gradient and static low-contrast blobs.
    p["bg_level"] = float(rng.uniform(0.08, 0.38))
    p["bg_grad"] = (rng.uniform(-0.08, 0.08, 2)).tolist()
    p["bg_blobs"] = [(float(rng.uniform(0, size)), float(rng.uniform(0, size)), float(rng.uniform(3, 10) * size / 64),
                      float(rng.uniform(-0.06, 0.06))) for _ in range(4)]
    p["distractors"] = [dict(x=float(rng.uniform(0, size)), y=float(rng.uniform(0, size)),
                             vx=float(rng.uniform(-0.8, 0.8) * size / 64), vy=float(rng.uniform(-0.8, 0.8) * size / 64),
                             rx=float(rng.uniform(2.0, 5.0) * size / 64), ry=float(rng.uniform(1.0, 3.0) * size / 64),
                             angle=float(rng.uniform(0, np.pi)), grey=float(rng.uniform(0.45, 0.85)))
                        for _ in range(cfg.distractors)]
    p["shake"] = (rng.normal(0, 1.2 * j * size / 64, (n, 2))).round().astype(int).tolist()
    p["noise_seed"] = int(rng.integers(2**31))
    return p


def render_video(params: dict, cfg: SyntheticConfig) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 of one video from its sampled parameters."""
    size, n = cfg.size, cfg.frames
    pad = size // 8  # render on a larger canvas so camera shake never reveals an empty border
    full = size + 2 * pad
    yy, xx = np.mgrid[0:full, 0:full].astype(np.float32) - pad
    background = params["bg_level"] + (params["bg_grad"][0] * xx + params["bg_grad"][1] * yy) / size
    for bx, by, br, amp in params["bg_blobs"]:
        background = background + amp * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * br * br))
    background = np.repeat(background[..., None], 3, axis=2).astype(np.float32)
    noise_rng = np.random.default_rng(params["noise_seed"])
    shape, rgb = params["shape"], params["rgb"]
    sprites = _Sprites()
    out = np.empty((n, size, size, 3), dtype=np.uint8)

    def draw_object(t: float, alpha: float, canvas: np.ndarray) -> None:
        x, y, r, a, vis = _object_state(params, t)
        r = round(r * 4) / 4  # a quarter-pixel size grid lets growing objects reuse masks too
        sprites.draw(canvas, (shape, r, a), lambda u, v: _shape_sdf(shape, u, v, r, a), 1.6 * r + 1,
                     x + pad, y + pad, rgb, alpha * vis)

    for t in range(n):
        canvas = background.copy()
        for i, d in enumerate(params["distractors"]):
            dx, dy = (d["x"] + d["vx"] * t) % size + pad, (d["y"] + d["vy"] * t) % size + pad
            sprites.draw(canvas, ("distractor", i), lambda x, y, d=d: _ellipse_sdf(x, y, d["rx"], d["ry"], d["angle"]),
                         max(d["rx"], d["ry"]) + 1, dx, dy, (d["grey"],) * 3, 1.0)
        # Motion trail: fading ghosts of the object's recent past states, oldest first.
        for k in range(cfg.trail, 0, -1):
            draw_object(t - k * params["trail_dt"], 0.6 * (1.0 - k / (cfg.trail + 1)), canvas)
        draw_object(t, 1.0, canvas)
        sx, sy = params["shake"][t]
        frame = canvas[pad + sy: pad + sy + size, pad + sx: pad + sx + size]
        if cfg.noise > 0:
            frame = frame + noise_rng.normal(0.0, cfg.noise, frame.shape).astype(np.float32)
        out[t] = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def _fades(t: np.ndarray, seconds: float = 0.02) -> np.ndarray:
    """An envelope rising over the first and falling over the last ``seconds`` (no clicks at the ends)."""
    return np.clip(np.minimum(t - t[0], t[-1] - t) / seconds, 0.0, 1.0)


def render_sound(sound: str, num_samples: int, sample_rate: int = 16000, rng: np.random.Generator | None = None,
                 jitter: float = 0.5) -> np.ndarray:
    """``num_samples`` of the sound ``sound`` (a key of :data:`SOUNDS`) as float32 mono in [-1, 1].

    Each sound is told apart by its spectrum and rhythm, which a log-mel spectrogram shows; ``jitter``
    (0 to 1) varies pitch, rate, phase and loudness by up to about 10-25 % (drawn from ``rng``).
    """
    if sound not in SOUNDS:
        raise ValueError(f"unknown sound {sound!r}; available: {list(SOUNDS)}")
    rng = rng if rng is not None else np.random.default_rng(0)
    t = np.arange(num_samples) / sample_rate
    duration = num_samples / sample_rate

    def vary(value: float, amount: float) -> float:
        return value * (1.0 + amount * jitter * rng.uniform(-1, 1))

    def onsets(period: float) -> np.ndarray:
        return np.arange(rng.uniform(0, period), duration, period)

    two_pi = 2 * np.pi
    if sound == "beeping":
        f, period = vary(1000, 0.1), vary(0.2, 0.2)
        frac = (t / period + rng.uniform()) % 1.0
        gate = np.clip(np.minimum(frac, 0.5 - frac) * period / 0.005, 0.0, 1.0)  # 5 ms ramps, 50 % duty
        wave = gate * np.sin(two_pi * f * t)
    elif sound == "humming":
        f = vary(130, 0.1)
        swell = 0.75 + 0.25 * np.sin(two_pi * vary(1.5, 0.3) * t + rng.uniform(0, two_pi))
        wave = swell * (np.sin(two_pi * f * t) + 0.5 * np.sin(2 * two_pi * f * t) + 0.25 * np.sin(3 * two_pi * f * t))
    elif sound == "buzzing":
        wave = 2.0 * ((vary(220, 0.1) * t + rng.uniform()) % 1.0) - 1.0  # sawtooth: every harmonic
    elif sound == "whistling":
        f, rate, depth = vary(2400, 0.1), vary(5.5, 0.2), 60.0  # vibrato: f + depth sin(2 pi rate t)
        wave = np.sin(two_pi * f * t - depth / rate * np.cos(two_pi * rate * t))
    elif sound == "clicking":
        wave = np.zeros(num_samples)
        length = int(0.006 * sample_rate)
        burst_env = np.exp(-np.arange(length) / (0.001 * sample_rate))
        for start in (onsets(1.0 / vary(8, 0.25)) * sample_rate).astype(int):
            seg = wave[start:start + length]
            seg += rng.normal(size=length)[:seg.size] * burst_env[:seg.size]
    elif sound == "ringing":
        wave = np.zeros(num_samples)
        f = vary(660, 0.1)
        for start in onsets(vary(0.5, 0.2)):
            since = t - start
            on = since >= 0
            wave[on] += sum(a * np.sin(two_pi * f * r * since[on]) for r, a in ((1.0, 1.0), (2.76, 0.5), (5.40, 0.25))) \
                * np.exp(-since[on] / 0.18)
    elif sound == "rumbling":
        spectrum = np.fft.rfft(rng.normal(size=num_samples))
        spectrum[np.fft.rfftfreq(num_samples, 1.0 / sample_rate) > vary(150, 0.2)] = 0
        wave = np.fft.irfft(spectrum, n=num_samples) * (0.7 + 0.3 * np.sin(two_pi * vary(0.8, 0.3) * t))
    else:  # chirping
        wave = np.zeros(num_samples)
        f0, length = vary(2000, 0.1), 0.06
        for start in onsets(vary(0.33, 0.2)):
            since = t - start
            on = (since >= 0) & (since < length)
            tau = since[on]  # a linear sweep f0 -> 2 f0 over the chirp, with 5 ms ramps
            wave[on] += np.sin(two_pi * (f0 * tau + f0 * tau ** 2 / (2 * length))) \
                * np.clip(np.minimum(tau, length - tau) / 0.005, 0.0, 1.0)
    peak = np.abs(wave).max()
    wave = wave / peak if peak > 0 else wave
    wave = vary(0.45, 0.3) * _fades(t) * wave + 0.01 * rng.normal(size=num_samples)
    return np.clip(wave, -1, 1).astype(np.float32)


def render_audio(params: dict, composition: Sequence[str], cfg: SyntheticConfig) -> np.ndarray:
    """The audio track (float32 mono in [-1, 1]) of one video, as long as the video: the sound part
    (:func:`render_sound`) when the config has one, otherwise a tone pitched by the part ``audio_part``."""
    n = int(round(cfg.frames / cfg.fps * cfg.sample_rate))
    if "sound" in cfg.parts:
        rng = np.random.default_rng([params["noise_seed"], 0x50D])
        return render_sound(composition[-1], n, cfg.sample_rate, rng, cfg.jitter)
    part = list(cfg.parts).index(cfg.audio_part)
    freq = 220.0 * 2.0 ** (cfg.parts[cfg.audio_part].index(composition[part]) * 5 / 12)  # a fourth apart
    t = np.arange(n) / cfg.sample_rate
    rng = np.random.default_rng(params["noise_seed"] + 1)
    env = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # 20 ms fades, no clicks
    wave = 0.4 * env * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) + 0.01 * rng.normal(size=n)
    return np.clip(wave, -1, 1).astype(np.float32)


# ---- writing -------------------------------------------------------------------------------------


def _part_names(cfg: SyntheticConfig) -> str:
    names = [{"color": "colour"}.get(p, p) for p in cfg.parts]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _slug(label: str) -> str:
    return label.replace(" ", "_")


def _video_seed(cfg: SyntheticConfig, comp_index: int, subset: str, index: int) -> np.random.Generator:
    # Independent of the split and of the workers: a composition's videos are the same in any split.
    return np.random.default_rng([cfg.seed, comp_index, _SUBSETS.index(subset), index])


def _write_one(job: tuple) -> str:
    cfg_dict, comp_index, subset, index, path = job
    cfg = SyntheticConfig.from_dict(cfg_dict)
    comp = cfg.compositions[comp_index]
    params = _sample_params(_video_seed(cfg, comp_index, subset, index), comp, cfg)
    frames = render_video(params, cfg)
    audio = render_audio(params, comp, cfg) if cfg.audio else None
    write_video(path, frames, fps=cfg.fps, audio=audio, sample_rate=cfg.sample_rate)
    return path


def _write_chunk(jobs: list) -> int:
    for job in jobs:
        _write_one(job)
    return len(jobs)


def _pool_context():
    # fork starts workers instantly (no re-import of torch); the workers only use NumPy and PyAV.
    # Elsewhere (macOS, Windows) spawn is the safe choice.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and os.name == "posix" else "spawn")


def generate_benchmark(config: SyntheticConfig | None = None, root: str | Path = "synthetic", *,
                       workers: int | None = None, overwrite: bool = False,
                       progress: bool = True) -> SyntheticBenchmark:
    """Renders and writes the benchmark of ``config`` under ``root``; returns its video lists.

    When ``root`` already holds a complete benchmark of the same config it is reused (pass
    ``overwrite=True`` to render again). ``workers``: parallel writer processes (default: the CPU
    count, at most 8; 0 or 1 writes in this process).
    """
    cfg = config or SyntheticConfig()
    root = Path(root)
    if not overwrite:
        try:
            bench = load_benchmark(root)
            if bench.config == cfg:
                if progress:
                    print(f"reusing the synthetic benchmark in {root}", flush=True)
                return bench
        except (FileNotFoundError, ValueError):
            pass
    seen, unseen = split_compositions(cfg)
    comps = cfg.compositions
    index_of = {label_of(c): i for i, c in enumerate(comps)}
    counts = {"seen_train": cfg.train_per_class, "seen_test": cfg.test_per_class,
              "unseen_test": cfg.unseen_per_class}
    classes = {"seen_train": seen, "seen_test": seen, "unseen_test": unseen}
    lists: dict[str, list[tuple[str, int]]] = {}
    jobs = []
    cfg_dict = cfg.to_dict()
    for subset in _SUBSETS:
        rows = []
        for label_index, label in enumerate(classes[subset]):
            for i in range(counts[subset]):
                rel = f"videos/{subset}/{_slug(label)}/{_slug(label)}_{i:03d}{cfg.ext}"
                rows.append((rel, label_index))
                jobs.append((cfg_dict, index_of[label], subset, i, str(root / rel)))
        lists[subset] = rows
    root.mkdir(parents=True, exist_ok=True)
    (root / "split.json").unlink(missing_ok=True)  # written last: its presence marks a complete benchmark

    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    bar = tqdm(total=len(jobs), desc="rendering videos", unit="video", disable=not progress, dynamic_ncols=True)
    if workers <= 1:
        for job in jobs:
            _write_one(job)
            bar.update(1)
    else:
        size = max(1, min(16, len(jobs) // (workers * 4)))  # small chunks keep the bar moving
        chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
        with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
            for done in pool.map(_write_chunk, chunks):
                bar.update(done)
    bar.close()

    for subset, rows in lists.items():
        (root / f"{subset}.txt").write_text("".join(f"{rel} {label}\n" for rel, label in rows))
    (root / "classes_seen.txt").write_text("".join(c + "\n" for c in seen))
    (root / "classes_unseen.txt").write_text("".join(c + "\n" for c in unseen))
    split = {
        "version": _MANIFEST_VERSION,
        "description": "zsar synthetic compositional action benchmark: unseen classes are held-out "
                       f"compositions of {_part_names(cfg)}",
        "config": cfg_dict,
        "parts": {part: list(values) for part, values in cfg.parts.items()},
        "modality": {part: PART_MODALITY[part] for part in cfg.parts},
        "seen": seen,
        "unseen": unseen,
        "lists": {s: f"{s}.txt" for s in _SUBSETS},
        "class_files": {"seen": "classes_seen.txt", "unseen": "classes_unseen.txt"},
        "counts": {s: len(rows) for s, rows in lists.items()},
    }
    (root / "split.json").write_text(json.dumps(split, indent=2))
    return load_benchmark(root)


def _read_list(root: Path, name: str, classes: list[str], check_files: bool) -> VideoList:
    path = root / name
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        rel, _, label = line.rpartition(" ")
        if not rel or not label.isdigit() or int(label) >= len(classes):
            raise ValueError(f"{path}:{n}: expected 'relative/path label_index', got {line!r}")
        full = root / rel
        if check_files and not full.is_file():
            raise FileNotFoundError(f"{path}:{n}: video {full} is missing")
        records.append(VideoRecord(str(full), int(label), Path(rel).stem))
    return VideoList(records, list(classes))


def load_benchmark(root: str | Path, check_files: bool = True) -> SyntheticBenchmark:
    """Reads a benchmark written by :func:`generate_benchmark` (its ``split.json`` and list files)."""
    root = Path(root)
    meta_path = root / "split.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root} holds no synthetic benchmark ({meta_path} is missing)")
    meta = read_json(meta_path)
    if meta.get("version") != _MANIFEST_VERSION:
        raise ValueError(f"{meta_path}: unsupported manifest version {meta.get('version')}")
    cfg = SyntheticConfig.from_dict(meta["config"])
    seen, unseen = list(meta["seen"]), list(meta["unseen"])
    lists = {s: _read_list(root, meta["lists"][s], unseen if s == "unseen_test" else seen, check_files)
             for s in _SUBSETS}
    parts = {label_of(c): list(c) for c in cfg.compositions}
    return SyntheticBenchmark(root=root, config=cfg, seen_classes=seen, unseen_classes=unseen,
                              seen_train=lists["seen_train"], seen_test=lists["seen_test"],
                              unseen_test=lists["unseen_test"], parts=parts)

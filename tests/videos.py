"""Real test videos: smooth moving colour gradients (lossy codecs keep them close to the source)
with a frame counter baked in, so a decoded frame can be matched back to its index."""

import numpy as np

from zsar.data import write_video


def gradient_frames(t: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 (t, h, w, 3): each channel a different gradient drifting over time; frame i has
    a mean brightness that grows with i, so frames are tellable apart after decoding."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 255, 3)
    frames = np.empty((t, h, w, 3), np.float32)
    for i in range(t):
        frames[i, ..., 0] = (x * 2 + 3 * i + phase[0]) % 200
        frames[i, ..., 1] = (y * 2 + 2 * i + phase[1]) % 200
        frames[i, ..., 2] = ((x + y) + i + phase[2]) % 200
        frames[i] += 50 * i / max(t - 1, 1)
    return frames.clip(0, 255).astype(np.uint8)


def make_video(path, t: int = 12, h: int = 48, w: int = 64, seed: int = 0, **kwargs):
    """Write a gradient video to ``path`` (codec from the extension) and return its source frames."""
    frames = gradient_frames(t, h, w, seed)
    write_video(path, frames, **kwargs)
    return frames


def nearest_frames(decoded: np.ndarray, source: np.ndarray) -> np.ndarray:
    """For each decoded frame, the index of the closest source frame (mean absolute difference)."""
    d = np.abs(decoded[:, None].astype(np.float32) - source[None].astype(np.float32)).mean(axis=(2, 3, 4))
    return d.argmin(axis=1)


#: One tone per second of audio, far apart on the mel scale, so a short window names its second.
TONES_HZ = (300.0, 700.0, 1500.0, 3000.0, 6000.0)


def tone_track(seconds: float, sample_rate: int = 16000, tones=TONES_HZ) -> np.ndarray:
    """float32 mono: second ``k`` holds a pure tone at ``tones[k % len(tones)]``."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    freq = np.asarray(tones)[(t.astype(np.int64)) % len(tones)]
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_video_with_tones(path, seconds: int = 5, fps: int = 4, h: int = 48, w: int = 64, seed: int = 0,
                          sample_rate: int = 16000):
    """A gradient video of ``seconds * fps`` frames with a :func:`tone_track` audio track."""
    frames = gradient_frames(seconds * fps, h, w, seed)
    write_video(path, frames, fps=fps, audio=tone_track(seconds, sample_rate), sample_rate=sample_rate)
    return frames


def tone_of(features) -> int:
    """Which of :data:`TONES_HZ` the log-mel ``features`` (frames, mel bins) hold: the tone whose mel
    band is nearest the loudest band."""
    import math

    mel = lambda f: 1127 * math.log1p(f / 700)  # noqa: E731  (HTK mel, as zsar.data.audio)
    bins = features.shape[-1]
    step = (mel(8000) - mel(20)) / (bins + 1)
    peak = int(features.mean(0).argmax())
    peak_mel = mel(20) + (peak + 1) * step
    return int(np.argmin([abs(mel(f) - peak_mel) for f in TONES_HZ]))


def corrupt_packets(src, dst, seed: int = 0) -> None:
    """Copy the video ``src`` to ``dst`` with every video packet after the first overwritten by random
    bytes (its first 4 bytes kept): the container and its packet index stay intact, so the file
    probes fine, but decoders fail on the packets ("Failed to send packet to decoder" in DALI)."""
    import av

    data = bytearray(open(src, "rb").read())
    with av.open(str(src)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    rng = np.random.default_rng(seed)
    for pos, size in packets[1:]:
        data[pos + 4:pos + size] = rng.integers(0, 256, size - 4, dtype=np.uint8).tobytes()
    open(dst, "wb").write(bytes(data))


def cut_after_packet(src, dst, keep: int) -> None:
    """Copy the video ``src`` to ``dst`` cut right after its ``keep``-th video packet, as an interrupted
    download leaves it: the header still states every frame (AVI, MP4), the data holds ``keep``."""
    import av

    with av.open(str(src)) as container:
        starts = [p.pos for p in container.demux(container.streams.video[0]) if p.size]
    open(dst, "wb").write(open(src, "rb").read()[:starts[keep]])  # up to where packet keep+1 starts

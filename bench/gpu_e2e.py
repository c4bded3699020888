"""GPU end to end, side by side in one run: ResT and MZST against their floors, the DALI loader
against PyAV, written as one table (markdown + JSON) under ``--out`` (default ``$OUT``).

Sections, each timed with the package's default runtime settings (``zsar.runtime.RuntimeSettings``:
bf16 autocast, channels_last 2D frame encoders, pinned memory; compile where noted):

1. ``rest18`` inference clips/s (16 x 224^2, default settings, B=64 and B=128; and with compile)
   against its frame encoder's trunk alone (torchvision's ResNet-18 without its classifier) over
   the same frames in bf16 channels_last: the floor. Target: >= 95% of the floor.
2. ``rest18`` training step clips/s (AdamW, the joint stage), compile on (the trainer's default on
   CUDA) and off. Target: >= 544 clips/s.
3. ``mzst`` (MViTv2-S + AST-Base + 4 bottleneck fusion blocks of 768) at batch 16 bf16: training step
   and inference clips/s and peak memory, with the fused ``bottleneck_attention`` op (dispatch's
   choice) and with the same model's fusion attention done by SDPA with a boolean key mask.
   Target: the fused op never slower.
4. Video loading on H.264 320x240 files the script writes itself (PyAV's libx264): the sources
   (GOP 250, like camera uploads), then ``zsar prepare --gop 16 --short-side 240`` of them. The
   DALI-GPU loader (video reader, file lists of frame ranges) and the bytes feed on both, PyAV with
   workers on the prepared files; training clips (16 frames at stride 4, 224^2 random crops) and
   evaluation-style sampling (every view of a video: 4 clips x 3 crops). Targets: DALI-GPU >= the
   rest18 training step's clips/s; evaluation views >= 1,000 clips/s.

A time budget (``--budget``, default 400 s) guards the whole run: a section that would start past it
is recorded as skipped, and every timing loop stops early when the budget runs out, so the table is
always written (within 8 minutes with the default budget). ``--quick`` runs every section at tiny
sizes on whatever device there is (the CPU here: ``rest_tiny``, ``mzst_tiny``, VP9 through
``dali-cpu``); the default test run does that (``bench/bench_gpu_e2e.py``).

Device run (the GPU machine has torch, Triton, CMake, nvcc, pybind11, scikit-build-core and Python
3.12, but no DALI, PyAV or package index):

1. Here: ``bash ../shared/offline-gpu/pack-dali.sh`` writes ``.device/whl`` (PyAV and DALI's small
   needs) and ``.device/parts/dali.part00..03`` + ``NAME`` (the DALI wheel in 58 MB parts).
2. The device tool carries at most 64 MiB per call and keeps the ignored files of a warm machine,
   so the parts travel one per call (``carry=[".device/parts/dali.part00", ".device/parts/NAME"]``,
   command ``true``; then ``part01``, ``part02``). The next call carries the rest, installs, and
   builds zsar with its CUDA kernels (a few minutes; skip it to run the Triton backend from the
   tree's sources with ``PYTHONPATH=/tmp/site:$PWD/python`` instead)::

       carry: [".device/whl", ".device/parts/dali.part03"]
       mkdir -p /tmp/dali /tmp/site && cat .device/parts/dali.part0* > /tmp/dali/$(cat .device/parts/NAME) \
       && python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/whl/*.whl /tmp/dali/*.whl \
       && ZSAR_CUDA=ON ZSAR_CUDA_ARCHS=90 python3 -m pip install -q --no-index --no-deps \
          --no-build-isolation --target /tmp/site .

   and the last call measures (timeout 540 s) and runs the GPU tests::

       cd /tmp && PYTHONPATH=/tmp/site python3 $OLDPWD/bench/gpu_e2e.py --out $OUT --budget 400 \
       ; PYTHONPATH=/tmp/site timeout 100 python3 -m pytest -q $OLDPWD/tests/test_dali_reader.py \
         $OLDPWD/tests/test_runtime.py > $OUT/gpu_tests.txt 2>&1

   (``cd /tmp`` so that the installed zsar, with its CUDA core, is imported rather than the tree's
   sources.) ``$OUT/gpu_e2e.md`` and ``$OUT/gpu_e2e.json`` come back; copy the table into
   ``bench/RESULTS.md`` with the card and versions it records.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

LABELS = [f"{shape} {motion}" for shape in ("circle", "square", "triangle", "star")
          for motion in ("falling", "growing", "spinning", "sliding")]


class Budget:
    """Seconds left of the run; sections and timing loops ask before they start more work."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


class Table:
    """Rows of (section, contender, measurements); written as markdown and JSON."""

    def __init__(self, facts: dict):
        self.facts, self.rows = facts, []

    def add(self, section: str, contender: str, **values) -> None:
        row = {"section": section, "contender": contender, **values}
        self.rows.append(row)
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in values.items())
        print(f"[{section}] {contender}: {shown}", flush=True)

    def write(self, out: Path) -> tuple[Path, Path]:
        out.mkdir(parents=True, exist_ok=True)
        keys = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        lines = ["# zsar GPU end to end", "", *(f"- {k}: {v}" for k, v in self.facts.items()), "",
                 "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |" for row in self.rows]
        md, js = out / "gpu_e2e.md", out / "gpu_e2e.json"
        for path, text in ((md, "\n".join(lines) + "\n"),
                           (js, json.dumps({"facts": self.facts, "rows": self.rows}, indent=1))):
            tmp = path.with_name(path.name + ".partial")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)  # a killed run leaves the previous table whole
        return md, js


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return str(v)


def _sync(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def timed(fn, device: torch.device, budget: Budget, rounds: int, warmup: int = 2) -> float:
    """Median seconds per call of ``fn`` over at most ``rounds`` rounds (fewer when the budget runs low)."""
    sync = _sync(device)
    for _ in range(warmup if rounds > 1 else 0):  # quick runs: one call, untimed in earnest
        fn()
    sync()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
        if budget.left() < 0:
            break
    return sorted(times)[len(times) // 2]


@contextlib.contextmanager
def peak_memory(device: torch.device, into: dict):
    """Peak CUDA memory allocated inside the block, in GiB (``into["peak_gib"]``; absent on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        torch.cuda.synchronize()
        into["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30


def _facts(device: torch.device, quick: bool) -> dict:
    facts = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "mode": "quick" if quick else "full",
             "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
             "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        facts["cuda"] = torch.version.cuda
    for name in ("triton", "av", "nvidia.dali"):
        try:
            facts[name] = __import__(name, fromlist=["__version__"]).__version__
        except ImportError:
            facts[name] = "not installed"
    try:
        facts["load"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    return facts


# ---- 1, 2: ResT -----------------------------------------------------------------------------------


def _train_step(model, batch, runtime, stage: str):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    gen = torch.Generator().manual_seed(0)

    def step():
        model.train()
        with runtime.autocast():
            loss = model.forward_train(batch, stage, gen)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _trainable(model):
    stage = model.training_stages()[-1]  # the last stage trains the whole model
    for name, p in model.named_parameters():
        p.requires_grad_(stage.trains(name))
    return stage.name


def rest_sections(table: Table, device, budget: Budget, quick: bool, rounds: int) -> None:
    from zsar.cli.bench import bench_model, synthetic_batch
    from zsar.runtime import RuntimeSettings

    name, batches = ("rest_tiny", [4]) if quick else ("rest18", [64, 128])
    gen = torch.Generator().manual_seed(0)
    defaults = RuntimeSettings.for_device(device)
    model = defaults.prepare_model(bench_model(name, LABELS))
    inputs = model.inputs
    for B in batches:
        if budget.left() < 30:
            table.add("rest inference", f"{name} B={B}", skipped="time budget")
            continue
        batch = defaults.to_device(synthetic_batch(model, LABELS, B, gen))

        def infer(m=model, batch=batch, runtime=defaults):
            with torch.no_grad(), runtime.autocast():
                m.eval().encode(batch)

        t_model = timed(infer, device, budget, rounds)
        # the floor: the frame encoder's trunk alone (rest18: torchvision's ResNet-18 without its
        # classifier, built by zsar.models.backbones.BACKBONES) over the same frames
        floor_net = model.encoder.spec.build().to(device).eval()
        frames = batch.clips.flatten(0, 1)
        if device.type == "cuda":
            floor_net = floor_net.to(memory_format=torch.channels_last)
            frames = frames.contiguous(memory_format=torch.channels_last)

        def floor(net=floor_net, frames=frames):
            with torch.no_grad(), defaults.autocast():
                net(frames)

        t_floor = timed(floor, device, budget, rounds)
        table.add("rest inference", f"{name} B={B} default settings", clips_per_s=B / t_model,
                  frames=inputs.frames, size=inputs.image_size, settings=json.dumps(defaults.describe()))
        table.add("rest inference", f"{model.encoder.spec.name} trunk alone B={B} (floor)", clips_per_s=B / t_floor,
                  of_floor=t_floor / t_model)
    if not quick and device.type == "cuda" and budget.left() > 90:
        compiled = RuntimeSettings.for_device(device, compile="on")
        cmodel = compiled.prepare_model(bench_model(name, LABELS))
        batch = compiled.to_device(synthetic_batch(cmodel, LABELS, batches[0], gen))

        def infer_compiled():
            with torch.no_grad(), compiled.autocast():
                cmodel.eval().encode(batch)

        t = timed(infer_compiled, device, budget, rounds, warmup=3)
        table.add("rest inference", f"{name} B={batches[0]} compile on", clips_per_s=batches[0] / t)
    # 2: the training step, as the trainer runs it (compile on CUDA) and without compile
    B = 4 if quick else 64
    for compile_ in (("auto", "off") if not quick else ("off",)):
        if budget.left() < 60:
            table.add("rest training step", f"{name} B={B} compile {compile_}", skipped="time budget")
            continue
        runtime = RuntimeSettings.for_device(device, compile=compile_)
        m = model if runtime == defaults else runtime.prepare_model(bench_model(name, LABELS))
        stage = _trainable(m)
        batch = runtime.to_device(synthetic_batch(m, LABELS, B, gen))
        t = timed(_train_step(m, batch, runtime, stage), device, budget, rounds, warmup=3)
        table.add("rest training step", f"{name} B={B} compile {'on' if runtime.compile else 'off'}",
                  clips_per_s=B / t, target=">= 544 clips/s" if not quick else "")


# ---- 3: MZST, fused op vs SDPA ----------------------------------------------------------------------


def _sdpa_attend(self, q, k, v, n_valid, n_fusion):
    """The bottleneck pattern by SDPA with a boolean key mask: valid keys are a sample's first
    ``n_valid`` positions and the last ``n_fusion``; padding query rows come out 0, as the op's do."""
    L = q.shape[2]
    pos = torch.arange(L, device=q.device)
    valid = (pos[None] < n_valid[:, None].to(pos.dtype)) | (pos[None] >= L - n_fusion)  # (B, L)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])
    return out * valid[:, None, :, None].to(out.dtype)


def use_sdpa(model, on: bool = True) -> int:
    """Swap the fusion attention of ``model`` for :func:`_sdpa_attend` (same weights), or back to the
    fused op with ``on=False``; returns how many layers."""
    from zsar.models.layers import BottleneckSelfAttention

    layers = [m for m in model.modules() if isinstance(m, BottleneckSelfAttention)]
    for layer in layers:
        if on:
            layer.attend = types.MethodType(_sdpa_attend, layer)
        else:
            layer.__dict__.pop("attend", None)  # the class's attend: the fused op
    return len(layers)


def mzst_sections(table: Table, device, budget: Budget, quick: bool, rounds: int) -> None:
    from zsar.cli.bench import bench_model, synthetic_batch
    from zsar.runtime import RuntimeSettings

    name, B = ("mzst_tiny", 1) if quick else ("mzst", 16)
    runtime = RuntimeSettings.for_device(device)
    torch.manual_seed(0)
    model = runtime.prepare_model(bench_model(name, LABELS))
    stage = _trainable(model)
    batch = runtime.to_device(synthetic_batch(model, LABELS, B, torch.Generator().manual_seed(0)))
    for attention in ("fused", "sdpa"):  # one model: its fusion attention swapped for SDPA second
        if budget.left() < 45:
            table.add("mzst", f"{name} B={B} {attention}", skipped="time budget")
            continue
        n_layers = use_sdpa(model) if attention == "sdpa" else 0
        mem_train, mem_infer = {}, {}
        with peak_memory(device, mem_train):
            t_train = timed(_train_step(model, batch, runtime, stage), device, budget, rounds)

        def infer():
            with torch.no_grad(), runtime.autocast():
                model.eval().encode(batch)

        with peak_memory(device, mem_infer):
            t_infer = timed(infer, device, budget, rounds)
        label = "fused bottleneck_attention" if attention == "fused" else f"SDPA + key mask ({n_layers} layers)"
        table.add("mzst", f"{name} B={B} {label}", train_clips_per_s=B / t_train, infer_clips_per_s=B / t_infer,
                  train_peak_gib=mem_train.get("peak_gib", float("nan")),
                  infer_peak_gib=mem_infer.get("peak_gib", float("nan")))
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ---- 4: video loading -----------------------------------------------------------------------------


def _write_sources(root: Path, n: int, frames: int, h: int, w: int, ext: str, gop: int | None) -> list[Path]:
    from zsar.data import write_video

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        video = (np.roll(base, 2 * t, axis=1) for t in range(frames))  # moving texture: real motion vectors
        paths.append(write_video(root / f"v{i:03d}{ext}", video, fps=25, gop=gop))
    return paths


def _loader_rate(videos, spec, backend: str, B: int, workers: int, budget: Budget, device, epochs: int,
                 **kw) -> tuple[float, int]:
    """(clips/s, views per video) of whole epochs of a VideoLoader (the first epoch warms up)."""
    from zsar.data import VideoLoader

    loader = VideoLoader(videos, spec, B, backend=backend, num_workers=workers, **kw)
    sync = _sync(device)
    n = 0
    for batch in loader:  # warm-up: worker start, pipeline build, files in the page cache
        n += len(batch)
    best = math.inf
    for _ in range(epochs):
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch)
        sync()
        best = min(best, time.perf_counter() - start)
        if budget.left() < 0:
            break
    views = 1 if spec.train else spec.views
    return n * views / best, views


def loader_sections(table: Table, device, budget: Budget, quick: bool, epochs: int) -> None:
    from zsar.data import ClipSpec, VideoList, VideoRecord, prepare_dataset
    from zsar.data.decoders import unavailable_reason

    gpu = device.type == "cuda"
    n, frames, (h, w) = (6, 48, (48, 64)) if quick else (64, 250, (240, 320))
    ext = ".mp4" if gpu else ".webm"
    dali = "dali-gpu" if gpu else "dali-cpu"
    workers = min(16, os.cpu_count() or 1)
    train = ClipSpec(frames=16 if not quick else 4, stride=4 if not quick else 2, size=224 if not quick else 32,
                     train=True)
    evaluation = ClipSpec(frames=train.frames, stride=train.stride, size=train.size, num_clips=4, crop="three")
    B = 32 if not quick else 2
    with tempfile.TemporaryDirectory(prefix="zsar-gpu-e2e-") as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "prepared"
        start = time.perf_counter()
        _write_sources(src, n, frames, h, w, ext, gop=None)  # the encoder's GOP, as uploads come
        written = time.perf_counter() - start
        start = time.perf_counter()
        prepare_dataset(src, dst, codec="h264" if gpu else "vp9", workers=1 if quick else workers, size=min(h, 240),
                        progress=False, gop=16)
        table.add("video files", f"{n} x {frames} frames {w}x{h} {ext}", written_s=written,
                  prepare_s=time.perf_counter() - start, prepare="--gop 16 --short-side 240")
        lists = {name: VideoList([VideoRecord(str(p), 0, p.stem) for p in sorted(folder.rglob(f"*{ext2}"))], ["x"])
                 for name, folder, ext2 in (("source (encoder GOP)", src, ext),
                                            ("prepared (GOP 16)", dst, ".mp4" if gpu else ".webm"))}
        runs = [(dali, "reader", "prepared (GOP 16)"), (dali, "bytes", "prepared (GOP 16)"),
                ("pyav", None, "prepared (GOP 16)")]
        if not quick:  # what preparing the files is worth
            runs.insert(1, (dali, "reader", "source (encoder GOP)"))
        for spec_name, spec in (("training clips", train), ("evaluation views (4 clips x 3 crops)", evaluation)):
            for backend, dali_input, files in runs:
                shown = f" ({dali_input})" if dali_input else f" {0 if quick else workers} workers"
                contender = f"{backend}{shown} on {files}"
                why = unavailable_reason(backend)
                if why:
                    table.add(spec_name, contender, skipped=why)
                    continue
                if budget.left() < 40:
                    table.add(spec_name, contender, skipped="time budget")
                    continue
                kw = {"dali_input": dali_input} if dali_input else {}
                try:
                    # (quick: PyAV in this process; starting worker processes would be most of the test)
                    n_workers = (0 if quick else workers) if backend == "pyav" else 4
                    rate, views = _loader_rate(lists[files], spec, backend, B, n_workers, budget, device, epochs, **kw)
                except Exception as e:  # one contender failing must not lose the table
                    table.add(spec_name, contender, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
                    continue
                table.add(spec_name, contender, clips_per_s=rate, views_per_video=views, batch=B)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_e2e_out"),
                        help="folder for gpu_e2e.md and gpu_e2e.json (default: $OUT, else ./gpu_e2e_out)")
    parser.add_argument("--budget", type=float, default=400, help="seconds for the whole run (default 400)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes on any device (what the test suite runs)")
    parser.add_argument("--sections", default="rest,mzst,loader", help="comma-separated subset of rest,mzst,loader")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.quick:
        print("gpu_e2e: no CUDA device; --quick runs the tiny sizes on the CPU", file=sys.stderr)
        return 2
    budget = Budget(args.budget)
    table = Table(_facts(device, args.quick))
    rounds, epochs = (1, 1) if args.quick else (20, 3)
    sections = {"rest": lambda: rest_sections(table, device, budget, args.quick, rounds),
                "mzst": lambda: mzst_sections(table, device, budget, args.quick, rounds),
                "loader": lambda: loader_sections(table, device, budget, args.quick, epochs)}
    out = Path(args.out)
    for name in args.sections.split(","):
        if name not in sections:
            parser.error(f"--sections: {name!r} is not one of {sorted(sections)}")
        try:
            sections[name]()
        except Exception as e:  # keep the other sections' numbers; the row says what failed
            table.add(name, "section failed", error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
        table.write(out)  # after every section: a run cut short still leaves its table
    table.facts["seconds"] = round(args.budget - budget.left(), 1)
    md, js = table.write(out)
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

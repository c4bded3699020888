"""``zsar bench``: quick throughput measurements on this machine.

* ``attention``: every registered attention op (``zsar.ops.ATTENTION_OPS``; ``--op`` picks one) at
  its usual shape: every usable backend checked against the float64 reference, then the op against
  torch SDPA with the equivalent dense mask, forward + backward.
* ``model``: clips/s of a registered model's inference (``encode``) and training step.
* ``decode``: clips/s of the video loader on generated UCF101-like files, per decoder backend.

The side-by-side benchmarks with statistics live in the repository's ``bench/`` (pytest-benchmark).
"""

from __future__ import annotations

import time

TARGETS = ("attention", "model", "decode")


def add_arguments(parser) -> None:
    from . import positive_int

    parser.add_argument("target", choices=TARGETS, nargs="?", default="attention",
                        help="what to measure (default: attention)")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch size (default: each attention op's usual one, 8 for model, 4 for decode)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repetitions (default: 50 for attention, interleaved, the median is "
                             "reported; 5 for model and decode, the best is reported)")
    parser.add_argument("--malloc", choices=("steady", "default"), default="steady",
                        help="steady (default): keep freed memory in the process, so timings are not "
                             "decided by page faults on memory glibc just returned to the kernel; "
                             "default: leave glibc's allocator settings alone")
    parser.add_argument("--op", default=None,
                        help="attention: one registered attention op (default: every one, see `zsar info`)")
    parser.add_argument("--model", default="rest_tiny", help="model for `model` (default rest_tiny)")
    parser.add_argument("--frames", type=positive_int, default=None, help="frames per clip for `model` (default: the model's)")
    parser.add_argument("--backend", default=None,
                        help="decode: one decoder backend (default: every usable one); model: attention backend")
    parser.add_argument("--find-batch-size", action="store_true",
                        help="model: double the batch from --batch while clips/s grows by at least 5%% and memory "
                        "lasts, for inference and the training step, and record the best of each (what a training "
                        "config's `batch_size: auto` reads; file: $ZSAR_BATCH_SIZES or ~/.cache/zsar/batch_sizes.json)")
    parser.add_argument("--max-batch", type=int, default=512,
                        help="model --find-batch-size: the largest batch tried (default 512)")


def run(args) -> int:
    from . import CLIError

    if (args.batch is not None and args.batch < 1) or (args.repeats is not None and args.repeats < 1):
        raise CLIError("--batch and --repeats must be at least 1")
    if args.malloc == "steady":
        from .._utils import keep_freed_memory

        print(f"allocator: {keep_freed_memory()}")
    return {"attention": _attention, "model": _model, "decode": _decode}[args.target](args)


def _device(args):
    import torch

    from . import CLIError

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda requested but torch sees no CUDA device")
    return device, (torch.cuda.synchronize if device.type == "cuda" else (lambda: None))


def _best_time(fn, repeats: int, sync) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def _median_times(fns: dict, repeats: int, sync, warmup: int = 5) -> dict:
    """Median seconds per call of each function, timed interleaved (one call of each per round),
    so a change in machine load hits every contender alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        sync()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def _attention(args) -> int:
    from ..ops import ATTENTION_OPS
    from . import CLIError

    if args.op is not None and args.op not in ATTENTION_OPS:
        raise CLIError(f"--op: {args.op!r} is not a registered attention op; expected one of {list(ATTENTION_OPS)}")
    device, sync = _device(args)
    names = list(ATTENTION_OPS) if args.op is None else [args.op]
    for i, name in enumerate(names):
        if i:
            print()
        _attention_op(ATTENTION_OPS[name], args, device, sync)
    return 0


def _attention_op(op, args, device, sync) -> None:
    """One registered attention op at its usual shape: each usable backend against the float64
    reference, then forward+backward of the op (dispatch's choice) against SDPA with the dense mask
    of the same pattern, interleaved."""
    import dataclasses

    import torch

    gen = torch.Generator().manual_seed(0)
    inputs, shape = op.example(args.batch, device, gen)
    q, k, v = inputs.q, inputs.k, inputs.v
    dout = torch.randn(q.shape, generator=gen).to(device)
    print(f"{op.name} on {device}: {shape}\n")

    def run(backend, **tensors):
        return op.fused(dataclasses.replace(inputs, **tensors), backend)[0]

    ref = run("reference", q=q.double(), k=k.double(), v=v.double())
    print("backend      max |error| vs float64 reference")
    for name, reasons in op.dispatcher.reasons(inputs).items():
        if reasons:
            print(f"  {name:<10} not usable here: {reasons[0]}")
            continue
        print(f"  {name:<10} {(run(name).double() - ref).abs().max().item():.2e}")

    L, mask_kind = inputs.seq_len, inputs.mask
    allowed = mask_kind.allowed(L, inputs.n_fixed, inputs.lengths)
    padding = ~mask_kind.valid(L, inputs.n_fixed, inputs.lengths)
    mask = (allowed | padding[:, :, None])[:, None]  # padding rows: any finite row for SDPA
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]

    def step(attention):
        def go():
            for t in leaves:  # no contender pays for accumulating into old gradients
                t.grad = None
            attention().backward(dout)
        return go

    fused = step(lambda: run(None, q=leaves[0], k=leaves[1], v=leaves[2]))
    sdpa = step(lambda: torch.nn.functional.scaled_dot_product_attention(*leaves, attn_mask=mask, scale=inputs.scale))
    auto = op.dispatcher.select(inputs).name
    repeats = args.repeats or 50
    times = _median_times({"fused": fused, "sdpa": sdpa}, repeats, sync)
    t_fused, t_sdpa = times["fused"], times["sdpa"]
    print(f"\nforward+backward, median of {repeats} (interleaved):")
    print(f"  zsar {op.name} ({auto}): {t_fused * 1e3:8.2f} ms")
    print(f"  torch SDPA + dense bool mask:  {t_sdpa * 1e3:8.2f} ms")
    print(f"  speed-up: {t_sdpa / t_fused:.2f}x")


def _model(args) -> int:
    import torch

    from ..runtime import RuntimeSettings

    device, sync = _device(args)
    runtime = RuntimeSettings.for_device(device)
    labels = [f"{c} {m}" for c in ("red", "blue") for m in ("moving left", "spinning")]
    overrides = {}
    if args.frames:
        overrides["frames"] = args.frames
    if args.backend:
        overrides["attention_backend"] = args.backend
    model = runtime.prepare_model(bench_model(args.model, labels, **overrides))
    inputs, B = model.inputs, args.batch or 8
    gen = torch.Generator().manual_seed(0)

    def make_batch(n: int):
        return runtime.to_device(synthetic_batch(model, labels, n, gen))

    stage = model.training_stages()[-1]  # the last stage trains the whole model
    for name, p in model.named_parameters():
        p.requires_grad_(stage.trains(name))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(mode: str, batch):
        def infer():
            with torch.no_grad(), runtime.autocast():
                model.eval().encode(batch)

        def train():
            model.train()
            with runtime.autocast():
                loss = model.forward_train(batch, stage.name)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return infer if mode == "inference" else train

    size = f"{inputs.frames} frames of {inputs.image_size}x{inputs.image_size}"
    precision = "bf16" if runtime.autocast_dtype is not None else "fp32"
    print(f"{args.model} on {device}: batch {B}, {size}, {precision}, {runtime.describe()}")
    if args.find_batch_size:
        return _find_batch_sizes(args, B, make_batch, step, sync, device, precision)
    batch = make_batch(B)
    for mode, name in (("inference", "inference"), ("train", f"training step ({stage.name})")):
        t = _best_time(step(mode, batch), args.repeats or 5, sync)
        print(f"  {name:<22} {t * 1e3:9.1f} ms/batch  {B / t:9.1f} clips/s")
    return 0


def bench_model(name: str, labels: list[str], **overrides):
    """The registered model ``name`` for ``labels``, with random class embeddings when its semantic
    loss trains towards them (any vectors time the same); on the CPU."""
    import torch

    from ..models import create_model
    from ..models.registry import needs_label_embeddings

    model = create_model(name, class_names=labels, **overrides)
    if needs_label_embeddings(name):
        gen = torch.Generator().manual_seed(0)
        model.set_class_embeddings(torch.randn(*model.class_embeddings.shape, generator=gen))
    return model


def synthetic_batch(model, labels: list[str], n: int, generator):
    """A random ``Batch`` of ``n`` clips shaped as ``model.inputs`` describes (audio and label words
    when it takes them), on the CPU."""
    import torch

    from ..data.batch import Batch

    inputs, gen = model.inputs, generator
    shape = (inputs.frames, inputs.feature_dim) if inputs.feature_dim else \
        (inputs.frames, 3, inputs.image_size, inputs.image_size)
    y = torch.randint(0, len(labels), (n,), generator=gen)
    batch = Batch(clips=torch.randn(n, *shape, generator=gen), labels=y)
    if inputs.audio is not None:
        batch = batch.replace(audio=torch.randn(n, inputs.audio.target_length, inputs.audio.mel_bins, generator=gen),
                              audio_present=torch.ones(n, dtype=torch.bool))
    if inputs.label_words:
        ids, words = model.tokenize_labels(labels)
        batch = batch.replace(word_ids=ids[y], n_words=words[y].to(torch.int32))
    return batch


def _out_of_memory(error: BaseException) -> bool:
    return "out of memory" in str(error).lower()


def _find_batch_sizes(args, start: int, make_batch, step, sync, device, precision: str) -> int:
    """For inference and the training step: clips/s at ``start``, ``2 start``, ... until the gain is
    under 5%, memory runs out or ``--max-batch`` is passed; records the fastest batch of each
    (:func:`zsar.runtime.record_batch_size`)."""
    import torch

    from ..runtime import device_name, record_batch_size
    from . import CLIError

    if args.max_batch < start:
        raise CLIError(f"--max-batch ({args.max_batch}) is below the starting batch --batch ({start})")
    for mode in ("inference", "train"):
        measured: dict[int, float] = {}
        B = start
        while B <= args.max_batch:
            try:
                t = _best_time(step(mode, make_batch(B)), args.repeats or 3, sync)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
                if not _out_of_memory(e):
                    raise
                print(f"  {mode:<9} batch {B:>5}: out of memory")
                break
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            measured[B] = B / t
            print(f"  {mode:<9} batch {B:>5}: {measured[B]:9.1f} clips/s")
            previous = measured.get(B // 2)
            if previous is not None and measured[B] < 1.05 * previous:
                break
            B *= 2
        if not measured:
            raise CLIError(f"{args.model}: batch {start} does not fit in {device}'s memory for {mode}; "
                           "try a smaller --batch")
        best = max(measured, key=measured.get)
        path = record_batch_size(args.model, device_name(device), mode, precision, best, measured)
        print(f"  {mode}: batch {best} ({measured[best]:.1f} clips/s) recorded in {path}")
    return 0


def _decode(args) -> int:
    import os
    import tempfile

    import numpy as np

    from ..data import DECODER_BACKENDS, ClipSpec, VideoList, VideoLoader, VideoRecord, write_video
    from ..data.decoders import unavailable_reason
    from . import CLIError

    backends = [args.backend] if args.backend else list(DECODER_BACKENDS)
    if args.backend and args.backend not in DECODER_BACKENDS:
        raise CLIError(f"--backend must be one of {', '.join(DECODER_BACKENDS)} for decode")
    spec, B, n_videos = ClipSpec(frames=16, stride=6, size=224, train=True), args.batch or 4, 8
    rng = np.random.default_rng(0)
    print(f"video loading: {n_videos} UCF101-like files (320x240, 120 frames), 16 frames at stride 6, "
          f"224x224 crops, batch {B}, {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as tmp:
        lists = {}
        for ext, codec in (("webm", "vp9"), ("mp4", "h264")):
            recs = []
            for i in range(n_videos):
                base = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
                frames = np.stack([np.roll(base, 2 * t, axis=1) for t in range(120)])
                path = os.path.join(tmp, f"v{i}.{ext}")
                write_video(path, frames)
                recs.append(VideoRecord(path, 0, str(i)))
            lists[codec] = VideoList(recs, ["x"])
        for backend in backends:
            for codec, videos in lists.items():
                why = unavailable_reason(backend, codec)
                if why:
                    print(f"  {backend:<9} {codec:<5} skipped: {why}")
                    continue
                loader = VideoLoader(videos, spec, B, backend=backend, num_workers=os.cpu_count())

                def epoch():
                    for _ in loader:
                        pass

                t = _best_time(epoch, args.repeats or 5, lambda: None)
                print(f"  {backend:<9} {codec:<5} {n_videos / t:7.1f} clips/s")
    return 0

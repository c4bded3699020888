"""The trainer of every registered model: its stages in order (ResT: warm-up, then joint training).

Any map-style dataset yielding :class:`~zsar.data.Sample` s (with a ``collate_fn``, like
:class:`~zsar.data.VideoClipDataset`) or plain ``(clip, label)`` pairs plugs in. The trainer uses the
model only through its contract (:class:`~zsar.models.ZeroShotModel`): the stages it declares, the
label words it asks for, and ``forward_train``'s ``loss`` and ``loss_*`` parts, which are logged.
Runs on one CPU/GPU or under ``torchrun`` (DistributedDataParallel; each rank reads its shard through
a DistributedSampler). Seeded and, on the CPU, deterministic: a run stopped after any epoch and
resumed ends with the same parameters as an uninterrupted one (data order, masking and dropout all
derive from the seed and saved state). A run holds a lock on its output folder, so two runs cannot
write into one folder.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..data.batch import Batch, as_batch
from ..models import checkpoint as ckpt
from ..models import create_model, needs_label_embeddings
from ..models.base import TrainingStage
from ..text import embedder_from_spec
from .config import StageConfig, TrainConfig
from .distributed import all_reduce_mean, barrier, init_from_env
from .lock import RunLock


class NonFiniteLossError(FloatingPointError):
    """A training step produced a NaN or infinite loss (``nonfinite_loss="error"``)."""


class _NonFiniteWatch:
    """The non-finite-loss check of one epoch. Per step (:meth:`fail_now`) when the host reads every
    loss; otherwise :meth:`note` records the first non-finite step in a device tensor without a host
    sync, and :meth:`check` (at log steps and before the epoch's checkpoint) reads it once and raises
    naming that step. Under ``nonfinite_loss="error"`` the run then stops before any checkpoint holds
    the damaged weights, so resuming starts from the last good epoch."""

    def __init__(self, policy: str, epoch: int, stage: str):
        self.policy, self.epoch, self.stage = policy, epoch, stage
        self.first_bad: torch.Tensor | None = None  # created on the first note: no work on the CPU path
        self.bad_value: torch.Tensor | None = None

    def _message(self, value, step: int) -> str:
        return (f"non-finite training loss ({value}) at epoch {self.epoch + 1}, step {step + 1} (stage {self.stage}); "
                "lower the learning rate, set grad_clip, or nonfinite_loss=skip")

    def fail_now(self, loss: torch.Tensor, step: int) -> None:
        """A step's loss was read and is non-finite: raise under "error" (else the caller skips it)."""
        if self.policy == "error":
            raise NonFiniteLossError(self._message(loss.item(), step))

    def note(self, loss: torch.Tensor, step: int) -> None:
        """Remember ``step`` on the device if its loss is the first non-finite one (no host sync)."""
        loss = loss.detach().float()
        if self.first_bad is None:
            self.first_bad = torch.full((), -1, dtype=torch.int64, device=loss.device)
            self.bad_value = torch.zeros((), dtype=torch.float32, device=loss.device)
        newly = (~torch.isfinite(loss)) & (self.first_bad < 0)
        self.first_bad = torch.where(newly, step, self.first_bad)
        self.bad_value = torch.where(newly, loss, self.bad_value)

    def check(self) -> None:
        """Raise when a noted step was non-finite (one host read)."""
        if self.first_bad is None:
            return
        step = int(self.first_bad)
        if step >= 0:
            raise NonFiniteLossError(self._message(float(self.bad_value), step))


def _step_seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def _collate_fn(dataset):
    """The dataset's own collation when it has one (VideoClipDataset drops skipped bad files)."""
    return getattr(dataset, "collate_fn", None)


def _cosine(total_steps: int):
    total = max(total_steps, 1)
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


class _MetricsLog:
    """``metrics.csv``: one row per logged step; columns grow when a stage reports a new loss part."""

    def __init__(self, path: Path):
        self.path = path

    def _read(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _write(self, rows: list[dict], fields: list[str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, restval="")
            w.writeheader()
            w.writerows(rows)
        tmp.replace(self.path)

    def truncate(self, first_epoch: int) -> None:
        """Drops rows of epochs ``>= first_epoch`` (written by a run killed before its checkpoint)."""
        rows = self._read()
        kept = [r for r in rows if int(r["epoch"]) < first_epoch]
        if len(kept) != len(rows):
            fields = list(rows[0]) if rows else []
            self._write(kept, fields)

    def append(self, row: dict[str, Any]) -> None:
        fields = None
        if self.path.is_file():
            with self.path.open(newline="") as f:
                fields = next(csv.reader(f), None)
        if fields is not None and set(row) <= set(fields):
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=fields, restval="").writerow(row)
            return
        fields = list(fields or []) + [k for k in row if k not in (fields or [])]
        self._write(self._read() + [row], fields)


def build_model(config: TrainConfig, class_names: Sequence[str], embedder=None) -> nn.Module:
    """``config.model`` built for ``class_names`` from ``config.model_args``, after seeding torch with
    ``config.seed``: the initial weights depend on the seed alone (identical on every rank of a
    distributed run, and in every run of the same config).

    Args:
        embedder: the label embedder of models that train towards their classes' label embeddings
            (default: ``config.embedder``'s, built only for such models).
    """
    if embedder is None and needs_label_embeddings(config.model):
        embedder = embedder_from_spec(config.embedder_spec())
    torch.manual_seed(config.seed)
    return create_model(config.model, class_names=list(class_names), label_embedder=embedder, **config.model_args)


class Trainer:
    """Trains a registered model on ``train_data`` whose labels index ``class_names``.

    Args:
        config: the run's :class:`TrainConfig`.
        train_data: map-style dataset of :class:`~zsar.data.Sample` s or ``(clip, label)`` pairs
            (clip: what the model's :attr:`~zsar.models.ZeroShotModel.inputs` describe; label: int).
        class_names: the seen classes' label text (for models that train on label words, e.g.
            ResT's masked-token loss, and to build the model).
        val_data: optional dataset of the same kind; its top-1 over the seen classes selects the
            ``best`` checkpoint (without it, the lowest mean training loss does).
        model: an already built model (default: ``create_model(config.model,
            class_names=class_names, **config.model_args)``, with the seen labels' embeddings for
            models that train towards them).
        embedder: the label embedder for such models (default: ``config.embedder``'s).
    """

    def __init__(self, config: TrainConfig, train_data: Dataset, class_names: Sequence[str],
                 val_data: Dataset | None = None, model: nn.Module | None = None, embedder=None):
        if len(class_names) < 2:
            raise ValueError(f"need at least 2 classes to train, got {len(class_names)}")
        self.config = config
        self.class_names = list(class_names)
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device)
        self.dist = init_from_env(self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if model is None:
            model = build_model(config, self.class_names, embedder)
        else:
            torch.manual_seed(config.seed)  # the same global random state after this as with a model built here
        #: The GPU defaults this run trains with (bf16, channels_last, compile, pinned memory, host syncs).
        self.runtime = config.runtime(self.device)
        self.model = self.runtime.prepare_model(model)
        self.label_words = None
        if self.model.inputs.label_words:
            ids, n = self.model.tokenize_labels(self.class_names)
            self.label_words = (ids.to(self.device), n.to(self.device, torch.int32))
        self.train_data, self.val_data = train_data, val_data
        self.out_dir = Path(config.out_dir)
        #: The folder under ``out_dir/checkpoints`` the best epoch is saved to. A caller keeping a
        #: finished run's ``best`` until the new run is complete points it elsewhere.
        self.best_name = "best"
        self.autocast_dtype = self.runtime.autocast_dtype
        self.stages: list[tuple[TrainingStage, StageConfig]] = config.stage_plan(self.model.training_stages())

    # ---- public -----------------------------------------------------------------------------------

    def fit(self, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
        """Runs the model's stages, continuing from ``out_dir/checkpoints/last`` when ``resume``.

        Without ``resume`` the run starts fresh: an earlier run's ``last`` checkpoint and its
        leftovers are removed first. The output folder is locked for the duration (another run into
        it fails at once, naming the holder).

        Args:
            resume: continue an interrupted run when its ``last`` checkpoint exists.
            stop_after: stop once this many epochs (counted over all stages) are done, as an
                interrupted run would; a later ``fit(resume=True)`` carries on.

        Returns:
            ``{"epochs", "history", "out_dir"}``.

        Raises:
            NonFiniteLossError: a step's loss was NaN/inf (``config.nonfinite_loss="error"``).
            RuntimeError: another live run holds the output folder.
        """
        lock = RunLock(self.out_dir) if self.dist.is_main else nullcontext()
        with lock:
            return self._fit(resume, stop_after)

    @torch.no_grad()
    def evaluate(self, dataset: Dataset, stage: str | None = None) -> float:
        """Top-1 accuracy over the seen classes (``stage``: the scores as trained in that stage;
        None: the final model)."""
        self.model.eval()
        loader = DataLoader(dataset, batch_size=self.config.batch_size, num_workers=self.config.num_workers,
                            sampler=self._sampler(dataset, shuffle=False), collate_fn=_collate_fn(dataset),
                            pin_memory=self.runtime.pin_memory)
        correct = torch.zeros(2, device=self.device)
        for item in loader:
            batch = as_batch(item)
            if batch is None:  # every video of the batch was a skipped bad file
                continue
            batch = self.runtime.to_device(batch)
            with self._autocast():
                logits = self.model.seen_logits(batch, stage)
            correct[0] += (logits.argmax(1) == batch.labels).sum()
            correct[1] += batch.labels.numel()
        correct = all_reduce_mean(correct, self.dist)  # the ratio of the means is the global ratio
        return (correct[0] / correct[1].clamp(min=1)).item()

    # ---- internals --------------------------------------------------------------------------------

    def _fit(self, resume: bool, stop_after: int | None) -> dict[str, Any]:
        schedule = [(stage, cfg, e) for stage, cfg in self.stages for e in range(cfg.epochs)]
        last = self.out_dir / "checkpoints" / "last"
        if self.dist.is_main:
            _remove_leftovers(self.out_dir / "checkpoints", keep_last=resume)
        barrier(self.dist)
        state = ckpt.load_trainer_state(last) if resume and self._has_last() else None
        start = 0
        self.best = -math.inf
        self.history: list[dict[str, Any]] = []
        if state is not None:
            recorded = ckpt.read_config(last).get("class_names")
            if recorded is not None and list(recorded) != list(self.class_names):
                raise ValueError(f"{self.out_dir} holds a run over other classes ({len(recorded)} classes, "
                                 f"{recorded[:3]}...) than this one ({len(self.class_names)}, "
                                 f"{list(self.class_names)[:3]}...): resuming would reuse its weights; start over "
                                 "with --no-resume (resume=False) or choose another out_dir")
            ckpt.load_weights(self.model, last)
            start, self.best, self.history = state["epoch"] + 1, state["best"], state["history"]
            torch.set_rng_state(state["rng_cpu"])
            if self.device.type == "cuda" and state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.metrics_log = _MetricsLog(self.out_dir / "metrics.csv")
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.out_dir / "train_config.yaml")
            self.metrics_log.truncate(start)  # rows of an epoch that never reached its checkpoint
        writer = self._tensorboard()
        current, opt, sched, ddp, loader = None, None, None, None, None
        end = len(schedule) if stop_after is None else min(stop_after, len(schedule))
        try:
            for epoch in range(start, end):
                stage, stage_cfg, stage_epoch = schedule[epoch]
                if stage.name != current:
                    opt, sched, ddp, loader = self._begin_stage(stage, stage_cfg)
                    if state is not None and state["stage"] == stage.name and state.get("optimizer"):
                        opt.load_state_dict(state["optimizer"])
                        sched.load_state_dict(state["scheduler"])
                    current = stage.name
                self.model.set_epoch(stage_epoch)
                metrics = self._train_epoch(epoch, stage.name, ddp, opt, sched, loader, writer)
                if self.val_data is not None:
                    metrics["val_top1"] = self.evaluate(self.val_data, stage=stage.name)
                metrics.update(epoch=epoch, stage=stage.name, stage_epoch=stage_epoch)
                self.history.append(metrics)
                score = metrics.get("val_top1", -metrics["loss"])
                self._save(epoch, stage.name, opt, sched, metrics, is_best=score > self.best)
                self.best = max(self.best, score)
        finally:
            if writer is not None:
                writer.close()
        return {"epochs": len(schedule), "history": self.history, "out_dir": str(self.out_dir)}

    def _has_last(self) -> bool:
        try:
            ckpt.resolve(self.out_dir / "checkpoints" / "last")
            return True
        except FileNotFoundError:
            return False

    def _sampler(self, dataset, shuffle: bool):
        return DistributedSampler(dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                  shuffle=shuffle, seed=self.config.seed, drop_last=shuffle)

    def _begin_stage(self, stage: TrainingStage, cfg: StageConfig):
        for pname, p in self.model.named_parameters():
            p.requires_grad_(stage.trains(pname))
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"stage {stage.name!r} of {self.config.model!r} trains no parameters")
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        loader = DataLoader(self.train_data, batch_size=self.config.batch_size, num_workers=self.config.num_workers,
                            sampler=self._sampler(self.train_data, shuffle=True), drop_last=True,
                            collate_fn=_collate_fn(self.train_data), pin_memory=self.runtime.pin_memory)
        if len(loader) == 0:
            raise ValueError(f"the training set ({len(self.train_data)} samples over {self.dist.world_size} "
                             f"process(es)) is smaller than one batch of {self.config.batch_size}")
        steps = cfg.epochs * math.ceil(len(loader) / self.config.grad_accum)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(steps) if cfg.schedule == "cosine" else lambda step: 1.0)
        # DDP wraps the model itself: its forward() is the contract's training forward.
        ddp = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None) \
            if self.dist.enabled else self.model
        return opt, sched, ddp, loader

    def _autocast(self):
        return self.runtime.autocast()

    def _prepare(self, item) -> Batch | None:
        batch = as_batch(item)
        if batch is None:
            return None
        batch = self.runtime.to_device(batch)
        if self.label_words is not None:
            ids, n = self.label_words
            batch = batch.replace(word_ids=ids[batch.labels], n_words=n[batch.labels])
        return batch

    def _train_epoch(self, epoch, stage, ddp, opt, sched, loader, writer) -> dict[str, float]:
        cfg = self.config
        loader.sampler.set_epoch(epoch)
        if hasattr(self.train_data, "set_epoch"):  # e.g. VideoClipDataset: new random clips each epoch
            self.train_data.set_epoch(epoch)
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        start, n_batches, n_steps, n_nonfinite = time.perf_counter(), len(loader), 0, 0
        # The first non-finite step since the last check, kept on the device (-1: none) when the host
        # reads device values at log steps only (runtime.sync_every_step False, CUDA's default).
        watch = _NonFiniteWatch(cfg.nonfinite_loss, epoch, stage)
        progress = self._progress(loader, f"epoch {epoch + 1} ({stage})")
        opt.zero_grad(set_to_none=True)
        for step, item in enumerate(progress):
            batch = self._prepare(item)
            if batch is None:  # every video of the batch was a skipped bad file
                continue
            # Random masking depends on (seed, epoch, step, rank) only, so resuming reproduces it.
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed, epoch, step, self.dist.rank))
            boundary = (step + 1) % cfg.grad_accum == 0 or step + 1 == n_batches
            sync = ddp.no_sync() if (self.dist.enabled and not boundary) else nullcontext()
            with sync, self._autocast():
                out = ddp(batch, stage, gen)
            if self.runtime.sync_every_step or cfg.nonfinite_loss == "skip":
                # Skipping a step is decided on the host, so "skip" reads every step's loss.
                if not torch.isfinite(out["loss"].detach()).item():
                    watch.fail_now(out["loss"], step)
                    opt.zero_grad(set_to_none=True)
                    n_nonfinite += 1
                    continue
            else:
                watch.note(out["loss"], step)
            with sync:
                (out["loss"] / cfg.grad_accum).backward()
            if boundary:
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            n_steps += 1
            for key, value in out.items():
                if key == "loss" or key.startswith("loss_"):
                    sums[key] = sums.get(key, torch.zeros((), device=self.device)) + value.detach().float()
            # Every log_every steps and at each epoch's last step, so that a run shorter than log_every
            # still writes metrics.csv.
            if (step + 1) % cfg.log_every == 0 or step + 1 == n_batches:
                watch.check()  # the host's one look at the device between log steps
            if self.dist.is_main and ((step + 1) % cfg.log_every == 0 or step + 1 == n_batches):
                self._log_row(writer, epoch, stage, step, n_batches, out, opt)
                if hasattr(progress, "set_postfix"):
                    progress.set_postfix(loss=f"{out['loss'].item():.3f}")
        watch.check()  # before the epoch's checkpoint: a non-finite step never reaches one
        if n_steps == 0 and n_nonfinite:  # the epoch trained nothing: its checkpoint would be no better
            raise NonFiniteLossError(f"every step of epoch {epoch + 1} (stage {stage}) had a non-finite loss "
                                     f"({n_nonfinite} skipped under nonfinite_loss=skip): nothing was trained; check "
                                     "the inputs and weights for NaN/Inf, lower the learning rate or set grad_clip")
        keys = sorted(sums, key=lambda k: (k != "loss", k))
        totals = torch.stack([sums[k] for k in keys]) if keys else torch.zeros(0, device=self.device)
        means = all_reduce_mean(totals / max(n_steps, 1), self.dist).tolist()
        seconds = time.perf_counter() - start
        clips_per_s = n_batches * cfg.batch_size * self.dist.world_size / seconds
        metrics = dict(zip(keys, means))
        metrics.setdefault("loss", math.nan)
        return {**metrics, "lr": opt.param_groups[0]["lr"], "seconds": seconds, "clips_per_s": clips_per_s}

    def _progress(self, loader, desc):
        if not (self.config.progress and self.dist.is_main):
            return loader
        from tqdm.auto import tqdm

        return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)

    def _tensorboard(self):
        if not self.dist.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))

    def _log_row(self, writer, epoch, stage, step, n_batches, out, opt):
        global_step = epoch * n_batches + step + 1
        losses = {k: v.item() for k, v in out.items() if k == "loss" or k.startswith("loss_")}
        row = {"epoch": epoch, "stage": stage, "step": global_step, **losses,
               "lr": opt.param_groups[0]["lr"], "time": time.time()}
        self.metrics_log.append(row)
        for key in (*losses, "lr"):
            writer.add_scalar(f"train/{key}", row[key], global_step)

    def _save(self, epoch, stage, opt, sched, metrics, is_best: bool):
        barrier(self.dist)
        if not self.dist.is_main:
            return
        extra = {"class_names": self.class_names, "train_config": self.config.to_dict(), "metrics": metrics}
        state = {"epoch": epoch, "stage": stage, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "best": max(self.best, metrics.get("val_top1", -metrics["loss"])), "history": self.history,
                 "rng_cpu": torch.get_rng_state(),
                 "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        root = self.out_dir / "checkpoints"
        ckpt.save_checkpoint(root / "last", self.model, extra, state)
        if is_best:
            ckpt.save_checkpoint(root / self.best_name, self.model, extra)
        if self.config.progress:
            shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
            print(f"epoch {epoch + 1} ({stage}): {shown}", flush=True)


def _remove_leftovers(root: Path, keep_last: bool) -> None:
    """Temporary checkpoint folders of a killed run (``.NAME.*``) go; without ``keep_last`` (a fresh
    run) so do ``last`` and its ``last.zsar-old`` twin, which would otherwise be resumed later."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith((".last.", ".best.")):
            shutil.rmtree(path, ignore_errors=True)
    if not keep_last:
        for name in ("last", "last" + ckpt.OLD_SUFFIX):
            shutil.rmtree(root / name, ignore_errors=True)

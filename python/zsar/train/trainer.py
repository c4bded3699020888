"""Two-stage ResT training: warm-up of the frame encoder, then joint training (paper §4.1).

Any map-style dataset yielding ``(clip, label)`` plugs in. Runs on one CPU/GPU or under ``torchrun``
(DistributedDataParallel; each rank reads its shard through a DistributedSampler). Seeded and, on the
CPU, deterministic: a run stopped after any epoch and resumed ends with the same parameters as an
uninterrupted one (data order, word masking and dropout all derive from the seed and saved state).
"""

from __future__ import annotations

import csv
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..models import create_model
from ..text.vocab import WordVocab
from . import checkpoint as ckpt
from .config import StageConfig, TrainConfig
from .distributed import all_reduce_mean, barrier, init_from_env


def _stage_parameter_filter(stage: str, objective: str):
    """Which parameters a stage trains: DDP needs every trainable parameter to get a gradient."""
    def trains(name: str) -> bool:
        if stage == "warmup":
            return name.startswith(("encoder.", "warmup_head."))
        if name.startswith("warmup_head."):
            return False
        if objective == "cls" and name.startswith("mtl_head."):
            return False
        if objective == "mlm" and name.startswith("cls_head."):
            return False
        return True
    return trains


class _StageForward(nn.Module):
    """The module DDP wraps: one forward per stage, so gradient hooks fire for either."""

    def __init__(self, model: nn.Module, stage: str):
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, clips, labels, word_ids, n_words, generator):
        if self.stage == "warmup":
            return self.model.forward_warmup(clips, labels)
        return self.model(clips, labels, word_ids, n_words, generator=generator)


def _step_seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def _collate_fn(dataset):
    """The dataset's own collation when it has one (VideoClipDataset drops skipped bad files)."""
    return getattr(dataset, "collate_fn", None)


def _cosine(total_steps: int):
    total = max(total_steps, 1)
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


class Trainer:
    """Trains a ResT model on ``train_data`` whose labels index ``class_names``.

    Args:
        config: the run's :class:`TrainConfig`.
        train_data: map-style dataset of ``(clip, label)`` (clip: ``(T, 3, H, W)`` float, or
            ``(T, p)`` features in feature-input mode; label: int).
        class_names: the seen classes' label text; its words form the masked-token vocabulary.
        val_data: optional dataset of the same kind; its top-1 selects the ``best`` checkpoint
            (without it, the lowest mean training loss does).
        model: an already built model (default: ``create_model(config.model, ...)``).
    """

    def __init__(self, config: TrainConfig, train_data: Dataset, class_names: Sequence[str],
                 val_data: Dataset | None = None, model: nn.Module | None = None):
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
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        vocab = WordVocab.from_labels(self.class_names)
        self.model = (model or create_model(
            config.model, num_classes=len(self.class_names), vocab=vocab.to_list(), **config.model_args)).to(self.device)
        self.vocab = self.model.vocab
        ids, n = self.vocab.encode_batch(self.class_names, self.model.config.max_words)
        self.class_word_ids, self.class_n_words = ids.to(self.device), n.to(self.device)
        self.train_data, self.val_data = train_data, val_data
        self.out_dir = Path(config.out_dir)
        self.autocast_dtype = torch.bfloat16 if (
            config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")) else None
        self.stages: list[tuple[str, StageConfig]] = [("warmup", config.warmup), ("joint", config.joint)]
        if self.model.encoder is None and config.warmup.epochs:
            # Feature-input models have no frame encoder to warm up.
            self.stages = [("joint", config.joint)]

    # ---- public -----------------------------------------------------------------------------------

    def fit(self, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
        """Runs (or, with ``resume``, continues from ``out_dir/checkpoints/last``) both stages.

        ``stop_after``: stop once this many epochs (counted over both stages) are done, as an
        interrupted run would; a later ``fit(resume=True)`` carries on. Returns a summary.
        """
        schedule = [(name, stage, e) for name, stage in self.stages for e in range(stage.epochs)]
        state = ckpt.load_trainer_state(self.out_dir / "checkpoints" / "last") if resume and self._has_last() else None
        start = 0
        self.best = -math.inf
        self.history: list[dict[str, Any]] = []
        if state is not None:
            ckpt.load_weights(self.model, self.out_dir / "checkpoints" / "last")
            start, self.best, self.history = state["epoch"] + 1, state["best"], state["history"]
            torch.set_rng_state(state["rng_cpu"])
            if self.device.type == "cuda" and state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.out_dir / "train_config.yaml")
        writer = self._tensorboard()
        current, opt, sched, ddp = None, None, None, None
        end = len(schedule) if stop_after is None else min(stop_after, len(schedule))
        for epoch in range(start, end):
            name, stage, stage_epoch = schedule[epoch]
            if name != current:
                opt, sched, ddp, loader = self._begin_stage(name, stage)
                if state is not None and state["stage"] == name and state.get("optimizer"):
                    opt.load_state_dict(state["optimizer"])
                    sched.load_state_dict(state["scheduler"])
                current = name
            metrics = self._train_epoch(epoch, name, ddp, opt, sched, loader, writer)
            if self.val_data is not None:
                metrics["val_top1"] = self.evaluate(self.val_data, stage=name)
            metrics.update(epoch=epoch, stage=name, stage_epoch=stage_epoch)
            self.history.append(metrics)
            score = metrics.get("val_top1", -metrics["loss"])
            self._save(epoch, name, opt, sched, metrics, is_best=score > self.best)
            self.best = max(self.best, score)
        if writer is not None:
            writer.close()
        return {"epochs": len(schedule), "history": self.history, "out_dir": str(self.out_dir)}

    @torch.no_grad()
    def evaluate(self, dataset: Dataset, stage: str = "joint") -> float:
        """Top-1 accuracy over the seen classes (warm-up head in stage 1, CLS head afterwards)."""
        self.model.eval()
        loader = DataLoader(dataset, batch_size=self.config.batch_size, num_workers=self.config.num_workers,
                            sampler=self._sampler(dataset, shuffle=False), collate_fn=_collate_fn(dataset))
        correct = torch.zeros(2, device=self.device)
        for batch in loader:
            if batch is None:  # every video of the batch was a skipped bad file
                continue
            clips, labels = batch
            clips, labels = clips.to(self.device), labels.to(self.device)
            with self._autocast():
                if stage == "warmup":
                    logits = self.model.warmup_head(self.model.frame_features(clips).mean(1))
                else:  # the CLS representation with text [MASK], as at inference
                    logits = self.model.cls_head(self.model.encode_video(clips))
            correct[0] += (logits.argmax(1) == labels).sum()
            correct[1] += labels.numel()
        correct = all_reduce_mean(correct, self.dist)  # the ratio of the means is the global ratio
        return (correct[0] / correct[1].clamp(min=1)).item()

    # ---- internals --------------------------------------------------------------------------------

    def _has_last(self) -> bool:
        try:
            ckpt.resolve(self.out_dir / "checkpoints" / "last")
            return True
        except FileNotFoundError:
            return False

    def _sampler(self, dataset, shuffle: bool):
        return DistributedSampler(dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                  shuffle=shuffle, seed=self.config.seed, drop_last=shuffle)

    def _begin_stage(self, name: str, stage: StageConfig):
        trains = _stage_parameter_filter(name, self.model.config.objective)
        for pname, p in self.model.named_parameters():
            p.requires_grad_(trains(pname))
        params = [p for p in self.model.parameters() if p.requires_grad]
        if stage.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
        loader = DataLoader(self.train_data, batch_size=self.config.batch_size, num_workers=self.config.num_workers,
                            sampler=self._sampler(self.train_data, shuffle=True), drop_last=True,
                            collate_fn=_collate_fn(self.train_data))
        if len(loader) == 0:
            raise ValueError(f"the training set ({len(self.train_data)} samples over {self.dist.world_size} "
                             f"process(es)) is smaller than one batch of {self.config.batch_size}")
        steps = stage.epochs * math.ceil(len(loader) / self.config.grad_accum)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(steps))
        module = _StageForward(self.model, name)
        ddp = DistributedDataParallel(module, device_ids=[self.device] if self.device.type == "cuda" else None) \
            if self.dist.enabled else module
        return opt, sched, ddp, loader

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _train_epoch(self, epoch, stage, ddp, opt, sched, loader, writer) -> dict[str, float]:
        cfg = self.config
        loader.sampler.set_epoch(epoch)
        if hasattr(self.train_data, "set_epoch"):  # e.g. VideoClipDataset: new random clips each epoch
            self.train_data.set_epoch(epoch)
        self.model.train()
        sums = torch.zeros(3, device=self.device)
        start, n_batches = time.perf_counter(), len(loader)
        progress = self._progress(loader, f"epoch {epoch + 1} ({stage})")
        opt.zero_grad(set_to_none=True)
        for step, batch in enumerate(progress):
            if batch is None:  # every video of the batch was a skipped bad file
                continue
            clips, labels = batch
            clips, labels = clips.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            # Word masks depend on (seed, epoch, step, rank) only, so resuming reproduces them.
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed, epoch, step, self.dist.rank))
            boundary = (step + 1) % cfg.grad_accum == 0 or step + 1 == n_batches
            sync = ddp.no_sync() if (self.dist.enabled and not boundary) else nullcontext()
            with sync, self._autocast():
                out = ddp(clips, labels, self.class_word_ids[labels], self.class_n_words[labels], gen)
            with sync:
                (out["loss"] / cfg.grad_accum).backward()
            if boundary:
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            sums += torch.stack([out["loss"].detach().float(), out["loss_cls"].detach().float(),
                                 out.get("loss_mtl", torch.zeros((), device=self.device)).detach().float()])
            if self.dist.is_main and (step + 1) % cfg.log_every == 0:
                self._log_row(writer, epoch, stage, step, n_batches, out, opt)
                if hasattr(progress, "set_postfix"):
                    progress.set_postfix(loss=f"{out['loss'].item():.3f}")
        means = all_reduce_mean(sums / n_batches, self.dist).tolist()
        seconds = time.perf_counter() - start
        clips_per_s = n_batches * cfg.batch_size * self.dist.world_size / seconds
        return {"loss": means[0], "loss_cls": means[1], "loss_mtl": means[2], "lr": opt.param_groups[0]["lr"],
                "seconds": seconds, "clips_per_s": clips_per_s}

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
        row = {"epoch": epoch, "stage": stage, "step": global_step, "loss": out["loss"].item(),
               "loss_cls": out["loss_cls"].item(), "loss_mtl": out.get("loss_mtl", torch.zeros(())).item(),
               "lr": opt.param_groups[0]["lr"], "time": time.time()}
        path = self.out_dir / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        for key in ("loss", "loss_cls", "loss_mtl", "lr"):
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
            ckpt.save_checkpoint(root / "best", self.model, extra)
        if self.config.progress:
            shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
            print(f"epoch {epoch + 1} ({stage}): {shown}", flush=True)

"""The model contract: a second model, defined and registered in this file alone, goes through the
package's Trainer, checkpoints, model loader, ZeroShotClassifier and evaluation runner unchanged.

The toy model mean-pools its frames and its audio features, maps both into the label embedder's space
(a semantic-embedding head, like MZST's) and trains on the distance to the true label's embedding
plus a seen-class cross-entropy. The data are linear in the label embeddings, so unseen labels whose
embeddings the model never saw are classified by the nearest label embedding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gensim.models import KeyedVectors
from torch import nn
from torch.utils.data import Dataset

import zsar
from zsar.data.batch import Sample, collate
from zsar.eval.runner import zero_shot_report
from zsar.zeroshot import encode_loader
from zsar.models import AudioSpec, ModelInputs, TrainingStage, ZeroShotModel, register_model
from zsar.text import WordVectorEmbedder
from zsar.train import StageConfig, Trainer, TrainConfig
from zsar.zeroshot import SemanticEmbeddingHead, ZeroShotClassifier

FRAMES, SIZE, EMBED = 3, 4, 4  # 9 seen labels span the 4-d label space
AUDIO = AudioSpec(target_length=8, mel_bins=6)
WORDS = ["red", "green", "blue", "amber", "ball", "cube", "cone", "ring"]
SEEN = [f"{c} {s}" for c in ("red", "green", "blue") for s in ("ball", "cube", "cone")]
UNSEEN = ["amber ring", "amber ball", "red ring", "blue ring"]


class MeanPoolAV(ZeroShotModel):
    """Mean-pooled pixels and audio, linearly mapped into the label embedding space."""

    zero_shot_head = "semantic_embedding"

    def __init__(self, num_classes: int, embed_dim: int, class_embeddings: list[list[float]]):
        super().__init__()
        self.args = {"num_classes": num_classes, "embed_dim": embed_dim, "class_embeddings": class_embeddings}
        self.video = nn.Linear(3 * SIZE * SIZE, embed_dim)
        self.audio = nn.Linear(AUDIO.mel_bins, embed_dim)
        self.task_head = nn.Linear(embed_dim, num_classes)
        self.register_buffer("targets", torch.tensor(class_embeddings, dtype=torch.float32))

    @property
    def inputs(self) -> ModelInputs:
        return ModelInputs(frames=FRAMES, image_size=SIZE, audio=AUDIO)

    def model_args(self):
        return dict(self.args)

    def encode(self, batch):
        clips = batch.clips if batch.clips.dim() == 5 else batch.clips.mean(1)  # average N clips
        audio = batch.audio * batch.audio_present[:, None, None]
        return self.video(clips.mean(1).flatten(1)) + self.audio(audio.mean(1))

    def seen_logits(self, batch, stage=None):
        return self.task_head(self.encode(batch))

    def training_stages(self):
        return [TrainingStage("main", lambda name: True, epochs=1, optimizer="adamw", lr=1e-2, weight_decay=0.0)]

    def forward_train(self, batch, stage, generator=None):
        x = self.encode(batch)
        loss_task = F.cross_entropy(self.task_head(x), batch.labels)
        loss_se = (x - self.targets[batch.labels]).pow(2).sum(1).mean()
        return {"loss": loss_task + loss_se, "loss_task": loss_task, "loss_se": loss_se}


@register_model("test_meanpool_av")
def _build(class_names=None, embedding_file: str | None = None, **args) -> MeanPoolAV:
    if class_names is not None:  # the seen labels' embeddings are the semantic targets
        embedder = WordVectorEmbedder(embedding_file)
        args = {"num_classes": len(class_names), "embed_dim": embedder.dim,
                "class_embeddings": embedder.embed(list(class_names)).tolist(), **args}
    return MeanPoolAV(**args)


class LinearAV(Dataset):
    """Clips and audio that are fixed linear functions of the label's embedding, plus noise."""

    def __init__(self, labels, class_names, embedder, per_class: int, seed: int):
        gen = torch.Generator().manual_seed(1234)  # the same maps for every split
        self.to_pixels = torch.randn(EMBED, 3 * SIZE * SIZE, generator=gen)
        self.to_audio = torch.randn(EMBED, AUDIO.mel_bins, generator=gen)
        emb = torch.as_tensor(embedder.embed(list(class_names)), dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        self.samples = []
        for label in labels:
            for _ in range(per_class):
                pixels = emb[label] @ self.to_pixels
                clip = pixels.view(1, 3, SIZE, SIZE) + 0.05 * torch.randn(FRAMES, 3, SIZE, SIZE, generator=gen)
                audio = (emb[label] @ self.to_audio) + 0.05 * torch.randn(AUDIO.target_length, AUDIO.mel_bins,
                                                                            generator=gen)
                self.samples.append(Sample(clip, label, audio=audio, video_id=f"v{len(self.samples)}"))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]

    collate_fn = staticmethod(collate)


@pytest.fixture
def vectors(tmp_path):
    rng = np.random.default_rng(0)
    kv = KeyedVectors(vector_size=EMBED)
    kv.add_vectors(WORDS, rng.standard_normal((len(WORDS), EMBED)).astype(np.float32))
    path = tmp_path / "vectors.txt"
    kv.save_word2vec_format(str(path))
    return path


def test_a_model_registered_in_a_test_trains_saves_reloads_and_classifies(tmp_path, vectors):
    embedder = WordVectorEmbedder(vectors)
    train = LinearAV(range(len(SEEN)), SEEN, embedder, per_class=12, seed=1)
    config = TrainConfig(model="test_meanpool_av", model_args={"embedding_file": str(vectors)},
                         stages={"main": StageConfig(epochs=30)}, batch_size=16, seed=0, device="cpu",
                         out_dir=str(tmp_path / "run"), progress=False, log_every=2)
    summary = Trainer(config, train, SEEN).fit()
    history = summary["history"]
    assert [h["stage"] for h in history] == ["main"] * 30
    assert {"loss_task", "loss_se"} <= set(history[-1]) and history[-1]["loss_se"] < history[0]["loss_se"] / 5
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "loss_task" in header and "loss_se" in header  # the trainer logs whatever parts it gets

    best = tmp_path / "run" / "checkpoints" / "best"
    model = zsar.load_model(best)
    assert isinstance(model, MeanPoolAV) and model.registry_name == "test_meanpool_av"

    clf = ZeroShotClassifier.from_loader(model, None, SEEN, embedder)  # this head needs no seen videos
    assert isinstance(clf.head, SemanticEmbeddingHead) and clf.head.metric == "l2"
    clf.save(best)
    loaded = ZeroShotClassifier.load(best, device="cpu")
    assert loaded.seen_labels == SEEN and loaded.embedder.spec() == embedder.spec()

    test = LinearAV(range(len(UNSEEN)), UNSEEN, embedder, per_class=5, seed=2)
    batch = collate([test[i] for i in range(len(test))])
    loaded.set_labels(UNSEEN)
    accuracy = (loaded.predict(batch) == batch.labels).float().mean().item()
    assert accuracy >= 0.9, accuracy
    assert torch.equal(loaded.predict(batch), clf.set_labels(UNSEEN).predict(batch))

    encoded = encode_loader(loaded.model, torch.utils.data.DataLoader(test, batch_size=8, collate_fn=collate),
                            progress=False, with_seen_logits=True)
    report = zero_shot_report(loaded, encoded, UNSEEN)
    assert report["transfer"]["top1"]["mean"] == pytest.approx(accuracy)
    assert "top1" in report["semantic_baseline"] and report["chance"] == 1 / len(UNSEEN)


def test_missing_audio_is_a_flag_not_a_different_batch(vectors):
    embedder = WordVectorEmbedder(vectors)
    model = zsar.create_model("test_meanpool_av", class_names=SEEN, embedding_file=str(vectors)).eval()
    data = LinearAV([0, 1], SEEN, embedder, per_class=1, seed=3)
    silent = collate([Sample(s.clip, s.label, audio=torch.zeros_like(s.audio), audio_present=False)
                      for s in data.samples])
    muted = collate(data.samples).replace(audio_present=torch.zeros(2, dtype=torch.bool))
    torch.testing.assert_close(model.encode(silent), model.encode(muted))


def test_flops_and_params_of_any_registered_model():
    from zsar.models.complexity import count_flops

    r = count_flops("test_meanpool_av_default_args", convention="macs")
    assert r["audio"] == [AUDIO.target_length, AUDIO.mel_bins] and r["frames"] == FRAMES
    assert r["params_training_heads"] == 0 and r["params"] == r["params_all"]


@register_model("test_meanpool_av_default_args")
def _build_without_args(class_names=None, **args) -> MeanPoolAV:
    n = len(class_names) if class_names is not None else 2
    return MeanPoolAV(num_classes=n, embed_dim=EMBED, class_embeddings=[[0.0] * EMBED] * n)


def test_a_model_file_registers_itself_without_being_named_elsewhere():
    # Adding a model is adding its file: importing zsar imports every module of zsar/models.
    import pkgutil
    import sys

    import zsar.models

    files = [m.name for m in pkgutil.iter_modules(zsar.models.__path__) if not m.name.startswith("_")]
    assert {"rest", "mzst", "registry"} <= set(files)
    assert [f for f in files if f"zsar.models.{f}" not in sys.modules] == []
    assert {"rest18", "mzst_tiny"} <= set(zsar.list_models())

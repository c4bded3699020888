"""Plots of the semantic transfer write non-empty images (ResT Fig. 3 and Fig. 4)."""

import numpy as np
import pytest
import torch

from zsar.eval.plots import plot_transfer_matrices, plot_tsne
from zsar.zeroshot import composite_prototypes, cosine_similarity_matrix, transfer_assignment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 1000


def _transfer(rng, n_unseen, n_seen, dim=8):
    seen_emb = rng.normal(size=(n_seen, 12)) + 1.0
    unseen_emb = rng.normal(size=(n_unseen, 12)) + 1.0
    m = cosine_similarity_matrix(unseen_emb, seen_emb)
    return m, transfer_assignment(m, 5, 0.5, 3), rng.normal(size=(n_seen, dim))


@pytest.mark.parametrize("n_unseen, n_seen, labelled", [(6, 10, True), (60, 200, True), (5, 7, False)])
def test_transfer_matrices_png(tmp_path, seed, n_unseen, n_seen, labelled):
    rng = np.random.default_rng(seed)
    m, a, _ = _transfer(rng, n_unseen, n_seen)
    rows = [f"unseen {i}" for i in range(n_unseen)] if labelled else None
    cols = [f"seen {i}" for i in range(n_seen)] if labelled else None
    out = plot_transfer_matrices(torch.as_tensor(m), a, tmp_path / "sub" / "fig3.png", rows, cols, title="toy")
    assert out == tmp_path / "sub" / "fig3.png" and _is_png(out)


def test_transfer_matrices_errors(tmp_path):
    m = np.full((2, 3), 0.5)
    with pytest.raises(ValueError, match="shape of relatedness"):
        plot_transfer_matrices(m, np.zeros((3, 2)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="binary"):
        plot_transfer_matrices(m, np.full((2, 3), 0.5), tmp_path / "x.png")
    with pytest.raises(ValueError, match="seen_labels has 2 entries, expected 3"):
        plot_transfer_matrices(m, np.zeros((2, 3)), tmp_path / "x.png", seen_labels=["a", "b"])


@pytest.mark.parametrize("n_classes, per_class", [(4, 10), (25, 3), (2, 1)])
def test_tsne_png(tmp_path, seed, n_classes, per_class):
    rng = np.random.default_rng(seed)
    m, a, seen_protos = _transfer(rng, n_classes, 12)
    protos = composite_prototypes(seen_protos, m, a)
    labels = np.repeat(np.arange(n_classes), per_class)
    x = protos[labels] + 0.3 * rng.normal(size=(labels.size, protos.shape[1]))
    names = [f"class {i}" for i in range(n_classes)]
    # n = 2 + 2 points for the smallest case: perplexity 30 must be clipped to n - 1.
    out = plot_tsne(x, labels, tmp_path / "fig4.png", prototypes=protos, class_names=names, seed=seed % 1000)
    assert _is_png(out)
    if labels.size >= 3:
        assert _is_png(plot_tsne(torch.as_tensor(x), torch.as_tensor(labels), tmp_path / "plain.png", perplexity=5))


def test_tsne_errors(tmp_path):
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="labels"):
        plot_tsne(x, np.array([0, 1]), tmp_path / "x.png")
    with pytest.raises(ValueError, match="prototypes"):
        plot_tsne(x, np.array([0, 1, 1, 2]), tmp_path / "x.png", prototypes=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least 3 points"):
        plot_tsne(x[:2], np.array([0, 0]), tmp_path / "x.png")


def test_a_figure_that_fails_half_written_leaves_the_previous_one(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    m, a, _ = _transfer(rng, 6, 10)
    out = plot_transfer_matrices(torch.as_tensor(m), a, tmp_path / "fig3.png")
    before = out.read_bytes()
    savefig = Figure.savefig

    def dies_half_way(self, fname, *args, **kwargs):  # like a kill or a full disk while writing
        if hasattr(fname, "write"):
            fname.write(before[:100])
        else:
            with open(fname, "wb") as f:
                f.write(before[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        plot_transfer_matrices(torch.as_tensor(m), a, tmp_path / "fig3.png")
    monkeypatch.setattr(Figure, "savefig", savefig)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["fig3.png"]

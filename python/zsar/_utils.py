"""Small helpers shared across zsar's subpackages."""

from __future__ import annotations

import numpy as np
import torch


def as_numpy(x) -> np.ndarray:
    """A host NumPy view/copy of an array-like or a (possibly CUDA, possibly grad-tracking) tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)

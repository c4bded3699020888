"""Small synthetic datasets for training tests (generated, deterministic by seed)."""

import torch
from torch.utils.data import Dataset

CLASS_NAMES = ["red square left", "red square right", "blue circle left", "blue circle right"]


class SeparableClips(Dataset):
    """Noisy clips whose class decides their colour cast (red, green, blue, dark)."""

    def __init__(self, n: int, frames: int = 4, size: int = 32, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % len(CLASS_NAMES)
        self.clips = 0.3 * torch.randn(n, frames, 3, size, size, generator=gen)
        casts = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, -1.0, -1.0]])
        self.clips += casts[self.labels][:, None, :, None, None]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.clips[i], int(self.labels[i])


class SeparableFeatures(Dataset):
    """Per-frame feature vectors (feature-input mode): class c shifts feature block c."""

    def __init__(self, n: int, frames: int = 3, dim: int = 16, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % len(CLASS_NAMES)
        self.x = torch.randn(n, frames, dim, generator=gen)
        block = dim // len(CLASS_NAMES)
        for i, c in enumerate(self.labels.tolist()):
            self.x[i, :, c * block:(c + 1) * block] += 2.0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.x[i], int(self.labels[i])


FEATURE_MODEL_ARGS = dict(feature_input=True, feature_dim=16, frames=3, dim=32, depth=2, heads=4,
                          mlp_dim=64, dropout=0.0, objective="cls")

"""zsar: zero-shot action recognition in video (ResT, MZST) with fused C++/CUDA/Triton kernels."""

from . import ops
from ._version import __version__
from .models import create_model, list_models, load_model

__all__ = ["__version__", "create_model", "list_models", "load_model", "ops"]

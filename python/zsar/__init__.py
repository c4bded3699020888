"""zsar: zero-shot action recognition in video (ResT, MZST) with fused C++/CUDA/Triton kernels."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zsar")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from . import ops  # noqa: E402
from .models import create_model, list_models, load_model  # noqa: E402

__all__ = ["__version__", "create_model", "list_models", "load_model", "ops"]

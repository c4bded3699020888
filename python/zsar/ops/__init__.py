"""Fused ops of zsar, each a ``torch.library`` custom op with several backends.

* ``_custom_op.py``: the scaffolding every fused op shares (custom ops, autograd, fake
  implementations, FLOP formulas, eager fast path); ``_dispatch.py``: backend selection;
  ``_backend.py``: backends that declare their capabilities as data.
* ``attention/``: the fused attention kernels (mask kinds, backends ``cuda``, ``cpu``, ``triton``,
  ``reference``) and the front end every attention op shares (``attention/op.py``, with the
  registry ``ATTENTION_OPS``).
* ``masked_attention.py``: ResT's ``masked_attention`` on those kernels.
* ``bottleneck_attention.py``: MZST's ``bottleneck_attention`` (attention-bottleneck fusion) on the
  same kernels.

Each module is named after its op; the package exports the functions, so ``zsar.ops.masked_attention``
is the function and ``zsar.ops.masked_attention.<name>`` imports reach the module.
"""

from ._dispatch import BackendUnavailableError, Dispatcher
from .attention import ATTENTION_OPS
from .bottleneck_attention import bottleneck_attention
from .masked_attention import check_n_text_range, masked_attention

__all__ = ["ATTENTION_OPS", "BackendUnavailableError", "Dispatcher", "bottleneck_attention", "check_n_text_range",
           "masked_attention"]

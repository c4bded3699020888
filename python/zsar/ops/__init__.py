"""Fused ops of zsar, each a ``torch.library`` custom op with several backends.

* ``_custom_op.py``: the scaffolding every fused op shares (custom ops, autograd, fake
  implementations, FLOP formulas, eager fast path); ``_dispatch.py``: backend selection;
  ``_backend.py``: backends that declare their capabilities as data.
* ``attention/``: the fused attention kernels (mask kinds, backends ``cuda``, ``cpu``, ``triton``,
  ``reference``).
* ``rest_attention.py``: ResT's ``masked_attention`` on those kernels.
* ``bottleneck.py``: MZST's ``bottleneck_attention`` (attention-bottleneck fusion) on the same kernels.
"""

from ._dispatch import BackendUnavailableError, Dispatcher
from .bottleneck import bottleneck_attention
from .rest_attention import check_n_text_range, masked_attention

__all__ = ["BackendUnavailableError", "Dispatcher", "bottleneck_attention", "check_n_text_range", "masked_attention"]

"""The fp16/bf16 attention kernels run on tensor cores: the SASS of the compiled core (built with
CUDA; no GPU needed) has HMMA instructions in every tensor-core kernel of both kernel files, and
the CUDA-core kernels that keep fp32 have none (so the check can tell the two apart)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from zsar import _ext


def _cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:  # Triton ships one with its NVIDIA backend
        import triton

        bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        return str(bundled) if bundled.exists() else None
    except ImportError:
        return None


def _kernels_sass() -> dict[str, str]:
    """Function name -> SASS text of every kernel in the compiled core."""
    if not _ext.build_info().get("cuda"):
        pytest.skip("zsar._C was built without CUDA")
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (CUDA toolkit or Triton) on this machine")
    sass = subprocess.run([tool, "-sass", _ext.compiled().__file__], capture_output=True, text=True, check=True).stdout
    functions: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in sass.splitlines():
        match = re.search(r"Function : (\S+)", line)
        if match:
            lines = functions.setdefault(match.group(1), [])
        else:
            lines.append(line)
    return {name: "\n".join(text) for name, text in functions.items()}


@pytest.mark.slow  # cuobjdump over the whole core: 5-15 s
def test_tensor_core_kernels_use_hmma():
    functions = _kernels_sass()
    mma = {name: text for name, text in functions.items() if "_mma_kernel" in name}
    for kernel in ("prefix_attention_fwd_mma_kernel", "prefix_attention_bwd_mma_kernel", "tiled_fwd_mma_kernel",
                   "tiled_bwd_dq_mma_kernel", "tiled_bwd_dkdv_mma_kernel"):
        instances = [name for name in mma if kernel in name]
        assert instances, f"no {kernel} in the compiled core"
        for name in instances:
            assert "HMMA" in mma[name], f"{name} has no HMMA instruction"
    fp32 = [name for name in functions if "prefix_attention_fwd_kernelIf" in name]
    assert fp32 and all("HMMA" not in functions[name] for name in fp32)

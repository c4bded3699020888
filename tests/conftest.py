"""Shared fixtures. Triton kernels run on the CPU through the interpreter when there is no GPU."""

import atexit
import os
import random
import shutil
import tempfile

import pytest

# torch.compile's on-disk caches are keyed without the vector ISA that inductor generated code for
# (ATEN_CPU_CAPABILITY), so a kernel cached by an earlier run under another ISA setting is reused
# with the wrong vector width and gives wrong sums. The tests compile into a cache of their own.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _INDUCTOR_CACHE = tempfile.mkdtemp(prefix="zsar-tests-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _INDUCTOR_CACHE
    atexit.register(shutil.rmtree, _INDUCTOR_CACHE, ignore_errors=True)

# Must be set before triton.jit decorates anything, i.e. before zsar is imported.
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass


@pytest.fixture
def seed(request) -> int:
    """A fresh seed per test (set ZSAR_TEST_SEED to replay one); printed when the test fails."""
    value = int(os.environ.get("ZSAR_TEST_SEED", random.SystemRandom().randrange(2**31)))
    request.node.user_properties.append(("seed", value))
    return value


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                report.sections.append(("seed", f"replay with ZSAR_TEST_SEED={value}"))

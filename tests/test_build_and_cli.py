"""The compiled core's build, `python -m zsar.info`, and the `zsar` command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from zsar import _ext


def _zsar(*args, check=True):
    return subprocess.run([sys.executable, "-m", "zsar.cli", *args], capture_output=True, text=True, check=check)


def test_compiled_core_loads_without_libtorch():
    info = _ext.build_info()
    assert info["available"], info.get("error")
    assert info["cpu_isa"] in ("avx512", "avx2", "baseline")
    import zsar._C as compiled

    with open(compiled.__file__, "rb") as f:
        binary = f.read()
    for lib in (b"libtorch.so", b"libtorch_cpu.so", b"libc10.so", b"libtorch_python.so"):
        assert lib not in binary, f"zsar._C must not link {lib.decode()}"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on this machine")
def test_cuda_kernels_compiled_when_nvcc_is_present():
    if os.environ.get("ZSAR_CUDA", "").upper() == "OFF":
        pytest.skip("this build was asked for without CUDA (ZSAR_CUDA=OFF)")
    info = _ext.build_info()
    assert info["cuda"], "nvcc is on PATH but zsar._C was built without the CUDA kernels"
    assert info["cuda_archs"]


def test_info_module_prints_build_and_backends():
    out = subprocess.run([sys.executable, "-m", "zsar.info"], capture_output=True, text=True, check=True).stdout
    assert "compiled core zsar._C" in out and "threads:" in out and "CUDA" in out
    assert "masked_attention backends" in out
    for name in ("cuda", "cpu", "triton", "reference"):
        assert name in out


def test_info_json():
    data = json.loads(_zsar("info", "--json").stdout)
    cpu_fp32 = next(r for r in data["masked_attention"] if r["device"] == "cpu" and r["dtype"] == "float32")
    assert cpu_fp32["backends"]["cpu"] == [] and cpu_fp32["backends"]["reference"] == []
    assert data["build"]["available"]


def test_bench_attention_checks_backends_and_reports_speed():
    # One op here (its ResT shape is quick); every registered op is benched in test_ops_registered.
    out = _zsar("bench", "attention", "--op", "masked_attention", "--batch", "4", "--repeats", "2").stdout
    assert "cpu" in out and "speed-up" in out and "median of 2 (interleaved)" in out
    assert "allocator: freed memory kept" in out


@pytest.mark.slow
def test_bench_attention_with_the_default_allocator():
    out = _zsar("bench", "attention", "--op", "masked_attention", "--batch", "2", "--repeats", "1",
                 "--malloc", "default").stdout
    assert "speed-up" in out and "allocator" not in out


def test_bench_model():
    out = _zsar("bench", "model", "--batch", "2", "--repeats", "1").stdout
    assert "inference" in out and "training step" in out and "clips/s" in out


def test_cli_errors_are_one_line():
    result = _zsar("bench", "--batch", "0", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--batch" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_for_each_command():
    for cmd in ("info", "demo", "bench"):
        assert "usage: zsar " + cmd in _zsar(cmd, "--help").stdout


def test_output_into_a_closed_pipe_is_not_an_error():
    # `zsar list | head -1`: the reader is gone before the command writes; that is a normal end.
    proc = subprocess.Popen([sys.executable, "-m", "zsar.cli", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 0, stderr
    assert "error" not in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr


def test_an_output_where_the_user_may_not_write_is_refused_up_front(tmp_path, monkeypatch):
    from zsar.cli import CLIError, check_output_file, check_output_folder

    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    # (as root every folder is writable, so the permission is taken away here rather than with chmod)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: os.fspath(p) != str(locked) and access(p, mode, **kw))
    with pytest.raises(CLIError, match=rf"--report {locked}/r.json: no permission to write in {locked}"):
        check_output_file(str(locked / "r.json"), "--report")
    with pytest.raises(CLIError, match="no permission to write in"):
        check_output_folder(str(locked / "new" / "out"), "--out")
    with pytest.raises(CLIError, match=rf"--out {locked}: no permission to write in it"):
        check_output_folder(str(locked), "--out")
    check_output_file(str(tmp_path / "r.json"), "--report")  # writable: fine

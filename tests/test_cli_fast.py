"""The `zsar` command answers at once: `--help` of every command parses without importing torch
(checked in a fresh interpreter, not timed), and the `list` command reads the registries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from zsar.cli import COMMANDS

_PARSE_HELP = """
import sys
from zsar.cli import build_parser
try:
    build_parser().parse_args({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "numpy", "av", "scipy", "highspy", "transformers") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [["--help"]] + [[cmd, "--help"] for cmd in COMMANDS])
def test_help_imports_no_heavy_module(argv):
    result = subprocess.run([sys.executable, "-c", _PARSE_HELP.format(argv=argv)], capture_output=True, text=True,
                            check=True)
    assert "usage: zsar" in result.stdout
    assert "HEAVY=\n" in result.stderr, result.stderr


def test_demo_help_defaults_mirror_the_configs():
    """`zsar demo --help` shows defaults mirrored in zsar.cli.demo (to stay torch-free): they must be the configs'."""
    from zsar.cli.demo import HELP_DEFAULTS
    from zsar.demo import DemoConfig, MZSTDemoConfig

    for name, config in (("rest", DemoConfig()), ("mzst", MZSTDemoConfig())):
        for key, value in HELP_DEFAULTS[name].items():
            actual = getattr(config, key) if hasattr(config, key) else getattr(config.data, key)
            assert actual == value, (name, key)


def test_list_reads_the_registries(capsys):
    from zsar.cli import main
    from zsar.data.formats import FORMATS
    from zsar.models import list_models

    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed["models"]] == list_models()
    assert [f["name"] for f in listed["formats"]] == list(FORMATS)
    # The one format of feature files says so, and what reads it.
    assert [f["name"] for f in listed["formats"] if f["features"]] == ["avca_features"]
    assert "zsar gzsl" in next(f["features"] for f in listed["formats"] if f["features"])
    assert {"pyav", "dali-cpu"} <= {d["name"] for d in listed["decoders"]}
    assert {"masked_attention", "bottleneck_attention"} == {o["name"] for o in listed["ops"]}
    assert {"0/100", "0/50", "gzsl"} <= {p["name"] for p in listed["protocols"]}


def test_decoder_choice_is_said_once_per_kind_of_file(tmp_path, caplog, monkeypatch):
    import logging

    from videos import make_video
    from zsar.data import probe_video
    from zsar.data.decoders import base

    monkeypatch.setattr(base, "_SAID", set())
    paths = [tmp_path / f"v{i}.webm" for i in range(2)] + [tmp_path / "v.mp4"]
    for p in paths:
        make_video(p, t=4)
    with caplog.at_level(logging.INFO, logger="zsar"):
        for p in paths + paths:
            base.select_decoder(probe_video(p), "auto", "cpu")
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(said) == 2, said  # one for VP9, one for H.264
    assert any("vp9" in s for s in said) and any("h264" in s for s in said)


def test_demo_pins_cpu_kernels_before_torch_loads():
    """`zsar demo` asks for AVX2 kernels (torch, MKL, oneDNN) before torch is imported, so that a seed gives
    the same numbers on AVX2 and AVX-512 CPUs; the environment can still say otherwise."""
    code = ("import os, sys\n"
            "from zsar.cli.demo import pin_cpu_kernels\n"
            "pinned = pin_cpu_kernels()\n"
            "import torch\n"
            "print(pinned['ATEN_CPU_CAPABILITY'], pinned['MKL_CBWR'], torch.backends.cpu.get_cpu_capability())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()
    assert out[:2] == ["avx2", "AVX2"]
    assert out[2] in ("AVX2", "DEFAULT")  # DEFAULT only on a CPU without AVX2
    env["ATEN_CPU_CAPABILITY"] = "default"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()
    assert out[0] == "default" and out[2] == "DEFAULT"

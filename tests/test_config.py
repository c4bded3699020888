"""Config files and overrides: bounded in size (a YAML alias bomb is refused at once), one-line
errors naming the file or key, and no deep copies of what was read."""

from __future__ import annotations

import dataclasses
import resource
import subprocess
import sys

import pytest

from zsar import config as cfg



def alias_bomb(levels: int) -> str:
    """``levels`` lines of 9 aliases to the line before: 9**levels strings once expanded."""
    names = "abcdefghi"[:levels]
    return "".join(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
                   for prev, name in zip([None, *names], names))


ALIAS_BOMB = alias_bomb(9)  # 387 million strings from a few hundred bytes
# In this process: 9**6 values, past the bound yet harmless should the bound ever be lost.
SMALL_BOMB = alias_bomb(6)


@dataclasses.dataclass
class Section:
    lr: float = 0.1
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Config:
    name: str = "x"
    stage: Section = dataclasses.field(default_factory=Section)
    extra: dict = dataclasses.field(default_factory=dict)


def _limit_memory():  # the alias bomb would otherwise take gigabytes on code without the bound
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def test_alias_bomb_fails_at_once_from_the_command_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 400
    run = subprocess.run([sys.executable, "-m", "zsar.cli", "train", str(path)], capture_output=True, text=True,
                         timeout=120, preexec_fn=_limit_memory)
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "expands to more than" in lines[0], run.stderr[-2000:]


@pytest.mark.parametrize("where", ["top", "known dict key", "override"])
def test_alias_bomb_is_refused_wherever_it_is(tmp_path, where):
    path = tmp_path / "c.yaml"
    if where == "top":
        path.write_text(SMALL_BOMB)
    elif where == "known dict key":  # `extra` takes any mapping, so the unknown-key check would not stop it
        path.write_text("extra:\n" + "".join("  " + line + "\n" for line in SMALL_BOMB.splitlines()))
    else:
        path.write_text("name: y\n")
    with pytest.raises(ValueError, match="expands to more than 100000 values") as info:
        data = cfg.load_file(path)
        cfg.apply_overrides(data, ["extra={" + ", ".join(SMALL_BOMB.splitlines()) + "}"])
    assert "\n" not in str(info.value)


def test_aliases_that_stay_small_are_fine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stage: &s {lr: 0.5, options: {a: [1, 2]}}\nextra: *s\n")
    conf = cfg.from_dict(Config, cfg.load_file(path))
    assert conf.stage.lr == 0.5 and conf.extra == {"lr": 0.5, "options": {"a": [1, 2]}}


@pytest.mark.parametrize("content, match", [
    ("a: &a [1, *a]\n", "refers to a YAML anchor inside itself"),
    ("a: [1, 2\nb: 3\n", r"is not valid YAML: .* \(line 2, column 2\)"),
    ("[" * 5000, "is not valid YAML: .*exceeded maximum nesting depth"),
    ("- 1\n---\n- 2\n", "is not valid YAML: expected a single document in the stream, but found another document"),
    ("- 1\n- 2\n", "must hold a mapping at the top level, got list"),
    (b"name: \xff\xfe\n", r"is not UTF-8 text \(byte 6\)"),
    ("x: " + "a" * (1 << 20), "is larger than 1048576 bytes"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, content, match):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=match) as info:
        cfg.load_file(path)
    assert str(info.value).startswith(f"config file {path} ") and "\n" not in str(info.value)


@pytest.mark.parametrize("content, match", [
    ('{"a": 1', "is not valid JSON"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
])
def test_bad_json_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        cfg.load_file(path)


def test_a_folder_or_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"config file {tmp_path} does not exist or is not a file"):
        cfg.load_file(tmp_path)


def test_overrides_copy_only_their_path():
    shared = {"big": list(range(10))}
    data = {"stage": {"lr": 0.1, "options": shared}, "extra": shared}
    out = cfg.apply_overrides(data, ["stage.lr=0.5", "name=z", "new.section.key=[1, 2]"])
    assert data == {"stage": {"lr": 0.1, "options": shared}, "extra": shared}  # the input is unchanged
    assert out["stage"] == {"lr": 0.5, "options": shared} and out["stage"]["options"] is shared
    assert out["name"] == "z" and out["new"] == {"section": {"key": [1, 2]}}
    with pytest.raises(ValueError, match="'name' is not a section"):
        cfg.apply_overrides(out, ["name.x=1"])
    with pytest.raises(ValueError, match="must look like key=value"):
        cfg.apply_overrides(out, ["novalue"])
    with pytest.raises(ValueError, match=r"override stage.lr is not valid YAML"):
        cfg.apply_overrides(out, ["stage.lr=[1, 2"])


def test_unknown_keys_are_named_even_when_not_strings():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['1'\]"):
        cfg.from_dict(Config, {1: 2, "stage": {"bogus": 1}})
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['stage.bogus'\]"):
        cfg.from_dict(Config, {"stage": {"bogus": 1}})


_SAVE_ON_A_FULL_DISK = """
import resource, signal, sys
from zsar.train.config import TrainConfig
path = sys.argv[1]
TrainConfig(seed=7, out_dir="runs/exp42", head_settings={"k": 5}).save(path)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.RLIM_INFINITY))
try:
    TrainConfig(seed=8, out_dir="runs/exp43").save(path)
except OSError as e:
    print("failed:", e.strerror)
"""


def test_a_config_save_that_fails_leaves_the_previous_file_whole(tmp_path):
    from zsar.train.config import TrainConfig

    path = tmp_path / "train_config.yaml"
    result = subprocess.run([sys.executable, "-c", _SAVE_ON_A_FULL_DISK, str(path)], capture_output=True, text=True,
                            timeout=120)
    assert "failed:" in result.stdout, result.stderr[-2000:]
    back = TrainConfig.load(path)
    assert (back.seed, back.out_dir, back.head_settings) == (7, "runs/exp42", {"k": 5})
    assert [p.name for p in tmp_path.iterdir()] == ["train_config.yaml"]  # and no temporary file left

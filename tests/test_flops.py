"""`zsar flops` and zsar.models.complexity: the ResT paper's Table 4, clips, frames, custom ops, errors."""

import contextlib
import io
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from zsar.cli import main
from zsar.models import create_model
from zsar.models.complexity import CONVENTIONS, _extra_formulas, count_flops

# ResT paper, Table 4: (frames, GFLOPs per clip = 10^9 multiply-adds)
TABLE4 = {
    "rest18": (16, 30.8),
    "rest34": (8, 30.3),
    "rest101": (4, 32.0),
    "rest_vgg16": (16, 248.0),
    "rest_mobilenet_v2": (16, 6.9),
    "rest_googlenet": (16, 25.9),
    "rest_r2plus1d": (16, 41.2),
}
D, DEPTH, MLP = 768, 12, 3072  # ResT transformer


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["flops", *argv])
    return code, out.getvalue(), err.getvalue()


def flops_json(*argv):
    code, out, err = run_cli(*argv, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def table4():
    return {name: flops_json(name) for name in TABLE4}


@pytest.mark.parametrize("name", list(TABLE4))
def test_reproduces_paper_table4_within_3_percent(table4, name):
    frames, paper = TABLE4[name]
    r = table4[name]
    assert r["model"] == name and r["frames"] == frames and r["clips"] == 1
    assert r["convention"] == "thop"
    assert abs(r["gflops_per_clip"] - paper) / paper < 0.03, (r["gflops_per_clip"], paper)
    assert r["gflops_total"] == pytest.approx(r["gflops_per_clip"])
    assert isinstance(r["params"], int) and r["params"] == sum(r["params_parts"].values())
    assert r["params_all"] == r["params"] + r["params_training_heads"]
    parts = r["parts_gflops"]
    assert sum(parts.values()) == pytest.approx(r["gflops_per_clip"], rel=1e-12)
    assert parts["backbone"] > parts["transformer"] > 0
    assert r["ops_gflops"]["zsar.masked_attention"] > 0


def test_pure_macs_convention_misses_only_mobilenet():
    """Documents the investigation: without element-wise ops MobileNetV2 is 8% under the paper."""
    r = flops_json("rest_mobilenet_v2", "--convention", "macs")
    assert r["convention"] == "macs"
    assert r["gflops_per_clip"] == pytest.approx(6.342, abs=0.01)
    assert (r["gflops_per_clip"] - 6.9) / 6.9 < -0.07


def transformer_counts(frames):
    """ResT's transformer on [CLS, r_1..r_T, [MASK]]: (multiply-adds, of which masked attention, thop extra).

    Linear layers plus the masked attention's QK^T and PV; thop adds 4 ops per element of each of the
    2 x depth + 1 LayerNorms.
    """
    n_visual = 1 + frames
    L = n_visual + 1
    linear = L * (4 * D * D + 2 * D * MLP)
    pairs = n_visual * n_visual + n_visual + 1  # visual rows see visual keys; the word sees all + itself
    attention = 2 * D * pairs  # QK^T and PV over all heads
    return DEPTH * (linear + attention), DEPTH * attention, 4 * (2 * DEPTH + 1) * L * D


@pytest.mark.parametrize("frames", [16, 8])
def test_frames_override_and_custom_op_count_exactly(table4, frames):
    r = table4["rest18"] if frames == 16 else flops_json("rest18", "--frames", str(frames))
    assert r["frames"] == frames and r["tokens"] == frames + 2
    macs, attention, norm = transformer_counts(frames)
    assert r["parts_gflops"]["transformer"] * 1e9 == pytest.approx(macs + norm, rel=1e-12)
    # the custom op is counted, with the real word count (1), not the meta-tensor upper bound
    assert r["ops_gflops"]["zsar.masked_attention"] * 1e9 == pytest.approx(attention, rel=1e-12)
    # a 2D backbone's work is linear in the number of frames
    full = table4["rest18"]
    assert r["parts_gflops"]["backbone"] == pytest.approx(full["parts_gflops"]["backbone"] * frames / 16, rel=1e-12)
    if frames != 16:
        assert r["gflops_per_clip"] < full["gflops_per_clip"]


def test_clips_multiply_the_total(table4):
    r = flops_json("rest18", "--clips", "25")
    assert r["clips"] == 25
    assert r["gflops_per_clip"] == table4["rest18"]["gflops_per_clip"]
    assert r["gflops_total"] == pytest.approx(25 * r["gflops_per_clip"], rel=1e-12)


def test_text_report():
    code, out, err = run_cli("rest18", "--clips", "2")
    assert code == 0 and err == ""
    assert "GFLOPs/clip x 2 clips" in out and "zsar.masked_attention" in out
    assert "backbone" in out and "transformer" in out and "M" in out


def test_params_count_inference_parts(table4):
    r = table4["rest18"]
    assert r["params_parts"]["backbone"] == 11_689_512 - 513_000  # torchvision resnet18 without fc
    assert r["params_parts"]["projection"] == 512 * D + D
    assert r["params_parts"]["transformer"] == DEPTH * (4 * D * D + 4 * D + 2 * D * MLP + MLP + D + 4 * D) + 2 * D


@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_meta_count_equals_a_real_run(convention):
    """The meta-device trick changes nothing: same count as running the model on real CPU tensors."""
    torch.manual_seed(0)
    model = create_model("rest_tiny").eval()
    clip = torch.randn(1, model.config.frames, 3, model.config.image_size, model.config.image_size)
    with FlopCounterMode(display=False, custom_mapping=_extra_formulas(convention)) as counter:
        model.encode_video(clip)
    assert count_flops("rest_tiny", convention=convention)["macs_per_clip"] == counter.get_total_flops() // 2
    assert count_flops(model, convention=convention)["macs_per_clip"] == counter.get_total_flops() // 2
    assert next(model.parameters()).device.type == "cpu"  # the model passed in is left alone


@pytest.mark.parametrize("name, classifier, published", [
    ("rest34", 512 * 1000, 3.68), ("rest101", 2048 * 1000, 7.87), ("rest_mobilenet_v2", 1280 * 1000, 0.33),
])
def test_thop_convention_gives_thops_published_backbone_counts(name, classifier, published):
    """thop's README lists torchvision resnet34 3.68, resnet101 7.87, mobilenet_v2 0.33 GMACs."""
    backbone = count_flops(name, frames=1)["parts_gflops"]["backbone"]
    assert round(backbone + classifier / 1e9, 2) == published


def test_cli_mirrors_library_conventions():
    from zsar.cli import flops

    assert tuple(flops.CONVENTIONS) == tuple(CONVENTIONS)


@pytest.mark.parametrize("argv, message", [
    (["no_such_model"], "unknown model 'no_such_model'"),
    (["rest18", "--frames", "0"], "--frames must be at least 1"),
    (["rest18", "--clips", "0"], "--clips must be at least 1"),
    (["rest18", "--clips", "-3"], "--clips must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_code_2(argv, message):
    code, out, err = run_cli(*argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("zsar flops: error: ") and message in err


def test_library_errors():
    with pytest.raises(ValueError, match="frames must be at least 1"):
        count_flops("rest18", frames=0)
    with pytest.raises(ValueError, match="clips must be at least 1"):
        count_flops("rest18", clips=0)
    with pytest.raises(ValueError, match="convention"):
        count_flops("rest18", convention="ptflops")
    with pytest.raises(ValueError, match="unknown model"):
        count_flops("rest9000")

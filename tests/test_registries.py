"""Every "name -> item" registry of zsar is one helper (``zsar._registry.Registry``): the same refusal
of a second registration, the same message for an unknown name, ``unregister`` for temporary
entries, and ``zsar list`` reading them all."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zsar._registry import Registry


def _registries():
    from zsar.data.decoders import DECODERS, get_decoder
    from zsar.data.formats import FORMATS, get_format
    from zsar.eval.protocols import PROTOCOLS, get_protocol
    from zsar.models import create_model
    from zsar.models.registry import MODELS
    from zsar.ops import ATTENTION_OPS

    # (registry, its lookup function as users call it, what the message names, a registered name)
    return {
        "models": (MODELS, create_model, "model: unknown model", "rest_tiny"),
        "formats": (FORMATS, get_format, "data.format: unknown dataset format", "ucf101"),
        "decoders": (DECODERS, get_decoder, "backend: unknown decoder", "pyav"),
        "protocols": (PROTOCOLS, get_protocol, "protocol: unknown protocol", "0/50"),
        "ops": (ATTENTION_OPS, ATTENTION_OPS.get, "op: unknown attention op", "masked_attention"),
    }


@pytest.mark.parametrize("kind", ["models", "formats", "decoders", "protocols", "ops"])
def test_every_registry_refuses_duplicates_and_names_what_it_expects(kind):
    registry, lookup, message, existing = _registries()[kind]
    assert isinstance(registry, Registry) and existing in registry
    with pytest.raises(ValueError) as err:
        lookup("no-such-thing")
    text = str(err.value)
    assert text.startswith(f"{message} 'no-such-thing'; expected one of ") and existing in text
    assert "\n" not in text
    with pytest.raises(ValueError, match=f"{registry.kind} '{existing}' is already registered"):
        registry.register(existing, registry[existing])
    assert registry[existing] is registry.get(existing)  # the refused call changed nothing


def test_the_cli_lists_every_registry():
    from zsar.cli.listing import KINDS, collect

    listed = collect()
    for kind, (registry, _, _, existing) in _registries().items():
        assert kind in KINDS
        names = [item["name"] for item in listed[kind]]
        assert existing in names and set(names) >= set(registry) - {"auto"}


def test_registered_items_can_be_replaced_after_unregistering():
    from zsar.eval import evaluate_protocol, register_protocol
    from zsar.eval.protocols import PROTOCOLS

    @register_protocol("everything-twice")
    def first(n_classes, n_splits):
        return [np.arange(n_classes)] * 2

    try:
        with pytest.raises(ValueError, match="already registered"):
            register_protocol("everything-twice")(first)
        assert PROTOCOLS.unregister("everything-twice").splits is first
        register_protocol("everything-twice")(lambda n_classes, n_splits: [np.arange(n_classes)])
        result = evaluate_protocol(lambda c: np.eye(3)[:, :len(c)], [0, 1, 2], ["a", "b", "c"],
                                   protocol="everything-twice")
        assert result["n_splits"] == 1
    finally:
        PROTOCOLS.unregister("everything-twice")
    assert "everything-twice" not in PROTOCOLS
    with pytest.raises(ValueError, match="unknown protocol 'everything-twice'"):
        PROTOCOLS.unregister("everything-twice")


def test_a_variant_table_registers_one_builder_per_row():
    from zsar.models import ResT, Variant, create_model, register_variants
    from zsar.models.registry import MODELS
    from zsar.models.rest import REST_VARIANTS, build_rest

    # ResT's variants come from its table; a new table registers the same way, defaults then overrides.
    assert {"rest18", "rest_tiny", "rest_r2plus1d"} <= set(REST_VARIANTS) <= set(MODELS)
    assert "ResNet-18" in MODELS["rest18"].__doc__
    table = {"test_rest_micro": Variant("ResT, one block of width 16", {**REST_VARIANTS["rest_tiny"].defaults,
                                                                        "dim": 16, "depth": 1, "heads": 2})}
    register_variants(build_rest, table)
    try:
        model = create_model("test_rest_micro", class_names=["red ball", "blue cube"], heads=1)
        assert isinstance(model, ResT) and model.registry_name == "test_rest_micro"
        assert (model.config.dim, model.config.depth, model.config.heads, model.config.num_classes) == (16, 1, 1, 2)
        assert MODELS["test_rest_micro"].__name__ == "test_rest_micro"
        assert table["test_rest_micro"].defaults["heads"] == 2  # the table is not changed by a build
        logits = model.seen_logits(_rest_batch(model))
        assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    finally:
        MODELS.unregister("test_rest_micro")


def _rest_batch(model):
    from zsar.data import Batch

    spec = model.inputs
    clips = torch.randn(2, spec.frames, 3, spec.image_size, spec.image_size, generator=torch.Generator().manual_seed(0))
    return Batch(clips=clips, labels=torch.tensor([0, 1]))


def test_an_attention_op_declared_in_a_test_file_runs_on_the_shared_front_end():
    # "Where to add X", a mask kind step 4: an op is its inputs dataclass (which fields are the mask)
    # and an AttentionOp; dispatch, checks, autograd and the registry come from the front end.
    from dataclasses import dataclass

    from zsar.ops import ATTENTION_OPS
    from zsar.ops.attention import AttentionInputs, AttentionOp

    @dataclass
    class PrefixInputs(AttentionInputs):
        q: torch.Tensor
        k: torch.Tensor
        v: torch.Tensor
        n_more: torch.Tensor
        n_first: int
        scale: float

        op, mask_kind = "test_prefix_attention", "full"
        lengths_field, n_fixed_field, min_fixed = "n_more", "n_first", 0

    op = AttentionOp(PrefixInputs, example=None)
    try:
        assert "test_prefix_attention" in ATTENTION_OPS and op.dispatcher.names[-1] == "reference"
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, 3, 7, 8, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
        n_more = torch.tensor([1, 4], dtype=torch.int32)
        for backend in ("reference", "cpu"):
            out = op(q, k, v, n_more=n_more, n_first=2, scale=0.3, backend=backend)
            for b, valid in enumerate((3, 6)):  # every valid token sees every valid token; padding rows 0
                p = torch.softmax(0.3 * q[b, :, :valid] @ k[b, :, :valid].transpose(-1, -2), -1)
                torch.testing.assert_close(out[b, :, :valid], p @ v[b, :, :valid])
                assert not out[b, :, valid:].any()
        out.sum().backward()
        assert q.grad is not None and not q.grad[0, :, 3:].any()
        with pytest.raises(ValueError, match=r"test_prefix_attention: n_more values must be in \[0, L - n_first = 5\]"):
            op(q, k, v, n_more=torch.tensor([1, 6], dtype=torch.int32), n_first=2)
        with pytest.raises(TypeError, match="test_prefix_attention: n_more must have dtype torch.int32"):
            op(q, k, v, n_more=n_more.long(), n_first=2)
        probe = op.probe(q.detach(), n_more)
        assert (probe.n_first, probe.mask_kind) == (1, "full") and op.dispatcher.reasons(probe)["cpu"] == []
    finally:
        ATTENTION_OPS.unregister("test_prefix_attention")

"""The scaffolding every fused op of zsar shares, written once.

An op states its semantics in an :class:`OpInputs` dataclass (its arguments in schema order, how
they are validated, the outputs they produce, their FLOPs) and lists its backends; :class:`FusedOp`
turns that into

* the ``torch.library`` custom ops ``zsar::<name>`` and ``zsar::<name>_backward``, both validating
  what they are given (so calling them directly through ``torch.ops`` with inconsistent tensors
  raises a one-line error instead of crashing a kernel), with fake implementations, autograd
  (``register_autograd``) and FLOP formulas, so the op works under autograd, ``torch.compile``,
  ``FlopCounterMode``, ``torch.jit.trace`` and ``torch.library.opcheck``;
* the dispatch to the first backend that can serve the call (:class:`~zsar.ops._dispatch.Dispatcher`);
* an eager fast path: plain eager calls skip the custom-op layers (argument normalisation, alias
  checks, redispatch: ~0.25 ms per forward+backward in Python, about 8% of a ResT attention step on
  the CPU) and reach the backend through a ``torch.autograd.Function``; anything that must see the
  op itself (compile, tracing, dispatch or function modes, ``torch.func``, tensor subclasses) goes
  through the custom op.

Backends of a fused op implement ``forward(inputs) -> outputs`` (a tuple of new tensors, never
aliasing the inputs) and ``backward(inputs, outputs, grads) -> grads of the differentiable inputs``
where ``grads`` holds the (contiguous) gradients of the differentiable outputs.
"""

from __future__ import annotations

import dataclasses
import operator
import typing
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.autograd.function import once_differentiable
from torch.utils.flop_counter import register_flop_formula

from ._dispatch import Dispatcher

__all__ = ["FusedOp", "OpInputs", "TensorSpec"]


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one output (its device is the inputs' device)."""

    shape: tuple[int, ...]
    dtype: torch.dtype


class OpInputs:
    """The arguments of one call of a fused op, with the op's semantics.

    Subclasses are dataclasses whose fields are the op's arguments in schema order: tensors
    (``torch.Tensor``) first, then ``int``, ``float`` and ``bool`` parameters.
    """

    def validate(self) -> None:
        """Checks everything that needs no look at tensor values (free under ``torch.compile``).

        Raises:
            TypeError / ValueError: naming the argument and what was expected.
        """
        raise NotImplementedError

    def output_specs(self) -> tuple[TensorSpec, ...]:
        """Shape and dtype of each output, in the op's output order."""
        raise NotImplementedError

    def flops(self) -> int:
        """FLOPs of the forward (``torch.utils.flop_counter`` convention: 2 per multiply-add)."""
        raise NotImplementedError

    def backward_flops(self) -> int:
        """FLOPs of the backward."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        raise NotImplementedError


_SCHEMA_TYPES = {torch.Tensor: "Tensor", int: "SymInt", float: "float", bool: "bool"}


def _tuple_getter(names: Sequence[str]):
    """``inputs -> tuple of its attributes`` (operator.attrgetter, which returns a bare value for one name)."""
    if not names:
        return lambda inputs: ()
    if len(names) == 1:
        get = operator.attrgetter(names[0])
        return lambda inputs: (get(inputs),)
    return operator.attrgetter(*names)


def _plain_eager(tensors: Sequence[torch.Tensor]) -> bool:
    """True when no tracer, mode or transform would need to see the custom op (the caller has
    already ruled out ``torch.compile``)."""
    return (
        not torch.jit.is_tracing()
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._is_torch_function_mode_enabled()
        and torch._C._functorch.peek_interpreter_stack() is None
        and all(type(t) is torch.Tensor for t in tensors)
    )


class _EagerFusedOp(torch.autograd.Function):
    """The backend calls of a :class:`FusedOp`, without the custom-op layers (plain eager only).

    ``forward(ctx, op, backend, inputs, *tensors)``: ``tensors`` are the tensor fields of
    ``inputs``, passed again so that autograd sees them. Each op gets a subclass named after it,
    so ``grad_fn`` names the op (e.g. ``_EagerMaskedAttentionBackward``).
    """

    @staticmethod
    def forward(ctx, op: FusedOp, backend, inputs: OpInputs, *tensors):
        # ctx-style forward: a separate setup_context makes apply() bind arguments with inspect
        outputs = backend.forward(inputs)
        ctx.mark_non_differentiable(*(outputs[i] for i in op._non_differentiable_outputs))
        # The backward reads only the differentiable outputs' gradients: autograd need not make a
        # zero tensor for the others' (its default), which _backend_backward would not read.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*tensors, *outputs)
        ctx.op, ctx.backend, ctx.params = op, backend, op._params(inputs)
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        # The backend backward records no graph, so under create_graph=True (the only time the
        # engine runs a backward with grad mode on) it goes through once_differentiable, which makes
        # a second order raise instead of being silently wrong. Otherwise it is called directly:
        # once_differentiable's no_grad block cost ~10 us of a ~420 us forward+backward step at
        # L=64 interleaved with SDPA (bench/RESULTS.md, session 12).
        if torch.is_grad_enabled():
            return _once_differentiable_backward(ctx, *grads)
        return _EagerFusedOp._backend_backward(ctx, *grads)

    @staticmethod
    def _backend_backward(ctx, *grads):
        op: FusedOp = ctx.op
        saved = ctx.saved_tensors
        n = len(op._tensor_names)
        inputs = op.inputs_type(*saved[:n], *ctx.params)
        outputs = saved[n:]
        # (None: the output was not used; autograd does not materialise zeros here, see forward)
        grads = tuple(torch.zeros_like(outputs[i]) if grads[i] is None else grads[i].contiguous()
                      for i in op._differentiable_outputs)
        input_grads = ctx.backend.backward(inputs, outputs, grads)
        return (None, None, None, *op._place_input_grads(input_grads))


_once_differentiable_backward = once_differentiable(_EagerFusedOp._backend_backward)


class FusedOp:
    """A fused op: custom ops, autograd, fake implementations, FLOPs, eager fast path and dispatch.

    Args:
        name: the op is registered as ``<namespace>::<name>`` and ``<namespace>::<name>_backward``.
        inputs_type: the op's :class:`OpInputs` dataclass.
        outputs: names of the outputs, in order (the forward returns all of them).
        differentiable_outputs: the outputs that carry gradients; the others are marked
            non-differentiable (e.g. a saved log-sum-exp).
        differentiable_inputs: the tensor fields of ``inputs_type`` that get gradients.
        backends: in dispatch order (fastest first).
        namespace: the ``torch.library`` namespace (``torch.ops.<namespace>``).

    The forward op's schema is ``(<tensor fields>, <parameters>, str backend) -> (<outputs>)``; the
    backward's is ``(d<output> for each differentiable output, <tensor fields>, <outputs>,
    <parameters>, str backend) -> (<one gradient per differentiable input>)``. ``backend=""`` lets
    dispatch choose.
    """

    def __init__(
        self,
        name: str,
        inputs_type: type[OpInputs],
        *,
        outputs: Sequence[str],
        differentiable_outputs: Sequence[str],
        differentiable_inputs: Sequence[str],
        backends: Sequence,
        namespace: str = "zsar",
    ):
        self.name = name
        self.qualname = f"{namespace}::{name}"
        self.inputs_type = inputs_type
        self.dispatcher = Dispatcher(name, backends)
        self.output_names = tuple(outputs)
        hints = typing.get_type_hints(inputs_type)
        fields = [f.name for f in dataclasses.fields(inputs_type)]
        unknown = [f for f in fields if hints[f] not in _SCHEMA_TYPES]
        if unknown:
            raise TypeError(f"{inputs_type.__name__}: fields {unknown} have types a schema cannot hold")
        self._tensor_names = tuple(f for f in fields if hints[f] is torch.Tensor)
        self._param_names = tuple(f for f in fields if hints[f] is not torch.Tensor)
        if fields != [*self._tensor_names, *self._param_names]:
            raise TypeError(f"{inputs_type.__name__}: tensor fields must come before the parameters")
        self._tensors = _tuple_getter(self._tensor_names)
        self._params = _tuple_getter(self._param_names)
        self._differentiable_outputs = tuple(self.output_names.index(o) for o in differentiable_outputs)
        self._non_differentiable_outputs = tuple(
            i for i in range(len(self.output_names)) if i not in self._differentiable_outputs
        )
        self._differentiable_inputs = tuple(self._tensor_names.index(t) for t in differentiable_inputs)
        self._no_grads = (None,) * (len(self._tensor_names) - len(self._differentiable_inputs))
        self._grads_are_prefix = self._differentiable_inputs == tuple(range(len(self._differentiable_inputs)))
        self._grad_names = tuple(f"d{self.output_names[i]}" for i in self._differentiable_outputs)

        def schema_args(names):
            return [f"{_SCHEMA_TYPES[hints[n]]} {n}" for n in names]

        tensors, params = schema_args(self._tensor_names), schema_args(self._param_names)
        forward_args = [*tensors, *params, "str backend"]
        backward_args = [
            *(f"Tensor {g}" for g in self._grad_names), *tensors,
            *(f"Tensor {o}" for o in self.output_names), *params, "str backend",
        ]
        forward_returns = ", ".join(["Tensor"] * len(self.output_names))
        backward_returns = ", ".join(["Tensor"] * len(self._differentiable_inputs))
        self.forward_op = torch.library.custom_op(
            self.qualname, self._forward_impl, mutates_args=(),
            schema=f"({', '.join(forward_args)}) -> ({forward_returns})",
        )
        self.backward_op = torch.library.custom_op(
            f"{self.qualname}_backward", self._backward_impl, mutates_args=(),
            schema=f"({', '.join(backward_args)}) -> ({backward_returns})",
        )
        self.forward_op.register_fake(self._forward_fake)
        self.backward_op.register_fake(self._backward_fake)
        self.forward_op.register_autograd(self._autograd_backward, setup_context=self._setup_context)
        self.backward_op.register_autograd(self._no_double_backward, setup_context=lambda ctx, inputs, output: None)
        ops = getattr(torch.ops, namespace)
        register_flop_formula(getattr(ops, name), get_raw=True)(self._forward_flops)
        register_flop_formula(getattr(ops, f"{name}_backward"), get_raw=True)(self._backward_flops)
        camel = "".join(part.title() for part in name.split("_"))
        self._eager = type(f"_Eager{camel}", (_EagerFusedOp,), {"__module__": __name__})

    # ---- calling the op ------------------------------------------------------------------------

    def __call__(self, inputs: OpInputs, backend: str | None = None) -> tuple[torch.Tensor, ...]:
        """Runs the op on inputs the caller has validated; returns every output.

        Args:
            inputs: validated (``inputs.validate()``) arguments.
            backend: a backend name, or None for the first backend that can serve the inputs.

        Raises:
            ValueError: if ``backend`` is not a backend of this op.
            BackendUnavailableError: if the backend (or every backend) cannot serve the inputs.
        """
        if not torch.compiler.is_compiling():
            # Resolved here, so a bad `backend=` fails with the full explanation before the op runs
            # and the backward uses the forward's backend.
            chosen = self.dispatcher.select(inputs, backend)
            tensors = self._tensors(inputs)
            if _plain_eager(tensors):
                if torch.is_grad_enabled() and any(tensors[i].requires_grad for i in self._differentiable_inputs):
                    return self._eager.apply(self, chosen, inputs, *tensors)
                # Nothing to differentiate (inference, no_grad): the backend alone, without the
                # autograd.Function's bookkeeping (~15 us, most of a short sequence's call).
                return tuple(chosen.forward(inputs))
            backend = chosen.name
        # (plain getattr: torch.compile cannot trace operator.attrgetter)
        args = [getattr(inputs, name) for name in (*self._tensor_names, *self._param_names)]
        return self.forward_op(*args, backend or "")

    def _place_input_grads(self, grads: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor | None, ...]:
        """Gradients of the differentiable inputs -> one entry per tensor field (None elsewhere)."""
        if self._grads_are_prefix:  # the usual case (q, k, v before n_text)
            return (*grads, *self._no_grads)
        placed: list[torch.Tensor | None] = [None] * len(self._tensor_names)
        for index, grad in zip(self._differentiable_inputs, grads):
            placed[index] = grad
        return tuple(placed)

    # ---- the registered ops --------------------------------------------------------------------

    def _forward_impl(self, *args):
        inputs = self.inputs_type(*args[:-1])
        inputs.validate()  # the op may be called directly through torch.ops
        return tuple(self.dispatcher.select(inputs, args[-1] or None).forward(inputs))

    def _split_backward_args(self, args):
        n_grads, n_tensors, n_outputs = len(self._grad_names), len(self._tensor_names), len(self.output_names)
        grads = args[:n_grads]
        tensors = args[n_grads : n_grads + n_tensors]
        outputs = args[n_grads + n_tensors : n_grads + n_tensors + n_outputs]
        params = args[n_grads + n_tensors + n_outputs : -1]
        return grads, self.inputs_type(*tensors, *params), outputs, args[-1]

    def _validated_backward_args(self, args):
        """The backward op's arguments, checked: the inputs as the forward checks them, and each saved
        output and incoming gradient against the shape/dtype/device the forward gives these inputs."""
        grads, inputs, outputs, backend = self._split_backward_args(args)
        inputs.validate()
        specs = inputs.output_specs()
        op = f"{self.qualname}_backward"
        for name, tensor, spec in zip(self.output_names, outputs, specs):
            _check_matches(op, name, tensor, spec, inputs.device, f"the forward's {name} for these inputs")
        for name, tensor, index in zip(self._grad_names, grads, self._differentiable_outputs):
            _check_matches(op, name, tensor, specs[index], inputs.device,
                           f"the shape of {self.output_names[index]}")
        return grads, inputs, outputs, backend

    def _backward_impl(self, *args):
        grads, inputs, outputs, backend = self._validated_backward_args(args)
        outputs = tuple(t.contiguous() for t in outputs)
        grads = tuple(t.contiguous() for t in grads)
        return tuple(self.dispatcher.select(inputs, backend or None).backward(inputs, outputs, grads))

    # The fake implementations validate too: they run instead of the real ones under
    # torch.compile, for meta tensors, and when any argument is on the meta device.
    def _forward_fake(self, *args):
        inputs = self.inputs_type(*args[:-1])
        inputs.validate()
        return tuple(
            torch.empty(spec.shape, dtype=spec.dtype, device=inputs.device) for spec in inputs.output_specs()
        )

    def _backward_fake(self, *args):
        _, inputs, _, _ = self._validated_backward_args(args)
        tensors = self._tensors(inputs)
        return tuple(torch.empty_like(tensors[i]) for i in self._differentiable_inputs)

    def _setup_context(self, ctx, inputs, output):
        n = len(self._tensor_names)
        ctx.mark_non_differentiable(*(output[i] for i in self._non_differentiable_outputs))
        ctx.save_for_backward(*inputs[:n], *output)
        ctx.params = inputs[n:]  # the parameters and the backend name

    def _autograd_backward(self, ctx, *grads):
        saved = ctx.saved_tensors
        grads = [grads[i] for i in self._differentiable_outputs]
        input_grads = self.backward_op(*grads, *saved, *ctx.params)
        return (*self._place_input_grads(input_grads), *([None] * len(ctx.params)))

    def _no_double_backward(self, ctx, *grads):
        raise RuntimeError(f"{self.qualname}: double backward (the gradient of a gradient, e.g. a gradient penalty) "
                           "is not supported; compute that term without the fused op")

    def _forward_flops(self, *args, out_val=None, **kwargs) -> int:
        return self.inputs_type(*args[:-1]).flops()

    def _backward_flops(self, *args, out_val=None, **kwargs) -> int:
        _, inputs, _, _ = self._split_backward_args(args)
        return inputs.backward_flops()


def _check_matches(op: str, name: str, tensor, spec: TensorSpec, device: torch.device, expected: str) -> None:
    """Raises unless ``tensor`` has the shape and dtype of ``spec`` on ``device``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(spec.shape):
        raise ValueError(
            f"{op}: {name} has shape {tuple(tensor.shape)}, expected {tuple(spec.shape)} ({expected})"
        )
    if tensor.dtype != spec.dtype:
        raise TypeError(f"{op}: {name} has dtype {tensor.dtype}, expected {spec.dtype}")
    if tensor.device != device:
        raise ValueError(f"{op}: {name} is on {tensor.device}, expected {device} (the device of the inputs)")

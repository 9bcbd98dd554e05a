"""A cell as a ``torch.nn.Module``, and its trained weights back.

:func:`to_torch` lowers the **folded** cell graph (ops, parameters, constants, states and the
delay edges), not an unrolled copy: the module holds the cell's body once and runs it step by
step over a ``(T, B, ...)`` sequence, so any sequence length works and PyTorch's autograd does
backpropagation through time.

Lowering rules
--------------
Each op of the registry carries its torch rule beside its numpy forward
(``defop(..., torch=rule)`` or :func:`unrollgraph.ops.deflower`). A rule has the signature::

    rule(torch, *inputs, **attrs) -> torch.Tensor

``torch`` is the ``torch`` module itself (passed in, so that ``import unrollgraph`` never
imports it), ``inputs`` are the op's input tensors in order and ``attrs`` the node's attributes
(``axis=``, ``keepdims=``, ``index=``, ``shape=``...). It returns the value the op's numpy
forward computes, and PyTorch's autograd must give the gradient its VJPs give. A cell using an
op without a torch rule raises :class:`~unrollgraph.errors.LoweringError` naming the op.

Conventions of the module
-------------------------
* ``module(xs, state=None, lengths=None, truncate=None, steps=None)`` returns
  ``(outputs, state)`` (``module(steps=T)`` for a cell without inputs) as ``net(xs)`` does
  for ``net = ug.unroll(cell, steps=T)``: outputs stacked ``(T, B, ...)`` (a dict by name
  for several outputs), the final state (a tuple in declaration order for several states).
  ``lengths=`` and ``truncate=`` mean exactly what they mean there.
* Parameters carry the cell's names. PyTorch forbids ``.`` in a parameter name (and a name that
  is already an attribute of the module, such as ``forward``), so such names are mapped
  reversibly: ``%`` becomes ``%25`` and ``.`` becomes ``%2E``, and a name that would collide
  with an attribute gets the prefix ``%_``. ``module.torch_names`` maps each cell name to its
  parameter's name; names made of letters, digits and ``_`` are kept as they are, so for them
  ``cell.load_state_dict(module.state_dict())`` works too. :func:`from_torch` undoes the
  mapping.
* The module computes in one float type: the cell's (or ``dtype=``); ``module.to(...)`` moves
  and converts it as any module. Inputs and states must have the module's float type and
  device (integer inputs are converted to it, as unrollgraph converts them to float).
  Constants written in the cell take the parameters' float type.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Mapping

import numpy as np
import torch

from ..cell import Cell
from ..errors import CellError, DTypeError, LoweringError, ShapeError, TrainingError
from ..ops import get_op
from .weights import _escape, from_torch

__all__ = ["CellModule", "to_torch", "from_torch", "torch_tbptt"]

_NULL = contextlib.nullcontext()
_FLOATS = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32,
           np.dtype(np.float64): torch.float64}


def _torch_dtype(dtype, who: str):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _FLOATS[np.dtype(dtype)]
    except (TypeError, KeyError):
        raise DTypeError(
            f"{who}: dtype must be a float type (torch.float32, torch.float64, np.float32, "
            f"'float64'...), got {dtype!r}"
        ) from None


class _Program:
    """The folded cell graph in slots: leaves, the ops computed once per call (on parameters
    and constants alone, such as ``W.T``) and the ops computed at every step."""

    def __init__(self, cell: Cell):
        cell.validate()
        graph = cell.graph()
        self.graph = graph
        batched = graph._batched
        leaves = cell.leaf_tensors()
        slot = {id(n): i for i, n in enumerate(graph.nodes)}
        self.size = len(graph.nodes)
        params = {id(t.node): k for k, t in cell.parameters().items()}
        inputs = {id(t.node): k for k, t in cell.inputs.items()}
        states = {id(t.node): k for k, t in cell.states.items()}
        self.params: list = []  # (slot, cell name)
        self.consts: list = []  # (slot, numpy value)
        # (an input or state nothing reads is not in the graph: no slot)
        self.inputs = {k: slot.get(id(t.node)) for k, t in cell.inputs.items()}
        self.states = {k: slot.get(id(t.node)) for k, t in cell.states.items()}
        self.shared: list = []  # (slot, rule, input slots, attrs, node)
        self.step: list = []
        missing: dict = {}
        for n in graph.nodes:
            i = id(n)
            if n.is_leaf:
                if i in params:
                    self.params.append((slot[i], params[i]))
                elif i not in inputs and i not in states:
                    self.consts.append((slot[i], np.asarray(leaves[i].data)))
                continue
            op = get_op(n.op)
            rule = op.lower.get("torch")
            if rule is None:
                missing.setdefault(n.op, []).append(graph.display_name(n))
                continue
            entry = (slot[i], rule, tuple(slot[id(k)] for k in n.inputs), dict(n.attrs), n)
            (self.step if i in batched else self.shared).append(entry)
        if missing:
            first = next(iter(missing))
            listed = "; ".join(f"op {op!r} (node{'s' if len(ns) > 1 else ''} "
                               f"{', '.join(ns)})" for op, ns in missing.items())
            raise LoweringError(
                f"cell {cell.name!r} cannot be exported to torch: {listed} "
                f"{'has' if len(missing) == 1 else 'have'} no torch lowering rule; add one "
                f"with unrollgraph.ops.deflower({first!r}, 'torch', rule), where "
                "rule(torch, *inputs, **attrs) returns what the op's numpy forward computes",
                op=first, target="torch",
            )
        self.outputs = {k: slot[id(t.node)] for k, t in cell.outputs.items()}
        self.feedback = {k: slot[id(t.node)] for k, t in cell.feedbacks.items()}
        # a state's next value must be the state's own order: feedbacks in state order
        self.feedback = {k: self.feedback[k] for k in cell.states}


@contextlib.contextmanager
def _quiet_checks():
    """Under ``torch.jit.trace``: no ``TracerWarning`` from the module's own argument checks
    (their shape tests become constants of the trace, which records one sequence length and
    batch size anyway); elsewhere nothing is changed."""
    if not torch.jit.is_tracing():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


class CellModule(torch.nn.Module):
    """A cell lowered to PyTorch (made by :func:`to_torch`).

    Call it as
    ``outputs, state = module(xs, state=None, lengths=None, truncate=None, steps=None)``, with
    the conventions of an unrolled net (``net = ug.unroll(cell, steps=T)``; ``net(xs)``), or
    one step at a time with :meth:`step`.

    Attributes
    ----------
    cell_name : str
    input_names, state_names, output_names : list of str
        In the cell's declaration order.
    torch_names : dict
        Cell parameter name -> the name of its ``torch.nn.Parameter`` (the same name unless it
        holds ``.`` or ``%`` or collides with an attribute of the module; see the module
        docstring of :mod:`unrollgraph.export.torch_export`).
    """

    def __init__(self, cell: Cell, dtype=None, device=None):
        super().__init__()
        prog = _Program(cell)
        self._prog = prog
        self.cell_name = cell.name
        self.input_names = list(cell.inputs)
        self.state_names = list(cell.states)
        self.output_names = list(cell.outputs)
        self._input_shapes = {k: tuple(t.shape[1:]) for k, t in cell.inputs.items()}
        self._state_shapes = {k: tuple(t.shape[1:]) for k, t in cell.states.items()}
        params = cell.parameters()
        if dtype is None:
            kinds = [p.data.dtype for p in params.values()]
            dtype = _FLOATS[np.result_type(*kinds)] if kinds else torch.float64
        self.torch_names: dict = {}
        for k, p in params.items():
            name = _escape(k)
            if hasattr(self, name):
                name = "%_" + name
            value = torch.from_numpy(np.array(p.data, copy=True)).to(dtype=dtype, device=device)
            self.register_parameter(name, torch.nn.Parameter(value))
            self.torch_names[k] = name
        self._param_slots = [(s, self.torch_names[k]) for s, k in prog.params]
        # constants and initial states: buffers (they follow .to()), not in the state dict
        self._const_slots = []
        for j, (s, v) in enumerate(prog.consts):
            t = torch.from_numpy(np.array(v, copy=True))
            if t.is_floating_point():
                t = t.to(dtype)
            self.register_buffer(f"%const{j}", t.to(device), persistent=False)
            self._const_slots.append((s, f"%const{j}", t.ndim == 0 and t.is_floating_point()))
        self._inits = {}
        for j, k in enumerate(self.state_names):
            init = cell.init_value(k)
            if init is not None:
                self.register_buffer(f"%init{j}", torch.from_numpy(np.array(init, copy=True))
                                     .to(dtype=dtype, device=device), persistent=False)
                self._inits[k] = f"%init{j}"
        self._step_prog = [(s, r, ins, kw) for s, r, ins, kw, _n in prog.step]
        self._shared_prog = [(s, r, ins, kw) for s, r, ins, kw, _n in prog.shared]
        # (slot, index among the inputs / states) of those the body reads
        self._input_slots = [(prog.inputs[k], j) for j, k in enumerate(self.input_names)
                             if prog.inputs[k] is not None]
        self._state_slots = [(prog.states[k], j) for j, k in enumerate(self.state_names)
                             if prog.states[k] is not None]
        self._out_slots = [prog.outputs[k] for k in self.output_names]
        self._fb_slots = list(prog.feedback.values())

    # -- what the module computes in ------------------------------------------------------------
    def _reference(self):
        """A tensor giving the module's float type and device (a parameter, else a buffer)."""
        for t in self.parameters():
            return t
        for t in self.buffers():
            if t.is_floating_point():
                return t
        return None

    def extra_repr(self) -> str:
        return (f"cell={self.cell_name!r}, inputs={self.input_names}, states="
                f"{self.state_names}, outputs={self.output_names}")

    # -- arguments -------------------------------------------------------------------------------
    def _as_tensor(self, x, what: str, ref):
        if not isinstance(x, torch.Tensor):
            try:
                arr = np.asarray(x)
            except Exception:
                arr = None
            if arr is None or arr.dtype.kind not in "biuf":
                raise DTypeError(
                    f"exported cell {self.cell_name!r}: {what} must be a tensor or an array of "
                    f"real numbers, got {type(x).__name__}"
                )
            x = torch.from_numpy(np.array(arr, copy=True))
            if ref is not None:
                x = x.to(ref.device)
        if ref is not None and x.device != ref.device:
            raise CellError(
                f"exported cell {self.cell_name!r}: {what} is on {x.device}, the module on "
                f"{ref.device}; move it with .to({str(ref.device)!r}) (or the module with "
                f"module.to({str(x.device)!r}))"
            )
        if not x.is_floating_point():
            if x.is_complex():
                raise DTypeError(f"exported cell {self.cell_name!r}: {what} is complex "
                                 f"({x.dtype}); pass real numbers")
            x = x.to(ref.dtype if ref is not None else torch.float64)
        elif ref is not None and x.dtype != ref.dtype:
            raise DTypeError(
                f"exported cell {self.cell_name!r}: {what} is {x.dtype} but the module "
                f"computes in {ref.dtype}; convert one of them (x.to({ref.dtype}) or "
                f"module.to({x.dtype}))"
            )
        return x

    def _inputs(self, xs, ref, steps, one_step=False) -> tuple:
        """The inputs as a list of (T, B, ...) tensors in declaration order, T and B.

        ``one_step``: ``xs`` is one step's input ``x`` of :meth:`step`, shaped (B, ...), and
        every message speaks of what :meth:`step` takes."""
        names = self.input_names
        cell = f"exported cell {self.cell_name!r}"
        arg, form = ("x", "(B, ...)") if one_step else ("xs", "(T, B, ...)")
        if one_step:
            cell += ": step"
        if not names:
            if not (xs is None or (isinstance(xs, Mapping) and not xs)):
                raise CellError(f"{cell}: the cell has no inputs; " + (
                    "leave x out: module.step(state=...)" if one_step
                    else "leave xs out and give the number of steps: module(steps=T)"))
            if one_step:
                return [], 1, None
            if steps is None or isinstance(steps, bool) or not isinstance(
                    steps, (int, np.integer)) or steps < 1:
                raise CellError(f"{cell} has no inputs: give the number of steps, "
                                f"module(steps=T) with T >= 1; got steps={steps!r}")
            return [], int(steps), None
        if steps is not None:
            raise CellError(f"{cell}: steps= is only for a cell without inputs; the number of "
                            "steps is the length of xs")
        if xs is None:
            raise CellError(f"{cell}: the cell has inputs {names}; pass {arg} shaped {form}"
                            + (" (a dict by name)" if len(names) > 1 else ""))
        if not isinstance(xs, Mapping):
            if len(names) != 1:
                raise CellError(f"{cell}: the cell has inputs {names}; pass {arg} as a dict "
                                f"name -> tensor shaped {form}")
            xs = {names[0]: xs}
            label = {names[0]: arg}
        else:
            label = {k: f"{arg}[{k!r}]" for k in names}
        if len(xs) != len(names) or any(k not in xs for k in names):
            raise CellError(f"{cell}: {arg} has inputs {sorted(map(str, xs))} but the cell "
                            f"declares {names}")
        out = []
        for k in names:
            x = self._as_tensor(xs[k], label[k], ref)
            want = self._input_shapes[k]
            dims = ", ".join(map(str, want))
            if one_step:
                if x.ndim != 1 + len(want) or tuple(x.shape[1:]) != want:
                    raise ShapeError(
                        f"{cell}: {label[k]} must have shape (B{', ' if want else ''}{dims}), "
                        f"got {tuple(x.shape)}; pass one step's input as (batch, features) "
                        "(a whole sequence (T, B, ...) goes to module(xs))")
                x = x.unsqueeze(0)
            elif x.ndim != 2 + len(want) or tuple(x.shape[2:]) != want or x.shape[0] < 1:
                raise ShapeError(
                    f"{cell}: input {k!r} must have shape (T, B"
                    f"{', ' if want else ''}{dims}) with T >= 1, got {tuple(x.shape)}; arrange "
                    "it as (steps, batch, features)"
                )
            out.append(x)
        if one_step:
            sizes = {x.shape[1] for x in out}
            if len(sizes) > 1:
                raise ShapeError(f"{cell}: the inputs disagree on the batch size: " + ", ".join(
                    f"{label[k]} has {x.shape[1]}" for k, x in zip(names, out)))
        else:
            sizes = {(x.shape[0], x.shape[1]) for x in out}
            if len(sizes) > 1:
                raise ShapeError(f"{cell}: inputs disagree on (steps, batch): " + ", ".join(
                    f"{label[k]} has {tuple(x.shape[:2])}" for k, x in zip(names, out)))
        return out, out[0].shape[0], out[0].shape[1]

    def _states(self, state, batch, ref, dtype, one_step=False) -> list:
        """The states as a list of (B, ...) tensors in declaration order; ``batch`` is the
        inputs' batch size (``None`` for a cell without inputs: the states' own, else 1)."""
        names = self.state_names
        cell = f"exported cell {self.cell_name!r}" + (": step" if one_step else "")
        what = "state" if one_step else "initial state"
        if state is None:
            batch = 1 if batch is None else batch
            out = []
            for k in names:
                shape = (batch,) + self._state_shapes[k]
                device = ref.device if ref is not None else None
                if k in self._inits:
                    out.append(self._buffers[self._inits[k]].to(dtype).expand(shape).clone())
                else:
                    out.append(torch.zeros(shape, dtype=dtype, device=device))
            return out
        how = (f"pass state as a dict {{{', '.join(repr(k) + ': ...' for k in names)}}} or a "
               f"tuple of {len(names)} tensors shaped (batch, ...) in that order")
        if not names:
            if isinstance(state, (tuple, list, Mapping)) and not state:
                return []
            raise CellError(f"{cell} has no states, so state= must be None")
        if isinstance(state, Mapping):
            missing = [k for k in names if k not in state]
            unknown = [k for k in state if k not in names]
            if missing or unknown:
                parts = ([f"is missing {missing}"] if missing else []) + (
                    [f"has unknown keys {sorted(map(str, unknown))}"] if unknown else [])
                raise CellError(f"{cell}: state {' and '.join(parts)}; the cell's states are "
                                f"{names}: {how}")
            state = tuple(state[k] for k in names)
        elif len(names) == 1 and not isinstance(state, (tuple, list)):
            state = (state,)
        elif not isinstance(state, (tuple, list)):
            raise CellError(f"{cell} has states {names}; got one {type(state).__name__} for "
                            f"state=: {how}")
        if len(state) != len(names):
            raise CellError(f"{cell} has states {names}; state= has {len(state)} values: {how}")
        out = []
        source = "the inputs'"
        for k, s in zip(names, state):
            s = self._as_tensor(s, f"{what} {k!r}", ref)
            dims = self._state_shapes[k]
            if batch is None and s.ndim == 1 + len(dims):
                batch, source = s.shape[0], f"state {k!r}'s"
            if s.ndim != 1 + len(dims) or tuple(s.shape) != (batch,) + dims:
                shown = ", ".join(["B" if batch is None else str(batch), *map(str, dims)])
                told = "" if batch is None else f"; the batch size {batch} is {source}"
                raise ShapeError(f"{cell}: {what} {k!r} must have shape ({shown}) (batch, "
                                 f"...{told}), got {tuple(s.shape)}")
            out.append(s)
        return out

    def _lengths(self, lengths, batch, steps, device):
        if lengths is None:
            return None
        if isinstance(lengths, torch.Tensor):
            arr = lengths.detach().cpu().numpy()
        else:
            if isinstance(lengths, (list, tuple)) and any(
                    isinstance(v, (bool, np.bool_)) for v in lengths):
                raise ShapeError(f"lengths must be {batch} integers (one per sequence in the "
                                 f"batch), got a bool in {lengths!r}")
            arr = np.asarray(lengths)
        if arr.shape != (batch,) or arr.dtype.kind not in "iu":
            raise ShapeError(f"lengths must be {batch} integers (one per sequence in the "
                             f"batch), got {arr.dtype} array of shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() > steps):
            raise ShapeError(f"lengths must lie in [0, {steps}] for a sequence of {steps} "
                             f"steps; got values from {arr.min()} to {arr.max()}")
        return arr.astype(np.int64)

    # -- running ---------------------------------------------------------------------------------
    def forward(self, xs=None, state=None, lengths=None, truncate=None, steps=None):
        """Run the cell over a sequence.

        Parameters
        ----------
        xs : torch.Tensor (T, B, ...), or dict name -> such
            Per-step inputs; left out (or ``None``) for a cell without inputs, which takes
            ``steps=T`` instead: ``module(steps=T)``.
        state : tensor, tuple or dict, optional
            Initial state(s) shaped (B, ...): one tensor for a one-state cell, a tuple in
            declaration order or a dict naming every state; the cell's initial state
            otherwise.
        lengths : sequence of int, optional
            Length of each sequence of the batch: past its length a sequence keeps its state
            and gives zero outputs, and its padded steps (computed on a copy of its last real
            input, never on the padding) contribute exactly zero gradient.
        truncate : int, optional
            Truncated BPTT as ``ug.unroll(cell, T, truncate=k)``: the ops of steps
            ``t < T - k`` take no part in the backward pass (the inputs and the initial state
            themselves are never cut: without ``lengths=``, an output that *is* an input
            passes its gradient on).
            ``k >= T`` is full BPTT.
        steps : int, optional
            The number of steps, for a cell without inputs only.

        Returns
        -------
        outputs : torch.Tensor (T, B, ...) for a one-output cell, else dict name -> tensor
        state : torch.Tensor for a one-state cell, else tuple in declaration order

        Raises
        ------
        ShapeError, DTypeError, CellError
            For inputs, states or lengths that do not fit the cell (named in the message).
        LoweringError
            A lowering rule that fails on its operands (names the op, node and step).
        """
        outs, finals, _ = self._run(xs, state, lengths, truncate, steps, False)
        return self._pack(outs, finals)

    def step(self, x=None, state=None):
        """Run one step.

        Parameters
        ----------
        x : torch.Tensor (B, ...), or dict name -> such
            One step's input (a dict by name for several inputs; left out, or ``None``, for a
            cell without inputs).
        state : tensor, tuple or dict, optional
            The state before the step, shaped (B, ...), as for :meth:`forward`; the cell's
            initial state otherwise.

        Returns
        -------
        outputs : torch.Tensor (B, ...) for a one-output cell, else dict name -> tensor
        state : torch.Tensor for a one-state cell, else tuple in declaration order

        Raises
        ------
        ShapeError, DTypeError, CellError
            For an input or a state that does not fit the cell; the message names the shape
            passed and the one expected, ``(B, ...)``.
        """
        outs, finals, _ = self._run(x, state, None, None, None, False, one_step=True)
        return self._pack([o[0] for o in outs], finals)

    def _pack(self, outs, finals):
        outputs = outs[0] if len(outs) == 1 else dict(zip(self.output_names, outs))
        final = finals[0] if len(finals) == 1 else tuple(finals)
        return outputs, final

    def _run(self, xs, state, lengths, truncate, steps, keep_states, one_step=False):
        if truncate is not None and (isinstance(truncate, (bool, np.bool_)) or not isinstance(
                truncate, (int, np.integer)) or truncate < 1):
            raise CellError(f"exported cell {self.cell_name!r}: truncate must be a positive "
                            f"int or None, got {truncate!r}")
        ref = self._reference()
        with _quiet_checks():
            inputs, T, batch = self._inputs(xs, ref, steps, one_step)
            dtype = inputs[0].dtype if inputs else (
                ref.dtype if ref is not None else torch.float64)
            h = self._states(state, batch, ref, dtype, one_step)
            if batch is None:
                batch = h[0].shape[0] if h else 1
            device = inputs[0].device if inputs else (ref.device if ref is not None else None)
            lens = self._lengths(lengths, batch, T, device)
        first_kept = 0 if truncate is None or truncate >= T else T - truncate
        base = self._shared_values(dtype)
        per_step = [x.unbind(0) for x in inputs]
        masks = zero = None
        if lens is not None:
            running = torch.as_tensor(np.arange(T)[:, None] < lens[None, :], device=device)
            masks = running.unbind(0)
            zero = torch.zeros((), dtype=dtype, device=device)
            per_step = [_padded(x, lens, running) for x in inputs]
        outs = [[] for _ in self._out_slots]
        kept = [] if keep_states else None
        for t in range(T):
            v = list(base)
            for s, j in self._input_slots:
                v[s] = per_step[j][t]
            for s, j in self._state_slots:
                v[s] = h[j]
            with torch.no_grad() if t < first_kept else _NULL:
                self._eval(self._step_prog, v, "in step()" if one_step else t)
                ys = [v[s] for s in self._out_slots]
                nxt = [v[s] for s in self._fb_slots]
                if masks is not None:
                    m = masks[t]
                    ys = [torch.where(_shaped(m, y), y, zero) for y in ys]
                    nxt = [torch.where(_shaped(m, n), n, p) for n, p in zip(nxt, h)]
            for acc, y in zip(outs, ys):
                acc.append(y)
            h = nxt
            if keep_states:
                kept.append(h)
        return [torch.stack(o) for o in outs], h, kept

    def _shared_values(self, dtype) -> list:
        """A fresh list of slot values holding what is computed once per call: the
        parameters, the constants (a number in the cell takes the run's float type ``dtype``)
        and the ops on them alone (``W.T``)."""
        v = [None] * self._prog.size
        for s, name in self._param_slots:
            v[s] = self._parameters[name]
        for s, name, scalar in self._const_slots:
            b = self._buffers[name]
            v[s] = b.to(dtype) if scalar else b
        self._eval(self._shared_prog, v, None)
        return v

    def _eval(self, prog, v, step):
        e = None
        try:
            for e in prog:
                v[e[0]] = e[1](torch, *[v[i] for i in e[2]], **e[3])
        except Exception as exc:
            out, _rule, ins, _kw = e
            node = self._prog.graph.nodes[out]
            shapes = ", ".join(f"{self._prog.graph.display_name(self._prog.graph.nodes[i])} "
                               f"{tuple(np.shape(v[i]))}" for i in ins)
            where = ("" if step is None else f", {step}" if isinstance(step, str)
                     else f", step {step}")
            raise LoweringError(
                f"exported cell {self.cell_name!r}{where}: the torch rule of op {node.op!r} "
                f"(node {self._prog.graph.display_name(node)}) failed on {shapes}: {exc}",
                op=node.op, target="torch",
            ) from exc

    def __prepare_scriptable__(self):
        """What ``torch.jit.script(module)`` compiles: the traced step in a TorchScript loop
        over time (:mod:`unrollgraph.export.torch_script`), sharing this module's
        parameters."""
        from .torch_script import scriptable

        return scriptable(self)

    def cell_state_dict(self) -> dict:
        """The parameters by their cell names (detached tensors, as ``state_dict`` gives)."""
        return {k: self._parameters[t].detach() for k, t in self.torch_names.items()}


def _detached(state):
    """A state as given to ``module(xs, state=...)``, cut from any graph."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, Mapping):
        return {k: _detached(v) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return tuple(_detached(v) for v in state)
    return state


def _shaped(mask, like):
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def _padded(x, lens, running):
    """The steps a masked run computes on (see ``unrollgraph.unroll``): a sequence's padded
    steps hold a detached copy of its last real input (the longest sequence's first for an
    empty one), so they compute on numbers the cell handles and pass exactly zero gradient."""
    T, B = x.shape[0], x.shape[1]
    if lens.min() >= T or lens.max() == 0:
        return x.unbind(0)
    longest = int(np.argmax(lens))
    rows = torch.as_tensor(np.where(lens > 0, lens - 1, 0), device=x.device)
    cols = torch.as_tensor(np.where(lens > 0, np.arange(B), longest), device=x.device)
    fill = x.detach()[rows, cols]
    out = []
    for t in range(T):
        keep = _shaped(running[t], fill)
        out.append(torch.where(keep, x[t], fill))
    return out


def to_torch(cell: Cell, dtype=None, device=None) -> CellModule:
    """Lower ``cell`` to a ``torch.nn.Module`` that runs it over sequences.

    The module is built from the folded cell graph with each op's torch lowering rule (see
    this module's docstring for the rule signature and the module's conventions).

    Parameters
    ----------
    cell : Cell
        Any cell (``ug.nn`` ready cells, stacked cells, your own).
    dtype : torch.dtype or numpy dtype, optional
        The module's float type; the cell's parameters' type by default (float64 for a cell
        in float64).
    device : torch.device or str, optional
        Where the parameters and constants go (``"cuda"`` when you have one); the CPU by
        default. ``module.to(...)`` moves it later.

    Returns
    -------
    CellModule
        ``module(xs, state=None, lengths=None, truncate=None, steps=None)`` returns
        ``(outputs, state)`` like ``ug.unroll(cell, steps=T)(xs)``; ``module.step(x, state)``
        runs one step. Its parameters carry the cell's parameter names and values (copies).

    Raises
    ------
    LoweringError
        An op of the cell has no torch rule (``.op`` names it, ``.target`` is ``"torch"``).
    CellError
        The cell cannot be unrolled (a state without feedback...).
    DTypeError
        ``dtype`` is not a float type.

    Examples
    --------
    >>> import numpy as np, torch, unrollgraph as ug
    >>> cell = ug.nn.LSTMCell(3, 4, seed=0)
    >>> module = ug.export.to_torch(cell)
    >>> sorted(name for name, _ in module.named_parameters())
    ['bias_hh', 'bias_ih', 'weight_hh', 'weight_ih']
    >>> xs = np.random.default_rng(0).standard_normal((5, 2, 3))
    >>> out, (h, c) = module(torch.from_numpy(xs))
    >>> ug_out, (ug_h, ug_c) = ug.unroll(cell, steps=5)(xs)
    >>> out.shape, bool(np.allclose(out.detach().numpy(), ug_out.data, rtol=1e-12))
    (torch.Size([5, 2, 4]), True)
    """
    if not isinstance(cell, Cell):
        raise CellError(f"to_torch(cell) needs a ug.Cell, got {type(cell).__name__}"
                        + (" (an unrolled net: pass net.cell)" if hasattr(cell, "cell") else ""))
    return CellModule(cell, dtype=_torch_dtype(dtype, "to_torch"), device=device)


# -- streaming truncated BPTT ----------------------------------------------------------------

def torch_tbptt(module: CellModule, xs, targets, loss_fn, k1: int, k2: int, optimizer=None,
                readout=None, state=None, clip: float | None = None):
    """Streaming TBPTT(k1, k2) of Williams and Peng on an exported cell: the counterpart of
    :func:`unrollgraph.train.tbptt`, with the same windows and the same cuts.

    Windows end at steps ``e = k1, 2*k1, ...`` (and at T). For the window ending at ``e`` it
    runs the ``L = min(k2, e)`` steps ``e - L, ..., e - 1`` with the current weights, from the
    state after step ``e - L - 1`` as computed by the window that last ran that step (detached),
    takes ``loss_fn(readout(y[e-n:e]), targets[e-n:e])`` over the window's last ``n =
    min(k1, e - previous end)`` outputs and backpropagates it through those L steps; with an
    optimizer, ``optimizer.zero_grad()`` before, clipping (``torch.nn.utils.clip_grad_norm_``,
    the formula of :func:`unrollgraph.clip_grad_norm`) and ``optimizer.step()`` after.
    Without an optimizer, gradients accumulate in ``.grad`` with fixed weights.

    Parameters
    ----------
    module : CellModule
        From :func:`to_torch`, of a one-output cell.
    xs : torch.Tensor (T, B, ...) or dict name -> such
    targets : torch.Tensor (T, B, ...)
    loss_fn : callable
        ``loss_fn(prediction (n, B, ...), targets (n, B, ...)) -> scalar tensor``.
    k1, k2 : int
        Steps between updates, and steps the gradient travels back (``k2 >= k1``).
    optimizer : torch.optim.Optimizer, optional
    readout : callable, optional
        Applied to the window's outputs (a ``torch.nn.Linear``, say).
    state : tensor, tuple or dict, optional
        The state before step 0; the cell's initial state otherwise.
    clip : float, optional
        Clip the global gradient norm of ``optimizer``'s parameters before each step.

    Returns
    -------
    losses : list of float
        One per window.
    state : tuple of torch.Tensor
        The (detached) state after the last step, in the cell's state order.

    Raises
    ------
    TrainingError
        ``k1``, ``k2`` not positive ints, ``k2 < k1``, ``clip`` without an optimizer, a cell
        with several outputs, targets of another length than xs.

    Examples
    --------
    >>> import torch, unrollgraph as ug
    >>> module = ug.export.to_torch(ug.nn.RNNCell(1, 4, seed=0))
    >>> gen = torch.Generator().manual_seed(0)
    >>> xs = torch.randn(12, 2, 1, generator=gen, dtype=torch.float64)
    >>> ys = torch.randn(12, 2, 4, generator=gen, dtype=torch.float64)
    >>> opt = torch.optim.SGD(module.parameters(), lr=0.1)
    >>> losses, (h,) = ug.export.torch_tbptt(module, xs, ys, torch.nn.functional.mse_loss,
    ...                                      k1=4, k2=8, optimizer=opt)
    >>> len(losses), tuple(h.shape)
    (3, (2, 4))
    """
    who = "torch_tbptt"
    if not isinstance(module, CellModule):
        raise TrainingError(f"{who}: module must come from ug.export.to_torch(cell), got "
                            f"{type(module).__name__}")
    for what, v in (("k1", k1), ("k2", k2)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise TrainingError(f"{who}: {what} must be a positive int, got {v!r}")
    if k2 < k1:
        raise TrainingError(
            f"{who}: k2={k2} < k1={k1}: the gradient must reach back at least over the k1 "
            f"steps whose outputs are in the loss; use k2 >= k1 (e.g. k2={k1})")
    if not callable(loss_fn):
        raise TrainingError(f"{who}: loss_fn must be callable (prediction, targets) -> scalar "
                            f"tensor, such as torch.nn.functional.mse_loss")
    if clip is not None and optimizer is None:
        raise TrainingError(f"{who}: clip needs an optimizer (clipping happens before a step)")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                             or not clip > 0):
        raise TrainingError(f"{who}: clip must be a positive max norm such as 1.0, got "
                            f"{clip!r}")
    if len(module.output_names) != 1:
        raise TrainingError(f"{who}: cell {module.cell_name!r} has several outputs "
                            f"{module.output_names}; use a cell with one output")
    first = next(iter(xs.values())) if isinstance(xs, Mapping) else xs
    T = first.shape[0]
    if targets.shape[0] != T:
        raise TrainingError(f"{who}: xs has {T} steps but targets has {targets.shape[0]}; "
                            "give one target per step")
    starts = {0: state}  # step s -> the state before step s (None: the initial state)
    losses = []
    prev_end = 0
    while prev_end < T:
        end = min(prev_end + k1, T)
        n = end - prev_end
        begin = max(0, end - k2)
        length = end - begin
        if optimizer is not None:
            optimizer.zero_grad()
        window = ({k: v[begin:end] for k, v in xs.items()} if isinstance(xs, Mapping)
                  else xs[begin:end])
        start = _detached(starts[begin])
        outs, _finals, kept = module._run(window, start, None, None, None, True)
        pred = outs[0][length - n:]
        if readout is not None:
            pred = readout(pred)
        loss = loss_fn(pred, targets[end - n:end])
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"{who}: the loss is {value} in the window ending at step "
                                f"{end}; lower the learning rate or pass clip=1.0")
        if loss.requires_grad:
            loss.backward()
        if optimizer is not None:
            if clip is not None:
                params = [p for g in optimizer.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
        losses.append(value)
        for t in range(length):
            starts[begin + t + 1] = tuple(s.detach() for s in kept[t])
        keep = T if end == T else max(0, min(end + k1, T) - k2)
        for s in [s for s in starts if s < keep]:
            del starts[s]
        prev_end = end
    return losses, starts[T]

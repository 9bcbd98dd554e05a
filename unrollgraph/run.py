"""Executing an unrolled net: a run's values, gradients, and what it keeps.

A call of an unrolled net makes one :class:`Run`: the forward pass over the compiled schedule
(:mod:`unrollgraph.compile`), then on ``loss.backward()`` the backward pass (BPTT) with the
output gradients. A lean run (``keep="needed"``, the default) drops what no VJP reads and
recomputes it on request (:meth:`Run.full`); :meth:`Run.state_grads` and
:meth:`Run.step_contributions` read the gradients through time.

The plain node-by-node loops, :func:`reference_forward` and :func:`reference_backward`, are the
reference executor: every derived fast path is tested against them (they also run under
``detect_anomaly()``, to name the failing node and step).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from operator import itemgetter
from typing import TYPE_CHECKING

import numpy as np

from .compile import (
    _Freed,
    backward_program,
    filed_rows,
    flush_after_steps,
    forward_steps,
    late_frees,
    plain_templates,
    stand_ins,
)
from .errors import CellError, DTypeError, GraphError, ShapeError, UnrollGraphError
from .graph import Node
from .ops import defop
from .schedule import (
    Filed,
    GradRows,
    alone,
    chunk_of,
    stack,
    take,
    time_batched_backward,
    time_batched_chunk,
    time_batched_forward,
)
from .tensor import (
    _CLOCK,
    _DTYPE_NAMES,
    _FLAGS,
    _FLOATS,
    _MODE,
    Tensor,
    _check_finite,
    _dtype_name,
    _from_torch,
    _locked,
    as_real_array,
    op_error,
)

if TYPE_CHECKING:
    from .unroll import Unrolled

__all__ = ["Run", "call", "reference_forward", "reference_backward"]


def call(net, xs, state=None, lengths=None):
    """Run ``net`` (an unmasked net with ``lengths=None``, or a masked one) on a batch:
    what :meth:`Unrolled.__call__ <unrollgraph.Unrolled.__call__>` does once it has
    picked the net. Returns ``(outputs, state)`` as that method describes."""
    # (this runs once per call of a net: kept lean, see benchmarks/percall.py)
    xs_t = normalize_inputs(net, xs)
    if xs_t:
        batch = next(iter(xs_t.values()))._data.shape[1]
    else:
        batch = _state_batch(state)
    states_t = normalize_state(net, state, batch) if state is not None else {}
    plan = _plan(net)
    if plan.narrow is not None:  # a float32 cell: no float64 input or state may widen it
        check_dtypes(net, plan.narrow, xs_t, states_t)
    if net.masked:
        lengths = check_lengths(net, lengths, batch)
    run = net._run_type(net, xs_t, states_t, lengths, batch, net.keep)  # (checkpoint=)
    run.forward()
    net.last_run = run
    # the caller gets read-only arrays: the backward pass reads these values (an RNN's
    # outputs are its states), so an edit in place would change the gradients unseen; an
    # edit raises numpy's "assignment destination is read-only", as a leaf's does.
    values = _outputs_read_only(run, plan)
    n_out = len(plan.outputs)
    if run.keep == "needed" and not run.lean_steps:
        run.free_unread()  # the generic loop keeps everything as it goes
    mode = _MODE.get()
    # the leaves: the inputs, the parameters the graph reads (one the cell declares but
    # nothing uses gets no gradient: its .grad stays None), the initial states given as tensors
    simple = not states_t and len(xs_t) == 1  # (the common case: one input, no state given)
    if simple:
        for x in xs_t.values():
            leaves: list[Tensor] = [x]
        leaves += plan.leaf_tail
    else:
        leaves = list(xs_t.values()) + plan.leaf_tail
        if states_t:
            leaves += [s for s in states_t.values() if isinstance(s, Tensor)]
    track = False
    if mode.grad_enabled:
        for t in leaves:
            if t._requires_grad:
                track = True
                break
    if track:
        if simple:
            nodes = (x.node,) + plan.leaf_nodes
            run.distinct_leaves = id(x) not in plan.param_ids
            kinds = plan.leaf_kinds.get(())
            if kinds is None:
                kinds = _leaf_kinds(net, xs_t, states_t, plan)
            run.leaf_slots = plan.leaf_slots[()]
        else:
            nodes = tuple([t.node for t in leaves])
            run.distinct_leaves = len({id(t) for t in leaves}) == len(leaves)
            kinds = _leaf_kinds(net, xs_t, states_t, plan)
        node = Node("unrolled", nodes, {"steps": net.steps, "_run": run}, net.cell.name)
        leaves = tuple(leaves)
        parents = (Tensor(tuple(values), node, leaves, True),)
        run.leaves = leaves
        run.leaf_kinds = kinds
        items = []
        k = 0
        names = _DTYPE_NAMES
        inputs = (node,)  # (shared by the items' nodes: a node's fields are never changed)
        for v in values:  # (each output, then each final state: an item of the call)
            items.append(Tensor(v, Node("item", inputs, _INDEX_ATTRS[k] if k < 64 else
                                        {"index": k}, None, v.shape,
                                        names.get(v.dtype) or _dtype_name(v)), parents, True))
            k += 1
    else:
        role = None if mode.grad_enabled else "no_grad"  # (for backward()'s message)
        items = [Tensor(v, Node("leaf", shape=v.shape, dtype=_dtype_name(v), role=role))
                 for v in values]
    if n_out == 1:
        outputs = items[0]
    else:
        outputs = {k: t for (k, _slots), t in zip(plan.outputs, items)}
    final = items[n_out] if len(items) == n_out + 1 else tuple(items[n_out:])
    return outputs, final


_FLOAT64 = np.dtype(np.float64)
_join = b"".join


def _outputs_read_only(run, plan) -> list:
    """Read-only arrays of the run's outputs, each (T, B, ...), then of its final states."""
    vals = run.values
    outs = run.outputs
    if outs:
        values = [_read_only(v) for v in outs]
    elif type(run).stacked_outputs is not _STACKED_OUTPUTS:  # (a checkpointed run's)
        values = [_read_only(v) for v in run.stacked_outputs()]
    else:
        pool = run.net._pool
        generic = run.generic_forward
        values = []
        leads = None if generic or run.states else run.net.__dict__.get("_output_leads")
        if leads is None and not generic and not run.states:
            leads = run.net._output_leads = run._output_leads()
        for k, rows_of in enumerate(plan.output_rows):
            rows = rows_of(vals)
            lead = leads[k] if leads else None
            if lead is not None:
                # an output that is a state (an RNN's h): copied after the initial state it
                # starts from, so that the states h_0 .. h_{T-1} a shared weight's gradient
                # reads are rows of the same copy (the backward pass stacks them unseen)
                h0 = vals[lead]
                joined = _stacked_read_only((h0,) + rows, pool, False, True)
                if joined is not None:
                    values.append(joined[1:])
                    run.joined_states += ((joined, (h0,) + rows),)
                    continue
            values.append(_stacked_read_only(rows, pool, generic))
    for s in plan.finals:
        v = vals[s]
        if type(v) is np.ndarray and v.flags.writeable:  # (_read_only, inline)
            v = v.view()
            v.setflags(False)
        values.append(v)
    return values


def _stacked_read_only(rows: tuple, pool, generic: bool, join_only: bool = False):
    """``stack(rows)``, read-only. Rows that the compiled steps computed into arrays of their
    own (each the same shape and dtype: every step runs the same code on the same shapes)
    are joined as bytes, a copy without numpy's per-array work, into one read-only array;
    any other rows (rows of one array already, not contiguous, from the generic loop) go
    through :func:`~unrollgraph.schedule.stack`."""
    first = rows[0]
    last = rows[-1]
    if not generic and type(first) is np.ndarray and first.base is None and first.ndim and \
            type(last) is np.ndarray and last.dtype is first.dtype and \
            last.shape == first.shape:
        try:
            buf = _join(rows)
        except (BufferError, TypeError, ValueError):  # (a row not contiguous, or no array)
            buf = None
        if buf is not None and len(buf) == first.nbytes * len(rows):
            return np.ndarray((len(rows),) + first.shape, first.dtype, buf)  # (read-only)
    if join_only:
        return None
    return _read_only(stack(rows, pool))


def _read_only(v):
    """A read-only view of the array ``v`` (``v`` itself if it is read-only already)."""
    if type(v) is np.ndarray and v.flags.writeable:
        v = v.view()
        v.setflags(False)
    return v


class _Plan:
    """What the runs of a net read on every call and that depends on the net alone (or on a
    key kept with it): made once, on the net's first call, and remade if the net's schedule
    is (``prog`` is the schedule it was made for). The parameters' dtypes cannot change (a
    tensor keeps its dtype), so neither can ``one_dtype``."""

    __slots__ = ("prog", "params", "one_dtype", "needs", "leaf_kinds", "_inits", "lean",
                 "leaf_tail", "leaf_nodes", "finals", "outputs", "dtype", "narrow",
                 "param_ids", "output_rows", "leaf_slots")

    def __init__(self, net):
        self.prog = net._prog
        # (slot, tensor) of each parameter the graph reads
        self.params = [(net._param_slots[k], p) for k, p in net._used_params.items()]
        self.one_dtype: dict = {}  # dtype -> whether the parameters and constants all have it
        # the cell's float type (Cell.dtype: one rule for the cell and its runs; a tensor
        # keeps its dtype); ``narrow`` is it when narrower than float64, else None
        self.dtype = np.dtype(net.cell.dtype)
        self.narrow = self.dtype if self.dtype != _FLOAT64 else None
        # which parameters, inputs and initial states require grad -> the slots needing grad
        self.needs: dict = {}
        # the names of the initial states given as tensors -> the kind of each leaf of a call,
        # and where Run.leaf_grads finds its gradient
        self.leaf_kinds: dict = {}
        self.leaf_slots: dict = {}
        # what a call reads of the net: the parameter tensors that are leaves of every call
        # and their nodes, each final state's slot, the outputs' names and slots
        self.leaf_tail = list(net._used_params.values())
        self.leaf_nodes = tuple([p.node for p in self.leaf_tail])
        self.param_ids = frozenset(map(id, self.leaf_tail))  # (the plan keeps them alive)
        self.finals = [slots[-1] for slots in net._state_slots.values()]
        self.outputs = list(net._output_slots.items())
        # per output: values -> the tuple of its per-step values
        self.output_rows = [itemgetter(*slots) if len(slots) > 1 else
                            (lambda vals, s=slots[0]: (vals[s],))
                            for slots in net._output_slots.values()]
        self._inits = None  # (batch, [(state, slot, shape, init)]) of the last batch size
        # the last lean forward plan (Run._lean_plan), after the key it was made for
        self.lean = None

    def inits(self, net, batch: int) -> list:
        """``(state name, slot, shape, declared init)`` of each initial state for a batch of
        ``batch`` (kept for the last batch size asked)."""
        kept = self._inits
        if kept is None or kept[0] != batch:
            cell = net.cell
            kept = self._inits = (batch, [
                (k, s, (batch,) + cell.states[k].shape[1:], cell.init_value(k))
                for k, s in net._init_slots.items()])
        return kept[1]


def _plan(net) -> _Plan:
    plan = net.__dict__.get("_call_plan")
    if plan is None or plan.prog is not net._prog:
        plan = net._call_plan = _Plan(net)
    return plan


# {"index": k}, shared by the item nodes of every call (a node's attrs are never mutated)
_INDEX_ATTRS = tuple({"index": k} for k in range(64))


def _leaf_kinds(net, xs_t: dict, states_t: dict, plan=None) -> tuple:
    """What each leaf of a call is, ``(kind, name)``, in the order of ``Run.leaves``: the
    same for every call that gives the same initial states as tensors (kept in the plan)."""
    key = tuple([k for k, s in states_t.items() if isinstance(s, Tensor)]) if states_t else ()
    plan = plan or _plan(net)
    cache = plan.leaf_kinds
    kinds = cache.get(key)
    if kinds is None:
        kinds = cache[key] = tuple(
            [("input", k) for k in net._input_names] + [("param", k) for k in net._used_params]
            + [("init", k) for k in key]
        )
        plan.leaf_slots[key] = _leaf_slots(net, kinds)
    return kinds


def _leaf_slots(net, kinds: tuple) -> tuple:
    """Where :meth:`Run.leaf_grads` finds each leaf's gradient, for the leaves ``kinds``
    (see :func:`_leaf_kinds`): a parameter's or an initial state's slot, an input's name."""
    return tuple([net._param_slots[k] if kind == "param" else net._init_slots[k]
                  if kind == "init" else k for kind, k in kinds])


def _input_shape_hint(net, k: str, shape: tuple, want: tuple) -> str:
    """What differs between input ``k``'s ``shape`` and the (T, B) + ``want`` the net takes,
    said as the fix: the steps, the batch-first order, the feature size, a missing axis."""
    feats = f"cell.input({k!r}, {want})"
    if len(shape) == 2 + len(want):
        if shape[0] == 0:
            return "a sequence of 0 steps has nothing to run: a net runs at least one step"
        if shape[1] == net.steps and shape[2:] == want:
            return ("it looks batch-first (B, T, ...): the steps come first, pass "
                    "np.swapaxes(xs, 0, 1)")
        said = []
        if shape[0] != net.steps:
            said.append(f"it has {shape[0]} steps where the net has {net.steps}: unroll again "
                        f"with ug.unroll(cell, steps={shape[0]})")
        if shape[2:] != want:
            size = (f"feature size {shape[2]} where the cell's input {k!r} takes {want[0]}"
                    if len(want) == 1 else
                    f"features shaped {shape[2:]} where the cell's input {k!r} takes {want}")
            said.append(f"each step's {size} (declared as {feats}): pass data of the "
                        f"cell's feature size, or build the cell for {shape[2:]} (its "
                        "input size)")
        return "; ".join(said)
    if len(shape) == 1 + len(want) and shape[1:] == want:
        return (f"it has no batch axis: for a batch of one pass xs[:, None] (shape "
                f"{(shape[0], 1) + want})")
    return (f"arrange it as (steps, batch) + the feature shape {want} of {feats}, "
            f"{2 + len(want)} axes in all (it has {len(shape)})")


def normalize_inputs(net, xs) -> dict:
    names = net._input_names
    kind = type(xs)
    if (kind is Tensor or kind is np.ndarray) and len(names) == 1:
        # the common cases, checked in a few steps: one tensor, or one float array (copied as
        # as_real_array copies it: the same dtype and layout); anything else, and any shape
        # that does not fit, takes the general path below (and its messages)
        data = xs._data if kind is Tensor else xs
        if type(data) is np.ndarray:
            shape = data.shape
            k = names[0]
            want = net._input_shapes[k]
            if len(shape) == 2 + len(want) and shape[0] == net.steps and shape[2:] == want:
                if kind is Tensor:
                    return {k: xs}
                dt = data.dtype
                if dt.type in _FLOATS:
                    arr = np.array(data, dt, copy=True)
                    arr.setflags(False)  # (_locked: the tensor owns it)
                    return {k: Tensor(arr, Node("leaf", (), None, k, shape,
                                                _DTYPE_NAMES.get(dt) or _dtype_name(arr)))}
    if not names and (xs is None or (isinstance(xs, dict) and not xs)):
        return {}  # a cell without inputs runs on its state alone
    if xs is None:
        raise CellError(f"cell {net.cell.name!r} has inputs {names}: pass xs shaped "
                        f"(T={net.steps}, B, ...)" + (" (a dict by name)" if len(names) > 1
                                                       else "") + ", as net(xs)")
    if not isinstance(xs, dict):
        if len(names) != 1:
            raise CellError(
                f"cell {net.cell.name!r} has inputs {names}; pass xs as a dict "
                "name -> array shaped (T, B, ...)"
            )
        xs = {names[0]: xs}
    if len(xs) != len(names) or any(k not in xs for k in names):
        raise CellError(
            f"cell {net.cell.name!r}: xs has inputs {sorted(xs)} but the cell declares "
            f"{names}"
        )
    out = {}
    for k in names:
        x = xs[k]
        if isinstance(x, Tensor):
            t = x
            if type(x.data) is not np.ndarray:
                raise CellError(
                    f"unrolled cell {net.cell.name!r}: xs[{k!r}] is {x.node.label()}, "
                    "which holds no array; pass an array or a Tensor shaped (T, B, ...)"
                )
        else:
            # a copy of the caller's array (as ug.tensor makes): the run keeps the inputs
            # for backward, and an edit of the array in between must not reach them; a
            # PyTorch tensor is read with its own dtype, which check_dtypes checks
            what = f"unrolled cell {net.cell.name!r}: net(xs): xs[{k!r}]"
            x = _from_torch(x, what)
            arr = _locked(as_real_array(x, what, _untyped(net, x)))
            t = Tensor(arr, Node("leaf", name=k, shape=arr.shape, dtype=_dtype_name(arr)))
        want = net._input_shapes[k]
        if t.ndim != 2 + len(want) or t.shape[0] != net.steps or t.shape[2:] != want:
            raise ShapeError(
                f"unrolled cell {net.cell.name!r}: input {k!r} must have shape "
                f"(T={net.steps}, B, {', '.join(map(str, want))}), got {t.shape}; "
                + _input_shape_hint(net, k, t.shape, want)
            )
        out[k] = t
    batches = {t.shape[1] for t in out.values()}
    if len(batches) > 1:
        raise ShapeError(
            f"unrolled cell {net.cell.name!r}: inputs disagree on the batch size: "
            + ", ".join(f"{k} has {t.shape[1]}" for k, t in out.items())
        )
    return out


def normalize_state(net, state, batch) -> dict:
    names = list(net.cell.states)
    if state is None:
        return {}
    cell = f"unrolled cell {net.cell.name!r}"
    how = (f"pass state as a dict {{{', '.join(repr(k) + ': ...' for k in names)}}} or a "
           f"tuple of {len(names)} arrays shaped (batch, ...) in that order")
    if not names:
        if isinstance(state, (tuple, list, Mapping)) and not state:
            return {}
        raise CellError(f"{cell} has no states, so state= must be None; got "
                        f"{type(state).__name__}")
    if isinstance(state, Mapping):
        missing = [k for k in names if k not in state]
        unknown = [k for k in state if k not in names]
        if missing or unknown:
            parts = ([f"is missing {missing}"] if missing else []) + (
                [f"has unknown keys {sorted(map(str, unknown))}"] if unknown else [])
            raise CellError(
                f"{cell}: state {' and '.join(parts)}; the cell's states are {names}: "
                f"{how}"
            )
        state = tuple(state[k] for k in names)
    elif len(names) == 1 and (not isinstance(state, (tuple, list)) or (
            isinstance(state, list) and state
            and all(isinstance(v, (list, int, float, np.number)) for v in state))):
        state = (state,)  # the one state, as an array or nested lists of numbers
    elif not isinstance(state, (tuple, list)):
        raise CellError(
            f"{cell} has states {names}; got one {type(state).__name__} for state=: {how}"
        )
    if len(state) != len(names):
        raise CellError(
            f"{cell} has states {names}; state= has {len(state)} values: {how}"
        )
    out = {}
    for k, s in zip(names, state):
        want = (batch,) + net.cell.states[k].shape[1:]
        if isinstance(s, Tensor):
            arr = s.data
            if type(arr) is not np.ndarray:
                raise CellError(f"{cell}: state[{k!r}] is {s.node.label()}, which holds no "
                                "array; pass an array or a Tensor shaped (batch, ...)")
        else:  # a copy: the run keeps the initial state for backward
            what = f"{cell}: initial state= {k!r}"
            s = _from_torch(s, what)  # (its own dtype, which check_dtypes checks)
            arr = _locked(as_real_array(s, what, _untyped(net, s)))
        if arr.shape != want:
            raise ShapeError(
                f"{cell}: initial state {k!r} must have shape "
                f"{want} (batch, ...), got {arr.shape}"
                + ("; a leading axis of 1, as PyTorch's (num_layers, B, H): pass h0[0] (a "
                   "stacked ug.nn cell has one state per layer: h_l0, h_l1, ...)"
                   if arr.shape == (1,) + want else "")
            )
        out[k] = s if isinstance(s, Tensor) else arr
    return out


def _untyped(net, value):
    """The float type for data without one of its own (numbers, lists, integer arrays): the
    cell's when it is narrower than float64 (as a number in arithmetic takes a tensor's type),
    else ``None`` (float64). A float array keeps its type, which :func:`check_dtypes` checks."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return None
    return _plan(net).narrow


def check_dtypes(net, dtype, xs_t: dict, states_t: dict) -> None:
    """Refuse an input or initial state wider than the cell's float type ``dtype`` (float64
    data for a float32 cell): numpy would silently compute the whole run, and return its
    outputs, in the wider type. Narrower data is widened where it meets the weights, as numpy
    does, and gives the cell's type. Called once per call, only for a cell narrower than
    float64 (the plan knows)."""
    cell = f"unrolled cell {net.cell.name!r}"
    for what, k, t in [("input", k, t) for k, t in xs_t.items()] + [
            ("initial state", k, s) for k, s in states_t.items()]:
        arr = t._data if isinstance(t, Tensor) else t
        if np.promote_types(arr.dtype, dtype) == dtype:
            continue
        name = "xs" if what == "input" else "h0"
        torch_cast = {"float32": "float", "float64": "double"}.get(dtype.name)
        fix = (f"{name}.astype(np.{dtype.name}) (a tensor: ug.tensor({name}, "
               f"dtype=np.{dtype.name}), or compute it in {dtype.name}"
               + (f"; a PyTorch tensor: {name}.{torch_cast}()" if torch_cast else "") + ")")
        raise DTypeError(
            f"{cell}: {what} {k!r} is {arr.dtype.name} but the cell computes in {dtype.name} "
            f"(its parameters are {dtype.name}): the run would silently compute and return "
            f"{np.promote_types(arr.dtype, dtype).name}. Pass {fix}, or build the cell in "
            f"{arr.dtype.name} (ug.nn cells: dtype=np.{arr.dtype.name})"
        )


def check_lengths(net, lengths, batch) -> np.ndarray:
    if lengths is None:
        return np.full(batch, net.steps)
    arr = np.asarray(lengths)
    if isinstance(lengths, (list, tuple)) and any(
            isinstance(v, (bool, np.bool_)) for v in lengths):
        raise ShapeError(
            f"lengths must be {batch} integers (one per sequence in the batch), got a bool "
            f"in {lengths!r}"
        )
    if arr.shape != (batch,) or arr.dtype.kind not in "iu":
        raise ShapeError(
            f"lengths must be {batch} integers (one per sequence in the batch), got "
            f"{arr.dtype} array of shape {arr.shape}"
        )
    if arr.size and (arr.min() < 0 or arr.max() > net.steps):
        raise ShapeError(
            f"lengths must lie in [0, {net.steps}] for a net unrolled over {net.steps} "
            f"steps; got values from {arr.min()} to {arr.max()}"
        )
    return arr


def _state_batch(state) -> int:
    """Batch size of a run without inputs: from the initial state if one is given, else 1."""
    if state is None:
        return 1
    first = state[0] if isinstance(state, (tuple, list)) else (
        next(iter(state.values())) if isinstance(state, dict) else state)
    shape = np.shape(first.data if isinstance(first, Tensor) else first)
    return shape[0] if shape else 1


def _padded_inputs(xs: dict, lengths) -> dict:
    """The inputs a masked run computes on: a sequence's padded steps (``t >= length``) hold
    a copy of its last real input (of the longest sequence's first, for an empty one), so a
    padded row computes on numbers the cell is known to handle. The masks select none of it,
    and since every value of a padded row is then finite, the zero gradients the masks send
    it stay exactly zero (padding such as all-zero rows through ``x / sqrt(sum(x * x))``
    would otherwise give NaN values whose zero gradient is still NaN). The caller's arrays are
    not changed."""
    lengths = np.asarray(lengths)
    if not xs or lengths.size == 0:
        return xs
    T = next(iter(xs.values())).shape[0]
    if lengths.min() >= T or lengths.max() == 0:
        return xs  # nothing padded, or nothing real to pad with
    longest = int(np.argmax(lengths))
    out = {}
    for k, x in xs.items():
        x = x.copy()
        for b, n in enumerate(lengths):
            n = int(n)
            if n < T:
                x[n:, b] = x[n - 1, b] if n else x[0, longest]
        out[k] = x
    return out


class Run:
    """The values (and, after backward, gradients) of one call of an unrolled net.

    ``values[i]`` and ``grads[i]`` are indexed by schedule slot (:meth:`Unrolled.slot`).
    """

    # the step of the whole run that the net's step 0 is: a checkpointed run's segment starts
    # later, and its error messages count steps from here (see reference_forward)
    first_step = 0
    # What a run starts with and most runs never change: class attributes, so that making a
    # run (once per call) sets only what differs from run to run.
    _full = None  # the same run with everything kept, recomputed on request
    lean_steps = False  # True once the compiled lean steps have dropped values
    grads: list | None = None
    leaves: tuple | list = ()  # the leaves of the call (set by call() when it is tracked)
    leaf_kinds: tuple = ()
    leaf_slots: tuple = ()  # where leaf_grads finds each leaf's gradient (see _leaf_slots)
    distinct_leaves = False  # no tensor among the leaves twice (set by call())
    seeds = None  # output gradients of the last backward: one per output, then state
    _input_grads = None
    # the outputs (T, B, ...), one array per output, when the compiled steps wrote each
    # step's output straight into them (call() stacks the per-step values otherwise)
    outputs: list | None = None
    _state_grads = None  # a lean run's state gradients, computed on request
    # whether the forward and backward passes took the generic node-by-node loop (a
    # recomputation for Run.full takes the same, to reproduce the same bits)
    generic_forward = False
    generic_backward = False
    flush_chunk = None  # steps per chunk of a long run (see _chunk_steps), once chosen
    # per output that is a state written into its rows by the compiled steps: (the (T+1, B,
    # ...) array, the slots holding its rows in order: the initial state's, then each
    # step's); see _seed_state_rows
    state_rows: tuple = ()
    # per output that is a state and that call() copied into one read-only (T+1, B, ...)
    # array after the initial state (the small outputs, not written into rows): (that
    # array, the arrays copied into its rows, in order: h_0, then each step's state); see
    # _seed_state_rows
    joined_states: tuple = ()
    plain = None  # whether the run takes the plain path (see _plain_path), once chosen
    _owner = "Run"  # what the name lookup's messages call the accessor's owner

    def __init__(self, net: Unrolled, xs: dict, states: dict, lengths, batch: int,
                 keep: str = "all"):
        self.net = net
        self.keep = keep  # "needed": values and gradients no VJP reads are dropped
        self.xs = xs
        # the arrays the run computes on: the inputs, except that a masked run fills each
        # sequence's padded steps with a real input of its own (see _padded_inputs)
        if len(xs) == 1:
            for k, x in xs.items():
                self.xs_data = {k: x._data}
        else:
            self.xs_data = {k: x._data for k, x in xs.items()}
        if lengths is not None and net.masked:
            self.xs_data = _padded_inputs(self.xs_data, lengths)
        self.states = states
        self.lengths = lengths
        self.batch = batch
        self.values: list = [None] * len(net.nodes)
        self.stacked: dict = {}
        # the clock when the run began: a parameter, input or initial state changed after it
        # (an optimizer step, .data = ..., load_state_dict) makes recomputing accessors refuse
        self._born = _CLOCK[0]

    def stacked_outputs(self) -> list:
        """Each output of the run as one (T, B, ...) array, in declaration order: the arrays
        the steps wrote their outputs into, or else the per-step values stacked."""
        if self.outputs:
            return self.outputs
        net = self.net
        return [stack([self.values[i] for i in slots], net._pool)
                for slots in net._output_slots.values()]

    # (call() reads this method's outputs without calling it when a run does not override it)

    def free_unread(self) -> None:
        """Drop the values no VJP reads, keeping their shapes (``keep="needed"``)."""
        vals = self.values
        for s in self.net._unread:
            v = vals[s]
            if type(v) is not _Freed:
                vals[s] = _Freed(v.shape, v.dtype)
        self._free_stacked()

    def _free_stacked(self) -> None:
        """Drop the time-batched values (T, B, ...) whose every step is freed."""
        vals = self.values
        for k, tb in enumerate(self.net._time_batch):
            if k in self.stacked and type(vals[tb.slots[0]]) is _Freed and \
                    all(type(vals[s]) is _Freed for s in tb.slots):
                v = self.stacked[k]
                self.stacked[k] = _Freed(v.shape, v.dtype)

    def value(self, node):
        """Value of ``node`` in this run (recomputed if the run did not keep it, see
        :meth:`full`).

        Parameters
        ----------
        node : Node or str
            A node of the unrolled graph (``net.nodes``, ``net.graph.nodes``, or
            ``net.output_nodes``), or its display name as printed by ``print(net.graph)``,
            such as ``"h_next@0"`` (a cell's node at step 0) or ``"W"`` (a parameter). The
            names the diagrams give the cell's members work too (where no display name is
            the same): ``"h@t"`` or ``"h_t"`` is state h after step t (the textbook
            view's h with subscript t), ``"h_init"`` (or ``"h@init"``) its initial state,
            ``"y@t"`` or ``"y_t"`` output y of step t, ``"x@t"`` or ``"x_t"`` input x of
            step t.

        Returns
        -------
        numpy.ndarray
            The node's value, with the batch axis.

        Raises
        ------
        GraphError
            For a node that is not in this net's unrolled graph, or an unknown name; the
            message says what to pass.
        UnrollGraphError
            If a parameter, input or initial state of the run has changed since (an optimizer
            step): the value would mix old and new numbers.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=2)
        >>> out, h = net(np.ones((2, 1, 2)))
        >>> net.last_run.value("h_next@0").shape
        (1, 3)
        >>> bool((net.last_run.value("h@1") == h.data).all())  # state h after step 1
        True
        >>> bool((net.last_run.value("y_0") == out.data[0]).all())  # output y of step 0
        True
        """
        s = self._slot_of(node, "value")
        v = self.values[s]
        if type(v) is _Freed or self.net.nodes[s].step is None:
            # recomputed, or a shared leaf (a parameter's live array): refuse if it changed
            self._check_unchanged("value")
        # read-only: the run reads its values again (the backward pass, its other accessors,
        # the diagrams); edit a copy (``.copy()``)
        return _read_only(v if type(v) is not _Freed else self.full().values[s])

    def grad(self, node):
        """Gradient of the loss with respect to ``node`` (``None`` before backward or where no
        gradient reaches it; recomputed if the run did not keep it, see :meth:`full`).

        None exactly where the reference walk (the generic reverse walk over the unrolled
        graph) puts no gradient, on every kind of run (lean, ``keep="all"``, checkpointed,
        with ``lengths=``): an input or a state at a step that truncation cuts off, say.

        ``node`` is taken as by :meth:`value` (a node of ``net.graph`` or its display name);
        the same errors are raised. A masked run's state name (``"h@t"``, ``lengths=``) gives
        the gradient of the state the net carries on, :meth:`state_grad_of`: row for row
        :meth:`state_grads`, as every diagram draws it.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=2)
        >>> out, h = net(np.ones((2, 1, 2)))
        >>> out.sum().backward()
        >>> net.last_run.grad("h_next@1").shape
        (1, 3)

        An output's name at a step (``y@t``, ``y_t``) means what the diagrams show there: the
        gradient the loss sends to ``outputs[t]`` itself. The node's display name (an RNN's
        ``h_next@t``, the same node) gives its total gradient, which also collects what
        later steps send back through the state:

        >>> out, h = net(np.ones((2, 1, 2)))
        >>> (out * 2).sum().backward()
        >>> net.last_run.grad("y_0")           # the RNN's output y is its node h_next
        array([[2., 2., 2.]])
        >>> bool(np.all(net.last_run.grad("h_next@0") == 2))  # plus what step 1 sends back
        False
        """
        s = self._slot_of(node, "grad")
        if self.grads is None:
            return None
        if isinstance(node, str):
            kept = self._masked_state(s)
            if kept is not None and node != self.net.graph.display_name(self.net.nodes[s]):
                return self.state_grad_of(self.net.nodes[s])  # a masked run's state h@t
            own = self._names()[1].get(node)
            if own is not None:  # an output's own gradient: its seed's row
                k, t = own
                seed = self.seeds[k] if self.seeds is not None else None
                if seed is None:
                    v = np.asarray(self.value(node))
                    return np.zeros(v.shape, v.dtype)
                return _read_only(seed[t])
        if not _reached(self)[s]:  # as the reference walk: None where no gradient reaches
            return None
        g = self.grads[s]
        if g is not None or self.keep == "all":
            return _read_only(g)  # (read-only, as value's)
        self._check_unchanged("grad")
        return _read_only(self.full().grads[s])

    def _masked_state(self, s: int):
        """``(before, mask)`` slots when slot ``s`` is a masked run's state (the ``where``
        that keeps it past a sequence's length), else None."""
        net = self.net
        if not net.masked:
            return None
        for slots, pre in zip(net._state_slots.values(), net._state_pre_slots.values()):
            for k, p in zip(slots, pre):
                if k == s and p != s:
                    return p, net._slot[id(net.nodes[s].inputs[0])]
        return None

    def state_grad_of(self, node):
        """The gradient of a state node as the state the net carries on (dL/dh_t).

        For a masked run's state (``lengths=``) it is, for each sequence, the total gradient
        of the value its step computed (what the step's outputs and every later step send
        to it) up to its length, and past it the gradient of the state kept unchanged: row
        for row :meth:`state_grads`, and what ``grad("h@t")`` answers and the diagrams draw
        in the state's oval. For any other node, :meth:`grad` of it.

        Parameters
        ----------
        node : Node
            A node of the unrolled graph (``net.state_nodes[name][t]``).

        Returns
        -------
        numpy.ndarray or None
            None where no gradient reaches the state (as :meth:`grad`).

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=3)
        >>> out, h = net(np.ones((3, 2, 2)), lengths=[3, 1])
        >>> out.sum().backward()
        >>> run = net.last_run
        >>> g = run.state_grad_of(run.net.state_nodes["h"][0])
        >>> bool((g == run.state_grads()[0]).all()), bool((g == run.grad("h@0")).all())
        (True, True)
        """
        s = self._slot_of(node, "grad")
        kept = self._masked_state(s)
        if kept is None:
            return self.grad(node)
        p, m = kept
        nodes = self.net.nodes
        before, after = self.grad(nodes[p]), self.grad(nodes[s])
        if before is None and after is None:
            return None
        # (no gradient on one side: zeros there)
        before = np.zeros_like(after) if before is None else before
        after = np.zeros_like(before) if after is None else after
        return _read_only(np.where(self.value(nodes[m]), before, after))

    def _slot_of(self, node, what: str) -> int:
        """The slot of ``node`` (a Node of the unrolled graph or its display name)."""
        net = self.net
        if isinstance(node, Tensor) and id(node.node) in net._slot:  # a parameter tensor
            return net._slot[id(node.node)]
        if isinstance(node, Tensor) and isinstance(node.node, Node) and (
                node.node.step is None and node.node.op in ("input", "state")
                or any(node.node is t.node for t in net.cell.outputs.values())):
            node = node.node  # a cell's placeholder or output: said so below
        if isinstance(node, Node):
            s = net._slot.get(id(node))
            if s is not None:
                return s
            member = [k for k, t in net.cell.outputs.items() if node is t.node]
            if node.step is None and node.op in ("input", "state"):
                member.append(node.label())
            where = ("a node of the cell, not of the unrolled graph" if member
                     else "not a node of this net's unrolled graph")
            eg = f"{member[0]}@0" if member else net.graph.display_name(net.nodes[-1])
            raise GraphError(
                f"{self._owner}.{what}({node.label()}): {where}; pass a node of "
                "net.graph.nodes (or net.output_nodes), or its display name as "
                f"print(net.graph) shows it, e.g. {self._owner.lower()}.{what}({eg!r})"
            )
        if isinstance(node, str):
            names = self._names()[0]
            s = names.get(node)
            if s is not None:
                return s
            plain = _subscripts_written_out(node)  # h₁, h_next₂, h<sub>1</sub> as drawn
            for alias in ((f"{plain[0]}@{plain[1]}", f"{plain[0]}_{plain[1]}") if plain
                          else ()):
                s = names.get(alias)
                if s is not None:
                    return s
            key = f"{plain[0]}@{plain[1]}" if plain else node
            close = [n for n in names if n.split("@")[0] == key.split("@")[0]][:4]
            close += [n for n in difflib.get_close_matches(key, list(names), n=4)
                      if n not in close][:4 - len(close)]
            cell = net.cell
            eg = [f"{k}@0" for k in list(cell.states)[:1] + list(cell.outputs)[:1]]
            loss, y = "", next(iter(cell.outputs), None)
            if node.strip() in ("L", "loss", "ℒ"):
                loss = (
                    " The loss is not a node of the unrolled graph: the net computes outputs "
                    "and states, and a loss is computed from them outside the net (loss = "
                    "ug.mse_loss(outputs, targets)). Its value is loss.item() (or loss.data) "
                    "on the tensor you called backward() on"
                    + (f", and the gradient it sends to output {y!r} at step t is "
                       f"Run.grad('{y}@t'), here e.g. '{y}@0'" if y else "") + ".")
            raise GraphError(
                f"{self._owner}.{what}({node!r}): no node of the unrolled graph has this name"
                + (f"; did you mean {', '.join(map(repr, close))}?" if close and not loss
                   else ".")
                + loss
                + " Accepted: a display name as print(net.graph) shows it (a cell's node at "
                "step t is 'name@t', a parameter its name); a state's, output's or input's "
                "name at step t as the diagrams label it, 'name@t' or 'name_t' (or with the "
                "step as a subscript, 'h₁'; a state 'h@t' is its value after step t, 'h_init' "
                "the initial state; an output 'y@t' is step t's)"
                + (f", here e.g. {', '.join(map(repr, eg))}" if eg else "")
                + f"; steps run from 0 to {net.steps - 1}."
            )
        got = ("a tensor that is not a node of the unrolled graph (an output the net "
               "returned, say)" if isinstance(node, Tensor) else type(node).__name__)
        raise GraphError(
            f"{self._owner}.{what}(...) takes a node of net.graph.nodes, a parameter tensor, or a "
            f"display name (a str such as 'h_next@0'), got {got}; for a tensor's own value "
            "use t.data (and t.grad)"
        )

    def _names(self) -> dict:
        """Name -> slot: every node's display name (``h_next@1``), then the names the
        diagrams give the cell's members at each step where no display name is the same:
        ``h@t`` and ``h_t`` for state h after step t (the textbook view's h<sub>t</sub>),
        ``h@init`` and ``h_init`` for its initial state, ``y@t`` and ``y_t`` for output y of
        step t, ``x@t`` and ``x_t`` for input x of step t. Also the output names among those
        -> ``(output index, step)`` (:meth:`grad` answers them with the output's own
        gradient)."""
        net = self.net
        graph = net.graph
        cached = getattr(net, "_display_slots", None)
        if cached is None or cached[0] is not graph:  # (a rebuilt net has a new graph)
            slot = net._slot
            names = {graph.display_name(n): slot[id(n)] for n in graph.nodes
                     if id(n) in slot}
            outputs: dict = {}
            for k, (name, nodes) in enumerate(net.output_nodes.items()):
                for t, n in enumerate(nodes):
                    for alias in (f"{name}@{t}", f"{name}_{t}", name + _subscript(t),
                                  f"{name}<sub>{t}</sub>"):
                        if id(n) in slot and alias not in names:
                            outputs[alias] = (k, t)
            members = [net.state_nodes, net.output_nodes, net.input_nodes]
            for table in members:
                for k, nodes in table.items():
                    for t, n in enumerate(nodes):
                        if id(n) in slot:
                            names.setdefault(f"{k}@{t}", slot[id(n)])
                            names.setdefault(f"{k}_{t}", slot[id(n)])
            # (a state's name that is also an output's: the state's, its total gradient)
            outputs = {a: kt for a, kt in outputs.items() if a not in {
                f"{k}{sep}{t}" for k, nodes in net.state_nodes.items()
                for t in range(len(nodes)) for sep in "@_"} and a not in {
                form for k, nodes in net.state_nodes.items() for t in range(len(nodes))
                for form in (k + _subscript(t), f"{k}<sub>{t}</sub>")}}
            for k, n in net.init_nodes.items():
                if id(n) in slot:
                    names.setdefault(f"{k}@init", slot[id(n)])
                    names.setdefault(f"{k}_init", slot[id(n)])
            cached = net._display_slots = (graph, (names, outputs))
        return cached[1]

    def _check_unchanged(self, what: str, why: str = "") -> None:
        """Refuse to recompute from values that changed after the run (version counters).
        ``what`` is the accessor the user called; ``why`` says why it needs a recomputation,
        where that is not plain."""
        born = self._born
        tensors = [(f"parameter {k!r}", p, "the optimizer step (or other change to it)")
                   for k, p in self.net.cell._params.items()]
        tensors += [(f"input {k!r}", x, "changing it") for k, x in self.xs.items()]
        tensors += [(f"initial state {k!r}", h, "changing it") for k, h in self.states.items()
                    if isinstance(h, Tensor)]
        for who, t, before in tensors:
            if t._version[0] > born:
                raise UnrollGraphError(
                    f"Run.{what}(): the {who} of {self.net.cell.name!r} has changed since the "
                    f"run ({t._version[1] or 'an in-place change'}), so the values the run "
                    f"did not keep can no longer be recomputed as they were{why}. "
                    "Call the net again (and loss.backward()) and inspect that run, or "
                    f"call Run.{what}() before {before} (diagrams, explain and the run's "
                    "value/grad of what it did not keep call it: render before it too)"
                )

    def release(self) -> None:
        """Drop the recomputation :meth:`full` cached (every value and gradient of all T
        steps, which diagrams, ``state_grads`` of a checkpointed run, ``step_contributions``
        and ``value``/``grad`` of what the run did not keep make and keep on the run). What
        the run kept stays; the next such request recomputes. The next call of the net
        replaces ``net.last_run``, which drops it too.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=9, checkpoint=3)
        >>> out, h = net(np.ones((9, 1, 2)))
        >>> out.sum().backward()
        >>> g = net.last_run.state_grads()    # recomputes and holds all 9 steps
        >>> net.last_run.release()            # back to what the checkpointed run keeps
        >>> net.last_run._full is None
        True
        """
        self._full = None

    def full(self) -> Run:
        """This run with every node's value and gradient in place, for diagrams and inspection.

        A ``keep="needed"`` run keeps only what backpropagation reads. On request it is run
        once more, forward (and backward with the same output gradients, if it had one),
        keeping everything; what the first run kept must come out bit for bit the same, or
        :class:`~unrollgraph.UnrollGraphError` says that the parameters or inputs have
        changed since (an optimizer step, say) and the net must be called again.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> cell = ug.nn.RNNCell(2, 3, seed=0)
        >>> net = ug.unroll(cell, steps=4, keep="needed")
        >>> out, h = net(np.ones((4, 1, 2)))
        >>> out.sum().backward()
        >>> run = net.last_run
        >>> pre = [n for n in net.nodes if n.op == "add" and n.step == 2][-1]
        >>> type(run.values[net.slot(pre)]).__name__       # not kept: a stand-in
        '_Freed'
        >>> run.full().values[net.slot(pre)].shape        # recomputed on request
        (1, 3)
        """
        if self.keep == "all":
            return self
        if self._full is None:
            self._check_unchanged("full")
            full = Run(self.net, self.xs, self.states, self.lengths, self.batch, "all")
            full._born = self._born
            full.generic_forward = self.generic_forward
            full.generic_backward = self.generic_backward
            full.flush_chunk = self.flush_chunk  # (chunks of steps as the run had them)
            full.plain = self.plain
            full.forward()
            self._check_kept(full.values, self.values, "value")
            if self.seeds is not None:
                full.backward(self.seeds)
                self._check_kept(full.grads, self.grads, "gradient")
            self._full = full
        return self._full

    def _check_kept(self, again: list, kept: list, what: str) -> None:
        for s, v in enumerate(kept):
            if type(v) is np.ndarray and not np.array_equal(again[s], v, equal_nan=True):
                node = self.net.nodes[s]
                at = "" if node.step is None else f" at step {node.step}"
                raise UnrollGraphError(
                    f"cannot recompute the values this run of {self.net.cell.name!r} did not "
                    f"keep (keep='needed'): the {what} of {node.label()}{at} now comes out "
                    "different, so the parameters, inputs or initial state have changed since "
                    "the run (an optimizer step?). Call the net again before drawing or "
                    "inspecting it, or unroll with keep='all' to keep every value"
                )

    def _place_leaves(self, plan, dtype) -> None:
        """Put the leaves' values in the run's slots: the parameters, the cell's constants,
        each input's steps and the initial states (the caller's, else zeros or the cell's
        declared initial value)."""
        net, vals = self.net, self.values
        for s, p in plan.params:
            vals[s] = p._data
        for s, v in net._const_slots:
            # a number written in the cell takes the run's float type (float32 stays float32)
            vals[s] = v.astype(dtype) if v.ndim == 0 and v.dtype.kind == "f" else v
        for k, slots in net._input_slots.items():
            for s, v in zip(slots, self.xs_data[k]):  # step t's slice of each input
                vals[s] = v
        states = self.states
        for k, s, shape, init in plan.inits(net, self.batch):
            given = states.get(k) if states else None
            if given is not None:
                vals[s] = given._data if isinstance(given, Tensor) else given
            else:
                vals[s] = (np.zeros(shape, dtype) if init is None
                           else np.broadcast_to(init, shape).astype(dtype))

    def _path(self, dtype) -> tuple:
        """``(plain, flush_chunk)`` of the compiled path: whether the run takes the plain
        step-by-step path (:func:`_plain_path`) and the steps per flush of its per-step
        gradients (:func:`_chunk_steps`); decided once per run (a recomputation keeps the
        run's)."""
        if self.flush_chunk is None:
            self.flush_chunk = _chunk_steps(self.net, self.batch, dtype.itemsize)
        if self.plain is None:
            self.plain = _plain_path(self.net, self.batch, chunk=self.flush_chunk,
                                     itemsize=dtype.itemsize)
        return self.plain, self.flush_chunk

    def forward(self) -> None:
        net, vals = self.net, self.values
        net._check_cell()
        batch = self.batch
        plan = _plan(net)
        dtype = next(iter(self.xs.values()))._data.dtype if self.xs else plan.dtype
        self._place_leaves(plan, dtype)
        if net.masked:
            for s in net._mask_slots:
                node = net.nodes[s]
                running = node.step < self.lengths  # the sequences still going at this step
                vals[s] = running.reshape(running.shape + (1,) * (len(node.shape) - 1))
        anomaly = _MODE.get().anomaly
        # the generic loop under detect_anomaly (to name the failing node), or to recompute a
        # run that took it: the compiled steps round differently (time batching)
        generic = anomaly or self.generic_forward
        if net._templates.ok and not generic:
            self.generic_forward = False
            swapped = None
            try:
                for out, ins, fwd, _v, kw, _s in net._shared_prog:
                    vals[out] = fwd(*[vals[i] for i in ins], **kw)
                if net._row_major and batch > 1:  # (see row_major_operands)
                    swapped = row_major_operands(net._row_major, vals)
                if net._broadcast and batch > 1:
                    swapped = broadcast_operands(net, vals, batch, swapped)
                plain, chunk = self._path(dtype)
                stream = False  # the input projection a chunk at a time, in the step loop
                if net._time_batch and not plain:
                    self.stacked = {}
                    xs = self.xs_data
                    no_views = net._tb_unviewed if self.keep == "needed" else ()
                    if not chunk:
                        time_batched_forward(net._time_batch, vals, xs, self.stacked,
                                             net._pool, no_views, _Freed)
                    elif self.keep == "needed" and \
                            len(net._tb_unread) == len(net._time_batch):
                        stream = True  # (no VJP reads them: the stacks need not stay)
                    else:
                        for t0 in range(0, net.steps, chunk):
                            time_batched_chunk(net._time_batch, vals, xs, t0,
                                               min(t0 + chunk, net.steps), net._pool,
                                               self.stacked, no_views, _Freed)
                fuse = batch * net._fuse_size <= _FUSE_ELEMENTS
                if self.keep == "needed":
                    # each step drops the values no VJP reads once it is done with them (and
                    # computes in place in them where every operand has the run's dtype)
                    steps, fr, late, outs, direct = self._lean_plan(plan, fuse, dtype, plain)
                    T = net.steps
                    for t, (fn, b, s_in) in enumerate(steps):
                        if stream and t % chunk == 0:
                            part = time_batched_chunk(net._time_batch, vals, xs, t,
                                                      min(t + chunk, T), net._pool, None,
                                                      no_views, _Freed)
                            self.stacked = {k: _Freed((T,) + v.shape[1:], v.dtype)
                                            for k, v in part.items()}
                            del part
                        if direct:
                            fn(vals, b, fr, outs, t, *s_in)
                        else:
                            fn(vals, b, fr, *s_in)
                        if t:
                            for s in late[t - 1]:
                                v = vals[s]
                                vals[s] = _Freed(v.shape, v.dtype)
                        if outs is not None and not direct:
                            outs = self._write_outputs(outs, t)
                    for s in late[-1]:
                        v = vals[s]
                        vals[s] = _Freed(v.shape, v.dtype)
                    if not plain:
                        for k in net._tb_unread:  # every step of it is freed: drop its stack
                            v = self.stacked[k]
                            self.stacked[k] = _Freed(v.shape, v.dtype)
                    if direct:  # (the steps computed each state into its row)
                        self.state_rows = self._pending_rows
                    self.lean_steps = True
                    return
                steps = forward_steps(net, fuse, False, False, plain=plain)
                outs = self._output_buffers()
                for t, (fn, b, s_in) in enumerate(steps):
                    fn(vals, b, *s_in)
                    if outs is not None:
                        outs = self._write_outputs(outs, t)
                return
            except UnrollGraphError:
                raise
            except Exception:  # find the failing node with the generic loop below
                pass
            finally:
                if swapped:
                    for s, v in swapped:
                        vals[s] = v
        self.generic_forward = True
        reference_forward(net, vals, anomaly, self.first_step, row_major=batch > 1)

    def _lean_plan(self, plan, fuse: bool, dtype, plain: bool = False) -> tuple:
        """What a lean forward pass runs: ``(steps, stand-ins, late frees, output buffers,
        direct)`` (see :func:`~unrollgraph.compile.forward_steps`, ``stand_ins``,
        ``late_frees``, :meth:`_output_buffers` and :meth:`_row_buffers`; ``direct``: the
        steps compute the outputs straight into the rows of the buffers). The choices are
        the same for every run with this batch size and dtype whose inputs and initial
        states all have the dtype: the last such answer is kept on the net's plan (the row
        buffers themselves are made per run)."""
        batch = self.batch
        simple = not self.states and len(self.xs) < 2
        # (the initial states made here and the one input have the run's dtype by definition:
        # whether the run has one dtype depends on the parameters and constants alone)
        one = plan.one_dtype.get(dtype) if simple else None
        if one is None:
            one = self._one_dtype(dtype)
        key = (batch, dtype, fuse, one, plain)
        kept = plan.lean  # (one tuple, read once: threads may be replacing it)
        if simple and kept is not None and kept[0] == key:
            _key, fr, buffered, direct, steps = kept
        else:
            net = self.net
            fr = stand_ins(net, batch, dtype)
            buffered = self._output_buffers() is not None
            direct = None
            if buffered and one:
                # the steps compute the outputs into their rows: no copy per step
                d = forward_steps(net, fuse, True, True, rows=True, plain=plain)
                if d is not None:
                    direct = (d, late_frees(net, d, plain))
            p = forward_steps(net, fuse, True, one, plain=plain)
            steps = (p, late_frees(net, p, plain))
            if simple:
                plan.lean = (key, fr, buffered, direct, steps)
        if direct is not None:
            rows = self._row_buffers(fr, dtype)
            if rows:
                return direct[0], fr, direct[1], rows, True
        return steps[0], fr, steps[1], [] if buffered else None, False

    def _output_buffers(self):
        """``[]`` when the outputs are large enough to be written step by step straight into
        their (T, B, ...) arrays (then the per-step values are views of those: the outputs
        are stored once, not once per step and once stacked); ``None`` when small (stacking
        them after the run costs less than a copy per step)."""
        net = self.net
        per_step = net.__dict__.get("_output_elems")
        if per_step is None:
            per_step = net._output_elems = sum(
                math.prod(net.nodes[slots[0]].shape[1:] or ())
                for slots in net._output_slots.values())
        if not per_step:
            return None
        return [] if per_step * self.batch * net.steps * 8 >= _OUTPUT_BUFFER_BYTES else None

    def _row_context(self) -> tuple:
        """What :meth:`_row_buffers` reads of the net: the net, its step template's first
        block, its batched nodes and its outputs' leading shapes (made once per net)."""
        net = self.net
        leads = net.__dict__.get("_output_leads")
        if leads is None:
            leads = net._output_leads = self._output_leads()
        return net, net._templates.blocks[0][0], net.graph._batched, leads

    def _row_buffers(self, fr, dtype):
        """The output arrays (T, B, ...) that steps computing into rows write (the run's
        float type, the shapes of the outputs' stand-ins), or None if an output has no
        batch shape to give."""
        net, base, batched, leads = self._row_context()
        vals = self.values
        outs = []
        state_rows = []
        for slots, init in zip(net._output_slots.values(), leads):
            if id(net.nodes[slots[0]]) not in batched:
                return None
            shape = tuple(fr[slots[0] - base].shape)
            v = vals[init] if init is not None else None
            if type(v) is np.ndarray and v.shape == shape and v.dtype == dtype:
                # an output that is a state: row 0 holds the initial state, so the states
                # h_0 .. h_{T-1} that the shared weights' gradients read are consecutive
                # rows (stacked without a copy, see schedule.stack)
                buf = take(net._pool, (net.steps + 1,) + shape, dtype)
                buf[0] = v
                vals[init] = buf[0]
                outs.append(buf[1:])
                state_rows.append((buf, (init,) + tuple(slots)))
            else:
                outs.append(take(net._pool, (net.steps,) + shape, dtype))
        self.outputs = outs
        self._pending_rows = tuple(state_rows)
        return outs

    def _output_leads(self) -> list:
        """Per output, the initial state's slot if the output at every step is the state
        the next step reads (an RNN's and an LSTM's h), else None."""
        net = self.net
        state_in = net._templates.state_in
        inits = set(net._init_slots.values())
        leads = []
        for slots in net._output_slots.values():
            lead = None
            for k in range(len(state_in[0])):
                if state_in[0][k] in inits and all(
                        state_in[t + 1][k] == slots[t] for t in range(len(slots) - 1)):
                    lead = state_in[0][k]
                    break
            leads.append(lead)
        return leads

    def _write_outputs(self, outs: list, t: int) -> list:
        """Copy step ``t``'s outputs into their arrays (made at step 0) and let the step's
        slots hold views of them (the step's own arrays are then free)."""
        vals = self.values
        net = self.net
        if t == 0:
            for slots in net._output_slots.values():
                v = vals[slots[0]]
                if type(v) is not np.ndarray:
                    return None  # (not an array: leave the outputs to be stacked)
                outs.append(take(net._pool, (net.steps,) + v.shape, v.dtype))
            self.outputs = outs
        for out, slots in zip(outs, net._output_slots.values()):
            s = slots[t]
            row = out[t]
            row[...] = vals[s]
            vals[s] = row
        return outs

    def _one_dtype(self, dtype) -> bool:
        """True if every array the run starts from (inputs, parameters, initial states and
        constants) has the float type ``dtype``: then an op's result has that type too, and
        computing it in place in an input's array gives the same bits."""
        net = self.net
        vals = self.values
        # the parameters' and constants' part is the same for every run with this dtype (a
        # tensor keeps its dtype: .data = ... converts), and cached on the net's plan
        static = _plan(net).one_dtype
        ok = static.get(dtype)
        if ok is None:
            ok = static[dtype] = all(getattr(vals[s], "dtype", None) == dtype for slots in (
                net._param_slots.values(), net._const_only) for s in slots)
        if not ok:
            return False
        for s in net._init_slots.values():
            if getattr(vals[s], "dtype", None) != dtype:
                return False
        for x in self.xs.values():
            if x._data.dtype != dtype:
                return False
        return True

    def backward(self, seeds: list) -> None:
        """Backpropagate the output gradients ``seeds`` (one per output, then per final
        state; ``None`` for none) through the unrolled graph."""
        self.seeds = seeds
        self._full = None
        self._state_grads = None
        self.grads = self._backward_pass(seeds)

    def _backward_pass(self, seeds: list, keep_states: bool = False) -> list:
        """The gradient of every slot the pass keeps, for the output gradients ``seeds``. A
        lean run keeps no intermediate gradient; ``keep_states``: except those of the states
        and outputs (the second pass :meth:`state_grads` makes)."""
        net = self.net
        needs = self._needs()
        plain = bool(self.plain)
        bprog, want, steps, shared = backward_program(net, needs, self.keep == "needed",
                                                      keep_states, plain)
        grads, owned = self._seeded(want, seeds)
        # (a forward pass that took the generic loop, under detect_anomaly say, made no
        # stacked time-batched values for the compiled backward pass to read)
        generic = _FLAGS.anomaly or self.generic_backward or self.generic_forward
        self.generic_backward = generic or steps is None
        if steps is not None and not generic:
            vals = self.values
            deferred = Filed()
            keep_views = self.keep == "all" or (net._kept_grads if keep_states else frozenset())
            # steps per flush of the shared-weight gradients and the time-batched nodes'
            # backward (0: one, at the end), chosen by the forward pass: a long sequence's
            # per-step parts are stacked a chunk of steps at a time
            chunk = self.flush_chunk or 0
            hi = net.steps  # steps hi.. are flushed
            t = net.steps
            if plain:  # nothing filed: each step adds into the shared weights' gradients
                for fn, b, s_in in steps:
                    fn(vals, grads, owned, deferred, b, *s_in)
                reference_backward(shared, vals, grads, owned, False, net)
                return grads
            # the parts a chunk's steps file go into rows of one array per producer
            row_keys = filed_rows(net, steps)
            first = net.steps - len(steps)  # (truncation: the steps before are cut)
            if row_keys:
                self._new_rows(deferred, row_keys, t - max(first, (t - 1) // chunk * chunk
                                                           if chunk else 0))
            for fn, b, s_in in steps:
                fn(vals, grads, owned, deferred, b, *s_in)
                t -= 1
                if chunk and t % chunk == 0:
                    self._flush(deferred, grads, owned, want, keep_views, t, hi)
                    hi = t
                    if row_keys and t > first:
                        self._new_rows(deferred, row_keys, t - max(first, t - chunk))
            if not chunk:
                stacks: dict = {}
                self._seed_state_rows(stacks, 0, net.steps)
                post = flush_after_steps(net, tuple(deferred), shared)
                if post is not None:  # (the same calls, written out)
                    post(deferred, vals, grads, owned, _acc, stacks, net._pool, self.xs_data,
                         self.stacked, want, keep_views)
                    return grads
                net._templates.flush(deferred, vals, grads, owned, _acc, stacks, net._pool)
                if net._time_batch:
                    time_batched_backward(net._time_batch, vals, self.xs_data, self.stacked,
                                          grads, owned, want, net._input_slots, _acc,
                                          keep_views, stacks, net._pool)
                del stacks
            elif hi:
                self._flush(deferred, grads, owned, want, keep_views, 0, hi)
            reference_backward(shared, vals, grads, owned, False, net)
        else:
            reference_backward(bprog, self.values, grads, owned, _FLAGS.anomaly, net,
                               self.first_step)
        return grads

    def _new_rows(self, deferred, keys, n) -> None:
        """Row buffers of ``n`` steps for the producers ``keys`` (see
        :class:`~unrollgraph.schedule.GradRows`): the next chunk's."""
        rows = deferred.rows
        pool = self.net._pool
        for k in keys:
            rows[k] = GradRows(n, pool)

    def _flush(self, deferred, grads, owned, want, keep_views, t0, t1) -> None:
        """The shared-weight gradients and the time-batched nodes' backward for the steps
        ``t0 .. t1-1`` (one chunk of a long sequence), each step's parts stacked once."""
        net = self.net
        vals = self.values
        stacks: dict = {}
        self._seed_state_rows(stacks, t0, t1)
        net._templates.flush(deferred, vals, grads, owned, _acc, stacks, net._pool)
        for parts in deferred.values():
            parts.clear()
        if net._time_batch:
            stacked = {k: v[t0:t1] if type(v) is np.ndarray
                       else _Freed((t1 - t0,) + tuple(v.shape[1:]), v.dtype)
                       for k, v in self.stacked.items()}
            time_batched_backward(
                chunk_of(net._time_batch, t0, t1), vals,
                {k: x[t0:t1] for k, x in self.xs_data.items()}, stacked, grads, owned, want,
                {k: s[t0:t1] for k, s in net._input_slots.items()}, _acc, keep_views, stacks,
                net._pool)

    def _seed_state_rows(self, stacks, t0, t1) -> None:
        """Tell a flush's stack cache (see :func:`~unrollgraph.schedule.stack_once`) that
        the states entering steps ``t0 .. t1-1`` (the values a shared weight's gradient
        reads, ``h_{t-1}`` for ``W_hh``), where the compiled steps computed them into the
        rows of one array, are the rows ``t0 .. t1-1`` of it: the stack is then a read-only
        view found by the arrays' identities, instead of a check of each row's address
        (``schedule._rows_of_one_array``, the same view). Those slots hold the very row
        arrays the steps computed into (a state is kept; nothing else is put in its slot
        during a run), so arrays filed under the same identities are those rows."""
        if t1 - t0 < 2:
            return
        vals = self.values
        for buf, slots in self.state_rows:
            rows = [vals[s] for s in slots[t0:t1]]
            if all(type(r) is np.ndarray and r.base is buf for r in rows):
                out = buf[t0:t1]
                out.flags.writeable = False
                stacks[tuple(map(id, rows))] = out
        # the states call() copied into one array (see _outputs_read_only): the rows of
        # that copy, filed under the identities of the very arrays copied (kept alive by
        # the run, so no other array can take them: a slot that held another array by the
        # flush files another key; no step writes into a state)
        for joined, arrays in self.joined_states:
            stacks[tuple(map(id, arrays[t0:t1]))] = joined[t0:t1]

    def _seeded(self, want, seeds=None) -> tuple:
        """Fresh gradient and ownership lists holding the output gradients ``seeds``
        (``self.seeds`` if None)."""
        net = self.net
        seeds = self.seeds if seeds is None else seeds
        n = len(net.nodes)
        grads: list = [None] * n
        owned = [False] * n
        plan = _plan(net)
        outputs = plan.outputs
        n_out = len(outputs)
        for k, g in enumerate(seeds):
            if g is None:
                continue
            if k < n_out:
                # several outputs may be one node (two names for it, or ``prev = h`` and
                # ``y = h_next``, one step apart): their gradients add up
                for s, gt in zip(outputs[k][1], g):  # (gt: g[t], step t's gradient)
                    if want[s]:
                        if grads[s] is None:
                            grads[s] = gt
                        else:
                            _acc(grads, owned, s, gt)
            else:
                s = plan.finals[k - n_out]
                if want[s]:
                    _acc(grads, owned, s, g)
        return grads, owned

    def _needs(self) -> tuple:
        """The slots whose gradients the backward pass must reach: those of the parameters,
        inputs and initial states that require grad now (cached on the net's plan by which
        of them do)."""
        net = self.net
        net._check_cell()
        plan = _plan(net)
        xs, states = self.xs, self.states
        key = (tuple([p._requires_grad for _s, p in plan.params]),
               tuple([xs[k]._requires_grad for k in net._input_slots]) if len(xs) != 1
               else (next(iter(xs.values()))._requires_grad,),
               tuple([(k, isinstance(s, Tensor) and s._requires_grad)
                      for k, s in states.items()]) if states else ())
        needs = plan.needs.get(key)
        if needs is None:
            needs = [s for (s, p), rg in zip(plan.params, key[0]) if rg]
            for slots, rg in zip(net._input_slots.values(), key[1]):
                if rg:
                    needs += slots
            for k, rg in key[2]:
                if rg:
                    needs.append(net._init_slots[k])
            needs = plan.needs[key] = tuple(sorted(needs))
        return needs

    def leaf_grads(self, seeds: list) -> list:
        """Gradients for ``self.leaves`` (xs, params, given states), computed once per seed."""
        kept = self._input_grads
        if kept is not None and kept[0] is seeds:
            return kept[1]
        self.backward(seeds)
        net, grads = self.net, self.grads
        out = []
        for slot, t in zip(self.leaf_slots or _leaf_slots(net, self.leaf_kinds), self.leaves):
            if not t._requires_grad:
                out.append(None)
            elif type(slot) is int:  # a parameter's or an initial state's slot
                out.append(grads[slot])
            else:  # an input's name: its per-step gradients, stacked
                zero = None
                per = []
                for s in net._input_slots[slot]:
                    g = grads[s]
                    if g is None:
                        if zero is None:
                            zero = np.zeros(t.shape[1:], dtype=t.dtype)
                        g = zero
                    per.append(g)
                out.append(np.stack(per))
        self._input_grads = (seeds, out)
        return out

    # -- inspection ------------------------------------------------------------------------------
    def state_grads(self, name: str | None = None) -> np.ndarray | dict:
        """dL/dh_t for every step: an array (T, B, ...), where h_t is the state after step t.

        The gradient is the total one (through every later step and every output), as used to
        study vanishing and exploding gradients. Zeros where no gradient reaches (truncation).
        With ``lengths=``, a sequence's rows up to its length are what running it alone gives;
        past its length the state is kept unchanged, and its gradient there is the final
        state's, passed back unchanged.

        A lean run (``keep="needed"``, the default) does not keep these gradients as it
        backpropagates (they would double the memory BPTT needs): the first call makes a
        second backward pass over the values the run kept, with the same output gradients,
        and keeps its answer for later calls.

        Parameters
        ----------
        name : str, optional
            The state's name. Left out: the one state's array for a cell with one state, and
            a dict state name -> array for a cell with several (an LSTM's ``h`` and ``c``).

        Returns
        -------
        numpy.ndarray or dict
            Shape ``(T, B) + state shape``; a dict of such arrays when ``name`` is left out
            and the cell has several states.

        Raises
        ------
        CellError
            For an unknown state name.
        UnrollGraphError
            Before any backward pass of this run; and for a lean run's first call once a
            parameter, input or initial state has changed since the run (an optimizer step:
            ask before it, or unroll with ``keep="all"``).

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=4)
        >>> out, h = net(np.ones((4, 2, 2)), lengths=[4, 2])
        >>> out.sum().backward()
        >>> g = net.last_run.state_grads()
        >>> g.shape, bool(np.all(g[2:, 1] == 0))    # nothing reads sequence 1 after step 1
        ((4, 2, 3), True)
        >>> lstm = ug.unroll(ug.nn.LSTMCell(2, 3, seed=0), steps=4)
        >>> out, state = lstm(np.ones((4, 1, 2)))
        >>> out.sum().backward()
        >>> sorted(lstm.last_run.state_grads())           # several states: one array each
        ['c', 'h']
        """
        self._need_backward()
        if name is None and len(self.net.cell.states) > 1:
            return {s: self.state_grads(s) for s in self.net.cell.states}
        name = self._state_name(name)
        net = self.net
        grads, vals = self._kept_state_grads(), self.values
        slots = net._state_slots[name]
        pre = net._state_pre_slots[name]
        out = np.zeros((net.steps,) + tuple(vals[slots[-1]].shape), vals[slots[-1]].dtype)
        for t, (s, p) in enumerate(zip(slots, pre)):
            if p != s:  # masked: the value the step computed where it ran, else the kept one
                mask = vals[net._slot[id(net.nodes[s].inputs[0])]]
                if grads[p] is not None:
                    out[t] = np.where(mask, grads[p], 0.0)
                if grads[s] is not None:
                    out[t] += np.where(mask, 0.0, grads[s])
            elif grads[s] is not None:
                out[t] = grads[s]
        return out

    def _kept_state_grads(self) -> list:
        """Gradients holding every state's and output's: the run's own, or for a lean run
        (whose backward pass keeps none: they would double what BPTT keeps) those of a second
        backward pass over the run's kept values, made once on request with the same output
        gradients (the values it reads are the run's own, so it needs no recomputation)."""
        if self.keep == "all" or self.generic_backward:
            return self.grads
        if self._state_grads is None:
            # (it reads the parameters: refuse once they have changed, as full() does)
            self._check_unchanged("state_grads")
            self._state_grads = self._backward_pass(self.seeds, keep_states=True)
        return self._state_grads

    def step_contributions(self, param: str) -> np.ndarray:
        """Per-step parts of a shared parameter's gradient: an array (T, *shape) whose sum over
        axis 0 equals the parameter's gradient from this run (to rounding).

        Computed by one more backward pass that records what each step sends to the shared
        nodes, then pushes each step's part through the shared nodes (``W.T``...) separately.
        The cost is linear in T: one pass over the unrolled graph, then per step one pass
        over the (few) shared nodes. Steps that send nothing (cut by truncation, or a
        parameter the cell declares but never uses) have zero parts.

        Parameters
        ----------
        param : str
            A parameter name of the cell.

        Returns
        -------
        numpy.ndarray
            Shape ``(T,) + parameter shape``, the parameter's dtype.

        Raises
        ------
        CellError
            If the cell has no parameter ``param``.
        UnrollGraphError
            Before any backward pass of this run.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> cell = ug.nn.RNNCell(2, 3, seed=0)
        >>> net = ug.unroll(cell, steps=4)
        >>> out, h = net(np.ones((4, 1, 2)))
        >>> out.sum().backward()
        >>> parts = net.last_run.step_contributions("weight_hh")
        >>> parts.shape, bool(np.allclose(parts.sum(axis=0), cell.weight_hh.grad))
        ((4, 3, 3), True)
        """
        self._need_backward()
        self._check_unchanged("step_contributions")
        net = self.net
        params = net.cell._params
        if param not in params:
            raise CellError(
                f"cell {net.cell.name!r} has no parameter {param!r}; parameters are "
                f"{list(params)}"
            )
        pslot = net._param_slots.get(param)
        if pslot is None:  # declared, read by nothing: no step contributes
            p = params[param].data
            return np.zeros((net.steps,) + p.shape, dtype=p.dtype)
        bprog, want, _steps, _shared = backward_program(net, self._needs(), self.keep == "needed")
        grads, owned = self._seeded(want)
        vals = self.values
        per_step: dict = {}  # step -> {shared slot: what the step sends it}
        shared_entries = []
        for e in bprog:
            out, ins, fns, kw, step = e
            if step is None:
                shared_entries.append(e)
                continue
            g = grads[out]
            if g is None:
                continue
            grads[out] = None  # used: free it as we go
            args = [vals[i] for i in ins]
            for i, f in fns:
                gi = f(g, vals[out], *args, **kw)
                if gi is None:
                    continue
                if net.nodes[i].step is None:
                    d = per_step.setdefault(step, {})
                    d[i] = gi if i not in d else d[i] + gi
                else:
                    _acc(grads, owned, i, gi)
        value = vals[pslot]
        result = np.zeros((net.steps,) + value.shape, dtype=value.dtype)
        for t, part in per_step.items():
            g2 = dict(part)  # only the shared slots: the work per step is the shared part
            for out, ins, fns, kw, _step in shared_entries:
                g = g2.get(out)
                if g is None:
                    continue
                args = [vals[i] for i in ins]
                for i, f in fns:
                    gi = f(g, vals[out], *args, **kw)
                    if gi is not None:
                        prev = g2.get(i)
                        g2[i] = gi if prev is None else prev + gi
            if pslot in g2:
                result[t] = g2[pslot]
        return result

    def _need_backward(self) -> None:
        if self.grads is None:
            raise UnrollGraphError(
                "no gradients yet: call loss.backward() on a loss computed from this run's "
                "outputs first"
            )

    def _state_name(self, name):
        names = list(self.net.cell.states)
        if name is None:
            if len(names) != 1:
                raise CellError(f"the cell has states {names}; name the one you want")
            return names[0]
        if name not in names:
            raise CellError(f"the cell has no state {name!r}; states are {names}")
        return name


# a run whose states take more than this (all steps) works on its time-batched values and
# per-step gradient parts a chunk of steps at a time, in _CHUNKS chunks (or more: at most
# _FLUSH_CHUNK_BYTES of states per chunk)
_FLUSH_ALL_BYTES = 1 << 20
_FLUSH_CHUNK_BYTES = 1 << 22
_CHUNKS = 32
_MIN_CHUNK = 4
# a chunk of a shorter sequence has at least _MIN_ROWS rows (steps times batch) in its
# products, as long as that is at most a _FEW_CHUNKS-th of the steps; measured with one
# process timing both in turn (thread CPU time, one BLAS thread, a shared machine): chunks
# of 1,024 rows instead of 512 took 1.3 % off the Elman RNN's run at B=16, H=128, T=1,000
# (half the flushes), in two runs of 12 rounds. (Fewer chunks of a short sequence gain too,
# 3 to 5 % at T=100, but then its chunk's arrays take the memory that a run of B=16,
# H=128, T=100 has left under 1.5 times what BPTT must keep.)
_MIN_ROWS = 1024
_FEW_CHUNKS = 12


# a net of at most this many steps takes the plain path (see _plain_path); measured with
# one process timing both paths in turn (thread CPU time, B=1, H=8 and B=32, H=64): the
# plain run costs 0.35-0.75 of the batched one at 1-4 steps, 0.85-0.95 at 6-8, 1.0-1.35 at
# 10 and more (the crossover is a count of calls: about the same at both sizes)
_PLAIN_STEPS = 6
# a gated cell's step does at least this many ops per part it adds into shared weights; its
# nets take the plain path further (see _plain_path) while a step's states take at most
# _PLAIN_STEP_BYTES. Measured as above (the plain run over the batched one): LSTM 0.92-0.96
# and GRU 0.80-0.99 at B=1, H=8, T=10; at T=50 and B=32 (flushes of 5 steps) LSTM 0.88
# (H=64) and 0.95 (H=128), GRU 0.93 at B=16, H=128, T=100 (flushes of 4 steps); but
# 1.13-1.31 for an LSTM with flushes of 9 steps or more (B=16, H=128, T=100; B=32, H=256,
# T=100; T=1,000), 1.18 for a GRU at B=32, H=256, T=100 (64 KiB of states a step),
# 1.09-1.15 for an LSTM flushed once at T=50-100; and an Elman cell's plain run costs 1.07
# of its batched one at B=1, T=10 and 1.08 at B=32, H=64, T=50
_GATED_OPS = 3
_PLAIN_STEP_BYTES = 1 << 15


_STACKED_OUTPUTS = Run.stacked_outputs

def _reached(run) -> list:
    """Per slot, whether the reference walk (:func:`reference_backward` over the whole
    backward program) puts a gradient there for the run's seeds: the slot is seeded (an
    output's step with a gradient given, a final state with one) or is an input, with a
    derivative, of a node that gets one, in a step truncation does not cut, on a path to
    something needing a gradient. A fast path may file zeros where none reaches (the
    time-batched input projection's backward computes every step's row; a checkpointed run
    skips the segments the cut leaves out): :meth:`Run.grad` answers None there, as the
    reference does. A walk over the program, made once per net, needs and seeds given
    (cached on the net as its backward programs are)."""
    net = run.net
    needs = run._needs()
    seeds = run.seeds or ()
    key = (needs, tuple([g is not None for g in seeds]))
    cache = net.__dict__.setdefault("_reached", {})
    got = cache.get(key)
    if got is not None:
        return got
    n = len(net.nodes)
    want = [False] * n
    for i in needs:
        want[i] = True
    first = 0 if net.truncate is None else net.steps - net.truncate
    prog = net._prog
    for out, ins, _fwd, vjps, _kw, step in prog:  # (as compile.backward_program finds it)
        if step is not None and step < first:
            continue
        for i, f in zip(ins, vjps):
            if f is not None and want[i]:
                want[out] = True
                break
    reached = [False] * n
    slots = [sl for _k, sl in net._output_slots.items()]
    finals = [sl[-1] for sl in net._state_slots.values()]
    for k, g in enumerate(seeds):
        if g is not None:
            for s in (slots[k] if k < len(slots) else (finals[k - len(slots)],)):
                reached[s] = want[s]
    for out, ins, _fwd, vjps, _kw, _step in reversed(prog):
        if reached[out]:  # (implies want[out]: a cut step's nodes are never reached)
            for i, f in zip(ins, vjps):
                if f is not None and want[i]:
                    reached[i] = True
    cache[key] = reached
    return reached


def _plain_path(net, batch: int, chunk: int = 0, itemsize: int = 8) -> bool:
    """Whether a run of ``net`` takes the plain path: each step computes its input
    projection itself and adds its parts of the shared weights' gradients into them in
    place (:func:`~unrollgraph.compile.plain_templates`), instead of the time-batched
    projection and a flush of stacked parts after the loop (or after each ``chunk`` of
    steps, :func:`_chunk_steps`).

    Those batching devices replace about four calls per step and weight by a fixed cost per
    flush (stacking the per-step arrays, one product or sum each), which pays for itself from
    about eight steps a flush on: nets of at most ``_PLAIN_STEPS`` steps take the plain path.
    A gated cell's step (an LSTM's, a GRU's: at least ``_GATED_OPS`` times as many ops as
    parts it adds into shared weights) does so much more besides that the plain path's
    per-step parts cost it relatively less: its nets take the plain path up to twice as
    many steps, and also when each flush would cover fewer than ``_PLAIN_STEPS`` steps (a
    chunked run of a modest batch), as long as a step's states are small (at most
    ``_PLAIN_STEP_BYTES``: larger per-step products gain from being batched over a chunk).
    The choice depends on the net, the batch size and the dtype, which a recomputation for
    :meth:`Run.full` or a checkpointed segment shares (and takes over: ``Run.plain``), so it
    reproduces the run's bits."""
    T = net.steps
    if T > _PLAIN_STEPS:
        if T > 2 * _PLAIN_STEPS and not 0 < chunk < _PLAIN_STEPS:
            return False
        if not _gated(net) or batch * itemsize * _state_elems(net) > _PLAIN_STEP_BYTES:
            return False
    return plain_templates(net) is not None


def _gated(net) -> bool:
    """Whether the steps of ``net`` do at least ``_GATED_OPS`` times as many ops as they add
    parts into shared weights (an Elman cell's step: 6 ops for its 4 parts, ``x W_ihᵀ``,
    ``+ b_ih``, ``h W_hhᵀ``, ``+ b_hh``; an LSTM's 18; a GRU's 21)."""
    gated = net.__dict__.get("_gated")
    if gated is None:
        tpl = plain_templates(net)
        gated = False
        if tpl is not None and tpl.step_entries and tpl.step_entries[-1]:
            shared = frozenset(net._param_slots.values()) | {s for s, *_ in net._shared_prog}
            step = tpl.step_entries[-1]
            parts = sum(1 for e in step for i in e[1] if i in shared)
            gated = len(step) >= _GATED_OPS * max(parts, 1)
        net._gated = gated
    return gated


def _state_elems(net) -> int:
    """Elements of a step's states per batch row (an LSTM's h and c: 2 H)."""
    elems = net.__dict__.get("_state_elems")
    if elems is None:
        elems = net._state_elems = sum(math.prod(st.shape[1:])
                                       for st in net.cell.states.values())
    return elems


def _chunk_steps(net, batch: int, itemsize: int) -> int:
    """Steps per chunk of a run (0: none; all steps at once, the fastest for short runs).

    What BPTT must keep grows with T: the states. The stacked arrays that make a run fast
    (the input projection of all steps, the per-step parts of the shared weights'
    gradients) would each add that much again, so on a long sequence they are made a chunk
    of steps at a time: a sixteenth of the states at most, and at most
    ``_FLUSH_CHUNK_BYTES`` of them (a few large products instead of one lose nothing).
    A chunk has at least ``_MIN_CHUNK`` steps within that byte budget: a flush has a fixed
    cost (the accumulation of each weight's gradient, the calls), which chunks of one to
    three steps of a short sequence pay many times over (T < 128 only: longer ones have
    T/32 >= 4 steps a chunk). For the same reason a chunk of a short sequence has at least
    ``_MIN_ROWS`` rows (a weight's gradient is then a product over 1,024 rows or more, not
    a few dozen; fewer flushes), up to a twelfth of the steps: the steps compute their
    parts straight into one array per chunk, which reuses the input projection's
    (``GradRows``), so a chunk costs about one state per step in all (an LSTM's: its four
    gates, two states' worth). A net whose time-batched slices stack gradients
    of their own (a GRU's input gates) keeps the smaller chunks.
    The chunks depend only on the sizes, so every run of a net, lean or not, computes the
    same numbers in the same order."""
    per_step = batch * itemsize * _state_elems(net)
    T = net.steps
    if not per_step or per_step * T <= _FLUSH_ALL_BYTES:
        return 0
    steps = max(-(-T // _CHUNKS), _MIN_CHUNK)
    if not net._tb_sliced:
        steps = max(steps, min(-(-T // _FEW_CHUNKS), -(-_MIN_ROWS // batch)))
    return max(1, min(steps, _FLUSH_CHUNK_BYTES // per_step))


class NetNames:
    """A net's node names outside a run: the lookup :meth:`Run.value` makes (display names
    and the diagrams' names, see :meth:`Run._names`), for :meth:`Unrolled.slot`."""

    __slots__ = ("net",)
    _owner = "net"
    _names = Run._names
    _slot_of = Run._slot_of

    def __init__(self, net):
        self.net = net


def _acc(grads, owned, s, g) -> None:
    """Add ``g`` into slot ``s``: in place only into a buffer allocated here (``owned``), or
    one that nothing else can see (:func:`~unrollgraph.schedule.alone`: a VJP's fresh result)."""
    prev = grads[s]
    if prev is None:
        grads[s] = g
    elif owned[s] and type(prev) is np.ndarray:
        prev += g
    else:
        if alone(prev, g):
            prev += g  # (a weight's first chunk of steps: no third array beside the two)
        else:
            grads[s] = prev + g
        owned[s] = True


def _label(node, first: int = 0, net=None) -> str:
    """The name the printout of the net (``print(net)``) gives ``node``, for error messages;
    ``node.label()`` without ``net``. A segment of a checkpointed run
    (:mod:`~unrollgraph.checkpoint`) starting at step ``first`` of the whole run names its
    nodes as the whole net's printout names them: its step j is step ``first + j``, and the
    state it starts from is the state the previous step handed on (``h_next@4``), not the
    net's initial state."""
    if net is None:
        if not first or node.step is None:
            return node.label()
        return f"{node.name if node.name else f'<{node.op}>'}@{node.step + first}"
    whole = getattr(net, "_whole", None)
    if whole is not None and first:
        if node.role == "init":  # the state handed on by step first - 1
            s = next(k for k, n in net.init_nodes.items() if n is node)
            node = whole.nodes[whole._state_slots[s][first - 1]]
        else:
            s = net.slot(node)
            if node.step is not None:  # the same layout as the whole net's, steps later
                shared = sum(1 for n in whole.nodes if n.step is None)
                s += first * ((len(whole.nodes) - shared) // whole.steps)
            node = whole.nodes[s]
        net = whole
    return net.graph.display_name(node)


def reference_forward(net, vals: list, anomaly: bool = False, first: int = 0, *,
                      row_major: bool = False) -> None:
    """The reference executor's forward pass: every op node in schedule order, one registry
    forward each, writing ``vals`` (indexed by slot, the leaves already in place). With
    ``anomaly`` each value is checked for NaN and inf. A failure is a
    :class:`~unrollgraph.OpError` naming the op, the node and its inputs as the net's
    printout names them, their shapes and the step, chained to the op's own exception; the
    steps are counted from ``first`` (a checkpointed run's segment passes its first step).
    ``row_major``: the steps multiply by row-major copies of the transposed weights, as the
    compiled steps of a run of more than one sequence do (:func:`row_major_operands`)."""
    e = None
    row_major = net._row_major if row_major else ()
    swapped = None
    try:
        if row_major:
            swapped = row_major_operands(row_major, vals)  # (the parameters among them)
        for e in net._prog:
            out, ins, fwd, _v, kw, _s = e
            vals[out] = fwd(*[vals[i] for i in ins], **kw)
            if anomaly:
                _check_finite(vals[out], lambda out=out: "forward of "
                              f"{_label(net.nodes[out], first, net)}", ())
            if row_major and out in row_major:
                swapped = (swapped or []) + (row_major_operands((out,), vals) or [])
    except UnrollGraphError:
        raise
    except Exception as exc:
        node = net.nodes[e[0]]
        shapes = ", ".join(f"{_label(n, first, net)} {np.shape(vals[net.slot(n)])}"
                           for n in node.inputs)
        raise op_error(
            f"unrolled cell {net.cell.name!r}, step {node.step + first}: {node.op} "
            f"({_label(node, first, net)}) failed on {shapes}", exc, node.op
        ) from exc
    finally:
        if swapped:
            for s, v in swapped:
                vals[s] = v


def broadcast_operands(net, vals, batch: int, swapped: list | None) -> list | None:
    """Give each shared value that the steps only add into a batched sum
    (``net._broadcast``, see :func:`~unrollgraph.compile._broadcast_operands`: a bias
    such as ``b_hh``) a copy broadcast to the batch, ``(batch, ...)``, in ``vals``, and add
    ``(slot, the value it held)`` to ``swapped`` for the caller to put back once the steps
    of the forward pass are done (the backward pass reads the value itself).

    numpy adds a (B, H) array to another about twice as fast as it broadcasts an (H,) one
    over B rows (B = 16, H = 128: 1.9 against 4.0 µs), and each sum is the same, number
    for number: the steps give the same bits.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=2)
    >>> vals = [None] * len(net.nodes)
    >>> (s, _reader), = net._broadcast
    >>> vals[s] = np.zeros(3)
    >>> kept = broadcast_operands(net, vals, 4, None)
    >>> vals[s].shape, kept[0][1].shape
    ((4, 3), (3,))
    """
    nodes = net.nodes
    for s, reader in net._broadcast:
        v = vals[s]
        if type(v) is not np.ndarray:
            continue
        shape = (batch,) + tuple(nodes[reader].shape[1:])
        if v.shape != shape[len(shape) - v.ndim:]:
            continue
        full = np.empty(shape, v.dtype)
        full[...] = v
        if swapped is None:
            swapped = []
        swapped.append((s, v))
        vals[s] = full
    return swapped


def row_major_operands(slots, vals) -> list | None:
    """Give each of ``slots`` (:func:`~unrollgraph.compile._row_major_operands`: shared
    values that the steps read only as the right operand of a product) that holds a
    column-major matrix, such as the view ``W.T``, a row-major copy of it in ``vals``, and
    return ``[(slot, the value it held), ...]`` (None if none is), for the caller to put
    back once the steps of the forward pass are done.

    BLAS multiplies ``h @ W.T`` with a row-major copy of ``W.T`` markedly faster than with
    the view at the sizes of a recurrent step (an Elman step of batch 16 and 128 units:
    about two thirds of the time), and the products are the same up to rounding (BLAS may
    sum in another order for the other layout). Both executors (the compiled steps and
    :func:`reference_forward`) multiply by the copy in a run of more than one sequence, so
    they agree bit for bit; a run of one sequence (a product of one row, which gains
    nothing) keeps the view. The backward pass reads the view again
    (docs/architecture.md).

    Examples
    --------
    >>> w = np.arange(6.0).reshape(2, 3)
    >>> vals = [w.T]
    >>> kept = row_major_operands((0,), vals)
    >>> vals[0].flags.c_contiguous, kept[0][1] is not vals[0], np.array_equal(vals[0], w.T)
    (True, True, True)
    """
    swapped = None
    for s in slots:
        v = vals[s]
        if type(v) is np.ndarray and v.ndim == 2 and not v.flags.c_contiguous:
            if swapped is None:
                swapped = []
            swapped.append((s, v))
            vals[s] = np.ascontiguousarray(v)
    return swapped


def reference_backward(bprog, vals, grads, owned, anomaly, net, first: int = 0) -> None:
    """The reference executor's backward pass: the generic reverse walk over a backward
    program (:func:`~unrollgraph.compile.backward_program`), one VJP per input, adding into
    ``grads`` with :func:`_acc`. The fast paths (step templates, time batching, deferred
    shared-weight gradients) are tested against it. An anomaly names its node's step counted
    from ``first``, as :func:`reference_forward` does."""
    for out, ins, fns, kw, _step in bprog:
        g = grads[out]
        if g is None:
            continue
        ans = vals[out]
        args = [vals[i] for i in ins]
        for i, f in fns:
            gi = f(g, ans, *args, **kw)
            if gi is None:
                continue
            if anomaly:
                _check_finite(gi, lambda i=i: "backward into "
                              f"{_label(net.nodes[i], first, net)}", ())
            _acc(grads, owned, i, gi)


def _unrolled_vjp(g, ans, *inputs, index=0, _run=None, steps=None):
    return _run.leaf_grads(g)[index]


defop(
    "unrolled",
    lambda *inputs, _run=None, steps=None: None,
    [_unrolled_vjp],
    variadic=True,
    doc="a call of an unrolled net; its gradient is backpropagation through time",
)


# outputs of at least this many bytes (all steps) are written step by step into their arrays
_OUTPUT_BUFFER_BYTES = 1 << 17
_FUSE_ELEMENTS = 8192  # fuse sliced elementwise ops up to this batch x value size (measured)


_SUBSCRIPT_DIGITS = "₀₁₂₃₄₅₆₇₈₉"
_FROM_SUBSCRIPT = str.maketrans(_SUBSCRIPT_DIGITS, "0123456789")


def _subscript(t: int) -> str:
    """``t`` in Unicode subscript digits (``12`` -> ``₁₂``), as a diagram's text shows a step."""
    return str(t).translate(str.maketrans("0123456789", _SUBSCRIPT_DIGITS))


def _subscripts_written_out(name: str) -> tuple[str, str] | None:
    """``(base, step)`` of a name written with its step as a subscript, as the diagrams
    draw it: ``h₁`` and ``h<sub>1</sub>`` -> ``("h", "1")``, ``hᵢₙᵢₜ`` -> ``("h", "init")``;
    ``None`` for any other name."""
    if name.endswith("</sub>") and "<sub>" in name:
        base, _, sub = name[:-len("</sub>")].rpartition("<sub>")
        return (base, sub) if base and sub else None
    if name.endswith("ᵢₙᵢₜ") and len(name) > 4:
        return name[:-4], "init"
    k = len(name)
    while k and name[k - 1] in _SUBSCRIPT_DIGITS:
        k -= 1
    if 0 < k < len(name):
        return name[:k], name[k:].translate(_FROM_SUBSCRIPT)
    return None


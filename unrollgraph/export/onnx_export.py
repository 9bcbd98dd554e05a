"""Export a recurrent cell to ONNX: the recurrence as a ``Scan``, or unrolled over T steps.

:func:`to_onnx` works from the folded cell (its ops, parameters, states and delay edges). Each
op of the cell is lowered by the ``onnx`` rule the op registry holds beside its numpy forward
(:func:`unrollgraph.ops.defop`, :func:`unrollgraph.ops.deflower`); an op without one raises
:class:`~unrollgraph.errors.LoweringError` naming the op and the node.

The model
---------
* **opset 18** of the default ONNX domain, IR version 8. Opset 18 is the first where every
  reduction (``ReduceSum``, ``ReduceMean``, ``ReduceMax``) takes its axes as an input, so one
  rule covers numpy's ``axis=None``, an int and a tuple; it is read by onnxruntime 1.14 and
  later.
* ``steps=None``: the cell's body is the body of one ONNX ``Scan``: its state variables are the
  cell's states, its scan inputs the per-step inputs (scanned along axis 0) and its scan
  outputs the per-step outputs (stacked along axis 0). The model runs any number of steps.
  A cell without inputs has nothing to scan: its body is the body of one ONNX ``Loop`` run as
  many times as the model's int64 input ``steps`` (a scalar, first) says, its step counter the
  Loop's iteration number (see :meth:`_Exporter.loop_outputs` for how its outputs are stacked).
  ``steps=T``: the body is copied T times (a fully unrolled graph of fixed length T), as
  :func:`unrollgraph.unroll` does.
* Computations of parameters alone (``W.T``) are done once, before the recurrence, as the
  unrolled net shares them; the ``Scan`` body reads them (and the parameters) from the outer
  graph.
* Inputs, in order: each cell input, shaped ``(steps, batch, ...)``; then each state's initial
  value, shaped ``(batch, ...)``. A state's input is optional: its default (an initializer of
  the same name, shaped ``(1, ...)``) holds the state's declared ``init`` or zeros, and is
  broadcast over the batch, as ``net(xs)`` does without ``state=``. onnxruntime lists these
  inputs with ``InferenceSession.get_overridable_initializers()``. With ``lengths=True``, last,
  the optional int64 input ``lengths`` (``(batch,)``; by default no sequence ends): as
  ``net(xs, lengths=...)``, a sequence's state stays and its outputs are 0 from its length on.
* Outputs, in order: each cell output stacked over steps, ``(steps, batch, ...)``; then each
  state's final value, ``(batch, ...)``: what ``net(xs, state)`` returns.
* Parameters are initializers named exactly as in ``cell.parameters()``, each of its own dtype.
* The cell's equations (``str(cell)``) are the graph's doc string, which Netron shows.

Names
-----
Inputs, states, parameters and outputs keep the cell's names exactly (any string the cell
accepts: spaces, quotes, markup characters, newlines, any script). The final value of state
``s`` is the output ``s + "_final"`` (with ``"_final"`` added again while that name is taken by
another member of the cell). Values inside the graph are named as in the cell's printout and
the unrolled diagrams: ``h_next@t`` in the ``Scan`` body (step ``t``), ``h_next@3`` in an
unrolled graph, ``x@t`` and ``h@t-1`` for the body's per-step input and previous state.

ONNX's IR text asks for C identifiers as names, but neither ``onnx.checker`` nor onnxruntime
nor Netron require it (PyTorch's own exporter writes names such as ``/rnn/Add_output_0``).
For a consumer that does, ``identifiers=True`` maps every name to a C identifier (characters
other than ASCII letters, digits and ``_`` become ``_``; a leading digit gets a ``_`` before
it; a name already taken gets ``_2``, ``_3``...). Either way the model's metadata entry
``unrollgraph.names`` (JSON) maps each kind of member and each cell name to its name in the
model, so the mapping can always be read back.

Dtypes
------
``dtype`` is the float type of the model's inputs and initial states (default: that of the
cell's parameters). Every value then has the dtype numpy gives it in ``net(xs)`` with inputs of
that type: numbers written in the cell take the inputs' type, float arrays keep theirs, and
operands of mixed float types are promoted (an explicit ``Cast`` in the model). When a state's
next value has a wider type than its initial value (float32 inputs, float64 parameters), the
net computes its first step(s) in other types than the later ones: the ``Scan`` carries the
wider type and its body holds a copy of the cell for each such step, picked by a step counter
(the unrolled form simply copies each step with its own types). The ``Scan``'s outputs have
the wider type whatever the number of steps: a run shorter than the widening returns the net's
numbers in that type.

Lowering rules
--------------
A rule is a function ``rule(b, *inputs, **attrs) -> str``: ``inputs`` are the names of the op's
input values in the model (operands already of the node's float type, as numpy promotes them;
a ``where`` condition or ``cross_entropy`` labels as they are), ``attrs`` the node's attributes
(those its numpy forward takes), and ``b`` an :class:`OnnxBuilder` for the node, which emits
ONNX nodes (``b.op``), constants (``b.const``, ``b.ints``) and numpy idioms (``b.reduce``,
``b.index``, ``b.log1p``...). The rule returns the name of the value that holds the op's
result; the exporter renames it after the node. Example, an elementwise square::

    deflower("square", "onnx", lambda b, a: b.op("Mul", a, a))

Where an ONNX operator's result differs from numpy's in some runtime, the rule spells out
numpy's formula instead: ``sigmoid`` is ``1 / (1 + exp(-x))`` (onnxruntime's ``Sigmoid`` loses
relative accuracy for negative inputs: 1e-3 at -30 in float64, 10% at -15 in float32), and
``log_softmax`` is ``z - log(sum(exp(z)))`` with ``z = x - max(x)`` (the reference evaluator's
``LogSoftmax`` takes the log of a softmax, which underflows).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from ..cell import Cell
from ..errors import CellError, DTypeError, LoweringError
from ..ops import get_op

__all__ = ["to_onnx", "OnnxBuilder", "OPSET"]

#: The opset of the default ONNX domain the models use.
OPSET = 18
_IR_VERSION = 8  # the IR version that came with opset 18 (onnx 1.13)

_C_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# unrollgraph's comparisons and the ONNX operators computing them (as bools)
_COMPARISONS = {"gt": "Greater", "ge": "GreaterOrEqual", "lt": "Less", "le": "LessOrEqual"}


def _onnx(who: str = "ug.export.to_onnx"):
    try:
        import onnx
    except ImportError:
        from . import _missing_dependency

        raise _missing_dependency("onnx", who) from None
    return onnx


def to_onnx(cell, path=None, steps=None, *, dtype=None, lengths=False, identifiers=False):
    """Write ``cell`` as an ONNX model: the recurrence as a ``Scan``, or unrolled ``steps`` times.

    The model computes what ``ug.unroll(cell, steps=T)(xs, state)`` computes: its inputs are
    the cell's inputs shaped ``(steps, batch, ...)`` and, optionally, the initial states shaped
    ``(batch, ...)`` (declared ``init`` or zeros by default); its outputs are the cell's outputs
    stacked over steps and the final states. See :mod:`unrollgraph.export.onnx_export` for the
    layout, the names and the dtypes.

    Parameters
    ----------
    cell : Cell
        The recurrent cell (``ug.nn.LSTMCell``, ``ug.nn.GRU``, your own ``ug.Cell``...).
    path : str or os.PathLike, optional
        Where to write the model (``.onnx``); ``None`` only returns it.
    steps : int, optional
        ``None``: the recurrence is an ONNX ``Scan`` over the first axis of the inputs (any
        length); for a cell without inputs, an ONNX ``Loop`` run as many times as the model's
        int64 input ``steps`` says. ``T``: a fully unrolled graph of T steps (inputs must have
        T steps).
    dtype : {numpy.float32, numpy.float64}, optional
        Float type of the model's inputs and initial states; default: the parameters' type
        (float64 for a cell without parameters).
    lengths : bool
        Give the model an optional input ``lengths`` (int64, one per sequence of the batch),
        as ``net(xs, lengths=...)``: from its length on, a sequence's state stays as it is and
        its outputs are 0. Without it every sequence runs every step.
    identifiers : bool
        Map every name to a C identifier (see Names in the module docstring); by default the
        cell's names are kept exactly.

    Returns
    -------
    onnx.ModelProto
        The model (opset 18), checked with ``onnx.checker.check_model(full_check=True)``, its
        value shapes inferred (Netron shows them).

    Raises
    ------
    LoweringError
        An op of the cell has no ONNX rule (``.op`` names it), or the model fails the checker.
    MissingDependencyError
        The onnx package is not installed (an ``ImportError`` too).
    CellError
        ``cell`` is not a valid cell, or ``steps`` is not a positive int.
    DTypeError
        ``dtype`` is not float32 or float64.

    Examples
    --------
    >>> import numpy as np, onnx, unrollgraph as ug
    >>> from onnx.reference import ReferenceEvaluator
    >>> cell = ug.nn.GRUCell(2, 3, seed=0)
    >>> model = ug.export.to_onnx(cell, None)
    >>> [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    (['x', 'h'], ['y', 'h_final'])
    >>> [n.op_type for n in model.graph.node][-1]
    'Scan'
    >>> xs = np.random.default_rng(0).normal(size=(5, 4, 2))
    >>> ys, h = ReferenceEvaluator(model).run(None, {"x": xs})
    >>> want, h_want = ug.unroll(cell, steps=5)(xs)
    >>> ys.shape, bool(np.allclose(ys, want.data, rtol=1e-12, atol=0))
    ((5, 4, 3), True)

    A cell without inputs is a ``Loop``, its number of steps the input ``steps``:

    >>> clock = ug.Cell("clock")
    >>> h = clock.state("h", (2,), init=np.array([1.0, 0.0]))
    >>> R = clock.param("R", np.array([[0.8, -0.6], [0.6, 0.8]]))
    >>> clock.feedback(h, h @ R)
    >>> clock.output("y", 2.0 * h)
    >>> model = ug.export.to_onnx(clock, None)
    >>> [i.name for i in model.graph.input], [n.op_type for n in model.graph.node][0]
    (['steps', 'h'], 'Loop')
    >>> ys, h_final = ReferenceEvaluator(model).run(None, {"steps": np.array(4)})
    >>> ys.shape, bool(np.allclose(ys, ug.unroll(clock, 4)(None)[0].data, rtol=1e-12))
    ((4, 1, 2), True)
    """
    onnx = _onnx()
    if not isinstance(cell, Cell):
        raise CellError(f"to_onnx() needs a ug.Cell, got {type(cell).__name__}")
    if steps is not None and (isinstance(steps, (bool, np.bool_)) or not isinstance(
            steps, (int, np.integer)) or steps < 1):
        raise CellError(
            f"to_onnx(): steps must be a positive int (a graph unrolled over that many steps) "
            f"or None (a Scan over any number of steps), got {steps!r}"
        )
    steps = None if steps is None else int(steps)
    for what, flag in (("lengths", lengths), ("identifiers", identifiers)):
        if not isinstance(flag, (bool, np.bool_)):
            raise CellError(f"to_onnx(): {what} must be True or False, got {flag!r}")
    cell.validate()
    model = _Exporter(onnx, cell, dtype, bool(identifiers), bool(lengths)).model(steps)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # a rule (perhaps a user's) emitted something ONNX refuses
        raise LoweringError(
            f"cell {cell.name!r}: the ONNX model fails onnx.checker: {exc}; check the onnx "
            "lowering rules of the cell's ops", target="onnx"
        ) from None
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model


def _float_dtype(dtype, what) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.type not in (np.float32, np.float64):
        raise DTypeError(f"{what}: dtype must be numpy.float32 or numpy.float64, got {dtype!r}")
    return dt


class OnnxBuilder:
    """What an ONNX lowering rule builds with: it emits the nodes of one op of the cell.

    Attributes
    ----------
    dtype : numpy.dtype
        The float type of the op's value (and of its operands).
    in_dtypes : tuple of numpy.dtype
        The types of the op's inputs, as the rule receives them.
    in_shapes : tuple of tuple
        The inputs' shapes; the batch axis (axis 0 of a value computed from an input or a
        state) is ``None``.
    shape : tuple
        The op's value's shape, the batch axis ``None``.

    Examples
    --------
    A user op, its ONNX rule, and a cell using it, exported and run:

    >>> import numpy as np, unrollgraph as ug
    >>> from onnx.reference import ReferenceEvaluator
    >>> from unrollgraph.ops import defop, deflower
    >>> _ = defop("softsign_example", lambda a: a / (1 + np.abs(a)),
    ...           [lambda g, ans, a: g / (1 + np.abs(a)) ** 2])
    >>> _ = deflower("softsign_example", "onnx",
    ...              lambda b, x: b.op("Div", x, b.op("Add", b.const(1), b.op("Abs", x))))
    >>> cell = ug.Cell("soft")
    >>> x, h = cell.input("x", (2,)), cell.state("h", (2,))
    >>> cell.feedback(h, ug.functional.apply("softsign_example", x + h, name="h_next"))
    >>> cell.output("y", h * 2.0)
    >>> model = ug.export.to_onnx(cell, None)
    >>> xs = np.arange(12.0).reshape(3, 2, 2)
    >>> ys, h_final = ReferenceEvaluator(model).run(None, {"x": xs})
    >>> bool(np.allclose(h_final, ug.unroll(cell, steps=3)(xs)[1].data, rtol=1e-15))
    True
    >>> _ = ug.ops.undefop("softsign_example")  # keep the registry to the library's ops
    """

    def __init__(self, ex, nodes, base, dtype, inputs, in_dtypes, in_shapes, shape):
        self._ex = ex
        self._nodes = nodes
        self._base = base
        self._inputs = tuple(inputs)
        self.dtype = np.dtype(dtype)
        self.in_dtypes = tuple(np.dtype(d) for d in in_dtypes)
        self.in_shapes = tuple(in_shapes)
        self.shape = shape
        self.emitted: list = []  # the nodes this rule made

    # -- primitives ----------------------------------------------------------------------------
    def op(self, op_type: str, *inputs, **attributes) -> str:
        """Emit one ONNX node ``op_type`` and return the name of its (first) output.

        ``inputs`` are value names; ``None`` leaves an optional input out. ``attributes`` are
        the operator's attributes (ints, floats, lists...).
        """
        out = self._ex.fresh(f"{self._base}/{op_type}")
        # an empty list has no type to infer (Transpose of a 0-d value: perm=[]): ints
        empty = {k for k, v in attributes.items() if isinstance(v, (list, tuple)) and not v}
        node = self._ex.helper.make_node(
            op_type, ["" if i is None else i for i in inputs], [out], name=out,
            **{k: v for k, v in attributes.items() if k not in empty})
        node.attribute.extend(self._ex.helper.make_attribute(
            k, [], attr_type=self._ex.onnx.AttributeProto.INTS) for k in sorted(empty))
        self._nodes.append(node)
        self.emitted.append(node)
        return out

    def const(self, value, dtype=None) -> str:
        """A constant (an initializer of the model) holding ``value`` as ``dtype``; by default
        numbers take the op's float type and bools stay bool."""
        arr = np.asarray(value)
        if dtype is None:
            dtype = bool if arr.dtype.kind == "b" else self.dtype
        return self._ex.constant(arr.astype(dtype), f"{self._base}/const")

    def ints(self, values) -> str:
        """A 1-D int64 constant: axes, a shape, slice bounds."""
        return self._ex.constant(np.asarray(values, dtype=np.int64).reshape(-1),
                                 f"{self._base}/ints")

    def cast(self, x: str, dtype) -> str:
        """``x`` as ``dtype`` (``x`` itself when an input of the op already has it)."""
        dtype = np.dtype(dtype)
        if x in self._inputs and self.in_dtypes[self._inputs.index(x)] == dtype:
            return x
        return self.op("Cast", x, to=self._ex.elem(dtype))

    # -- numpy idioms --------------------------------------------------------------------------
    def reduce(self, op_type: str, x: str, axis=None, keepdims=False) -> str:
        """numpy's ``x.sum/mean/max(axis, keepdims)`` with ``ReduceSum/Mean/Max``: ``axis=None``
        reduces every axis, ``axis=()`` none."""
        if axis is None:
            return self.op(op_type, x, keepdims=int(bool(keepdims)))
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        if not axes:
            return self.op("Identity", x)
        return self.op(op_type, x, self.ints(axes), keepdims=int(bool(keepdims)))

    def softmax(self, x: str, axis=-1) -> str:
        """numpy's ``exp(x - max) / sum(exp(x - max))`` over ``axis`` (an int: ``Softmax``)."""
        if isinstance(axis, (int, np.integer)):
            return self.op("Softmax", x, axis=int(axis))
        e = self.op("Exp", self.op("Sub", x, self.reduce("ReduceMax", x, axis, True)))
        return self.op("Div", e, self.reduce("ReduceSum", e, axis, True))

    def log_softmax(self, x: str, axis=-1) -> str:
        """numpy's ``z - log(sum(exp(z)))`` with ``z = x - max(x)`` over ``axis``."""
        z = self.op("Sub", x, self.reduce("ReduceMax", x, axis, True))
        return self.op("Sub", z, self.op("Log", self.reduce("ReduceSum", self.op("Exp", z),
                                                            axis, True)))

    def log1p(self, u: str) -> str:
        """``log(1 + u)`` to a few ulps (ONNX has no ``Log1p``): ``u * log(w) / (w - 1)`` with
        ``w = 1 + u``, and ``u`` where ``w == 1``."""
        one = self.const(1.0)
        w = self.op("Add", one, u)
        d = self.op("Sub", w, one)
        tiny = self.op("Equal", d, self.const(0.0))
        ratio = self.op("Div", self.op("Log", w), self.op("Where", tiny, one, d))
        return self.op("Where", tiny, u, self.op("Mul", u, ratio))

    def clip(self, x: str, lo=None, hi=None) -> str:
        """numpy's ``clip(x, lo, hi)``: ``Clip`` with scalar bounds (``None``: no bound),
        else ``Max`` / ``Min``."""
        if (lo is None or np.ndim(lo) == 0) and (hi is None or np.ndim(hi) == 0):
            return self.op("Clip", x, None if lo is None else self.const(lo),
                           None if hi is None else self.const(hi))
        if lo is not None:
            x = self.op("Max", x, self.const(lo))
        return x if hi is None else self.op("Min", x, self.const(hi))

    def index(self, x: str, index) -> str:
        """numpy's ``x[index]`` for any index numpy takes. A basic index (ints, slices, one
        ``...``, ``None``) is one ``Slice`` of the sliced axes, a ``Gather`` per int and one
        ``Unsqueeze`` for the ``None``s (``g[..., :H]`` lowers as ``g[:, :H]`` does); any other
        index is one ``Gather`` of the flat positions it selects (computed here, on the shape),
        per batch row when ``x`` has a batch axis."""
        shape = self.in_shapes[0]
        batched = bool(shape) and shape[0] is None
        items = index if isinstance(index, tuple) else (index,)
        plan = _basic_index(items, shape, batched)
        if plan is not None:
            starts, ends, axes, steps, picks, new = [], [], [], [], [], []
            ax = out_ax = 0
            for item in plan:
                if item is None:
                    new.append(out_ax)
                    out_ax += 1
                    continue
                dim = shape[ax]
                if isinstance(item, slice):
                    out_ax += 1
                    if dim is not None:  # (the batch axis: a whole slice, see _basic_index)
                        start, stop, step = item.indices(dim)
                        if (start, stop, step) != (0, dim, 1):
                            if step < 0 and stop < 0:
                                stop = -(dim + 1)  # before the first (ONNX: -1 is the last)
                            starts.append(start)
                            ends.append(stop)
                            axes.append(ax)
                            steps.append(step)
                else:
                    picks.append((ax, int(item) % dim))
                ax += 1
            if axes:
                x = self.op("Slice", x, self.ints(starts), self.ints(ends), self.ints(axes),
                            self.ints(steps))
            for ax, i in reversed(picks):
                x = self.op("Gather", x, self.const(np.int64(i), np.int64), axis=ax)
            if new:
                x = self.op("Unsqueeze", x, self.ints(new))
            return x if (axes or picks or new) else self.op("Identity", x)
        if batched:
            rest = tuple(shape[1:])
            flat = np.arange(int(np.prod(rest)), dtype=np.int64).reshape((1,) + rest)[index]
            rows = self.op("Reshape", x, self.ints([-1, int(np.prod(rest))]))
            return self.op("Gather", rows, self.const(flat[0], np.int64), axis=1)
        flat = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)[index]
        return self.op("Gather", self.op("Reshape", x, self.ints([-1])),
                       self.const(flat, np.int64), axis=0)


def _is_int(i) -> bool:
    return isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))


def _basic_index(items: tuple, shape: tuple, batched: bool) -> list | None:
    """A basic index as one item per input axis or new axis: ints, slices and ``None``, the
    ``...`` spelled out as whole slices; ``None`` for an index that is not basic (lists,
    arrays, masks, bools), or that touches the batch axis (anything but a whole slice there,
    or a new axis before it)."""
    if not all(i is None or i is Ellipsis or isinstance(i, slice) or _is_int(i)
               for i in items):
        return None
    used = sum(1 for i in items if i is not None and i is not Ellipsis)
    if used > len(shape) or sum(1 for i in items if i is Ellipsis) > 1:
        return None
    plan = []
    for i in items:
        plan.extend([slice(None)] * (len(shape) - used) if i is Ellipsis else [i])
    if batched:
        first = plan[0] if plan else slice(None)
        if not (isinstance(first, slice) and first.start in (None, 0) and first.stop is None
                and first.step in (None, 1)):
            return None
    return plan


class _Parts:
    """What the nodes of one model share: its names, its constants (initializers)."""

    def __init__(self, onnx, identifiers: bool = False):
        self.onnx = onnx
        self.helper = onnx.helper
        self.identifiers = identifiers
        self.taken: set = set()
        self.inits: list = []
        self._consts: dict = {}

    # -- names and constants -------------------------------------------------------------------
    def fresh(self, raw: str) -> str:
        """A name not used yet in the model (a C identifier with ``identifiers=True``)."""
        name = _identifier(raw) if self.identifiers else raw
        base, k = name, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}" if self.identifiers else f"{base}#{k}"
        self.taken.add(name)
        return name

    def graph_name(self, name: str) -> str:
        """A graph's name: as given, or a C identifier with ``identifiers=True``."""
        return _identifier(name) if self.identifiers else name

    def elem(self, dtype) -> int:
        return self.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    def constant(self, arr: np.ndarray, raw: str) -> str:
        """An initializer holding ``arr`` (one per distinct value; a small one is named by its
        value, e.g. ``[0, 2]`` or ``1.0:float32``, since rules share it)."""
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            if arr.size <= 8:
                raw = str(arr.tolist()) + ("" if arr.dtype == np.int64 else f":{arr.dtype.name}")
            name = self.fresh(raw)
            self.inits.append(self.onnx.numpy_helper.from_array(np.array(arr, order="C"), name))
            self._consts[key] = name
        return self._consts[key]

    def value_info(self, name, dtype, shape):
        return self.helper.make_tensor_value_info(name, self.elem(dtype), list(shape))


class _Exporter(_Parts):
    """Builds one model: names, constants, the lowering of each node."""

    def __init__(self, onnx, cell: Cell, dtype, identifiers: bool, lengths: bool = False):
        _Parts.__init__(self, onnx, identifiers)
        self.masked = lengths
        self.cell = cell
        params = cell.parameters()
        if dtype is None:
            dtype = (np.result_type(*[p.dtype for p in params.values()]) if params
                     else np.float64)
        self.dtype = _float_dtype(dtype, f"to_onnx(cell {cell.name!r})")
        # the float type numbers written in the cell take (the inputs', as in a run)
        self.number_dtype = self.dtype if cell.inputs else np.dtype(np.float64)
        self.infos: list = []  # the main graph's value types and shapes
        self.graph = cell.graph()
        self.leaves = cell.leaf_tensors()
        self.batched = self.graph._batched
        self.rules = {}
        for n in self.graph.nodes:
            if not n.is_leaf and n.op not in self.rules:
                try:
                    self.rules[n.op] = get_op(n.op).lowering("onnx")
                except LoweringError as exc:
                    raise LoweringError(
                        f"cell {cell.name!r}, node {self.graph.display_name(n)!r}: {exc}",
                        op=exc.op, target=exc.target,
                    ) from None
        self._dtype_memo: dict = {}
        self.bool_conds = self._conditions()

    def _conditions(self) -> dict:
        """The comparisons read only as ``where`` conditions (not an output, not a state's
        next value), both ops lowered by the library's own rules: node id -> the ONNX
        comparison. Such a comparison's value stays the bool ONNX computes, and ``Where``
        reads it as it is: no ``Cast`` to the float 0/1 numpy gives and back to bool."""
        from ..ops import _LIBRARY

        def own_rule(name):
            return name in _LIBRARY and get_op(name).lower.get("onnx") is \
                _LIBRARY[name].lower.get("onnx")

        ends = {id(t.node) for t in self.cell.outputs.values()} | {
            id(t.node) for t in self.cell.feedbacks.values()}
        found = {id(n): _COMPARISONS[n.op] for n in self.graph.nodes
                 if n.op in _COMPARISONS and id(n) not in ends and own_rule(n.op)}
        read = set()
        where = own_rule("where")
        for n in self.graph.nodes:
            for k, i in enumerate(n.inputs):
                if id(i) in found:
                    if n.op == "where" and k == 0 and where:
                        read.add(id(i))
                    else:
                        found.pop(id(i))
        return {i: op for i, op in found.items() if i in read}

    # -- dtypes ----------------------------------------------------------------------------------
    def dtypes(self, state_dtypes: tuple) -> dict:
        """The dtype of every node of the cell in a run with inputs of the model's dtype and
        states of ``state_dtypes``: what numpy gives (the forward run on the placeholders)."""
        if state_dtypes in self._dtype_memo:
            return self._dtype_memo[state_dtypes]
        cell, leaves = self.cell, self.leaves
        state_ids = {id(t.node): k for k, t in enumerate(cell.states.values())}
        input_ids = {id(t.node) for t in cell.inputs.values()}
        param_ids = {id(t.node) for t in cell.parameters().values()}
        vals, out = {}, {}
        with np.errstate(all="ignore"):
            for n in self.graph.nodes:
                i = id(n)
                if n.is_leaf:
                    v = leaves[i]._data  # (a placeholder hands out no value)
                    if i in input_ids:
                        v = v.astype(self.dtype)
                    elif i in state_ids:
                        v = v.astype(state_dtypes[state_ids[i]])
                    elif i not in param_ids:
                        v = self.const_value(v)
                else:
                    v = np.asarray(get_op(n.op).forward(*[vals[id(k)] for k in n.inputs],
                                                        **n.attrs))
                vals[i] = v
                out[i] = v.dtype
        self._dtype_memo[state_dtypes] = out
        return out

    def const_value(self, v: np.ndarray) -> np.ndarray:
        """A constant's value in a run: a number written in the cell takes the inputs' type."""
        return v.astype(self.number_dtype) if v.ndim == 0 and v.dtype.kind == "f" else v

    # -- one node --------------------------------------------------------------------------------
    def shape_of(self, n):
        shape = tuple(n.shape)
        return (None,) + shape[1:] if id(n) in self.batched else shape

    def lower(self, n, env: dict, nodes: list, suffix: str, dtypes: dict, infos: list) -> str:
        """Emit node ``n`` (its inputs' names in ``env``) into ``nodes`` and its type and shape
        into ``infos``; return its name."""
        op = get_op(n.op)
        n_in = len(n.inputs)
        keep = set(op.nondiff) if len(op.nondiff) < n_in else set()  # conditions, labels
        want = dtypes[id(n)]
        names, in_dtypes = [], []
        raw = self.graph.display_name(n) + suffix
        for k, i in enumerate(n.inputs):
            name, dt = env[id(i)], dtypes[id(i)]
            if id(i) in self.bool_conds:  # a where's condition, kept bool (see _conditions)
                dt = np.dtype(bool)
            if k not in keep and dt != want and want.kind == "f":
                name = self.fresh(f"{raw}/{k}/Cast")
                nodes.append(self.helper.make_node("Cast", [env[id(i)]], [name], name=name,
                                                   to=self.elem(want)))
                dt = want
            names.append(name)
            in_dtypes.append(dt)
        b = OnnxBuilder(self, nodes, raw, want, names, in_dtypes,
                        [self.shape_of(i) for i in n.inputs], self.shape_of(n))
        try:
            if id(n) in self.bool_conds:
                out = b.op(self.bool_conds[id(n)], *names)
                want = np.dtype(bool)
            else:
                out = self.rules[n.op](b, *names, **n.attrs)
        except LoweringError:
            raise
        except Exception as exc:
            raise LoweringError(
                f"cell {self.cell.name!r}, node {self.graph.display_name(n)!r}: the onnx rule "
                f"of op {n.op!r} failed: {type(exc).__name__}: {exc}", op=n.op, target="onnx",
            ) from None
        if not isinstance(out, str):
            raise LoweringError(
                f"op {n.op!r}: its onnx rule must return the name of its result (a str), got "
                f"{type(out).__name__}", op=n.op, target="onnx")
        final = self.fresh(raw)
        made = {o for node in b.emitted for o in node.output}
        if out in made:  # name the op's result after the node
            for node in b.emitted:
                node.output[:] = [final if o == out else o for o in node.output]
                node.input[:] = [final if o == out else o for o in node.input]
                if node.name == out:
                    node.name = final
        else:
            nodes.append(self.helper.make_node("Identity", [out], [final], name=final))
        infos.append(self.value_info(final, want, ["batch" if d is None else d
                                                   for d in self.shape_of(n)]))
        return final

    # -- the model -------------------------------------------------------------------------------
    def model(self, steps):
        cell, helper = self.cell, self.helper
        names = self.member_names()
        inputs, states = cell.inputs, cell.states
        nodes: list = []
        env: dict = {}
        # parameters and constants
        for k, p in cell.parameters().items():
            self.inits.append(self.onnx.numpy_helper.from_array(
                np.array(p.data, order="C"), names["params"][k]))
            env[id(p.node)] = names["params"][k]
        D = self.dtype
        state_dt0 = tuple(D for _ in states)
        dtypes0 = self.dtypes(state_dt0)
        for n in self.graph.nodes:
            if id(n) in self.batched or id(n) in env:
                continue
            if n.is_leaf:
                env[id(n)] = self.constant(self.const_value(self.leaves[id(n)].data),
                                           self.graph.display_name(n))
            else:
                env[id(n)] = self.lower(n, env, nodes, "", dtypes0, self.infos)
        # inputs and initial states
        g_inputs = []
        for k, t in inputs.items():
            dims = [steps or "steps", "batch", *t.shape[1:]]
            g_inputs.append(self.value_info(names["inputs"][k], D, dims))
        if steps is None and not inputs:  # a Loop: its trip count is an input
            g_inputs.append(self.helper.make_tensor_value_info(names["steps"],
                                                               self.elem(np.int64), []))
        first = names["inputs"][next(iter(inputs))] if inputs else None
        batch = None
        if first is not None:
            batch = self.fresh("batch")
            nodes.append(helper.make_node("Shape", [first], [batch], name=batch, start=1, end=2))
        init_names = {}
        for k, t in states.items():
            name = names["states"][k]
            g_inputs.append(self.value_info(name, D, ["batch", *t.shape[1:]]))
            init = cell.init_value(k)
            shape = (1,) + tuple(t.shape[1:])
            value = np.zeros(shape, D) if init is None else np.broadcast_to(init, shape).astype(D)
            self.inits.append(self.onnx.numpy_helper.from_array(value, name))
            if batch is not None:
                target = self.fresh(f"{k}/shape")
                nodes.append(helper.make_node(
                    "Concat", [batch, self.constant(np.asarray(t.shape[1:], np.int64),
                                                    f"{k}/dims")],
                    [target], name=target, axis=0))
                full = self.fresh(f"{k}@0")
                nodes.append(helper.make_node("Expand", [name, target], [full], name=full))
                self.infos.append(self.value_info(full, D, ["batch", *t.shape[1:]]))
                name = full
            init_names[k] = name
        if self.masked:
            g_inputs.append(self.helper.make_tensor_value_info(
                names["lengths"], self.elem(np.int64), ["batch"]))
            self.inits.append(self.onnx.numpy_helper.from_array(  # default: no sequence ends
                np.array([np.iinfo(np.int64).max]), names["lengths"]))
        if steps is None:
            g_outputs = self.scan(nodes, env, names, init_names, loop=not inputs)
        else:
            g_outputs = self.unrolled(nodes, env, names, init_names, steps)
        graph = helper.make_graph(nodes, self.graph_name(cell.name), g_inputs, g_outputs,
                                  initializer=self.inits,
                                  doc_string=str(cell), value_info=self.infos)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=_IR_VERSION,
            producer_name="unrollgraph", producer_version=_version(),
            doc_string=f"recurrent cell {cell.name!r} exported by unrollgraph",
        )
        helper.set_model_props(model, {"unrollgraph.names": json.dumps(names,
                                                                       ensure_ascii=False)})
        return model

    def member_names(self) -> dict:
        """The model's name of each input, state, parameter, output and final state."""
        cell = self.cell
        names: dict = {"inputs": {}, "states": {}, "params": {}, "outputs": {},
                       "final_states": {}}
        for kind, table in (("inputs", cell.inputs), ("states", cell.states),
                            ("params", cell.parameters()), ("outputs", cell.outputs)):
            for k in table:
                names[kind][k] = self.fresh(k)
        members = set(cell.inputs) | set(cell.states) | set(cell.parameters()) | set(
            cell.outputs)
        for k in cell.states:
            final = k + "_final"
            while final in members or final in self.taken:
                final += "_final"
            names["final_states"][k] = self.fresh(final)
        if not cell.inputs:
            names["steps"] = self.fresh("steps")  # the trip count of the Loop
        if self.masked:
            names["lengths"] = self.fresh("lengths")
        return names

    def masker(self, nodes, step: str, lengths: str, label: str):
        """``mask(rank)``: where the sequences still run at ``step`` (``step < lengths``), as a
        bool ``(batch, 1, ...)`` of that rank (one node per rank, made when first asked)."""
        masks: dict = {}

        def mask(rank: int) -> str:
            if rank not in masks:
                if not masks:
                    name = self.fresh(f"running{label}")
                    nodes.append(self.helper.make_node("Less", [step, lengths], [name],
                                                       name=name))
                    masks[1] = name
                if rank not in masks:
                    name = self.fresh(f"running{label}/rank {rank}")
                    shape = self.constant(np.array([-1] + [1] * (rank - 1), np.int64), "")
                    nodes.append(self.helper.make_node("Reshape", [masks[1], shape], [name],
                                                       name=name))
                    masks[rank] = name
            return masks[rank]

        return mask

    def cast(self, nodes, name: str, have, want) -> str:
        """``name`` (of dtype ``have``) as ``want``: itself, or a ``Cast``."""
        if np.dtype(have) == np.dtype(want):
            return name
        cast = self.fresh(f"{name}/Cast")
        nodes.append(self.helper.make_node("Cast", [name], [cast], name=cast,
                                           to=self.elem(want)))
        return cast

    def select(self, nodes, mask, value, other, dtype, raw):
        """``Where(mask, value, other)``, both cast to ``dtype`` first where they differ."""
        ins = [self.cast(nodes, v, d, dtype) for v, d in (value, other)]
        name = self.fresh(raw)
        nodes.append(self.helper.make_node("Where", [mask] + ins, [name], name=name))
        return name

    def state_dtypes(self) -> list:
        """The states' dtypes at steps 0, 1, ...: what numpy gives each next value, until they
        repeat (types only widen, so within a step per state). The last entry holds from
        there on."""
        cell = self.cell
        seq = [tuple(self.dtype for _ in cell.states)]
        while True:
            dt = self.dtypes(seq[-1])
            nxt = tuple(
                np.result_type(dt[id(cell.feedbacks[k].node)], *((s,) if self.masked else ()))
                for k, s in zip(cell.states, seq[-1]))
            if nxt == seq[-1]:
                return seq
            if nxt in seq or len(seq) > len(nxt) + 1:
                raise LoweringError(
                    f"cell {self.cell.name!r}: the dtypes of its states do not settle from step "
                    f"to step ({[tuple(d.name for d in s) for s in seq + [nxt]]}); give its "
                    "parameters and constants one float type", target="onnx")
            seq.append(nxt)

    def scan(self, nodes, env, names, init_names, loop=False):
        """The recurrence as one ``Scan`` whose body is the cell's batched part; with
        ``loop``, for a cell without inputs, as one ``Loop`` run ``steps`` times (the graph's
        input of that name) with the same body, its step counter the Loop's iteration number.

        While a state's type still widens (float32 inputs meeting float64 weights), the first
        steps compute in other types than the later ones; the body then holds one copy of the
        cell per such step (named ``@0``, ``@1``...) besides the general one (``@t``), and a
        step counter picks the copy, so every step computes in the types the net uses."""
        cell, helper, D = self.cell, self.helper, self.dtype
        seq = self.state_dtypes()
        carried = [np.result_type(*col) for col in zip(*seq)] if cell.states else []
        body: list = []
        body_infos: list = []
        benv = dict(env)
        b_inputs, b_outputs = [], []
        scan_in = []
        prev = {}
        for (k, t), cdt in zip(cell.states.items(), carried):
            name = self.fresh(f"{k}@t-1")
            prev[k] = name
            b_inputs.append(self.value_info(name, cdt, ["batch", *t.shape[1:]]))
            scan_in.append(self.cast(nodes, init_names[k], D, cdt))
        step = None
        if loop:  # a Loop's body takes its iteration number and condition first
            step = self.fresh("t")
            cond = self.fresh("cond")
            b_inputs[:0] = [self.helper.make_tensor_value_info(step, self.elem(np.int64), []),
                            self.helper.make_tensor_value_info(cond, self.elem(np.bool_), [])]
            cond_out = self.fresh("cond/out")
            body.append(helper.make_node("Identity", [cond], [cond_out], name=cond_out))
            b_outputs.append(self.helper.make_tensor_value_info(cond_out, self.elem(np.bool_),
                                                                []))
        elif self.masked or len(seq) > 1:  # a step counter, the last state variable
            step = self.fresh("t")
            b_inputs.append(self.helper.make_tensor_value_info(step, self.elem(np.int64), []))
            scan_in.append(self.constant(np.int64(0), ""))
        for k, t in cell.inputs.items():
            name = self.fresh(f"{k}@t")
            benv[id(t.node)] = name
            b_inputs.append(self.value_info(name, D, ["batch", *t.shape[1:]]))
            scan_in.append(names["inputs"][k])
        mask = self.masker(body, step, names["lengths"], "@t") if self.masked else None
        zdt = self.number_dtype  # a masked output's 0 is a number of the run's type
        # one copy of the body per step whose types differ, the general one last
        variants = []
        for j, sdt in enumerate(seq):
            general = j == len(seq) - 1
            label = "@t" if general else f"@{j}"
            venv = dict(benv)
            for (k, t), cdt, d in zip(cell.states.items(), carried, sdt):
                venv[id(t.node)] = self.cast(body, prev[k], cdt, d)
            dtypes = self.dtypes(sdt)
            for n in self.graph.nodes:
                if id(n) in self.batched and not n.is_leaf:
                    venv[id(n)] = self.lower(n, venv, body, label, dtypes, body_infos)
            states = []
            for (k, t), d in zip(cell.states.items(), sdt):
                f = cell.feedbacks[k].node
                if self.masked:
                    fdt = np.result_type(dtypes[id(f)], d)
                    states.append((self.select(body, mask(len(t.shape)), (venv[id(f)],
                                               dtypes[id(f)]), (venv[id(t.node)], d), fdt,
                                               f"{k}_kept{label}"), fdt))
                else:
                    states.append((venv[id(f)], dtypes[id(f)]))
            outs = []
            for k, t in cell.outputs.items():
                value, odt = venv[id(t.node)], dtypes[id(t.node)]
                if self.masked:
                    odt2 = np.result_type(odt, zdt)
                    value = self.select(body, mask(len(t.shape)), (value, odt),
                                        (self.constant(np.zeros((), zdt), ""), zdt), odt2,
                                        f"{k}_masked{label}")
                    odt = odt2
                outs.append((value, odt))
            variants.append((states, outs))
        out_dt = [np.result_type(*[v[1][i][1] for v in variants])
                  for i in range(len(cell.outputs))]

        at_step = []  # at_step[j]: is this step j (for the copies of the first steps)
        for j in range(len(variants) - 1):
            name = self.fresh(f"t={j}")
            body.append(helper.make_node("Equal", [step, self.constant(np.int64(j), "")],
                                         [name], name=name))
            at_step.append(name)

        def pick(i, kind, dtype, raw):
            """The ``i``-th state or output of the copy for the current step, as ``dtype``."""
            name = self.cast(body, *variants[-1][kind][i], dtype)
            for j in range(len(variants) - 2, -1, -1):
                name = self.select(body, at_step[j], variants[j][kind][i], (name, dtype), dtype,
                                   f"{raw} (step {j} or later)")
            return name

        for i, ((k, t), cdt) in enumerate(zip(cell.states.items(), carried)):
            name = self.fresh(f"{k}@t")
            body.append(helper.make_node("Identity", [pick(i, 0, cdt, f"{k}@t/picked")],
                                         [name], name=name))
            b_outputs.append(self.value_info(name, cdt, ["batch", *t.shape[1:]]))
        if step is not None and not loop:
            name = self.fresh("t+1")
            body.append(helper.make_node("Add", [step, self.constant(np.int64(1), "")], [name],
                                         name=name))
            b_outputs.append(self.helper.make_tensor_value_info(name, self.elem(np.int64), []))
        g_outputs = []
        stacked = []  # a Loop's outputs as it stacks them, (steps, 1, batch, ...)
        for i, ((k, t), odt) in enumerate(zip(cell.outputs.items(), out_dt)):
            name = self.fresh(f"{k}@t")
            value = pick(i, 1, odt, f"{k}@t/picked")
            if loop:  # (1, batch, ...): see loop_outputs
                body.append(helper.make_node(
                    "Unsqueeze", [value, self.constant(np.asarray([0], np.int64), "axis 0")],
                    [name], name=name))
                b_outputs.append(self.value_info(name, odt, [1, "batch", *t.shape[1:]]))
                stacked.append(self.fresh(f"{k}/stacked"))
            else:
                body.append(helper.make_node("Identity", [value], [name], name=name))
                b_outputs.append(self.value_info(name, odt, ["batch", *t.shape[1:]]))
            g_outputs.append(self.value_info(names["outputs"][k], odt,
                                             ["steps", "batch", *t.shape[1:]]))
        finals = [self.value_info(names["final_states"][k], cdt, ["batch", *t.shape[1:]])
                  for (k, t), cdt in zip(cell.states.items(), carried)]
        body_graph = helper.make_graph(body, self.graph_name(f"{cell.name} (one step)"),
                                       b_inputs, b_outputs,
                                       doc_string=str(cell), value_info=body_infos)
        if loop:
            name = self.fresh("Loop")
            nodes.append(helper.make_node(
                "Loop", [names["steps"], self.constant(np.array(True), "true")] + scan_in,
                [names["final_states"][k] for k in cell.states] + stacked,
                name=name, body=body_graph))
            self.loop_outputs(nodes, stacked, names)
            return g_outputs + finals
        scan = self.fresh("Scan")
        nodes.append(helper.make_node(
            "Scan", scan_in,
            [names["final_states"][k] for k in cell.states]
            + ([self.fresh("steps run")] if step is not None else [])
            + [names["outputs"][k] for k in cell.outputs],
            name=scan, body=body_graph, num_scan_inputs=len(cell.inputs)))
        return g_outputs + finals

    def loop_outputs(self, nodes, stacked, names):
        """A Loop's stacked outputs as ``(steps, batch, ...)``. The body gives each step's
        output as ``(1, batch, ...)``, and the stack is reshaped to ``(-1,`` and its own last
        dims``)``: the ONNX Loop stacks its scan outputs along a new axis 0 (onnxruntime:
        ``(steps, 1, batch, ...)``), and the onnx package's reference evaluator concatenates
        them along axis 0 (``(steps, batch, ...)``); both come out as ``(steps, batch, ...)``."""
        helper = self.helper
        minus = self.constant(np.asarray([-1], np.int64), "")
        for (k, t), y in zip(self.cell.outputs.items(), stacked):
            dims = self.fresh(f"{k}/dims")
            nodes.append(helper.make_node("Shape", [y], [dims], name=dims, start=-len(t.shape)))
            shape = self.fresh(f"{k}/shape")
            nodes.append(helper.make_node("Concat", [minus, dims], [shape], name=shape, axis=0))
            out = names["outputs"][k]
            nodes.append(helper.make_node("Reshape", [y, shape], [out], name=out))

    def unrolled(self, nodes, env, names, init_names, steps):
        """The body copied ``steps`` times, as ``ug.unroll`` does."""
        cell, helper = self.cell, self.helper
        prev = {k: init_names[k] for k in cell.states}
        prev_dt = {k: self.dtype for k in cell.states}
        per_step = {k: [] for k in cell.outputs}
        for t in range(steps):
            dtypes = self.dtypes(tuple(prev_dt[k] for k in cell.states))
            senv = dict(env)
            for k, s in cell.states.items():
                senv[id(s.node)] = prev[k]
            for k, x in cell.inputs.items():
                name = self.fresh(f"{k}@{t}")
                nodes.append(helper.make_node(
                    "Gather", [names["inputs"][k], self.constant(np.int64(t), f"step {t}")],
                    [name], name=name, axis=0))
                senv[id(x.node)] = name
            for n in self.graph.nodes:
                if id(n) in self.batched and not n.is_leaf:
                    senv[id(n)] = self.lower(n, senv, nodes, f"@{t}", dtypes, self.infos)
            if not self.masked:
                for k, o in cell.outputs.items():
                    per_step[k].append((senv[id(o.node)], dtypes[id(o.node)]))
                prev = {k: senv[id(cell.feedbacks[k].node)] for k in cell.states}
                prev_dt = {k: dtypes[id(cell.feedbacks[k].node)] for k in cell.states}
                continue
            # lengths: outputs 0 and states kept past a sequence's length (as net(xs, lengths))
            mask = self.masker(nodes, self.constant(np.int64(t), ""), names["lengths"], f"@{t}")
            zdt = self.number_dtype
            zero = self.constant(np.zeros((), zdt), "")
            for k, o in cell.outputs.items():
                odt = np.result_type(dtypes[id(o.node)], zdt)
                per_step[k].append((self.select(
                    nodes, mask(len(o.shape)), (senv[id(o.node)], dtypes[id(o.node)]),
                    (zero, zdt), odt, f"{k}_masked@{t}"), odt))
            new, new_dt = {}, {}
            for k, s in cell.states.items():
                f = cell.feedbacks[k].node
                new_dt[k] = np.result_type(dtypes[id(f)], prev_dt[k])
                new[k] = self.select(nodes, mask(len(s.shape)), (senv[id(f)], dtypes[id(f)]),
                                     (prev[k], prev_dt[k]), new_dt[k], f"{k}_kept@{t}")
            prev, prev_dt = new, new_dt
        g_outputs = []
        zero = self.constant(np.asarray([0], np.int64), "axis 0")
        for k, o in cell.outputs.items():
            odt = np.result_type(*[d for _, d in per_step[k]])
            parts = []
            for name, d in per_step[k]:
                if d != odt:
                    cast = self.fresh(f"{name}/Cast")
                    nodes.append(helper.make_node("Cast", [name], [cast], name=cast,
                                                  to=self.elem(odt)))
                    name = cast
                part = self.fresh(f"{name}/Unsqueeze")
                nodes.append(helper.make_node("Unsqueeze", [name, zero], [part], name=part))
                parts.append(part)
            out = names["outputs"][k]
            nodes.append(helper.make_node("Concat", parts, [out], name=out, axis=0))
            g_outputs.append(self.value_info(out, odt, [steps, "batch", *o.shape[1:]]))
        for k, s in cell.states.items():
            out = names["final_states"][k]
            nodes.append(helper.make_node("Identity", [prev[k]], [out], name=out))
            g_outputs.append(self.value_info(out, prev_dt[k], ["batch", *s.shape[1:]]))
        return g_outputs


def _identifier(name: str) -> str:
    """``name`` as a C identifier: other characters than ASCII letters, digits and ``_``
    become ``_``, and a ``_`` goes before a leading digit."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return name if _C_IDENT.match(name) else "_" + name


def _version() -> str:
    from .. import __version__

    return __version__

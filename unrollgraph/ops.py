"""The op registry: every op's forward (numpy), vector-Jacobian products and sympy form, declared
together in one place.

VJP contract: ``OpDef.vjp(g, ans, *inputs, **attrs)`` returns one gradient per input (``None``
for an input that has none), each of that input's shape. Internally an op may register one VJP
function per input, so the engine computes only the gradients it needs (no ``dx`` for data).

Symbolic contract: ``OpDef.sym(*inputs, **attrs)`` takes numpy object arrays of sympy
expressions (one element per array element) and returns the object array of the output. The
test suite differentiates it with sympy and compares with the VJP, for every op.

Lowering contract: ``OpDef.lower["torch"]`` is ``rule(torch, *inputs, **attrs)``, given the
``torch`` module, the op's input tensors in order and the node's attributes, returning the
tensor ``forward`` computes (:mod:`unrollgraph.export.torch_export`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .errors import GraphError, LoweringError, ShapeError

__all__ = ["OpDef", "defop", "undefop", "deflower", "get_op", "registry", "unbroadcast"]

# the engines a cell can be lowered to (unrollgraph.export); each op carries one rule per target
TARGETS = ("torch", "onnx")


@dataclass(frozen=True)
class OpDef:
    """One registry entry: an op's forward, per-input VJPs, sympy form and shape check."""

    name: str
    forward: Callable
    vjps: tuple  # one function per input: f(g, ans, *inputs, **attrs) -> grad or None
    sym: Callable | None = None
    check: Callable | None = None  # check(nodes, values, **attrs) raises ShapeError
    nondiff: tuple = ()  # indices of inputs that never get a gradient (labels, conditions)
    variadic: bool = False  # n inputs sharing vjps[0](g, ans, *inputs, index=k)
    always_check: bool = False  # run check before forward (numpy would not fail on its own)
    # what the VJPs read besides g: "ans" and/or input indices; None means everything. An
    # unrolled net run with keep="needed" frees the values nothing reads (shapes are kept).
    reads: tuple | None = None
    doc: str = ""
    extra: dict = field(default_factory=dict)
    # lowering rules, one per export target ("torch", "onnx"); see unrollgraph.export
    lower: dict = field(default_factory=dict)

    @property
    def arity(self) -> int | None:
        return None if self.variadic else len(self.vjps)

    def vjp(self, g, ans, *inputs, **attrs) -> tuple:
        """Return one gradient per input (``None`` for none), given the output gradient ``g``."""
        if self.variadic:
            f = self.vjps[0]
            return tuple(f(g, ans, *inputs, index=k, **attrs) for k in range(len(inputs)))
        out = tuple(
            None if f is None else f(g, ans, *inputs, **attrs) for f in self.vjps
        )
        if len(out) != len(inputs):
            raise GraphError(
                f"op {self.name!r}: VJP returned {len(out)} gradients for {len(inputs)} inputs"
            )
        return out

    def lowering(self, target: str) -> Callable:
        """The rule that lowers this op to export ``target``; a named error if it has none."""
        if target not in TARGETS:
            raise LoweringError(
                f"unknown export target {target!r}; the targets are {', '.join(TARGETS)}"
            )
        try:
            return self.lower[target]
        except KeyError:
            raise LoweringError(
                f"op {self.name!r} has no {target} lowering rule, so a cell using it cannot be "
                f"exported to {target}; add one with "
                f"unrollgraph.ops.deflower({self.name!r}, {target!r}, rule)",
                op=self.name, target=target,
            ) from None

    def input_vjp(self, k: int) -> Callable | None:
        """The function computing the gradient of input ``k`` (``None`` if it has none)."""
        if self.variadic:
            f = self.vjps[0]
            return lambda g, ans, *xs, **kw: f(g, ans, *xs, index=k, **kw)
        return self.vjps[k]


_REGISTRY: dict[str, OpDef] = {}
# the library's own ops as the library registered them (filled once unrollgraph is imported):
# they cannot be redefined or removed
_LIBRARY: dict[str, OpDef] = {}


def _seal_library() -> None:
    """Record the ops registered so far as the library's own (called by ``unrollgraph``'s
    ``__init__`` once every module that registers ops is imported)."""
    if not _LIBRARY:
        _LIBRARY.update(_REGISTRY)


def _refuse_library_op(name: str, what: str, hint: str) -> None:
    if name in _LIBRARY:
        raise GraphError(f"op {name!r} {what}: it is one of unrollgraph's own ops; {hint}")


def defop(
    name, forward, vjps, sym=None, check=None, nondiff=(), variadic=False, always_check=False,
    doc="", torch=None, onnx=None, replace=False,
):
    """Register an op: its forward, one VJP per input, and its sympy form.

    Parameters
    ----------
    name : str
        The op's name, as printed in graphs (``"tanh"``).
    forward : callable
        ``forward(*arrays, **attrs) -> array``.
    vjps : sequence of callables
        One per input: ``f(g, ans, *arrays, **attrs) -> gradient`` (or ``None`` for an input
        with no gradient). For ``variadic`` ops, one function taking ``index=k``.
    sym : callable, optional
        ``sym(*object_arrays, **attrs) -> object_array`` of sympy expressions.
    check : callable, optional
        ``check(nodes, arrays, **attrs)``: raise :class:`ShapeError` with a clear message.
    torch, onnx : callable, optional
        The op's lowering rule for each export target (see :mod:`unrollgraph.export`); an op
        without one raises :class:`~unrollgraph.errors.LoweringError` when a cell using it is
        exported there. Rules can also be added later with :func:`deflower`, and checked
        against ``forward`` and ``vjps`` with :func:`unrollgraph.export.check_lowering`.
    replace : bool
        Redefine an op you registered before under ``name`` (re-running a notebook cell):
        the new definition replaces the old one whole, rules added with :func:`deflower`
        included. Graphs and nets built before may hold parts of the old definition and look
        up others by name: build them again. The library's own ops cannot be replaced.

    Returns
    -------
    OpDef

    Raises
    ------
    GraphError
        ``name`` is registered already (pass ``replace=True``, or :func:`undefop` it first),
        or is one of the library's own ops.

    Examples
    --------
    >>> import numpy as np, sympy
    >>> op = defop("cube_example", lambda x: x**3, [lambda g, ans, x: g * 3 * x**2],
    ...            sym=lambda x: x**3)
    >>> op.vjp(np.array(1.0), None, np.array(2.0))
    (np.float64(12.0),)
    >>> op = defop("cube_example", lambda x: x**3, [lambda g, ans, x: 3 * g * x**2],
    ...            replace=True)  # run again: redefined
    >>> _ = undefop("cube_example")  # and removed
    """
    if name in _REGISTRY:
        _refuse_library_op(name, "is already registered and cannot be redefined",
                           f"register yours under another name (e.g. {name + '_mine'!r})")
        if not replace:
            raise GraphError(
                f"op {name!r} is already registered; pass defop(..., replace=True) to redefine "
                f"it, or remove it first with unrollgraph.ops.undefop({name!r})"
            )
    lower = {t: r for t, r in (("torch", torch), ("onnx", onnx)) if r is not None}
    op = OpDef(
        name, forward, tuple(vjps), sym, check, tuple(nondiff), variadic, always_check,
        doc=doc, lower=lower,  # (by keyword: ``reads`` comes between, None = reads all)
    )
    _REGISTRY[name] = op
    return op


def undefop(name: str) -> OpDef:
    """Remove an op you registered with :func:`defop`.

    Graphs and nets that use it can no longer run (their op is looked up by name).

    Parameters
    ----------
    name : str
        The name of an op registered with :func:`defop`.

    Returns
    -------
    OpDef
        The registry entry removed.

    Raises
    ------
    GraphError
        No op of that name is registered, or it is one of the library's own ops.

    Examples
    --------
    >>> _ = defop("halve_example", lambda x: x / 2, [lambda g, ans, x: g / 2])
    >>> undefop("halve_example").name, "halve_example" in registry()
    ('halve_example', False)
    """
    _refuse_library_op(name, "cannot be removed",
                       "undefop removes the ops registered with defop")
    op = get_op(name)
    del _REGISTRY[name]
    return op


def deflower(name: str, target: str, rule: Callable) -> OpDef:
    """Add (or replace) the lowering rule of registered op ``name`` for export ``target``.

    Parameters
    ----------
    name : str
        A registered op's name.
    target : {"torch", "onnx"}
        The export target.
    rule : callable
        The rule, with the signature that target's exporter documents.

    Returns
    -------
    OpDef
        The updated registry entry.

    Raises
    ------
    GraphError
        No op of that name is registered.
    LoweringError
        ``target`` is not one of the export targets.

    Examples
    --------
    >>> op = defop("twice_example", lambda x: 2 * x, [lambda g, ans, x: 2 * g])
    >>> sorted(deflower("twice_example", "torch", lambda torch, x: 2 * x).lower)
    ['torch']
    >>> _ = undefop("twice_example")
    """
    op = get_op(name)
    if target not in TARGETS:
        raise LoweringError(
            f"unknown export target {target!r}; the targets are {', '.join(TARGETS)}"
        )
    if not callable(rule):
        raise LoweringError(f"the {target} rule of op {name!r} must be callable, got {rule!r}")
    new = replace(op, lower={**op.lower, target: rule})
    _REGISTRY[name] = new
    return new


def get_op(name: str) -> OpDef:
    """Return the registry entry of op ``name``; a clear error if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise GraphError(
            f"no op registered under {name!r}; known ops: {', '.join(sorted(_REGISTRY))}. "
            "Register one with unrollgraph.ops.defop(name, forward, vjps, sym=...)"
        ) from None


def registry() -> dict[str, OpDef]:
    """A copy of the registry: op name -> :class:`OpDef`."""
    return dict(_REGISTRY)


# ---------------------------------------------------------------------------------------------
# helpers


_LEAD_AXES = tuple(tuple(range(n)) for n in range(8))  # the leading axes a gradient sums over


def unbroadcast(g, shape):
    """Sum ``g`` down to ``shape``, undoing numpy broadcasting.

    Examples
    --------
    >>> unbroadcast(np.ones((2, 3)), (3,))
    array([2., 2., 2.])
    >>> unbroadcast(np.ones((2, 3)), (2, 1))
    array([[3.],
           [3.]])
    """
    gshape = g.shape
    if gshape == shape:
        return g
    extra = len(gshape) - len(shape)
    # (np.add.reduce is what ndarray.sum calls, without its Python wrapper)
    if extra:
        g = np.add.reduce(g, axis=_LEAD_AXES[extra] if 0 < extra < 8 else tuple(range(extra)))
        if gshape[extra:] == shape:
            return g  # (the common case, a shared weight's or bias's: nothing else to sum)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = np.add.reduce(g, axis=axes, keepdims=True)
    return g


def _ew(fn):
    """Map a scalar sympy function over an object array."""
    vec = np.vectorize(fn, otypes=[object])
    return lambda *xs, **kw: vec(*xs)


def _sympy():
    import sympy

    return sympy


def _label(node) -> str:
    return node.label() if node is not None else "?"


def _shape(a) -> tuple:
    return tuple(np.shape(a))


def _broadcast_check(opname):
    def check(nodes, values, **attrs):
        shapes = [_shape(v) for v in values]
        try:
            np.broadcast_shapes(*shapes)
        except ValueError:
            pairs = " with ".join(f"{_label(n)} {s}" for n, s in zip(nodes, shapes))
            raise ShapeError(
                f"{opname}: cannot broadcast {pairs}: trailing sizes must be equal or 1; "
                "reshape one operand (e.g. x.reshape(...)) so the shapes line up"
            ) from None

    return check


def _axis_tuple(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(a % ndim if ndim else a for a in axis)


def _expand_to(g, shape, axis, keepdims):
    """Broadcast a reduced gradient back to ``shape`` (the VJP of a reduction)."""
    if not keepdims and len(shape) and axis is not None:  # axis=None: g is 0-d already
        g = np.expand_dims(g, _axis_tuple(axis, len(shape)))
    if type(g) is np.ndarray and math.prod(shape) <= _SMALL_EXPAND:
        out = np.empty(shape, g.dtype)  # (np.broadcast_to's checks cost more than the copy)
        out[...] = g
        return out
    return np.broadcast_to(g, shape)


# up to this many elements a reduction's VJP writes its gradient out instead of broadcasting
_SMALL_EXPAND = 4096


# ---------------------------------------------------------------------------------------------
# torch lowering rules too long for one line: rule(torch, *inputs, **attrs) -> torch.Tensor
# (``torch`` is the module, passed in so that importing unrollgraph never imports it)


def _torch_powc(torch, a, p):
    return torch.pow(a, int(p) if isinstance(p, (int, np.integer)) else float(p))


def _torch_bound(v):
    return None if v is None else float(v)


def _clip_vjp(g, ans, a, lo=None, hi=None):
    """Slope 1 inside ``[lo, hi]`` (bounds included), 0 outside; a NaN input is outside any
    bound given (PyTorch's ``clamp``), and with no bound at all clip is the identity."""
    if lo is None and hi is None:
        return g * np.ones_like(a)
    inside = (a >= lo) if hi is None else (a <= hi) if lo is None else (a >= lo) & (a <= hi)
    return g * inside


def _torch_clip(torch, a, lo=None, hi=None):
    if lo is None and hi is None:
        return a  # np.clip(a, None, None) is a itself
    return torch.clamp(a, min=_torch_bound(lo), max=_torch_bound(hi))


def _torch_compare(name):
    """gt/ge/lt/le: 0/1 in the operands' float type (float64 when neither is a float)."""

    def rule(torch, a, b):
        floats = [t.dtype for t in (a, b) if t.is_floating_point()]
        dtype = floats[0] if len(floats) == 1 else (
            torch.promote_types(*floats) if floats else torch.float64)
        return getattr(torch, name)(a, b).to(dtype)

    return rule


def _torch_reduce(fn):
    """sum / mean / max (``amax``: ties share the gradient, as the VJP above does)."""

    def rule(torch, a, axis=None, keepdims=False):
        dims = _axis_tuple(axis, a.ndim)
        if not dims:  # a 0-d value, or axis=(): numpy reduces nothing
            return a
        return getattr(torch, fn)(a, dim=dims, keepdim=bool(keepdims))

    return rule


def _torch_reshape(torch, a, shape):
    shape = (shape,) if isinstance(shape, (int, np.integer)) else shape
    return torch.reshape(a, tuple(int(s) for s in shape))


def _torch_transpose(torch, a, axes=None):
    if axes is None:
        return a.permute(tuple(reversed(range(a.ndim))))
    return a.permute(tuple(int(x) % a.ndim for x in axes))


def _torch_getitem(torch, a, index):
    items = index if isinstance(index, tuple) else (index,)
    for i in items:  # the common case first: ints, slices with positive steps, None, ...
        if isinstance(i, (list, np.ndarray, np.integer)) or (
                type(i) is slice and i.step is not None and i.step < 0):
            break
    else:
        return a[index]
    if all(type(i) is slice for i in items):
        # torch slices take no negative step: such a slice picks its positions along its own
        # axis (index_select), the others slice as they are; the batch axis stays free, so a
        # trace of the rule holds for any batch size
        out = a
        for d, sl in enumerate(items):
            if sl.step is not None and sl.step < 0:
                pos = np.arange(*sl.indices(a.shape[d]), dtype=np.int64)
                out = out.index_select(d, torch.as_tensor(pos, device=a.device))
            elif sl != slice(None):
                out = out[(slice(None),) * d + (sl,)]
        return out
    if any(isinstance(i, slice) and i.step is not None and i.step < 0 for i in items):
        # torch slices take no negative step: pick the same elements by their flat positions
        # (numpy computes which, on the shape alone); the gradient adds up as np.add.at does
        flat = np.arange(int(np.prod(a.shape)), dtype=np.int64).reshape(tuple(a.shape))[index]
        return a.reshape(-1)[torch.as_tensor(np.array(flat, copy=True), device=a.device)]
    conv = tuple(
        torch.as_tensor(np.asarray(i), device=a.device) if isinstance(i, (list, np.ndarray))
        else int(i) if isinstance(i, np.integer) else i
        for i in items
    )
    return a[conv if isinstance(index, tuple) else conv[0]]


def _torch_cross_entropy(torch, logits, labels):
    picked = torch.log_softmax(logits, dim=-1).gather(-1, labels.long().unsqueeze(-1))
    return -picked.squeeze(-1).mean()


# ---------------------------------------------------------------------------------------------
# elementwise arithmetic


def _bin(name, fwd, va, vb, sym, torch=None, onnx=None):
    return defop(
        name, fwd, [va, vb], sym=sym, check=_broadcast_check(name), torch=torch, onnx=onnx
    )


_bin(
    "add",
    np.add,
    lambda g, ans, a, b: unbroadcast(g, a.shape),
    lambda g, ans, a, b: unbroadcast(g, b.shape),
    lambda a, b: a + b,
    torch=lambda torch, a, b: a + b,
    onnx=lambda b, x, y: b.op("Add", x, y),
)
_bin(
    "sub",
    np.subtract,
    lambda g, ans, a, b: unbroadcast(g, a.shape),
    lambda g, ans, a, b: unbroadcast(-g, b.shape),
    lambda a, b: a - b,
    torch=lambda torch, a, b: a - b,
    onnx=lambda b, x, y: b.op("Sub", x, y),
)
_bin(
    "mul",
    np.multiply,
    lambda g, ans, a, b: unbroadcast(g * b, a.shape),
    lambda g, ans, a, b: unbroadcast(g * a, b.shape),
    lambda a, b: a * b,
    torch=lambda torch, a, b: a * b,
    onnx=lambda b, x, y: b.op("Mul", x, y),
)
_bin(
    "div",
    np.divide,
    lambda g, ans, a, b: unbroadcast(g / b, a.shape),
    lambda g, ans, a, b: unbroadcast(-g * ans / b, b.shape),
    lambda a, b: a / b,
    torch=lambda torch, a, b: a / b,
    onnx=lambda b, x, y: b.op("Div", x, y),
)


def _pow_grad_base(g, ans, a, b):
    # d(a**b)/da = b * a**(b - 1), and 0 where b == 0 (a**0 is the constant 1, also at a = 0,
    # where the formula would give 0 * 0**-1 = 0 * inf = NaN): PyTorch's convention
    zero = b == 0
    if np.any(zero):
        safe = np.where(zero, 1.0, b)
        return unbroadcast(np.where(zero, 0.0, g * safe * np.power(a, safe - 1)), a.shape)
    return unbroadcast(g * b * np.power(a, b - 1), a.shape)


def _pow_grad_exponent(g, ans, a, b):
    # d(a**b)/db = a**b * log(a); 0 at a == 0 with b >= 0 (PyTorch's convention: 0**b is 0
    # for b > 0 and 1 at b == 0, and the one-sided derivative from b > 0 is 0), -inf at a == 0
    # with b < 0 (inf * log 0), NaN for a < 0 (a real power of a negative base has no
    # derivative in its exponent)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = ans * np.log(a)
    return unbroadcast(g * np.where((a == 0) & (b >= 0), 0.0, term), b.shape)


def _powc_grad(g, ans, a, p):
    if p == 0:  # a**0 is the constant 1 (also at a = 0, where p * a**(p - 1) is 0 * inf)
        return np.zeros(np.shape(a), dtype=np.result_type(g, a))
    return g * (p * np.power(a, p - 1))


_bin(
    "pow",
    np.power,
    _pow_grad_base,
    _pow_grad_exponent,
    lambda a, b: a**b,
    torch=lambda torch, a, b: torch.pow(a, b),
    onnx=lambda b, x, y: b.op("Pow", x, y),
)
defop(
    "powc",
    lambda a, p: np.power(a, p),
    [_powc_grad],
    sym=lambda a, p: a**p,
    torch=_torch_powc,
    doc="a ** p for a constant exponent p (attribute)",
    onnx=lambda b, x, p: b.op("Pow", x, b.const(p)),
)
defop("neg", np.negative, [lambda g, ans, a: -g], sym=lambda a: -a,
      torch=lambda torch, a: -a,
      onnx=lambda b, x: b.op("Neg", x))


def _max_like(loses):
    """VJPs of maximum/minimum (PyTorch's convention): the larger (smaller) input takes the
    gradient, a tie splits it evenly, and where an input is NaN (so is the output) both
    inputs take it. ``loses(a, b)`` says where ``a`` is not picked."""

    def weight(a, b):
        w = 1.0 - loses(a, b) - 0.5 * (a == b)
        return w.astype(np.result_type(a, b), copy=False)

    def va(g, ans, a, b):
        return unbroadcast(g * weight(a, b), a.shape)

    def vb(g, ans, a, b):
        return unbroadcast(g * weight(b, a), b.shape)

    return va, vb


_bin(
    "maximum",
    np.maximum,
    *_max_like(lambda a, b: a < b),
    _ew(lambda a, b: _sympy().Max(a, b)),
    torch=lambda torch, a, b: torch.maximum(a, b),
    onnx=lambda b, x, y: b.op("Max", x, y),
)
_bin(
    "minimum",
    np.minimum,
    *_max_like(lambda a, b: a > b),
    _ew(lambda a, b: _sympy().Min(a, b)),
    torch=lambda torch, a, b: torch.minimum(a, b),
    onnx=lambda b, x, y: b.op("Min", x, y),
)


# ---------------------------------------------------------------------------------------------
# elementwise functions


try:  # numpy 2: the floating-point error settings in force are one context variable's value
    from numpy._core._ufunc_config import _extobj_contextvar as _FP_SETTINGS
except ImportError:  # (another layout: np.errstate, the same settings, a few µs more a call)
    _FP_SETTINGS = None
# (the settings in force when last asked, the same settings with overflow ignored)
_OVER_IGNORED: tuple = (None, None)


def _exp_over_ignored(e):
    """``np.exp(e, e)`` with an overflow not reported, every other floating-point setting as
    the caller has it: ``np.errstate(over="ignore")``, whose settings object is made once per
    caller's settings (entering ``np.errstate`` costs more than a small exp; a sigmoid runs
    once or twice in each step of a gated cell)."""
    if _FP_SETTINGS is None:
        with np.errstate(over="ignore"):
            np.exp(e, e)
        return
    global _OVER_IGNORED
    now = _FP_SETTINGS.get()
    known = _OVER_IGNORED  # (one tuple, read once: threads may be replacing it)
    if known[0] is not now:
        with np.errstate(over="ignore"):
            known = _OVER_IGNORED = (now, _FP_SETTINGS.get())
    token = _FP_SETTINGS.set(known[1])
    try:
        np.exp(e, e)
    finally:
        _FP_SETTINGS.reset(token)


def _sigmoid(x):
    # exp(-x) overflows to inf for x below about -709 in float64 (-88 in float32); then
    # 1 / (1 + inf) is exactly the limit 0, so the overflow is expected and not reported
    if not isinstance(x, np.ndarray) or x.ndim == 0:
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-x))
    e = np.negative(x)  # one new array, the rest in place: less fresh memory to touch
    _exp_over_ignored(e)
    e += 1.0
    return np.reciprocal(e, e)


defop("exp", np.exp, [lambda g, ans, a: g * ans], sym=_ew(lambda a: _sympy().exp(a)),
      torch=lambda torch, a: torch.exp(a),
      onnx=lambda b, x: b.op("Exp", x))
defop("log", np.log, [lambda g, ans, a: g / a], sym=_ew(lambda a: _sympy().log(a)),
      torch=lambda torch, a: torch.log(a),
      onnx=lambda b, x: b.op("Log", x))
defop(
    "tanh", np.tanh, [lambda g, ans, a: g * (1.0 - ans * ans)], sym=_ew(lambda a: _sympy().tanh(a)),
    torch=lambda torch, a: torch.tanh(a),
    onnx=lambda b, x: b.op("Tanh", x),
)
defop(
    "sigmoid",
    _sigmoid,
    [lambda g, ans, a: g * ans * (1.0 - ans)],
    sym=_ew(lambda a: 1 / (1 + _sympy().exp(-a))),
    torch=lambda torch, a: torch.sigmoid(a),
    # numpy's 1 / (1 + exp(-x)): onnxruntime's Sigmoid loses relative accuracy below 0
    onnx=lambda b, x: b.op("Reciprocal", b.op("Add", b.op("Exp", b.op("Neg", x)), b.const(1))),
)
defop(
    "relu",
    lambda a: np.maximum(a, 0).astype(a.dtype, copy=False),
    # slope 1 where a > 0, 0 where a <= 0; a NaN input passes the gradient on, as in PyTorch
    # (whose relu backward masks where the result is <= 0, which NaN never is)
    [lambda g, ans, a: g * ~(a <= 0)],
    sym=_ew(lambda a: _sympy().Max(a, 0)),
    torch=lambda torch, a: torch.relu(a),
    onnx=lambda b, x: b.op("Relu", x),
)
defop("sqrt", np.sqrt, [lambda g, ans, a: g / (2.0 * ans)], sym=_ew(lambda a: _sympy().sqrt(a)),
      torch=lambda torch, a: torch.sqrt(a),
      onnx=lambda b, x: b.op("Sqrt", x))


def _nan_sign(a):
    """The sign of ``a`` in its float type, 0 at NaN (as ``torch.sign``): the slope of ``abs``,
    so that a NaN input sends 0, not NaN, back (also where the upstream gradient is 0)."""
    return np.subtract(a > 0, a < 0, dtype=a.dtype if a.dtype.kind == "f" else np.float64)


defop("abs", np.abs, [lambda g, ans, a: g * _nan_sign(a)], sym=_ew(lambda a: _sympy().Abs(a)),
      torch=lambda torch, a: torch.abs(a),
      onnx=lambda b, x: b.op("Abs", x))
defop(
    "clip",
    lambda a, lo=None, hi=None: np.clip(a, lo, hi),
    [_clip_vjp],
    sym=lambda a, lo=None, hi=None: _ew(
        lambda x: _sympy().Min(_sympy().Max(x, -_sympy().oo if lo is None else lo),
                               _sympy().oo if hi is None else hi)
    )(a),
    torch=_torch_clip,
    onnx=lambda b, x, lo=None, hi=None: b.clip(x, lo, hi),
)
defop(
    "where",
    lambda c, a, b: np.where(c, a, b),
    [
        None,
        lambda g, ans, c, a, b: unbroadcast(np.where(c, g, 0.0), a.shape),
        lambda g, ans, c, a, b: unbroadcast(np.where(c, 0.0, g), b.shape),
    ],
    sym=lambda c, a, b: np.where(c.astype(bool), a, b),
    torch=lambda torch, c, a, b: torch.where(c != 0, a, b),
    check=_broadcast_check("where"),
    nondiff=(0,),
    onnx=lambda b, c, x, y: b.op("Where", b.cast(c, bool), x, y),
)




# comparisons: a 0/1 value of the operands' float type (1 where the comparison holds), with no
# gradient (a step function is flat almost everywhere; like PyTorch's ``(a > b).float()``).
# They are graph nodes, so a condition built from a cell's state is computed again at every
# step and every call; ``where`` reads a nonzero condition as true.


def _compare(fn):
    def forward(a, b):
        out = fn(a, b)
        kinds = [x.dtype for x in (a, b) if isinstance(x, np.ndarray) and x.dtype.kind == "f"]
        dtype = np.result_type(*kinds) if kinds else np.float64
        return out.astype(dtype if dtype in (np.float32, np.float64) else np.float64)

    return forward


def _compare_sym(rel):
    return _ew(lambda a, b: _sympy().Piecewise((1, rel(a, b)), (0, True)))


for _name, _fn, _rel, _sign in (
    ("gt", np.greater, lambda a, b: a > b, ">"),
    ("ge", np.greater_equal, lambda a, b: a >= b, ">="),
    ("lt", np.less, lambda a, b: a < b, "<"),
    ("le", np.less_equal, lambda a, b: a <= b, "<="),
):
    defop(
        _name,
        _compare(_fn),
        [None, None],
        sym=_compare_sym(_rel),
        torch=_torch_compare(_name),
        check=_broadcast_check(_name),
        nondiff=(0, 1),
        doc=f"1.0 where a {_sign} b, else 0.0 (no gradient)",
        onnx=lambda b, x, y, _op={"gt": "Greater", "ge": "GreaterOrEqual", "lt": "Less",
                                  "le": "LessOrEqual"}[_name]: b.cast(b.op(_op, x, y), b.dtype),
    )
del _name, _fn, _rel, _sign

# ---------------------------------------------------------------------------------------------
# matmul


def _matmul_check(nodes, values, **attrs):
    a, b = values
    sa, sb = _shape(a), _shape(b)
    na, nb = (_label(n) for n in nodes)
    if len(sa) == 0 or len(sb) == 0:
        raise ShapeError(
            f"matmul: cannot multiply {na} {sa} by {nb} {sb}: matmul needs arrays with at least "
            "one axis; use * for a scalar product"
        )
    ka = sa[-1]
    kb = sb[0] if len(sb) == 1 else sb[-2]
    if ka != kb:
        raise ShapeError(
            f"matmul: cannot multiply {na} {sa} by {nb} {sb}: inner sizes {ka} and {kb} differ; "
            f"did you mean {nb}.T?" if len(sb) == 2 and sb[-1] == ka else
            f"matmul: cannot multiply {na} {sa} by {nb} {sb}: inner sizes {ka} and {kb} differ"
        )
    try:
        np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        raise ShapeError(
            f"matmul: cannot multiply {na} {sa} by {nb} {sb}: batch shapes {sa[:-2]} and "
            f"{sb[:-2]} do not broadcast"
        ) from None


def _matmul_va(g, ans, a, b):
    if b.ndim == 2 and a.ndim >= 2 and g.ndim == a.ndim:
        return g @ b.T
    if b.ndim == 1:
        # (..., k) @ (k,) -> (...): grad a = g[..., None] * b
        return unbroadcast(g[..., None] * b, a.shape) if a.ndim > 1 else g * b
    if a.ndim == 1:
        # (k,) @ (..., k, n) -> (..., n)
        return unbroadcast(np.matmul(g[..., None, :], np.swapaxes(b, -1, -2))[..., 0, :], a.shape)
    return unbroadcast(np.matmul(g, np.swapaxes(b, -1, -2)), a.shape)


def _matmul_vb(g, ans, a, b):
    if a.ndim == 1:
        if b.ndim == 1:
            return g * a
        return unbroadcast(a[:, None] * g[..., None, :], b.shape)
    if b.ndim == 1:
        return unbroadcast(np.matmul(np.swapaxes(a, -1, -2), g[..., None])[..., 0], b.shape)
    if a.ndim == 2 and g.ndim == 2:
        return a.T @ g
    if b.ndim == 2 and g.ndim == a.ndim:
        # one weight shared over leading axes: a single (N, k)^T @ (N, n) product
        return a.reshape(-1, a.shape[-1]).T @ g.reshape(-1, g.shape[-1])
    return unbroadcast(np.matmul(np.swapaxes(a, -1, -2), g), b.shape)


def _matmul(a, b):
    if b.ndim == 2 and a.ndim > 2 and a.flags.c_contiguous:
        # a stack of rows times one matrix: one (N, k) @ (k, n) product, not N/rows small ones
        return (a.reshape(-1, a.shape[-1]) @ b).reshape(a.shape[:-1] + (b.shape[1],))
    return np.matmul(a, b)


defop(
    "matmul",
    _matmul,
    [_matmul_va, _matmul_vb],
    sym=lambda a, b: np.matmul(a, b),
    torch=lambda torch, a, b: torch.matmul(a, b),
    check=_matmul_check,
    onnx=lambda b, x, y: b.op("MatMul", x, y),
)


# ---------------------------------------------------------------------------------------------
# reductions


def _reduce_sym(fn):
    def sym(a, axis=None, keepdims=False):
        return np.asarray(fn(a, axis=axis, keepdims=keepdims), dtype=object)

    return sym


defop(
    "sum",
    lambda a, axis=None, keepdims=False: a.sum(axis=axis, keepdims=keepdims),
    [lambda g, ans, a, axis=None, keepdims=False: _expand_to(g, a.shape, axis, keepdims)],
    sym=_reduce_sym(np.sum),
    torch=_torch_reduce("sum"),
    onnx=lambda b, x, axis=None, keepdims=False: b.reduce("ReduceSum", x, axis, keepdims),
)


def _mean_count(shape, axis):
    n = 1
    for ax in _axis_tuple(axis, len(shape)):
        n *= shape[ax]
    return n


def _mean(a, axis=None, keepdims=False):
    """``a.mean(axis)``; the mean of nothing is NaN, as in PyTorch (an empty batch), without
    numpy's "Mean of empty slice" warning."""
    if a.size:
        return a.mean(axis=axis, keepdims=keepdims)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.divide(a.sum(axis=axis, keepdims=keepdims), _mean_count(a.shape, axis),
                         dtype=a.dtype)


defop(
    "mean",
    _mean,
    [
        lambda g, ans, a, axis=None, keepdims=False: _expand_to(  # (an empty axis: no
            g / max(_mean_count(a.shape, axis), 1), a.shape, axis, keepdims  # element to get it)
        )
    ],
    sym=lambda a, axis=None, keepdims=False: np.asarray(
        np.sum(a, axis=axis, keepdims=keepdims) / _mean_count(a.shape, axis), dtype=object
    ),
    torch=_torch_reduce("mean"),
    onnx=lambda b, x, axis=None, keepdims=False: b.reduce("ReduceMean", x, axis, keepdims),
)


def _max_vjp(g, ans, a, axis=None, keepdims=False):
    # ties share the gradient evenly (PyTorch's amax); where the maximum is NaN, the NaN
    # elements take it (a == NaN is never true)
    full = _expand_to(ans, a.shape, axis, keepdims)
    hit = a == full
    if np.isnan(ans).any():
        hit |= np.isnan(a)
    mask = hit.astype(a.dtype)
    count = mask.sum(axis=_axis_tuple(axis, a.ndim), keepdims=True)
    return _expand_to(g, a.shape, axis, keepdims) * mask / count


def _max_sym(a, axis=None, keepdims=False):
    sp = _sympy()
    axes = _axis_tuple(axis, a.ndim)
    moved = np.moveaxis(a, axes, tuple(range(-len(axes), 0))) if axes else a
    flat = moved.reshape(moved.shape[: moved.ndim - len(axes)] + (-1,))
    res = np.empty(flat.shape[:-1], dtype=object)
    for idx in np.ndindex(res.shape):
        res[idx] = sp.Max(*flat[idx])
    if keepdims:
        res = np.expand_dims(res, axes)
    return res


defop(
    "max",
    lambda a, axis=None, keepdims=False: a.max(axis=axis, keepdims=keepdims),
    [_max_vjp],
    sym=_max_sym,
    torch=_torch_reduce("amax"),
    onnx=lambda b, x, axis=None, keepdims=False: b.reduce("ReduceMax", x, axis, keepdims),
)


# ---------------------------------------------------------------------------------------------
# shape ops


def _reshape_check(nodes, values, shape):
    a = values[0]
    try:
        np.empty(np.shape(a), dtype=np.int8).reshape(shape)
    except ValueError:
        raise ShapeError(
            f"reshape: cannot reshape {_label(nodes[0])} {_shape(a)} ({np.size(a)} elements) "
            f"into {tuple(shape)}; the number of elements must stay the same"
        ) from None


defop(
    "reshape",
    lambda a, shape: np.reshape(a, shape),
    [lambda g, ans, a, shape: np.reshape(g, a.shape)],
    sym=lambda a, shape: np.reshape(a, shape),
    torch=_torch_reshape,
    check=_reshape_check,
    onnx=lambda b, x, shape: b.op("Reshape", x, b.ints(shape)),
)


def _transpose(a, axes=None):
    # the method where it exists: np.transpose's dispatch costs more than a small array's view
    return a.transpose(axes) if type(a) is np.ndarray else np.transpose(a, axes)


def _inverse_axes(axes, ndim):
    if axes is None:
        return None
    return tuple(np.argsort([a % ndim for a in axes]))


defop(
    "transpose",
    _transpose,
    [lambda g, ans, a, axes=None: _transpose(g, _inverse_axes(axes, a.ndim))],
    sym=lambda a, axes=None: np.transpose(a, axes),
    torch=_torch_transpose,
    onnx=lambda b, x, axes=None: b.op("Transpose", x, perm=[
        a % len(b.shape) for a in (range(len(b.shape))[::-1] if axes is None else axes)]),
)


def _is_advanced(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, (list, np.ndarray)) for i in items)


def _getitem_vjp(g, ans, a, index):
    out = np.zeros(a.shape, dtype=np.result_type(g.dtype, a.dtype))
    if _is_advanced(index):
        np.add.at(out, index, g)
    else:
        out[index] = g
    return out


def _getitem_check(nodes, values, index):
    try:
        np.empty(np.shape(values[0]), dtype=np.int8)[index]
    except (IndexError, TypeError, ValueError) as exc:
        raise ShapeError(
            f"getitem: cannot index {_label(nodes[0])} {_shape(values[0])} with {index!r}: {exc}"
        ) from None


defop(
    "getitem",
    lambda a, index: a[index],
    [_getitem_vjp],
    sym=lambda a, index: np.asarray(a[index], dtype=object),
    torch=_torch_getitem,
    check=_getitem_check,
    onnx=lambda b, x, index: b.index(x, index),
)


def _concat_check(nodes, values, axis=0):
    shapes = [_shape(v) for v in values]
    try:
        np.concatenate([np.empty(s, dtype=np.int8) for s in shapes], axis=axis)
    except (ValueError, np.exceptions.AxisError) as exc:
        listed = ", ".join(f"{_label(n)} {s}" for n, s in zip(nodes, shapes))
        raise ShapeError(f"concat along axis {axis}: cannot join {listed}: {exc}") from None


def _concat_vjp(g, ans, *xs, axis=0, index=0):
    ax = axis % ans.ndim
    start = sum(x.shape[ax] for x in xs[:index])
    sl = [slice(None)] * ans.ndim
    sl[ax] = slice(start, start + xs[index].shape[ax])
    return g[tuple(sl)]


defop(
    "concat",
    lambda *xs, axis=0: np.concatenate(xs, axis=axis),
    [_concat_vjp],
    sym=lambda *xs, axis=0: np.concatenate(xs, axis=axis),
    torch=lambda torch, *xs, axis=0: torch.cat(xs, dim=axis),
    check=_concat_check,
    variadic=True,
    onnx=lambda b, *xs, axis=0: b.op("Concat", *xs, axis=axis),
)


def _stack_check(nodes, values, axis=0):
    shapes = [_shape(v) for v in values]
    if len(set(shapes)) > 1:
        listed = ", ".join(f"{_label(n)} {s}" for n, s in zip(nodes, shapes))
        raise ShapeError(f"stack: all inputs need the same shape, got {listed}")


defop(
    "stack",
    lambda *xs, axis=0: np.stack(xs, axis=axis),
    [lambda g, ans, *xs, axis=0, index=0: np.take(g, index, axis=axis)],
    sym=lambda *xs, axis=0: np.stack(xs, axis=axis),
    torch=lambda torch, *xs, axis=0: torch.stack(xs, dim=axis),
    check=_stack_check,
    always_check=True,
    variadic=True,
    onnx=lambda b, *xs, axis=0: b.op(
        "Concat", *[b.op("Unsqueeze", x, b.ints([axis])) for x in xs], axis=axis),
)


# ---------------------------------------------------------------------------------------------
# softmax family and losses


def _softmax(a, axis=-1):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(a, axis=-1):
    z = a - a.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _softmax_sym(a, axis=-1):
    sp = _sympy()
    e = _ew(sp.exp)(a)
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax_sym(a, axis=-1):
    sp = _sympy()
    s = np.sum(_ew(sp.exp)(a), axis=axis, keepdims=True)
    return a - _ew(sp.log)(s)


defop(
    "softmax",
    _softmax,
    [lambda g, ans, a, axis=-1: ans * (g - (g * ans).sum(axis=axis, keepdims=True))],
    sym=_softmax_sym,
    torch=lambda torch, a, axis=-1: torch.softmax(a, dim=axis),
    onnx=lambda b, x, axis=-1: b.softmax(x, axis),
)
defop(
    "log_softmax",
    _log_softmax,
    [lambda g, ans, a, axis=-1: g - np.exp(ans) * g.sum(axis=axis, keepdims=True)],
    sym=_log_softmax_sym,
    torch=lambda torch, a, axis=-1: torch.log_softmax(a, dim=axis),
    onnx=lambda b, x, axis=-1: b.log_softmax(x, axis),
)


def _same_shape_check(opname):
    def check(nodes, values, **attrs):
        sa, sb = _shape(values[0]), _shape(values[1])
        if sa != sb:
            raise ShapeError(
                f"{opname}: prediction {_label(nodes[0])} {sa} and target {_label(nodes[1])} "
                f"{sb} must have the same shape; reshape the target to {sa}"
            )

    return check


defop(
    "mse_loss",
    lambda p, t: _mean(np.square(p - t)),
    [
        lambda g, ans, p, t: g * (2.0 / max(p.size, 1)) * (p - t),
        lambda g, ans, p, t: g * (-2.0 / max(p.size, 1)) * (p - t),
    ],
    sym=lambda p, t: np.asarray(np.sum((p - t) ** 2) / p.size, dtype=object),
    torch=lambda torch, p, t: torch.square(p - t).mean(),
    check=_same_shape_check("mse_loss"),
    always_check=True,
    onnx=lambda b, p, t: b.reduce("ReduceMean", b.op("Mul", d := b.op("Sub", p, t), d)),
)


def _ce_check(nodes, values, **attrs):
    logits, labels = values
    sl, sy = _shape(logits), _shape(labels)
    if len(sl) < 1 or sl[:-1] != sy:
        raise ShapeError(
            f"cross_entropy: logits {_label(nodes[0])} {sl} need labels of shape {sl[:-1]} "
            f"(one class index per row; classes on the last axis), got {_label(nodes[1])} {sy}"
        )
    labels = np.asarray(labels)
    lab = _label(nodes[1])
    lab = "labels" if lab == "labels" else f"labels {lab}"
    try:
        _ce_values_check(labels, lab, sl)
    except ShapeError as err:
        from .tensor import _placeholder_source

        source = _placeholder_source(nodes[1]) if nodes[1] is not None else None
        if source is None:
            raise
        from .errors import CellError

        raise CellError(
            f"cross_entropy: {lab} are computed from {source} of a cell, which holds the "
            f"stand-in value {float(np.ravel(labels)[0])} while the cell is built, so they "
            "cannot be checked as class indices there (and would not be checked at each "
            "step): compute the loss outside the cell, on the net's outputs, e.g. "
            "ug.cross_entropy(out[t], labels[t]) or ug.cross_entropy(out.reshape(-1, C), "
            "labels.reshape(-1)), where the labels are checked"
        ) from err


def _ce_values_check(labels, lab, sl):
    """Refuse labels that are not integer class indices in ``[0, classes)``."""
    if labels.dtype.kind not in "biuf":
        raise ShapeError(
            f"cross_entropy: {lab} must be integer class indices, got dtype {labels.dtype}"
        )
    if labels.dtype.kind not in "iu":
        if labels.size and not np.all(np.isfinite(labels)):
            raise ShapeError(
                f"cross_entropy: {lab} must be integer class indices, got a NaN or an infinity"
            )
        if labels.size and not np.all(np.mod(labels, 1) == 0):
            raise ShapeError(
                f"cross_entropy: {lab} must be integer class indices, got "
                f"dtype {labels.dtype} with fractional values"
            )
    if labels.size and (labels.min() < 0 or labels.max() >= sl[-1]):
        raise ShapeError(
            f"cross_entropy: {lab} must lie in [0, {sl[-1] - 1}] for "
            f"{sl[-1]} classes; got values from {labels.min()} to {labels.max()}"
        )


def _pick(a, labels):
    idx = np.asarray(labels).astype(np.intp)
    return np.take_along_axis(a, idx[..., None], axis=-1)[..., 0]


def _ce_forward(logits, labels):
    return -_mean(_pick(_log_softmax(logits, -1), labels))


def _ce_vjp(g, ans, logits, labels):
    p = _softmax(logits, -1)
    idx = np.asarray(labels).astype(np.intp)
    np.put_along_axis(p, idx[..., None], _pick(p, idx)[..., None] - 1.0, axis=-1)
    return p * (g / max(idx.size, 1))


def _ce_sym(logits, labels):
    lsm = _log_softmax_sym(logits, -1)
    idx = np.asarray(labels).astype(np.intp)
    picked = np.take_along_axis(lsm, idx[..., None], axis=-1)[..., 0]
    return np.asarray(-np.sum(picked) / max(idx.size, 1), dtype=object)


defop(
    "cross_entropy",
    _ce_forward,
    [_ce_vjp, None],
    sym=_ce_sym,
    torch=_torch_cross_entropy,
    check=_ce_check,
    always_check=True,
    nondiff=(1,),
    # (axis counted from 0: the reference evaluator's GatherElements misreads axis=-1)
    onnx=lambda b, x, labels: b.op("Neg", b.reduce("ReduceMean", b.op(
        "GatherElements", b.log_softmax(x, -1),
        b.op("Unsqueeze", b.cast(labels, np.int64), b.ints([-1])), axis=len(b.in_shapes[0]) - 1))),
)


def _bce_forward(x, y):
    return _mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))


def _bce_sym(x, y):
    sp = _sympy()
    terms = _ew(lambda a, b: sp.log(1 + sp.exp(a)) - a * b)(x, y)
    return np.asarray(np.sum(terms) / x.size, dtype=object)


defop(
    "binary_cross_entropy_with_logits",
    _bce_forward,
    [
        lambda g, ans, x, y: g * (_sigmoid(x) - y) / max(x.size, 1),
        lambda g, ans, x, y: g * (-x) / max(x.size, 1),
    ],
    sym=_bce_sym,
    torch=lambda torch, x, y: torch.nn.functional.binary_cross_entropy_with_logits(x, y),
    check=_same_shape_check("binary_cross_entropy_with_logits"),
    always_check=True,
    onnx=lambda b, x, y: b.reduce("ReduceMean", b.op("Add", b.op(
        "Sub", b.op("Relu", x), b.op("Mul", x, y)),
        b.log1p(b.op("Exp", b.op("Neg", b.op("Abs", x)))))),
)


# ---------------------------------------------------------------------------------------------
# multi-output plumbing: an op whose value is a tuple (an unrolled run) and ``item`` to pick one
# output. The engine routes an ``item`` gradient into slot ``index`` of its input's gradient list.

defop(
    "item",
    lambda tup, index: tup[index],
    [None],
    torch=lambda torch, tup, index: tup[index],
    doc="output number `index` of a multi-output node",
)


# What each op's VJPs read besides the output gradient: "ans" (the op's own value) and the
# indices of the inputs whose *values* they use. Shapes and dtypes are always available.
_READS = {
    "add": (), "sub": (), "neg": (), "sum": (), "mean": (), "reshape": (), "transpose": (),
    "getitem": (), "concat": (), "stack": (),
    "mul": (0, 1), "div": (1, "ans"), "pow": (0, 1, "ans"), "powc": (0,),
    "maximum": (0, 1), "minimum": (0, 1), "matmul": (0, 1), "where": (0,),
    "exp": ("ans",), "tanh": ("ans",), "sigmoid": ("ans",), "sqrt": ("ans",),
    "softmax": ("ans",), "log_softmax": ("ans",),
    "log": (0,), "relu": (0,), "abs": (0,), "clip": (0,), "max": (0, "ans"),
    "mse_loss": (0, 1), "cross_entropy": (0, 1), "binary_cross_entropy_with_logits": (0, 1),
    "gt": (), "ge": (), "lt": (), "le": (),
}
for _name, _reads in _READS.items():
    _REGISTRY[_name] = replace(_REGISTRY[_name], reads=_reads)
del _name, _reads

"""``Tensor``: a numpy value bound to one explicit graph node, with eager evaluation and
reverse-mode differentiation.

Every operation on tensors evaluates at once (so values can be inspected, micrograd-style) and
records one :class:`~unrollgraph.graph.Node`. ``backward()`` walks the recorded graph once in
reverse topological order with an explicit stack and accumulates gradients.

Gradient semantics follow PyTorch: a leaf's ``.grad`` **accumulates** over ``backward()`` calls
until :meth:`Tensor.zero_grad` resets it. Unlike PyTorch, intermediate tensors keep their
``.grad`` too (so diagrams can show every gradient).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from .errors import AnomalyError, GradientError, ShapeError, UnrollGraphError
from .graph import Graph, Node, toposort
from .ops import get_op

__all__ = [
    "Tensor",
    "tensor",
    "apply",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "detect_anomaly",
]


class _Flags:
    grad_enabled = True
    anomaly = False


_FLAGS = _Flags()
_FLOATS = (np.float64, np.float32)


def _as_float_array(data, dtype=None) -> np.ndarray:
    arr = np.asarray(data, dtype=dtype)
    if dtype is None and arr.dtype.type not in _FLOATS:
        if arr.dtype == object:
            raise TypeError(f"cannot make a tensor from {type(data).__name__} objects")
        if arr.dtype.kind == "c":
            raise TypeError("complex values are not supported; pass real float arrays")
        arr = arr.astype(np.float32 if arr.dtype == np.float16 else np.float64)
    return arr


class Tensor:
    """A numpy array with a graph node, a gradient and Python operators.

    Create tensors with :func:`tensor`. Operators ``+ - * / ** @``, unary ``-``, indexing and
    the methods below each add one node to the graph.

    Attributes
    ----------
    data : numpy.ndarray
        The value.
    grad : numpy.ndarray or None
        The gradient of the last ``backward()`` output with respect to this tensor, summed over
        calls (see :meth:`zero_grad`).
    node : Node
        This tensor's node in the graph.
    requires_grad : bool
        Whether gradients flow to this tensor.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor([1.0, 2.0, 3.0], requires_grad=True, name="x")
    >>> y = (x * x).sum()
    >>> y.backward()
    >>> x.grad
    array([2., 4., 6.])
    """

    __slots__ = ("data", "grad", "node", "requires_grad", "_parents", "__weakref__")
    __array_ufunc__ = None  # make numpy defer to our reflected operators

    def __init__(self, data, node: Node, parents: tuple = (), requires_grad: bool = False):
        self.data = data
        self.grad = None
        self.node = node
        self.requires_grad = requires_grad
        self._parents = parents

    # -- basic properties ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """Shape of the value."""
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def name(self) -> str | None:
        """The user-given name (shown in printed graphs and diagrams)."""
        return self.node.name

    @name.setter
    def name(self, value: str | None) -> None:
        self.node = self.node.replace(name=value)

    @property
    def is_leaf(self) -> bool:
        """True for tensors made by the user rather than by an op."""
        return not self._parents

    def numpy(self) -> np.ndarray:
        """The value as a numpy array (not a copy)."""
        return self.data

    def item(self) -> float:
        """The value of a one-element tensor as a Python float."""
        if self.data.size != 1:
            raise ShapeError(
                f"item() needs a one-element tensor; {self.node.label()} has shape {self.shape}"
            )
        return self.data.item()

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.data, precision=4, threshold=20, separator=", ")
        extra = f", name={self.name!r}" if self.name else ""
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __bool__(self):
        raise TypeError(
            "the truth value of a Tensor is ambiguous; compare t.data or use ug.where(...)"
        )

    # -- gradients ------------------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Reset ``.grad`` to ``None`` (gradients otherwise accumulate over backward calls)."""
        self.grad = None

    def detach(self) -> "Tensor":
        """A new leaf with the same value and no history (gradient stops here)."""
        return Tensor(self.data, Node("leaf", name=self.name, shape=self.shape,
                                      dtype=str(self.dtype)))

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        """Set ``requires_grad`` on a leaf in place and return it."""
        if self._parents and not flag:
            raise GradientError("only leaves can stop requiring grad; use t.detach() instead")
        self.requires_grad = flag
        return self

    def backward(self, gradient=None) -> None:
        """Compute the gradient of this tensor with respect to every tensor it depends on.

        One walk in reverse topological order (explicit stack: graphs of millions of nodes
        work). Each tensor's ``.grad`` receives the sum over every path, and leaves keep
        accumulating over calls, as in PyTorch.

        Parameters
        ----------
        gradient : array_like, optional
            The seed ``dL/dself``; required unless this tensor holds a single element.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> w = ug.tensor(3.0, requires_grad=True)
        >>> (w * w + w).backward()
        >>> float(w.grad)
        7.0
        """
        if not self.requires_grad:
            raise GradientError(
                f"backward() on {self.node.label()}, which does not require grad: none of the "
                "tensors it was computed from has requires_grad=True. Create the leaves with "
                "ug.tensor(data, requires_grad=True)"
            )
        if gradient is None:
            if self.data.size != 1:
                raise GradientError(
                    f"backward() on a non-scalar tensor {self.node.label()} of shape "
                    f"{self.shape} needs a seed gradient: pass gradient=np.ones({self.shape}) "
                    "or reduce first, e.g. t.sum().backward()"
                )
            seed = np.ones_like(self.data)
        else:
            seed = np.asarray(gradient, dtype=self.data.dtype)
            if seed.shape != self.shape:
                raise ShapeError(
                    f"backward(): seed gradient of shape {seed.shape} does not match "
                    f"{self.node.label()} of shape {self.shape}"
                )
        _backward(self, seed)

    # -- operators -----------------------------------------------------------------------------
    def __add__(self, other):
        return apply("add", self, other)

    def __radd__(self, other):
        return apply("add", other, self)

    def __sub__(self, other):
        return apply("sub", self, other)

    def __rsub__(self, other):
        return apply("sub", other, self)

    def __mul__(self, other):
        return apply("mul", self, other)

    def __rmul__(self, other):
        return apply("mul", other, self)

    def __truediv__(self, other):
        return apply("div", self, other)

    def __rtruediv__(self, other):
        return apply("div", other, self)

    def __pow__(self, other):
        if isinstance(other, (int, float, np.integer, np.floating)):
            return apply("powc", self, p=float(other))
        return apply("pow", self, other)

    def __rpow__(self, other):
        return apply("pow", other, self)

    def __neg__(self):
        return apply("neg", self)

    def __matmul__(self, other):
        return apply("matmul", self, other)

    def __rmatmul__(self, other):
        return apply("matmul", other, self)

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        if isinstance(index, list):
            index = np.asarray(index)
        return apply("getitem", self, index=index)

    # comparisons give plain boolean arrays (no gradient), handy for ug.where
    def __gt__(self, other):
        return self.data > _value(other)

    def __ge__(self, other):
        return self.data >= _value(other)

    def __lt__(self, other):
        return self.data < _value(other)

    def __le__(self, other):
        return self.data <= _value(other)

    __hash__ = object.__hash__

    # -- methods -------------------------------------------------------------------------------
    @property
    def T(self) -> "Tensor":
        """The transpose (axes reversed)."""
        return apply("transpose", self, axes=None)

    def transpose(self, *axes) -> "Tensor":
        """Permute axes, as ``numpy.transpose``."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        return apply("transpose", self, axes=tuple(axes) if axes else None)

    def reshape(self, *shape) -> "Tensor":
        """Reshape, as ``numpy.reshape``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return apply("reshape", self, shape=tuple(int(s) for s in shape))

    def sum(self, axis=None, keepdims=False) -> "Tensor":
        return apply("sum", self, axis=_axis(axis), keepdims=keepdims)

    def mean(self, axis=None, keepdims=False) -> "Tensor":
        return apply("mean", self, axis=_axis(axis), keepdims=keepdims)

    def max(self, axis=None, keepdims=False) -> "Tensor":
        return apply("max", self, axis=_axis(axis), keepdims=keepdims)

    def exp(self):
        return apply("exp", self)

    def log(self):
        return apply("log", self)

    def tanh(self):
        return apply("tanh", self)

    def sigmoid(self):
        return apply("sigmoid", self)

    def relu(self):
        return apply("relu", self)

    def sqrt(self):
        return apply("sqrt", self)

    def abs(self):
        return apply("abs", self)

    def clip(self, lo=None, hi=None):
        return apply("clip", self, lo=lo, hi=hi)


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


def _value(x):
    return x.data if isinstance(x, Tensor) else x


def tensor(data, requires_grad: bool = False, name: str | None = None, dtype=None) -> Tensor:
    """Make a leaf tensor.

    Parameters
    ----------
    data : array_like or Tensor
        The value. Python numbers and integer arrays become float64; float32 stays float32.
    requires_grad : bool
        Whether ``backward()`` fills this tensor's ``.grad``.
    name : str, optional
        A name for printed graphs and diagrams.
    dtype : numpy dtype, optional
        Force a dtype (``np.float32`` or ``np.float64``).

    Returns
    -------
    Tensor

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.tensor([1, 2], name="x")
    tensor([1., 2.], name='x')
    """
    if isinstance(data, Tensor):
        data = data.data
    arr = _as_float_array(data, dtype)
    if arr.dtype.type not in _FLOATS:
        raise TypeError(f"tensor dtype must be float32 or float64, got {arr.dtype}")
    node = Node("leaf", name=name, shape=arr.shape, dtype=arr.dtype.name)
    return Tensor(arr, node, (), bool(requires_grad))


def _const(value, like: np.ndarray | None) -> Tensor:
    """Wrap a non-tensor operand as a constant, keeping the other operand's float dtype."""
    arr = np.asarray(value)
    if arr.dtype.kind in "biuf" and like is not None and arr.ndim == 0 and arr.dtype.kind != "b":
        arr = arr.astype(like.dtype) if like.dtype.type in _FLOATS else arr
    elif arr.dtype.kind in "iu" or arr.dtype == np.float16:
        arr = arr.astype(np.float64)
    return Tensor(arr, Node("const", shape=arr.shape, dtype=arr.dtype.name))


def apply(opname: str, *args, name: str | None = None, **attrs) -> Tensor:
    """Apply a registered op to tensors (or numbers), evaluating it and recording one node.

    Parameters
    ----------
    opname : str
        A registered op name.
    *args : Tensor or array_like
        Inputs; non-tensors become constants.
    name : str, optional
        Name of the new node.
    **attrs
        The op's static attributes.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> apply("tanh", ug.tensor(0.0)).item()
    0.0
    """
    op = get_op(opname)
    like = next((a.data for a in args if isinstance(a, Tensor)), None)
    ts = tuple(a if isinstance(a, Tensor) else _const(a, like) for a in args)
    values = [t.data for t in ts]
    if op.always_check and op.check is not None:
        op.check([t.node for t in ts], values, **attrs)
    try:
        out = op.forward(*values, **attrs)
    except UnrollGraphError:
        raise
    except Exception as exc:
        raise _forward_error(op, ts, values, attrs, exc) from None
    if not isinstance(out, (np.ndarray, tuple)):
        out = np.asarray(out)
    if _FLAGS.anomaly:
        _check_finite(out, f"forward of {opname}", ts, name)
    if not _FLAGS.grad_enabled:
        return Tensor(out, Node("leaf", name=name, shape=out.shape, dtype=out.dtype.name))
    nondiff = op.nondiff
    req = any(t.requires_grad for k, t in enumerate(ts) if k not in nondiff)
    node = Node(
        opname,
        tuple(t.node for t in ts),
        attrs,
        name,
        getattr(out, "shape", None),
        out.dtype.name if isinstance(out, np.ndarray) else None,
    )
    return Tensor(out, node, ts, req)


def _forward_error(op, ts, values, attrs, exc) -> Exception:
    if op.check is not None:
        try:
            op.check([t.node for t in ts], values, **attrs)
        except ShapeError as err:
            return err
    shapes = ", ".join(f"{t.node.label()} {np.shape(v)}" for t, v in zip(ts, values))
    extra = f" with {attrs}" if attrs else ""
    return ShapeError(f"{op.name}: failed on {shapes}{extra}: {exc}")


def _check_finite(arr, what, ts, name=None):
    arrays = arr if isinstance(arr, tuple) else (arr,)
    for a in arrays:
        if a is not None and np.issubdtype(np.asarray(a).dtype, np.floating):
            if not np.all(np.isfinite(a)):
                bad = "NaN" if np.isnan(a).any() else "Inf"
                ins = ", ".join(f"{t.node.label()} {t.shape}" for t in ts)
                who = f" (node {name})" if name else ""
                raise AnomalyError(
                    f"detect_anomaly: {what}{who} produced {bad}; its inputs were {ins}. "
                    "Check the inputs' ranges (log of <= 0, division by 0, overflowing exp)"
                )


def _accumulate(grads: dict, owned: set, key: int, g) -> None:
    prev = grads.get(key)
    if prev is None:
        grads[key] = g
    elif key in owned and type(prev) is np.ndarray:
        prev += g  # in place: safe, this array was allocated here
    else:
        grads[key] = prev + g
        owned.add(key)


def _backward(root: Tensor, seed: np.ndarray) -> None:
    order = toposort([root], lambda t: [p for p in t._parents if p.requires_grad])
    grads: dict[int, Any] = {id(root): seed}
    owned: set[int] = set()
    anomaly = _FLAGS.anomaly
    for t in reversed(order):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        parents = t._parents
        if not parents:
            _store_grad(t, g)
            continue
        node = t.node
        if isinstance(t.data, np.ndarray):
            # intermediate: keep a reference (no copy); the engine never writes into it
            t.grad = g if t.grad is None else t.grad + g
        op = get_op(node.op)
        if node.op == "item":
            p = parents[0]
            lst = grads.get(id(p))
            if lst is None:
                lst = grads[id(p)] = [None] * len(p.data)
            k = node.attrs["index"]
            lst[k] = g if lst[k] is None else lst[k] + g
            continue
        values = [p.data for p in parents]
        for k, p in enumerate(parents):
            if not p.requires_grad:
                continue
            f = op.input_vjp(k)
            if f is None:
                continue
            gk = f(g, t.data, *values, **node.attrs)
            if gk is None:
                continue
            if anomaly:
                _check_finite(gk, f"backward of {node.op} into {p.node.label()}", (t,))
            _accumulate(grads, owned, id(p), gk)


def _store_grad(t: Tensor, g) -> None:
    if t.grad is None:
        g = np.array(g, dtype=t.data.dtype, copy=True)
        if g.shape != t.data.shape:
            g = np.broadcast_to(g, t.data.shape).copy()
        t.grad = g
    else:
        t.grad = t.grad + g


@contextlib.contextmanager
def no_grad():
    """Evaluate without recording a graph (evaluation, optimizer updates).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> w = ug.tensor(1.0, requires_grad=True)
    >>> with ug.no_grad():
    ...     y = w * 2.0
    >>> y.requires_grad
    False
    """
    prev = _FLAGS.grad_enabled
    _FLAGS.grad_enabled = False
    try:
        yield
    finally:
        _FLAGS.grad_enabled = prev


@contextlib.contextmanager
def enable_grad():
    """Record graphs again inside a :func:`no_grad` block."""
    prev = _FLAGS.grad_enabled
    _FLAGS.grad_enabled = True
    try:
        yield
    finally:
        _FLAGS.grad_enabled = prev


def is_grad_enabled() -> bool:
    """Whether ops currently record graph nodes."""
    return _FLAGS.grad_enabled


@contextlib.contextmanager
def detect_anomaly():
    """Stop at the first node whose forward value or gradient is NaN or Inf, and name it.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor([0.0, 1.0], requires_grad=True, name="x")
    >>> with ug.detect_anomaly():
    ...     ug.log(x)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    AnomalyError: detect_anomaly: forward of log produced Inf; ...
    """
    prev = _FLAGS.anomaly
    _FLAGS.anomaly = True
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            yield
    finally:
        _FLAGS.anomaly = prev


def graph_of(t: Tensor) -> Graph:
    """The :class:`Graph` of everything ``t`` was computed from."""
    return Graph(t)

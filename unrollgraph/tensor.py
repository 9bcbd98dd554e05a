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

from .errors import (
    AnomalyError,
    DTypeError,
    GradientError,
    GraphError,
    ShapeError,
    UnrollGraphError,
)
from .graph import Node, check_name
from .ops import _REGISTRY, get_op

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
    if dtype is not None and np.dtype(dtype).type not in _FLOATS:
        raise DTypeError(
            f"tensor(dtype={np.dtype(dtype).name}): tensors hold float32 or float64 (gradients "
            "are real numbers); pass dtype=np.float64 or np.float32, or leave dtype out and "
            "integers become float64"
        )
    try:
        arr = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise DTypeError(
            f"cannot make a tensor from {type(data).__name__} data ({exc}); pass numbers or a "
            "float array"
        ) from None
    if dtype is None and arr.dtype.type not in _FLOATS:
        if arr.dtype == object or arr.dtype.kind in "USVM":
            raise DTypeError(
                f"cannot make a tensor from {type(data).__name__} data of dtype {arr.dtype}; "
                "pass numbers or a float array"
            )
        if arr.dtype.kind == "c":
            raise DTypeError("complex values are not supported; pass real float arrays")
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
        # A rename is the one edit made to a node in place: it changes a label, not the
        # graph, and every graph that already reads this node (tensors computed from this
        # one) must show the new name. (Replacing the node would leave those graphs holding
        # the old, unnamed node.)
        self.node._name = check_name(value, "Tensor.name")

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
        return _apply(_REGISTRY["add"], (self, other), _NO_ATTRS, None)

    def __radd__(self, other):
        return _apply(_REGISTRY["add"], (other, self), _NO_ATTRS, None)

    def __sub__(self, other):
        return _apply(_REGISTRY["sub"], (self, other), _NO_ATTRS, None)

    def __rsub__(self, other):
        return _apply(_REGISTRY["sub"], (other, self), _NO_ATTRS, None)

    def __mul__(self, other):
        return _apply(_REGISTRY["mul"], (self, other), _NO_ATTRS, None)

    def __rmul__(self, other):
        return _apply(_REGISTRY["mul"], (other, self), _NO_ATTRS, None)

    def __truediv__(self, other):
        return _apply(_REGISTRY["div"], (self, other), _NO_ATTRS, None)

    def __rtruediv__(self, other):
        return _apply(_REGISTRY["div"], (other, self), _NO_ATTRS, None)

    def __pow__(self, other):
        if isinstance(other, (int, float, np.integer, np.floating)):
            return apply("powc", self, p=float(other))
        return _apply(_REGISTRY["pow"], (self, other), _NO_ATTRS, None)

    def __rpow__(self, other):
        return _apply(_REGISTRY["pow"], (other, self), _NO_ATTRS, None)

    def __neg__(self):
        return _apply(_REGISTRY["neg"], (self,), _NO_ATTRS, None)

    def __matmul__(self, other):
        return _apply(_REGISTRY["matmul"], (self, other), _NO_ATTRS, None)

    def __rmatmul__(self, other):
        return _apply(_REGISTRY["matmul"], (other, self), _NO_ATTRS, None)

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
        return _apply(_REGISTRY["exp"], (self,), _NO_ATTRS, None)

    def log(self):
        return _apply(_REGISTRY["log"], (self,), _NO_ATTRS, None)

    def tanh(self):
        return _apply(_REGISTRY["tanh"], (self,), _NO_ATTRS, None)

    def sigmoid(self):
        return _apply(_REGISTRY["sigmoid"], (self,), _NO_ATTRS, None)

    def relu(self):
        return _apply(_REGISTRY["relu"], (self,), _NO_ATTRS, None)

    def sqrt(self):
        return _apply(_REGISTRY["sqrt"], (self,), _NO_ATTRS, None)

    def abs(self):
        return _apply(_REGISTRY["abs"], (self,), _NO_ATTRS, None)

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
    check_name(name, "tensor name")
    if isinstance(data, Tensor):
        data = data.data
    arr = _as_float_array(data, dtype)
    node = Node("leaf", name=name, shape=arr.shape, dtype=arr.dtype.name)
    return Tensor(arr, node, (), bool(requires_grad))


def _const(value, like: np.ndarray | None) -> Tensor:
    """Wrap a non-tensor operand as a constant, keeping the other operand's float dtype."""
    arr = np.asarray(value)
    kind = arr.dtype.kind
    if kind in "iu" or arr.dtype == np.float16 or (kind == "f" and arr.ndim == 0):
        # numbers and integer arrays take the tensor's float dtype (float32 stays float32, as
        # in PyTorch); float arrays keep their own dtype and numpy's promotion rules apply
        if like is not None and like.dtype.type in _FLOATS:
            arr = arr.astype(like.dtype)
        elif kind != "f" or arr.dtype == np.float16:
            arr = arr.astype(np.float64)
    return Tensor(arr, Node("const", shape=arr.shape, dtype=_dtype_name(arr)))


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
    op = _REGISTRY.get(opname)
    if op is None:
        op = get_op(opname)  # raises a GraphError listing the known ops
    return _apply(op, args, attrs, name)


_NO_ATTRS: dict = {}  # shared by nodes of ops without attributes: never mutated


def _apply(op, args: tuple, attrs: dict, name) -> Tensor:
    """:func:`apply` with the op already looked up (Tensor operators call this directly)."""
    # This function runs once per op: it is kept lean (see benchmarks/overhead.py), with the
    # common one- and two-input cases spelled out instead of comprehensions.
    if name is not None:
        check_name(name, f"name of {op.name}")
    ts = args
    for a in args:
        if type(a) is not Tensor and not isinstance(a, Tensor):
            like = next((t.data for t in args if isinstance(t, Tensor)), None)
            ts = tuple(t if isinstance(t, Tensor) else _const(t, like) for t in args)
            break
    n = len(ts)
    if n == 2:
        t0, t1 = ts
        values = (t0.data, t1.data)
    elif n == 1:
        t0 = ts[0]
        values = (t0.data,)
    else:
        values = tuple([t.data for t in ts])
    if op.always_check and op.check is not None:
        op.check([t.node for t in ts], values, **attrs)
    try:
        out = op.forward(*values, **attrs) if attrs else op.forward(*values)
    except UnrollGraphError:
        raise
    except Exception as exc:
        raise _forward_error(op, ts, values, attrs, exc) from None
    if type(out) is not np.ndarray and not isinstance(out, (np.ndarray, tuple)):
        out = np.asarray(out)
    flags = _FLAGS
    if flags.anomaly:
        _check_finite(out, f"forward of {op.name}", ts, name)
    if type(out) is tuple:
        shape = dtype = None
    else:
        shape = out.shape
        dtype = _DTYPE_NAMES.get(out.dtype) or _dtype_name(out)
    if not flags.grad_enabled:
        return Tensor(out, Node("leaf", (), None, name, shape, dtype))
    nondiff = op.nondiff
    if n == 2:
        inputs = (t0.node, t1.node)
        req = (t0.requires_grad and 0 not in nondiff) or (t1.requires_grad and 1 not in nondiff)
    elif n == 1:
        inputs = (t0.node,)
        req = t0.requires_grad and 0 not in nondiff
    else:
        inputs = tuple([t.node for t in ts])
        req = any(t.requires_grad for k, t in enumerate(ts) if k not in nondiff)
    return Tensor(out, Node(op.name, inputs, attrs, name, shape, dtype), ts, req)


_DTYPE_NAMES: dict = {}


def _dtype_name(arr) -> str:
    """``arr.dtype.name``, cached: numpy computes that string in Python on every access."""
    dt = arr.dtype
    name = _DTYPE_NAMES.get(dt)
    if name is None:
        name = _DTYPE_NAMES[dt] = dt.name
    return name


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
    """Raise :class:`AnomalyError` if ``arr`` (or an array of the tuple ``arr``) holds a NaN or
    an Inf; the message says what produced it, where, and from which inputs."""
    arrays = arr if isinstance(arr, tuple) else (arr,)
    for a in arrays:
        if a is None or not np.issubdtype(np.asarray(a).dtype, np.floating):
            continue
        a = np.asarray(a)
        if np.all(np.isfinite(a)):
            continue
        nan = np.isnan(a)
        bad, where = ("NaN", nan) if nan.any() else ("Inf", np.isinf(a))
        first = tuple(int(i) for i in np.argwhere(where)[0]) if a.ndim else ()
        who = f" (node {name!r})" if name else ""
        ins = ", ".join(f"{t.node.label()} {t.shape}" for t in ts)
        ins = f"; its inputs were {ins}" if ins else ""
        raise AnomalyError(
            f"detect_anomaly: {what}{who} produced {bad} (first at index {first}){ins}. "
            "Check the inputs' ranges (log of <= 0, division by 0, overflowing exp)"
        )


def _backward(root: Tensor, seed: np.ndarray) -> None:
    """Reverse accumulation from ``root``: one walk, explicit stacks, no recursion.

    Pass 1 counts, for every tensor that requires grad, how many edges of the graph read it.
    Pass 2 visits a tensor once all of its readers have been visited (so its gradient is the
    complete sum over them), stores it in ``.grad`` and sends one VJP along each input edge.
    """
    uses: dict[int, int] = {}
    stack = [root]
    while stack:
        for p in stack.pop()._parents:
            if p.requires_grad:
                i = id(p)
                n = uses.get(i)
                if n is None:
                    uses[i] = 1
                    stack.append(p)
                else:
                    uses[i] = n + 1
    grads: dict[int, Any] = {id(root): seed}
    owned: set[int] = set()
    anomaly = _FLAGS.anomaly
    registry = _REGISTRY
    ndarray = np.ndarray
    ready = [root]
    while ready:
        t = ready.pop()
        g = grads.pop(id(t), None)
        parents = t._parents
        data = t.data
        if g is not None and type(data) is ndarray:
            # store t.grad. A leaf gets an array of its own (optimizers edit it in place). An
            # intermediate gets a read-only view: no copy of what may be a large (T, B, H)
            # gradient, and an in-place edit raises instead of leaking into another tensor.
            if t.grad is None and type(g) is ndarray and g.dtype == data.dtype \
                    and g.shape == data.shape:
                if parents:
                    v = g.view()
                    v.flags.writeable = False
                    t.grad = v
                else:
                    t.grad = g.copy()
            else:
                _store_grad(t, g)
        if not parents:
            continue
        node = t.node
        if node.op == "item":  # route into slot `index` of a multi-output node's gradient list
            p = parents[0]
            if g is not None:
                lst = grads.get(id(p))
                if lst is None:
                    lst = grads[id(p)] = [None] * len(p.data)
                k = node.attrs["index"]
                lst[k] = g if lst[k] is None else lst[k] + g
            if p.requires_grad:
                _release(p, uses, ready)
            continue
        if g is None:  # no gradient reached this node: its inputs still count it as visited
            for p in parents:
                if p.requires_grad:
                    _release(p, uses, ready)
            continue
        op = registry[node.op]
        vjps = op.vjps
        variadic = op.variadic
        attrs = node.attrs
        if len(parents) == 2:
            values = (parents[0].data, parents[1].data)
        elif len(parents) == 1:
            values = (parents[0].data,)
        else:
            values = tuple([p.data for p in parents])
        k = -1
        for p in parents:
            k += 1
            if not p.requires_grad:
                continue
            i = id(p)
            if variadic:
                gk = vjps[0](g, data, *values, index=k, **attrs)
            else:
                f = vjps[k]
                gk = None if f is None else f(g, data, *values, **attrs)
            if gk is not None:
                if (gk.shape if type(gk) is ndarray else np.shape(gk)) != p.data.shape:
                    raise _vjp_shape_error(op, node, k, gk, p)
                if anomaly:
                    _check_finite(gk, f"the gradient sent by {t.node.label()} = "
                                      f"{node.op}(...) into {p.node.label()}", ())
                prev = grads.get(i)
                if prev is None:
                    grads[i] = gk
                elif i in owned and type(prev) is ndarray:
                    prev += gk  # in place: safe, this array was allocated here
                else:
                    grads[i] = prev + gk
                    owned.add(i)
            n = uses[i] - 1
            uses[i] = n
            if n == 0:
                ready.append(p)


def _vjp_shape_error(op, node, k, gk, p) -> GraphError:
    return GraphError(
        f"op {op.name!r}: its VJP for input {k} ({p.node.label()}, shape {p.shape}) returned a "
        f"gradient of shape {np.shape(gk)}; a VJP must return one gradient of its input's "
        "shape (sum broadcast axes away with unrollgraph.ops.unbroadcast)"
    )


def _release(p: Tensor, uses: dict, ready: list) -> None:
    i = id(p)
    n = uses[i] - 1
    uses[i] = n
    if n == 0:
        ready.append(p)


def _store_grad(t: Tensor, g) -> None:
    """Add ``g`` to ``t.grad``; ``t.grad`` is always an array of its own, of t's shape/dtype."""
    data = t.data
    if t.grad is None:
        if type(g) is np.ndarray and g.dtype == data.dtype and g.shape == data.shape:
            t.grad = g.copy()  # own copy: g may be shared with other tensors or read-only
        else:
            g = np.array(g, dtype=data.dtype, copy=True)
            if g.shape != data.shape:
                g = np.broadcast_to(g, data.shape).copy()
            t.grad = g
    else:
        total = t.grad + g  # a new array: a .grad the user kept a reference to is not changed
        t.grad = total if total.dtype == data.dtype else total.astype(data.dtype)


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

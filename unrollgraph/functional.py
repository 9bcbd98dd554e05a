"""Functions on tensors: elementwise maths, reductions, joins and losses. Each adds one node."""

from __future__ import annotations

import numpy as np

from .errors import DTypeError, ShapeError
from .graph import Node
from .ops import _REGISTRY
from .tensor import _NO_ATTRS, Tensor, _apply, _int_sizes, _torch_axis, apply, as_real_array

__all__ = [
    "exp", "log", "tanh", "sigmoid", "relu", "sqrt", "abs", "maximum", "minimum", "where",
    "clip", "matmul", "sum", "mean", "max", "reshape", "transpose", "concat", "stack",
    "softmax", "log_softmax", "mse_loss", "cross_entropy", "binary_cross_entropy_with_logits",
]


def exp(x, name=None):
    """Elementwise e**x.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.exp(ug.tensor(0.0)).item()
    1.0
    """
    return _apply(_REGISTRY["exp"], (x,), _NO_ATTRS, name)


def log(x, name=None):
    """Elementwise natural logarithm.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.log(ug.tensor(1.0)).item()
    0.0
    """
    return _apply(_REGISTRY["log"], (x,), _NO_ATTRS, name)


def tanh(x, name=None):
    """Elementwise hyperbolic tangent.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.tanh(ug.tensor(0.0)).item()
    0.0
    """
    return _apply(_REGISTRY["tanh"], (x,), _NO_ATTRS, name)


def sigmoid(x, name=None):
    """Elementwise logistic function 1 / (1 + e**-x), stable for large |x|.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.sigmoid(ug.tensor(0.0)).item()
    0.5
    """
    return _apply(_REGISTRY["sigmoid"], (x,), _NO_ATTRS, name)


def relu(x, name=None):
    """Elementwise max(x, 0); the gradient at 0 is 0, as in PyTorch.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.relu(ug.tensor([-1.0, 2.0])).data
    array([0., 2.])
    """
    return _apply(_REGISTRY["relu"], (x,), _NO_ATTRS, name)


def sqrt(x, name=None):
    """Elementwise square root.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.sqrt(ug.tensor(4.0)).item()
    2.0
    """
    return _apply(_REGISTRY["sqrt"], (x,), _NO_ATTRS, name)


def abs(x, name=None):  # noqa: A001 - mirrors numpy's name
    """Elementwise absolute value; the gradient at 0 is 0.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.abs(ug.tensor(-3.0)).item()
    3.0
    """
    return _apply(_REGISTRY["abs"], (x,), _NO_ATTRS, name)


def maximum(a, b, name=None):
    """Elementwise maximum with broadcasting; ties split the gradient evenly.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.maximum(ug.tensor([1.0, 5.0]), 2.0).data
    array([2., 5.])
    """
    return _apply(_REGISTRY["maximum"], (a, b), _NO_ATTRS, name)


def minimum(a, b, name=None):
    """Elementwise minimum with broadcasting; ties split the gradient evenly.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.minimum(ug.tensor([1.0, 5.0]), 2.0).data
    array([1., 2.])
    """
    return _apply(_REGISTRY["minimum"], (a, b), _NO_ATTRS, name)


def where(cond, a, b, name=None):
    """Pick ``a`` where ``cond`` is true, else ``b`` (``cond`` gets no gradient).

    Parameters
    ----------
    cond : Tensor or array_like
        The condition, broadcast with ``a`` and ``b``. A tensor is read as true where
        nonzero: a comparison such as ``x > 0`` (1.0 where it holds, 0.0 elsewhere) or any
        tensor computed in the graph is an input of the node, computed again at every step of
        a cell and every call of a net. A condition given as data (not a tensor) must be a
        mask: a bool array, a Python bool, or numbers that are all 0 or 1; it is fixed when
        the graph is built.
    a, b : Tensor or array_like
        The values to pick from.
    name : str, optional
        Name of the new node.

    Returns
    -------
    Tensor
        The broadcast shape of the three operands.

    Raises
    ------
    DTypeError
        For a condition given as data that is not a mask: ``None``, strings, or numbers other
        than 0 and 1 (such as a float array of probabilities: compare it first, ``p > 0.5``).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor([-1.0, 2.0])
    >>> ug.where(x > 0, x, 0.0).data
    array([0., 2.])
    """
    if isinstance(cond, Tensor) and cond.node.op not in ("leaf", "const"):
        # computed in the graph (a comparison, or a value from a cell's state): it stays an
        # input, read as true where nonzero, so every step and every call uses its own condition
        return apply("where", cond, a, b, name=name)
    c = _mask(cond)
    ct = Tensor(c, Node("const", shape=c.shape, dtype="bool"))
    return apply("where", ct, a, b, name=name)


def _mask(cond) -> np.ndarray:
    """A condition given as data, as a bool array; anything but a mask is refused."""
    if isinstance(cond, Tensor):  # a leaf or constant tensor: true where nonzero, as computed
        return cond.data.astype(bool)  # conditions are (the same equations, eager or in a cell)
    if isinstance(cond, (bool, np.bool_)):
        return np.array(bool(cond))
    if isinstance(cond, np.ndarray) and cond.dtype == bool:
        return cond.copy()
    what = "where(cond, a, b): cond"
    arr = as_real_array(cond, what, copy=False)  # None, strings, objects: DTypeError
    if not np.all((arr == 0) | (arr == 1)):
        bad = arr[(arr != 0) & (arr != 1)].flat[0]
        raise DTypeError(
            f"{what} holds {bad!r}, which is neither 0 nor 1: a condition given as data is a "
            "mask (a bool array, or numbers 0 and 1); compare first (e.g. ug.where(x > 0.5, "
            "a, b)), which also recomputes the condition at every step of a cell"
        )
    return arr.astype(bool)


def clip(x, lo=None, hi=None, name=None):
    """Clamp values to [lo, hi]; the gradient passes where lo <= x <= hi.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.clip(ug.tensor([-2.0, 0.5, 3.0]), -1.0, 1.0).data
    array([-1. ,  0.5,  1. ])
    """
    for what, v in (("lo", lo), ("hi", hi)):
        if v is not None and (isinstance(v, (bool, np.bool_)) or not isinstance(
                v, (int, float, np.integer, np.floating))):
            raise DTypeError(
                f"clip(x, lo, hi): {what} must be a real number or None, got "
                f"{type(v).__name__} {v!r}"
            )
    return apply("clip", x, lo=lo, hi=hi, name=name)


def matmul(a, b, name=None):
    """Matrix product with numpy's rules (1-D, 2-D and batched).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.matmul(ug.tensor([[1.0, 2.0]]), ug.tensor([[3.0], [4.0]])).data
    array([[11.]])
    """
    return _apply(_REGISTRY["matmul"], (a, b), _NO_ATTRS, name)


def sum(x, axis=None, keepdims=False, name=None, *, dim=None, keepdim=None):  # noqa: A001
    """Sum over ``axis`` (all axes by default); PyTorch's ``dim=``/``keepdim=`` are taken too.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.sum(ug.tensor([[1.0, 2.0], [3.0, 4.0]]), axis=0).data
    array([4., 6.])
    """
    if dim is not None or keepdim is not None:
        axis, keepdims = _torch_axis(x, "sum", axis, keepdims, dim, keepdim)
    return apply("sum", x, axis=_axis(axis), keepdims=keepdims, name=name)


def mean(x, axis=None, keepdims=False, name=None, *, dim=None, keepdim=None):
    """Mean over ``axis`` (all axes by default); PyTorch's ``dim=``/``keepdim=`` are taken too.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.mean(ug.tensor([1.0, 3.0])).item()
    2.0
    """
    if dim is not None or keepdim is not None:
        axis, keepdims = _torch_axis(x, "mean", axis, keepdims, dim, keepdim)
    return apply("mean", x, axis=_axis(axis), keepdims=keepdims, name=name)


def max(x, axis=None, keepdims=False, name=None):  # noqa: A001
    """Maximum over ``axis``; tied maxima share the gradient evenly.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.max(ug.tensor([1.0, 3.0])).item()
    3.0
    """
    return apply("max", x, axis=_axis(axis), keepdims=keepdims, name=name)


def reshape(x, shape, name=None):
    """Reshape to ``shape``.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.reshape(ug.tensor([1.0, 2.0]), (2, 1)).shape
    (2, 1)
    """
    return apply("reshape", x, shape=_int_sizes(shape, "reshape(x, shape)"), name=name)


def transpose(x, axes=None, name=None):
    """Permute axes (reverse them by default).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.transpose(ug.tensor([[1.0, 2.0]])).shape
    (2, 1)
    """
    return apply("transpose", x, axes=None if axes is None else tuple(axes), name=name)


def concat(tensors, axis=0, name=None):
    """Join tensors along an existing axis.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.concat([ug.tensor([1.0]), ug.tensor([2.0, 3.0])]).data
    array([1., 2., 3.])
    """
    return apply("concat", *_joined(tensors, "concat"), axis=axis, name=name)


def stack(tensors, axis=0, name=None):
    """Join same-shaped tensors along a new axis.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.stack([ug.tensor([1.0]), ug.tensor([2.0])]).shape
    (2, 1)
    """
    return apply("stack", *_joined(tensors, "stack"), axis=axis, name=name)


def _joined(tensors, fn: str) -> list:
    """The tensors ``concat`` or ``stack`` joins: a non-empty list, tuple or other iterable of
    them (one tensor or array is not taken as the list of its rows: that is almost never what
    the caller means)."""
    one = isinstance(tensors, (Tensor, np.ndarray))
    if not one:
        try:
            tensors = list(tensors)
        except TypeError:
            one = True
    if one:
        raise ShapeError(
            f"{fn}(tensors): pass a list of tensors, such as ug.{fn}([a, b]); got one "
            f"{type(tensors).__name__}"
            + (f" of shape {np.shape(tensors.data if isinstance(tensors, Tensor) else tensors)}"
               if isinstance(tensors, (Tensor, np.ndarray)) else "")
            + (f" (for its rows: ug.{fn}(list(t)))" if isinstance(tensors, Tensor) else "")
        )
    if not tensors:
        raise ShapeError(f"{fn}(tensors): the list is empty; pass at least one tensor")
    return tensors


def softmax(x, axis=-1, name=None):
    """Softmax along ``axis``, computed stably.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.softmax(ug.tensor([0.0, 0.0])).data
    array([0.5, 0.5])
    """
    return apply("softmax", x, axis=axis, name=name)


def log_softmax(x, axis=-1, name=None):
    """Log of the softmax along ``axis``, computed stably.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> round(float(ug.log_softmax(ug.tensor([0.0, 0.0])).data[0]), 4)
    -0.6931
    """
    return apply("log_softmax", x, axis=axis, name=name)


def mse_loss(pred, target, name=None):
    """Mean squared error over all elements (PyTorch's default ``reduction='mean'``).

    Shapes must match exactly; a mismatch is an error rather than a silent broadcast.
    Operands of two float types give the wider (a float32 prediction and a float64 target give
    a float64 loss), as PyTorch's ``mse_loss`` does; each input's gradient has that input's
    own type. For a float32 loss, pass a float32 target (``target.astype(np.float32)``).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.mse_loss(ug.tensor([1.0, 2.0]), [1.0, 4.0]).item()
    2.0
    """
    return apply("mse_loss", pred, target, name=name)


def cross_entropy(logits, labels, name=None):
    """Softmax cross-entropy with integer class labels, averaged over the batch.

    ``logits`` is ``(..., C)`` with classes on the **last** axis (PyTorch puts them on axis 1
    for inputs of more than two dimensions); ``labels`` is ``(...)`` of class indices. The
    labels are indices, never promoted: the loss and the gradient have the logits' float
    type, as in PyTorch.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> round(ug.cross_entropy(ug.tensor([[0.0, 0.0]]), [1]).item(), 4)
    0.6931
    """
    if isinstance(labels, Tensor):
        lab = labels
    else:
        if labels is None or isinstance(labels, (str, bytes)):
            raise DTypeError(
                f"cross_entropy(logits, labels): labels must be integer class indices (an "
                f"array shaped like logits without its last axis), got {labels!r}"
            )
        arr = np.array(labels)  # a copy: editing the caller's labels must not reach backward
        lab = Tensor(arr, Node("const", name="labels", shape=arr.shape, dtype=arr.dtype.name))
    return apply("cross_entropy", logits, lab, name=name)


def binary_cross_entropy_with_logits(logits, targets, name=None):
    """Mean binary cross-entropy of ``sigmoid(logits)`` against targets in [0, 1], stable.

    Operands of two float types give the wider (float32 with float64 gives a float64 loss),
    PyTorch's type promotion; each input's gradient has that input's own type. (PyTorch's
    own ``binary_cross_entropy_with_logits`` returns float32 for float64 logits with float32
    targets.) For a float32 loss, pass float32 targets.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> round(ug.binary_cross_entropy_with_logits(ug.tensor([0.0]), [1.0]).item(), 4)
    0.6931
    """
    return apply("binary_cross_entropy_with_logits", logits, targets, name=name)


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis

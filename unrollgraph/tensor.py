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
import contextvars
import math
import numbers
import opcode
import sys
import threading
import weakref
from typing import Any

import numpy as np

from . import interop as _interop
from .errors import (
    AnomalyError,
    CellError,
    DTypeError,
    GradientError,
    GraphError,
    OpError,
    ShapeError,
    UnrollGraphError,
)
from .graph import Node, check_name, made_by
from .ops import _REGISTRY, _SMALL_EXPAND, get_op

__all__ = [
    "Tensor",
    "tensor",
    "as_real_array",
    "apply",
    "no_grad",
    "enable_grad",
    "is_grad_enabled",
    "detect_anomaly",
]


class _Mode:
    """Grad mode and anomaly mode, one immutable pair (a context holds one of four)."""

    __slots__ = ("grad_enabled", "anomaly")

    def __init__(self, grad_enabled: bool, anomaly: bool):
        self.grad_enabled = grad_enabled
        self.anomaly = anomaly


_MODES = {(g, a): _Mode(g, a) for g in (True, False) for a in (True, False)}
# Per thread (and per asyncio task), as PyTorch's grad mode is: a new thread starts with an
# empty context, so with graphs recorded and anomaly detection off, whatever other threads do.
# Ops read it once each (`_MODE.get()` costs about as much as reading a global's attribute).
_MODE: contextvars.ContextVar = contextvars.ContextVar("unrollgraph_mode",
                                                       default=_MODES[True, False])


def _set_mode(grad_enabled=None, anomaly=None) -> _Mode:
    """Change this thread's modes (``None`` keeps one); returns the previous ones."""
    prev = _MODE.get()
    _MODE.set(_MODES[prev.grad_enabled if grad_enabled is None else bool(grad_enabled),
                     prev.anomaly if anomaly is None else bool(anomaly)])
    return prev


class _Flags:
    """This thread's modes as attributes (``_FLAGS.grad_enabled``, ``_FLAGS.anomaly``), for
    code that reads them once per call; per-op code reads ``_MODE.get()``."""

    __slots__ = ()

    @property
    def grad_enabled(self) -> bool:
        return _MODE.get().grad_enabled

    @grad_enabled.setter
    def grad_enabled(self, value: bool) -> None:
        _set_mode(grad_enabled=value)

    @property
    def anomaly(self) -> bool:
        return _MODE.get().anomaly

    @anomaly.setter
    def anomaly(self, value: bool) -> None:
        _set_mode(anomaly=value)


_FLAGS = _Flags()
_FLOATS = (np.float64, np.float32)


def as_real_array(value, what: str, dtype=None, copy: bool = True) -> np.ndarray:
    """The one door through which user data becomes a tensor's value.

    Every entry point (``ug.tensor``, ``cell.param``, a state's ``init=``, ``load_state_dict``,
    ``net(xs, state=...)``, ``backward(gradient=...)``, assigning ``.data`` or ``.grad``,
    numbers and arrays in arithmetic) passes its argument through here, so each accepts and
    refuses the same things: real numbers (bool, integer and float arrays, Python and numpy
    scalars, nested lists of numbers, Tensors, and PyTorch tensors, read with their own
    dtype) are accepted; ``None``, strings, bytes, complex numbers, dates and arbitrary
    objects are refused with a :class:`DTypeError` that names the argument ``what``. A
    PyTorch tensor that requires grad, is on a GPU or is bfloat16 is refused saying what to
    call (``t.detach()``, ``t.cpu()``, ``t.float()``).

    Parameters
    ----------
    value : array_like or Tensor
        The data.
    what : str
        The argument, as the message should name it (``"cell.param('W', value)"``).
    dtype : numpy dtype, optional
        The float type to convert to (a tensor's own type, when data is assigned to it).
        Without it, float32 and float64 stay as they are, float16 becomes float32 and every
        other real type float64.
    copy : bool
        Return an array of its own (the default), so a later edit of ``value`` by the caller
        changes nothing here, and nothing done here changes ``value``.

    Returns
    -------
    numpy.ndarray
        Of dtype float32 or float64.

    Raises
    ------
    DTypeError
        For data that is not made of real numbers, or a ``dtype`` that is not a float type.

    Examples
    --------
    >>> as_real_array([1, 2], "x")
    array([1., 2.])
    >>> as_real_array(1j, "x")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    DTypeError: x: complex values are not supported ...
    """
    if dtype is not None:
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            bad = True
        else:
            bad = dtype.type not in _FLOATS
        if bad:
            raise DTypeError(
                f"{what}: dtype={getattr(dtype, 'name', dtype)} is not allowed: tensors hold "
                "float32 or float64 (gradients are real numbers); pass dtype=np.float64 or "
                "np.float32, or leave dtype out and integers become float64"
            )
    if isinstance(value, Tensor):
        value = value._data
    else:
        value = _from_torch(value, what)  # a PyTorch tensor's values, its dtype kept
    if value is None:
        raise DTypeError(f"{what}: got None; pass a number or an array of real numbers")
    if isinstance(value, (str, bytes)):
        raise DTypeError(
            f"{what}: cannot use {type(value).__name__} data {_short(value)}; pass numbers or "
            "a float array (convert text with float(...) first)"
        )
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists, objects whose __array__ fails...
        reason = str(exc).split(". ")[0]
        raise DTypeError(
            f"{what}: cannot make an array from {type(value).__name__} data ({reason}); pass a "
            "number or a (rectangular) array of real numbers"
        ) from None
    kind = arr.dtype.kind
    if kind not in "biuf":
        if kind == "c":
            raise DTypeError(
                f"{what}: complex values are not supported (got {arr.dtype}); gradients here "
                "are real numbers: pass np.real(x) or np.abs(x) if that is what you mean"
            )
        raise DTypeError(
            f"{what}: got {type(value).__name__} data of dtype {arr.dtype} "
            f"({_short(value)}); pass a number or an array of real numbers"
        )
    if dtype is None:
        t = arr.dtype.type
        dtype = arr.dtype if t in _FLOATS else np.dtype(
            np.float32 if t is np.float16 else np.float64)
    if copy or arr.dtype != dtype:
        arr = np.array(arr, dtype=dtype, copy=True)
    return arr


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _from_torch(value, what: str):
    """A PyTorch tensor's values as a numpy array of the same dtype (float64 stays float64,
    float32 float32: the checks that follow see the type the caller chose); anything else
    is returned as it is. The array may share the tensor's memory: callers that keep it copy
    it. Never imports torch (a tensor of it exists only if the caller imported it).

    A tensor that requires grad, a tensor on a GPU (or another device) and a bfloat16 tensor
    are refused with a :class:`DTypeError` naming ``what`` and the call that fixes it.

    Examples
    --------
    >>> _from_torch([1.0, 2.0], "x")  # not a PyTorch tensor: as it is
    [1.0, 2.0]
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(value, getattr(torch, "Tensor", ())):
        return value
    if value.requires_grad:
        raise DTypeError(
            f"{what}: got a PyTorch tensor that requires grad ({_torch_desc(value)}), whose "
            "values numpy cannot read while torch's autograd records it. Pass t.detach(): "
            "the same values (the same memory), cut from torch's graph, so no gradient "
            "computed here flows back into torch; unrollgraph records its own graph and "
            "gradients (ug.tensor(t.detach(), requires_grad=True) for a leaf to "
            "differentiate)"
        )
    if value.device.type != "cpu":
        raise DTypeError(
            f"{what}: got a PyTorch tensor on device {str(value.device)!r} "
            f"({_torch_desc(value)}); unrollgraph computes with numpy on the CPU: pass "
            "t.cpu() (a copy in main memory)"
        )
    if value.dtype == torch.bfloat16:
        raise DTypeError(
            f"{what}: got a PyTorch bfloat16 tensor ({_torch_desc(value)}), a type numpy does "
            "not have; pass t.float() (float32) or t.double() (float64)"
        )
    try:
        return value.resolve_conj().resolve_neg().numpy()
    except Exception as exc:  # sparse, quantized... tensors numpy cannot read
        reason = str(exc).split(". ")[0]
        raise DTypeError(
            f"{what}: cannot read the PyTorch tensor ({_torch_desc(value)}) as a numpy "
            f"array ({reason}); pass a dense CPU tensor (t.to_dense().cpu()) or a numpy array"
        ) from None


def _torch_desc(t) -> str:
    """``torch.float64 of shape (3, 2)``: a PyTorch tensor, as a message names it."""
    return f"{t.dtype} of shape {tuple(t.shape)}"


def _locked(arr: np.ndarray) -> np.ndarray:
    """``arr``, made read-only: its tensor owns it, and changes go through a documented door
    that records them (see :meth:`Tensor.data`)."""
    arr.setflags(write=False)
    return arr


# Version counters. Every tensor records the clock when it was made (``_born``); a change of a
# tensor's value through a documented door (``.data = ...``, an optimizer step,
# ``load_state_dict``) stamps it with a new clock value in ``_version``, a cell
# ``[clock, how]`` shared by the tensors that share its memory (``detach()``). backward()
# refuses to use a node whose own value or one of whose inputs was stamped after the node was
# made: the gradient would mix old and new numbers.
_CLOCK = [0]
_NEVER = [0, None]  # the shared cell of every tensor never changed (replaced on first change)


def _mark_changed(t: "Tensor", how: str) -> None:
    """Record that ``t``'s value has changed (in place or replaced), by ``how``."""
    _CLOCK[0] += 1
    cell = t._version
    if cell is _NEVER:
        cell = t._version = [0, None]
    cell[0] = _CLOCK[0]
    cell[1] = how


@contextlib.contextmanager
def _editing(t: "Tensor", how: str | None):
    """Edit ``t``'s value in place (optimizers): yields the writable array, then locks it again
    and records the change. Tensors sharing the memory see it, and share the record, where
    ``t`` owns the memory; a view of memory it was lent is copied first.
    ``how=None`` records nothing: for an edit that puts back every number it changes (the
    perturbations of :func:`~unrollgraph.gradcheck`)."""
    arr = t._data
    was = arr.flags.writeable
    if len(t._version) > 2 or (not was and arr.base is not None):
        # gradients view this memory (see _times_one), or it is a read-only view of memory
        # the tensor does not own (a net's outputs and final states are views of its run's
        # buffers, which the run's backward pass, state_grads and a checkpointed run read
        # again; numpy would let the flag be set because those buffers are writable): edit
        # a copy, so that the edit reaches this tensor (and what shares its memory from now
        # on), never the memory it was lent
        arr = t._data = arr.copy()
        t._version = [0, None]  # new memory: the tensors that shared the old one keep it
        was = False
    elif not was:
        arr.flags.writeable = True
    try:
        yield arr
    finally:
        if not was:
            arr.flags.writeable = False
        if how is not None:
            _mark_changed(t, how)


def _stand_in_error(t: "Tensor", what: str) -> CellError:
    """Why a cell's placeholder, or a value computed from one, does not hand out its value
    (``h.data``, ``h.numpy()``)."""
    node = t.node
    if node.op in _PLACEHOLDERS:
        k = node.name
        return CellError(
            f"{k}{what}: {node.op} {k!r} is a placeholder of its cell, and its value is a "
            "stand-in (a batch of one, every number 0.5) that exists only to check shapes "
            "while the cell is built; a number or array read from it would be a constant, the "
            f"same at every step. Compute with the tensor itself (e.g. {k} * 2, {k} @ W.T, "
            f"ug.where({k} > 0, {k}, 0), {k}.max(axis=-1)), which the unrolled net replaces by "
            f"each step's value; {k}.shape is (1, ...), the stand-in's batch of one (its axis "
            f"0 is not a size to read) and then the declared shape {k}.shape[1:]. After a "
            f"call, read a step's value with net.last_run.value('{k}@0')")
    k = node.label()
    source = _stand_in_source(t)
    after = (f"net.last_run.value('{node.name}@0')" if node.name
             else "net.last_run.value(name@step), after naming it (name=...)")
    return CellError(
        f"{k}{what}: {k} is computed from {source.op} {source.label()}, a placeholder of "
        "its cell, whose value is a stand-in (a batch of one, every number 0.5) while the "
        "cell is built; a number or array read from it would be a constant, the same at "
        f"every step. Compute with the tensor {k} itself, which the unrolled net computes "
        f"again at every step; after a call, read a step's value with {after}")


# id(tensor) -> (a weak reference to it, the placeholder node it is or is computed from, or
# False); see _stand_in_source. (A dict by id with the reference checked on each read is
# several times cheaper to read than a WeakKeyDictionary.)
_FROM_STAND_IN: dict = {}


def _recorded(t: "Tensor"):
    """What :func:`_stand_in_source` recorded for ``t``: a node, False, or None (nothing)."""
    entry = _FROM_STAND_IN.get(id(t))
    if entry is not None and entry[0]() is t:
        return entry[1]
    return None


def _record(t: "Tensor", found) -> None:
    key = id(t)

    def forget(ref, key=key):  # (t is gone: drop its entry, unless its id was reused since)
        entry = _FROM_STAND_IN.get(key)
        if entry is not None and entry[0] is ref:
            del _FROM_STAND_IN[key]

    _FROM_STAND_IN[key] = (weakref.ref(t, forget), found)


def _stand_in_source(t: "Tensor") -> Node | None:
    """The cell placeholder node (input or state of a cell, not of an unrolled net) that
    ``t`` is or is computed from, or ``None``.

    Read only for a value whose axis 0 has size 1 (``shape``, ``size``, ``data`` ...): one
    walk over the ancestors (explicit stack) that records the answer for every tensor it
    visits, so each tensor is walked at most once in a process and reading the shapes of a
    growing graph of batch-one tensors (an eager loop on one sequence) stays linear."""
    found = _recorded(t)
    if found is not None:
        return found or None
    stack = [t]
    while stack:
        u = stack[-1]
        if _recorded(u) is not None:
            stack.pop()
            continue
        node = u.node
        if node._op in _PLACEHOLDERS and node._step is None:
            _record(u, node)
            stack.pop()
            continue
        parents = u._parents
        pending = [p for p in parents if _recorded(p) is None]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        _record(u, next((f for f in map(_recorded, parents) if f is not False), False))
    return _recorded(t) or None


def _batch_message(node: Node, source: Node, read: str, instead: str) -> str:
    """The :class:`CellError` text for reading the batch axis of a stand-in (``read``, the
    read as written: after the tensor's label when it starts with a dot or a space,
    ``.shape[0]``, else whole, ``len(h)``, ``np.shape(h)[0]``; ``instead``, with ``{k}`` for
    the tensor's label, leads the advice)."""
    k = node.label()
    head = f"{k}{read}" if read[:1] in (".", " ") else read
    what = ("is a placeholder of its cell" if node is source else
            f"is computed from {source.op} {source.label()}, a placeholder of its cell")
    instead = instead.format(k=k) + "; " if instead else ""
    return (
        f"{head}: {k} {what}, which holds a stand-in while the cell is built: its axis 0 "
        "is a batch of one, and the batch size is known only when the unrolled net is called "
        "(a number read from it would be 1 at every batch size). Write the cell without the "
        f"batch size: {instead}read the declared shape {k}.shape[1:] or a feature size "
        f"{k}.shape[-1], reshape with -1 ({k}.reshape(-1, n)), reduce over axis=-1, and let a "
        "parameter of shape (n,) broadcast over the batch")


class _Size(int):
    """A tensor's :attr:`Tensor.size`: numpy's number of numbers (an int), which can be called
    as PyTorch's ``Tensor.size``: ``t.size()`` is the shape, ``t.size(d)`` the size of axis
    ``d``. ``_of`` is the tensor."""

    def __call__(self, dim=None):
        t = self._of
        if dim is None:
            return t.shape
        return t.shape[_dim(t, dim, f"size({dim!r})")]

    def __reduce__(self):  # (a plain int once pickled or copied)
        return (int, (int(self),))


def _dim(t: "Tensor", dim, call: str, extra: int = 0) -> int:
    """Axis ``dim`` of ``t`` (PyTorch's ``dim`` argument: an int from ``-n`` to ``n - 1``
    for ``n = t.ndim + extra``) counted from 0; anything else is a :class:`ShapeError`
    naming the call ``t.call``."""
    n = t._data.ndim + extra
    k = t.node.label()
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
        raise ShapeError(f"{k}.{call}: dim must be an int (an axis), got "
                         f"{type(dim).__name__} {dim!r}")
    if not -n <= dim < n:
        axes = (f"pass a dim from {-n} to {n - 1}" if n else "it has no axis to name")
        raise ShapeError(f"{k}.{call}: {k} has shape {tuple(t._data.shape)}, "
                         f"{t._data.ndim} axes; {axes}")
    return int(dim) % n


class _StandInShape(tuple):
    """The shape of a cell's placeholder, or of a value computed from one, while the cell is
    built: a tuple equal to the stand-in's shape ``(1, ...)`` whose axis 0, the batch,
    cannot be read (``shape[0]``, a slice from axis 0, unpacking or iterating): each raises
    :class:`~unrollgraph.CellError`. ``shape[1:]``, ``shape[-1]``, ``len(shape)`` and
    comparisons read as a tuple's do. ``written`` is how the shape was asked for, when not
    as ``.shape`` (``np.shape(h)``): the messages quote the read as written."""

    def __new__(cls, shape: tuple, node: Node, source: Node, written: str | None = None):
        self = tuple.__new__(cls, shape)
        self._of = (node, source, written)
        return self

    def __getitem__(self, index):
        n = tuple.__len__(self)
        if isinstance(index, slice):
            batch = 0 in range(*index.indices(n))
        else:
            try:
                i = index.__index__()
            except (AttributeError, TypeError):
                return tuple.__getitem__(self, index)  # (tuple's own TypeError)
            batch = i in (0, -n)
        if batch:
            node, source, written = self._of
            read = f"{written or '.shape'}[{_index_text(index)}]"
            raise CellError(_batch_message(node, source, read, ""))
        return tuple.__getitem__(self, index)

    def __iter__(self):
        # Unpacking (B, H = h.shape) and a loop (for n in h.shape) read axis 0 in the code
        # that runs them, and are refused; numpy and the builtins that take a shape whole
        # (np.zeros(h.shape), tuple(h.shape)) iterate it too, from C, under a call: numpy would
        # turn an error into its own unclear TypeError, so those read the stand-in's shape.
        if _unpacking_here():
            node, source, written = self._of
            if written is None:
                read = ".shape unpacked or iterated (B, H = h.shape, for n in h.shape)"
            else:
                read = f"{written} unpacked or iterated (B, H = {written})"
            raise CellError(_batch_message(node, source, read,
                                           "unpack {k}.shape[1:] instead"))
        return tuple.__iter__(self)

    def __reduce__(self):  # (a plain tuple once pickled or copied)
        return (tuple, (tuple.__getitem__(self, slice(None)),))


_UNPACKING = frozenset(opcode.opmap[k] for k in (
    "UNPACK_SEQUENCE", "UNPACK_EX", "GET_ITER",  # B, H = h.shape; for n in h.shape
    "LIST_EXTEND", "SET_UPDATE",                  # [*h.shape], (*h.shape,), {*h.shape}
    "CALL_FUNCTION_EX",                           # f(*h.shape)
) if k in opcode.opmap)


def _unpacking_here() -> bool:
    """Whether the Python code that asked for an iterator (two frames up: past
    ``_StandInShape.__iter__``) is unpacking or looping over it, as opposed to handing it
    whole to a function (numpy's ``np.zeros(shape)``), by the instruction it is running.
    False where the instruction cannot be read."""
    try:
        frame = sys._getframe(2)
        return frame.f_code.co_code[frame.f_lasti] in _UNPACKING
    except (AttributeError, IndexError, ValueError):
        return False


def _index_text(index) -> str:
    if isinstance(index, slice):
        return ":".join("" if v is None else str(v) for v in (index.start, index.stop)) + (
            "" if index.step is None else f":{index.step}")
    return str(index)


def _caller_holds(arr: np.ndarray) -> bool:
    """Whether a variable of the code running a ``with t.edit() as a:`` block (the first
    frame outside contextlib and this module) still holds the array the block was given."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in (__file__, contextlib.__file__):
        frame = frame.f_back
    return frame is None or any(v is arr for v in frame.f_locals.values())


def _put_back(t: "Tensor", arr: np.ndarray, before: np.ndarray, layout: tuple) -> None:
    """Undo an edit: ``arr`` (``t``'s value) takes back its shape, type and every number of
    ``before``; if its memory was replaced (``a.resize(..., refcheck=False)``), ``t`` takes
    ``before`` itself, memory of its own."""
    try:
        if arr.dtype != layout[1]:
            arr.dtype = layout[1]
        if arr.shape != layout[0]:
            arr.shape = layout[0]
        ok = (arr.shape, arr.dtype, arr.strides) == layout
    except (ValueError, TypeError, AttributeError):
        ok = False
    if ok:
        arr[...] = before
    else:
        t._data = _locked(before)
        t._version = [0, None]  # new memory: tensors that shared the old one keep it


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

    __slots__ = ("_data", "_grad", "node", "_requires_grad", "_parents", "_version", "_born",
                 "_walked", "__weakref__")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """numpy's ufuncs on a tensor (:mod:`unrollgraph.interop`). The operators
        ``ndarray + t`` (``- * / ** @ < <= > >=``) give what ``t.__radd__`` (...) gives: a
        node of the graph. Any other ufunc, ufunc method or ``out=`` (``np.tanh(t)``,
        ``np.add.reduce(t)``, ``array += t``) raises :class:`~unrollgraph.NumpyFunctionError`
        naming the unrollgraph function to use.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> np.ones(2) * ug.tensor([1.0, 2.0], name="t")
        tensor([1., 2.])
        >>> np.tanh(ug.tensor([1.0, 2.0], name="t"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        unrollgraph.errors.NumpyFunctionError: np.tanh(t): numpy computes on plain ... ug.tanh(x)...
        """
        return _interop.ufunc_on_tensor(Tensor, ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        """numpy's other functions on a tensor (:mod:`unrollgraph.interop`): on a tensor that
        is part of a graph (requires grad, or is a cell's placeholder or computed from one)
        they raise :class:`~unrollgraph.NumpyFunctionError` naming the unrollgraph function to
        use (``np.sum`` -> ``ug.sum``, ``np.linalg.norm`` -> ``ug.sqrt(ug.sum(x * x))``); on
        any other tensor (a constant, or computed from constants: ``c > 0``) they compute on
        its value and return numpy results."""
        return _interop.function_on_tensor(Tensor, func, args, kwargs)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """PyTorch's functions on a tensor (:mod:`unrollgraph.interop`): ``torch.tanh(t)``,
        ``torch.stack([t, u])``, ``F.mse_loss(t, y)``, a ``torch.nn`` module called on ``t``
        raise :class:`~unrollgraph.TorchFunctionError` naming the unrollgraph function to use
        and how to hand PyTorch the value (``torch.tensor(t.numpy())``). PyTorch's operators
        take that ``TypeError`` for ``NotImplemented``, so ``torch_tensor + t`` is ``t``'s
        reflected operator, a node, as ``ndarray + t`` is.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> t = ug.tensor([1.0, 2.0], name="t")
        >>> ug.Tensor.__torch_function__(ug.tanh, (), (t,))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        unrollgraph.errors.TorchFunctionError: unrollgraph...tanh(...) given t, ...
        """
        return _interop.torch_function_on_tensor(cls, func, args, kwargs or {})

    def __dlpack__(self, *args, **kwargs):
        """Refused: PyTorch's constructors (``torch.tensor(t)``, ``torch.as_tensor``,
        ``torch.asarray``, ``torch.from_dlpack``) ask for it, and get a
        :class:`~unrollgraph.TorchFunctionError` saying how to hand PyTorch the value
        (``torch.tensor(t.numpy())``); numpy's ``np.from_dlpack`` is told ``np.asarray(t)``."""
        raise _interop.torch_constructor_error(self, sys._getframe(1).f_globals.get(
            "__name__", ""))

    def __dlpack_device__(self):
        """Refused, as :meth:`__dlpack__` is (asked for first by ``torch.from_dlpack``)."""
        raise _interop.torch_constructor_error(self, sys._getframe(1).f_globals.get(
            "__name__", ""))

    def __init__(self, data, node: Node, parents: tuple = (), requires_grad: bool = False):
        self._data = data
        self._grad = None
        self.node = node
        self._requires_grad = requires_grad
        self._parents = parents
        self._version = _NEVER
        self._born = _CLOCK[0]
        self._walked = False  # set by a backward() without retain_graph=True that walks it

    # -- value and gradient ---------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        """The value, a numpy array.

        A leaf's value (from :func:`tensor`, ``cell.param``, ...) is read-only: an in-place edit
        such as ``t.data[0] = 1.0`` raises numpy's "assignment destination is read-only", and
        ``p.data -= lr * p.grad`` numpy's "output array is read-only" (write the step as
        ``with ug.no_grad(): p -= lr * p.grad``, in place, as in PyTorch).
        Edit it with ``t[0] = 1.0`` or ``with t.edit() as a: ...`` (:meth:`edit`), or assign a
        new value, ``t.data = new`` (or use an optimizer, or ``cell.load_state_dict``). The
        assignment keeps the tensor's shape and dtype: the new value is copied and converted
        to the tensor's float type (integers become floats, never the other way round); other
        shapes and non-real data raise. A graph built before the
        change can no longer be differentiated: ``backward()`` raises a
        :class:`~unrollgraph.GradientError` that names the tensor; compute the forward pass
        again.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> w = ug.tensor([1.5, 2.5], requires_grad=True)
        >>> w.data = np.array([2, 3])         # integers: converted to w's float64
        >>> w.data
        array([2., 3.])

        A cell's placeholder (``cell.input``, ``cell.state``) holds a stand-in while the cell
        is built, a batch of one of 0.5 that only checks shapes: its ``.data``, and the
        ``.data`` of a value computed from it (``(h * 2).data``), raise
        :class:`~unrollgraph.CellError`, since a number or array read from it (``h.data.max()``)
        would be a constant of the cell, the same at every step.

        Coming from PyTorch: ``.data`` is a numpy array, so ``p.data.add_(...)`` and
        ``p.grad.zero_()`` do not exist; write ``p.add_(...)`` (or ``p -= ...``) under
        :func:`no_grad`, and ``p.grad = None``.
        """
        data = self._data
        if self._parents:  # (the node's recorded shape: a cheaper read than data.shape)
            shape = self.node._shape
            if shape and shape[0] == 1 and _stand_in_source(self) is not None:
                raise _stand_in_error(self, ".data")
            return data
        if self.node._op in _PLACEHOLDERS and self.node._step is None:
            raise _stand_in_error(self, ".data")
        return data

    @data.setter
    def data(self, value) -> None:
        if self.node._op in _PLACEHOLDERS and self.node._step is None:
            raise _stand_in_error(self, ".data = ...")
        old = self._data
        if type(old) is tuple:
            raise GraphError(
                f"{self.node.label()} holds the outputs of an unrolled net; assign the data of "
                "its output tensors' leaves instead"
            )
        what = f"{self.node.label()}.data"
        arr = as_real_array(value, what, dtype=old.dtype)
        if arr.shape != old.shape:
            raise ShapeError(
                f"{what} = ...: the new value has shape {arr.shape} but {self.node.label()} has "
                f"shape {old.shape}; a tensor keeps its shape (make a new tensor with "
                "ug.tensor(...) for another shape)"
            )
        self._data = _locked(arr)
        # new memory: tensors that shared the old one (detach()) keep it, and their record
        self._version = [0, None]
        _mark_changed(self, "an assignment to .data")

    @property
    def grad(self) -> np.ndarray | None:
        """The gradient of the last ``backward()`` output with respect to this tensor, summed
        over calls (see :meth:`zero_grad`); ``None`` before any.

        It has the tensor's shape and dtype. Assigning it (``t.grad = g``) copies ``g`` and
        converts it to the tensor's float type; ``None`` resets it. Another shape raises
        :class:`~unrollgraph.ShapeError`, data that is not real numbers
        :class:`~unrollgraph.DTypeError`.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> w = ug.tensor([1.0, 2.0], dtype=np.float32)
        >>> w.grad = [1, 2]
        >>> w.grad, w.grad.dtype
        (array([1., 2.], dtype=float32), dtype('float32'))
        """
        return self._grad

    @grad.setter
    def grad(self, value) -> None:
        if value is None:
            self._grad = None
            return
        what = f"{self.node.label()}.grad"
        arr = as_real_array(value, what, dtype=self._data.dtype)
        if arr.shape != self._data.shape:
            raise ShapeError(
                f"{what} = ...: the gradient has shape {arr.shape} but {self.node.label()} has "
                f"shape {self._data.shape}; a gradient has its tensor's shape"
            )
        self._grad = arr

    @property
    def requires_grad(self) -> bool:
        """Whether gradients flow to this tensor. Assigning it takes ``True`` or ``False``
        (a string or a number is refused with :class:`~unrollgraph.DTypeError`)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise DTypeError(
                f"{self.node.label()}.requires_grad = ...: pass True or False, got {value!r}"
            )
        self._requires_grad = bool(value)

    # -- basic properties ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """Shape of the value, a tuple of ints.

        In a cell, a placeholder (``cell.input``, ``cell.state``) and every value computed
        from it hold a stand-in while the cell is built, whose axis 0 is a batch of one; the
        real batch size is known only when the unrolled net is called. So their shape reads
        as ``(1, ...)`` but its axis 0 cannot be read: ``h.shape[0]``, ``B, H = h.shape``,
        ``[*h.shape]``, ``f(*h.shape)`` and a slice that includes axis 0 raise
        :class:`~unrollgraph.CellError` (the number would be 1 at every batch size; only
        ``tuple(h.shape)[0]``, which reads as numpy's own use of the shape does, is not
        caught: do not write it). Read the
        declared shape ``h.shape[1:]``, a feature size ``h.shape[-1]`` and ``h.ndim``, and
        write the cell without the batch size (reshape with ``-1``, reduce over ``axis=-1``,
        let a parameter broadcast over the batch).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> cell = ug.Cell("c")
        >>> h = cell.state("h", (3,))
        >>> h.shape[1:], h.shape[-1], h.ndim
        ((3,), 3, 2)
        >>> h.shape[0]  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        unrollgraph.errors.CellError: h.shape[0]: ... the batch size ...
        """
        shape = self._data.shape
        if not shape or shape[0] != 1:  # (the one test on every other tensor's path)
            return shape
        source = _stand_in_source(self)
        return shape if source is None else _StandInShape(shape, self.node, source)

    @property
    def ndim(self) -> int:
        """Number of axes (a cell's placeholder counts its batch axis: ``h.ndim`` is
        ``len(h.shape)``)."""
        return self._data.ndim

    @property
    def size(self) -> int:
        """Number of numbers in the value, as numpy's ``size``: an int, which can also be
        called as PyTorch's ``Tensor.size``: ``t.size()`` is the shape, ``t.size(d)`` the
        size of axis ``d``.

        For a cell's placeholder or a value computed from one it would count the stand-in's
        batch of one: :class:`~unrollgraph.CellError` (the numbers of one sequence are
        ``math.prod(h.shape[1:])``, PyTorch's ``h.size(d)`` is ``h.shape[d]`` for an axis
        after the batch's).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> t = ug.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        >>> t.size, t.size(), t.size(0), t.size(-1)
        (6, (2, 3), 2, 3)
        """
        n = self._size(".size")
        size = int.__new__(_Size, n)
        size._of = self
        return size

    def _size(self, read: str) -> int:
        """:attr:`size`, the read named ``read`` in the error (as :func:`_batch_message`)."""
        shape = self.node._shape  # (the recorded shape: a cheaper read than data.shape)
        if shape and shape[0] == 1:
            source = _stand_in_source(self)
            if source is not None:
                raise CellError(_batch_message(self.node, source, read,
                                               "math.prod({k}.shape[1:]) counts the numbers "
                                               "of one sequence, and {k}.shape[d] is "
                                               "PyTorch's {k}.size(d) for d >= 1 or d = -1"))
        return self._data.size

    def dim(self) -> int:
        """Number of axes, as PyTorch's ``Tensor.dim()``: :attr:`ndim`.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> ug.tensor([[1.0, 2.0]]).dim()
        2
        """
        return self._data.ndim

    def numel(self) -> int:
        """Number of numbers in the value, as PyTorch's ``Tensor.numel()``: :attr:`size`
        (refused for a cell's placeholder, as :attr:`size` is).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> ug.tensor([[1.0, 2.0]]).numel()
        2
        """
        return self._size(".numel()")

    @property
    def dtype(self):
        return self._data.dtype

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
        """The value as a numpy array (not a copy); refused for a cell's placeholder and a
        value computed from one, as :attr:`data` is."""
        node = self.node
        shape = node._shape
        if (node._op in _PLACEHOLDERS and node._step is None) or (
                self._parents and shape and shape[0] == 1
                and _stand_in_source(self) is not None):
            raise _stand_in_error(self, ".numpy()")
        return self._data

    def item(self) -> float:
        """The value of a one-element tensor as a Python float (``float(t)`` and ``int(t)``
        too). In a cell, a value computed from an input or a state is a stand-in while the
        cell is built, so a Python number made from it raises :class:`~unrollgraph.CellError`
        (it would be fixed once, not computed at every step)."""
        if type(self._data) is not np.ndarray or self._data.size != 1:
            k = self.node.label()
            raise ShapeError(
                f"{k}.item() needs a one-element tensor; {k} has shape {self.shape} "
                f"({self._data.size} numbers): read one element as {k}[i, ...].item(), "
                f"reduce first ({k}.sum().item(), {k}.mean().item()), or read the whole "
                f"value as an array, {k}.data (a list: {k}.tolist())"
            )
        placeholder = _placeholder_source(self.node) if self._parents or \
            self.node.op in _PLACEHOLDERS else None
        if placeholder is not None:
            raise CellError(
                f"a Python number from {self.node.label()} (item(), float(), int()): it is "
                f"computed from {placeholder}, a cell placeholder that holds a stand-in while "
                "the cell is built, so the number would be fixed once, not computed at every "
                "step; keep it a tensor (ops are computed again at every step)"
            )
        return self._data.item()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __iter__(self):
        """The rows along axis 0 (``t[0]``, ``t[1]``, ...), each a node as ``t[i]`` is.

        Axis 0 of a cell's placeholder, or of a value computed from one, is the stand-in's
        batch of one while the cell is built: iterating over it (``for row in h``,
        ``list(h)``) raises :class:`~unrollgraph.CellError`, as ``len(h)`` does."""
        self._check_batch_read(" iterated (for row in h, list(h), a, = h)",
                               "index a feature axis instead ({k}[:, i])")
        for i in range(len(self)):
            yield self[i]

    def __len__(self) -> int:
        """The size of axis 0, as numpy's ``len``. :class:`TypeError` for a tensor of shape
        ``()``; :class:`~unrollgraph.CellError` for a cell's placeholder or a value computed
        from one, whose axis 0 is the stand-in's batch of one (see :attr:`shape`)."""
        data = self._data
        if type(data) is np.ndarray and not data.ndim:
            raise TypeError(
                f"len() of {self.node.label()}, a tensor of shape (): it has no axis to count; "
                f"use t.item() for its value{_interop.torch_sequence_hint()}"
            )
        self._check_batch_read(" (len)", "")
        return len(data)

    def _check_batch_read(self, read: str, instead: str) -> None:
        """Raise :class:`~unrollgraph.CellError` if axis 0 of this tensor is a cell
        stand-in's batch of one (a number read from it would be 1 at every batch size)."""
        data = self._data
        if type(data) is np.ndarray and data.ndim and data.shape[0] == 1:
            source = _stand_in_source(self)
            if source is not None:
                label = self.node.label()
                read = f"len({label})" if read == " (len)" else read
                raise CellError(_batch_message(self.node, source, read, instead))

    def __array__(self, dtype=None, copy=None):
        """The value, for numpy (``np.asarray(t)``): a read-only view of the value, or a copy
        when a ``dtype`` or ``copy=True`` asks for one."""
        data = self._data
        if type(data) is not np.ndarray:
            raise GraphError(
                f"{self.node.label()} holds the outputs of an unrolled net; use its output "
                "tensors"
            )
        if dtype is not None and np.dtype(dtype) != data.dtype:
            return data.astype(dtype)
        if copy:
            return data.copy()
        view = data.view()
        view.flags.writeable = False
        return view

    def __repr__(self) -> str:
        body = np.array2string(self._data, precision=4, threshold=20, separator=", ")
        extra = f", name={self.name!r}" if self.name else ""
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __bool__(self):
        node = self.node
        if node.op in _COMPARISONS or node.role == "condition":
            placeholder = _placeholder_source(node)
            if placeholder is not None:
                raise CellError(
                    f"the truth value of {node.label()} depends on {placeholder}, a cell "
                    "placeholder: Python asks for it in `if`, `and`, `or`, `not`, max(), "
                    "min() and sorted(), and would decide it once, while the cell is built, "
                    "not at every step. Use ug.maximum(a, b) / ug.minimum(a, b) for max()/"
                    "min(), ug.where(condition, a, b) for the rest: they are computed again at "
                    "every step"
                )
            if self._data.size == 1:
                return bool(self._data)
            raise TypeError(
                f"the truth value of {node.label()} (shape {self.shape}) is ambiguous: use "
                "(...).data.any() or .all(), or ug.where(condition, a, b)"
            )
        raise TypeError(
            "the truth value of a Tensor is ambiguous; compare t.data or use ug.where(...)"
        )

    # -- gradients ------------------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Reset ``.grad`` to ``None`` (gradients otherwise accumulate over backward calls)."""
        self._grad = None

    def detach(self) -> "Tensor":
        """A new leaf with the same value (the same memory, read-only) and no history: the
        gradient stops here. An in-place change of this tensor's value (an optimizer step) is
        seen by the detached one, and recorded for both. Where the memory is lent (a net's
        outputs and final states are views of its run's buffers), an in-place edit of the
        detached tensor (``d[1] = 0``, ``d.edit()``, ``d.add_(v)``) first copies it: the run,
        which reads those buffers again, never sees the edit."""
        data = self._data
        if type(data) is np.ndarray and data.flags.writeable:
            data = data.view()
            data.flags.writeable = False
        t = Tensor(data, Node("leaf", name=self.name, shape=self.shape, dtype=str(self.dtype)))
        if self._version is _NEVER:
            self._version = [0, None]
        t._version = self._version
        return t

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        """Set ``requires_grad`` in place and return the tensor, as PyTorch's
        ``Tensor.requires_grad_``.

        Parameters
        ----------
        flag : bool, optional
            Whether gradients flow to this tensor from now on (default True).

        Returns
        -------
        Tensor
            ``self``.

        Raises
        ------
        DTypeError
            For a flag that is not ``True`` or ``False``.
        GradientError
            For ``False`` on a tensor computed by an op (use :meth:`detach`).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> w = ug.tensor([1.0, 2.0]).requires_grad_()
        >>> w.requires_grad
        True
        """
        if not isinstance(flag, (bool, np.bool_)):
            raise DTypeError(f"requires_grad_(flag): pass True or False, got {flag!r}")
        if self._parents and not flag:
            raise GradientError(
                f"{self.node.label()}.requires_grad_(False): {self.node.label()} is "
                f"{made_by(self.node)}, and only a leaf can stop requiring grad; use "
                "t.detach() for a leaf with the same value and no history"
            )
        self.requires_grad = flag
        return self

    # -- editing a value in place (the documented door besides .data = new) -----------------------
    def edit(self):
        """Edit the value in place, in a ``with`` block: ``with w.edit() as a: a[0] = 1.0``.

        A leaf's value is read-only, so ``w.data[0] = 1.0`` raises numpy's "assignment
        destination is read-only" (numpy gives no way to put a clearer message there). Inside
        the block ``a`` is the value itself, writable; afterwards it is read-only again and the
        change is recorded as an optimizer step's is: tensors sharing the memory
        (:meth:`detach`) see it, and a graph computed before it can no longer be
        differentiated (``backward()`` raises :class:`~unrollgraph.GradientError` naming the
        tensor). The shape and dtype stay. For one element or slice, ``w[0] = 1.0`` does the
        same; ``w.data = new`` replaces the whole value.

        All or nothing: an exception inside the block puts every number back as it was before
        the block (and records no change), then propagates. So does a block that changes the
        array's shape or type (``a.shape = ...``, ``a.resize(...)``, ``a.dtype = ...``),
        raising :class:`~unrollgraph.ShapeError`.

        Returns
        -------
        context manager
            Yields the writable ``numpy.ndarray``.

        Raises
        ------
        GraphError
            For a value computed by an op (as ``t[...] = v`` does), and for the tuple an
            unrolled net's call holds (edit its outputs' leaves).
            Also for a block that changes no number while none of its variables holds the
            array any more (``a = a - g`` rebinds ``a`` and leaves the tensor as it was; write
            ``a -= g``).
        ShapeError
            For a block that changes the array's shape or dtype (undone).
        CellError
            For a cell's placeholder (input or state), whose value is a stand-in.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> w = ug.tensor([1.0, 2.0, 3.0], requires_grad=True)
        >>> with w.edit() as a:
        ...     a[1:] *= 10
        >>> w.data
        array([ 1., 20., 30.])
        """
        node = self.node
        if type(self._data) is not np.ndarray:
            raise GraphError(
                f"{node.label()} holds the outputs of an unrolled net; edit its output "
                "tensors instead"
            )
        if node.op in ("input", "state"):
            raise CellError(
                f"{node.label()}.edit(): {node.label()} is a cell's placeholder, whose value "
                "is a stand-in while the cell is built; compute the value you want with ops "
                "(ug.where(mask, new, old), ug.concat([...]))"
            )
        if self._parents:
            raise GraphError(
                f"{node.label()}.edit(): {node.label()} is {made_by(node)}, and an "
                "edit of its value would not be part of the graph its gradient follows; "
                "compute the new value with ops (ug.where(mask, new, old), ug.concat([...])), "
                "or edit a leaf (w[...] = v, or with w.edit() as a: ...)"
            )

        @contextlib.contextmanager
        def all_or_nothing():
            before = self._data.copy()
            failed = False
            with _editing(self, None) as arr:  # (recorded below, unless the block failed)
                layout = (arr.shape, arr.dtype, arr.strides)
                try:
                    yield arr
                    if (arr.shape, arr.dtype, arr.strides) != layout:
                        raise ShapeError(
                            f"{node.label()}.edit(): the block changed the value's shape or "
                            f"type, to {arr.shape} {arr.dtype}, from {layout[0]} {layout[1]} "
                            "(a.shape = ..., a.resize(...), a.dtype = ...); a tensor keeps its "
                            "shape and dtype, so nothing was changed. Edit the numbers in "
                            "place (a[...] = ..., a -= ...); for another shape make a new "
                            "tensor (ug.tensor(...), cell.param(...))")
                    if (not _caller_holds(arr)
                            and np.array_equal(arr, before, equal_nan=True)):
                        raise GraphError(
                            f"{node.label()}.edit(): the block changed no number of "
                            f"{node.label()}, and nothing in it holds the array the block was "
                            "given any more: `with p.edit() as a: a = a - g` binds the name a "
                            "to a new array and leaves the tensor as it was. Write in place: "
                            "a -= g, a[...] = new, np.clip(a, lo, hi, out=a)")
                except GeneratorExit:  # entered, never ended, collected: kept as written
                    raise
                except BaseException:
                    failed = True
                    _put_back(self, arr, before, layout)  # the edit is undone
                    raise
                finally:
                    if not failed:
                        _mark_changed(self, "an edit in place (Tensor.edit or t[...] = ...)")

        return all_or_nothing()

    def __setitem__(self, index, value) -> None:
        """``t[index] = value`` on a leaf (a parameter, a tensor from :func:`tensor`): an edit
        in place, recorded as :meth:`edit` records it. ``value`` is converted to the tensor's
        float type. A value computed by an op, or a cell's placeholder, has a graph that the
        assignment would not be part of, and refuses it."""
        node = self.node
        if node.op in ("input", "state"):
            raise CellError(
                f"{node.label()}[...] = ...: {node.label()} is a cell's placeholder, whose value "
                "is a stand-in while the cell is built; compute the value you want with ops "
                "(ug.where(mask, new, old), ug.concat([...]))"
            )
        if self._parents or type(self._data) is not np.ndarray:
            raise GraphError(
                f"{node.label()}[...] = ...: {node.label()} is {made_by(node)}, and an "
                "assignment into it would not be part of the graph its gradient follows; "
                "compute the new value with ops (ug.where(mask, new, old), ug.concat([...])), "
                "or edit a leaf (w[...] = v, or with w.edit() as a: ...)"
            )
        if isinstance(index, Tensor):
            index = index._data
        what = f"{node.label()}[{index!r}] = ..."
        arr = as_real_array(value, what, dtype=self._data.dtype, copy=False)
        with _editing(self, None) as data:  # (recorded below, once it has succeeded)
            try:
                data[index] = arr
            except (IndexError, ValueError, TypeError) as err:
                raise ShapeError(
                    f"{what}: {err} ({node.label()} has shape {self.shape}, the value "
                    f"{arr.shape}); nothing was changed"
                ) from None
        _mark_changed(self, "an edit in place (Tensor.edit or t[...] = ...)")

    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        """Compute the gradient of this tensor with respect to every tensor it depends on.

        One walk in reverse topological order (explicit stack: graphs of millions of nodes
        work). Each tensor's ``.grad`` receives the sum over every path, and leaves keep
        accumulating over calls, as in PyTorch.

        As in PyTorch, a graph is walked once: every node this walk passes through (every
        tensor computed by an op, an unrolled net's call included) is released, and a later
        ``backward()`` that reaches one of them raises :class:`~unrollgraph.GradientError`
        naming it, before any ``.grad`` changes. This holds for the same loss called twice
        and for two losses that share part of a graph (the second reaches the shared part).
        Compute the forward pass again for a new gradient, add the losses and call
        ``backward()`` once, or pass ``retain_graph=True`` to walk a graph again.

        Parameters
        ----------
        gradient : array_like, optional
            The seed ``dL/dself``; required unless this tensor holds a single element.
        retain_graph : bool
            Keep the graph walkable: a later ``backward()`` through it walks it again and
            adds its gradients into every ``.grad`` once more (as PyTorch's
            ``retain_graph=True``). The default, False, releases every node walked.

        Raises
        ------
        GradientError
            On a tensor that does not require grad; through a node that an earlier
            ``backward()`` walked without ``retain_graph=True``; through a value changed
            after it was used.
        ShapeError
            For a seed ``gradient`` of another shape than this tensor's.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> w = ug.tensor(3.0, requires_grad=True)
        >>> (w * w + w).backward()
        >>> float(w.grad)
        7.0
        >>> loss = w * w
        >>> loss.backward(retain_graph=True)  # walk it again below: the gradients add up
        >>> loss.backward()
        >>> float(w.grad)
        19.0
        >>> loss.backward()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        unrollgraph.errors.GradientError: backward() on <mul> a second time: ...
        """
        if not self._requires_grad:
            if self.node.role == "no_grad" or _no_grad_source(self):
                raise GradientError(
                    f"backward() on {self.node.label()}, which does not require grad: it "
                    "was computed inside ug.no_grad() "
                    "(or from values made there, such as the outputs of a net called there), "
                    "so no graph was recorded and there is nothing to differentiate. Compute "
                    "it again outside the no_grad() block (or inside ug.enable_grad())"
                )
            raise GradientError(
                f"backward() on {self.node.label()}, which does not require grad: none of the "
                "tensors it was computed from has requires_grad=True. Create the leaves with "
                "ug.tensor(data, requires_grad=True)"
            )
        if gradient is None:
            if self._data.size != 1:
                raise GradientError(
                    f"backward() on a non-scalar tensor {self.node.label()} of shape "
                    f"{self.shape} needs a seed gradient: pass gradient=np.ones({self.shape}) "
                    "or reduce first, e.g. t.sum().backward()"
                )
            seed = None  # (a one: _backward makes it)
        else:
            seed = as_real_array(gradient, "backward(gradient=...)", dtype=self._data.dtype)
            if seed.shape != self.shape:
                raise ShapeError(
                    f"backward(): seed gradient of shape {seed.shape} does not match "
                    f"{self.node.label()} of shape {self.shape}"
                )
        _backward(self, seed, retain_graph)

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

    def __abs__(self):  # abs(t): ug.abs, one graph node
        return _apply(_REGISTRY["abs"], (self,), _NO_ATTRS, None)

    def __matmul__(self, other):
        return _apply(_REGISTRY["matmul"], (self, other), _NO_ATTRS, None)

    def __rmatmul__(self, other):
        return _apply(_REGISTRY["matmul"], (other, self), _NO_ATTRS, None)

    # -- in-place operators: ``p -= lr * p.grad`` (PyTorch's semantics) ------------------------
    # On a leaf that requires grad (a parameter) they change the value in place under
    # ug.no_grad() and raise GradientError otherwise; on anything else they return
    # NotImplemented, so Python computes ``t = t - u``: a new node, as before.
    def __iadd__(self, other):
        return self._in_place(other, "+=", np.add)

    def __isub__(self, other):
        return self._in_place(other, "-=", np.subtract)

    def __imul__(self, other):
        return self._in_place(other, "*=", np.multiply)

    def __itruediv__(self, other):
        return self._in_place(other, "/=", np.true_divide)

    def __ipow__(self, other):
        return self._in_place(other, "**=", np.power)

    def __imatmul__(self, other):
        return self._in_place(other, "@=", np.matmul)

    def _in_place(self, other, symbol: str, fn):
        """``self <symbol> other`` for the in-place operators.

        A leaf that requires grad (a parameter, ``ug.tensor(..., requires_grad=True)``) is
        changed in place inside :func:`no_grad`, as in PyTorch: the change is recorded as an
        optimizer step's is (tensors sharing the memory see it; a graph computed before can
        no longer be differentiated), and ``self`` is returned, so ``cell.weight_hh -= g``
        keeps the very parameter the unrolled net reads. Outside ``no_grad()`` it raises
        :class:`~unrollgraph.GradientError`: Python would otherwise rebind the name to a new
        computed tensor and leave the parameter as it was, so training would silently do
        nothing. Every other tensor (computed by an op, a constant, a cell's placeholder)
        gives ``NotImplemented``: Python falls back to ``self - other``, a new node, which is
        what ``h -= u`` inside a cell body means.
        """
        if self._parents or not self._requires_grad or type(self._data) is not np.ndarray:
            return NotImplemented
        label = self.node.label()
        if _MODE.get().grad_enabled:
            raise GradientError(
                f"{label} {symbol} ...: {label} is a leaf that requires grad (a parameter); "
                "Python would rebind the name to a new computed tensor and leave the parameter "
                "itself unchanged, so the unrolled net and the optimizer would never see the "
                f"step. Change it in place under ug.no_grad(), as in PyTorch (with "
                f"ug.no_grad(): p {symbol} lr * p.grad), or with p.edit() as a: a {symbol} ..., "
                "or p.data = new, or use an optimizer (ug.optim.SGD(cell.parameters(), lr=...))"
                f"; for a new tensor computed from {label}, write q = p {symbol[:-1]} ..."
            )
        return self._change_in_place(other, f"{label} {symbol} value", fn,
                                     f"an in-place update ({label} {symbol} ... under "
                                     "ug.no_grad())")

    def _change_in_place(self, other, what: str, fn, how: str, alpha=None):
        """``self = fn(self, alpha * other)`` in place, on a leaf (checked by the caller):
        the one place the in-place operators and methods change a value. Raises
        :class:`~unrollgraph.ShapeError` (nothing changed) for a result of another shape."""
        label = self.node.label()
        if isinstance(other, Tensor):
            if type(other._data) is not np.ndarray:
                raise GraphError(
                    f"{what}: the value holds the outputs of an unrolled net; use its output "
                    "tensors"
                )
            value = other._data
        else:
            value = as_real_array(other, what, copy=False)
        if alpha is not None:
            value = value * as_real_array(alpha, f"{what}: alpha", copy=False)
        arr = self._data
        try:
            result = fn(arr, value)
        except ValueError as err:
            raise ShapeError(
                f"{what}: {err} ({label} has shape {arr.shape}, the value {value.shape}); "
                "nothing was changed"
            ) from None
        if result.shape != arr.shape:
            raise ShapeError(
                f"{what}: the result has shape {result.shape} but {label} has shape "
                f"{arr.shape}; an in-place change keeps the tensor's shape (nothing was "
                "changed)"
            )
        with _editing(self, how) as data:
            data[...] = result  # (converted to the tensor's float type, as an edit is)
        return self

    def _method_in_place(self, call: str, other, fn, alpha=None) -> "Tensor":
        """PyTorch's in-place methods (``add_``, ``sub_``, ``mul_``, ``div_``, ``zero_``):
        the rules of the in-place operators, with an error where an operator would fall back
        to a new node (a method named ``..._`` promises to change this very tensor).

        A leaf that requires grad changes under :func:`no_grad` only; a constant leaf (no
        grad) changes in any mode, as in PyTorch; a cell's placeholder raises
        :class:`~unrollgraph.CellError`, a computed tensor
        :class:`~unrollgraph.GradientError`."""
        node = self.node
        label = node.label()
        if node.op in _PLACEHOLDERS and node.step is None:
            raise CellError(
                f"{label}.{call}: {label} is a cell's placeholder, whose value is a stand-in "
                "while the cell is built (the unrolled net replaces it by each step's value); "
                "compute a new tensor with ops instead "
                f"({label} + v, {label} * v, ug.where(mask, new, {label}))"
            )
        if self._parents or type(self._data) is not np.ndarray:
            raise GradientError(
                f"{label}.{call}: {label} is {made_by(node)}, and a change of its "
                "value in place would not be part of the graph its gradient follows; compute "
                "a new tensor (q = t + v, q = t * v), or change a leaf (a parameter, under "
                "ug.no_grad())"
            )
        if self._requires_grad and _MODE.get().grad_enabled:
            raise GradientError(
                f"{label}.{call}: {label} is a leaf that requires grad (a parameter), and an "
                "in-place change of it while gradients are recorded has no place in the "
                f"graph; change it under ug.no_grad(), as in PyTorch (with ug.no_grad(): "
                f"p.{call}), or use an optimizer (ug.optim.SGD(cell.parameters(), lr=...))"
            )
        return self._change_in_place(other, f"{label}.{call}", fn,
                                     f"an in-place update ({label}.{call})", alpha)

    def add_(self, other, *, alpha=1) -> "Tensor":
        """``self += alpha * other``, in place, as PyTorch's ``Tensor.add_``; returns ``self``.

        The rules of ``+=``: a leaf that requires grad (a parameter) changes only under
        :func:`no_grad`, and the change is recorded (a graph computed before it can no longer
        be differentiated); a constant leaf changes in any mode.

        Parameters
        ----------
        other : Tensor, array_like or number
            Broadcast to ``self``'s shape (the result keeps it).
        alpha : number, optional
            The factor of ``other`` (default 1).

        Returns
        -------
        Tensor
            ``self``, changed.

        Raises
        ------
        GradientError
            For a parameter outside ``no_grad()``, and for a tensor computed by an op (its
            value is part of a graph; write ``q = t + v``).
        CellError
            For a cell's placeholder (input or state).
        ShapeError
            For ``other`` whose shape would change ``self``'s (nothing is changed).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> w = ug.tensor([1.0, 2.0], requires_grad=True)
        >>> w.grad = [10.0, 20.0]
        >>> with ug.no_grad():
        ...     _ = w.add_(w.grad, alpha=-0.1)   # an SGD step
        >>> w.data
        array([0., 0.])
        """
        alpha = _alpha(alpha, "add_")
        return self._method_in_place(f"add_(..., alpha={alpha!r})" if alpha != 1 else
                                     "add_(...)", other, np.add, None if alpha == 1 else alpha)

    def sub_(self, other, *, alpha=1) -> "Tensor":
        """``self -= alpha * other``, in place, as PyTorch's ``Tensor.sub_``; returns ``self``.

        The rules and errors of :meth:`add_`.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> w = ug.tensor([1.0, 2.0], requires_grad=True)
        >>> with ug.no_grad():
        ...     _ = w.sub_([1.0, 1.0], alpha=0.5)
        >>> w.data
        array([0.5, 1.5])
        """
        alpha = _alpha(alpha, "sub_")
        return self._method_in_place(f"sub_(..., alpha={alpha!r})" if alpha != 1 else
                                     "sub_(...)", other, np.subtract,
                                     None if alpha == 1 else alpha)

    def mul_(self, other) -> "Tensor":
        """``self *= other``, in place, as PyTorch's ``Tensor.mul_``; returns ``self``.

        The rules and errors of :meth:`add_`.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> w = ug.tensor([1.0, 2.0], requires_grad=True)
        >>> with ug.no_grad():
        ...     _ = w.mul_(0.9)                  # weight decay
        >>> w.data
        array([0.9, 1.8])
        """
        return self._method_in_place("mul_(...)", other, np.multiply)

    def div_(self, other) -> "Tensor":
        """``self /= other``, in place, as PyTorch's ``Tensor.div_``; returns ``self``.

        The rules and errors of :meth:`add_`.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> w = ug.tensor([1.0, 2.0], requires_grad=True)
        >>> with ug.no_grad():
        ...     _ = w.div_(4)
        >>> w.data
        array([0.25, 0.5 ])
        """
        return self._method_in_place("div_(...)", other, np.true_divide)

    def zero_(self) -> "Tensor":
        """Set every number to 0, in place, as PyTorch's ``Tensor.zero_``; returns ``self``.

        The rules and errors of :meth:`add_`: a parameter changes under :func:`no_grad` only.
        To reset a gradient, which is a numpy array (``w.grad.zero_()`` in PyTorch), write
        ``w.grad = None`` or ``w.zero_grad()``.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> w = ug.tensor([1.0, 2.0], requires_grad=True)
        >>> with ug.no_grad():
        ...     _ = w.zero_()
        >>> w.data
        array([0., 0.])
        """
        return self._method_in_place("zero_()", 0, _zeros)

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index._data
        if isinstance(index, list):
            index = np.asarray(index)
        return apply("getitem", self, index=index)

    # comparisons are graph nodes (ops gt, ge, lt, le): a 0/1 value of the operands' float type
    # with no gradient, computed again at every step of a cell and every call; ug.where reads
    # it as its condition. A one-element result has a truth value (`if t > 0:`).
    def __gt__(self, other):
        return _compare("gt", self, other)

    def __ge__(self, other):
        return _compare("ge", self, other)

    def __lt__(self, other):
        return _compare("lt", self, other)

    def __le__(self, other):
        return _compare("le", self, other)

    __hash__ = object.__hash__

    # -- methods -------------------------------------------------------------------------------
    @property
    def T(self) -> "Tensor":
        """The transpose (axes reversed)."""
        return apply("transpose", self, axes=None)

    def transpose(self, *axes) -> "Tensor":
        """Permute axes, as ``numpy.transpose`` (``t.transpose()`` reverses them,
        ``t.transpose(2, 0, 1)`` gives every axis its place), or swap two axes, as PyTorch's
        ``t.transpose(d0, d1)`` of a tensor of other than two axes.

        For a 2-D tensor the two readings of ``t.transpose(0, 1)`` differ: numpy's leaves
        every axis in place, PyTorch's swaps them. It raises :class:`ShapeError`; write
        ``t.T`` or ``t.transpose(1, 0)`` (the swap in both readings).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> t = ug.tensor([[[1.0, 2.0, 3.0]]])  # shape (1, 1, 3)
        >>> t.transpose(2, 0, 1).shape, t.transpose(0, 2).shape
        ((3, 1, 1), (3, 1, 1))
        """
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = axes[0]
        n = self._data.ndim
        if len(axes) == 2 and not any(isinstance(a, (bool, np.bool_)) or not isinstance(
                a, (int, np.integer)) for a in axes):  # (PyTorch's swap of two axes)
            call = f"transpose({axes[0]!r}, {axes[1]!r})"
            d0, d1 = _dim(self, axes[0], call), _dim(self, axes[1], call)
            if n == 2 and (d0, d1) == (0, 1):
                k = self.node.label()
                raise ShapeError(
                    f"{k}.{call} of a 2-D tensor: numpy reads it as the identity permutation "
                    "(every axis stays), PyTorch as a swap of axes 0 and 1; for the swap "
                    f"write {k}.T or {k}.transpose(1, 0), for the identity {k} itself")
            order = list(range(n))
            order[d0], order[d1] = d1, d0
            axes = order
        return apply("transpose", self, axes=tuple(axes) if axes else None)

    def t(self) -> "Tensor":
        """The transpose of a tensor of at most two axes, as PyTorch's ``Tensor.t()``
        (:attr:`T`); for more axes, :class:`ShapeError` naming :attr:`mT` and
        :meth:`transpose`.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> ug.tensor([[1.0, 2.0, 3.0]]).t().shape
        (3, 1)
        """
        if self._data.ndim > 2:
            k = self.node.label()
            raise ShapeError(
                f"{k}.t() takes a tensor of at most 2 axes; {k} has shape "
                f"{tuple(self._data.shape)}: swap the last two axes with {k}.mT, any two "
                f"with {k}.transpose(d0, d1), reverse them all with {k}.T")
        return apply("transpose", self, axes=None)

    @property
    def mT(self) -> "Tensor":
        """The last two axes swapped (a batch of matrices transposed), as PyTorch's
        ``Tensor.mT``.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> ug.tensor([[[1.0, 2.0, 3.0]]]).mT.shape
        (1, 3, 1)
        """
        n = self._data.ndim
        if n < 2:
            raise ShapeError(f"{self.node.label()}.mT needs at least 2 axes; "
                             f"{self.node.label()} has shape {tuple(self._data.shape)}")
        return apply("transpose", self, axes=tuple(range(n - 2)) + (n - 1, n - 2))

    def permute(self, *dims) -> "Tensor":
        """Permute axes, as PyTorch's ``Tensor.permute``: axis ``i`` of the result is axis
        ``dims[i]`` of ``t`` (``numpy.transpose`` with every axis named).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> ug.tensor([[[1.0, 2.0, 3.0]]]).permute(2, 0, 1).shape
        (3, 1, 1)
        """
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        call = f"permute{tuple(dims)}" if len(dims) != 1 else f"permute({dims[0]!r})"
        if len(dims) != self._data.ndim:
            raise ShapeError(
                f"{self.node.label()}.{call}: {self.node.label()} has "
                f"{self._data.ndim} axes (shape {tuple(self._data.shape)}); name each once, "
                f"such as permute{tuple(reversed(range(self._data.ndim)))}")
        order = tuple(_dim(self, d, call) for d in dims)
        if len(set(order)) != len(order):
            raise ShapeError(f"{self.node.label()}.{call}: an axis is named twice; name each "
                             "axis once")
        return apply("transpose", self, axes=order)

    def reshape(self, *shape) -> "Tensor":
        """Reshape, as ``numpy.reshape``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return apply("reshape", self, shape=_int_sizes(shape, f"reshape of {self.node.label()}"))

    def view(self, *shape) -> "Tensor":
        """Reshape, for PyTorch's ``Tensor.view(*shape)``: :meth:`reshape`.

        The result is a new node of the graph, never memory shared with ``t``: an edit in
        place of one (a constant's ``add_``, ``[...] = v``) leaves the other as it was, where
        PyTorch's view and its tensor change together. (PyTorch's ``view(dtype)`` is not
        taken: a size must be an int.)

        Examples
        --------
        >>> import unrollgraph as ug
        >>> ug.tensor([[1.0, 2.0], [3.0, 4.0]]).view(-1).shape
        (4,)
        """
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return apply("reshape", self, shape=_int_sizes(shape, f"view of {self.node.label()}"))

    def _reshaped(self, shape: list, batch: int) -> "Tensor":
        """A reshape to ``shape``, whose entry ``batch`` holds axis 0 of ``self``: -1 there
        for a cell's placeholder or a value computed from one, whose batch size is known only
        at the call."""
        if self._data.ndim and self._data.shape[0] == 1 and all(shape[:batch] + shape[
                batch + 1:]) and _stand_in_source(self) is not None:
            shape[batch] = -1
        return apply("reshape", self, shape=tuple(shape))

    def unsqueeze(self, dim) -> "Tensor":
        """A new axis of size 1 at ``dim``, as PyTorch's ``Tensor.unsqueeze`` (a reshape).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> t = ug.tensor([1.0, 2.0])
        >>> t.unsqueeze(0).shape, t.unsqueeze(-1).shape
        ((1, 2), (2, 1))
        """
        d = _dim(self, dim, f"unsqueeze({dim!r})", extra=1)
        shape = list(self._data.shape)
        shape.insert(d, 1)
        return self._reshaped(shape, 1 if d == 0 else 0)

    def squeeze(self, dim=None) -> "Tensor":
        """Drop axes of size 1, as PyTorch's ``Tensor.squeeze`` (a reshape): every such axis,
        or those of ``dim`` (an int or a tuple of them) that have size 1.

        In a cell, axis 0 of a placeholder, or of a value computed from one, is the batch:
        ``h.squeeze()`` would drop it (its stand-in has a batch of one) and raises
        :class:`~unrollgraph.CellError`; name the axes (``h.squeeze(-1)``).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> t = ug.tensor([[[1.0], [2.0]]])  # shape (1, 2, 1)
        >>> t.squeeze().shape, t.squeeze(-1).shape, t.squeeze(1).shape
        ((2,), (1, 2), (1, 2, 1))
        """
        shape = self._data.shape
        if dim is None:
            drop = {i for i, n in enumerate(shape) if n == 1}
            call = "squeeze()"
        else:
            dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
            call = f"squeeze({dim!r})"
            drop = {d for d in (_dim(self, d, call) for d in dims) if shape[d] == 1}
        if 0 in drop:
            self._check_batch_read(f".{call}", "name the axes to drop, such as {k}.squeeze(-1)")
        kept = [n for i, n in enumerate(shape) if i not in drop]
        if 0 in drop:  # (axis 0 is gone: no batch to keep)
            return apply("reshape", self, shape=tuple(kept))
        return self._reshaped(kept, 0)

    def flatten(self, start_dim=0, end_dim=-1) -> "Tensor":
        """Join axes ``start_dim`` to ``end_dim`` into one, as PyTorch's ``Tensor.flatten``
        (a reshape; every axis by default).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> t = ug.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # shape (1, 2, 2)
        >>> t.flatten().shape, t.flatten(1).shape
        ((4,), (1, 4))
        """
        call = f"flatten({start_dim!r}, {end_dim!r})"
        shape = self._data.shape
        if not shape:
            return apply("reshape", self, shape=(1,))
        s, e = _dim(self, start_dim, call), _dim(self, end_dim, call)
        if s > e:
            raise ShapeError(f"{self.node.label()}.{call}: start_dim comes after end_dim; "
                             "pass start_dim <= end_dim")
        new = list(shape[:s]) + [math.prod(shape[s:e + 1])] + list(shape[e + 1:])
        return self._reshaped(new, 0)

    def tolist(self):
        """The value as nested Python lists of floats, as PyTorch's ``Tensor.tolist`` (a
        number for a tensor of shape ``()``); refused for a cell's placeholder and a value
        computed from one, as :meth:`numpy` is.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> ug.tensor([[1.0, 2.0]]).tolist()
        [[1.0, 2.0]]
        """
        return self.numpy().tolist()

    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None) -> "Tensor":
        """Sum over ``axis`` (all axes by default), as ``numpy.sum``; PyTorch's ``dim=`` and
        ``keepdim=`` are taken as ``axis=`` and ``keepdims=``."""
        if axis is None and keepdims is False and dim is None and keepdim is None:
            return _apply(_REGISTRY["sum"], (self,), _SUM_ALL, None)  # (the loss's sum)
        axis, keepdims = _torch_axis(self, "sum", axis, keepdims, dim, keepdim)
        return _apply(_REGISTRY["sum"], (self,), {"axis": _axis(axis), "keepdims": keepdims},
                      None)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None) -> "Tensor":
        """Mean over ``axis`` (all axes by default), as ``numpy.mean``; PyTorch's ``dim=``
        and ``keepdim=`` are taken as ``axis=`` and ``keepdims=``."""
        if dim is not None or keepdim is not None:
            axis, keepdims = _torch_axis(self, "mean", axis, keepdims, dim, keepdim)
        return apply("mean", self, axis=_axis(axis), keepdims=keepdims)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None) -> "Tensor":
        """Maximum over ``axis`` (all axes by default), as ``numpy.max``: the values only.

        PyTorch's ``t.max(dim=d)`` returns the values and the indices; it raises
        :class:`TypeError` saying so (``t.max(axis=d)`` gives the values here,
        ``np.argmax(t.data, axis=d)`` the indices).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> ug.tensor([[1.0, 5.0], [4.0, 2.0]]).max(axis=1).data
        array([5., 4.])
        """
        if dim is not None or keepdim is not None:
            k = self.node.label()
            d = axis if dim is None else dim
            raise TypeError(
                f"{k}.max(dim={d!r}): PyTorch's max over a dim returns (values, indices); "
                f"here {k}.max(axis={d!r}) returns the values, as numpy's max (keepdims=True "
                f"keeps the axis), and np.argmax({k}.data, axis={d!r}) the indices")
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
        from .functional import clip

        return clip(self, lo, hi)


# PyTorch's Tensor methods and properties that a ug Tensor does not have, and what to write
# instead ({k}: the tensor's label), for Tensor.__getattr__'s message.
_NO_DEVICE = ("not needed: a value is a numpy array in memory, with no device; drop the call "
              "(a float type is chosen where the value is made: ug.tensor(data, "
              "dtype=np.float32))")
_ONE_TYPE = ("a tensor keeps its float type: build the value in the type wanted, "
             "ug.tensor({k}.data, dtype=np.float32) (a new leaf, off the graph), or a cell "
             "in float32 (ug.nn cells take dtype=np.float32)")
_TORCH_ONLY = {
    "to": _NO_DEVICE, "cpu": _NO_DEVICE, "cuda": _NO_DEVICE, "pin_memory": _NO_DEVICE,
    "device": "there are no devices: every value is a numpy array in memory",
    "is_cuda": "there are no devices: every value is a numpy array in memory",
    "float": _ONE_TYPE, "double": _ONE_TYPE, "half": _ONE_TYPE, "type": _ONE_TYPE,
    "clone": ("ops never change their operands, so {k} itself serves; {k}.detach() is a "
              "copy off the graph"),
    "contiguous": "not needed: every op takes any layout; use {k} itself",
    "is_contiguous": "not needed: every op takes any layout",
    "data_ptr": "values are numpy arrays: {k}.data is the array",
    "stride": "values are numpy arrays: {k}.data.strides gives numpy's strides",
    "grad_fn": ("{k}.node is the node that computed it ({k}.node.op, the op's name); "
                "{k}.is_leaf is True for a leaf"),
    "detach_": "write {k} = {k}.detach()",
    "ndimension": "write {k}.dim() or {k}.ndim", "nelement": "write {k}.numel() or {k}.size",
    "add": "write {k} + u", "sub": "write {k} - u", "mul": "write {k} * u",
    "div": "write {k} / u", "neg": "write -{k}", "pow": "write {k} ** p",
    "square": "write {k} * {k}", "matmul": "write {k} @ u (or ug.matmul)",
    "mm": "write {k} @ u (or ug.matmul)", "bmm": "write {k} @ u (or ug.matmul)",
    "softmax": "write ug.softmax({k}, axis=d)", "log_softmax": "write ug.log_softmax({k}, "
    "axis=d)",
    "min": "write -(-{k}).max(axis=d), or ug.minimum({k}, u) for two tensors",
    "argmax": "indices have no gradient: np.argmax({k}.data, axis=d)",
    "argmin": "indices have no gradient: np.argmin({k}.data, axis=d)",
    "norm": "write ug.sqrt(ug.sum({k} * {k}))",
    "expand": "ops broadcast as numpy does: {k} + ug.tensor(np.zeros(shape)) gives the shape",
    "repeat": "write ug.concat([{k}] * n, axis=d)",
    "masked_fill": "write ug.where(mask, value, {k})",
    "fill_": "under ug.no_grad(), {k}.zero_() or {k}[...] = v (a leaf)",
    "copy_": "assign the value: {k}.data = u.data, or {k}[...] = u.data (a leaf)",
    "chunk": ("slice it, each slice an op with a gradient: n pieces of the last axis, "
              "m = {k}.shape[-1] // n long, are [{k}[..., j * m:(j + 1) * m] for j in "
              "range(n)] ({k}[j * m:(j + 1) * m] along axis 0)"),
    "split": ("slice it, each slice an op with a gradient: pieces of size m along the last "
              "axis are [{k}[..., j:j + m] for j in range(0, {k}.shape[-1], m)] "
              "({k}[j:j + m] for axis 0)"),
    "flip": ("index with a step of -1, an op with a gradient: {k}[::-1] reverses axis 0, "
             "{k}[:, ::-1] axis 1, {k}[..., ::-1] the last"),
}
_TORCH_PROPERTIES = frozenset({"device", "is_cuda", "grad_fn"})


class _TorchOnly:
    """A name of PyTorch's Tensor that a ug Tensor does not have: reading it raises an
    ``AttributeError`` (so ``hasattr`` is False, as for any other missing name) whose message
    names the call and what to write instead. (A descriptor on the class, not a
    ``__getattr__``: the lookups of other missing names stay numpy's and Python's own.)"""

    def __init__(self, name: str, fix: str):
        self.name, self.fix = name, fix

    def __get__(self, t, owner=None):
        if t is None:
            return self
        k = t.node.label()
        call = self.name if self.name in _TORCH_PROPERTIES else f"{self.name}(...)"
        reader = sys._getframe(1)
        module = reader.f_globals.get("__name__", "")
        if module.split(".")[0] == "torch":  # PyTorch's own code, given a ug Tensor
            raise AttributeError(
                f"{k}.{call}: PyTorch's {module}.{reader.f_code.co_name} reads it, so it was "
                f"given {k}, an unrollgraph Tensor; PyTorch's functions and modules compute on "
                f"torch tensors only. {_interop.torch_hand_over(k)}", name=self.name, obj=t)
        raise AttributeError(f"{k}.{call}: PyTorch's Tensor.{self.name} is not an attribute "
                             f"of a ug Tensor; {self.fix.format(k=k)}", name=self.name, obj=t)


for _name, _fix in _TORCH_ONLY.items():
    assert _name not in Tensor.__dict__, _name  # (a name the Tensor has is never shadowed)
    setattr(Tensor, _name, _TorchOnly(_name, _fix))
del _name, _fix

# PyTorch's names of the modules ``torch`` and ``torch.nn`` that ``ug`` and ``ug.nn`` do not
# have: name -> (PyTorch's full name, what to write instead), for those modules' __getattr__
# (:func:`_ug_getattr`, :func:`_nn_getattr`). The names are not attributes: ``hasattr`` is
# False and ``dir()`` does not list them.
_NEW_ARRAY = "make the array with numpy and wrap it: ug.tensor(np.{np}(...))"
_TORCH_ONLY_UG = {
    "cat": ("torch.cat", "write ug.concat(tensors, axis=d) (torch.cat's dim= is axis= here)"),
    "clip_grad_norm_": ("torch.nn.utils.clip_grad_norm_",
                        "write ug.clip_grad_norm(params, max_norm), which takes the same "
                        "arguments and returns the total norm before clipping (a float)"),
    "clip_grad_value_": ("torch.nn.utils.clip_grad_value_",
                         "write ug.clip_grad_value(params, clip_value)"),
    "clamp": ("torch.clamp", "write ug.clip(t, lo, hi) (or t.clip(lo, hi))"),
    "chunk": ("torch.chunk", "slice the tensor: " + _TORCH_ONLY["chunk"].format(k="t")),
    "split": ("torch.split", "slice the tensor: " + _TORCH_ONLY["split"].format(k="t")),
    "flip": ("torch.flip", _TORCH_ONLY["flip"].format(k="t")),
    "mm": ("torch.mm", "write a @ b (or ug.matmul(a, b))"),
    "bmm": ("torch.bmm", "write a @ b (or ug.matmul(a, b))"),
    "zeros": ("torch.zeros", _NEW_ARRAY.format(np="zeros")),
    "ones": ("torch.ones", _NEW_ARRAY.format(np="ones")),
    "randn": ("torch.randn", "make the array with numpy and wrap it: "
              "ug.tensor(np.random.default_rng(seed).standard_normal(shape))"),
    "from_numpy": ("torch.from_numpy", "write ug.tensor(array) (it keeps the array's float "
                   "type, in a copy of its own)"),
    "as_tensor": ("torch.as_tensor", "write ug.tensor(data)"),
    "manual_seed": ("torch.manual_seed", "randomness is seeded where it is used: "
                    "ug.nn.LSTMCell(2, 4, seed=0), ug.train.Linear(4, 1, seed=0)"),
    "float32": ("torch.float32", "float types are numpy's: np.float32"),
    "float64": ("torch.float64", "float types are numpy's: np.float64"),
}
_NN_LOSS = "the loss is a function, with no module to build: loss = ug.{f}(prediction, target)"
_TORCH_ONLY_NN = {
    "Linear": ("torch.nn.Linear", "write ug.train.Linear(in_features, out_features) (weight, "
               "bias and parameters() as PyTorch's; ug.train.SequenceModel(net, readout) "
               "puts it after a net)"),
    "MSELoss": ("torch.nn.MSELoss", _NN_LOSS.format(f="mse_loss") +
                ", or loss_fn=ug.mse_loss"),
    "CrossEntropyLoss": ("torch.nn.CrossEntropyLoss", _NN_LOSS.format(f="cross_entropy")
                         + " (logits, integer labels)"),
    "BCEWithLogitsLoss": ("torch.nn.BCEWithLogitsLoss",
                          _NN_LOSS.format(f="binary_cross_entropy_with_logits")),
    "Module": ("torch.nn.Module", "a recurrent cell is a ug.Cell (declare its inputs, states "
               "and parameters; docs/cells.md), run with ug.unroll(cell, steps=T); any other "
               "model is a function of tensors"),
    "Parameter": ("torch.nn.Parameter", "a cell's parameter is cell.param(name, value); a "
                  "free one is ug.tensor(value, requires_grad=True)"),
    "Dropout": ("torch.nn.Dropout", "there is no dropout: every call of a net computes the "
                "same values"),
    "Tanh": ("torch.nn.Tanh", "write ug.tanh(x)"),
    "ReLU": ("torch.nn.ReLU", "write ug.relu(x)"),
    "Sigmoid": ("torch.nn.Sigmoid", "write ug.sigmoid(x)"),
    "functional": ("torch.nn.functional", "the functions are ug's own: ug.tanh, ug.relu, "
                   "ug.softmax, ug.mse_loss, ug.cross_entropy"),
    "utils": ("torch.nn.utils", "gradient clipping is ug.clip_grad_norm(params, max_norm) and "
              "ug.clip_grad_value(params, clip_value)"),
}


def _torch_only_attribute(module: str, short: str, table: dict, name: str):
    """The ``AttributeError`` for a missing attribute ``name`` of module ``module`` (written
    ``short.name`` in code): Python's own message, or for a PyTorch name in ``table`` one
    that names PyTorch's and says what to write instead."""
    entry = table.get(name)
    if entry is None:
        return AttributeError(f"module {module!r} has no attribute {name!r}", name=name)
    torch_name, fix = entry
    return AttributeError(f"{short}.{name}: PyTorch's {torch_name} is not part of "
                          f"unrollgraph; {fix}", name=name)


def _ug_getattr(name: str):
    """``unrollgraph``'s module ``__getattr__``: every name it is asked for is missing (a
    name the module has is found without it); PyTorch's get a message saying what to write.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> hasattr(ug, "cat"), hasattr(ug, "concat")
    (False, True)
    """
    raise _torch_only_attribute("unrollgraph", "ug", _TORCH_ONLY_UG, name)


def _nn_getattr(name: str):
    """``unrollgraph.nn``'s module ``__getattr__``, as :func:`_ug_getattr`.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> hasattr(ug.nn, "Linear")
    False
    """
    raise _torch_only_attribute("unrollgraph.nn", "ug.nn", _TORCH_ONLY_NN, name)


def _zeros(arr: np.ndarray, _value) -> np.ndarray:
    """``Tensor.zero_``'s change: zeros of ``arr``'s shape (not ``arr * 0``, which keeps a
    NaN or an infinity as NaN)."""
    return np.zeros_like(arr)


def _alpha(alpha, method: str):
    """``alpha`` of ``add_``/``sub_`` checked: a real number (PyTorch's ``Number``)."""
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real):
        raise DTypeError(
            f"{method}(other, alpha=...): alpha must be a real number, got "
            f"{type(alpha).__name__} {_short(alpha)}; pass a tensor's factor as "
            f"{method}(alpha * other)"
        )
    return alpha


def _int_sizes(shape, what: str) -> tuple:
    """The sizes of a target shape as ints; a float, bool or string size is refused, never
    truncated by ``int()``."""
    items = (shape,) if isinstance(shape, (int, np.integer)) else shape
    try:
        items = tuple(items)
    except TypeError:
        items = (shape,)
    for s in items:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)):
            raise ShapeError(
                f"{what}: the size {s!r} in the shape {shape!r} is not an int; pass ints (one "
                "of them may be -1)"
            )
    return tuple(int(s) for s in items)


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


def _torch_axis(x, what: str, axis, keepdims, dim, keepdim):
    """``axis`` and ``keepdims`` of a reduction given PyTorch's ``dim`` and ``keepdim`` too
    (each spelling once)."""
    x = x.node.label() if isinstance(x, Tensor) else type(x).__name__
    if dim is not None:
        if axis is not None:
            raise TypeError(f"{what}() of {x}: pass axis= or dim= (PyTorch's "
                            f"name for it), not both (got axis={axis!r}, dim={dim!r})")
        axis = dim
    if keepdim is not None:
        if keepdims is not False:
            raise TypeError(f"{what}() of {x}: pass keepdims= or keepdim= "
                            "(PyTorch's name for it), not both")
        keepdims = bool(keepdim)
    return axis, keepdims


_COMPARISONS = frozenset({"gt", "ge", "lt", "le"})
_PLACEHOLDERS = frozenset({"input", "state"})


_SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _compare(opname: str, a: "Tensor", b) -> "Tensor":
    try:
        out = _apply(_REGISTRY[opname], (a, b), _NO_ATTRS, None)
    except DTypeError as err:
        raise DTypeError(f"comparison {a.node.label()} {_SIGNS[opname]} ...: {err}") from None
    if out.node.op != opname:  # under no_grad: a leaf, still known to be a condition
        n = out.node
        out.node = Node("leaf", name=n.name, shape=n.shape, dtype=n.dtype, role="condition")
    return out


def _numpy_shape_read(t: Tensor, name: str, shown: str):
    """``np.shape(t)``, ``np.size(t)`` or ``np.ndim(t)`` (``name``; ``shown``, numpy's public
    name of the function): the tensor's own ``shape``, ``size`` or ``ndim``, whose refusals
    of a stand-in's batch axis quote the read as written (``np.shape(h)[0]``)."""
    written = f"{shown}({t.node.label()})"
    if name == "size":
        return t._size(written)
    if name == "shape":
        shape = t.shape
        if type(shape) is _StandInShape:
            node, source, _ = shape._of
            return _StandInShape(shape, node, source, written)
        return shape
    return t.ndim


def _no_grad_source(t: "Tensor") -> bool:
    """Whether ``t`` was computed from a value made under no_grad (a walk, for the message of
    a backward() that cannot run)."""
    seen = set()
    stack = [t]
    while stack:
        u = stack.pop()
        if u.node.role == "no_grad":
            return True
        for p in u._parents:
            if id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    return False


def _placeholder_source(node: Node) -> str | None:
    """The label of a cell placeholder (input or state) that ``node`` is computed from, or
    None. A walk over the node's ancestors (explicit stack), for the rare calls that need it
    (truth values, ``len``, numpy functions on tensors). The nodes of an unrolled net carry a
    step, a cell's placeholders none."""
    seen = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n.op in _PLACEHOLDERS and n.step is None:
            return f"{n.op} {n.label()}"
        for p in n.inputs:
            if id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    return None


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
        A leaf holding a **copy** of ``data`` (read-only: change it with ``t.data = ...``),
        so a later edit of ``data`` does not reach the tensor, nor the reverse.

    Raises
    ------
    DTypeError
        For ``None``, strings, complex numbers or objects (see :func:`as_real_array`).

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> ug.tensor([1, 2], name="x")
    tensor([1., 2.], name='x')
    >>> a = np.zeros(2)
    >>> t = ug.tensor(a)
    >>> a[0] = 5.0       # the tensor keeps its own copy
    >>> t.data
    array([0., 0.])
    """
    check_name(name, "tensor name")
    if not isinstance(requires_grad, (bool, np.bool_)):
        raise DTypeError(
            f"tensor(requires_grad=...): pass True or False, got {requires_grad!r}"
        )
    arr = _locked(as_real_array(data, "tensor(data)", dtype))
    node = Node("leaf", name=name, shape=arr.shape, dtype=arr.dtype.name)
    return Tensor(arr, node, (), bool(requires_grad))


def _const(value, like: np.ndarray | None, opname: str = "an op") -> Tensor:
    """Wrap a non-tensor operand as a constant, keeping the other operand's float dtype.

    The constant holds its own copy of an array operand: the graph must not change when the
    caller edits the array before ``backward()``."""
    value = _from_torch(value, f"{opname}: the operand")  # (a view of a PyTorch tensor's)
    try:
        arr = np.asarray(value)
    except Exception:
        arr = None
    if arr is None or arr.dtype.kind not in "biuf":
        as_real_array(value, f"{opname}: the operand")  # raises DTypeError
    kind = arr.dtype.kind
    if arr is value:
        arr = arr.copy()
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
    n = len(args)
    if n == 2:
        t0, t1 = args
        if (type(t0) is not Tensor and not isinstance(t0, Tensor)) or (
                type(t1) is not Tensor and not isinstance(t1, Tensor)):
            ts = _tensors(args, op)
            t0, t1 = ts
        values = (t0._data, t1._data)
    elif n == 1:
        t0 = args[0]
        if type(t0) is not Tensor and not isinstance(t0, Tensor):
            ts = _tensors(args, op)
            t0 = ts[0]
        values = (t0._data,)
    else:
        ts = _tensors(args, op)
        values = tuple([t._data for t in ts])
    if op.always_check and op.check is not None:
        op.check([t.node for t in ts], values, **attrs)
    try:
        if not attrs:
            out = op.forward(*values)
        elif attrs is _SUM_ALL and op.forward is _SUM_FORWARD and \
                type(values[0]) is np.ndarray and values[0].dtype.type in _FLOATS:
            # (the loss's sum: what ndarray.sum calls, without its wrapper, into a 0-d array)
            a = values[0]
            out = _add_reduce(a, None, None, np.empty((), a.dtype))
        else:
            out = op.forward(*values, **attrs)
    except UnrollGraphError:
        raise
    except Exception as exc:
        raise _forward_error(op, ts, values, attrs, exc, name) from exc
    if type(out) is not np.ndarray and not isinstance(out, (np.ndarray, tuple)):
        out = np.asarray(out)
    flags = _MODE.get()
    if flags.anomaly:
        _check_finite(out, f"forward of {op.name}", ts, name)
    if type(out) is tuple:
        shape = dtype = None
    else:
        shape = out.shape
        dt = out.dtype
        dtype = "float64" if dt is _F64 else _DTYPE_NAMES.get(dt) or _dtype_name(out)
    if not flags.grad_enabled:
        return Tensor(out, Node("leaf", (), None, name, shape, dtype, None, None, "no_grad"))
    nondiff = op.nondiff
    if n == 2:
        inputs = (t0.node, t1.node)
        req = (t0._requires_grad and 0 not in nondiff) or (t1._requires_grad and 1 not in nondiff)
    elif n == 1:
        inputs = (t0.node,)
        req = t0._requires_grad and 0 not in nondiff
    else:
        inputs = tuple([t.node for t in ts])
        req = any(t._requires_grad for k, t in enumerate(ts) if k not in nondiff)
    return Tensor(out, Node(op.name, inputs, attrs, name, shape, dtype), ts, req)


def _tensors(args: tuple, op) -> tuple:
    """``args`` with every operand that is not a tensor made a constant (:func:`_const`)."""
    like = next((t._data for t in args if isinstance(t, Tensor)), None)
    return tuple(t if isinstance(t, Tensor) else _const(t, like, op.name) for t in args)


_SUM_FORWARD = _REGISTRY["sum"].forward
_add_reduce = np.add.reduce
_DTYPE_NAMES: dict = {}
_F64 = np.dtype(np.float64)
# the attributes of a sum over every axis, shared by those nodes (a node's attrs are never
# mutated)
_SUM_ALL = {"axis": None, "keepdims": False}


def _dtype_name(arr) -> str:
    """``arr.dtype.name``, cached: numpy computes that string in Python on every access."""
    dt = arr.dtype
    name = _DTYPE_NAMES.get(dt)
    if name is None:
        name = _DTYPE_NAMES[dt] = dt.name
    return name


def _forward_error(op, ts, values, attrs, exc, name=None) -> Exception:
    """The error for ``op``'s forward raising ``exc``: the op's own shape check's
    :class:`ShapeError` if it finds the operands do not fit, else an :class:`OpError` naming
    the op, the node ``name`` and the inputs (raised ``from exc`` by the caller)."""
    if op.check is not None:
        try:
            op.check([t.node for t in ts], values, **attrs)
        except ShapeError as err:
            return err
    shapes = ", ".join(f"{t.node.label()} {np.shape(v)}" for t, v in zip(ts, values))
    extra = f" with {attrs}" if attrs else ""
    who = f" (node {name!r})" if name else ""
    return op_error(f"{op.name}{who}: failed on {shapes}{extra}", exc, op.name)


def op_error(message: str, exc: BaseException, op: str) -> OpError:
    """An :class:`OpError` for an op whose forward raised ``exc``: ``message`` (which names
    the op, the node and its inputs), then the exception's class and text. The caller raises
    it ``from exc``, so the traceback keeps the line that raised."""
    what = type(exc).__name__
    return OpError(f"{message}: {what}: {exc}" if str(exc) else f"{message}: {what}", op)


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
        if callable(what):  # (made only for the message: a net names its node lazily)
            what = what()
        ins = ", ".join(f"{t.node.label()} {t.shape}" for t in ts)
        ins = f"; its inputs were {ins}" if ins else ""
        raise AnomalyError(
            f"detect_anomaly: {what}{who} produced {bad} (first at index {first}){ins}"
            f"{_net_origin(ts)}. "
            "Check the inputs' ranges (log of <= 0, division by 0, overflowing exp)"
        )


def _net_origin(ts) -> str:
    """Where a NaN or Inf an input brings from a net's call first appears: the output
    (``y``) and the first step holding one, and how to find the op that made it."""
    for t in ts:
        node = t.node
        if node.op != "item" or node.name or not node.inputs or \
                "_run" not in node.inputs[0].attrs:
            continue
        a = t._data
        if not np.issubdtype(np.asarray(a).dtype, np.floating) or np.all(np.isfinite(a)):
            continue
        net = node.inputs[0].attrs["_run"].net
        k = node.attrs["index"]
        if k < len(net.output_nodes):  # stacked over the steps: axis 0 is the step
            name = list(net.output_nodes)[k]
            step = int(np.argwhere(~np.isfinite(a))[0][0])
            where = f"output {name!r} of the net's call already held one at step {step}"
        else:
            where = (f"the final state {list(net.state_nodes)[k - len(net.output_nodes)]!r} "
                     "of the net's call already held one")
        return (f"; {where}: run the call under detect_anomaly too to find the op of the "
                "cell that made it")
    return ""


_LEAF_GRAD_LOCK = threading.Lock()


def _route_item(grads: dict, node: Node, p: Tensor, g) -> None:
    """Add ``g``, the gradient of output ``node.attrs["index"]`` of the multi-output tensor
    ``p`` (an unrolled net's call), into that slot of ``p``'s list of output gradients."""
    lst = grads.get(id(p))
    if lst is None:
        lst = grads[id(p)] = [None] * len(p._data)
    k = node.attrs["index"]
    lst[k] = g if lst[k] is None else lst[k] + g


def _count_uses(root: Tensor) -> dict[int, int]:
    """How many edges of the graph below ``root`` read each tensor that requires grad (by
    ``id``): the first pass of the reverse walk, shared with ``ug.explain`` (which reads a
    graph already walked as it reads any other)."""
    return _count_uses_and_oldest(root)[0]


def _count_uses_and_oldest(root: Tensor) -> tuple:
    """:func:`_count_uses`, the oldest birth (``_born``, a clock value) among ``root`` and
    the tensors with inputs that it counts (the nodes whose version checks the walk makes),
    and the first of those tensors found released by an earlier walk (``_walked``), or None.

    A walk releases everything it counts, so the released tensors below ``root`` are closed
    under taking inputs: the first one found is read by one that is not (or is ``root``)."""
    uses: dict[int, int] = {}
    oldest = root._born
    walked = root if root._walked else None
    stack = [root]
    pop = stack.pop
    push = stack.append
    get = uses.get
    while stack:
        for p in pop()._parents:
            if p._requires_grad:
                i = id(p)
                n = get(i)
                if n is None:
                    uses[i] = 1
                    if p._parents:  # (a leaf has nothing to count below it)
                        push(p)
                        if p._born < oldest:
                            oldest = p._born
                        if p._walked and walked is None:
                            walked = p
                else:
                    uses[i] = n + 1
    return uses, oldest, walked


# Whether backward() may skip the version checks when the clock says that no value changed
# since the graph was built (tests turn it off to compare the two walks)
_SKIP_UNCHANGED = True


def _backward(root: Tensor, seed: np.ndarray | None, retain: bool = False) -> None:
    """Reverse accumulation from ``root``, seeded with ``seed`` (None: a one): one walk,
    explicit stacks, no recursion.

    Pass 1 counts, for every tensor that requires grad, how many edges of the graph read it,
    and refuses (before anything is stored) a graph that reaches a tensor an earlier walk
    released. Pass 2 visits a tensor once all of its readers have been visited (so its
    gradient is the complete sum over them), stores it in ``.grad``, sends one VJP along each
    input edge, and releases the tensor (``_walked``) unless ``retain``.

    Pass 2 checks each node it differentiates against its inputs' version counters (a value
    changed after the node was computed from it raises), unless the clock has not moved since
    the oldest of those nodes was made: then no value can have changed after any of them
    (every change stamps a new clock value), and the checks are skipped, as under
    ``detect_anomaly()`` they never are.
    """
    if _SHORT_WALK and _call_loss_walk(root, seed, retain):
        return
    if seed is None:  # the one that backward() starts from without gradient=
        data = root._data
        seed = np.empty(data.shape, data.dtype)  # (np.ones is a Python function: slower)
        seed.fill(1)
    uses, oldest, walked = _count_uses_and_oldest(root)
    if walked is not None:
        raise _walked_error(root, walked)
    # (with retain, nothing below root was released: pass 1 found none, so storing False
    # changes nothing and costs what a test would)
    release = not retain
    anomaly = _MODE.get().anomaly
    check = anomaly or _CLOCK[0] != oldest or not _SKIP_UNCHANGED
    grads: dict[int, Any] = {id(root): seed}
    owned: set[int] = set()
    registry = _REGISTRY
    ndarray = np.ndarray
    ready = [root]
    pop = ready.pop
    push = ready.append
    take = grads.pop
    while ready:
        t = pop()
        g = take(id(t), None)
        parents = t._parents
        if not parents:
            # a leaf gets an array of its own (optimizers edit it in place)
            if g is not None and type(t._data) is ndarray:
                with _LEAF_GRAD_LOCK:  # threads may run backward() into one shared leaf
                    _store_grad(t, g)
            continue
        t._walked = release
        if g is None:  # no gradient reached this node: its inputs still count it as visited
            for p in parents:
                if p._requires_grad:
                    i = id(p)
                    n = uses[i] - 1
                    uses[i] = n
                    if n == 0:
                        push(p)
            continue
        data = t._data
        if type(data) is ndarray:
            # store t.grad: a read-only view, no copy of what may be a large (T, B, H)
            # gradient, and an in-place edit raises instead of leaking into another tensor
            if t._grad is None and type(g) is ndarray and g.shape == data.shape and (
                    g.dtype is data.dtype or g.dtype == data.dtype):
                v = g.view()
                v.setflags(False)  # (write=False; positional: cheaper)
                t._grad = v
            else:
                _store_grad(t, g)
        node = t.node
        op_name = node._op
        if op_name == "item":  # route into slot `index` of a multi-output node's gradients
            p = parents[0]
            i = id(p)
            lst = grads.get(i)  # (what _route_item does, inline: one per output)
            if lst is None:
                lst = grads[i] = [None] * len(p._data)
            k = node._attrs["index"]
            lst[k] = g if lst[k] is None else lst[k] + g
            if p._requires_grad:
                n = uses[i] - 1
                uses[i] = n
                if n == 0:
                    push(p)
            continue
        if check:
            born = t._born
            if t._version[0] > born:
                raise _changed_error(t, t, node)
            for p in parents:
                if p._version[0] > born:
                    raise _changed_error(p, t, node)
        attrs = node._attrs
        if op_name == "unrolled":
            # an unrolled net's call: one backward pass through time gives every leaf's
            # gradient (the run's VJP, asked once instead of once per leaf)
            per = attrs["_run"].leaf_grads(g)
            op = None
        else:
            per = None
            op = registry[op_name]
            vjps = op.vjps
            variadic = op.variadic
            if len(parents) == 2:
                values = (parents[0]._data, parents[1]._data)
            elif len(parents) == 1:
                values = (parents[0]._data,)
            else:
                values = tuple([p._data for p in parents])
        k = -1
        done = None  # leaves whose gradient is complete: stored below, under one lock
        for p in parents:
            k += 1
            if not p._requires_grad:
                continue
            if per is not None:
                gk = per[k]
            elif variadic:
                gk = vjps[0](g, data, *values, index=k, **attrs)
            elif op_name == "mul" and (gk := _times_one(g, parents[1 - k], p)) is not None:
                pass
            else:
                f = vjps[k]
                if f is None:
                    gk = None
                elif attrs:
                    gk = f(g, data, *values, **attrs)
                else:
                    gk = f(g, data, *values)
            i = id(p)
            if gk is not None:
                if (gk.shape if type(gk) is ndarray else np.shape(gk)) != p._data.shape:
                    raise _vjp_shape_error(op or registry[op_name], node, k, gk, p)
                if anomaly:
                    _check_finite(gk, f"the gradient sent by {t.node.label()} = "
                                      f"{op_name}(...) into {p.node.label()}", ())
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
                if p._parents:
                    push(p)
                elif done is None:
                    done = [p]
                else:
                    done.append(p)
        if done is not None:
            _store_leaf_grads(done, grads)


# Whether backward() takes the short walk for the loss of a net's call (tests turn it off to
# compare it with the generic walk)
_SHORT_WALK = True


def _call_loss_walk(root: Tensor, seed, retain: bool = False) -> bool:
    """The reverse walk of :func:`_backward` for the loss of one call of an unrolled net,
    ``(out * G).sum()``, ``(G * out).sum()`` or ``out.sum()``, where ``out`` is an output
    (or final state) of the call and ``G`` does not require grad; False, having done
    nothing, for any other graph. ``seed`` is the loss's gradient, or None for the one that
    ``backward()`` without ``gradient=`` starts from.

    Every tensor of that graph is read once, so the generic walk's first pass (counting
    uses) and its bookkeeping of pending gradients have nothing to find: this walk sends
    the same gradients and stores the same ``.grad`` values (the intermediate tensors'
    read-only views, the leaves' own arrays). From the one seed, what the sum sends back is
    ones (a shared read-only array of them, see :func:`_ones`) and what the product sends
    ``out`` is ``G``'s value itself, as a read-only view (``1 * g`` is ``g``, number for
    number): the run is seeded without an intermediate array. It leaves to the generic walk
    the graphs where a version check is due (a value changed since the graph was built, or
    ``detect_anomaly()``), the calls with a leaf computed by ops (an input or initial
    state that has a graph of its own above it) and the graphs an earlier walk released
    (whose error the generic walk raises). It releases the four tensors it walks (or three,
    without the product) unless ``retain``, as the generic walk would."""
    node = root.node
    if node._op != "sum":
        return False
    attrs = node._attrs
    if attrs is not _SUM_ALL and (attrs.get("axis") is not None or attrs.get("keepdims")):
        return False
    item = root._parents[0]
    prod = None
    if item.node._op == "mul":
        prod = item
        a, b = prod._parents
        if b._requires_grad:
            if a._requires_grad:
                return False
            item, other, k = b, a, 1
        else:
            item, other, k = a, b, 0
    inode = item.node
    if inode._op != "item":
        return False
    call = item._parents[0]
    cnode = call.node
    if cnode._op != "unrolled":
        return False
    leaves = call._parents
    for p in leaves:
        if p._parents and p._requires_grad:
            return False
    # (the generic walk's condition for skipping the version checks: the clock still reads
    # the birth of the oldest tensor with inputs, so every one of them was born at it)
    clock = _CLOCK[0]
    if root._born != clock or item._born != clock or call._born != clock or (
            prod is not None and prod._born != clock) or _MODE.get().anomaly or \
            not _SKIP_UNCHANGED:
        return False
    if root._walked or item._walked or call._walked or (prod is not None and prod._walked):
        return False
    release = not retain
    root._walked = item._walked = call._walked = release
    if prod is not None:
        prod._walked = release
    ndarray = np.ndarray
    below = prod if prod is not None else item
    if seed is None:
        # from backward()'s one: the sum sends ones back, and the product sends out G's
        # value itself where _times_one finds it may (else its VJP computes it)
        dtype = root._data.dtype
        seed = _ones((), dtype)
        g = _ones(below._data.shape, dtype)
        if root._grad is None:  # (_keep_grad's common case: a view, read-only as its base)
            root._grad = seed.view()
        else:
            _store_grad(root, seed)
        gk = None
        if prod is not None:
            if prod._grad is None and prod._data.dtype is dtype:
                prod._grad = g.view()
            else:
                _keep_grad(prod, g)
            gk = _times_one(g, other, item, True)
            if gk is not None:
                if item._grad is None and gk.dtype is item._data.dtype:
                    item._grad = gk  # (a read-only view of its own, as _keep_grad stores)
                else:
                    _keep_grad(item, gk)
        if gk is None:
            gk = _grad_of_item(prod, g, k, item, other) if prod is not None else g
            _keep_grad(item, gk)
    else:
        g = _REGISTRY["sum"].vjps[0](seed, root._data, below._data, **attrs)
        _keep_grad(root, seed)
        gk = g
        if prod is not None:
            _keep_grad(prod, g)
            gk = _grad_of_item(prod, g, k, item, other)
        _keep_grad(item, gk)
    seeds = [None] * len(call._data)  # (what the generic walk's item routing makes)
    seeds[inode._attrs["index"]] = gk
    run = cnode._attrs["_run"]
    per = run.leaf_grads(seeds)
    for p, gk in zip(leaves, per):  # (every shape first: nothing is stored if one is wrong)
        if gk is not None and p._requires_grad and (
                gk.shape if type(gk) is ndarray else np.shape(gk)) != p._data.shape:
            j = next(j for j, (q, r) in enumerate(zip(per, leaves)) if q is gk and r is p)
            raise _vjp_shape_error(_REGISTRY["unrolled"], cnode, j, gk, p)
    if not run.distinct_leaves:  # (one tensor given twice: its gradients add up first)
        grads: dict = {}
        done = []
        for p, gk in zip(leaves, per):
            if gk is None or not p._requires_grad:
                continue
            i = id(p)
            prev = grads.get(i)
            if prev is None:
                grads[i] = gk
                done.append(p)
            else:
                grads[i] = prev + gk
        _store_leaf_grads(done, grads)
        return True
    with _LEAF_GRAD_LOCK:  # threads may run backward() into one shared leaf
        for p, gk in zip(leaves, per):
            if gk is None or not p._requires_grad:
                continue
            data = p._data
            if type(data) is not ndarray:
                continue
            if p._grad is None and type(gk) is ndarray and gk.dtype is data.dtype:
                p._grad = gk.copy()  # own copy: gk may be shared with the run or read-only
            else:
                _store_grad(p, gk)
    return True


def _walked_error(root: Tensor, t: Tensor) -> GradientError:
    """The error for a ``backward()`` from ``root`` that reaches ``t``, a tensor released by
    an earlier walk (``backward()`` without ``retain_graph=True``)."""
    label = t.node.label()
    if t.node.op == "unrolled":
        label = f"the call of the unrolled net {t.node.name!r}" if t.node.name else \
            "the call of an unrolled net"
    if t is root:
        what = (f"backward() on {label} a second time: an earlier backward() already walked "
                "its graph without retain_graph=True")
        fix = ("Compute the forward pass and the loss again for a new gradient (in training: "
               "zero_grad(), forward, loss, backward(), optimizer.step()), or pass "
               "retain_graph=True to the earlier backward() to walk the same graph again")
    else:
        what = (f"backward() on {root.node.label()} reaches {label}, which an earlier "
                "backward() (from another tensor computed from it) already walked without "
                "retain_graph=True")
        fix = ("Add the losses and call backward() once ((loss1 + loss2).backward()), "
               "compute the forward pass again, or pass retain_graph=True to the earlier "
               "backward() to walk the shared part again")
    hint = ""
    if t.node.op == "unrolled" and t is not root:
        hint = (". If a state was carried over from an earlier call of the net, cut it from "
                "that call's graph: pass state=h.detach()")
    return GradientError(
        f"{what}, so its gradient is already in the .grad of every tensor it was computed "
        f"from and a second walk would add it again. Nothing was changed. {fix}{hint}"
    )


def _grad_of_item(prod: Tensor, g, k: int, item: Tensor, other: Tensor):
    """The gradient the product ``prod`` (``item`` times ``other``, ``item`` its input ``k``)
    sends ``item`` for the gradient ``g``: ``other``'s value where :func:`_times_one` finds it
    may be, else the VJP's."""
    gk = _times_one(g, other, item)
    if gk is None:
        a, b = prod._parents
        gk = _REGISTRY["mul"].vjps[k](g, prod._data, a._data, b._data)
    if (gk.shape if type(gk) is np.ndarray else np.shape(gk)) != item._data.shape:
        raise _vjp_shape_error(_REGISTRY["mul"], prod.node, k, gk, item)
    return gk


# read-only arrays of ones, by shape and dtype: the gradient a sum over every axis sends back
# from the seed one (shared: nothing can write into them, and a .grad holds a view)
_ONES: dict = {}


def _ones(shape: tuple, dtype) -> np.ndarray:
    """A read-only array of ones of ``shape`` and ``dtype``: kept and shared up to
    ``_SMALL_EXPAND`` elements (a few kept shapes at a time), else ones broadcast from one
    number (no memory of that size, as the sum's VJP gives at that size). Whoever stores it
    as a ``.grad`` stores a view (:func:`_keep_grad`)."""
    key = (shape, dtype)
    out = _ONES.get(key)
    if out is None:
        if math.prod(shape) > _SMALL_EXPAND:
            return np.broadcast_to(_ones((), dtype), shape)
        if len(_ONES) >= 64:
            _ONES.clear()
        # on immutable memory: neither it nor a view of it can be made writeable again
        out = np.frombuffer(np.ones(shape, dtype).tobytes(), dtype).reshape(shape)
        _ONES[key] = out
    return out


def _keep_grad(t: Tensor, g) -> None:
    """Store ``g`` as the gradient of the intermediate tensor ``t``, as the generic walk
    does: a read-only view (no copy of what may be a large gradient; an edit in place raises
    instead of leaking into another tensor) when ``t`` has none yet, else the sum."""
    data = t._data
    if type(data) is not np.ndarray:
        return
    if t._grad is None and type(g) is np.ndarray and g.shape == data.shape and (
            g.dtype is data.dtype or g.dtype == data.dtype):
        v = g.view()
        v.setflags(False)
        t._grad = v
    else:
        _store_grad(t, g)


def _times_one(g, other: Tensor, p: Tensor, ones: bool = False):
    """The gradient a product ``p * other`` sends ``p`` when ``g`` is a one broadcast to
    ``other``'s shape (what a sum sends back: the loss ``(y * w).sum()``): ``other``'s value
    itself, number for number, as a read-only view instead of a new array of the same
    numbers (at a (T, B, H) loss: a multiplication and an array of that size a step);
    None otherwise, for the VJP to compute.

    Only where nothing edits ``other``'s value in place later: an intermediate value, or a
    leaf that does not require grad (an optimizer edits only what has a gradient; ``.data =
    ...`` puts in a new array). Read-only, so that nothing downstream adds into it (the walks
    add in place only into arrays they allocated)."""
    if other._requires_grad and not other._parents:
        return None
    v = other._data
    if (type(g) is np.ndarray and type(v) is np.ndarray and g.shape == v.shape
            and v.shape == p._data.shape and g.dtype == v.dtype and (ones or (
                g.ndim and not any(g.strides) and g.size and g[(0,) * g.ndim] == 1))):
        view = v.view()
        view.flags.writeable = False
        if not other._parents:  # a leaf: mark its memory lent, so an edit in place of the
            cell = other._version  # leaf (t[...] = v, t.edit()) copies it first (_editing)
            if len(cell) == 2:
                if cell is _NEVER:
                    other._version = [0, None, True]
                else:
                    cell.append(True)
        return view
    return None


def _store_leaf_grads(leaves: list, grads: dict) -> None:
    """Store the complete gradients of ``leaves`` (taken from ``grads``) in their ``.grad``."""
    take = grads.pop
    ndarray = np.ndarray
    with _LEAF_GRAD_LOCK:  # threads may run backward() into one shared leaf
        for p in leaves:
            g = take(id(p), None)
            if g is None:
                continue
            data = p._data
            if type(data) is not ndarray:
                continue
            if p._grad is None and type(g) is ndarray and g.shape == data.shape and \
                    g.dtype is data.dtype:  # (the common case of _store_grad, inline)
                p._grad = g.copy()  # own copy: g may be shared with other tensors or read-only
            else:
                _store_grad(p, g)


def _changed_error(p: Tensor, t: Tensor, node: Node) -> GradientError:
    """The error for a tensor ``p`` whose value changed after ``t`` was computed from it."""
    how = p._version[1] or "an in-place change"

    def called(n: Node) -> str:
        kind = {"param": "parameter", "leaf": "tensor", "const": "constant"}.get(n.op)
        kind = kind or f"{n.op} node"
        return f"{kind} {n.name!r}" if n.name else f"an unnamed {kind}"

    if p is t:
        what = f"the value of {called(node)} {t.shape} was changed by {how} after it was computed"
    else:
        user = f"the unrolled net {node.name!r}" if node.op == "unrolled" else called(node)
        what = (f"{called(p.node)} {p.shape} was changed by {how} after {user} used it in the "
                "forward pass")
    hint = ""
    if node.op == "unrolled":
        hint = ("; a state carried over from an earlier call must be cut from that call's "
                "graph: pass state=h.detach()")
    return GradientError(
        f"backward(): {what}; its gradient would mix the old and the new values. Compute the "
        "forward pass again after changing a value (for training: zero_grad(), forward, "
        f"backward(), then optimizer.step()){hint}"
    )


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
    data = t._data
    if t._grad is None:
        if type(g) is np.ndarray and g.dtype == data.dtype and g.shape == data.shape:
            t._grad = g.copy()  # own copy: g may be shared with other tensors or read-only
        else:
            g = np.array(g, dtype=data.dtype, copy=True)
            if g.shape != data.shape:
                g = np.broadcast_to(g, data.shape).copy()
            t._grad = g
    else:
        total = t._grad + g  # a new array: a .grad the user kept a reference to is not changed
        t._grad = total if total.dtype == data.dtype else total.astype(data.dtype)


@contextlib.contextmanager
def no_grad():
    """Evaluate without recording a graph (evaluation, optimizer updates).

    The mode belongs to the current thread (as in PyTorch): other threads keep recording
    while one is inside ``no_grad()``, and a new thread starts with recording on. On exit the
    block restores the mode it found on entry in its own thread. It also works as a decorator
    (``@ug.no_grad()``).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> w = ug.tensor(1.0, requires_grad=True)
    >>> with ug.no_grad():
    ...     y = w * 2.0
    >>> y.requires_grad
    False
    """
    prev = _set_mode(grad_enabled=False)
    try:
        yield
    finally:
        _set_mode(grad_enabled=prev.grad_enabled)


@contextlib.contextmanager
def enable_grad():
    """Record graphs again inside a :func:`no_grad` block (in the current thread).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> w = ug.tensor(1.0, requires_grad=True)
    >>> with ug.no_grad():
    ...     with ug.enable_grad():
    ...         y = w * 2.0
    >>> y.requires_grad
    True
    """
    prev = _set_mode(grad_enabled=True)
    try:
        yield
    finally:
        _set_mode(grad_enabled=prev.grad_enabled)


def is_grad_enabled() -> bool:
    """Whether ops currently record graph nodes, in the current thread.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> with ug.no_grad():
    ...     ug.is_grad_enabled()
    False
    >>> ug.is_grad_enabled()
    True
    """
    return _MODE.get().grad_enabled


@contextlib.contextmanager
def detect_anomaly():
    """Stop at the first node whose forward value or gradient is NaN or Inf, and name it.

    Like :func:`no_grad`, the mode belongs to the current thread: a NaN computed in another
    thread raises nothing there.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor([0.0, 1.0], requires_grad=True, name="x")
    >>> with ug.detect_anomaly():
    ...     ug.log(x)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    AnomalyError: detect_anomaly: forward of log produced Inf; ...
    """
    prev = _set_mode(anomaly=True)
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            yield
    finally:
        _set_mode(anomaly=prev.anomaly)

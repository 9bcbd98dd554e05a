"""What numpy does with a :class:`~unrollgraph.Tensor`.

numpy computes on plain arrays, outside the graph: a numpy function given a tensor would
return an array with no node, no gradient, and (inside a cell) only the placeholder's
stand-in value. So:

- the operators ``ndarray + t``, ``-``, ``*``, ``/``, ``**``, ``@`` and the comparisons
  ``< <= > >=`` reach the tensor's own (reflected) operator and add a node, as ``t + ndarray``
  does; ``==`` and ``!=`` compare identity, as between tensors (a tensor is a dict key);
- every other ufunc (``np.tanh(t)``, ``np.exp``, ``np.add.reduce``, ``out=``, ``a += t``)
  raises :class:`~unrollgraph.NumpyFunctionError` naming the unrollgraph function to use;
- numpy's other functions (``np.sum``, ``np.dot``, ``np.stack``...) raise it too when a tensor
  they are given is part of a graph a gradient flows through (it requires grad: a parameter,
  or computed from one); on any other tensor (a plain constant, or computed from constants
  only, such as the condition ``c > 0``) they compute on its value, as on ``np.asarray(t)``,
  and return numpy results;
- the functions and ufuncs that only read a value (``np.allclose``, ``np.isfinite``,
  ``np.argmax``..., listed in ``READERS``) read any tensor's value; ``np.shape(t)``,
  ``np.ndim(t)`` and ``np.size(t)`` give ``t.shape``, ``t.ndim`` and ``t.size``, with their
  rules for a cell's placeholder (axis 0 of its stand-in, a batch of one, cannot be read);
- inside a cell, where a placeholder holds a stand-in value, every numpy function and ufunc
  but the operators raises for a placeholder and what is computed from it.

``np.asarray(t)`` (and ``t.data``) is the way to read a value on purpose.

PyTorch cannot compute on a tensor either: its functions, its modules and its constructors
(``torch.tanh(t)``, ``F.mse_loss(t, y)``, ``torch.nn.Linear(2, 3)(t)``, ``torch.tensor(t)``)
raise :class:`~unrollgraph.TorchFunctionError` naming the unrollgraph function to use and
the way to hand PyTorch the value, ``torch.tensor(t.numpy())``; its operators
(``torch_tensor + t``) reach the tensor's reflected operators, as numpy's do.
"""

from __future__ import annotations

import numpy as np

from .errors import NumpyFunctionError, TorchFunctionError
from .graph import made_by

# the ufuncs an operator calls, as ``ndarray <op> tensor``: name -> (the tensor's method when
# it is the left operand, its method when it is the right one)
UFUNC_OPERATORS = {
    "add": ("__add__", "__radd__"),
    "subtract": ("__sub__", "__rsub__"),
    "multiply": ("__mul__", "__rmul__"),
    "divide": ("__truediv__", "__rtruediv__"),  # np.true_divide is np.divide
    "power": ("__pow__", "__rpow__"),
    "matmul": ("__matmul__", "__rmatmul__"),
    "greater": ("__gt__", "__lt__"),  # a > t is t < a
    "greater_equal": ("__ge__", "__le__"),
    "less": ("__lt__", "__gt__"),
    "less_equal": ("__le__", "__ge__"),
}

# numpy name -> the unrollgraph function doing the same on tensors (each exists in the package:
# tests/test_user_trial_numpy.py checks it)
COUNTERPARTS = {
    "exp": "ug.exp(x)", "log": "ug.log(x)", "tanh": "ug.tanh(x)", "sqrt": "ug.sqrt(x)",
    "absolute": "ug.abs(x)", "abs": "ug.abs(x)", "maximum": "ug.maximum(a, b)",
    "minimum": "ug.minimum(a, b)", "expit": "ug.sigmoid(x)", "negative": "-x",
    "add": "a + b", "subtract": "a - b", "multiply": "a * b", "divide": "a / b",
    "true_divide": "a / b", "power": "a ** b", "matmul": "a @ b (or ug.matmul(a, b))",
    "dot": "a @ b (or ug.matmul(a, b))", "inner": "a @ b.T (a and b 1-d or 2-d)",
    "greater": "a > b", "greater_equal": "a >= b", "less": "a < b", "less_equal": "a <= b",
    "sum": "ug.sum(x, axis=...)", "mean": "ug.mean(x, axis=...)", "max": "ug.max(x, axis=...)",
    "amax": "ug.max(x, axis=...)", "clip": "ug.clip(x, lo, hi)", "where": "ug.where(c, a, b)",
    "reshape": "ug.reshape(x, shape)", "transpose": "ug.transpose(x, axes) (or x.T)",
    "concatenate": "ug.concat([a, b], axis=...)", "concat": "ug.concat([a, b], axis=...)",
    "stack": "ug.stack([a, b], axis=...)", "softmax": "ug.softmax(x, axis=...)",
    "log_softmax": "ug.log_softmax(x, axis=...)",
    # ufuncs and functions written from those
    "square": "x * x (or x ** 2)", "float_power": "a ** b", "reciprocal": "1 / x",
    "positive": "x itself", "fabs": "ug.abs(x)", "fmax": "ug.maximum(a, b)",
    "fmin": "ug.minimum(a, b)", "log1p": "ug.log(1 + x)", "expm1": "ug.exp(x) - 1",
    "log2": "ug.log(x) / np.log(2)", "log10": "ug.log(x) / np.log(10)",
    "exp2": "2.0 ** x", "logaddexp": "ug.log(ug.exp(a) + ug.exp(b))",
    "sinh": "(ug.exp(x) - ug.exp(-x)) / 2", "cosh": "(ug.exp(x) + ug.exp(-x)) / 2",
    "heaviside": "ug.where(x > 0, 1.0, 0.0) (x > 0 is a 0/1 node)",
    "min": "-ug.max(-x, axis=...)", "amin": "-ug.max(-x, axis=...)",
    "average": "ug.mean(x, axis=...) (weighted: ug.sum(w * x, axis=...) / ug.sum(w))",
    "linalg.norm": "ug.sqrt(ug.sum(x * x, axis=...))",
    "vdot": "ug.sum(a * b)", "outer": "ug.reshape(a, (-1, 1)) * ug.reshape(b, (1, -1))",
    "var": "ug.mean((x - ug.mean(x, axis=-1, keepdims=True)) ** 2, axis=-1)",
    "std": "ug.sqrt(ug.mean((x - ug.mean(x, axis=-1, keepdims=True)) ** 2, axis=-1))",
    "ravel": "ug.reshape(x, (-1,))", "squeeze": "ug.reshape(x, shape)",
    "expand_dims": "ug.reshape(x, shape)", "swapaxes": "ug.transpose(x, axes)",
    "moveaxis": "ug.transpose(x, axes)", "hstack": "ug.concat([a, b], axis=-1)",
    "vstack": "ug.concat([a, b], axis=0)", "copy": "the tensor itself (ops never change it)",
}

# numpy functions and ufuncs that read a value (truth, shape, position), never compute a new
# one a gradient would flow through: outside a cell they read a tensor's value
READERS = frozenset({
    "allclose", "isclose", "array_equal", "array_equiv", "shape", "ndim", "size",
    "isfinite", "isnan", "isinf", "isposinf", "isneginf", "signbit", "any", "all", "argmax",
    "argmin", "argsort", "nonzero", "flatnonzero", "count_nonzero", "array2string",
    "array_repr", "array_str", "result_type", "iscomplexobj", "isrealobj", "may_share_memory",
    "shares_memory", "assert_allclose", "assert_array_equal", "assert_array_almost_equal",
    "assert_equal", "assert_almost_equal", "assert_array_less", "printoptions",
})

# numpy's functions that read a shape: on one tensor they give its own attribute
_SHAPE_READERS = frozenset({"shape", "ndim", "size"})

# ufunc methods other than a plain call: np.add.reduce(t) is a sum, np.maximum.reduce a max
_METHODS = {("add", "reduce"): "sum", ("maximum", "reduce"): "max"}


def _graph_tensor(t) -> str | None:
    """Why ``t`` (a Tensor) is part of a graph a gradient flows through, or None for a value
    (a plain constant, or computed from constants only; a placeholder is found apart, by
    :func:`_placeholder`)."""
    node = t.node
    if node.op in ("input", "state"):
        return f"{node.label()} is a cell's {node.op} placeholder"
    if not t._requires_grad:
        return None
    if t._parents:
        return f"{node.label()} is {made_by(node)} and requires grad"
    return f"{node.label()} requires grad"


def public_name(func) -> str:
    """numpy's public name of a function or ufunc, as a user writes it.

    Parameters
    ----------
    func : callable
        A numpy function or ufunc (or another package's).

    Returns
    -------
    str
        ``np.sum``, ``np.linalg.norm``, ``np.fft.fft``; another package's function by its
        module; a ufunc numpy does not export (``scipy.special.expit``) by its bare name.

    Examples
    --------
    >>> import numpy as np
    >>> from unrollgraph.interop import public_name
    >>> public_name(np.linalg.norm), public_name(np.square)
    ('np.linalg.norm', 'np.square')
    """
    name = getattr(func, "__name__", repr(func))
    if getattr(np, name, None) is func:
        return f"np.{name}"
    module = getattr(func, "__module__", None) or ""
    parts = module.split(".")
    if parts[0] == "numpy" and not any(p.startswith("_") for p in parts):
        return ".".join(["np"] + parts[1:] + [name])
    return f"{module}.{name}" if module else name


def _key(shown: str) -> str:
    """The key of :data:`COUNTERPARTS` for a public name: ``np.linalg.norm`` ->
    ``linalg.norm``, ``np.sum`` -> ``sum``."""
    return shown[3:] if shown.startswith("np.") else shown.rsplit(".", 1)[-1]


def _advice(name: str, inside_cell: bool, shown: str | None = None) -> str:
    use = COUNTERPARTS.get(name)
    how = (f"use {use}, which adds a node to the graph" if use else
           f"unrollgraph has no counterpart of {shown or 'np.' + name}: write it from ug ops "
           "(ug.exp, ug.tanh, ug.where, + - * / ** @ ...), or define an op with "
           "ug.ops.defop")
    cell = (" Inside a cell a placeholder's value (np.asarray(h)) is a stand-in used only to "
            "check shapes: compute with the tensor itself, never with its value." if inside_cell
            else "")
    return (f"numpy computes on plain arrays, outside the graph (no gradient would flow); "
            f"{how}. For the plain value on purpose, use np.asarray(t) or t.data.{cell}")


def ufunc_on_tensor(tensor_type, ufunc, method: str, inputs: tuple, kwargs: dict):
    """``Tensor.__array_ufunc__``: an operator's ufunc goes to the tensor's operator; any
    other ufunc call raises :class:`~unrollgraph.NumpyFunctionError`."""
    name = ufunc.__name__
    if method == "__call__" and not kwargs and len(inputs) == 2:
        ops = UFUNC_OPERATORS.get(name)
        if ops is not None:
            a, b = inputs
            if isinstance(a, tensor_type):
                return getattr(a, ops[0])(b)
            return getattr(b, ops[1])(a)
        if name in ("equal", "not_equal"):  # a tensor's == is identity (tensors are dict keys)
            return (inputs[0] is inputs[1]) == (name == "equal")
    tensors = [x for x in inputs if isinstance(x, tensor_type)]
    inside = any(_placeholder(x) for x in tensors)
    if name in READERS and method == "__call__" and not kwargs and not inside:
        return ufunc(*_values(tensor_type, inputs))
    name = _METHODS.get((name, method), name)
    shown = public_name(ufunc) + ("" if method == "__call__" else f".{method}")
    outs = kwargs.get("out") or ()
    if any(isinstance(o, tensor_type) for o in (outs if isinstance(outs, tuple) else (outs,))):
        raise NumpyFunctionError(
            f"{shown}(..., out=t) would write into a tensor behind its graph's back; compute "
            f"a new tensor ({COUNTERPARTS.get(name, 'from ug ops')}), or edit a leaf with "
            "t.edit()", function=shown)
    if outs and name in UFUNC_OPERATORS:
        raise NumpyFunctionError(
            f"{shown}(array, tensor, out=array) (such as array += tensor) would write a "
            "tensor's value into a numpy array, outside the graph; write a = a + t (a new "
            "tensor), or a += np.asarray(t) for the plain value", function=shown)
    label = tensors[0].node.label() if tensors else "a tensor"
    raise NumpyFunctionError(
        f"{shown}({label}{', ...' if len(inputs) > 1 else ''}): "
        f"{_advice(name, inside, shown)}", function=shown)


def function_on_tensor(tensor_type, func, args: tuple, kwargs: dict):
    """``Tensor.__array_function__``: numpy's non-ufunc functions raise
    :class:`~unrollgraph.NumpyFunctionError` for a tensor that is part of a graph, and compute
    on the values of plain constant tensors."""
    name = func.__name__
    if name in _SHAPE_READERS and len(args) == 1 and isinstance(args[0], tensor_type) and \
            not kwargs:
        # the tensor's own attribute: inside a cell, the same rules for the stand-in's batch
        # axis as t.shape and t.size (np.ndim(h) reads no size and is always right), the
        # errors quoting the read as written (np.shape(h)[0])
        from .tensor import _numpy_shape_read  # (tensor.py imports this module)
        return _numpy_shape_read(args[0], name, public_name(func))
    tensors = list(_tensors_in(tensor_type, args, kwargs))
    why = next((w for w in map(_graph_tensor, tensors) if w is not None), None)
    derived = next((x for x in tensors if x._parents and _placeholder(x)), None)
    if why is None and derived is not None:  # (computed from a placeholder: a stand-in)
        why = f"{derived.node.label()} is computed from a cell's placeholder"
    inside = derived is not None or (why is not None and any(_placeholder(x) for x in tensors))
    if inside or (why is not None and name not in READERS):
        shown = public_name(func)
        key = _key(shown)
        raise NumpyFunctionError(
            f"{shown}(...) on a tensor ({why}): {_advice(key, inside, shown)}",
            function=shown)
    args = _values(tensor_type, args)
    kwargs = {k: _values(tensor_type, v) for k, v in kwargs.items()}
    return func(*args, **kwargs)


def _tensors_in(tensor_type, args, kwargs):
    stack = list(args) + list(kwargs.values())
    while stack:
        x = stack.pop()
        if isinstance(x, tensor_type):
            yield x
        elif isinstance(x, (list, tuple)):
            stack.extend(x)


def _values(tensor_type, x):
    """``x`` with every tensor (also inside lists and tuples) replaced by its value."""
    if isinstance(x, tensor_type):
        return np.asarray(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_values(tensor_type, v) for v in x)
    return x


def _placeholder(t) -> bool:
    """Whether ``t`` is a cell's placeholder or computed from one (tensor.py's walk over its
    ancestors)."""
    from .tensor import _placeholder_source  # (tensor.py imports this module)
    return _placeholder_source(t.node) is not None


# -- PyTorch ----------------------------------------------------------------------------------
# PyTorch computes on its own tensors: a torch function, module or constructor given a tensor
# of this library cannot read it. Without a word from here, PyTorch says "argument 'input'
# must be Tensor, not Tensor" (both classes are called Tensor), and its constructors read the
# tensor as nested lists down to a number and stop at len() of it. So:
#
# - ``Tensor.__torch_function__`` (every function in torch, torch.nn.functional, torch.linalg
#   and the methods of a torch tensor, hence every torch.nn module's forward) raises
#   :class:`~unrollgraph.TorchFunctionError` naming PyTorch's function, unrollgraph's own and
#   how to hand PyTorch the value. It is a ``TypeError``: PyTorch turns it into
#   ``NotImplemented`` for its operators, so ``torch_tensor + t`` still reaches the tensor's
#   reflected operator, a node with the torch tensor as a constant, as ``ndarray + t`` does;
# - ``Tensor.__dlpack__`` (which torch.tensor, torch.as_tensor, torch.asarray and
#   torch.from_dlpack ask for) raises it too, with the constructor's fix.

# PyTorch's function name (the last part: ``torch.nn.functional.mse_loss`` -> ``mse_loss``)
# -> what to write here; names not listed take :data:`COUNTERPARTS`, numpy's table, where a
# name means the same in both (tanh, exp, sum, where, softmax...)
TORCH_COUNTERPARTS = {
    "sigmoid": "ug.sigmoid(x)", "relu": "ug.relu(x)", "neg": "-x", "negative": "-x",
    "add": "a + b", "sub": "a - b", "subtract": "a - b", "mul": "a * b", "multiply": "a * b",
    "div": "a / b", "divide": "a / b", "pow": "a ** b", "rsub": "b - a",
    "cat": "ug.concat([a, b], axis=d) (torch.cat's dim= is axis= here)",
    "concat": "ug.concat([a, b], axis=d)", "concatenate": "ug.concat([a, b], axis=d)",
    "stack": "ug.stack([a, b], axis=d)",
    "clamp": "ug.clip(x, lo, hi)", "clip": "ug.clip(x, lo, hi)",
    "mm": "a @ b (or ug.matmul(a, b))", "bmm": "a @ b (or ug.matmul(a, b))",
    "mv": "a @ b (or ug.matmul(a, b))", "dot": "ug.sum(a * b)",
    "linear": "ug.train.Linear(in_features, out_features), or x @ W.T + b",
    "mse_loss": "ug.mse_loss(prediction, target)",
    "cross_entropy": "ug.cross_entropy(logits, labels)",
    "binary_cross_entropy_with_logits": "ug.binary_cross_entropy_with_logits(logits, targets)",
    "binary_cross_entropy": ("ug.binary_cross_entropy_with_logits(logits, targets) on the "
                             "logits (before the sigmoid)"),
    "l1_loss": "ug.mean(ug.abs(prediction - target))",
    "nll_loss": "ug.cross_entropy(logits, labels) on the logits (before log_softmax)",
    "softmax": "ug.softmax(x, axis=d)", "log_softmax": "ug.log_softmax(x, axis=d)",
    "max": "ug.max(x, axis=d)", "amax": "ug.max(x, axis=d)",
    "min": "-ug.max(-x, axis=d)", "amin": "-ug.max(-x, axis=d)",
    "norm": "ug.sqrt(ug.sum(x * x, axis=d))", "vector_norm": "ug.sqrt(ug.sum(x * x, axis=d))",
    "reshape": "ug.reshape(x, shape) (or x.reshape(shape))",
    "flatten": "x.flatten(start_dim, end_dim)", "squeeze": "x.squeeze(d)",
    "unsqueeze": "x.unsqueeze(d)", "permute": "x.permute(...)", "t": "x.t() (or x.T)",
    "transpose": "x.transpose(d0, d1) (for a 2-d tensor x.T)",
    "zeros_like": "ug.tensor(np.zeros(x.shape))", "ones_like": "ug.tensor(np.ones(x.shape))",
    "full_like": "ug.tensor(np.full(x.shape, v))",
    "randn_like": "ug.tensor(np.random.default_rng(seed).standard_normal(x.shape))",
    "dropout": "nothing: there is no dropout, every call of a net computes the same values",
    "allclose": "np.allclose(a, b), which reads a tensor's value",
    "isclose": "np.isclose(a, b), which reads a tensor's value",
    "equal": "np.array_equal(a, b), which reads a tensor's value",
    "isfinite": "np.isfinite(x), which reads a tensor's value",
    "isnan": "np.isnan(x), which reads a tensor's value",
    "argmax": "np.argmax(x, axis=d), which reads a tensor's value (indices have no gradient)",
    "argmin": "np.argmin(x, axis=d), which reads a tensor's value (indices have no gradient)",
}

# the modules PyTorch's functions live in, as a user writes them
_TORCH_MODULES = {"torch._C._nn": "torch.nn.functional", "torch._C._linalg": "torch.linalg",
                  "torch._C._special": "torch.special", "torch._C._fft": "torch.fft",
                  "torch.functional": "torch", "torch._C._VariableFunctions": "torch",
                  "torch._tensor": "torch.Tensor"}

_TO_TORCH = ("For PyTorch, pass the value: torch.tensor({k}.numpy()), a copy (its float type "
             "kept; .float() makes it float32) that is a constant there: no gradient flows "
             "back into unrollgraph")


# the methods of a torch tensor that its operators call (torch_tensor + t calls
# torch.Tensor.add): PyTorch takes their TypeError for NotImplemented
_TORCH_OPERATORS = frozenset(f"torch.Tensor.{m}" for m in (
    "add", "sub", "mul", "div", "pow", "matmul", "lt", "le", "gt", "ge", "eq", "ne",
    "add_", "sub_", "mul_", "div_", "pow_", "remainder", "__floordiv__", "__rsub__",
    "__rdiv__", "__rpow__", "__rmatmul__", "__and__", "__or__", "__xor__"))


def torch_public_name(func) -> str:
    """PyTorch's public name of a function or method, as a user writes it.

    Parameters
    ----------
    func : callable
        A function of ``torch``, ``torch.nn.functional``, ``torch.linalg``..., or a method
        of ``torch.Tensor``.

    Returns
    -------
    str
        ``torch.tanh``, ``torch.nn.functional.mse_loss``, ``torch.linalg.norm``,
        ``torch.Tensor.add``.

    Examples
    --------
    >>> import math
    >>> from unrollgraph.interop import torch_public_name
    >>> torch_public_name(math.sqrt)  # any function, by its module
    'math.sqrt'
    """
    name = getattr(func, "__name__", None) or repr(func)
    qualname = getattr(func, "__qualname__", "") or ""
    module = getattr(func, "__module__", None)
    if qualname.startswith(("TensorBase.", "Tensor.")) and module in (None, "torch._tensor",
                                                                     "torch._C"):
        return f"torch.Tensor.{name}"
    module = _TORCH_MODULES.get(module, module)
    for prefix in ("linalg_", "special_", "fft_"):  # torch._C._linalg.linalg_norm
        if name.startswith(prefix) and module == f"torch.{prefix[:-1]}":
            name = name[len(prefix):]
    return f"{module}.{name}" if module else name


def _in_code(label: str) -> str:
    """A tensor's label as code names it: the label itself if Python reads it as a name
    (``h_next``), else ``t`` (``<getitem>``, ``W#n3``)."""
    return label if label.isidentifier() else "t"


def _torch_advice(key: str, inside_cell: bool, k: str) -> str:
    use = TORCH_COUNTERPARTS.get(key) or COUNTERPARTS.get(key)
    how = (f"Here, use {use}" if use else
           "Here there is no function of that name: write it from ug ops (ug.exp, ug.tanh, "
           "ug.where, + - * / ** @ ...), or define an op with ug.ops.defop")
    if inside_cell:
        return (f"{how}. Inside a cell a placeholder holds a stand-in value used only to "
                "check shapes: compute with the tensor itself, with ug's functions")
    return f"{how}. {_TO_TORCH.format(k=k)}"


def torch_function_on_tensor(tensor_type, func, args: tuple, kwargs: dict):
    """``Tensor.__torch_function__``: raise :class:`~unrollgraph.TorchFunctionError` naming
    PyTorch's function, the unrollgraph function to use and how to hand PyTorch the value."""
    shown = torch_public_name(func)
    tensors = list(_tensors_in(tensor_type, args, kwargs))
    label = tensors[0].node.label() if tensors else "a tensor"
    if shown in _TORCH_OPERATORS:  # (torch_tensor + t: PyTorch turns the error into
        # NotImplemented, then t.__radd__ computes; no walk over t's ancestors for it)
        inside = any(x.node.op in ("input", "state") and x.node.step is None for x in tensors)
    else:
        inside = any(_placeholder(x) for x in tensors)
    advice = _torch_advice(shown.rsplit(".", 1)[-1], inside, _in_code(label))
    raise TorchFunctionError(
        f"{shown}(...) given {label}, an unrollgraph Tensor: PyTorch's functions and modules "
        f"compute on torch tensors only. {advice}", function=shown)


def torch_constructor_error(t, caller: str):
    """The error for ``torch.tensor(t)`` (``torch.as_tensor``, ``torch.asarray``,
    ``torch.from_dlpack``: they ask ``t.__dlpack__``), or another library's DLPack import
    (``np.from_dlpack(t)``) when ``caller``, the module asking, is not PyTorch's."""
    label = t.node.label()
    k = _in_code(label)
    if _placeholder(t):
        fix = ("Inside a cell a placeholder holds a stand-in value used only to check shapes: "
               "compute with the tensor itself, with ug's functions (ug.tanh, ug.stack, "
               "ug.mse_loss)")
    elif caller.split(".")[0] == "torch":
        fix = (f"{_TO_TORCH.format(k=k)}. To compute on it here, use ug's functions "
               "(ug.tanh, ug.stack, ug.mse_loss), whose results are nodes of the graph")
    else:
        return NumpyFunctionError(
            f"{label} is an unrollgraph Tensor and is not exported through DLPack: its value "
            f"is np.asarray({k}) (or {k}.numpy()), a numpy array", function="__dlpack__")
    return TorchFunctionError(
        f"torch.tensor({k}) (or torch.as_tensor, torch.asarray, torch.from_dlpack) given "
        f"{label}, "
        f"an unrollgraph Tensor: PyTorch cannot read it. {fix}", function="torch.tensor")


def torch_hand_over(label: str) -> str:
    """What to write when PyTorch's code (a ``torch.nn`` module's ``forward``) is given a
    tensor of this library: the ready cells here, or the value handed to PyTorch."""
    return ("Here, build the model from ug.nn's cells (ug.nn.LSTM, ug.nn.GRU, ug.nn.RNNCell) "
            "and ug.train.Linear. " + _TO_TORCH.format(k=_in_code(label)))


def torch_sequence_hint() -> str:
    """The end of the message of ``len()`` of a tensor of shape ``()`` once PyTorch is
    imported: ``torch.tensor([a, b])`` and ``torch.Tensor(...)``, given unrollgraph tensors
    in a list, read them as nested lists of numbers and stop at ``len()`` of one number."""
    import sys

    if "torch" not in sys.modules:
        return ""
    return ("; if PyTorch asked (torch.tensor([a, b]) of unrollgraph tensors reads them as "
            "nested lists, down to one number), pass it their values: torch.tensor([a.item(), "
            "b.item()]), or torch.tensor(np.stack([a.numpy(), b.numpy()])), a constant there "
            "through which no gradient flows back into unrollgraph; ug.stack([a, b]) stacks "
            "them here")

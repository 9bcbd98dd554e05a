"""Ready recurrent cells built from primitive ops: Elman RNN (tanh or relu), LSTM and GRU,
one layer or stacked.

Parameter names, shapes, gate order and equations follow PyTorch (``torch.nn.RNNCell``,
``LSTMCell``, ``GRUCell``, and ``torch.nn.RNN/LSTM/GRU`` for stacks: ``weight_ih_l0``...), so a
PyTorch state dict loads with :meth:`Cell.load_state_dict` and gives the same outputs and
gradients. Each gate is its own named node, so the unrolled diagrams show the gates.

Every cell takes ``input_size``, ``hidden_size``, ``bias``, ``seed`` (PyTorch's initialisation
U(-1/sqrt(H), 1/sqrt(H))), ``dtype`` and ``name``. ``dtype=np.float32`` makes a float32 cell:
its parameters, outputs, states and gradients are float32, and an unrolled net of it takes
float32 inputs and initial states (a float64 one raises :class:`~unrollgraph.DTypeError`
naming it, since numpy would silently compute the whole run in float64; numbers, lists and
integer arrays are converted). ``docs/cells.md`` describes calling a net and editing
parameters.

The stacks take PyTorch's ``batch_first``, ``dropout``, ``bidirectional`` (and ``LSTM``'s
``proj_size``) as keywords at their default values (False, 0, False, 0), so code written for
PyTorch runs unchanged; any other value raises :class:`~unrollgraph.CellError` saying what to
do instead (batch-first data: ``np.swapaxes(x, 0, 1)``). A stack's final state is one tensor
per state, in the order of ``cell.states`` (``h_l0, c_l0, h_l1, c_l1`` for a 2-layer LSTM),
not PyTorch's ``(h_n, c_n)``: ``ug.stack(state[0::2])`` is ``h_n``.
"""

from __future__ import annotations

import numpy as np

from .cell import Cell
from .errors import CellError, DTypeError
from .functional import relu, sigmoid, tanh
from .tensor import Tensor
from .tensor import _nn_getattr as __getattr__  # noqa: F401 (PyTorch names: what to write)

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU", "ResidualRNNCell"]

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _init_params(rng, gates, input_size, hidden_size, bias, dtype):
    k = 1.0 / np.sqrt(hidden_size)
    shapes = {
        "weight_ih": (gates * hidden_size, input_size),
        "weight_hh": (gates * hidden_size, hidden_size),
    }
    if bias:
        shapes["bias_ih"] = (gates * hidden_size,)
        shapes["bias_hh"] = (gates * hidden_size,)
    return {n: rng.uniform(-k, k, size=s).astype(dtype) for n, s in shapes.items()}


def _layer(cell: Cell, kind: str, x: Tensor, input_size: int, hidden_size: int, bias: bool,
           suffix: str, rng, dtype, nonlinearity: str = "tanh") -> Tensor:
    """Declare one layer's states and params on ``cell`` and return its output h_t."""
    H = hidden_size
    p = {
        n: cell.param(n + suffix, v)
        for n, v in _init_params(rng, _GATES[kind], input_size, H, bias, dtype).items()
    }
    h = cell.state("h" + suffix, (H,))
    c = cell.state("c" + suffix, (H,)) if kind == "lstm" else None
    gi = x @ p["weight_ih"].T
    gh = h @ p["weight_hh"].T
    if bias:
        gi = gi + p["bias_ih"]
        gh = gh + p["bias_hh"]
    if kind == "rnn":
        act = tanh if nonlinearity == "tanh" else relu
        h_next = act(gi + gh, name="h_next" + suffix)
    elif kind == "lstm":
        gates = (gi + gh)
        gates.name = "gates" + suffix
        i = sigmoid(gates[:, 0:H], name="i" + suffix)
        f = sigmoid(gates[:, H:2 * H], name="f" + suffix)
        g = tanh(gates[:, 2 * H:3 * H], name="g" + suffix)
        o = sigmoid(gates[:, 3 * H:4 * H], name="o" + suffix)
        c_next = f * c + i * g
        c_next.name = "c_next" + suffix
        h_next = o * tanh(c_next)
        h_next.name = "h_next" + suffix
        cell.feedback(c, c_next)
    else:  # gru: r, z, n gate order; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        r = sigmoid(gi[:, 0:H] + gh[:, 0:H], name="r" + suffix)
        z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H], name="z" + suffix)
        n = tanh(gi[:, 2 * H:3 * H] + r * gh[:, 2 * H:3 * H], name="n" + suffix)
        h_next = (1.0 - z) * n + z * h
        h_next.name = "h_next" + suffix
    cell.feedback(h, h_next)
    return h_next


def _positive_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 1


def _check_sizes(input_size, hidden_size, nonlinearity="tanh", dtype=np.float64, seed=None,
                 bias=True):
    if not isinstance(bias, (bool, np.bool_)):
        raise CellError(f"bias must be True or False, got {bias!r}")
    for what, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not _positive_int(v):
            raise CellError(f"{what} must be a positive int, got {v!r}")
    if not isinstance(nonlinearity, str) or nonlinearity not in ("tanh", "relu"):
        raise CellError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    try:
        ok = np.dtype(dtype).type in (np.float32, np.float64)
    except TypeError:
        ok = False
    if not ok:
        raise DTypeError(f"dtype must be np.float32 or np.float64, got {dtype!r}")
    if seed is not None and not _positive_int(seed) and seed != 0:
        raise CellError(f"seed must be None or an int >= 0, got {seed!r}")


class _ParamAttributes:
    """Parameters read as attributes, like PyTorch's modules: ``cell.weight_hh``,
    ``stack.weight_ih_l0``."""

    def __getattr__(self, item):
        params = self.__dict__.get("_params", {})
        if item in params:
            return params[item]
        raise AttributeError(f"{type(self).__name__} has no attribute {item!r}")

    _params_as_attributes = True  # (Cell.__setattr__ then guards them)


class _SingleLayer(_ParamAttributes, Cell):
    kind = "rnn"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", seed=None,
                 dtype=np.float64, name=None):
        _check_sizes(input_size, hidden_size, nonlinearity, dtype, seed, bias)
        super().__init__(type(self).__name__ if name is None else name)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.nonlinearity = nonlinearity
        rng = np.random.default_rng(seed)
        x = self.input("x", (input_size,))
        h = _layer(self, self.kind, x, input_size, hidden_size, bias, "", rng, dtype,
                   nonlinearity)
        self.output("y", h)


class RNNCell(_SingleLayer):
    """Elman cell: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu.

    Parameters
    ----------
    input_size, hidden_size : int
    nonlinearity : {"tanh", "relu"}
    bias : bool
    seed : int, optional
        Seed of PyTorch's initialisation U(-1/sqrt(H), 1/sqrt(H)).
    dtype : np.float64 (default) or np.float32
        The cell's float type (:attr:`Cell.dtype`): the parameters', and so the outputs' and
        states'. Give a float32 cell float32 inputs and initial states: float64 ones raise
        :class:`~unrollgraph.DTypeError` (numbers, lists and integers are converted).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> cell = ug.nn.RNNCell(4, 8, seed=0)
    >>> cell.weight_hh.shape, sorted(cell.parameters())
    ((8, 8), ['bias_hh', 'bias_ih', 'weight_hh', 'weight_ih'])
    """

    kind = "rnn"

    def __init__(self, input_size, hidden_size, nonlinearity="tanh", bias=True, seed=None,
                 dtype=np.float64, name=None):
        super().__init__(input_size, hidden_size, bias, nonlinearity, seed, dtype, name)


class LSTMCell(_SingleLayer):
    """LSTM cell with PyTorch's gate order (i, f, g, o) and states (h, c).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> cell = ug.nn.LSTMCell(4, 8, seed=0)
    >>> cell.weight_ih.shape, list(cell.states)
    ((32, 4), ['h', 'c'])
    """

    kind = "lstm"

    def __init__(self, input_size, hidden_size, bias=True, seed=None, dtype=np.float64,
                 name=None):
        super().__init__(input_size, hidden_size, bias, "tanh", seed, dtype, name)


class GRUCell(_SingleLayer):
    """GRU cell with PyTorch's gate order (r, z, n) and candidate
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.nn.GRUCell(4, 8, seed=0).weight_hh.shape
    (24, 8)
    """

    kind = "gru"

    def __init__(self, input_size, hidden_size, bias=True, seed=None, dtype=np.float64,
                 name=None):
        super().__init__(input_size, hidden_size, bias, "tanh", seed, dtype, name)


def _torch_defaults(cls: str, batch_first, dropout, bidirectional, proj_size=0) -> None:
    """Accept PyTorch's ``nn.RNN/LSTM/GRU`` arguments at their default values (so code
    written for PyTorch runs unchanged) and refuse any other value with what to do instead."""
    def is_default(v, default):
        return (isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating))
                and v == default)

    if not is_default(batch_first, False):
        raise CellError(
            f"ug.nn.{cls}(batch_first={batch_first!r}): an unrolled net always takes its "
            "inputs time-first, shaped (T, B, features); keep batch_first=False (the "
            "default) and pass batch-first data swapped, np.swapaxes(x, 0, 1) (a PyTorch "
            "tensor: x.transpose(0, 1)); the outputs come (T, B, H), and out.transpose(0, 1) "
            "gives them batch-first")
    if not is_default(dropout, 0):
        raise CellError(
            f"ug.nn.{cls}(dropout={dropout!r}): there is no dropout between layers (a net "
            "computes the same values on every call, and gradcheck can check its gradients); "
            "keep dropout=0, the default")
    if not is_default(bidirectional, False):
        raise CellError(
            f"ug.nn.{cls}(bidirectional={bidirectional!r}): a net runs forward in time only; "
            "keep bidirectional=False and build the backward direction from a second cell "
            "run over the reversed sequence: out_b, _ = net_b(xs[::-1]), then "
            "ug.concat([out, out_b[::-1]], axis=-1) gives PyTorch's (T, B, 2 * H) outputs")
    if not is_default(proj_size, 0):
        raise CellError(
            f"ug.nn.{cls}(proj_size={proj_size!r}): projected LSTMs (h = W_hr h) are not "
            "built in; keep proj_size=0, or write the cell with its projection as a "
            "parameter (ug.Cell, docs/cells.md)")


class _Stacked(_ParamAttributes, Cell):
    kind = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 seed=None, dtype=np.float64, name=None, *, batch_first=False, dropout=0.0,
                 bidirectional=False):
        _torch_defaults(type(self).__name__, batch_first, dropout, bidirectional)
        _check_sizes(input_size, hidden_size, nonlinearity, dtype, seed, bias)
        if not _positive_int(num_layers):
            raise CellError(f"num_layers must be a positive int, got {num_layers!r}")
        super().__init__(type(self).__name__ if name is None else name)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        rng = np.random.default_rng(seed)
        x = self.input("x", (input_size,))
        size = input_size
        for layer in range(num_layers):
            x = _layer(self, self.kind, x, size, hidden_size, bias, f"_l{layer}", rng, dtype,
                       nonlinearity)
            size = hidden_size
        self.output("y", x)


class RNN(_Stacked):
    """Stacked Elman layers; parameters named like ``torch.nn.RNN`` (``weight_ih_l0``...).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> cell = ug.nn.RNN(3, 5, num_layers=2, seed=0)
    >>> list(cell.states), cell.weight_ih_l1.shape
    (['h_l0', 'h_l1'], (5, 5))
    """

    kind = "rnn"


class LSTM(_Stacked):
    """Stacked LSTM layers; parameters named like ``torch.nn.LSTM``; states h_l0, c_l0, ...

    Examples
    --------
    >>> import unrollgraph as ug
    >>> list(ug.nn.LSTM(3, 5, num_layers=2, seed=0).states)
    ['h_l0', 'c_l0', 'h_l1', 'c_l1']
    """

    kind = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, seed=None,
                 dtype=np.float64, name=None, *, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0):
        _torch_defaults("LSTM", batch_first, dropout, bidirectional, proj_size)
        super().__init__(input_size, hidden_size, num_layers, "tanh", bias, seed, dtype, name)


class GRU(_Stacked):
    """Stacked GRU layers; parameters named like ``torch.nn.GRU``.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> sorted(ug.nn.GRU(3, 5, seed=0).parameters())[:2]
    ['bias_hh_l0', 'bias_ih_l0']
    """

    kind = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, seed=None,
                 dtype=np.float64, name=None, *, batch_first=False, dropout=0.0,
                 bidirectional=False):
        super().__init__(input_size, hidden_size, num_layers, "tanh", bias, seed, dtype, name,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional)


class ResidualRNNCell(_ParamAttributes, Cell):
    """Elman cell with a residual (skip) path through time:
    h_t = h_{t-1} + act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu.

    The identity path makes the one-step Jacobian ``I + diag(act') W_hh`` instead of
    ``diag(act') W_hh``. With small recurrent weights (``hh_scale=0.1``, say) the product
    ``∂h_T/∂h_t`` stays within a small factor of the identity's norm 1 over many steps,
    where the plain tanh cell's shrinks geometrically (by about ``σ₁(W_hh)`` per step), so
    gradients from far back survive. It is not bounded by 1, though: an eigenvalue of
    ``diag(act') W_hh`` with a positive real part makes it grow slowly, and nothing bounds the
    state itself (it can change by up to 1 per step and element with tanh). Parameters and
    their initialisation are those of :class:`RNNCell`, with ``weight_hh`` multiplied by
    ``hh_scale``.

    Parameters
    ----------
    input_size, hidden_size : int
    nonlinearity : {"tanh", "relu"}
    bias : bool
    hh_scale : float
        Multiplies the initial ``weight_hh``.
    seed : int, optional
    dtype : np.float64 (default) or np.float32
        The cell's float type (:attr:`Cell.dtype`): the parameters', and so the outputs' and
        states'. Give a float32 cell float32 inputs and initial states: float64 ones raise
        :class:`~unrollgraph.DTypeError` (numbers, lists and integers are converted).

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> cell = ug.nn.ResidualRNNCell(2, 3, hh_scale=0.1, seed=0)
    >>> print(cell.graph().nodes[-1].op, cell.feedbacks["h"].name)
    add h_next
    >>> net = ug.unroll(cell, steps=20)
    >>> out, h = net(np.zeros((20, 1, 2)))
    >>> out[-1].sum().backward()
    >>> flow = ug.gradient_flow(net.last_run)
    >>> round(float(flow.jacobian_norms[0]), 2)    # 19 steps back: near 1 (tanh RNN: 4e-22)
    2.82
    """

    def __init__(self, input_size, hidden_size, nonlinearity="tanh", bias=True, hh_scale=1.0,
                 seed=None, dtype=np.float64, name=None):
        _check_sizes(input_size, hidden_size, nonlinearity, dtype, seed, bias)
        if isinstance(hh_scale, (bool, np.bool_)) or not isinstance(hh_scale, (int, float,
                                                                               np.floating,
                                                                               np.integer)) \
                or not np.isfinite(hh_scale):
            raise CellError(f"hh_scale must be a finite number, got {hh_scale!r}")
        super().__init__(type(self).__name__ if name is None else name)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.nonlinearity = nonlinearity
        rng = np.random.default_rng(seed)
        init = _init_params(rng, 1, input_size, hidden_size, bias, dtype)
        init["weight_hh"] = (init["weight_hh"] * hh_scale).astype(dtype)
        p = {n: self.param(n, v) for n, v in init.items()}
        x = self.input("x", (input_size,))
        h = self.state("h", (hidden_size,))
        pre = x @ p["weight_ih"].T + h @ p["weight_hh"].T
        if bias:
            pre = pre + p["bias_ih"] + p["bias_hh"]
        act = tanh if nonlinearity == "tanh" else relu
        f = act(pre, name="f")
        h_next = h + f
        h_next.name = "h_next"
        self.feedback(h, h_next)
        self.output("y", h_next)

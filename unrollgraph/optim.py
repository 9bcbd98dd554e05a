"""Optimizers (SGD with momentum, Adam) and gradient clipping, with PyTorch's update equations.

An optimizer holds a list of parameter tensors. :meth:`Optimizer.step` reads each parameter's
``.grad`` and updates ``.data`` **in place** (so an unrolled net, which reads its cell's
parameter arrays on every call, sees the new values at once). Parameters whose ``.grad`` is
``None`` are skipped, as in PyTorch. Updates are plain numpy: they record no graph nodes.

The equations, for a parameter p with gradient g at step t (all operations elementwise):

SGD (``torch.optim.SGD``)::

    g <- g + weight_decay * p
    b <- g                                   at the first step (momentum != 0)
    b <- momentum * b + (1 - dampening) * g  afterwards
    g <- g + momentum * b   if nesterov, else   g <- b
    p <- p - lr * g

Adam (``torch.optim.Adam``, L2 weight decay added to the gradient)::

    g <- g + weight_decay * p
    m <- beta1 * m + (1 - beta1) * g
    v <- beta2 * v + (1 - beta2) * g * g
    p <- p - (lr / (1 - beta1**t)) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from .errors import GradientError, TrainingError
from .tensor import Tensor, _editing

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "clip_grad_norm",
    "clip_grad_value",
    "normalize_grad_norm",
    "TrainingError",
]


def _param_list(params, who: str) -> list[Tensor]:
    """Normalize a Tensor, an iterable of Tensors or of (name, Tensor) pairs
    (``named_parameters()``) or a dict name -> Tensor to a list of distinct tensors, checking
    each one."""
    if isinstance(params, Tensor):
        items = [("0", params)]
    elif isinstance(params, Mapping):
        items = [(str(k), v) for k, v in params.items()]
    else:
        try:
            # (name, tensor) pairs, as model.named_parameters() yields, give their names
            items = [(v[0], v[1]) if isinstance(v, tuple) and len(v) == 2
                     and isinstance(v[0], str) and isinstance(v[1], Tensor) else (str(k), v)
                     for k, v in enumerate(params)]
        except TypeError:
            raise TrainingError(
                f"{who}: params must be a Tensor, an iterable of Tensors or of (name, Tensor) "
                "pairs, or a dict name -> Tensor (e.g. cell.parameters() or "
                f"cell.named_parameters()), got {type(params).__name__}"
            ) from None
    out: list[Tensor] = []
    seen: set[int] = set()
    for k, p in items:
        if isinstance(p, str):
            raise TrainingError(
                f"{who}: parameter {k!r} is the name {p!r}, not a ug.Tensor: iterating "
                "cell.parameters() (a dict name -> Tensor) gives the names. Pass the dict "
                "itself, or cell.parameters().values()"
            )
        if not isinstance(p, Tensor):
            raise TrainingError(
                f"{who}: parameter {k!r} is a {type(p).__name__}, not a ug.Tensor; pass "
                "tensors such as cell.parameters() or ug.tensor(w, requires_grad=True)"
            )
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _number(who: str, name: str, value, hint: str, low: float = 0.0, low_ok: bool = True,
            high: float | None = None, infinite_ok: bool = False) -> float:
    """``value`` as a float after checking, in this order, that it is a real number (not a
    bool, a string, None...), not NaN, finite (unless ``infinite_ok``) and in range:
    ``>= low`` (``> low`` if not ``low_ok``) and ``< high``. Raises TrainingError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TrainingError(
            f"{who}: {name} must be a real number, got {type(value).__name__} {value!r}; "
            f"{hint}"
        )
    v = float(value)
    if (
        math.isnan(v) or (math.isinf(v) and not infinite_ok)
        or (v < low if low_ok else v <= low) or (high is not None and v >= high)
    ):
        raise TrainingError(f"{who}: invalid {name} {value!r}; {hint}")
    return v


def _flag(who: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TrainingError(
            f"{who}: {name} must be True or False, got {type(value).__name__} {value!r}"
        )
    return bool(value)


class Optimizer:
    """Base class: holds the parameters and per-parameter state; subclasses define
    :meth:`step`.

    Parameters
    ----------
    params : Tensor, iterable of Tensor or of (name, Tensor) pairs, or dict name -> Tensor
        The tensors to update (``cell.parameters()`` and ``cell.named_parameters()`` work
        directly): leaves (an optimizer cannot update the result of an op). A frozen one
        (``requires_grad_(False)``) is kept and, getting no gradient, left alone by every
        step until it is unfrozen, as in PyTorch (a list with none requiring grad is
        refused).

    Attributes
    ----------
    params : list of Tensor
        The parameters, duplicates removed, in the order given.
    state : dict
        ``id(param)`` -> that parameter's buffers (momentum, Adam moments, step count).
    """

    def __init__(self, params):
        self.params = _param_list(params, type(self).__name__)
        if not self.params:
            raise TrainingError(
                f"{type(self).__name__} got an empty parameter list; pass cell.parameters() "
                "or a list of tensors created with requires_grad=True"
            )
        computed = [p.node.label() for p in self.params if not p.is_leaf]
        if computed:
            raise TrainingError(
                f"{type(self).__name__}: parameter(s) {', '.join(computed)} are results of ops "
                "(not leaves); an optimizer updates leaves such as cell.parameters() or "
                "ug.tensor(w, requires_grad=True), and the next forward pass would recompute "
                "a result anyway"
            )
        # a frozen parameter (requires_grad_(False)) is kept, as in PyTorch: it gets no
        # gradient, so a step leaves it alone until it is unfrozen; but a list of nothing else
        # is a mistake (constants, say: ug.tensor(w) without requires_grad=True)
        if not any(p.requires_grad for p in self.params):
            names = ", ".join(p.node.label() for p in self.params[:6])
            raise TrainingError(
                f"{type(self).__name__}: none of its parameters ({names}) requires grad, so "
                "no step would change anything; create them with requires_grad=True (or "
                "unfreeze them: p.requires_grad_(True))"
            )
        self.state: dict[int, dict] = {}
        self.defaults: dict = getattr(self, "defaults", {})

    def zero_grad(self) -> None:
        """Reset every parameter's ``.grad`` to ``None`` (gradients otherwise accumulate)."""
        for p in self.params:
            p._grad = None  # (what the .grad setter does for None, without the property)

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _grads(self):
        """(param, gradient, state) for each parameter that has a gradient."""
        for p in self.params:
            if p.grad is None:
                continue
            g = np.asarray(p.grad)
            if g.shape != p.data.shape:
                raise GradientError(
                    f"{type(self).__name__}: {p.node.label()} has shape {p.data.shape} but "
                    f"its .grad has shape {g.shape}; call zero_grad() before backward()"
                )
            yield p, g, self.state.setdefault(id(p), {})

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({len(self.params)} params, {hyper})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight
    decay; the update equations of ``torch.optim.SGD``.

    Parameters
    ----------
    params : Tensor, iterable of Tensor or of (name, Tensor) pairs, or dict name -> Tensor
    lr : float
        Learning rate.
    momentum : float
        Momentum factor (0 for plain SGD).
    weight_decay : float
        L2 penalty: ``weight_decay * p`` is added to the gradient.
    nesterov : bool
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    dampening : float
        Dampening of the momentum buffer's update.

    Raises
    ------
    TrainingError
        A hyperparameter that is not a real number (``lr=None``, a string, a bool), is NaN
        or infinite, or is out of range (negative ``lr``, ``momentum`` or ``weight_decay``);
        ``nesterov`` that is not a bool; parameters that are not leaf tensors requiring grad.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> w = ug.tensor([1.0, -2.0], requires_grad=True)
    >>> opt = ug.optim.SGD([w], lr=0.1)
    >>> (w * w).sum().backward()
    >>> opt.step()
    >>> w.data
    array([ 0.8, -1.6])
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, dampening: float = 0.0):
        who = "SGD"
        lr = _number(who, "lr", lr, "the learning rate must be a finite number >= 0, e.g. 0.01")
        momentum = _number(who, "momentum", momentum, "momentum must be a finite number >= 0")
        weight_decay = _number(who, "weight_decay", weight_decay,
                               "weight_decay must be a finite number >= 0")
        dampening = _number(who, "dampening", dampening, "dampening must be a finite number",
                            low=-math.inf)
        nesterov = _flag(who, "nesterov", nesterov)
        if nesterov and (momentum <= 0.0 or dampening != 0.0):
            raise TrainingError(
                f"SGD: nesterov=True needs momentum > 0 and dampening = 0, got momentum="
                f"{momentum} and dampening={dampening}; set momentum=0.9 for example"
            )
        super().__init__(params)
        self.defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                             nesterov=nesterov, dampening=dampening)

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        h = self.defaults
        lr, mu, wd, damp = h["lr"], h["momentum"], h["weight_decay"], h["dampening"]
        for p, g, st in self._grads():
            if wd != 0.0:
                g = g + wd * p.data
            if mu != 0.0:
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = np.array(g, dtype=p.data.dtype, copy=True)
                else:
                    buf *= mu
                    buf += (1.0 - damp) * g
                g = g + mu * buf if h["nesterov"] else buf
            with _editing(p, "an SGD step") as data:  # in place; recorded for backward()
                data -= lr * g


class Adam(Optimizer):
    """Adam with bias correction and L2 weight decay; the update equations of
    ``torch.optim.Adam`` (``amsgrad=False``).

    Parameters
    ----------
    params : Tensor, iterable of Tensor or of (name, Tensor) pairs, or dict name -> Tensor
    lr : float
        Learning rate.
    betas : (float, float)
        Decay rates of the first and second moment estimates.
    eps : float
        Added to the denominator for numerical stability.
    weight_decay : float
        L2 penalty added to the gradient (not decoupled as in AdamW).

    Raises
    ------
    TrainingError
        A hyperparameter that is not a real number, is NaN or infinite, or is out of range
        (``lr``, ``eps``, ``weight_decay`` >= 0; each beta in [0, 1)); ``betas`` that is not
        a pair; parameters that are not leaf tensors requiring grad.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> w = ug.tensor([1.0, -2.0], requires_grad=True)
    >>> opt = ug.optim.Adam([w], lr=0.1)
    >>> (w * w).sum().backward()
    >>> opt.step()  # the first Adam step moves each weight by about lr
    >>> w.data.round(6)
    array([ 0.9, -1.9])
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        who = "Adam"
        lr = _number(who, "lr", lr, "the learning rate must be a finite number >= 0, e.g. 1e-3")
        eps = _number(who, "eps", eps, "eps must be a finite number >= 0, e.g. 1e-8")
        if isinstance(betas, (str, bytes, Mapping)) or not hasattr(betas, "__len__") \
                or len(betas) != 2:
            raise TrainingError(
                f"Adam: betas must be a pair of numbers such as (0.9, 0.999), got {betas!r}"
            )
        b1, b2 = (_number(who, f"betas[{i}]", b, "each beta must lie in [0, 1)", high=1.0)
                  for i, b in enumerate(betas))
        weight_decay = _number(who, "weight_decay", weight_decay,
                               "weight_decay must be a finite number >= 0")
        super().__init__(params)
        self.defaults = dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay)

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        h = self.defaults
        lr, (b1, b2), eps, wd = h["lr"], h["betas"], h["eps"], h["weight_decay"]
        for p, g, st in self._grads():
            if wd != 0.0:
                g = g + wd * p.data
            if not st:
                st["step"] = 0
                st["exp_avg"] = np.zeros_like(p.data)
                st["exp_avg_sq"] = np.zeros_like(p.data)
            st["step"] += 1
            t = st["step"]
            m, v = st["exp_avg"], st["exp_avg_sq"]
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * g * g
            step_size = lr / (1.0 - b1 ** t)
            denom = np.sqrt(v) / math.sqrt(1.0 - b2 ** t) + eps
            with _editing(p, "an Adam step") as data:  # in place; recorded for backward()
                data -= step_size * (m / denom)


# -- gradient clipping ------------------------------------------------------------------------

def clip_grad_value(params, clip_value: float) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]``, in place
    (``torch.nn.utils.clip_grad_value_``).

    Parameters
    ----------
    params : Tensor, iterable of Tensor or of (name, Tensor) pairs, or dict name -> Tensor
        Tensors whose ``.grad`` to clip; those without a gradient are skipped.
    clip_value : float
        A positive bound (``inf``: no clipping).

    Raises
    ------
    TrainingError
        ``clip_value`` not a real number, NaN, or not positive.

    Notes
    -----
    A gradient array that cannot be written (the read-only ``.grad`` view of a non-leaf
    tensor) is replaced by a clipped copy rather than edited in place.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> w = ug.tensor([1.0, -3.0], requires_grad=True)
    >>> (w * w).sum().backward()
    >>> ug.clip_grad_value([w], 1.5)
    >>> w.grad
    array([ 1.5, -1.5])
    """
    clip_value = _number("clip_grad_value", "clip_value", clip_value,
                         "pass a positive bound such as 1.0", low_ok=False, infinite_ok=True)
    for p in _param_list(params, "clip_grad_value"):
        g = p.grad
        if g is None:
            continue
        if _writable(g):
            np.clip(g, -clip_value, clip_value, out=g)
        else:
            p.grad = _own(np.clip(np.asarray(g), -clip_value, clip_value), p)


def clip_grad_norm(params, max_norm: float, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> float:
    """Rescale the gradients so that their global norm is at most ``max_norm``, in place
    (``torch.nn.utils.clip_grad_norm_``).

    The global norm is the ``norm_type``-norm of all gradient elements taken together. Every
    gradient is multiplied by ``min(1, max_norm / (total + 1e-6))``.

    Parameters
    ----------
    params : Tensor, iterable of Tensor or of (name, Tensor) pairs, or dict name -> Tensor
        Tensors whose ``.grad`` to rescale; those without a gradient are skipped.
    max_norm : float
        The largest allowed norm, ``>= 0`` (``inf``: measure only, never scale).
    norm_type : float or "inf"
        The norm's order: a positive number, or ``float("inf")`` (also written ``"inf"``, as
        PyTorch accepts) for the largest magnitude. For gradients taken as one long vector
        the Frobenius norm is the 2-norm: pass 2.0 for it.
    error_if_nonfinite : bool
        Raise :class:`~unrollgraph.errors.GradientError` when the total norm is NaN or
        infinite (otherwise the gradients are scaled by a NaN factor, as in PyTorch).

    Returns
    -------
    float
        The total norm **before** clipping (0.0 when no parameter has a gradient).

    Raises
    ------
    TrainingError
        ``max_norm`` not a real number >= 0 (or NaN), ``norm_type`` neither a positive number
        nor ``"inf"``, ``error_if_nonfinite`` not a bool.
    GradientError
        With ``error_if_nonfinite=True``, when the total norm is NaN or infinite.

    Notes
    -----
    A gradient array that cannot be written (the read-only ``.grad`` view of a non-leaf
    tensor) is replaced by a scaled copy rather than edited in place.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> w = ug.tensor([3.0, 4.0], requires_grad=True)
    >>> w.backward(gradient=[3.0, 4.0])
    >>> ug.clip_grad_norm([w], max_norm=1.0)
    5.0
    >>> w.grad.round(6)
    array([0.6, 0.8])
    """
    who = "clip_grad_norm"
    max_norm = _number(who, "max_norm", max_norm, "max_norm must be a number >= 0, e.g. 1.0",
                       infinite_ok=True)
    hint = "use a positive order such as 2.0, 1.0 or float('inf') (or 'inf')"
    if isinstance(norm_type, str) and norm_type.strip().lower() in ("inf", "+inf", "infinity"):
        norm_type = math.inf
    elif isinstance(norm_type, str):
        fro = norm_type.strip().lower() == "fro"
        raise TrainingError(
            f"{who}: norm_type {norm_type!r} is not supported; {hint}"
            + (". For gradients taken as one vector, the Frobenius norm is norm_type=2.0"
               if fro else "")
        )
    norm_type = _number(who, "norm_type", norm_type, hint, low_ok=False, infinite_ok=True)
    error_if_nonfinite = _flag(who, "error_if_nonfinite", error_if_nonfinite)
    ps, grads = _grads_of(params, who)
    if not grads:
        return 0.0
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)
    else:
        # two stages, as PyTorch: the norm of each gradient, then the norm of those norms
        per = np.array([_pnorm(g, norm_type) for g in grads])
        total = _pnorm(per, norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise GradientError(
            f"clip_grad_norm: the total gradient norm is {total}; look for NaN or Inf with "
            "ug.detect_anomaly(), or pass error_if_nonfinite=False"
        )
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also scales by NaN when total is NaN, like PyTorch
        if math.isfinite(total):
            _scale(ps, grads, coef)
        else:  # an infinite norm scales by 0: an infinite element becomes NaN, as in PyTorch
            with np.errstate(invalid="ignore"):
                _scale(ps, grads, coef)
    return total


def _pnorm(x, p: float) -> float:
    """The ``p``-norm of all of ``x``'s elements, in float64, scaled by the largest magnitude
    so that no power overflows or underflows (gradients of 1e200 have a norm, not ``inf``);
    NaN if an element is NaN, ``inf`` if one is infinite."""
    a = np.abs(np.ravel(x)).astype(np.float64, copy=False)
    m = float(a.max()) if a.size else 0.0
    if m == 0.0 or not math.isfinite(m):
        return m
    return m * float(np.sum((a / m) ** p) ** (1.0 / p))


def _grads_of(params, who: str) -> tuple:
    """The parameters that have a gradient, and those gradients as arrays."""
    ps = [p for p in _param_list(params, who) if p.grad is not None]
    return ps, [np.asarray(p.grad) for p in ps]


def _scale(ps, grads, coef: float) -> None:
    """Multiply each gradient by ``coef``: in place where it is writable, else a new array."""
    for p, g in zip(ps, grads):
        if _writable(p.grad):
            g *= coef
        else:
            p.grad = _own(g * coef, p)


def _writable(g) -> bool:
    """True for a gradient that can be scaled or clipped in place: a writable float array."""
    return type(g) is np.ndarray and g.flags.writeable and g.dtype.kind == "f"


def _own(g: np.ndarray, p: Tensor) -> np.ndarray:
    """A new gradient array for ``p``: its dtype, writable, owned by nobody else."""
    return np.array(g, dtype=p.data.dtype if p.data.dtype.kind == "f" else np.float64)


def normalize_grad_norm(params, norm: float = 1.0, eps: float = 1e-12,
                        error_if_nonfinite: bool = True) -> float:
    """Rescale the gradients so that their global 2-norm is exactly ``norm``, in place
    (gradient normalisation).

    Clipping (:func:`clip_grad_norm`) only shrinks a gradient that is too long; normalisation
    rescales every gradient, short or long, to the same length, so each step moves the
    parameters by a step size set by the learning rate alone (the direction comes from the
    gradient, the length does not). Call it after ``backward()`` and before ``step()``.

    Parameters
    ----------
    params : Tensor, iterable of Tensor or of (name, Tensor) pairs, or dict name -> Tensor
        Tensors whose ``.grad`` to rescale; those without a gradient are skipped.
    norm : float
        The global norm after rescaling, a finite number ``> 0``.
    eps : float
        A gradient whose total norm is at most ``eps`` is left unchanged (it has no
        direction to keep), ``>= 0``.
    error_if_nonfinite : bool
        Raise :class:`~unrollgraph.errors.GradientError` when the total norm is NaN or
        infinite (the default: a NaN gradient rescaled is still NaN).

    Returns
    -------
    float
        The total 2-norm **before** rescaling (0.0 when no parameter has a gradient).

    Raises
    ------
    TrainingError
        ``norm`` not a finite number > 0, ``eps`` not a number >= 0.
    GradientError
        With ``error_if_nonfinite=True``, when the total norm is NaN or infinite.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> w = ug.tensor([0.3, 0.4], requires_grad=True)
    >>> w.backward(gradient=[0.03, 0.04])
    >>> ug.optim.normalize_grad_norm([w], norm=1.0)
    0.05
    >>> w.grad.round(6)
    array([0.6, 0.8])
    """
    who = "normalize_grad_norm"
    norm = _number(who, "norm", norm, "norm must be a finite number > 0, e.g. 1.0",
                   low_ok=False)
    eps = _number(who, "eps", eps, "eps must be a number >= 0, e.g. 1e-12")
    error_if_nonfinite = _flag(who, "error_if_nonfinite", error_if_nonfinite)
    ps, grads = _grads_of(params, who)
    if not grads:
        return 0.0
    total = _pnorm(np.array([_pnorm(g, 2.0) for g in grads]), 2.0)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise GradientError(
                f"{who}: the total gradient norm is {total}; look for NaN or Inf with "
                "ug.detect_anomaly(), or pass error_if_nonfinite=False"
            )
        return total
    if total <= eps:
        return total
    _scale(ps, grads, norm / total)
    return total

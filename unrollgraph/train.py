"""Training helpers: a readout layer, a sequence model (unrolled net + readout), a mini-batch
loop with a progress bar, evaluation without a graph, and streaming truncated BPTT.

Two forms of truncated backpropagation through time exist in unrollgraph:

* **in the graph**: ``ug.unroll(cell, T, truncate=k)`` (Theano's ``truncate_gradient``). One
  forward over all T steps; gradient flows only through the nodes of the last k steps.
* **streaming**: :func:`tbptt` (Williams and Peng's TBPTT(k1, k2)) over a sequence of any
  length: every k1 steps, backpropagate through the last k2 steps and update the weights;
  the state is carried on with its gradient cut.

See ``docs/training.md`` for the formulas side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .calls import check_arity
from .cell import Cell, named
from .errors import DTypeError, GradientError, ShapeError
from .functional import mse_loss
from .optim import TrainingError, _number, clip_grad_norm
from .tensor import Tensor, _from_torch, as_real_array, no_grad, tensor
from .unroll import Unrolled, unroll

__all__ = ["Linear", "SequenceModel", "History", "fit", "evaluate", "tbptt"]


class Linear:
    """An affine readout ``y = x @ weight.T + bias`` with PyTorch's parameter names, shapes
    and initialisation U(-1/sqrt(in), 1/sqrt(in)). Apply it to an unrolled net's outputs.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    seed : int, optional
    dtype : np.float64 (default) or np.float32
        The weights' float type. The input may be narrower (float32 into a float64 layer is
        widened) but not wider: a float64 input to a float32 layer raises
        :class:`~unrollgraph.DTypeError`, since the result would silently be float64.

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> head = ug.train.Linear(3, 2, seed=0)
    >>> head(np.ones((5, 4, 3))).shape
    (5, 4, 2)
    >>> sorted(head.parameters())
    ['bias', 'weight']
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, seed=None,
                 dtype=np.float64):
        for what, v in (("in_features", in_features), ("out_features", out_features)):
            _positive_int("Linear", what, v)
        try:
            ok = np.dtype(dtype).type in (np.float32, np.float64)
        except TypeError:
            ok = False
        if not ok:  # (integer weights would be the initial values truncated: all zeros)
            raise DTypeError(f"Linear: dtype must be np.float32 or np.float64, got {dtype!r}")
        rng = np.random.default_rng(seed)
        k = 1.0 / math.sqrt(in_features)
        self.weight = tensor(rng.uniform(-k, k, (out_features, in_features)).astype(dtype),
                             requires_grad=True, name="weight")
        self.bias = (tensor(rng.uniform(-k, k, out_features).astype(dtype), requires_grad=True,
                            name="bias") if bias else None)

    def __setattr__(self, item, value):
        """``head.weight = new`` after construction would leave the parameter that the
        optimizers and ``head.parameters()`` hold unchanged, so a training step written that
        way would silently do nothing: refused with a :class:`TrainingError` that gives the
        ways to change the parameter itself. Binding the parameter itself (what
        ``head.weight -= g`` under ``ug.no_grad()`` hands back) is accepted."""
        old = self.__dict__.get(item) if item in ("weight", "bias") else None
        if old is not None and value is not old:
            what = (f"an array of shape {value.shape}" if isinstance(value, np.ndarray)
                    else type(value).__name__)
            raise TrainingError(
                f"Linear: head.{item} = {what}: head.{item} is the layer's parameter, and "
                "rebinding the attribute would leave the parameter that the optimizers and "
                "head.parameters() read unchanged (a training step written so would silently "
                f"do nothing). Change the parameter's value instead: head.{item}.data = new "
                f"(same shape), with head.{item}.edit() as a: a -= lr * g, with "
                f"ug.no_grad(): head.{item} -= lr * head.{item}.grad, or an optimizer "
                "(ug.optim.SGD(head.parameters(), lr=...))"
            )
        object.__setattr__(self, item, value)

    def __call__(self, x):
        dtype = self.weight.dtype
        if not isinstance(x, Tensor):  # numbers, lists and integers take the weight's type
            x = _from_torch(x, "Linear: the input")  # (its own dtype, checked below)
            x = tensor(x, dtype=x.dtype if isinstance(x, np.ndarray) and x.dtype.kind == "f"
                       else dtype)
        features = self.weight.shape[1]
        if x.ndim == 0 or x.shape[-1] != features:
            raise ShapeError(
                f"Linear: the input {x.node.label()} has shape {x.shape}, whose last axis "
                f"should be the layer's {features} in_features (shapes (..., {features}))"
            )
        if np.promote_types(x.dtype, dtype) != dtype:
            raise DTypeError(
                f"Linear: the input is {x.dtype.name} but the layer computes in {dtype.name} "
                f"(its weight is {dtype.name}): the result would silently be "
                f"{np.promote_types(x.dtype, dtype).name}. Pass x.astype(np.{dtype.name}), "
                f"or build the layer with dtype=np.{x.dtype.name}"
            )
        y = x @ self.weight.T
        return y if self.bias is None else y + self.bias

    def parameters(self) -> dict:
        """Parameters by name (``weight``, ``bias``)."""
        out = {"weight": self.weight}
        if self.bias is not None:
            out["bias"] = self.bias
        return out

    def named_parameters(self, prefix: str = ""):
        """The parameters as ``(name, tensor)`` pairs, as ``torch.nn.Linear``'s
        ``named_parameters()``: ``weight``, then ``bias`` (if any).

        Parameters
        ----------
        prefix : str, optional
            Put before every name with a dot.

        Yields
        ------
        tuple of (str, Tensor)

        Examples
        --------
        >>> import unrollgraph as ug
        >>> head = ug.train.Linear(4, 2, seed=0)
        >>> [(name, p.shape) for name, p in head.named_parameters()]
        [('weight', (2, 4)), ('bias', (2,))]
        """
        return named(self.parameters(), prefix, "Linear")

    def zero_grad(self) -> None:
        for p in self.parameters().values():
            p.grad = None


class SequenceModel:
    """An unrolled net followed by an optional readout: ``model(xs)`` returns
    ``readout(outputs)`` (T, B, out), or ``readout(outputs[-1])`` (B, out) with ``last=True``.

    Parameters
    ----------
    net : Unrolled
        From ``ug.unroll(cell, steps=T)``.
    readout : callable with ``parameters()``, optional
        E.g. :class:`Linear`; identity when omitted.
    last : bool
        Read out only the last step (sequence classification or regression).

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> cell = ug.nn.RNNCell(2, 4, seed=0)
    >>> model = ug.train.SequenceModel(ug.unroll(cell, 5), ug.train.Linear(4, 1, seed=0),
    ...                                last=True)
    >>> model(np.zeros((5, 3, 2))).shape
    (3, 1)
    >>> sorted(model.parameters())[:2]
    ['cell.bias_hh', 'cell.bias_ih']
    """

    def __init__(self, net: Unrolled, readout=None, last: bool = False):
        if not isinstance(net, Unrolled):
            raise TrainingError(
                f"SequenceModel needs an unrolled net from ug.unroll(cell, steps=T), got "
                f"{type(net).__name__}"
            )
        if not isinstance(last, (bool, np.bool_)):
            raise TrainingError(
                f"SequenceModel: last must be True (the readout sees the last step's output) "
                f"or False (every step's), got {last!r}"
            )
        if readout is not None and not callable(readout):
            raise TrainingError(
                f"SequenceModel: readout must be callable (such as ug.train.Linear(4, 1)) or "
                f"None, got {type(readout).__name__}"
            )
        if readout is not None:
            check_arity(readout, 1, TrainingError, "SequenceModel", "readout",
                        "readout(outputs[-1])" if last else "readout(outputs)",
                        "give it one parameter, the outputs (lambda y: ...)")
        self.net, self.readout, self.last = net, readout, bool(last)

    def __call__(self, xs, state=None):
        outputs, _ = self.net(xs, state=state)
        if isinstance(outputs, dict):
            raise TrainingError(
                f"SequenceModel: cell {self.net.cell.name!r} has several outputs "
                f"{list(outputs)}; write the model as a function of net(xs) instead"
            )
        if self.last:
            outputs = outputs[-1]
        return outputs if self.readout is None else self.readout(outputs)

    def parameters(self) -> dict:
        """Every parameter by name: ``cell.<name>`` then ``readout.<name>``."""
        out = {f"cell.{k}": v for k, v in self.net.cell.parameters().items()}
        if self.readout is not None and hasattr(self.readout, "parameters"):
            out.update({f"readout.{k}": v for k, v in self.readout.parameters().items()})
        return out

    def named_parameters(self, prefix: str = ""):
        """Every parameter as a ``(name, tensor)`` pair, as PyTorch's ``named_parameters()``
        of a module holding the net as ``cell`` and the readout as ``readout``: the cell's
        (``cell.weight_ih``...) in its order, then the readout's (``readout.weight``...).

        Parameters
        ----------
        prefix : str, optional
            Put before every name with a dot.

        Yields
        ------
        tuple of (str, Tensor)

        Examples
        --------
        >>> import unrollgraph as ug
        >>> model = ug.train.SequenceModel(ug.unroll(ug.nn.RNNCell(2, 3, seed=0), 4),
        ...                                ug.train.Linear(3, 1, seed=0))
        >>> [name for name, _ in model.named_parameters()]  # doctest: +NORMALIZE_WHITESPACE
        ['cell.weight_ih', 'cell.weight_hh', 'cell.bias_ih', 'cell.bias_hh',
         'readout.weight', 'readout.bias']
        """
        return named(self.parameters(), prefix, "SequenceModel")

    def zero_grad(self) -> None:
        for p in self.parameters().values():
            p.grad = None


# -- the training loop ------------------------------------------------------------------------

@dataclass
class History:
    """Losses recorded by :func:`fit`: one per batch, and the mean per epoch."""

    batch_loss: list = field(default_factory=list)
    epoch_loss: list = field(default_factory=list)


def _progress(mode, total, desc: str, who: str, unit: str, file=None):
    """A progress bar from ``tqdm.auto`` (a widget in Jupyter, a text line in a terminal), or
    ``None`` for ``progress=False``.

    ``"auto"`` draws in a notebook, and in a terminal only when the output is one, and only
    once the run has lasted half a second; ``True`` always draws; ``False`` never."""
    if mode is False:
        return None
    if mode is not True and mode != "auto":
        raise TrainingError(
            f"{who}: progress must be True, False or 'auto', got {type(mode).__name__} {mode!r}"
        )
    from tqdm.auto import tqdm

    auto = mode == "auto"
    return tqdm(total=total, desc=desc, unit=unit, file=file, disable=None if auto else False,
                delay=0.5 if auto else 0.0, dynamic_ncols=True)


def _positive_int(who: str, what: str, v) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
        raise TrainingError(f"{who}: {what} must be a positive int, got {v!r}")
    return int(v)


def _clip(who: str, clip):
    if clip is None:
        return None
    return _number(who, "clip", clip, "pass a positive max norm such as 1.0, or None",
                   low_ok=False, infinite_ok=True)


# PyTorch's losses (a module's class name or a function's name) -> unrollgraph's function
_TORCH_LOSSES = {
    "MSELoss": "mse_loss", "mse_loss": "mse_loss",
    "CrossEntropyLoss": "cross_entropy", "cross_entropy": "cross_entropy",
    "BCEWithLogitsLoss": "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits",
}


def _torch_loss(who: str, loss_fn) -> None:
    """Refuse a PyTorch loss (an ``nn.Module`` such as ``torch.nn.MSELoss()``, or a function
    of ``torch``): it computes on torch tensors, and would fail deep inside torch on the
    first batch. The message names it and unrollgraph's loss to pass instead."""
    module = next((m for m in (getattr(c, "__module__", "") or "" for c in
                               type(loss_fn).__mro__)
                   if m == "torch" or m.startswith("torch.")), "")  # an nn.Module's (subclass)
    if not module:
        module = getattr(loss_fn, "__module__", "") or ""  # a function of torch
        if not (module == "torch" or module.startswith("torch.")):
            return
        name = getattr(loss_fn, "__name__", repr(loss_fn))
        shown = f"PyTorch's {module}.{name}"
    else:
        name = type(loss_fn).__name__
        own = type(loss_fn).__module__ or ""
        shown = (f"PyTorch's torch.nn.{name}()" if own.startswith("torch.nn") else
                 f"PyTorch's {own}.{name}" if own.startswith("torch") else
                 f"{name}(), a PyTorch module,")
    ours = _TORCH_LOSSES.get(name)
    raise TrainingError(
        f"{who}: loss_fn is {shown if shown.endswith(',') else shown + ','} which computes on "
        "torch tensors, not on unrollgraph's; pass "
        + (f"ug.{ours}, the same loss (loss_fn=ug.{ours})" if ours else
           "one of unrollgraph's losses (ug.mse_loss, ug.cross_entropy, "
           "ug.binary_cross_entropy_with_logits) or a function of ug tensors "
           "(lambda pred, y: ...)"))


def _loss_fn(who: str, loss_fn):
    _torch_loss(who, loss_fn)
    if not callable(loss_fn):
        raise TrainingError(
            f"{who}: loss_fn must be callable (prediction, targets) -> scalar Tensor, such as "
            f"ug.mse_loss; got {type(loss_fn).__name__}"
        )
    check_arity(loss_fn, 2, TrainingError, who, "loss_fn", "loss_fn(prediction, targets)",
                "give it two parameters, as ug.mse_loss has (lambda pred, y: ...)")
    return loss_fn


def _readout_arg(who: str, readout):
    """Refuse, by name, a readout that is not a function of one argument (or None)."""
    if readout is None:
        return None
    if not callable(readout):
        raise TrainingError(
            f"{who}: readout must be callable (outputs -> prediction), such as "
            f"ug.train.Linear(4, 1), or None; got {type(readout).__name__} {_short(readout)}"
        )
    check_arity(readout, 1, TrainingError, who, "readout", "readout(outputs)",
                "give it one parameter, the outputs (lambda y: ...), as ug.train.Linear takes")
    return readout


def _batches_arg(who: str, batches, functions: bool = True):
    """Refuse, by name, batches that are neither an iterable of pairs nor a function."""
    if callable(batches) and functions:
        check_arity(batches, 1, TrainingError, who, "batches", "batches(epoch) each epoch",
                    "give it one parameter, the epoch number (lambda epoch: ...), or pass "
                    "the list of (inputs, targets) pairs itself")
        return batches
    if batches is None or isinstance(batches, (str, bytes, Mapping)) or not hasattr(
            batches, "__iter__"):
        raise TrainingError(
            f"{who}: batches must be a list (or other iterable) of (inputs, targets) pairs"
            + (", or a function epoch -> such an iterable" if functions else "")
            + f"; got {type(batches).__name__}"
            + (" (a dict: pass list(zip(xs, ys)) or [(xs, ys)])"
               if isinstance(batches, Mapping) else "")
        )
    return batches


def _optimizer_arg(who: str, optimizer):
    if not (hasattr(optimizer, "step") and hasattr(optimizer, "zero_grad")
            and hasattr(optimizer, "params")):
        raise TrainingError(
            f"{who}: optimizer must be an optimizer such as ug.optim.SGD(params, lr=0.1) or "
            f"ug.optim.Adam(params), got {type(optimizer).__name__} {_short(optimizer)}"
        )
    return optimizer


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _sequence_arg(who: str, what: str, xs) -> None:
    """``xs`` must be an array (T, B, ...), a Tensor, or a dict name -> such."""
    items = xs.items() if isinstance(xs, Mapping) else [(None, xs)]
    if isinstance(xs, Mapping) and not xs:
        raise TrainingError(f"{who}: {what} is an empty dict; give one array (T, B, ...) per "
                            "input name")
    for k, v in items:
        name = what if k is None else f"{what}[{k!r}]"
        if v is None or isinstance(v, (str, bytes)):
            raise TrainingError(
                f"{who}: {name} must be an array of shape (T, B, ...) (or a dict name -> such "
                f"arrays), got {type(v).__name__}"
            )
        if np.ndim(v.data if isinstance(v, Tensor) else v) < 1:
            raise TrainingError(
                f"{who}: {name} must have a time axis first, shape (T, B, ...), got a scalar"
            )


def _epoch_batches(batches, epoch):
    return batches(epoch) if callable(batches) else batches


def _as_model(model, who: str = "fit"):
    if isinstance(model, Unrolled):
        return lambda xs: model(xs)[0]
    if not callable(model):
        raise TrainingError(
            f"the model must be callable (a function, a ug.train.SequenceModel or an unrolled "
            f"net), got {type(model).__name__}"
        )
    check_arity(model, 1, TrainingError, who, "model", "model(x), x a batch's inputs",
                "give it one parameter, the inputs (lambda x: ...)")
    return model


def _pair(batch, epoch, k):
    try:
        x, y = batch
    except (TypeError, ValueError):
        raise TrainingError(
            f"batch {k} of epoch {epoch + 1} is not an (inputs, targets) pair: got "
            f"{type(batch).__name__}"
        ) from None
    return x, y


def fit(model, optimizer, batches, loss_fn=mse_loss, epochs: int = 1, clip: float | None = None,
        progress="auto") -> History:
    """Train ``model`` with ``optimizer`` over mini-batches.

    For every batch ``(x, y)``: ``optimizer.zero_grad()``; ``loss = loss_fn(model(x), y)``;
    ``loss.backward()``; optionally ``clip_grad_norm(optimizer.params, clip)``;
    ``optimizer.step()``.

    Parameters
    ----------
    model : callable
        ``model(x) -> prediction`` (a :class:`SequenceModel`, any function of tensors, or an
        unrolled net, whose outputs are then the prediction).
    optimizer : unrollgraph.optim.Optimizer
        Holds the parameters to train (include the readout's).
    batches : sequence of (x, y) pairs, or callable epoch -> iterable of pairs
        Use a callable to reshuffle each epoch; a one-shot iterator only serves one epoch.
    loss_fn : callable
        ``loss_fn(prediction, y) -> scalar Tensor``; :func:`unrollgraph.mse_loss` by default.
    epochs : int
    clip : float, optional
        Clip the global gradient norm to this value before each step.
    progress : bool or "auto"
        Draw a progress bar (``tqdm.auto``: a widget in Jupyter, a line on stderr in a
        terminal) with the epoch and the latest loss. ``"auto"`` draws in notebooks, and in a
        terminal when stderr is one, once the run has lasted half a second; ``True`` always,
        ``False`` never.

    Returns
    -------
    History
        ``batch_loss`` (one float per batch) and ``epoch_loss`` (mean per epoch).

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> w = ug.tensor([0.0], requires_grad=True)
    >>> data = [(np.array([1.0]), np.array([2.0]))]
    >>> hist = ug.train.fit(lambda x: w * x, ug.optim.SGD([w], lr=0.25), data, epochs=3,
    ...                     progress=False)
    >>> [round(v, 4) for v in hist.epoch_loss]
    [4.0, 1.0, 0.25]
    """
    epochs = _positive_int("fit", "epochs", epochs)
    clip = _clip("fit", clip)
    _loss_fn("fit", loss_fn)
    _optimizer_arg("fit", optimizer)
    _batches_arg("fit", batches)
    call = _as_model(model)
    first = None if callable(batches) else batches
    total = epochs * len(first) if hasattr(first, "__len__") else None
    bar = _progress(progress, total, f"epoch 1/{epochs}", "fit", "batch")
    hist = History()
    try:
        for epoch in range(epochs):
            losses = []
            source = _epoch_batches(batches, epoch)
            if bar is not None:
                bar.set_description(f"epoch {epoch + 1}/{epochs}", refresh=False)
            for k, batch in enumerate(source):
                x, y = _pair(batch, epoch, k)
                optimizer.zero_grad()
                loss = loss_fn(call(x), y)
                value = _scalar(loss, "fit")
                if not math.isfinite(value):
                    raise GradientError(
                        f"fit: the loss is {value} at epoch {epoch + 1}, batch {k}; lower the "
                        f"learning rate (now {_lr(optimizer)}) or pass clip=1.0"
                    )
                loss.backward()
                if not losses and epoch == 0:
                    _reaches_optimizer(optimizer, loss)
                if clip is not None:
                    clip_grad_norm(optimizer.params, clip)
                optimizer.step()
                losses.append(value)
                hist.batch_loss.append(value)
                if bar is not None:
                    bar.set_postfix(loss=f"{value:.4g}", refresh=False)
                    bar.update(1)
            if not losses:
                raise TrainingError(
                    f"fit: batches yielded nothing in epoch {epoch + 1}; pass a list of "
                    "(x, y) pairs or a function epoch -> iterable (an iterator is used up "
                    "after one epoch)"
                )
            hist.epoch_loss.append(float(np.mean(losses)))
    finally:
        if bar is not None:
            bar.close()
    return hist


def _reaches_optimizer(optimizer, loss) -> None:
    """Refuse a first batch whose loss sent no gradient to any of the optimizer's parameters
    (an optimizer built on another model's parameters, or on a model built again since):
    training would run every epoch and change nothing."""
    params = list(getattr(optimizer, "params", ()))
    if params and all(p.grad is None for p in params):
        names = ", ".join(sorted({p.name or "unnamed" for p in params})[:6])
        raise TrainingError(
            f"fit: the first batch's loss ({loss.item():.6g}) sends no gradient to any of the "
            f"{len(params)} parameters the optimizer updates ({names}), so training would "
            "change nothing; the optimizer was probably built on another model's parameters "
            "(or on a model built again since): build it on this model's, e.g. "
            "ug.optim.Adam(model.parameters())")


def _lr(optimizer):
    return getattr(optimizer, "defaults", {}).get("lr")


def _scalar(loss, who) -> float:
    if not isinstance(loss, Tensor) or loss.data.size != 1:
        shape = getattr(loss, "shape", None)
        raise TrainingError(
            f"{who}: loss_fn must return a one-element Tensor, got {type(loss).__name__}"
            + (f" of shape {shape}" if shape is not None else "")
            + "; reduce it, e.g. with .mean()"
        )
    return float(loss.data.reshape(()))


def evaluate(model, batches, loss_fn=mse_loss) -> float:
    """Mean of ``loss_fn(model(x), y)`` over batches, computed under :func:`ug.no_grad`
    (no graph is recorded and no gradient changes).

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> w = ug.tensor([3.0], requires_grad=True)
    >>> ug.train.evaluate(lambda x: w * x, [(np.array([1.0]), np.array([2.0]))])
    1.0
    """
    call = _as_model(model, "evaluate")
    _loss_fn("evaluate", loss_fn)
    _batches_arg("evaluate", batches, functions=False)
    losses = []
    with no_grad():
        for k, batch in enumerate(batches):
            x, y = _pair(batch, 0, k)
            losses.append(_scalar(loss_fn(call(x), y), "evaluate"))
    if not losses:
        raise TrainingError("evaluate: batches yielded nothing; pass a list of (x, y) pairs")
    return float(np.mean(losses))


# -- streaming truncated BPTT -----------------------------------------------------------------

def _steps_of(xs) -> int:
    first = next(iter(xs.values())) if isinstance(xs, Mapping) else xs
    return int(np.shape(first.data if isinstance(first, Tensor) else first)[0])


def _window(xs, a, b):
    if isinstance(xs, Mapping):
        return {k: _window(v, a, b) for k, v in xs.items()}
    arr = xs.data if isinstance(xs, Tensor) else np.asarray(xs)
    return arr[a:b]


def _values(states) -> tuple:
    return tuple(np.array(s, copy=True) for s in states)


def tbptt(cell, xs, targets, loss_fn, k1: int, k2: int, optimizer=None, readout=None,
          state=None, clip: float | None = None, cache: dict | None = None,
          progress="auto"):
    """Streaming truncated BPTT, TBPTT(k1, k2) of Williams and Peng, over one long sequence.

    Windows end at steps ``e = k1, 2*k1, ...`` (and at T if k1 does not divide T). For the
    window ending at ``e`` it computes, with the current weights,

    * the forward pass of the ``L = min(k2, e)`` steps ``s = e - L, ..., e - 1``, starting from
      the state after step ``s - 1`` taken as a constant (detached; ``state`` or the cell's
      initial state when ``s = 0``), stored from the window that last computed it;
    * ``loss_e = loss_fn(readout(y[e-n:e]), targets[e-n:e])`` over the last ``n = min(k1, e -
      previous end)`` outputs only;
    * ``loss_e.backward()``: the gradient of ``loss_e`` through those L steps and no further
      (the error at step ``e - 1`` travels back ``L`` steps, the one at ``e - n`` only
      ``L - n + 1``);

    then, if ``optimizer`` is given, ``optimizer.zero_grad()`` before and (after optional
    clipping) ``optimizer.step()`` after. Without an optimizer the windows' gradients
    accumulate in ``.grad`` with fixed weights (useful to inspect or compare). ``k1 = k2 >= T``
    is one window: exactly full BPTT on ``loss_fn`` over all outputs.

    Parameters
    ----------
    cell : Cell
        A one-output cell (its output is fed to ``readout``).
    xs : array (T, B, ...) or dict name -> such
    targets : array (T, B, ...)
        ``targets[t]`` is compared with the prediction at step t.
    loss_fn : callable
        ``loss_fn(prediction (n, B, ...), targets (n, B, ...)) -> scalar Tensor``.
    k1 : int
        Steps between weight updates (and number of outputs per window's loss).
    k2 : int
        Steps the gradient travels back, ``k2 >= k1``.
    optimizer : Optimizer, optional
    readout : callable, optional
        Applied to the window's outputs, e.g. :class:`Linear`.
    state : array, Tensor or tuple, optional
        The state before step 0 (gradient cut); the cell's initial state otherwise.
    clip : float, optional
        Clip the global gradient norm before each step (only with ``optimizer``).
    cache : dict, optional
        Window length -> unrolled net. Pass the same dict to later calls to build each
        unrolled net only once (within one call, each length is built once anyway).
    progress : bool or "auto"
        A progress bar over the windows, as in :func:`fit`.

    Returns
    -------
    losses : list of float
        One loss per window.
    state : tuple of numpy arrays
        The state after step T - 1 (in the cell's state order), to continue with the next
        chunk of the stream.

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> cell = ug.nn.RNNCell(1, 4, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> xs, ys = rng.normal(size=(12, 2, 1)), rng.normal(size=(12, 2, 4))
    >>> losses, (h,) = ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=4, k2=8,
    ...                               optimizer=ug.optim.SGD(cell.parameters(), lr=0.1))
    >>> len(losses), h.shape
    (3, (2, 4))
    """
    if not isinstance(cell, Cell):
        raise TrainingError(
            f"tbptt: cell must be a ug.Cell (such as ug.nn.RNNCell(1, 4)), got "
            f"{type(cell).__name__}" + (" (an unrolled net: pass net.cell)"
                                        if isinstance(cell, Unrolled) else "")
        )
    for name, v in (("k1", k1), ("k2", k2)):
        _positive_int("tbptt", name, v)
    _loss_fn("tbptt", loss_fn)
    _sequence_arg("tbptt", "xs", xs)
    _sequence_arg("tbptt", "targets", targets)
    if optimizer is not None:
        _optimizer_arg("tbptt", optimizer)
    _readout_arg("tbptt", readout)
    if cache is not None and not isinstance(cache, dict):
        raise TrainingError(
            f"tbptt: cache must be a dict (window length -> unrolled net; start with {{}}) "
            f"or None, got {type(cache).__name__}"
        )
    clip = _clip("tbptt", clip)
    if k2 < k1:
        raise TrainingError(
            f"tbptt: k2={k2} < k1={k1}: the gradient must reach back at least over the k1 "
            f"steps whose outputs are in the loss; use k2 >= k1 (e.g. k2={k1})"
        )
    if clip is not None and optimizer is None:
        raise TrainingError("tbptt: clip needs an optimizer (clipping happens before a step)")
    T = _steps_of(xs)
    if T == 0:
        raise TrainingError(
            "tbptt: xs has 0 steps, so there is no window to train on; pass a sequence "
            "shaped (T, B, ...) with T >= 1"
        )
    if _steps_of(targets) != T:
        raise TrainingError(
            f"tbptt: xs has {T} steps but targets has {_steps_of(targets)}; give one target "
            "per step"
        )
    xs = ({k: _from_torch(v, f"tbptt(xs[{k!r}])") for k, v in xs.items()}
          if isinstance(xs, Mapping) else _from_torch(xs, "tbptt(xs)"))  # (dtypes kept)
    targets = _from_torch(targets, "tbptt(targets)")
    if not isinstance(xs, (np.ndarray, Tensor, Mapping)):  # lists: in the cell's float type
        xs = as_real_array(xs, "tbptt(xs)", dtype=cell.dtype)
    nets = {} if cache is None else cache
    names = list(cell.states)
    if state is not None:
        state = _tbptt_state(state, names, cell)
    starts = {0: state}  # step s -> state before step s (None: the cell's initial state)
    losses = []
    bar = _progress(progress, -(-T // k1), "tbptt", "tbptt", "window")
    try:
        _tbptt_windows(cell, xs, targets, loss_fn, k1, k2, optimizer, readout, clip, nets,
                       names, starts, losses, T, bar)
    finally:
        if bar is not None:
            bar.close()
    return losses, starts[T]


def _tbptt_state(state, names, cell) -> tuple:
    """The initial state as a tuple in the cell's state order: a dict by state name (every
    state), a tuple or list in that order, or one array or tensor for a one-state cell."""
    if isinstance(state, Mapping):
        missing = [k for k in names if k not in state]
        unknown = [k for k in state if k not in names]
        if missing or unknown:
            raise TrainingError(
                f"tbptt: state names {list(state)} do not match cell {cell.name!r}'s states "
                f"{names}: give every state (a partial dict does not fall back to the initial "
                "state)" + (f"; unknown: {unknown}" if unknown else "")
            )
        state = tuple(state[k] for k in names)
    elif len(names) == 1 and (not isinstance(state, (tuple, list)) or (
            isinstance(state, list) and state
            and all(isinstance(v, (list, int, float, np.number)) for v in state))):
        state = (state,)  # the one state, as an array or nested lists of numbers
    if len(state) != len(names):
        raise TrainingError(
            f"tbptt: state has {len(state)} entries but cell {cell.name!r} has states {names}; "
            "give one per state (or a dict by name)"
        )
    state = tuple(_from_torch(s, f"tbptt(state=...) for state {k!r}")  # (dtypes kept)
                  for s, k in zip(state, names))
    return tuple(as_real_array(  # a float array keeps its type (the net checks it), other
        s, f"tbptt(state=...) for state {k!r}",  # data takes the cell's
        None if isinstance(s, (np.ndarray, Tensor)) and np.asarray(s).dtype.kind == "f"
        else cell.dtype) for s, k in zip(state, names))


def _tbptt_windows(cell, xs, targets, loss_fn, k1, k2, optimizer, readout, clip, nets, names,
                   starts, losses, T, bar):
    prev_end = 0
    while prev_end < T:
        end = min(prev_end + k1, T)
        n = end - prev_end
        begin = max(0, end - k2)
        length = end - begin
        net = nets.get(length)
        if net is None:
            net = nets[length] = unroll(cell, steps=length)
        if optimizer is not None:
            optimizer.zero_grad()
        outputs, _ = net(_window(xs, begin, end), state=starts[begin])
        if isinstance(outputs, dict):
            raise TrainingError(
                f"tbptt: cell {cell.name!r} has several outputs {list(outputs)}; use a cell "
                "with one output"
            )
        pred = outputs[length - n:]
        if readout is not None:
            pred = readout(pred)
        loss = loss_fn(pred, _window(targets, end - n, end))
        value = _scalar(loss, "tbptt")
        if loss.requires_grad:
            loss.backward()
        if optimizer is not None:
            if clip is not None:
                clip_grad_norm(optimizer.params, clip)
            optimizer.step()
        losses.append(value)
        # store the (detached) states this window computed, for the windows to come
        run = net.last_run
        for t in range(length):
            starts[begin + t + 1] = _values(run.value(net.state_nodes[k][t]) for k in names)
        keep = T if end == T else max(0, min(end + k1, T) - k2)  # where the next one starts
        for s in [s for s in starts if s < keep]:
            del starts[s]
        prev_end = end
        if bar is not None:
            bar.set_postfix(loss=f"{value:.4g}", refresh=False)
            bar.update(1)

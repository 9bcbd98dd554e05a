"""Gradient checking against central finite differences in float64."""

from __future__ import annotations

import keyword
import math
import numbers

import numpy as np

from .calls import check_arity
from .errors import GradcheckError
from .tensor import Tensor, _editing, as_real_array, tensor

__all__ = ["gradcheck"]


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-4,
              seed: int = 0) -> bool:
    """Check the gradients of ``fn`` against central finite differences, in float64.

    ``fn(*inputs)`` must return a Tensor. A non-scalar output is reduced to a scalar with a
    fixed random projection, so every output element is checked.

    Parameters
    ----------
    fn : callable
        Builds a fresh graph from the input tensors each time it is called.
    inputs : sequence of Tensor or array_like
        The tensors to differentiate with respect to. A float64 leaf Tensor that requires grad
        (a cell's parameter, say) is checked in place: it is perturbed and restored, and its
        ``.grad`` is left as it was. Arrays and other Tensors are copied to float64 tensors that
        require grad (names are kept).
    eps : float
        Finite-difference step.
    atol, rtol : float
        An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.
    seed : int
        Seed of the random projection for non-scalar outputs.

    Returns
    -------
    True

    Raises
    ------
    GradcheckError
        With the worst element: which input (by name), the index, both numbers. Also when
        ``fn`` cannot take one argument per input (the message names ``fn`` and says how
        many it takes), when ``fn`` does not return a Tensor (the message says what it
        returned), when its result
        does not depend on an input, when there are no inputs, and for ``eps`` not a
        positive finite number or a negative tolerance.
    DTypeError
        For inputs that are not real numbers (strings, complex values...).

    Notes
    -----
    An output that does not require grad (computed under :func:`~unrollgraph.no_grad`, or
    from detached tensors) has no gradient by ``backward()``: it is checked as zero, and
    fails where finite differences find a slope. A result whose graph never reads one of the
    input tensors ``fn`` is given is refused (:class:`GradcheckError` naming the input): both
    gradients would be zero and nothing would be checked. This catches ``fn`` closing over
    the original of an input that gradcheck copied (a float32 tensor, for one).

    A net unrolled with ``truncate=k`` gives truncated BPTT, by design not the gradient
    that finite differences measure: a check of ``fn`` computing from such a net fails, and
    the message names the net and its ``truncate``, and says to check the net unrolled with
    ``truncate=None``.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.gradcheck(lambda x: ug.tanh(x) * x, [ug.tensor([0.5, -1.0], name="x")])
    True
    """
    if not callable(fn):
        raise GradcheckError(f"gradcheck: fn must be callable, got {type(fn).__name__}")
    for what, v, low_ok in (("eps", eps, False), ("atol", atol, True), ("rtol", rtol, True)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) \
                or (v < 0 if low_ok else v <= 0):
            need = "a number >= 0" if low_ok else "a positive number such as 1e-6"
            raise GradcheckError(f"gradcheck: {what} must be {need}, got {v!r}")
    if isinstance(inputs, (Tensor, np.ndarray)):
        inputs = [inputs]
    if inputs is None or isinstance(inputs, (str, bytes, dict)) or not hasattr(
            inputs, "__iter__"):
        raise GradcheckError(
            f"gradcheck: inputs must be a list of tensors or arrays (the arguments of fn), "
            f"got {type(inputs).__name__}; e.g. ug.gradcheck(fn, [x, w])"
        )
    ts = []
    copied = {}  # input index -> why it was copied (fn must compute from the copy it is given)
    for k, x in enumerate(inputs):
        if (isinstance(x, Tensor) and x.is_leaf and x.requires_grad
                and x.data.dtype == np.float64 and x.data.flags.c_contiguous):
            ts.append(x)
            continue
        if isinstance(x, Tensor):
            copied[k] = (f"a {x.dtype} tensor" if x.dtype != np.float64 else
                         "a tensor that is not a leaf requiring grad")
        name = x.name if isinstance(x, Tensor) else None
        data = x.data if isinstance(x, Tensor) else x
        ts.append(tensor(as_real_array(data, f"gradcheck: inputs[{k}]", np.float64),
                         requires_grad=True, name=name or f"input{k}"))
    if not ts:
        raise GradcheckError("gradcheck: no inputs to differentiate with respect to; pass a "
                             "list of tensors or arrays")
    names = []  # (the inputs as a lambda's parameters would name them: distinct identifiers)
    for k, t in enumerate(ts):
        names.append(t.name if t.name and t.name.isidentifier() and t.name not in names
                     and not keyword.iskeyword(t.name) else f"x{k}")
    check_arity(fn, len(ts), GradcheckError, "gradcheck", "fn",
                f"fn(*inputs), one argument per input ({', '.join(names)})",
                f"give fn one parameter per input (lambda {', '.join(names)}: ...), or pass "
                "as inputs exactly the tensors fn takes")
    saved = [t.grad for t in ts]
    try:
        for t in ts:
            t.grad = None
        return _check(fn, ts, eps, atol, rtol, seed, copied)
    finally:
        for t, g in zip(ts, saved):
            t.grad = g


def _check_reached(loss: Tensor, ts, copied) -> None:
    """Refuse a vacuous pass: an input that the result's graph never reads (fn closed over
    another tensor, or computed the result without its arguments) gets a zero gradient both
    ways, which checks nothing."""
    seen = {id(loss)}
    stack = [loss]
    while stack:
        for p in stack.pop()._parents:
            if id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    for k, t in enumerate(ts):
        if id(t) in seen:
            continue
        why = ""
        if k in copied:
            why = (f" inputs[{k}] is {copied[k]}, so gradcheck copied it to a float64 leaf "
                   "that requires grad and passed the copy to fn: fn must compute from its "
                   "arguments, not from the original tensor it closes over (for a cell's "
                   "parameters, build the cell in float64, or assign the copies' values into "
                   "the parameters inside fn).")
        raise GradcheckError(
            f"gradcheck: fn's result does not depend on inputs[{k}] ({t.node.label()}, shape "
            f"{t.shape}): its graph never reads that tensor, so both gradients are zero and "
            f"nothing is checked.{why} Pass fn only the inputs it reads, and compute the result "
            "from the tensors fn receives"
        )


def _output(fn, ts) -> Tensor:
    out = fn(*ts)
    if not isinstance(out, Tensor):
        name = getattr(fn, "__name__", type(fn).__name__)
        raise GradcheckError(
            f"gradcheck: fn ({name}) must return a ug.Tensor computed from its inputs, but it "
            f"returned an object of type {type(out).__name__}: {_short(out)}; build the "
            "result with tensor operations, and return one Tensor (combine several, e.g. with "
            "ug.concat)"
        )
    return out


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(fn, ts, eps, atol, rtol, seed, copied) -> bool:
    out = _output(fn, ts)
    rng = np.random.default_rng(seed)
    proj = None if out.size == 1 else rng.standard_normal(out.shape)

    def scalar(o):
        return o.sum() if proj is None else (o * proj).sum()

    loss = scalar(out)
    if loss.requires_grad:  # else nothing reaches the inputs: checked as zero gradients
        loss.backward()
    worst = (0.0, None)
    for t in ts:
        analytic = t.grad if t.grad is not None else np.zeros_like(t.data)
        numeric = np.zeros_like(t.data)
        # perturb in place (each number is put back, so nothing is recorded as changed)
        with _editing(t, None) as data:
            flat = data.reshape(-1)
            for i in range(flat.size):
                orig = flat[i]
                flat[i] = orig + eps
                up = scalar(_output(fn, ts)).item()
                flat[i] = orig - eps
                down = scalar(_output(fn, ts)).item()
                flat[i] = orig
                numeric.reshape(-1)[i] = (up - down) / (2 * eps)
        err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        bad = np.where(~np.isfinite(err), np.inf, err)
        if bad.size and bad.max() > worst[0]:
            idx = np.unravel_index(int(np.argmax(bad)), bad.shape)
            worst = (bad.max(), (t, idx, analytic[idx], numeric[idx]))
    if worst[1] is None:
        _check_reached(loss, ts, copied)
    if worst[1] is not None:
        t, idx, a, n = worst[1]
        where = "[" + ", ".join(str(int(i)) for i in idx) + "]" if idx else ""
        raise GradcheckError(
            f"gradcheck failed: d(output)/d({t.name}){where} is {float(a)!r} by backward() but "
            f"{float(n)!r} by central differences (eps={eps}); tolerance atol={atol}, "
            f"rtol={rtol}" + ("" if loss.requires_grad else
                              ". fn's result does not require grad, so backward() gives no "
                              "gradient: was it computed under ug.no_grad() or from "
                              "detached tensors?") + _truncation_hint(loss)
        )
    return True


def _truncated_nets(loss: Tensor) -> list:
    """The nets unrolled with ``truncate=`` whose calls ``loss`` was computed from, in the
    order an iterative walk of its graph first meets them: each call of a net is a node of
    op ``unrolled`` that holds its run."""
    nets, seen = [], {id(loss)}
    stack = [loss]
    while stack:
        t = stack.pop()
        if t.node.op == "unrolled":
            net = t.node.attrs["_run"].net
            if net.truncate is not None and all(n is not net for n in nets):
                nets.append(net)
        for p in t._parents:
            if id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    return nets


def _truncation_hint(loss: Tensor) -> str:
    """What a failed check says when the result came through a truncated net: truncated BPTT
    is not the gradient that central differences measure, by design."""
    nets = _truncated_nets(loss)
    if not nets:
        return ""
    said = "; ".join(f"the unrolled net {net.cell.name!r} has truncate={net.truncate} of "
                     f"{net.steps} steps" for net in nets)
    net = nets[0]
    last = f"its last {net.truncate} steps" if len(nets) == 1 else "the last truncate steps"
    return (
        f". fn's result comes from a truncated net ({said}): truncated BPTT sends the "
        f"gradient back through {last} only, so backward() gives by design another "
        "gradient than the full one that central differences measure. Check the net "
        f"unrolled without truncation, truncate=None (ug.unroll(cell, steps={net.steps})), "
        "and train with the truncated one"
    )

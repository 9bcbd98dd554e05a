"""Gradient checking against central finite differences in float64."""

from __future__ import annotations

import numpy as np

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
        With the worst element: which input (by name), the index, both numbers.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> ug.gradcheck(lambda x: ug.tanh(x) * x, [ug.tensor([0.5, -1.0], name="x")])
    True
    """
    if isinstance(inputs, (Tensor, np.ndarray)):
        inputs = [inputs]
    ts = []
    for k, x in enumerate(inputs):
        if (isinstance(x, Tensor) and x.is_leaf and x.requires_grad
                and x.data.dtype == np.float64 and x.data.flags.c_contiguous):
            ts.append(x)
            continue
        name = x.name if isinstance(x, Tensor) else None
        data = x.data if isinstance(x, Tensor) else x
        ts.append(tensor(as_real_array(data, f"gradcheck: inputs[{k}]", np.float64),
                         requires_grad=True, name=name or f"input{k}"))
    saved = [t.grad for t in ts]
    try:
        for t in ts:
            t.grad = None
        return _check(fn, ts, eps, atol, rtol, seed)
    finally:
        for t, g in zip(ts, saved):
            t.grad = g


def _check(fn, ts, eps, atol, rtol, seed) -> bool:
    out = fn(*ts)
    rng = np.random.default_rng(seed)
    proj = None if out.size == 1 else rng.standard_normal(out.shape)

    def scalar(o):
        return o.sum() if proj is None else (o * proj).sum()

    loss = scalar(out)
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
                up = scalar(fn(*ts)).item()
                flat[i] = orig - eps
                down = scalar(fn(*ts)).item()
                flat[i] = orig
                numeric.reshape(-1)[i] = (up - down) / (2 * eps)
        err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        bad = np.where(~np.isfinite(err), np.inf, err)
        if bad.size and bad.max() > worst[0]:
            idx = np.unravel_index(int(np.argmax(bad)), bad.shape)
            worst = (bad.max(), (t, idx, analytic[idx], numeric[idx]))
    if worst[1] is not None:
        t, idx, a, n = worst[1]
        where = "[" + ", ".join(str(int(i)) for i in idx) + "]" if idx else ""
        raise GradcheckError(
            f"gradcheck failed: d(output)/d({t.name}){where} is {float(a)!r} by backward() but "
            f"{float(n)!r} by central differences (eps={eps}); tolerance atol={atol}, "
            f"rtol={rtol}"
        )
    return True

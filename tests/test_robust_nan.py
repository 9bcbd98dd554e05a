"""NaN inputs: every op's gradient against PyTorch's, where PyTorch defines one.

A NaN in an op's input must not turn a gradient NaN where PyTorch's stays a number (``abs`` at
NaN sends 0, also when the upstream gradient is 0, where ``0 * sign(NaN)`` would be NaN;
``relu`` passes the gradient through a NaN as PyTorch does), and the reverse. Each op is run
through its own torch lowering rule (what :func:`unrollgraph.export.to_torch` uses), on the
cases the op's own tests draw (``tests/test_ops.py``), with NaN put at random places in the
differentiable inputs and an upstream gradient holding zeros.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.ops import get_op, registry
from unrollgraph.tensor import apply

torch = pytest.importorskip("torch")

from test_ops import BUILDERS, PLUMBING  # noqa: E402

# Where PyTorch's answer is not a convention to follow, but an artefact of how it computes:
# torch.amax's backward divides the upstream gradient among the elements equal to the
# maximum, and NaN equals nothing, so every element gets 0/0. unrollgraph's max gives the
# gradient to the NaN elements (split evenly), as torch.max(x, dim) does; the boundary table
# of tests/test_ops.py holds that rule.
NOT_COMPARED = {"max": "torch.amax gives NaN to every element: 0/0, not a convention"}
# comparisons have no gradient at all, in both engines
NO_GRADIENT = {"gt", "ge", "lt", "le"}

OPS = sorted(n for n in registry() if n in BUILDERS and n not in PLUMBING
             and n not in NO_GRADIENT and n not in NOT_COMPARED
             and "torch" in get_op(n).lower)


def test_the_ops_compared_cover_the_registry():
    left = set(registry()) - set(OPS) - PLUMBING - NO_GRADIENT - set(NOT_COMPARED)
    assert not {n for n in left if n in BUILDERS and "torch" in get_op(n).lower}
    assert {"relu", "abs", "clip", "maximum", "where", "tanh", "softmax"} <= set(OPS)


@pytest.mark.parametrize("name", OPS)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_gradients_with_nan_inputs_agree_with_torch(name, data):
    case = data.draw(BUILDERS[name](name), label="case")
    if not case.diff:
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    args = [np.array(a, copy=True) for a in case.args]
    hit = data.draw(st.lists(st.sampled_from(case.diff), min_size=1, unique=True), label="nan")
    for k in hit:
        mask = rng.random(np.shape(args[k])) < 0.5
        if np.size(mask) and not mask.any():
            mask.flat[0] = True
        args[k] = np.where(mask, np.nan, args[k])
    tensors = {k: ug.tensor(args[k], requires_grad=True) for k in case.diff}
    with np.errstate(all="ignore"):  # NaN in, NaN out: the forward pass is not the question
        out = apply(name, *[tensors.get(k, args[k]) for k in range(len(args))], **case.attrs)
    g = rng.choice([0.0, 0.0, 1.0, -2.5], size=out.shape)
    with np.errstate(all="ignore"):
        out.backward(gradient=g)

    leaves = [torch.tensor(a, requires_grad=k in tensors) for k, a in enumerate(args)]
    t_out = get_op(name).lower["torch"](torch, *leaves, **case.attrs)
    np.testing.assert_allclose(out.data, t_out.detach().numpy(), rtol=1e-9, atol=1e-12,
                               equal_nan=True, err_msg=f"{name}: values")
    t_grads = torch.autograd.grad(t_out, [leaves[k] for k in tensors], torch.tensor(g),
                                  allow_unused=True)
    for (k, t), tg in zip(tensors.items(), t_grads):
        want = np.zeros(np.shape(args[k])) if tg is None else tg.numpy()
        got = np.zeros(np.shape(args[k])) if t.grad is None else t.grad
        np.testing.assert_allclose(
            got, want, rtol=1e-9, atol=1e-12, equal_nan=True,
            err_msg=f"{name}{case.attrs}: gradient of input {k}, inputs {args}, upstream {g}")


def test_nan_in_relu_abs_and_clip_under_a_zero_upstream_gradient():
    """The cases the property above found: exact numbers, each PyTorch's."""
    x = np.array([np.nan, -1.0, 0.0, 2.0])
    g = np.array([0.0, 1.0, 1.0, 1.0])
    for fn, want in [(ug.abs, [0.0, -1.0, 0.0, 1.0]), (ug.relu, [0.0, 0.0, 0.0, 1.0]),
                     (lambda t: ug.clip(t, -1.0, 1.0), [0.0, 1.0, 1.0, 0.0])]:
        t = ug.tensor(x, requires_grad=True)
        fn(t).backward(gradient=g)
        np.testing.assert_array_equal(t.grad, want)
    t = ug.tensor(x, requires_grad=True)
    ug.relu(t).backward(gradient=np.ones(4))
    assert t.grad[0] == 1.0  # relu passes a NaN's gradient through, as torch.relu
    t = ug.tensor(x, requires_grad=True)
    ug.clip(t).backward(gradient=np.ones(4))  # no bound: the identity, slope 1 at NaN too
    np.testing.assert_array_equal(t.grad, np.ones(4))


def test_an_unrolled_relu_net_agrees_with_its_eager_form_on_nan_inputs():
    """The step templates write relu's VJP out inline: the registry's rule there too (a NaN
    input passes the gradient), checked against the same steps written as eager ops."""
    cell = ug.nn.RNNCell(2, 3, nonlinearity="relu", seed=0)
    xs = np.random.default_rng(0).normal(size=(4, 2, 2))
    xs[1, 0, 0] = np.nan
    with np.errstate(invalid="ignore"):
        out, _ = ug.unroll(cell, steps=4)(xs)
        out.sum().backward()
    unrolled = {k: p.grad.copy() for k, p in cell.parameters().items()}
    cell.zero_grad()
    p = cell.parameters()
    h, total = ug.tensor(np.zeros((2, 3))), None
    with np.errstate(invalid="ignore"):
        for t in range(4):
            h = ug.relu(ug.tensor(xs[t]) @ p["weight_ih"].T + p["bias_ih"]
                        + h @ p["weight_hh"].T + p["bias_hh"])
            total = h.sum() if total is None else total + h.sum()
        total.backward()
    for k, g in unrolled.items():
        assert np.isnan(g).any() or k.startswith("bias")  # the NaN reached the weights
        np.testing.assert_allclose(g, p[k].grad, rtol=1e-12, equal_nan=True, err_msg=k)

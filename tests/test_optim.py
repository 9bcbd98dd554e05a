"""Optimizers and gradient clipping against their update equations written out by hand (and
against torch.optim when torch is importable)."""

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.errors import GradientError, UnrollGraphError
from unrollgraph.optim import TrainingError

STEPS = 5


def _grad_sequence(shapes, seed=0):
    """A fixed list (per step) of gradient arrays, one per parameter."""
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=s) for s in shapes] for _ in range(STEPS)]


def _params(seed=1):
    rng = np.random.default_rng(seed)
    return [ug.tensor(rng.normal(size=(3, 2)), requires_grad=True),
            ug.tensor(rng.normal(size=(4,)), requires_grad=True)]


def _run(opt, params, grads):
    """Feed the gradient sequence to the optimizer; return the parameter values per step."""
    history = []
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.copy()
        opt.step()
        history.append([p.data.copy() for p in params])
    return history


def _sgd_by_hand(p0, grads, lr, momentum, dampening, weight_decay, nesterov):
    p = p0.copy()
    buf = None
    out = []
    for g in grads:
        d = g + weight_decay * p
        if momentum != 0:
            if buf is None:
                buf = d.copy()
            else:
                buf = momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
        out.append(p.copy())
    return out


def _adam_by_hand(p0, grads, lr, b1, b2, eps, weight_decay):
    p = p0.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    out = []
    for t, g in enumerate(grads, start=1):
        d = g + weight_decay * p
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d**2
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(p.copy())
    return out


SGD_CASES = [
    dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False),
    dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01, nesterov=False),
    dict(lr=0.02, momentum=0.8, dampening=0.0, weight_decay=0.1, nesterov=True),
]


@pytest.mark.parametrize("hp", SGD_CASES)
def test_sgd_matches_update_equations(hp):
    params = _params()
    p0 = [p.data.copy() for p in params]
    grads = _grad_sequence([p.shape for p in params])
    history = _run(ug.optim.SGD(params, **hp), params, grads)
    for i in range(len(params)):
        want = _sgd_by_hand(p0[i], [gs[i] for gs in grads], **hp)
        for t in range(STEPS):
            np.testing.assert_allclose(history[t][i], want[t], rtol=1e-12, atol=1e-14)


ADAM_CASES = [
    dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0),
    dict(lr=3e-2, b1=0.5, b2=0.9, eps=1e-3, weight_decay=0.05),
]


@pytest.mark.parametrize("hp", ADAM_CASES)
def test_adam_matches_update_equations(hp):
    params = _params()
    p0 = [p.data.copy() for p in params]
    grads = _grad_sequence([p.shape for p in params], seed=3)
    opt = ug.optim.Adam(params, lr=hp["lr"], betas=(hp["b1"], hp["b2"]), eps=hp["eps"],
                        weight_decay=hp["weight_decay"])
    history = _run(opt, params, grads)
    for i in range(len(params)):
        want = _adam_by_hand(p0[i], [gs[i] for gs in grads], **hp)
        for t in range(STEPS):
            np.testing.assert_allclose(history[t][i], want[t], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [
    lambda ps: ug.optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: ug.optim.Adam(ps, lr=0.1),
])
def test_param_without_grad_is_skipped_and_keeps_no_state(make):
    a, b = _params()
    b_before = b.data.copy()
    opt = make([a, b])
    a.grad = np.ones_like(a.data)
    opt.step()
    np.testing.assert_array_equal(b.data, b_before)
    assert id(b) not in opt.state
    # b joins later: its first update must be a first step (fresh buffers), like PyTorch's
    b.grad = np.ones_like(b.data)
    opt.step()
    alone = ug.tensor(b_before.copy(), requires_grad=True)
    solo = make([alone])
    alone.grad = np.ones_like(b_before)
    solo.step()
    np.testing.assert_allclose(b.data, alone.data, rtol=1e-14)


def test_update_in_place_reaches_the_unrolled_net():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=4)
    xs = np.random.default_rng(0).normal(size=(4, 2, 2))
    w = cell.weight_hh.data
    opt = ug.optim.SGD(cell.parameters(), lr=0.5)
    out0, _ = net(xs)
    (out0 ** 2).mean().backward()
    grads = {k: p.grad.copy() for k, p in cell.parameters().items()}
    before = cell.state_dict()
    opt.step()
    assert cell.weight_hh.data is w  # same array, updated in place
    for k, p in cell.parameters().items():
        np.testing.assert_allclose(p.data, before[k] - 0.5 * grads[k], rtol=1e-13)
    out1, _ = net(xs)
    cell.load_state_dict(before)
    out_again, _ = net(xs)
    np.testing.assert_array_equal(out_again.data, out0.data)
    assert not np.allclose(out1.data, out0.data)


def test_training_a_quadratic_reaches_its_minimum():
    target = np.array([1.0, -2.0, 0.5])
    for opt_cls, kw in ((ug.optim.SGD, dict(lr=0.1, momentum=0.5)),
                        (ug.optim.Adam, dict(lr=0.1))):
        w = ug.tensor(np.zeros(3), requires_grad=True)
        opt = opt_cls([w], **kw)
        for _ in range(300):
            opt.zero_grad()
            ((w - target) ** 2).sum().backward()
            opt.step()
        np.testing.assert_allclose(w.data, target, atol=1e-3)


def test_zero_grad_and_dict_params():
    cell = ug.nn.GRUCell(2, 3, seed=0)
    opt = ug.optim.Adam(cell.parameters())
    assert len(opt.params) == len(cell.parameters())
    for p in opt.params:
        p.grad = np.ones_like(p.data)
    opt.zero_grad()
    assert all(p.grad is None for p in cell.parameters().values())


def test_duplicates_are_updated_once():
    w = ug.tensor([1.0], requires_grad=True)
    opt = ug.optim.SGD([w, w], lr=1.0)
    w.grad = np.array([0.25])
    opt.step()
    np.testing.assert_array_equal(w.data, [0.75])


@pytest.mark.parametrize("make, words", [
    (lambda: ug.optim.SGD([], lr=0.1), "empty"),
    (lambda: ug.optim.SGD([np.zeros(2)], lr=0.1), "not a ug.Tensor"),
    (lambda: ug.optim.SGD([ug.tensor([1.0])], lr=0.1), "requires_grad=True"),
    (lambda: ug.optim.SGD(_params(), lr=-1.0), "lr"),
    (lambda: ug.optim.SGD(_params(), lr=0.1, nesterov=True), "momentum"),
    (lambda: ug.optim.Adam(_params(), betas=(0.9, 1.0)), "betas[1]"),
    (lambda: ug.optim.Adam(_params(), betas=0.9), "pair"),
    (lambda: ug.optim.SGD(3, lr=0.1), "params must be"),
])
def test_bad_configuration_errors(make, words):
    with pytest.raises(TrainingError, match=None) as info:
        make()
    assert isinstance(info.value, UnrollGraphError)
    assert words in str(info.value)


def test_grad_of_wrong_shape_is_named():
    w = ug.tensor(np.zeros(3), requires_grad=True, name="w")
    opt = ug.optim.SGD([w], lr=0.1)
    with pytest.raises(ug.ShapeError, match=r"w.grad = .*shape \(4,\).*\(3,\)"):
        w.grad = np.zeros(4)  # refused at the door
    w._grad = np.zeros(4)  # and the optimizer still checks what it is given
    with pytest.raises(GradientError, match="w"):
        opt.step()


# -- clipping ---------------------------------------------------------------------------------

def _with_grads(grads):
    ps = [ug.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    for p, g in zip(ps, grads):
        p.grad = g.copy()
    return ps


def test_clip_grad_value():
    g = np.array([[-3.0, 0.2], [0.7, 5.0]])
    (p,) = _with_grads([g])
    none = ug.tensor([1.0], requires_grad=True)
    assert ug.clip_grad_value([p, none], 0.5) is None
    np.testing.assert_array_equal(p.grad, [[-0.5, 0.2], [0.5, 0.5]])
    assert none.grad is None
    with pytest.raises(TrainingError, match="clip_value"):
        ug.clip_grad_value([p], 0.0)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_scales_by_max_over_total(norm_type):
    rng = np.random.default_rng(5)
    grads = [rng.normal(size=(3, 4)), rng.normal(size=(5,))]
    flat = np.concatenate([g.ravel() for g in grads])
    if math.isinf(norm_type):
        total = np.max(np.abs(flat))
    else:
        total = np.sum(np.abs(flat) ** norm_type) ** (1 / norm_type)
    max_norm = 0.5 * total
    ps = _with_grads(grads)
    got = ug.clip_grad_norm(ps, max_norm, norm_type=norm_type)
    assert isinstance(got, float)
    assert got == pytest.approx(total, rel=1e-12)
    scale = max_norm / (total + 1e-6)
    for p, g in zip(ps, grads):
        np.testing.assert_allclose(p.grad, g * scale, rtol=1e-12)


def test_clip_grad_norm_leaves_small_gradients_alone_and_reports_norm():
    grads = [np.array([3.0, 4.0])]
    ps = _with_grads(grads)
    assert ug.clip_grad_norm(ps, 10.0) == pytest.approx(5.0)
    np.testing.assert_array_equal(ps[0].grad, grads[0])
    # just above the norm: the 1e-6 in the denominator still shrinks it a hair
    ps = _with_grads(grads)
    ug.clip_grad_norm(ps, 5.0)
    np.testing.assert_allclose(ps[0].grad, grads[0] * 5.0 / (5.0 + 1e-6), rtol=1e-15)
    assert ug.clip_grad_norm([ug.tensor([1.0], requires_grad=True)], 1.0) == 0.0


def test_clip_grad_norm_nonfinite():
    ps = _with_grads([np.array([np.nan, 1.0])])
    with pytest.raises(GradientError, match="detect_anomaly"):
        ug.clip_grad_norm(ps, 1.0, error_if_nonfinite=True)
    assert math.isnan(ug.clip_grad_norm(ps, 1.0))
    assert np.isnan(ps[0].grad).all()


# -- optional: against torch ------------------------------------------------------------------

def _torch_trajectory(torch, p0s, grads, make):
    tps = [torch.tensor(p.copy(), requires_grad=True) for p in p0s]
    opt = make(tps)
    out = []
    for gs in grads:
        for tp, g in zip(tps, gs):
            tp.grad = torch.tensor(g.copy())
        opt.step()
        out.append([tp.detach().numpy().copy() for tp in tps])
    return out


@pytest.mark.parametrize("which", ["sgd", "sgd_nesterov", "adam", "adam_wd"])
def test_against_torch_optim(which):
    torch = pytest.importorskip("torch")
    cfg = {
        "sgd": (ug.optim.SGD, torch.optim.SGD,
                dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01)),
        "sgd_nesterov": (ug.optim.SGD, torch.optim.SGD,
                         dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
        "adam": (ug.optim.Adam, torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.99))),
        "adam_wd": (ug.optim.Adam, torch.optim.Adam, dict(lr=0.01, eps=1e-4, weight_decay=0.1)),
    }[which]
    ours_cls, theirs_cls, kw = cfg
    params = _params()
    p0 = [p.data.copy() for p in params]
    grads = _grad_sequence([p.shape for p in params], seed=7)
    ours = _run(ours_cls(params, **kw), params, grads)
    theirs = _torch_trajectory(torch, p0, grads, lambda ps: theirs_cls(ps, **kw))
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_against_torch(norm_type):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=(4, 3)) * 3, rng.normal(size=(6,))]
    ps = _with_grads(grads)
    tps = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for tp, g in zip(tps, grads):
        tp.grad = torch.tensor(g.copy())
    ours = ug.clip_grad_norm(ps, 1.5, norm_type=norm_type)
    theirs = torch.nn.utils.clip_grad_norm_(tps, 1.5, norm_type=norm_type)
    assert ours == pytest.approx(float(theirs), rel=1e-12)
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)
    ps = _with_grads(grads)
    for tp, g in zip(tps, grads):
        tp.grad = torch.tensor(g.copy())
    ug.clip_grad_value(ps, 0.7)
    torch.nn.utils.clip_grad_value_(tps, 0.7)
    for p, tp in zip(ps, tps):
        np.testing.assert_array_equal(p.grad, tp.grad.numpy())


# -- arguments are type-checked before they are compared ----------------------------------------

_NOT_NUMBERS = [None, "0.1", b"1", [0.1], (0.1,), {}, True, False, 1j, np.array([0.1]),
                ug.tensor(0.1), object()]


@pytest.mark.parametrize("bad", _NOT_NUMBERS, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("make, name", [
    (lambda v: ug.optim.SGD(_params(), lr=v), "lr"),
    (lambda v: ug.optim.SGD(_params(), lr=0.1, momentum=v), "momentum"),
    (lambda v: ug.optim.SGD(_params(), lr=0.1, weight_decay=v), "weight_decay"),
    (lambda v: ug.optim.SGD(_params(), lr=0.1, dampening=v), "dampening"),
    (lambda v: ug.optim.Adam(_params(), lr=v), "lr"),
    (lambda v: ug.optim.Adam(_params(), eps=v), "eps"),
    (lambda v: ug.optim.Adam(_params(), weight_decay=v), "weight_decay"),
    (lambda v: ug.optim.Adam(_params(), betas=(v, 0.999)), "betas[0]"),
    (lambda v: ug.optim.Adam(_params(), betas=(0.9, v)), "betas[1]"),
    (lambda v: ug.clip_grad_value(_with_grads([np.ones(2)]), v), "clip_value"),
    (lambda v: ug.clip_grad_norm(_with_grads([np.ones(2)]), v), "max_norm"),
    (lambda v: ug.clip_grad_norm(_with_grads([np.ones(2)]), 1.0, norm_type=v), "norm_type"),
])
def test_a_hyperparameter_that_is_not_a_number_is_named(make, name, bad):
    """SGD(lr=None) used to end in TypeError: '>=' not supported; every hyperparameter of
    every optimizer and clipping function is now checked for being a real number first."""
    with pytest.raises(TrainingError) as info:
        make(bad)
    if isinstance(bad, str) and name == "norm_type":  # 'inf' is the one string accepted
        assert f"norm_type {bad!r} is not supported" in str(info.value)
    else:
        assert f"{name} must be a real number" in str(info.value)
        assert type(bad).__name__ in str(info.value)


@pytest.mark.parametrize("make, name", [
    (lambda v: ug.optim.SGD(_params(), lr=v), "lr"),
    (lambda v: ug.optim.SGD(_params(), lr=0.1, momentum=v), "momentum"),
    (lambda v: ug.optim.SGD(_params(), lr=0.1, weight_decay=v), "weight_decay"),
    (lambda v: ug.optim.Adam(_params(), lr=v), "lr"),
    (lambda v: ug.optim.Adam(_params(), eps=v), "eps"),
    (lambda v: ug.optim.Adam(_params(), weight_decay=v), "weight_decay"),
    (lambda v: ug.optim.Adam(_params(), betas=(v, 0.9)), "betas[0]"),
    (lambda v: ug.clip_grad_value(_with_grads([np.ones(2)]), v), "clip_value"),
    (lambda v: ug.clip_grad_norm(_with_grads([np.ones(2)]), v), "max_norm"),
    (lambda v: ug.clip_grad_norm(_with_grads([np.ones(2)]), 1.0, norm_type=v), "norm_type"),
])
@given(value=st.floats(max_value=-1e-300) | st.just(math.nan))
def test_negative_and_nan_hyperparameters_are_named(make, name, value):
    with pytest.raises(TrainingError, match=f"invalid {re.escape(name)}"):
        make(value)


@given(lr=st.floats(min_value=0.0, max_value=1e3), mom=st.floats(min_value=0.0, max_value=1.0),
       b1=st.floats(min_value=0.0, max_value=0.999), b2=st.floats(min_value=0.0, max_value=0.999))
def test_valid_hyperparameters_of_any_numeric_type_are_accepted(lr, mom, b1, b2):
    for cast in (float, np.float32, np.float64):
        opt = ug.optim.SGD(_params(), lr=cast(lr), momentum=cast(mom))
        assert opt.defaults["lr"] == float(cast(lr)) and type(opt.defaults["lr"]) is float
        ug.optim.Adam(_params(), lr=cast(lr), betas=(cast(b1), cast(b2)))
    ug.optim.SGD(_params(), lr=int(lr))
    ug.optim.Adam(_params(), betas=np.array([b1, b2]))


def test_issue_inputs_sgd_lr_none_and_norm_type_fro():
    with pytest.raises(TrainingError, match="lr must be a real number, got NoneType None"):
        ug.optim.SGD(_params(), lr=None)
    with pytest.raises(TrainingError, match="norm_type 'fro' is not supported") as info:
        ug.clip_grad_norm(_with_grads([np.ones(2)]), 1.0, norm_type="fro")
    assert "norm_type=2.0" in str(info.value)


@pytest.mark.parametrize("spelling", ["inf", "INF", "Infinity", math.inf, np.inf, float("inf")])
def test_norm_type_inf_in_every_spelling_pytorch_accepts(spelling):
    ps = _with_grads([np.array([3.0, -4.0]), np.array([1.0])])
    assert ug.clip_grad_norm(ps, 2.0, norm_type=spelling) == 4.0
    np.testing.assert_allclose(ps[0].grad, np.array([3.0, -4.0]) * 2.0 / (4.0 + 1e-6))


def test_infinite_bounds_mean_no_clipping():
    ps = _with_grads([np.array([3.0, -4.0])])
    assert ug.clip_grad_norm(ps, math.inf) == 5.0
    ug.clip_grad_value(ps, math.inf)
    np.testing.assert_array_equal(ps[0].grad, [3.0, -4.0])


@pytest.mark.parametrize("make, words", [
    (lambda: ug.optim.SGD(_params(), lr=0.1, nesterov="yes"), "nesterov must be True or False"),
    (lambda: ug.optim.SGD(_params(), lr=math.inf), "invalid lr"),
    (lambda: ug.optim.Adam(_params(), betas=(0.9,)), "pair"),
    (lambda: ug.optim.Adam(_params(), betas="ab"), "pair"),
    (lambda: ug.optim.Adam(_params(), betas=(0.9, 0.99, 0.9)), "pair"),
    (lambda: ug.clip_grad_norm(_with_grads([np.ones(2)]), 1.0, error_if_nonfinite="no"),
     "error_if_nonfinite must be True or False"),
    (lambda: ug.clip_grad_norm(_with_grads([np.ones(2)]), 1.0, norm_type=0), "norm_type"),
])
def test_other_bad_arguments_are_named(make, words):
    with pytest.raises(TrainingError) as info:
        make()
    assert words in str(info.value)


def test_an_optimizer_refuses_a_non_leaf():
    w = ug.tensor([1.0, 2.0], requires_grad=True, name="w")
    doubled = w * 2.0
    doubled.name = "doubled"
    with pytest.raises(TrainingError, match="doubled are results of ops"):
        ug.optim.SGD([w, doubled], lr=0.1)


def test_clipping_a_non_leaf_gradient_works_without_touching_other_tensors():
    """A non-leaf's .grad is a read-only view (it may be another tensor's gradient too):
    clipping gives it a clipped copy instead of failing with 'output array is read-only'."""
    w = ug.tensor([3.0, 4.0], requires_grad=True, name="w")
    h = w * 1.0
    y = h + 0.0
    (y * ug.tensor([3.0, 4.0])).sum().backward()
    assert not h.grad.flags.writeable
    seen_by_y = y.grad.copy()
    assert ug.clip_grad_norm([h], max_norm=1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(h.grad, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(y.grad, seen_by_y)  # unchanged
    ug.clip_grad_value([y], 3.5)
    np.testing.assert_array_equal(y.grad, [3.0, 3.5])
    np.testing.assert_allclose(h.grad, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(w.grad, [3.0, 4.0])  # a leaf's gradient: not clipped here
    for g in (h.grad, y.grad):
        assert g.flags.writeable and g.dtype == np.float64


def test_an_integer_gradient_is_clipped_into_a_float_copy():
    w = ug.tensor([0.0, 0.0], requires_grad=True)
    w.grad = np.array([3, 4])
    ug.clip_grad_norm([w], 1.0)
    assert w.grad.dtype == np.float64
    np.testing.assert_allclose(w.grad, [0.6, 0.8], rtol=1e-6)

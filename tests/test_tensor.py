"""Tensor semantics: creation and promotion, operators, broadcasting, accumulation, no_grad,
float32 end to end, anomaly mode and a backward pass over a chain of 300,004 nodes."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import unrollgraph as ug


def _rng(seed=0):
    return np.random.default_rng(seed)


# -- creation ----------------------------------------------------------------------------------


def test_tensor_promotes_python_numbers_and_integer_arrays_to_float64():
    assert ug.tensor(3).dtype == np.float64
    assert ug.tensor([1, 2, 3]).dtype == np.float64
    assert ug.tensor(np.arange(4, dtype=np.int32)).dtype == np.float64
    assert ug.tensor([True, False]).dtype == np.float64
    np.testing.assert_array_equal(ug.tensor([1, 2]).data, [1.0, 2.0])


def test_tensor_keeps_float32_and_records_name_and_requires_grad():
    t = ug.tensor(np.ones(3, dtype=np.float32), requires_grad=True, name="w")
    assert t.dtype == np.float32
    assert t.name == "w" and t.node.name == "w"
    assert t.requires_grad and t.is_leaf and t.grad is None
    assert t.shape == (3,)


def test_tensor_rejects_non_float_dtype():
    with pytest.raises(TypeError, match="float32 or float64"):
        ug.tensor([1, 2], dtype=np.int64)


def test_scalar_operands_take_the_tensor_float_dtype():
    x = ug.tensor([1.0, 2.0], dtype=np.float32)
    for y in (x + 1, 2 * x, x / 3.0, x - np.float64(1.0), x + np.array([1, 2]), x**2, 2.0**x):
        assert y.dtype == np.float32, y.node.op


# -- operators ---------------------------------------------------------------------------------


def test_operator_values_match_numpy():
    rng = _rng()
    a, b = rng.uniform(0.5, 2.0, size=(2, 3)), rng.uniform(0.5, 2.0, size=(3,))
    ta, tb = ug.tensor(a), ug.tensor(b)
    cases = [
        (ta + tb, a + b), (ta - tb, a - b), (ta * tb, a * b), (ta / tb, a / b),
        (ta**tb, a**b), (ta**2, a**2), (ta**0.5, a**0.5), (-ta, -a),
        (1.0 + ta, 1.0 + a), (1.0 - ta, 1.0 - a), (2.0 * ta, 2.0 * a), (2.0 / ta, 2.0 / a),
        (2.0**ta, 2.0**a), (ta @ tb, a @ b), (ta.T, a.T), (ta.reshape(3, 2), a.reshape(3, 2)),
        (ta.transpose(1, 0), a.T), (ta.sum(axis=0), a.sum(axis=0)),
        (ta.mean(axis=1, keepdims=True), a.mean(axis=1, keepdims=True)), (ta.max(), a.max()),
        (ta[1, ::-1], a[1, ::-1]), (ta[:, [0, 0, 2]], a[:, [0, 0, 2]]),
        (ug.maximum(ta, tb), np.maximum(a, b)), (ug.clip(ta, 0.8, 1.5), np.clip(a, 0.8, 1.5)),
        (ug.softmax(ta, axis=0), np.exp(a) / np.exp(a).sum(axis=0)),
    ]
    for got, want in cases:
        np.testing.assert_allclose(got.data, want, rtol=1e-12, err_msg=got.node.op)


def test_matmul_numpy_array_on_the_left_uses_the_reflected_operator():
    w = ug.tensor(np.eye(2) * 2.0, requires_grad=True)
    y = np.array([[1.0, 2.0]]) @ w
    assert isinstance(y, ug.Tensor)
    np.testing.assert_allclose(y.data, [[2.0, 4.0]])


def test_operators_compose_and_pass_gradcheck():
    rng = _rng(1)

    def f(x, w, b):
        h = ug.tanh(x @ w + b)
        return ((h * 2.0 - 1.0) ** 2 / (1.0 + h * h)).mean() + (-h).max(axis=1).sum()

    inputs = [rng.normal(size=(4, 3)), rng.normal(size=(3, 5)), rng.normal(size=(5,))]
    assert ug.gradcheck(f, inputs)


# -- broadcasting and accumulation ---------------------------------------------------------------


def test_broadcast_gradients_are_summed_back_to_each_shape():
    a = ug.tensor(np.ones((3, 1)), requires_grad=True)
    b = ug.tensor(np.arange(4.0), requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)
    np.testing.assert_allclose(a.grad, np.full((3, 1), 6.0))  # sum of b
    np.testing.assert_allclose(b.grad, np.full(4, 3.0))  # three rows of ones


def test_repeated_indices_accumulate():
    x = ug.tensor([10.0, 20.0, 30.0], requires_grad=True)
    x[np.array([0, 0, 2, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 1.0])


def test_shared_node_receives_the_sum_of_its_uses():
    x = ug.tensor(0.3, requires_grad=True, name="x")
    h = ug.tanh(x, name="h")
    out = h * 2.0 + h * 3.0 + h  # three uses of h
    out.backward()
    np.testing.assert_allclose(h.grad, 6.0)
    np.testing.assert_allclose(x.grad, 6.0 * (1.0 - np.tanh(0.3) ** 2))


def test_tensor_used_twice_by_one_op():
    x = ug.tensor([1.0, -2.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, -4.0])
    x.zero_grad()
    (x + x).sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 2.0])


def test_grad_accumulates_across_backward_calls_until_zero_grad():
    w = ug.tensor([1.0, 2.0], requires_grad=True)
    for expected in ([2.0, 4.0], [4.0, 8.0], [6.0, 12.0]):
        (w * w).sum().backward()
        np.testing.assert_allclose(w.grad, expected)
    w.zero_grad()
    assert w.grad is None
    (w * w).sum().backward()
    np.testing.assert_allclose(w.grad, [2.0, 4.0])


def test_intermediate_tensors_keep_their_grad():
    x = ug.tensor([0.5, 1.0], requires_grad=True)
    y = x * 3.0
    z = y.sum()
    z.backward()
    np.testing.assert_allclose(z.grad, 1.0)
    np.testing.assert_allclose(y.grad, [1.0, 1.0])
    np.testing.assert_allclose(x.grad, [3.0, 3.0])


def test_each_grad_is_an_array_of_its_own():
    a = ug.tensor([1.0, 2.0], requires_grad=True)
    b = ug.tensor([3.0, 4.0], requires_grad=True)
    c = a + b  # add passes the same gradient to both inputs
    c.sum().backward()
    assert a.grad is not b.grad and a.grad is not c.grad
    a.grad *= 0.0  # an in-place edit (e.g. an optimizer) must not leak into other tensors
    np.testing.assert_allclose(b.grad, [1.0, 1.0])
    np.testing.assert_allclose(c.grad, [1.0, 1.0])
    assert b.grad.flags.writeable


def test_backward_with_a_seed_gradient():
    x = ug.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x
    y.backward(np.array([1.0, 0.0, -1.0]))
    np.testing.assert_allclose(x.grad, [2.0, 0.0, -6.0])


def test_gradient_stops_at_constants_and_detach():
    x = ug.tensor([1.0, 2.0], requires_grad=True)
    c = ug.tensor([5.0, 5.0])
    (x * c + x.detach() * x).sum().backward()
    np.testing.assert_allclose(x.grad, [6.0, 7.0])
    assert c.grad is None


def test_no_grad_builds_no_graph():
    w = ug.tensor([1.0, 2.0], requires_grad=True)
    with ug.no_grad():
        assert not ug.is_grad_enabled()
        y = ug.tanh(w * 2.0)
        with ug.enable_grad():
            z = w * 2.0
    assert ug.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and y.node.inputs == ()
    assert z.requires_grad and not z.is_leaf
    np.testing.assert_allclose(y.data, np.tanh([2.0, 4.0]))
    with pytest.raises(ug.GradientError):
        y.sum().backward()


# -- float32 end to end ------------------------------------------------------------------------


def test_float32_end_to_end_matches_float64():
    rng = _rng(2)
    arrays = [rng.normal(size=(4, 3)), rng.normal(size=(3, 5)), rng.normal(size=(5,))]
    labels = np.array([0, 4, 2, 1])
    grads = {}
    for dtype in (np.float32, np.float64):
        x, w, b = (ug.tensor(a, dtype=dtype, requires_grad=True) for a in arrays)
        h = ug.sigmoid(x @ w + b)
        loss = ug.cross_entropy(ug.log_softmax(h * 3.0), labels) + ug.mse_loss(h, h * 0.5)
        assert h.dtype == dtype and loss.dtype == dtype
        loss.backward()
        for t in (x, w, b):
            assert t.grad.dtype == dtype
        grads[dtype] = [t.grad for t in (x, w, b)]
    for g32, g64 in zip(grads[np.float32], grads[np.float64]):
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-6)


def test_float32_sigmoid_of_large_inputs_is_exact_and_silent():
    x = ug.tensor([-200.0, -90.0, 0.0, 90.0, 200.0], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        y = ug.sigmoid(x)
    np.testing.assert_allclose(y.data, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-30)
    assert y.dtype == np.float32


# -- anomaly mode ------------------------------------------------------------------------------


def test_detect_anomaly_names_the_forward_node():
    x = ug.tensor([1.0, 0.0], requires_grad=True, name="p")
    with ug.detect_anomaly():
        with pytest.raises(ug.AnomalyError) as info:
            ug.log(x, name="logp")
    msg = str(info.value)
    assert "forward of log" in msg and "'logp'" in msg and "Inf" in msg
    assert "index (1,)" in msg and "p (2,)" in msg


def test_detect_anomaly_names_the_node_a_bad_gradient_flows_into():
    z = ug.tensor([4.0, 0.0], requires_grad=True, name="z")
    with ug.detect_anomaly():
        r = ug.sqrt(z, name="r")  # forward is finite: sqrt(0) = 0
        with pytest.raises(ug.AnomalyError) as info:
            r.sum().backward()
    msg = str(info.value)
    assert "r = sqrt(...) into z" in msg and "Inf" in msg and "index (1,)" in msg


def test_without_anomaly_mode_non_finite_values_pass_through():
    z = ug.tensor([4.0, 0.0], requires_grad=True)
    with np.errstate(divide="ignore"):
        ug.sqrt(z).sum().backward()
    assert np.isinf(z.grad[1]) and z.grad[0] == 0.25


def test_detect_anomaly_is_restored_after_an_error():
    from unrollgraph.tensor import _FLAGS

    with pytest.raises(ug.AnomalyError):
        with ug.detect_anomaly():
            ug.log(ug.tensor(-1.0))
    assert _FLAGS.anomaly is False


# -- a long chain ------------------------------------------------------------------------------


def test_backward_through_a_long_chain():
    """300,004 nodes: 300 times the recursion limit, so only an explicit stack works."""
    n = 300_004
    assert n > 100 * sys.getrecursionlimit()
    x = ug.tensor(0.5, requires_grad=True, name="x")
    two, half = ug.tensor(2.0), ug.tensor(0.5)
    y = x
    for i in range(n):
        k = i % 3
        y = y * two if k == 0 else (-y if k == 1 else y * half)
    y.backward()
    # 100,002 doublings, 100,001 halvings and 100,001 negations: dy/dx = 2 * -1, exactly
    assert float(x.grad) == -2.0
    assert float(y.data) == -1.0


# -- misc --------------------------------------------------------------------------------------


def test_item_and_repr():
    t = ug.tensor([[2.5]], requires_grad=True, name="t")
    assert t.item() == 2.5
    assert repr(t) == "tensor([[2.5]], name='t', requires_grad=True)"
    with pytest.raises(TypeError, match="ambiguous"):
        bool(t)


def test_float64_sigmoid_saturates_silently_with_exact_limits_and_gradients():
    x = ug.tensor([-800.0, -720.0, -40.0, 0.0, 40.0, 800.0], requires_grad=True)
    with np.errstate(all="raise", under="ignore"):
        y = ug.sigmoid(x)
        y.sum().backward()
    want = 1.0 / (1.0 + np.exp(np.array([800.0, 720.0, 40.0, 0.0, -40.0, -800.0]).clip(max=709)))
    want[:2] = 0.0  # the limit: exp(-x) overflows to inf there, and 1 / (1 + inf) = 0
    np.testing.assert_array_equal(y.data, want)
    np.testing.assert_array_equal(x.grad, want * (1.0 - want))
    assert y.data[2] > 0.0 and x.grad[2] > 0.0  # far from the limit, tiny but not rounded away


# -- copy on the way in -------------------------------------------------------------------------


def _elman(W0, name="elman"):
    cell = ug.Cell(name)
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    W = cell.param("W", W0)
    h_next = ug.tanh(x + h @ W, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell


def test_an_sgd_step_on_one_cell_moves_neither_the_callers_array_nor_another_cell():
    W0 = np.full((2, 2), 0.5)
    kept = W0.copy()
    a, b = _elman(W0, "a"), _elman(W0, "b")
    out, _ = ug.unroll(a, steps=3)(np.ones((3, 1, 2)))
    out.sum().backward()
    ug.optim.SGD(a.parameters(), lr=0.1).step()
    assert not np.array_equal(a.parameters()["W"].data, kept)  # the step did move a's W
    np.testing.assert_array_equal(W0, kept)
    np.testing.assert_array_equal(b.parameters()["W"].data, kept)
    # and load_state_dict writes into neither the caller's array nor the dict it was given
    sd = {"W": np.zeros((2, 2))}
    a.load_state_dict(sd)
    sd["W"][0, 0] = 7.0
    np.testing.assert_array_equal(W0, kept)
    assert a.parameters()["W"].data[0, 0] == 0.0


def test_every_door_copies_the_callers_array():
    x0 = np.array([1.0, 2.0])
    t = ug.tensor(x0)
    x0[0] = 9.0
    assert t.data[0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        t.data[0] = 5.0  # a leaf's value is changed by assignment only
    # a state's init
    init = np.array([0.5, 0.5])
    cell = ug.Cell("c")
    cell.state("h", (2,), init=init)
    init[:] = 3.0
    np.testing.assert_array_equal(cell.init_value("h"), [0.5, 0.5])
    # a numpy operand in arithmetic: editing it before backward changes no gradient
    w = ug.tensor([1.0, 2.0], requires_grad=True)
    c = np.array([3.0, 4.0])
    y = (w * c).sum()
    c[:] = 100.0
    y.backward()
    np.testing.assert_array_equal(w.grad, [3.0, 4.0])
    # class labels of cross_entropy
    logits = ug.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    labels = np.array([0, 1])
    loss = ug.cross_entropy(logits, labels)
    labels[:] = [1, 0]
    loss.backward()
    assert logits.grad[0, 0] < 0 and logits.grad[1, 1] < 0  # the labels of the forward pass
    # the seed of backward(gradient=): an intermediate's .grad is not the caller's array
    z = w * 2.0
    seed = np.array([1.0, 1.0])
    z.backward(gradient=seed)
    seed[:] = 50.0
    np.testing.assert_array_equal(z.grad, [1.0, 1.0])


def test_the_inputs_and_state_of_a_net_call_are_copied():
    W0 = np.array([[0.3, -0.2], [0.1, 0.4]])
    xs = np.random.default_rng(0).standard_normal((3, 2, 2))
    h0 = np.full((2, 2), 0.1)
    net = ug.unroll(_elman(W0), steps=3)
    out, _ = net(xs, state=h0)
    xs[:] = 0.0  # between the forward pass and backward: must not reach the run
    h0[:] = 0.0
    out.sum().backward()
    got = net.cell.parameters()["W"].grad.copy()
    ref = ug.unroll(_elman(W0), steps=3)
    xs2 = np.random.default_rng(0).standard_normal((3, 2, 2))
    out2, _ = ref(xs2, state=np.full((2, 2), 0.1))
    out2.sum().backward()
    np.testing.assert_array_equal(got, ref.cell.parameters()["W"].grad)


def test_load_state_dict_is_all_or_nothing():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    before = cell.state_dict()
    sd = {k: np.full_like(v, 7.0) for k, v in before.items()}
    sd["weight_hh"] = np.zeros((2, 2))  # a wrong shape on one key
    with pytest.raises(ug.ShapeError, match="weight_hh.*nothing was loaded"):
        cell.load_state_dict(sd)
    sd["weight_hh"] = np.array([["a"] * 3] * 3)  # a string value on one key
    with pytest.raises(ug.DTypeError, match="weight_hh"):
        cell.load_state_dict(sd)
    for k, v in cell.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} was overwritten")


# -- a value changed between the forward pass and backward --------------------------------------


def test_an_optimizer_step_between_forward_and_backward_is_named():
    w = ug.tensor([1.0, 2.0], requires_grad=True, name="w")
    loss = (w * w).sum()
    opt = ug.optim.SGD([w], lr=0.1)
    w.grad = np.ones(2)
    opt.step()
    with pytest.raises(ug.GradientError) as info:
        loss.backward()
    msg = str(info.value)
    assert "tensor 'w' (2,)" in msg and "SGD step" in msg and "mul node" in msg
    assert "after" in msg and "forward pass again" in msg
    # computing the forward pass again is the fix
    w.zero_grad()
    (w * w).sum().backward()
    np.testing.assert_allclose(w.grad, 2 * w.data)


@pytest.mark.parametrize("change", ["data", "adam", "load_state_dict"])
def test_every_documented_change_is_caught_and_named(change):
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=4)
    out, h = net(np.ones((4, 2, 2)))
    loss = (out * out).sum()
    if change == "data":
        cell.weight_hh.data = cell.weight_hh.data * 0.5
        how = "assignment to .data"
    elif change == "adam":
        for p in cell.parameters().values():
            p.grad = np.ones(p.shape)
        ug.optim.Adam(cell.parameters(), lr=0.1).step()
        how = "Adam step"
    else:
        cell.load_state_dict(cell.state_dict())
        how = "load_state_dict"
    with pytest.raises(ug.GradientError) as info:
        loss.backward()
    msg = str(info.value)
    assert "parameter" in msg and how in msg and "the unrolled net 'RNNCell'" in msg


def test_a_detached_alias_shares_the_record_of_in_place_changes():
    w = ug.tensor([1.0, 2.0], requires_grad=True, name="w")
    v = ug.tensor([3.0, 4.0], requires_grad=True, name="v")
    d = w.detach()
    y = (d * v).sum()  # v's gradient reads d, which is w's memory
    w.grad = np.ones(2)
    ug.optim.SGD([w], lr=0.5).step()
    np.testing.assert_array_equal(d.data, [0.5, 1.5])  # the same memory
    with pytest.raises(ug.GradientError, match="SGD step"):
        y.backward()
    # assigning .data gives w new memory: the alias keeps the old values, and its graph is fine
    d2 = w.detach()
    y2 = (d2 * v).sum()
    w.data = np.array([7.0, 7.0])
    np.testing.assert_array_equal(d2.data, [0.5, 1.5])
    y2.backward()
    np.testing.assert_array_equal(v.grad, [0.5, 1.5])


def test_gradcheck_restores_a_parameter_without_recording_a_change():
    w = ug.tensor([0.5, -1.0], requires_grad=True, name="w")
    loss = (ug.tanh(w) * w).sum()
    assert ug.gradcheck(lambda a: (ug.tanh(a) * a).sum(), [w])
    loss.backward()  # still allowed: every perturbed number was put back
    assert w.grad is not None


# -- a tensor's dtype is part of its contract ---------------------------------------------------


def test_integer_data_assigned_to_a_float_parameter_does_not_truncate_its_gradient():
    W = ug.tensor([1.5], requires_grad=True, name="W")
    W.data = np.array([2])
    assert W.data.dtype == np.float64
    (W * W * 0.425).sum().backward()
    np.testing.assert_allclose(W.grad, [1.7], rtol=1e-15)


def test_assignments_keep_the_tensors_dtype_and_shape():
    w32 = ug.tensor([1.0, 2.0], dtype=np.float32, requires_grad=True, name="w32")
    w32.data = np.array([0.1, 0.2])  # float64 data: converted to the tensor's float32
    assert w32.data.dtype == np.float32
    w32.grad = np.array([1, 2])  # an integer gradient: converted too
    assert w32.grad.dtype == np.float32
    (w32 * 3.0).backward(gradient=np.array([1, 1]))  # an integer seed: no truncation
    assert w32.grad.dtype == np.float32 and np.allclose(w32.grad, [4.0, 5.0])
    with pytest.raises(ug.ShapeError, match=r"w32.data = .*\(3,\).*\(2,\)"):
        w32.data = np.zeros(3)
    for bad in (np.array([1j, 2j]), None, "ab", [1, "a"]):
        with pytest.raises(ug.DTypeError, match=r"w32\.data"):
            w32.data = bad
        if bad is not None:  # .grad = None resets the gradient
            with pytest.raises(ug.DTypeError, match=r"w32\.grad"):
                w32.grad = bad
    # load_state_dict converts to each parameter's dtype: a float32 dict into a float64 cell
    cell = ug.nn.GRUCell(2, 3, seed=0)
    cell.load_state_dict({k: v.astype(np.float32) for k, v in cell.state_dict().items()})
    assert all(p.dtype == np.float64 for p in cell.parameters().values())
    cell32 = ug.nn.GRUCell(2, 3, seed=0, dtype=np.float32)
    cell32.load_state_dict({k: np.ones(v.shape, dtype=int)
                            for k, v in cell32.state_dict().items()})
    assert all(p.dtype == np.float32 for p in cell32.parameters().values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accumulated_gradients_keep_the_tensors_dtype(dtype):
    w = ug.tensor([1.0, 2.0], dtype=dtype, requires_grad=True)
    (w * 2.0).sum().backward()
    (w * np.array([0.5, 0.5])).sum().backward()  # a float64 constant
    assert w.grad.dtype == dtype
    np.testing.assert_allclose(w.grad, [2.5, 2.5])


def _door_copies():
    """door -> function(a) that hands the array ``a`` to the library and returns a function
    giving back what the library kept."""
    def param(a):
        p = ug.Cell("c").param("W", a)
        return lambda: p.data

    def init(a):
        cell = ug.Cell("c")
        cell.state("h", (3,), init=a)
        return lambda: cell.init_value("h")

    def load(a):
        cell = ug.nn.RNNCell(3, 3, seed=0)
        cell.load_state_dict(dict(cell.state_dict(), bias_hh=a))
        return lambda: cell.bias_hh.data

    def data(a):
        t = ug.tensor(np.zeros(3))
        t.data = a
        return lambda: t.data

    def grad(a):
        t = ug.tensor(np.zeros(3))
        t.grad = a
        return lambda: t.grad

    def run(kind):
        def door(a):
            net = ug.unroll(ug.nn.RNNCell(3, 3, seed=0), steps=1)
            if kind == "xs":
                net(a.reshape(1, 1, 3))
                return lambda: net.last_run.xs["x"].data
            net(np.ones((1, 1, 3)), state=a.reshape(1, 3))
            return lambda: net.last_run.states["h"]
        return door

    def seed(a):
        z = ug.tensor(np.zeros(3), requires_grad=True) * 2.0
        z.backward(gradient=a)
        return lambda: z.grad

    def operand(a):
        y = ug.tensor(np.zeros(3), requires_grad=True) + a
        return lambda: y._parents[1].data

    return {"tensor": lambda a: (lambda t: lambda: t.data)(ug.tensor(a)), "param": param,
            "init": init, "load_state_dict": load, ".data =": data, ".grad =": grad,
            "net(xs)": run("xs"), "state=": run("state"), "backward(gradient=)": seed,
            "operand": operand}


@pytest.mark.parametrize("door", sorted(_door_copies()))
def test_every_door_keeps_a_copy_of_its_own(door):
    a = np.array([0.25, 0.5, 0.75])
    kept = _door_copies()[door](a)
    assert not np.shares_memory(kept(), a), f"{door} kept the caller's memory"
    a[:] = 99.0
    np.testing.assert_array_equal(np.ravel(kept()), [0.25, 0.5, 0.75])

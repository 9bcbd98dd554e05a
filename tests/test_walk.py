"""The reverse walk of ``backward()`` skips its version checks when the clock has not moved
since the oldest node it differentiates was made (no value can have changed after any node
was computed). That fast path gives, bit for bit, what the checked walk gives, on random eager
graphs and on graphs around an unrolled net's call; and every error the checked walk raises is
still raised: a change anywhere moves the clock, and the checked walk runs."""

import importlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import unrollgraph as ug

walk = importlib.import_module("unrollgraph.tensor")

OPS = ["add", "mul", "sub", "tanh", "sum0", "const", "reuse"]


def _graph(ops, seed):
    """A random eager graph over three leaves (one without grad): the loss and every tensor."""
    rng = np.random.default_rng(seed)
    pool = [ug.tensor(rng.normal(size=(3, 4)), requires_grad=k != 2, name=f"l{k}")
            for k in range(3)]
    for op, i, j in ops:
        a, b = pool[i % len(pool)], pool[j % len(pool)]
        if op == "add":
            t = a + b
        elif op == "mul":
            t = a * b
        elif op == "sub":
            t = a - b
        elif op == "tanh":
            t = ug.tanh(a)
        elif op == "sum0":
            t = a.sum(axis=0, keepdims=True) * b  # a reduction, broadcast back
        elif op == "const":
            t = a * 0.5
        else:  # a tensor read twice by one node
            t = a * a + a
        pool.append(t)
    loss = (pool[-1] * pool[-1]).sum() + pool[len(pool) // 2].sum()
    return loss, pool


def _grads(pool):
    return [None if t.grad is None else t.grad.copy() for t in pool]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y)


def _checked(monkeypatch):
    monkeypatch.setattr(walk, "_SKIP_UNCHANGED", False)


STEPS = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 20), st.integers(0, 20)),
                 min_size=1, max_size=12)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=STEPS, seed=st.integers(0, 5), twice=st.booleans())
def test_the_fast_path_gives_what_the_checked_walk_gives(monkeypatch, ops, seed, twice):
    loss, pool = _graph(ops, seed)
    assume(loss.requires_grad)  # (ops on the leaf without grad alone: nothing to walk)
    assert walk._count_uses_and_oldest(loss)[1] == walk._CLOCK[0]  # (the fast path's case)
    loss.backward(retain_graph=twice)
    if twice:  # .grad accumulates over backward() calls through a retained graph
        loss.backward()
    fast = _grads(pool)
    with monkeypatch.context() as m:
        _checked(m)
        loss, pool = _graph(ops, seed)
        loss.backward(retain_graph=twice)
        if twice:
            loss.backward()
    _same(fast, _grads(pool))


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_the_fast_path_around_an_unrolled_call_gives_what_the_checked_walk_gives(
        monkeypatch, kind):
    cell = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell}[kind](3, 4, seed=0)
    net = ug.unroll(cell, steps=5)
    rng = np.random.default_rng(0)
    x = ug.tensor(rng.normal(size=(5, 2, 3)), requires_grad=True)
    G = ug.tensor(rng.normal(size=(5, 2, 4)))
    W = cell.parameters()["weight_hh"]

    def step():
        cell.zero_grad()
        x.grad = None
        out, state = net(x)
        h = state if kind == "rnn" else state[0]
        # a parameter read by the call and by the loss; the final state read twice
        loss = (out * G).sum() + (W * W).sum() + (h * h).sum() + h.sum()
        loss.backward()
        return [x.grad.copy(), out.grad.copy()] + [
            p.grad.copy() for p in cell.parameters().values()]

    fast = step()
    with monkeypatch.context() as m:
        _checked(m)
        checked = step()
    _same(fast, checked)


def test_a_value_changed_after_use_is_refused_with_the_fast_path_on():
    w = ug.tensor([1.0, 2.0], requires_grad=True, name="w")
    x = ug.tensor([3.0, 4.0], name="x")
    y = (w * x).sum()
    x.data = np.array([5.0, 6.0])
    with pytest.raises(ug.GradientError, match="'x'.*changed by an assignment to .data"):
        y.backward()


def test_a_change_between_two_nodes_of_the_graph_is_refused():
    """The clock is compared with the oldest node the walk differentiates, not the root's
    birth: a value changed after the first node used it, before the last was made."""
    w = ug.tensor([1.0, 2.0], requires_grad=True, name="w")
    x = ug.tensor([3.0, 4.0], name="x")
    y = w * x
    x.data = np.array([5.0, 6.0])
    z = (y * 3.0).sum()  # made after the change
    assert z._born == walk._CLOCK[0]
    with pytest.raises(ug.GradientError, match="'x'"):
        z.backward()


def test_a_change_elsewhere_leaves_the_gradients_right():
    w = ug.tensor([1.0, 2.0], requires_grad=True)
    y = (w * w).sum()
    other = ug.tensor([0.0])
    other.data = np.array([1.0])  # the clock moves: the checked walk runs, and passes
    assert walk._CLOCK[0] != walk._count_uses_and_oldest(y)[1]
    y.backward()
    np.testing.assert_array_equal(w.grad, [2.0, 4.0])


def test_a_parameter_stepped_after_the_call_is_refused():
    cell = ug.nn.RNNCell(3, 4, seed=0)
    net = ug.unroll(cell, steps=3)
    out, _ = net(np.ones((3, 1, 3)))
    loss = out.sum()
    for p in cell.parameters().values():
        p.grad = np.ones(p.shape)
    ug.optim.SGD(cell.parameters().values(), lr=0.1).step()
    with pytest.raises(ug.GradientError, match="unrolled net"):
        loss.backward()


def test_detect_anomaly_still_names_the_node_on_the_fast_path_s_graphs():
    x = ug.tensor([0.0, 1.0], requires_grad=True, name="x")
    y = (ug.sqrt(x) * 1.0).sum() if hasattr(ug, "sqrt") else (x ** 0.5).sum()
    with ug.detect_anomaly():
        with pytest.raises(ug.AnomalyError, match="gradient sent by"):
            y.backward()


def test_a_bad_vjp_shape_is_refused_on_the_fast_path():
    from unrollgraph.ops import defop, undefop

    defop("bad_vjp_walk", lambda a: a * 2.0, [lambda g, ans, a: np.ones(7)])
    try:
        w = ug.tensor([1.0, 2.0], requires_grad=True)
        y = walk.apply("bad_vjp_walk", w).sum()
        with pytest.raises(ug.GraphError, match="returned a gradient of shape"):
            y.backward()
    finally:
        undefop("bad_vjp_walk")


def test_an_intermediate_grad_is_read_only_and_a_leaf_grad_is_its_own():
    w = ug.tensor([1.0, 2.0], requires_grad=True)
    h = w * 2.0
    y = (h * h).sum()
    y.backward()
    with pytest.raises(ValueError):
        h.grad[0] = 0.0
    g = w.grad
    g[0] = 5.0  # an optimizer may edit a leaf's gradient in place
    np.testing.assert_array_equal(h.grad, [4.0, 8.0])

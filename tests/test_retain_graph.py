"""A graph is walked once, as in PyTorch: a second ``backward()`` through any node an earlier
walk released raises a GradientError naming the node (before any ``.grad`` changes), and
``retain_graph=True`` keeps a graph walkable, the next walk adding its gradients again. The
readers of a walked graph (explain, diagrams, gradient flow, symbolic BPTT, state gradients)
still read it, and do not make it walkable again."""

import importlib

import numpy as np
import pytest

import unrollgraph as ug

walk = importlib.import_module("unrollgraph.tensor")


def _grads(*ts):
    return [None if t.grad is None else t.grad.copy() for t in ts]


def _leaves():
    x = ug.tensor([0.5, -1.0, 2.0], requires_grad=True, name="x")
    w = ug.tensor([1.5, 0.25, -0.75], requires_grad=True, name="w")
    return x, w


def test_a_second_backward_on_the_same_loss_is_refused_and_changes_nothing():
    x, w = _leaves()
    h = ug.tanh(x * w)
    h.name = "h"
    loss = (h * h).sum()
    loss.name = "L"
    loss.backward()
    before = _grads(x, w, h, loss)
    with pytest.raises(ug.GradientError, match=r"backward\(\) on L a second time") as err:
        loss.backward()
    assert "retain_graph=True" in str(err.value)
    assert "Compute the forward pass and the loss again" in str(err.value)
    for a, b in zip(before, _grads(x, w, h, loss)):
        assert np.array_equal(a, b)


def test_retain_graph_walks_again_and_adds_exactly_once_more():
    x, w = _leaves()
    loss = (ug.tanh(x * w) * x).sum()
    loss.backward(retain_graph=True)
    first = _grads(x, w)
    loss.backward(retain_graph=True)
    loss.backward()  # walked a third time, and released
    for a, g in zip(first, _grads(x, w)):
        assert np.array_equal(g, a + a + a)
    with pytest.raises(ug.GradientError, match="a second time"):
        loss.backward()


def test_two_losses_sharing_a_subgraph_the_second_is_refused_at_the_shared_node():
    x, w = _leaves()
    h = x * w
    h.name = "h"
    l1 = h.sum()
    l2 = (ug.tanh(h) * 2.0).sum()
    l2.name = "L2"
    l1.backward()
    before = _grads(x, w)
    with pytest.raises(ug.GradientError, match=r"backward\(\) on L2 reaches h, which an "
                                               r"earlier backward\(\)") as err:
        l2.backward()
    assert "(loss1 + loss2).backward()" in str(err.value)
    for a, b in zip(before, _grads(x, w)):
        assert np.array_equal(a, b)  # nothing stored: refused before the walk


def test_two_losses_sharing_a_subgraph_with_retain_graph_add_up():
    def fresh():
        x, w = _leaves()
        h = x * w
        return x, w, h.sum(), (ug.tanh(h) * 2.0).sum()

    x, w, l1, _ = fresh()
    l1.backward()
    g1 = _grads(x, w)
    x, w, _, l2 = fresh()
    l2.backward()
    g2 = _grads(x, w)
    x, w, l1, l2 = fresh()
    l1.backward(retain_graph=True)
    l2.backward()
    for a, b, g in zip(g1, g2, _grads(x, w)):
        assert np.array_equal(g, a + b)


def test_a_released_leaf_is_not_a_problem_a_new_graph_from_it_walks():
    x, w = _leaves()
    (x * w).sum().backward()
    (x * w).sum().backward()  # a new graph over the same leaves: accumulates, as in PyTorch
    assert np.array_equal(x.grad, 2 * w.data)


def _net(kind="rnn"):
    cell = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell}[kind](3, 4, seed=0)
    net = ug.unroll(cell, steps=5)
    rng = np.random.default_rng(1)
    return cell, net, rng.normal(size=(5, 2, 3)), ug.tensor(rng.normal(size=(5, 2, 4)))


@pytest.mark.parametrize("short", [True, False])
def test_the_call_of_an_unrolled_net_is_walked_once(monkeypatch, short):
    monkeypatch.setattr(walk, "_SHORT_WALK", short)
    cell, net, xs, G = _net()
    out, _ = net(xs)
    loss = (out * G).sum()
    loss.backward()
    before = _grads(*cell.parameters().values())
    with pytest.raises(ug.GradientError, match="a second time"):
        loss.backward()
    for a, b in zip(before, _grads(*cell.parameters().values())):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("short", [True, False])
def test_retain_graph_through_an_unrolled_call_adds_exactly_once_more(monkeypatch, short):
    monkeypatch.setattr(walk, "_SHORT_WALK", short)
    cell, net, xs, G = _net("lstm")
    out, _ = net(xs)
    loss = (out * G).sum()
    loss.backward(retain_graph=True)
    first = _grads(*cell.parameters().values())
    loss.backward()
    for a, g in zip(first, _grads(*cell.parameters().values())):
        assert np.array_equal(g, a + a)
    with pytest.raises(ug.GradientError, match="a second time"):
        loss.backward()


def test_a_second_loss_on_the_same_call_is_refused_at_the_call():
    cell, net, xs, G = _net()
    out, h = net(xs)
    (out * G).sum().backward()  # the short walk
    with pytest.raises(ug.GradientError, match="reaches the call of the unrolled net"):
        (h * h).sum().backward()


def test_a_state_carried_over_without_detach_is_refused_with_the_fix():
    cell, net, xs, G = _net()
    out, h = net(xs)
    (out * G).sum().backward()
    out2, _ = net(xs, state=h)
    with pytest.raises(ug.GradientError, match=r"state=h\.detach\(\)"):
        (out2 * G).sum().backward()
    out3, _ = net(xs, state=h.detach())
    (out3 * G).sum().backward()  # cut from the earlier call: walks


def test_the_readers_of_a_walked_graph_still_read_it_and_leave_it_released(tmp_path):
    cell, net, xs, G = _net()
    out, h = net(xs)
    loss = (out * out).sum()
    loss.backward()
    run = net.last_run
    w = ug.tensor(0.5, requires_grad=True, name="w")
    small = ug.tanh(w * w)
    small.backward()
    assert len(ug.symbolic.chain_rule(small, w).paths) == 2  # (w * w: two paths)
    grad = cell.weight_hh.grad.copy()
    ex = ug.explain(loss)
    assert len(ex) > 0
    assert ug.to_dot(net).startswith("digraph")
    assert ug.to_dot(loss).startswith("digraph")
    assert run.state_grads().shape == (5, 2, 4)
    flow = ug.gradient_flow(run)
    assert flow is not None
    terms = ug.symbolic.bptt(net, "weight_hh", loss=loss)
    assert terms is not None
    assert ug.truncation_error(run) is not None
    assert ug.to_dot(net, detail="ops").startswith("digraph")
    np.testing.assert_array_equal(cell.weight_hh.grad, grad)  # nothing walked it again
    with pytest.raises(ug.GradientError, match="a second time"):
        loss.backward()

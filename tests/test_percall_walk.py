"""The short reverse walk for the loss of a net's call (``(out * G).sum()``, ``(G * out).sum()``,
``out.sum()``) stores exactly what the generic walk stores: every ``.grad`` (the leaves', the
intermediate tensors'), bit for bit, with the same flags, over repeated ``backward()`` calls
(accumulation), for every cell, output, loss form and pattern of leaves requiring grad; and it
leaves to the generic walk what it does not cover (version checks, anomaly mode, leaves with
a graph of their own, an operand that requires grad)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph import GradientError

walk = __import__("unrollgraph.tensor", fromlist=["_call_loss_walk"])

CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}
T, D, H = 3, 2, 4


def _setup(kind, batch, seed, x_grad, h_grad, dtype):
    cell = CELLS[kind](D, H, seed=seed)
    net = ug.unroll(cell, steps=T)
    rng = np.random.default_rng(seed)
    xs = ug.tensor(rng.normal(size=(T, batch, D)).astype(dtype), requires_grad=x_grad)
    state = None
    if h_grad is not None:
        init = {k: ug.tensor(rng.normal(size=(batch, H)), requires_grad=h_grad)
                for k in cell.states}
        state = init if len(init) > 1 else next(iter(init.values()))
    G = rng.normal(size=(T, batch, H))
    return cell, net, xs, state, G


def _loss(form, out, final, G):
    if form == "out*G":
        return (out * ug.tensor(G)).sum()
    if form == "G*out":
        return (G * out).sum()  # (a plain array: a constant operand)
    if form == "out.sum":
        return out.sum()
    h = final if isinstance(final, ug.Tensor) else final[0]
    return (h * ug.tensor(G[-1])).sum()  # a final state's loss


def _run(kind, batch, seed, x_grad, h_grad, form, calls, dtype):
    """Every .grad after ``calls`` training steps without zero_grad (they accumulate)."""
    cell, net, xs, state, G = _setup(kind, batch, seed, x_grad, h_grad, dtype)
    seen = []
    for _ in range(calls):
        out, final = net(xs, state=state)
        loss = _loss(form, out, final, G)
        loss.backward()
        seen += [loss, out] + list(loss._parents)
    grads = [p.grad for p in cell.parameters().values()]
    grads += [xs.grad] + [t.grad for t in (state.values() if isinstance(state, dict) else
                                           [state] if state is not None else [])]
    grads += [t.grad for t in seen]
    flags = [None if g is None else (g.flags.writeable, g.dtype) for g in grads]
    return [None if g is None else g.copy() for g in grads], flags


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(CELLS)), batch=st.integers(1, 3), seed=st.integers(0, 9),
       x_grad=st.booleans(), h_grad=st.sampled_from([None, False, True]),
       form=st.sampled_from(["out*G", "G*out", "out.sum", "final"]), calls=st.integers(1, 2),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_the_short_walk_stores_what_the_generic_walk_stores(
        monkeypatch, kind, batch, seed, x_grad, h_grad, form, calls, dtype):
    short = _run(kind, batch, seed, x_grad, h_grad, form, calls, dtype)
    with monkeypatch.context() as m:
        m.setattr(walk, "_SHORT_WALK", False)
        generic = _run(kind, batch, seed, x_grad, h_grad, form, calls, dtype)
    assert short[1] == generic[1]
    for a, b in zip(short[0], generic[0]):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and np.array_equal(a, b)


def _graph_of_a_call(form="out*G", x_from_ops=False, g_grad=False):
    cell, net, xs, _state, G = _setup("rnn", 2, 0, True, None, np.float64)
    if x_from_ops:
        xs = xs * 2.0  # an input with a graph of its own above it
    out, final = net(xs)
    Gt = ug.tensor(G, requires_grad=g_grad)
    loss = (out * Gt).sum() if form == "out*G" else (out * out).sum()
    return loss


@pytest.mark.parametrize("case", [
    dict(), dict(x_from_ops=True), dict(g_grad=True), dict(form="out*out")])
def test_the_short_walk_takes_exactly_the_loss_of_a_call(monkeypatch, case):
    taken = []
    real = walk._call_loss_walk
    monkeypatch.setattr(walk, "_call_loss_walk", lambda r, s, retain: taken.append(
        real(r, s, retain)) or taken[-1])
    _graph_of_a_call(**case).backward()
    assert taken == [not case]  # (the other graphs go to the generic walk)


def test_a_parameter_stepped_between_call_and_backward_is_still_refused():
    cell, net, xs, _state, G = _setup("lstm", 1, 0, False, None, np.float64)
    out, _ = net(xs)
    loss = (out * ug.tensor(G)).sum()
    w = next(iter(cell.parameters().values()))
    w[0] = 1.0  # an edit in place after the forward pass
    with pytest.raises(GradientError, match="changed"):
        loss.backward()


def test_the_short_walk_is_not_taken_under_detect_anomaly(monkeypatch):
    calls = []
    monkeypatch.setattr(walk, "_call_loss_walk", lambda r, s, retain: calls.append(1) or False)
    loss = _graph_of_a_call()
    with ug.detect_anomaly():
        loss.backward()
    assert calls  # (asked, answered no: the generic walk ran, and gave the gradients)
    assert all(p.grad is not None for p in loss._parents[0]._parents[0]._parents[0]._parents
               if p.requires_grad)


def test_a_leaf_grad_is_its_own_array_after_the_short_walk():
    cell, net, xs, _state, G = _setup("gru", 2, 1, True, None, np.float64)
    out, _ = net(xs)
    (out * ug.tensor(G)).sum().backward()
    for p in list(cell.parameters().values()) + [xs]:
        assert p.grad.flags.writeable and p.grad.flags.owndata
        p.grad[...] = 0.0  # an optimizer may edit it in place: nothing else changes
    assert out.grad is not None and not out.grad.flags.writeable
    assert np.array_equal(out.grad, G)

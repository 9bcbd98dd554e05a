"""The unroller and BPTT: checked against a hand-written numpy BPTT and finite differences."""

import importlib
import sys

import networkx as nx
import numpy as np
import pytest
from bptt_reference import elman_backward, elman_forward
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.unroll import Unrolled


def _elman(D, H, seed=0):
    cell = ug.nn.RNNCell(D, H, seed=seed)
    p = cell.parameters()
    return cell, (p["weight_ih"].data, p["weight_hh"].data, p["bias_ih"].data, p["bias_hh"].data)


@pytest.mark.parametrize("T,B,D,H", [(1, 1, 2, 3), (5, 2, 3, 4), (12, 3, 2, 5)])
def test_elman_gradients_equal_hand_written_bptt(T, B, D, H):
    rng = np.random.default_rng(T)
    cell, (Wih, Whh, bih, bhh) = _elman(D, H)
    net = ug.unroll(cell, steps=T)
    xs = ug.tensor(rng.standard_normal((T, B, D)), requires_grad=True)
    h0 = ug.tensor(rng.standard_normal((B, H)), requires_grad=True)
    R = rng.standard_normal((T, B, H))
    out, h = net(xs, state=h0)
    loss = (out * R).sum()
    loss.backward()
    hs, raws, ys = elman_forward(xs.data, Wih, Whh, bih, bhh, h0=h0.data)
    np.testing.assert_allclose(out.data, ys, rtol=0, atol=1e-14)
    np.testing.assert_allclose(h.data, hs[-1], rtol=0, atol=1e-14)
    dWih, dWhh, dbih, dbhh, dxs, dh0, dh = elman_backward(xs.data, hs, raws, R, Wih, Whh)
    for got, want in [(cell.weight_ih.grad, dWih), (cell.weight_hh.grad, dWhh),
                      (cell.bias_ih.grad, dbih), (cell.bias_hh.grad, dbhh), (xs.grad, dxs),
                      (h0.grad, dh0)]:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.last_run.state_grads("h"), dh, rtol=1e-10, atol=1e-12)


def test_unrolled_gradients_pass_gradcheck():
    rng = np.random.default_rng(0)
    T, B, D, H = 4, 2, 2, 3
    W0 = rng.standard_normal((H, H)) * 0.5

    def fn(xs, h0, W):
        cell = ug.Cell("toy")
        x = cell.input("x", (D,))
        h = cell.state("h", (H,))
        Whh = cell.param("W", W)
        U = cell.param("U", np.linspace(-1, 1, H * D).reshape(H, D))
        h_next = ug.tanh(x @ U.T + h @ Whh.T)
        cell.feedback(h, h_next)
        cell.output("y", ug.sigmoid(h_next) * h_next)
        out, hT = ug.unroll(cell, steps=T)(xs, state=h0)
        return out.sum() + (hT * hT).sum()

    xs = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((B, H))
    assert ug.gradcheck(fn, [xs, h0, W0])


def test_per_step_contributions_sum_to_the_total_and_match_the_hand_derivation():
    rng = np.random.default_rng(3)
    T, B, D, H = 6, 2, 3, 4
    cell, (Wih, Whh, bih, bhh) = _elman(D, H)
    net = ug.unroll(cell, steps=T)
    xs = rng.standard_normal((T, B, D))
    out, _ = net(xs)
    R = rng.standard_normal((T, B, H))
    (out * R).sum().backward()
    parts = net.last_run.step_contributions("weight_hh")
    assert parts.shape == (T, H, H)
    np.testing.assert_allclose(parts.sum(axis=0), cell.weight_hh.grad, rtol=1e-12, atol=1e-14)
    # by hand: step t contributes dz_t^T h_{t-1}
    hs, raws, _ = elman_forward(xs, Wih, Whh, bih, bhh)
    _, _, _, _, _, _, dh = elman_backward(xs, hs, raws, R, Wih, Whh)
    for t in range(T):
        dz = dh[t] * (1 - raws[t] ** 2)
        np.testing.assert_allclose(parts[t], dz.T @ hs[t], rtol=1e-10, atol=1e-12)
    with pytest.raises(ug.CellError, match="no parameter 'nope'"):
        net.last_run.step_contributions("nope")


def test_unrolled_graph_is_acyclic_with_one_node_per_param_and_T_copies_of_each_op():
    T = 7
    cell = ug.nn.LSTMCell(3, 4, seed=0)
    net = ug.unroll(cell, steps=T)
    G = ug.to_networkx(net)
    assert nx.is_directed_acyclic_graph(G)
    ops = [d["op"] for _, d in G.nodes(data=True)]
    assert ops.count("param") == len(cell.parameters()) == 4
    body = cell.graph()
    batched = cell.batched()
    for node in body.nodes:
        copies = [n for n in net.nodes if n.origin is node and n.op == node.op]
        if node.op in ("param", "state"):  # params appear once; a state is the step before
            continue
        if id(node) in batched:
            # inputs and every op on the batch: one copy per step, each tagged with its step
            assert sorted(n.step for n in copies) == list(range(T)), node
        else:
            # ops on parameters alone (W.T) are computed once and shared by all steps
            assert len(copies) == 1 and copies[0].step is None, node
    # each parameter feeds the steps through one shared node: T fan-out edges in total
    wt = [n for n in net.nodes if n.op == "transpose"]
    for n in wt:
        consumers = [m for m in net.nodes if any(i is n for i in m.inputs)]
        assert sorted(m.step for m in consumers) == list(range(T))


def test_truncation_at_or_beyond_T_is_full_bptt_exactly():
    rng = np.random.default_rng(5)
    T, B, D, H = 6, 2, 3, 4
    xs = rng.standard_normal((T, B, D))
    R = rng.standard_normal((T, B, H))
    grads = []
    for k in (None, T, T + 3):
        cell, _ = _elman(D, H)
        out, _ = ug.unroll(cell, steps=T, truncate=k)(xs)
        (out * R).sum().backward()
        grads.append({n: p.grad for n, p in cell.parameters().items()})
    for g in grads[1:]:
        for n in g:
            assert np.array_equal(g[n], grads[0][n])


@pytest.mark.parametrize("k", [1, 3])
def test_truncated_bptt_in_the_graph_equals_the_truncated_formula(k):
    rng = np.random.default_rng(k)
    T, B, D, H = 7, 2, 3, 4
    cell, (Wih, Whh, bih, bhh) = _elman(D, H)
    net = ug.unroll(cell, steps=T, truncate=k)
    xs = ug.tensor(rng.standard_normal((T, B, D)), requires_grad=True)
    R = rng.standard_normal((T, B, H))
    out, _ = net(xs)
    (out * R).sum().backward()
    hs, raws, _ = elman_forward(xs.data, Wih, Whh, bih, bhh)
    dWih, dWhh, dbih, dbhh, dxs, _, _ = elman_backward(
        xs.data, hs, raws, R, Wih, Whh, first=T - k)
    np.testing.assert_allclose(cell.weight_hh.grad, dWhh, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cell.weight_ih.grad, dWih, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cell.bias_hh.grad, dbhh, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xs.grad, dxs, rtol=1e-10, atol=1e-12)
    assert np.all(xs.grad[: T - k] == 0)
    assert net.is_cut(net.state_nodes["h"][0]) and not net.is_cut(net.state_nodes["h"][-1])


def test_variable_lengths_leave_state_and_loss_untouched_past_each_length():
    rng = np.random.default_rng(11)
    T, B, D, H = 6, 3, 2, 4
    cell, (Wih, Whh, bih, bhh) = _elman(D, H)
    net = ug.unroll(cell, steps=T)
    lengths = np.array([6, 2, 4])
    xs = ug.tensor(rng.standard_normal((T, B, D)), requires_grad=True)
    R = rng.standard_normal((T, B, H))
    out, h = net(xs, lengths=lengths)
    (out * R).sum().backward()
    hs, raws, ys = elman_forward(xs.data, Wih, Whh, bih, bhh, lengths=lengths)
    np.testing.assert_allclose(out.data, ys, atol=1e-14)
    np.testing.assert_allclose(h.data, hs[-1], atol=1e-14)
    dWih, dWhh, dbih, dbhh, dxs, _, _ = elman_backward(
        xs.data, hs, raws, R, Wih, Whh, lengths=lengths)
    np.testing.assert_allclose(cell.weight_hh.grad, dWhh, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xs.grad, dxs, rtol=1e-10, atol=1e-12)
    # each sequence alone, run at its own length, gives the same final state and outputs
    for b, n in enumerate(lengths):
        alone, hb = ug.unroll(cell, steps=int(n))(xs.data[:n, b:b + 1])
        np.testing.assert_allclose(hb.data[0], h.data[b], atol=1e-14)
        np.testing.assert_allclose(alone.data[:, 0], out.data[:n, b], atol=1e-14)
        assert np.all(out.data[n:, b] == 0)
    with pytest.raises(ug.ShapeError, match=r"lengths must lie in \[0, 6\]"):
        net(xs, lengths=[7, 1, 1])
    with pytest.raises(ug.ShapeError, match="3 integers"):
        net(xs, lengths=[1, 2])


def test_compiled_and_generic_schedules_agree():
    """The fast path (step templates + time batching of the non-recurrent part) against the
    plain node-by-node loop: same values, gradients equal to rounding."""
    rng = np.random.default_rng(2)
    T, B, D, H = 5, 2, 3, 4
    xs = rng.standard_normal((T, B, D))
    results = []
    for generic in (False, True):
        cell = ug.nn.GRUCell(D, H, seed=1)
        net = ug.unroll(cell, steps=T)
        assert net._templates.ok
        # x W_ih^T + b_ih and its three gate slices run once for all steps
        assert [tb.op for tb in net._time_batch] == ["matmul", "add"] + ["getitem"] * 3
        if generic:
            net._templates.ok = False
            net._bprogs.clear()
        xt = ug.tensor(xs, requires_grad=True)
        out, h = net(xt)
        (out * out).sum().backward()
        results.append([out.data, xt.grad] + [p.grad for p in cell.parameters().values()])
    assert np.array_equal(results[0][0], results[1][0])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_schedule_is_built_once_per_net():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=4)
    prog = net._prog
    for _ in range(3):
        out, _ = net(np.ones((4, 2, 2)))
        out.sum().backward()
        steps = dict(net._step_lists)
    assert net._prog is prog and net._step_lists == steps and len(steps) == 1
    assert len(net._bprogs) == 1


def test_several_inputs_outputs_and_states():
    rng = np.random.default_rng(0)
    cell = ug.Cell("two")
    a = cell.input("a", (2,))
    b = cell.input("b", (3,))
    h = cell.state("h", (2,))
    c = cell.state("c", (2,), init=np.array([1.0, -1.0]))
    W = cell.param("W", rng.standard_normal((2, 3)))
    h_next = ug.tanh(a + b @ W.T + c)
    c_next = c * 0.5 + h
    cell.feedback(h, h_next)
    cell.feedback(c, c_next)
    cell.output("y", h_next)
    cell.output("z", c_next.sum(axis=1))
    net = ug.unroll(cell, steps=3)
    xs = {"a": rng.standard_normal((3, 4, 2)), "b": rng.standard_normal((3, 4, 3))}
    outs, (hT, cT) = net(xs)
    assert set(outs) == {"y", "z"}
    assert outs["y"].shape == (3, 4, 2) and outs["z"].shape == (3, 4)
    # by hand
    hh, cc = np.zeros((4, 2)), np.broadcast_to([1.0, -1.0], (4, 2))
    for t in range(3):
        hh, cc = np.tanh(xs["a"][t] + xs["b"][t] @ W.data.T + cc), cc * 0.5 + hh
    np.testing.assert_allclose(hT.data, hh, atol=1e-14)
    np.testing.assert_allclose(cT.data, cc, atol=1e-14)
    (outs["y"].sum() + outs["z"].sum()).backward()
    assert W.grad.shape == (2, 3)


def test_lstm_returns_h_and_c_and_float32_stays_float32():
    cell = ug.nn.LSTMCell(3, 4, seed=0, dtype=np.float32)
    net = ug.unroll(cell, steps=5)
    out, (h, c) = net(np.ones((5, 2, 3), dtype=np.float32))
    assert out.dtype == np.float32 and h.shape == (2, 4) and c.shape == (2, 4)
    out.sum().backward()
    assert cell.weight_hh.grad.dtype == np.float32


def test_no_grad_runs_without_a_graph():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=3)
    with ug.no_grad():
        out, h = net(np.ones((3, 1, 2)))
    assert not out.requires_grad and out.is_leaf
    with pytest.raises(ug.GradientError, match="does not require grad"):
        out.sum().backward()


def test_printing_the_cell_and_the_unrolled_graph():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    text = str(cell)
    assert "h <- h_next  (delay z^-1)" in text
    assert "h_next = tanh(n12)  # shape (B, 3)" in text
    net = ug.unroll(cell, steps=3)
    lines = str(net).splitlines()
    assert "h_next@2 = tanh(n12@2)  # shape (B, 3)" in lines
    assert "n9@1 = matmul(h_next@0, n8)  # shape (B, 3)" in lines
    assert sum(line.startswith("weight_hh = param()") for line in lines) == 1


def test_anomaly_mode_names_the_step():
    cell = ug.Cell("bad")
    x = cell.input("x", (1,))
    h = cell.state("h", (1,))
    h_next = ug.log(x + h, name="logsum")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    net = ug.unroll(cell, steps=3)
    with ug.detect_anomaly():
        with pytest.raises(ug.AnomalyError, match="logsum@0"):
            net(np.zeros((3, 1, 1)))


# -- validation ------------------------------------------------------------------------------

def test_state_without_feedback():
    cell = ug.Cell("c")
    x = cell.input("x", (2,))
    cell.state("h", (2,))
    cell.output("y", x * 2.0)
    with pytest.raises(ug.CellError, match="state 'h' has no feedback edge"):
        ug.unroll(cell, 3)


def test_feedback_shape_differs_from_state():
    cell = ug.Cell("c")
    x = cell.input("x", (3,))
    h = cell.state("h", (2,))
    with pytest.raises(ug.ShapeError, match=r"shape \(B, 3\) but state 'h' has shape \(B, 2\)"):
        cell.feedback(h, ug.tanh(x))


def test_output_that_does_not_depend_on_inputs_or_states():
    cell = ug.Cell("c")
    cell.input("x", (2,))
    W = cell.param("W", np.ones(2))
    with pytest.raises(ug.CellError, match="does not depend on any input or state"):
        cell.output("y", W * 2.0)


def test_name_used_twice():
    cell = ug.Cell("c")
    cell.input("x", (2,))
    with pytest.raises(ug.CellError, match="'x' is already used by an input"):
        cell.state("x", (2,))


def test_leaf_that_requires_grad_but_is_not_a_param():
    cell = ug.Cell("c")
    x = cell.input("x", (2,))
    w = ug.tensor(np.ones(2), requires_grad=True, name="w")
    with pytest.raises(ug.CellError, match="declare it with cell.param"):
        cell.output("y", x * w)


def test_cycle_without_a_delay_is_named():
    G = nx.DiGraph()
    G.add_node("a", op="tanh", name="a")
    G.add_node("b", op="neg", name="b")
    G.add_edge("a", "b", index=0)
    G.add_edge("b", "a", index=0)
    with pytest.raises(ug.CycleError, match="cycle without a one-step delay: .*a.*b") as err:
        ug.from_networkx(G)
    assert len(err.value.cycle) == 2
    # the same loop through a delay edge (into a state, which then has no inputs) is fine
    G.remove_edge("b", "a")
    G.nodes["a"]["op"] = "state"
    G.add_edge("b", "a", index=0, feedback=True)
    assert len(ug.from_networkx(G).feedback) == 1


def test_folded_cell_round_trips_through_networkx_with_its_delay():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    G = ug.to_networkx(cell)
    assert not nx.is_directed_acyclic_graph(G)  # the folded cell has its cycle
    delays = [(u, v) for u, v, d in G.edges(data=True) if d["feedback"]]
    assert [(G.nodes[u]["name"], G.nodes[v]["name"]) for u, v in delays] == [("h_next", "h")]
    g = ug.from_networkx(G)
    assert [n.op for n in g.nodes] == [n.op for n in cell.graph().nodes]


def test_bad_xs_shape_and_steps():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=4)
    with pytest.raises(ug.ShapeError, match=r"unroll again with ug.unroll\(cell, steps=5\)"):
        net(np.ones((5, 1, 2)))
    with pytest.raises(ug.ShapeError, match=r"must have shape \(T=4, B, 2\), got \(4, 1, 3\)"):
        net(np.ones((4, 1, 3)))
    with pytest.raises(ug.ShapeError, match=r"initial state 'h' must have shape \(1, 3\)"):
        net(np.ones((4, 1, 2)), state=np.zeros((2, 3)))
    with pytest.raises(ug.CellError, match="steps must be a positive int"):
        ug.unroll(cell, steps=0)


def test_shared_param_tensor_receives_the_gradient():
    W = ug.tensor(np.eye(2) * 0.5, requires_grad=True)
    cell = ug.Cell("c")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    assert cell.param("W", W) is W
    h_next = ug.tanh(x + h @ W.T)
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    out, _ = ug.unroll(cell, 3)(np.ones((3, 1, 2)))
    out.sum().backward()
    assert W.grad is not None and W.grad.shape == (2, 2)


def test_gradcheck_checks_a_ready_cells_parameters_in_place():
    rng = np.random.default_rng(4)
    cell = ug.nn.GRUCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=3)
    xs = rng.standard_normal((3, 2, 2))
    params = list(cell.parameters().values())
    before = [p.data.copy() for p in params]
    cell.weight_hh.grad = np.full((9, 3), 7.0)

    def loss(*ps):
        out, h = net(xs)
        return (out * out).sum() + h.sum()

    assert ug.gradcheck(loss, params)
    assert all(np.array_equal(p.data, b) for p, b in zip(params, before))
    assert np.all(cell.weight_hh.grad == 7.0)  # left as it was
    # and a wrong gradient is caught: scale the hidden-to-hidden weight's VJP by breaking the
    # value the function sees (a function of the parameters that backward does not know)
    with pytest.raises(ug.GradcheckError, match="weight_hh"):
        ug.gradcheck(lambda *ps: loss(*ps) + ug.tensor((cell.weight_hh.data ** 3).sum()),
                     params)


@pytest.mark.parametrize("make", [lambda: ug.nn.RNNCell(3, 4, seed=0),
                                  lambda: ug.nn.LSTMCell(3, 4, seed=0),
                                  lambda: ug.nn.GRUCell(3, 4, seed=0)])
def test_keep_needed_gives_the_same_gradients_and_frees_values(make):
    rng = np.random.default_rng(9)
    xs = rng.standard_normal((6, 2, 3))
    R = rng.standard_normal((6, 2, 4))
    results = []
    for keep in ("all", "needed"):
        cell = make()
        net = ug.unroll(cell, steps=6, keep=keep)
        xt = ug.tensor(xs, requires_grad=True)
        out, _ = net(xt)
        (out * R).sum().backward()
        run = net.last_run
        results.append((out.data, xt.grad, [p.grad for p in cell.parameters().values()],
                        run.state_grads(list(cell.states)[0])))
        arrays = sum(isinstance(v, np.ndarray) for v in run.values)
        grads = sum(isinstance(g, np.ndarray) for g in run.grads)
        if keep == "all":
            full = (arrays, grads)
        else:
            assert arrays < full[0] and grads < full[1]
            # a freed value keeps its shape, and diagrams still draw the net
            freed = [v for v in run.values if not isinstance(v, np.ndarray)]
            assert freed and all(v.shape[-1] in (4, 12, 16) for v in freed)
            assert "digraph" in ug.to_dot(net)
    (o1, x1, p1, s1), (o2, x2, p2, s2) = results
    assert np.array_equal(o1, o2)
    np.testing.assert_allclose(x2, x1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(s2, s1, rtol=1e-12, atol=1e-15)
    for a, b in zip(p1, p2):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)


def test_keep_must_be_all_or_needed():
    with pytest.raises(ug.CellError, match="keep must be 'all' or 'needed'"):
        ug.unroll(ug.nn.RNNCell(2, 3), steps=2, keep="some")


def test_a_cell_without_inputs_runs_on_its_state():
    cell = ug.Cell("rotation")
    h = cell.state("h", (2,), init=[1.0, 0.0])
    W = cell.param("W", np.array([[0.0, -1.0], [1.0, 0.0]]))  # a quarter turn per step
    h_next = h @ W.T
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    net = ug.unroll(cell, steps=4)
    out, hT = net(None)
    np.testing.assert_allclose(out.data[:, 0], [[0, 1], [-1, 0], [0, -1], [1, 0]], atol=1e-15)
    out3, _ = net(state=np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]), xs=None)
    assert out3.shape == (4, 3, 2)
    np.testing.assert_allclose(out3.data[-1], [[1, 0], [0, 2], [3, 3]], atol=1e-14)


def test_variable_lengths_with_states_and_outputs_of_other_ranks():
    """Masks follow each value's rank: a (B, 2, 3) state and a (B,) output."""
    rng = np.random.default_rng(1)
    cell = ug.Cell("grid")
    x = cell.input("x", (2, 3))
    h = cell.state("h", (2, 3))
    w = cell.param("w", rng.standard_normal((2, 3)))
    h_next = ug.tanh(x + h * w)
    cell.feedback(h, h_next)
    cell.output("y", h_next.sum(axis=(1, 2)))
    net = ug.unroll(cell, steps=4)
    xs = rng.standard_normal((4, 3, 2, 3))
    lengths = np.array([4, 1, 2])
    out, hT = net(xs, lengths=lengths)
    assert out.shape == (4, 3) and hT.shape == (3, 2, 3)
    for b, n in enumerate(lengths):
        alone, hb = ug.unroll(cell, steps=int(n))(xs[:n, b:b + 1])
        np.testing.assert_allclose(hb.data[0], hT.data[b], atol=1e-14)
        np.testing.assert_allclose(alone.data[:, 0], out.data[:n, b], atol=1e-14)
        assert np.all(out.data[n:, b] == 0)


def _zoo_cell(seed=0):
    """A cell using many ops in the shapes the compiled steps treat specially."""
    rng = np.random.default_rng(seed)
    cell = ug.Cell("zoo")
    x = cell.input("x", (3,))
    h = cell.state("h", (3,))
    W = cell.param("W", rng.standard_normal((3, 3)) * 0.5)
    v = cell.param("v", rng.standard_normal(3) * 0.5)       # a shared vector
    s = cell.param("s", np.array(0.7))                       # a shared scalar
    a = ug.relu(x @ W.T + 0.1) - ug.exp(-h * h) / (1.0 + ug.sigmoid(h))
    b = (h * v) @ W + s * ug.tanh(-a)                        # broadcasting against shared
    z = (h @ v)[:, None] * 0.3                               # matmul by a 1-D shared vector
    h_next = ug.tanh(a * b + z, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell


def test_compiled_steps_agree_with_the_generic_loop_on_many_ops():
    rng = np.random.default_rng(5)
    xs = rng.standard_normal((5, 4, 3))
    R = rng.standard_normal((5, 4, 3))
    results = []
    for generic in (False, True):
        cell = _zoo_cell()
        net = ug.unroll(cell, steps=5)
        assert net._templates.ok
        if generic:
            net._templates.ok = False
        xt = ug.tensor(xs, requires_grad=True)
        out, _ = net(xt)
        (out * R).sum().backward()
        results.append([out.data, xt.grad] + [p.grad for p in cell.parameters().values()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_zoo_cell_gradients_pass_gradcheck():
    cell = _zoo_cell()
    net = ug.unroll(cell, steps=3)
    xs = np.random.default_rng(6).standard_normal((3, 2, 3))

    def loss(*params):
        out, h = net(xs)
        return (out * out).sum() + h.sum()

    assert ug.gradcheck(loss, list(cell.parameters().values()))


@pytest.mark.parametrize("batch", [1, 512])
def test_lstm_small_and_large_batches_agree_with_the_generic_loop(batch):
    """A small batch runs the three sigmoid gates as one call on the gates (fused); a large
    one slice by slice. Both must match the node-by-node loop."""
    rng = np.random.default_rng(8)
    xs = rng.standard_normal((4, batch, 3))
    results = []
    for generic in (False, True):
        cell = ug.nn.LSTMCell(3, 5, seed=2)
        net = ug.unroll(cell, steps=4)
        assert net._fuse_size == 20  # the (B, 4H) gates feed three sigmoids
        if generic:
            net._templates.ok = False
        out, (h, c) = net(xs)
        (out * out).sum().backward()
        results.append([out.data, c.data] + [p.grad for p in cell.parameters().values()])
    # numpy's vectorised exp may round the last bit differently on a whole row and on a slice
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-14, atol=0)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def _pieces_cell(seed=0):
    """A state-dependent value cut into three uneven pieces along its last axis; the first
    piece is only a condition, so its gradient is none."""
    rng = np.random.default_rng(seed)
    cell = ug.Cell("pieces")
    x = cell.input("x", (2,))
    h = cell.state("h", (4,))
    W = cell.param("W", rng.standard_normal((4, 4)) * 0.5)
    U = cell.param("U", rng.standard_normal((2, 4)) * 0.5)
    A = cell.param("A", rng.standard_normal((2, 4)) * 0.5)
    u = h @ W + x @ U
    gate, mid, last = u[:, 0:1], u[:, 1:3], u[:, 3:4]
    h_next = ug.tanh(mid @ A + last * ug.where(gate, h, -h), name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell


def test_gradient_of_a_value_cut_into_pieces_is_assembled_like_the_generic_loop():
    """The step templates concatenate the pieces' gradients (zeros for the piece that gets
    none) instead of adding each into a zero-filled array."""
    rng = np.random.default_rng(9)
    xs = rng.standard_normal((4, 3, 2))
    results = []
    for generic in (False, True):
        cell = _pieces_cell()
        net = ug.unroll(cell, steps=4)
        [(axis, pieces)] = net._templates.tiled.values()
        assert (axis, [p[1:] for p in pieces]) == (1, [(0, 1), (1, 3), (3, 4)])
        if generic:
            net._templates.ok = False
        xt = ug.tensor(xs, requires_grad=True)
        out, _ = net(xt)
        (out * out).sum().backward()
        run = net.last_run
        cut = {id(n.inputs[0]): n.inputs[0] for n in net.nodes if n.op == "getitem"}
        u_grads = [run.grad(n) for n in cut.values()]  # the value cut, at each step
        results.append([xt.grad] + [p.grad for p in cell.parameters().values()] + u_grads)
    assert len(results[0]) == len(results[1]) == 4 + 4
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    cell = _pieces_cell()
    net = ug.unroll(cell, steps=3)
    assert ug.gradcheck(lambda *p: (net(xs[:3])[0] ** 2).sum(),
                        list(cell.parameters().values()))


def test_where_condition_computed_in_a_cell_is_evaluated_at_every_step():
    """A condition computed from the state is part of the graph, not frozen at build time."""
    cell = ug.Cell("flip")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    h_next = ug.where(h + x, x - h, h + 1.0)  # nonzero counts as true, like numpy
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    xs = np.array([[[1.0, -1.0]], [[-1.0, 2.0]], [[-2.0, -3.0]]])  # h + x is 0 at some steps
    out, _ = ug.unroll(cell, steps=3)(xs)
    hv, want = np.zeros((1, 2)), []
    for t in range(3):
        hv = np.where(hv + xs[t], xs[t] - hv, hv + 1.0)
        want.append(hv)
    np.testing.assert_array_equal(out.data, np.stack(want))
    assert np.array_equal(want[1], [[2.0, 3.0]]) and np.array_equal(want[2], [[3.0, 4.0]])


@pytest.mark.parametrize("make", [lambda: ug.nn.LSTMCell(3, 4, seed=0), _zoo_cell])
def test_a_lean_run_recomputes_what_it_dropped_exactly_when_asked(make):
    """keep="needed" (the default) drops values no VJP reads; diagrams and Run.value get them
    back from one more run, bit for bit what keep="all" computes."""
    xs = np.random.default_rng(3).standard_normal((5, 2, 3))
    runs = []
    for keep in ("all", "needed"):
        cell = make()
        net = ug.unroll(cell, steps=5, keep=keep)
        out, _ = net(xs)
        (out * out).sum().backward()
        runs.append((net, net.last_run))
    (net_a, run_a), (net_n, run_n) = runs
    dropped = [s for s, v in enumerate(run_n.values) if not isinstance(v, np.ndarray)]
    assert dropped and run_n.keep == "needed" and net_n.keep == "needed"
    full = run_n.full()
    assert full is run_n.full() and full.keep == "all"  # computed once
    for s in range(len(net_n.nodes)):
        va, vn = run_a.values[s], full.values[s]
        assert np.array_equal(va, vn), net_n.nodes[s].label()
        ga, gn = run_a.grads[s], full.grads[s]
        assert (ga is None and gn is None) or np.array_equal(ga, gn), net_n.nodes[s].label()
    node = net_n.nodes[dropped[-1]]
    assert np.array_equal(run_n.value(node), run_a.values[dropped[-1]])
    assert ug.to_dot(net_n, detail="ops", values=True) == ug.to_dot(net_a, detail="ops",
                                                                    values=True)


def test_a_lean_run_refuses_to_recompute_after_the_weights_changed():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=4)
    out, _ = net(np.ones((4, 1, 2)))
    out.sum().backward()
    ug.optim.SGD(cell.parameters(), lr=0.1).step()
    with pytest.raises(ug.UnrollGraphError, match=r"changed since the run .*Call the net again"):
        ug.to_dot(net, values=True)
    out, _ = net(np.ones((4, 1, 2)))  # a new run draws fine
    assert "digraph" in ug.to_dot(net, values=True)


def test_lean_run_with_mixed_float_types_keeps_numpys_promotion():
    """In-place computing is used only when every operand has the run's dtype: float32
    inputs with float64 weights still give what keep="all" gives (float64)."""
    xs = np.random.default_rng(4).standard_normal((3, 2, 3)).astype(np.float32)
    outs = []
    for keep in ("all", "needed"):
        cell = ug.nn.LSTMCell(3, 4, seed=1)
        out, (h, c) = ug.unroll(cell, steps=3, keep=keep)(xs)
        outs.append((out.data, c.data))
    assert outs[0][0].dtype == outs[1][0].dtype == np.float64
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("keep", ["needed", "all"])
def test_pooled_buffers_never_overwrite_what_a_caller_still_holds(keep):
    """Outputs, per-step values and gradients big enough for the buffer pool (>= 128 kB)
    survive later calls unchanged while anything refers to them."""
    T, B, D, H = 20, 16, 8, 64  # (T, B, H) float64 = 160 kB
    cell = ug.nn.RNNCell(D, H, seed=0)
    net = ug.unroll(cell, steps=T, keep=keep)
    rng = np.random.default_rng(0)
    xs1, xs2 = rng.standard_normal((2, T, B, D))
    out1, _ = net(xs1)
    out1.sum().backward()
    run1 = net.last_run
    kept_out = out1.data.copy()
    node = net.state_nodes["h"][5]
    kept_value = run1.value(node).copy()
    kept_grad = run1.grad(node).copy()
    assert out1.data.nbytes >= 1 << 17
    for _ in range(3):  # later calls, with other inputs
        out2, _ = net(xs2)
        (2.0 * out2).sum().backward()
    assert not np.array_equal(out2.data, kept_out)
    assert np.array_equal(out1.data, kept_out)
    assert np.array_equal(run1.value(node), kept_value)
    assert np.array_equal(run1.grad(node), kept_grad)
    assert np.array_equal(run1.full().values[net.slot(node)], kept_value)


def test_long_runs_work_a_chunk_of_steps_at_a_time(monkeypatch):
    """Past a size a run computes its input projection, its shared weights' gradients and the
    time-batched backward a chunk of steps at a time; the sums are the same (to rounding) as
    all steps at once, and a lean run and a keep="all" run chunk alike (the same bits)."""
    import importlib

    run_module = importlib.import_module("unrollgraph.run")

    xs = np.random.default_rng(1).standard_normal((9, 2, 3))
    results = {}
    for chunked in (False, True):
        if chunked:  # the states (2 x (3 + 3) floats a step) exceed the budget: 2 per chunk
            monkeypatch.setattr(run_module, "_FLUSH_ALL_BYTES", 0)
            monkeypatch.setattr(run_module, "_FLUSH_CHUNK_BYTES", 2 * 2 * (3 + 3) * 8)
            monkeypatch.setattr(run_module, "_CHUNKS", 1)
        for keep in ("needed", "all"):
            cell = ug.nn.LSTMCell(3, 3, seed=0)
            net = ug.unroll(cell, steps=9, keep=keep)
            out, _ = net(xs)
            (out * out).sum().backward()
            assert net.last_run.flush_chunk == (2 if chunked else 0)
            results[chunked, keep] = [out.data] + [p.grad for p in cell.parameters().values()]
            results[chunked, keep].append(net.last_run.state_grads("c"))
    for a, b in zip(results[True, "needed"], results[True, "all"]):
        assert np.array_equal(a, b)
    for a, b in zip(results[False, "needed"], results[True, "needed"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


# -- execution shortcuts compute what the plain reverse walk computes --------------------------
# (tests/test_differential.py draws random cells; these are the failing inputs found first)


@pytest.mark.parametrize("keep", ["needed", "all"])
def test_in_place_reuse_never_overwrites_a_value_another_slice_still_reads(keep):
    """-z is computed once for two slices (views of one array); `a + 1.0` must not be done in
    place in a's array, which b's numbers share."""
    cell = ug.Cell("views")
    x = cell.input("x", (3,))
    h = cell.state("h", (2,))
    W = cell.param("W", np.full((2, 3), 0.5))
    z = h @ W + x
    a = -z[:, 0:2]
    b = -z[:, 1:3]
    h_next = ug.tanh((a + 1.0) * b)
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    xs = np.tile(np.array([0.1, 0.2, 0.3]), (2, 1, 1))
    out, _ = ug.unroll(cell, steps=2, keep=keep)(xs)
    np.testing.assert_allclose(out.data[0, 0], [-0.17808087, -0.23549575], atol=1e-8)
    zz = np.array([[0.1, 0.2, 0.3]])
    want = np.tanh((1.0 - zz[:, 0:2]) * -zz[:, 1:3])
    np.testing.assert_array_equal(out.data[0], want)


@pytest.mark.parametrize("keep", ["needed", "all"])
def test_an_output_computed_from_inputs_only_is_stacked_with_its_values(keep):
    cell = ug.Cell("side")
    x = cell.input("x", (3,))
    h = cell.state("h", (2,))
    W = cell.param("W", np.full((3, 2), 0.5))
    V = cell.param("V", np.linspace(-1, 1, 6).reshape(3, 2))
    cell.feedback(h, ug.tanh(h + x @ W))
    cell.output("y", x @ V)
    xs = np.random.default_rng(0).standard_normal((4, 2, 3))
    out, _ = ug.unroll(cell, steps=4, keep=keep)(xs)
    np.testing.assert_allclose(out.data, xs @ V.data, rtol=1e-14)
    out.sum().backward()
    np.testing.assert_allclose(V.grad, xs.reshape(-1, 3).T @ np.ones((8, 2)), rtol=1e-12)


@pytest.mark.parametrize("keep", ["needed", "all"])
@pytest.mark.parametrize("outputs", ["same node", "prev and next"])
def test_two_outputs_on_one_node_add_their_gradients(keep, outputs):
    rng = np.random.default_rng(1)
    cell = ug.Cell("twice")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    w = cell.param("w", np.array([0.3, -0.2]))
    h_next = ug.tanh(h * w + x)
    cell.feedback(h, h_next)
    if outputs == "same node":
        cell.output("a", h_next)
    else:
        cell.output("a", h)   # prev = h: step t's value is step t-1's h_next
    cell.output("b", h_next)
    net = ug.unroll(cell, steps=3, keep=keep)
    xs = rng.standard_normal((3, 2, 2))

    def loss(*_):
        o, _ = net(xs)
        return o["a"].sum() + 2 * o["b"].sum()

    loss().backward()
    got = w.grad.copy()
    assert ug.gradcheck(loss, [w])
    w.zero_grad()
    # by hand: the same function with eager tensors
    wt = ug.tensor(w.data, requires_grad=True)
    hv, total = ug.tensor(np.zeros((2, 2))), None
    for t in range(3):
        nxt = ug.tanh(hv * wt + xs[t])
        a = nxt if outputs == "same node" else hv
        term = a.sum() + 2 * nxt.sum()
        total = term if total is None else total + term
        hv = nxt
    total.backward()
    np.testing.assert_allclose(got, wt.grad, rtol=1e-12)


@pytest.mark.parametrize("keep", ["needed", "all"])
def test_a_declared_parameter_nothing_uses_runs_and_gets_no_gradient(keep):
    cell = ug.Cell("spare")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    w = cell.param("w", np.array([0.3, -0.2]))
    b = cell.param("b", np.zeros(2))
    h_next = ug.tanh(h * w + x)
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    with pytest.warns(ug.CellWarning, match="'b'"):
        net = ug.unroll(cell, steps=3, keep=keep)
    out, _ = net(np.ones((3, 1, 2)))
    out.sum().backward()
    assert b.grad is None and w.grad is not None
    parts = net.last_run.step_contributions("b")
    assert parts.shape == (3, 2) and not parts.any()
    with pytest.raises(ug.CellError, match="no parameter 'nope'"):
        net.last_run.step_contributions("nope")
    with pytest.warns(ug.CellWarning, match="'b'"):  # (a lengths= call builds its own net)
        out, _ = net(np.ones((3, 1, 2)), lengths=[2])
    out.sum().backward()
    assert b.grad is None


# -- padded steps contribute exactly nothing ----------------------------------------------------


def _normalising_cell(seed=0):
    """x / sqrt(sum(x * x)): NaN on an all-zero (padding) input."""
    rng = np.random.default_rng(seed)
    cell = ug.Cell("normalise")
    x = cell.input("x", (3,))
    h = cell.state("h", (4,))
    W = cell.param("W", rng.standard_normal((4, 3)) * 0.5)
    U = cell.param("U", rng.standard_normal((4, 4)) * 0.5)
    b = cell.param("b", rng.standard_normal(4) * 0.1)
    xn = x / ug.sqrt((x * x).sum(axis=1, keepdims=True))
    h_next = ug.tanh(xn @ W.T + h @ U.T + b, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell


@pytest.mark.parametrize("keep", ["needed", "all"])
def test_a_nan_in_a_padded_step_does_not_reach_the_gradients(keep):
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((3, 2, 3))
    xs[2, 1] = 0.0  # sequence 1 is padded at step 2 with zeros
    R = rng.standard_normal((3, 2, 4))
    cell = _normalising_cell()
    net = ug.unroll(cell, steps=3, keep=keep)
    xt = ug.tensor(xs, requires_grad=True)
    out, h = net(xt, lengths=[3, 2])
    (out * R).sum().backward()
    grads = {k: p.grad.copy() for k, p in cell.parameters().items()}
    for g in list(grads.values()) + [xt.grad, net.last_run.state_grads()]:
        assert np.all(np.isfinite(g))
    assert np.all(xt.grad[2, 1] == 0)
    assert np.array_equal(xs[2, 1], np.zeros(3))  # the caller's array is not changed
    # equal to running each sequence alone at its own length
    want = {k: 0.0 for k in grads}
    for b, n in enumerate([3, 2]):
        cell.zero_grad()
        alone = ug.tensor(xs[:n, b:b + 1], requires_grad=True)
        o, hb = ug.unroll(cell, steps=n, keep=keep)(alone)
        (o * R[:n, b:b + 1]).sum().backward()
        np.testing.assert_allclose(out.data[:n, b], o.data[:, 0], rtol=1e-13)
        np.testing.assert_allclose(h.data[b], hb.data[0], rtol=1e-13)
        np.testing.assert_allclose(xt.grad[:n, b], alone.grad[:, 0], rtol=1e-11, atol=1e-14)
        for k, p in cell.parameters().items():
            want[k] = want[k] + p.grad
    for k in grads:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-11, atol=1e-14)


def test_where_sends_exact_zeros_to_the_unselected_branch():
    """ug.where follows PyTorch and JAX: the unselected branch gets exact zeros, whatever the
    gradient (a NaN included). A NaN made by an op at a singular point (1/x at 0) on the
    unselected side still reaches its inputs through that op's own derivative (0 * inf), as
    in both; the double-where idiom keeps it out."""
    x = ug.tensor([0.0, 2.0], requires_grad=True)
    a = ug.tensor([1.0, 1.0], requires_grad=True)
    y = ug.where(np.array([False, True]), a, x)
    y.backward(np.array([np.nan, 1.0]))
    assert np.array_equal(a.grad, [0.0, 1.0])
    assert np.isnan(x.grad[0]) and x.grad[1] == 0.0
    nonzero = x.data != 0
    safe = ug.where(nonzero, x, 1.0)          # the double where: no 1/0 is ever computed
    z = ug.where(nonzero, 1.0 / safe, 0.0)
    x.zero_grad()
    z.sum().backward()
    assert np.array_equal(x.grad, [0.0, -0.25])


# -- every Run accessor with lengths -------------------------------------------------------------


def test_state_grads_with_full_lengths_equal_the_unmasked_net():
    rng = np.random.default_rng(4)
    xs = rng.standard_normal((4, 2, 3))
    R = rng.standard_normal((4, 2, 5))
    res = []
    for lengths in (None, [4, 4]):
        cell = ug.nn.RNNCell(3, 5, seed=3)
        net = ug.unroll(cell, steps=4)
        out, h = net(xs, lengths=lengths)
        ((out * R).sum() + h.sum()).backward()
        run = net.last_run
        res.append((run.state_grads(), run.step_contributions("weight_hh"),
                    [run.value(n) for n in run.net.state_nodes["h"]],
                    [run.full().values[run.net.slot(n)] for n in run.net.state_nodes["h"]],
                    cell.weight_hh.grad))
    (g0, c0, v0, f0, w0), (g1, c1, v1, f1, w1) = res
    norms = np.linalg.norm(g0.reshape(4, -1), axis=1)
    assert np.all(norms > 0.5)
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c1, c0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(w1, w0, rtol=1e-12, atol=1e-14)
    for a, b in zip(v0 + f0, v1 + f1):
        np.testing.assert_allclose(a, b, rtol=1e-13)


@pytest.mark.parametrize("make", [lambda: ug.nn.RNNCell(2, 3, seed=0),
                                  lambda: ug.nn.LSTMCell(2, 3, seed=0),
                                  lambda: ug.nn.GRUCell(2, 3, seed=0)])
@settings(max_examples=8)
@given(lengths=st.lists(st.integers(0, 4), min_size=1, max_size=3), seed=st.integers(0, 99))
def test_run_accessors_with_ragged_lengths_equal_each_sequence_alone(make, lengths, seed):
    rng = np.random.default_rng(seed)
    T, B = 4, len(lengths)
    xs = rng.standard_normal((T, B, 2))
    R = rng.standard_normal((T, B, 3))
    cell = make()
    net = ug.unroll(cell, steps=T)
    out, fin = net(xs, lengths=lengths)
    h = fin[0] if isinstance(fin, tuple) else fin
    ((out * R).sum() + (h * h).sum()).backward()
    run = net.last_run
    first = list(cell.states)[0]
    sg = run.state_grads(first)
    parts = {k: run.step_contributions(k) for k in cell.parameters()}
    for k, p in cell.parameters().items():
        np.testing.assert_allclose(parts[k].sum(axis=0), p.grad, rtol=1e-10, atol=1e-13)
    want_parts = {k: np.zeros_like(v) for k, v in parts.items()}
    for b, n in enumerate(lengths):
        if n == 0:
            assert not np.any(out.data[:, b])
            continue
        one = ug.unroll(cell, steps=n)
        o, fb = one(xs[:n, b:b + 1])
        hb = fb[0] if isinstance(fb, tuple) else fb
        ((o * R[:n, b:b + 1]).sum() + (hb * hb).sum()).backward()
        r1 = one.last_run
        np.testing.assert_allclose(out.data[:n, b], o.data[:, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(sg[:n, b], r1.state_grads(first)[:, 0], rtol=1e-10,
                                   atol=1e-13)
        np.testing.assert_allclose(sg[n:, b], np.broadcast_to(2 * h.data[b], sg[n:, b].shape),
                                   rtol=1e-12)
        for t in range(n):
            node, node1 = run.net.state_nodes[first][t], one.state_nodes[first][t]
            np.testing.assert_allclose(run.value(node)[b], r1.value(node1)[0], rtol=1e-12)
        for k in parts:
            want_parts[k][:n] += r1.step_contributions(k)
    for k in parts:
        np.testing.assert_allclose(parts[k], want_parts[k], rtol=1e-10, atol=1e-13)


def test_a_lean_run_keeps_no_state_gradient_until_asked(monkeypatch):
    """A lean backward pass drops each state's gradient once used (keeping them would double
    what BPTT keeps); state_grads() gets them from a second pass over the kept values, equal
    bit for bit to a keep="all" run's, and refuses once the weights have changed."""
    import importlib

    run_module = importlib.import_module("unrollgraph.run")
    monkeypatch.setattr(run_module, "_OUTPUT_BUFFER_BYTES", 0)  # outputs written in place
    xs = np.random.default_rng(0).standard_normal((6, 2, 3))
    got = {}
    for keep in ("needed", "all"):
        cell = ug.nn.GRUCell(3, 4, seed=0)
        net = ug.unroll(cell, steps=6, keep=keep)
        out, _ = net(xs)
        run = net.last_run
        for s in next(iter(net._output_slots.values())):  # each output is a row of out
            assert np.shares_memory(run.values[s], out.data)
        (out * out).sum().backward()
        states = next(iter(net._state_slots.values()))
        if keep == "needed":
            assert all(run.grads[s] is None for s in states)
        got[keep] = run.state_grads()
        if keep == "needed":
            cell2 = ug.nn.GRUCell(3, 4, seed=0)
            net2 = ug.unroll(cell2, steps=6)
            out2, _ = net2(xs)
            (out2 * out2).sum().backward()
            ug.optim.SGD(cell2.parameters(), lr=0.1).step()
            with pytest.raises(ug.UnrollGraphError,
                               match=r"Run.state_grads\(\): the parameter .* has changed"):
                net2.last_run.state_grads()
    assert np.array_equal(got["needed"], got["all"])


# -- the collector is paused while a net is built and its schedule compiled -----------------------
@pytest.fixture
def collector():
    """Run a test with the collector on and leave it as the test found it."""
    import gc

    was = gc.isenabled()
    gc.enable()
    yield gc
    (gc.enable if was else gc.disable)()


@pytest.mark.parametrize("start_enabled", [True, False])
def test_build_pauses_the_collector_and_restores_its_setting(collector, monkeypatch,
                                                              start_enabled):
    unroll_module = sys.modules["unrollgraph.unroll"]  # (ug.unroll is the function)

    seen = []
    real = unroll_module.compile_schedule

    def spy(net):
        seen.append(collector.isenabled())
        real(net)

    monkeypatch.setattr(unroll_module, "compile_schedule", spy)
    (collector.enable if start_enabled else collector.disable)()
    net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=4)
    assert seen == [False]  # off while building
    assert collector.isenabled() is start_enabled  # the caller's setting afterwards
    out, _ = net(np.ones((4, 1, 2)))  # the first call compiles the step functions
    out.sum().backward()
    assert collector.isenabled() is start_enabled


@pytest.mark.parametrize("start_enabled", [True, False])
def test_a_build_that_raises_restores_the_collector(collector, monkeypatch, start_enabled):
    unroll_module = sys.modules["unrollgraph.unroll"]  # (ug.unroll is the function)

    def broken(net):
        assert not collector.isenabled()
        raise ug.CellError("compiling failed")

    monkeypatch.setattr(unroll_module, "compile_schedule", broken)
    (collector.enable if start_enabled else collector.disable)()
    with pytest.raises(ug.CellError, match="compiling failed"):
        ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=4)
    assert collector.isenabled() is start_enabled


def test_a_backward_program_that_raises_restores_the_collector(collector, monkeypatch):
    import unrollgraph.compile as compile_module

    def broken(net, key):
        raise RuntimeError("backward program failed")

    net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=4)
    monkeypatch.setattr(compile_module, "_backward_program", broken)
    out, _ = net(np.ones((4, 1, 2)))
    with pytest.raises(RuntimeError, match="backward program failed"):
        out.sum().backward()
    assert collector.isenabled()


def test_overlapping_pauses_restore_the_setting_once_all_have_left(collector):
    """Two threads each pause the collector; it comes back on only when the last one leaves,
    in whichever order they leave, also when one of them raises."""
    import threading

    from unrollgraph.graph import gc_paused

    for first_out in ("a", "b"):
        entered = {k: threading.Event() for k in "ab"}
        leave = {k: threading.Event() for k in "ab"}
        states = {}

        def worker(k, entered=entered, leave=leave, states=states):
            try:
                with gc_paused():
                    entered[k].set()
                    leave[k].wait(5)
                    if k == "b":
                        raise ValueError("inside")
            except ValueError:
                pass
            states[k] = collector.isenabled()

        threads = {k: threading.Thread(target=worker, args=(k,)) for k in "ab"}
        for k in "ab":
            threads[k].start()
            entered[k].wait(5)
        assert not collector.isenabled()
        second_out = "b" if first_out == "a" else "a"
        leave[first_out].set()
        threads[first_out].join(5)
        assert states[first_out] is False  # the other one is still building
        leave[second_out].set()
        threads[second_out].join(5)
        assert states[second_out] is True and collector.isenabled()


# -- gradients accumulate in place only into arrays nothing else can see ---------------------------
def test_alone_accepts_only_an_array_no_one_else_can_see():
    from unrollgraph.schedule import alone

    def check(container, key, g):
        prev = container[key]  # as the callers hold it
        return alone(prev, g)

    g = np.ones((2, 3))
    assert check({"k": np.zeros((2, 3))}, "k", g)  # fresh, owned by the container alone
    assert check({"k": np.zeros((2, 3))}, "k", None)
    held = np.zeros((2, 3))
    assert not check({"k": held}, "k", g)  # a variable still refers to it
    base = np.zeros((4, 3))
    assert not check({"k": base[:2]}, "k", g)  # a view: writing it writes its base
    ro = np.zeros((2, 3))
    ro.flags.writeable = False
    box = {"k": ro}
    del ro
    assert not check(box, "k", g)  # read-only
    assert not check({"k": np.zeros((1, 3))}, "k", g)  # would broadcast
    assert not check({"k": np.zeros((2, 3), np.float32)}, "k", g)  # would cast
    assert not check({"k": 0.0}, "k", g)  # not an array


@pytest.mark.parametrize("make", [lambda: ug.nn.GRUCell(3, 4, seed=0),
                                  lambda: ug.nn.LSTMCell(3, 4, seed=0)])
@pytest.mark.parametrize("chunk_bytes", [None, 2 * 4 * 8, 2 * 2 * 4 * 8 * 2])
def test_in_place_gradient_sums_leave_the_seeds_and_equal_the_reference_walk(
        make, chunk_bytes, monkeypatch):
    """A weight's gradient summed a chunk of steps at a time, and the slices of a
    time-batched projection (a GRU's and an LSTM's gates), add in place into arrays the run
    made; the caller's seed arrays are never written, and the gradients are the reference
    walk's (detect_anomaly), whatever the chunking."""
    import importlib

    run_module = importlib.import_module("unrollgraph.run")
    if chunk_bytes is not None:
        monkeypatch.setattr(run_module, "_FLUSH_ALL_BYTES", 0)
        monkeypatch.setattr(run_module, "_FLUSH_CHUNK_BYTES", chunk_bytes)
        monkeypatch.setattr(run_module, "_CHUNKS", 1)
    rng = np.random.default_rng(3)
    xs = ug.tensor(rng.standard_normal((7, 2, 3)), requires_grad=True)
    seed = rng.standard_normal((7, 2, 4))
    seed_copy = seed.copy()
    grads = {}
    for anomaly in (False, True):
        cell = make()
        net = ug.unroll(cell, steps=7)
        xs.grad = None
        if anomaly:
            with ug.detect_anomaly():
                out, _ = net(xs)
                out.backward(seed)
        else:
            out, _ = net(xs)
            out.backward(seed)
        assert np.array_equal(seed, seed_copy)
        grads[anomaly] = [p.grad.copy() for p in cell.parameters().values()] + [xs.grad]
    for a, b in zip(grads[False], grads[True]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("start_enabled", [True, False])
def test_a_large_build_is_followed_by_one_full_collection_only_if_the_collector_is_on(
        collector, monkeypatch, start_enabled):
    unroll_module = sys.modules["unrollgraph.unroll"]
    calls = []
    monkeypatch.setattr(unroll_module.gc, "collect", lambda *a: calls.append(a) or 0)
    (collector.enable if start_enabled else collector.disable)()
    monkeypatch.setattr(unroll_module, "SETTLE_NODES", 40)
    small = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=2)
    assert len(small.nodes) < 40 and calls == []  # small: no collection
    big = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=20)
    assert len(big.nodes) >= 40
    assert calls == ([()] if start_enabled else [])
    assert collector.isenabled() is start_enabled
# -- the net's printout names what it copies from the cell as the cell's printout does -------

def _cell_name_of(net, n, cell_graph):
    """The cell printout's name for the cell node ``n`` of the net copies, with ``@step``."""
    src = n if n in cell_graph else n.origin
    base = cell_graph.display_name(src)
    return base if n.step is None or n.name else f"{base}@{n.step}"


@pytest.mark.filterwarnings("ignore::unrollgraph.CellWarning")  # (random cells: see
@settings(max_examples=20, deadline=None)                      # test_differential.py)
@given(spec=importlib.import_module("test_differential").cells(), T=st.integers(1, 3),
       masked=st.booleans())
def test_every_node_copied_from_the_cell_prints_with_the_cells_name(spec, T, masked):
    """Every node of the net that is a cell node (a constant, a parameter) or a copy of one
    (``W.T`` once, ``n7@2`` per step) prints in ``print(net)`` and in networkx under the
    name ``print(cell)`` gives it (with ``@step`` for a per-step copy), never one made from
    the net's own numbering: a constant ``n5`` in the cell is ``n5`` in the net."""
    diff = importlib.import_module("test_differential")
    cell = diff.build_cell(spec, diff._param_values(spec, 0))
    net = Unrolled(cell, T, masked=True) if masked else ug.unroll(cell, steps=T)
    cg = cell.graph()
    G = ug.to_networkx(net)
    for n in net.nodes:
        if n in cg or (n.origin is not None and n.origin in cg and n.role != "input"):
            want = _cell_name_of(net, n, cg)
            if n.name:
                continue  # a user name is printed as written (tested elsewhere)
            assert net.graph.display_name(n) == want, n
            assert G.nodes[net.graph.id(n)]["name"] == want


def test_a_constant_keeps_its_cell_id_in_the_net_and_networkx():
    c = ug.Cell("c")
    x = c.input("x", (2,))
    h = c.state("h", (2,))
    W = c.param("W", np.eye(2))
    hn = ug.tanh(x @ W.T + h * 3.0, name="h_next")
    c.feedback(h, hn)
    c.output("y", hn)
    assert "\nn5 = const()" in str(c)
    net = ug.unroll(c, steps=2)
    assert "\nn5 = const()" in str(net) and "n6@0 = mul(h_init, n5)" in str(net)
    assert "′" not in str(net)
    assert "n5" in {d["name"] for _, d in ug.to_networkx(net).nodes(data=True)}


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("make", [lambda: ug.nn.RNNCell(8, 64, seed=0),
                                  lambda: ug.nn.LSTMCell(8, 64, seed=0),
                                  lambda: ug.nn.GRUCell(8, 64, seed=0)])
def test_outputs_computed_in_their_rows_match_a_kept_run_bit_for_bit(make, chunked,
                                                                     monkeypatch):
    """A lean run computes its outputs straight into the rows of the output array, keeps the
    initial state in a row before them, stacks those rows without a copy and adds the input
    projection's bias in place: the same bits as a keep="all" run, which does none of that;
    the caller's initial state is left as it was."""
    import importlib

    run_module = importlib.import_module("unrollgraph.run")
    if chunked:
        monkeypatch.setattr(run_module, "_FLUSH_ALL_BYTES", 0)
    T, B = 12, 32  # (T, B, H) float64 = 192 kB: outputs written into their rows
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((T, B, 8))
    R = rng.standard_normal((T, B, 64))
    h0 = rng.standard_normal((B, 64))
    results = []
    for keep in ("all", "needed"):
        cell = make()
        net = ug.unroll(cell, steps=T, keep=keep)
        h = ug.tensor(h0, requires_grad=True)
        state = {k: h if k == "h" else np.zeros((B, 64)) for k in cell.states}
        out, _ = net(ug.tensor(xs), state=state)
        (out * R).sum().backward()
        run = net.last_run
        assert (run.flush_chunk > 0) == chunked
        assert np.array_equal(h.data, h0)
        assert np.array_equal(run.values[net._init_slots["h"]], h0)
        if keep == "needed":  # (the compiled steps that write the rows ran)
            assert any(key[3] for key in net._step_lists)
        for t in (0, T - 1):  # each step's output is its row of the output array
            assert np.shares_memory(run.value(net.state_nodes["h"][t]), out.data)
        results.append([out.data, h.grad, run.state_grads("h")]
                       + [p.grad for p in cell.parameters().values()])
    for a, b in zip(*results):
        assert a.dtype == b.dtype and np.array_equal(a, b)

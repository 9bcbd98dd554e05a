"""Gradient flow through time: ug.gradient_flow and ug.compare_flows."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import unrollgraph as ug  # noqa: E402

CELLS = {
    "rnn": lambda H, seed: ug.nn.RNNCell(2, H, seed=seed),
    "lstm": lambda H, seed: ug.nn.LSTMCell(2, H, seed=seed),
    "gru": lambda H, seed: ug.nn.GRUCell(2, H, seed=seed),
}


def _run(cell, T=6, B=2, seed=0, scale=None, truncate=None, loss="all"):
    if scale is not None:
        cell.weight_hh.data = cell.weight_hh.data * scale
    net = ug.unroll(cell, T, truncate=truncate)
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(T, B, 2))
    out, _ = net(xs)
    w = rng.normal(size=out.shape)
    if loss == "last":
        w[:-1] = 0.0
    (out * w).sum().backward()
    return net, xs, w


def _fd_jacobian(cell, xs, run, t, b, eps=1e-6):
    """∂s_T/∂s_t for sample b by central differences on the joint state (all states)."""
    net = run.net
    T = net.steps
    names = list(cell.states)
    s_t = [np.asarray(run.value(net.state_nodes[s][t]))[b:b + 1].copy() for s in names]
    sizes = [a.size for a in s_t]
    flat = np.concatenate([a.ravel() for a in s_t])

    def final(v):
        if t == T - 1:
            return v
        parts, k = [], 0
        for a, n in zip(s_t, sizes):
            parts.append(v[k:k + n].reshape(a.shape))
            k += n
        sub = ug.unroll(cell, T - 1 - t)
        with ug.no_grad():
            _, fin = sub(xs[t + 1:, b:b + 1], state=tuple(parts))
        fin = fin if isinstance(fin, tuple) else (fin,)
        return np.concatenate([np.asarray(f.data).ravel() for f in fin])

    J = np.zeros((flat.size, flat.size))
    for j in range(flat.size):
        e = np.zeros(flat.size)
        e[j] = eps
        J[:, j] = (final(flat + e) - final(flat - e)) / (2 * eps)
    return J, sizes


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_jacobian_norms_equal_finite_difference_jacobians(kind):
    cell = CELLS[kind](3, 1)
    net, xs, _ = _run(cell, T=5, B=2)
    flow = ug.gradient_flow(net.last_run)
    names = list(cell.states)
    for t in range(5):
        for b in range(2):
            J, sizes = _fd_jacobian(cell, xs, net.last_run, t, b)
            offs = np.cumsum([0] + sizes)
            for j, s in enumerate(names):
                block = J[offs[j]:offs[j + 1], offs[j]:offs[j + 1]]
                got = flow._jac_samples[s][t, b]
                assert got == pytest.approx(np.linalg.norm(block, 2), rel=1e-6, abs=1e-9)
            assert flow.joint_jacobian_norms[t] >= np.linalg.norm(J, 2) * (1 - 1e-6)
    # over the batch: the largest sample's, the spectral norm of the block-diagonal Jacobian
    for s in names:
        jn = flow.jacobian_norms if len(names) == 1 else flow.jacobian_norms[s]
        assert np.allclose(jn, flow._jac_samples[s].max(axis=1))
        assert jn[-1] == pytest.approx(1.0)


@settings(max_examples=8, deadline=None)
@given(H=st.integers(1, 4), T=st.integers(1, 5), scale=st.floats(0.2, 4.0),
       seed=st.integers(0, 50))
def test_rnn_jacobian_norms_match_finite_differences_property(H, T, scale, seed):
    cell = ug.nn.RNNCell(2, H, seed=seed)
    net, xs, _ = _run(cell, T=T, B=1, seed=seed, scale=scale)
    flow = ug.gradient_flow(net.last_run)
    for t in range(T):
        J, _ = _fd_jacobian(cell, xs, net.last_run, t, 0)
        assert flow.jacobian_norms[t] == pytest.approx(np.linalg.norm(J, 2), rel=1e-5,
                                                       abs=1e-8)


def test_jacobian_of_a_state_of_a_few_hundred():
    cell = ug.nn.LSTMCell(2, 150, seed=0)  # S = 300
    net, xs, _ = _run(cell, T=3, B=1)
    flow = ug.gradient_flow(net.last_run)
    J, sizes = _fd_jacobian(cell, xs, net.last_run, 1, 0)
    c = J[150:, 150:]
    assert flow.jacobian_norms["c"][1] == pytest.approx(np.linalg.norm(c, 2), rel=1e-6)
    assert flow.joint_jacobian_norms[1] == pytest.approx(np.linalg.norm(J, 2), rel=1e-6)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_state_grad_norms_are_the_norms_of_state_grads(kind):
    cell = CELLS[kind](4, 0)
    net, _, _ = _run(cell)
    run = net.last_run
    flow = ug.gradient_flow(run)
    for s in cell.states:
        want = np.sqrt((run.state_grads(s) ** 2).sum(axis=(1, 2)))
        got = flow.state_grad_norms if len(cell.states) == 1 else flow.state_grad_norms[s]
        assert np.allclose(got, want, rtol=1e-12)


def test_direct_and_carried_parts_rnn():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net, _, w = _run(cell, T=6, B=2)
    flow = ug.gradient_flow(net.last_run)
    g = net.last_run.state_grads()
    # the output is the state: the loss at step t sends w[t] straight to h_t
    assert np.allclose(flow.direct_grad_norms, np.sqrt((w ** 2).sum(axis=(1, 2))))
    carried = g - w
    assert np.allclose(flow.carried_grad_norms, np.sqrt((carried ** 2).sum(axis=(1, 2))))
    assert flow.carried_grad_norms[-1] == 0.0


def test_direct_part_of_lstm_cell_state_is_the_loss_at_that_step():
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    net, _, w = _run(cell, T=5, B=2)
    run = net.last_run
    flow = ug.gradient_flow(run)
    for t in range(5):
        o = run.value([n for n in net.nodes if n.name == "o" and n.step == t][0])
        c = run.value(net.state_nodes["c"][t])
        want = w[t] * o * (1 - np.tanh(c) ** 2)  # ∂ℓ_t/∂c_t through h_t = o tanh(c_t)
        assert flow.direct_grad_norms["c"][t] == pytest.approx(np.linalg.norm(want), rel=1e-10)
        carried = run.state_grads("c")[t] - want
        assert flow.carried_grad_norms["c"][t] == pytest.approx(np.linalg.norm(carried),
                                                                 rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_loss_at_the_last_step_only_is_all_carried_before_it(kind):
    cell = CELLS[kind](3, 2)
    net, _, _ = _run(cell, T=5, loss="last")
    flow = ug.gradient_flow(net.last_run)
    for s in cell.states:
        d = flow._direct[s]
        c = flow._carried[s]
        assert np.all(d[:-1] == 0) and d[-1] > 0
        assert np.allclose(c[:-1], flow._grad[s][:-1]) and c[-1] == pytest.approx(0, abs=1e-15)


def test_final_state_seed_is_direct_at_the_last_step():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, 4)
    out, h = net(np.ones((4, 1, 2)))
    (h * h).sum().backward()
    flow = ug.gradient_flow(net.last_run)
    assert flow.direct_grad_norms[-1] == pytest.approx(np.linalg.norm(2 * h.data))
    assert np.all(flow.direct_grad_norms[:-1] == 0)


def test_sigma_max_equals_numpy_svd_and_regime():
    for scale, regime in ((0.3, "vanishing"), (6.0, "may explode")):
        cell = ug.nn.RNNCell(2, 5, seed=3)
        net, _, _ = _run(cell, scale=scale)
        flow = ug.gradient_flow(net.last_run)
        assert flow.recurrent_weight == "weight_hh" and flow.gamma == 1.0
        assert flow.sigma_max == pytest.approx(np.linalg.svd(cell.weight_hh.data)[1][0],
                                               rel=1e-12)
        assert flow.regime == regime
        assert regime.split()[-1][:5] in flow.regime_text()


def test_sigma_bound_for_custom_sigmoid_cell_and_gated_cells():
    cell = ug.Cell("sig")
    x = cell.input("x", (2,))
    h = cell.state("h", (3,))
    W = cell.param("W", np.ones((3, 2)))
    U = cell.param("U", np.eye(3) * 3.0)
    nxt = ug.sigmoid(x @ W.T + h @ U, name="h_next")
    cell.feedback(h, nxt)
    cell.output("y", nxt)
    net = ug.unroll(cell, 4)
    out, _ = net(np.ones((4, 1, 2)))
    out.sum().backward()
    flow = ug.gradient_flow(net.last_run)
    assert (flow.recurrent_weight, flow.gamma) == ("U", 0.25)
    assert flow.sigma_max == pytest.approx(3.0) and flow.regime == "vanishing"  # 3 < 4
    for kind in ("lstm", "gru"):
        c = CELLS[kind](3, 0)
        n2, _, _ = _run(c)
        f2 = ug.gradient_flow(n2.last_run)
        assert f2.sigma_max is None and f2.regime is None
        assert "does not apply" in f2.regime_text()
        # named by hand, with gamma
        f3 = ug.gradient_flow(n2.last_run, recurrent_weight="weight_hh", gamma=1.0)
        assert f3.sigma_max == pytest.approx(np.linalg.svd(c.weight_hh.data)[1][0])


def test_weight_contributions_norms_and_shares():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net, _, _ = _run(cell, T=6)
    run = net.last_run
    flow = ug.gradient_flow(run)
    assert set(flow.weight_contribution_norms) == set(cell.parameters())
    for k in cell.parameters():
        parts = run.step_contributions(k)
        want = np.sqrt((parts.reshape(6, -1) ** 2).sum(axis=1))
        assert np.allclose(flow.weight_contribution_norms[k], want)
        assert flow.weight_contribution_shares[k].sum() == pytest.approx(1.0)
    only = ug.gradient_flow(run, weights=["weight_hh"])
    assert list(only.weight_contribution_norms) == ["weight_hh"]


def test_truncated_run():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net, _, _ = _run(cell, T=8, truncate=3)
    flow = ug.gradient_flow(net.last_run)
    assert np.all(flow.state_grad_norms[:5] == 0) and np.all(flow.state_grad_norms[5:] > 0)
    assert np.all(flow.direct_grad_norms[:5] == 0) and np.all(flow.carried_grad_norms[:5] == 0)
    assert np.all(flow.jacobian_norms > 0)  # the forward map's derivative, not cut
    assert np.all(flow.weight_contribution_norms["weight_hh"][:5] == 0)
    assert flow.truncate == 3 and "truncated to the last 3" in flow.table()


def test_nothing_changes_behind_the_users_back():
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    net, _, _ = _run(cell)
    run = net.last_run
    before = {k: p.grad.copy() for k, p in cell.parameters().items()}
    g = run.state_grads("c").copy()
    ug.gradient_flow(run)
    assert net.last_run is run
    assert np.array_equal(run.state_grads("c"), g)
    for k, p in cell.parameters().items():
        assert np.array_equal(p.grad, before[k])


def test_errors():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, 3)
    net(np.ones((3, 1, 2)))
    with pytest.raises(ug.UnrollGraphError, match="loss.backward"):
        ug.gradient_flow(net.last_run)
    with pytest.raises(ug.UnrollGraphError, match="needs a run"):
        ug.gradient_flow(net)
    net2, _, _ = _run(cell)
    with pytest.raises(ug.CellError, match="not a parameter.*weight_hh"):
        ug.gradient_flow(net2.last_run, weights=["W_hh"])
    with pytest.raises(ug.UnrollGraphError, match="outside the batch of 2"):
        ug.gradient_flow(net2.last_run, samples=[5])
    with pytest.raises(ug.UnrollGraphError, match="needs gamma"):
        ug.gradient_flow(net2.last_run, recurrent_weight="weight_ih")
    with pytest.raises(ug.UnrollGraphError, match="one label per run"):
        ug.compare_flows([net2.last_run], ["a", "b"])
    with pytest.raises(ug.UnrollGraphError, match="no state 'c'"):
        ug.compare_flows([net2.last_run], ["a"], state="c")
    with pytest.raises(ug.UnrollGraphError, match="unknown quantity"):
        ug.compare_flows([net2.last_run], quantities=["hessian"])


def test_samples_option_restricts_the_jacobians():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net, _, _ = _run(cell, B=3)
    full = ug.gradient_flow(net.last_run)
    one = ug.gradient_flow(net.last_run, samples=1)
    assert np.allclose(one.jacobian_norms, full.jacobian_norms_per_sample[:, 1])


def test_table_markdown_dataframe():
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    net, _, _ = _run(cell, T=30)
    flow = ug.gradient_flow(net.last_run)
    text = flow.table()
    assert "|dL/dc_t|" in text and "|dc_T/dc_t|_2" in text and "share of weight_hh" in text
    assert len(text.splitlines()) == 3 + 1 + 20  # header lines, column heads, 20 rows
    assert len(flow.table(max_rows=None).splitlines()) == 3 + 1 + 30
    md = flow.to_markdown(max_rows=5)
    assert md.count("\n| ") == 6 and "---:|" in md
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ug.UnrollGraphError, match="pip install pandas"):
            flow.to_dataframe()
    else:
        df = flow.to_dataframe()
        assert df.shape[0] == 30 and np.allclose(df["grad_norm_c"], flow.state_grad_norms["c"])


def _not_blank_png(path):
    from matplotlib.image import imread

    img = imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # lines and text, not a blank page


def test_plot_writes_png_svg_pdf(tmp_path):
    cell = ug.nn.RNNCell(2, 4, seed=0)
    net, _, _ = _run(cell, T=12, truncate=8)
    fig = ug.gradient_flow(net.last_run).plot()
    assert fig.axes[0].get_yscale() == "log"
    assert any("σ₁(weight_hh)" in t.get_text() for t in fig.axes[0].texts)
    for ext in ("png", "svg", "pdf"):
        fig.savefig(tmp_path / f"flow.{ext}")
    assert (tmp_path / "flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "flow.svg").read_bytes()[:2000]
    assert (tmp_path / "flow.pdf").read_bytes()[:5] == b"%PDF-"
    _not_blank_png(tmp_path / "flow.png")


def test_compare_flows_one_scale(tmp_path):
    runs, flows = [], []
    for kind in ("rnn", "lstm", "gru"):
        net, _, _ = _run(CELLS[kind](3, 0), T=10)
        runs.append(net.last_run)
        flows.append(ug.gradient_flow(net.last_run))
    fig = ug.compare_flows(runs, ["RNN", "LSTM", "GRU"], state=["h", "c", "h"])
    a, b = fig.axes
    assert a.get_shared_y_axes().joined(a, b)
    assert a.get_yscale() == "log" and len(a.lines) == 3
    lo, hi = a.get_ylim()
    for f, s in zip(flows, ["h", "c", "h"]):
        v = f._grad[s]
        assert lo <= v[v > 0].min() and v.max() <= hi
    # flows already measured work too
    fig2 = ug.compare_flows(flows, ["RNN", "LSTM", "GRU"], quantities="grad")
    assert len(fig2.axes) == 1
    fig.savefig(tmp_path / "cmp.png")
    _not_blank_png(tmp_path / "cmp.png")

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
    assert "|dL/dc_t|" in text and "|dc_T/dc_t|_2" in text and "|term_t(weight_hh)|/sum" in text

    def rows(text):  # one block per state (h, then c), each with its step rows
        return [line.split()[0] for line in text.splitlines() if line[:3].strip().isdigit()]

    assert rows(text) == 2 * [str(t) for t in flow._rows(20)] and len(flow._rows(20)) == 20
    assert rows(flow.table(max_rows=None)) == 2 * [str(t) for t in range(30)]
    assert "state h:" in text and text.index("state h:") < text.index("state c:")
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


# -- remedies ---------------------------------------------------------------------------------

def _grads(seed=0):
    rng = np.random.default_rng(seed)
    ws = [ug.tensor(rng.normal(size=s), requires_grad=True) for s in ((3, 2), (4,))]
    for w in ws:
        w.backward(gradient=rng.normal(size=w.shape) * 50)
    return ws


@settings(max_examples=15, deadline=None)
@given(norm=st.floats(1e-3, 1e3), seed=st.integers(0, 100))
def test_normalize_grad_norm_sets_the_global_norm(norm, seed):
    ws = _grads(seed)
    before = [w.grad.copy() for w in ws]
    total = ug.normalize_grad_norm(ws, norm=norm)
    assert total == pytest.approx(np.sqrt(sum((b ** 2).sum() for b in before)))
    after = np.sqrt(sum((w.grad ** 2).sum() for w in ws))
    assert after == pytest.approx(norm, rel=1e-12)
    for w, b in zip(ws, before):  # same direction
        assert np.allclose(w.grad, b * norm / total)


def test_normalize_grad_norm_small_zero_nonfinite_and_bad_arguments():
    w = ug.tensor([0.0, 0.0], requires_grad=True)
    w.backward(gradient=[0.0, 0.0])
    assert ug.normalize_grad_norm([w]) == 0.0 and np.all(w.grad == 0)  # no direction: kept
    v = ug.tensor([1.0, 1.0], requires_grad=True)
    v.backward(gradient=[1e-3, 0.0])
    ug.normalize_grad_norm([v], norm=2.0)
    assert np.allclose(v.grad, [2.0, 0.0])  # a short gradient grows (clipping would not)
    v.grad = [np.nan, 1.0]
    with pytest.raises(ug.GradientError, match="total gradient norm is nan"):
        ug.normalize_grad_norm([v])
    for bad in (0.0, -1.0, float("inf"), float("nan"), "1", None):
        with pytest.raises(ug.TrainingError, match="normalize_grad_norm: .*norm"):
            ug.normalize_grad_norm([v], norm=bad)
    assert ug.normalize_grad_norm([ug.tensor([1.0], requires_grad=True)]) == 0.0


def test_normalize_a_read_only_intermediate_gradient_gets_a_copy():
    x = ug.tensor([3.0, 4.0], requires_grad=True)
    y = x * 1.0
    y.sum().backward()
    assert not y.grad.flags.writeable
    ug.normalize_grad_norm([y], norm=1.0)
    assert np.allclose(y.grad, np.ones(2) / np.sqrt(2)) and np.allclose(x.grad, 1.0)


def test_clipping_keeps_the_global_norm_at_the_threshold():
    ws = _grads(1)
    total = ug.clip_grad_norm(ws, max_norm=2.0)
    assert total > 2.0
    assert np.sqrt(sum((w.grad ** 2).sum() for w in ws)) == pytest.approx(2.0, rel=1e-6)


def test_residual_cell_jacobians_stay_within_a_factor_of_the_identitys():
    T = 40
    res = ug.nn.ResidualRNNCell(2, 8, hh_scale=0.1, seed=0)
    plain = ug.nn.RNNCell(2, 8, seed=0)
    plain.weight_hh.data = res.weight_hh.data
    flows = []
    for cell in (res, plain):
        net = ug.unroll(cell, T)
        out, _ = net(np.random.default_rng(0).normal(size=(T, 2, 2)))
        out[-1].sum().backward()
        flows.append(ug.gradient_flow(net.last_run))
    jr, jp = flows[0].jacobian_norms, flows[1].jacobian_norms
    assert np.all(jr > 1 / 10) and np.all(jr < 10)   # the identity's norm is 1
    assert jp[0] < 1e-12                              # the plain cell's shrinks away
    assert flows[0].sigma_max is None                 # h + f(...): not an Elman form


def test_residual_cell_gradients_and_errors():
    cell = ug.nn.ResidualRNNCell(2, 3, nonlinearity="relu", seed=1)
    net = ug.unroll(cell, 4)
    xs = np.random.default_rng(0).normal(size=(4, 2, 2))
    params = list(cell.parameters().values())
    assert ug.gradcheck(lambda *p: net(xs)[0], params)
    out, h = net(xs)
    assert np.allclose(out.data[0], np.maximum(
        xs[0] @ cell.weight_ih.data.T + cell.bias_ih.data + cell.bias_hh.data, 0))
    for bad in (float("nan"), "1", True):
        with pytest.raises(ug.CellError, match="hh_scale"):
            ug.nn.ResidualRNNCell(2, 3, hh_scale=bad)


def test_truncation_error_is_full_minus_truncated_terms():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    T, k = 9, 3
    xs = np.random.default_rng(0).normal(size=(T, 2, 2))
    full = ug.unroll(cell, T)
    out, _ = full(xs)
    (out ** 2).sum().backward()
    want_full = full.last_run.step_contributions("weight_hh")
    cell.zero_grad()
    trunc = ug.unroll(cell, T, truncate=k)
    out, _ = trunc(xs)
    (out ** 2).sum().backward()
    kept = trunc.last_run.step_contributions("weight_hh")
    grad_before = cell.weight_hh.grad.copy()
    err = ug.truncation_error(trunc.last_run)
    assert np.array_equal(cell.weight_hh.grad, grad_before)
    assert np.allclose(err.full_norms["weight_hh"],
                       np.sqrt((want_full ** 2).sum(axis=(1, 2))))
    missing = np.sqrt(((want_full - kept) ** 2).sum(axis=(1, 2)))
    assert np.allclose(err.missing_norms["weight_hh"], missing)
    assert np.all(err.missing_norms["weight_hh"][1:T - k] > 0)
    assert np.allclose(err.missing_norms["weight_hh"][T - k:], 0, atol=1e-12)
    rel = np.linalg.norm((want_full - kept).sum(0)) / np.linalg.norm(want_full.sum(0))
    assert err.relative_error["weight_hh"] == pytest.approx(rel)
    assert "relative error" in err.table() and len(err.plot().axes) == 1
    # no truncation: nothing is left out
    err0 = ug.truncation_error(full.last_run)
    assert all(v == 0 for v in err0.relative_error.values())
    with pytest.raises(ug.UnrollGraphError, match="needs a run"):
        ug.truncation_error(trunc)


def test_a_run_whose_weights_changed_since_is_refused():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net, _, _ = _run(cell, T=5)
    run = net.last_run
    trunc, _, _ = _run(cell, T=5, truncate=2)
    ug.optim.SGD(cell.parameters(), lr=0.5).step()
    changed = r"parameter '\w+' of 'RNNCell' has changed since the run \(an SGD step\)"
    with pytest.raises(ug.UnrollGraphError, match=changed):
        ug.gradient_flow(run)
    with pytest.raises(ug.UnrollGraphError, match=changed):
        ug.truncation_error(trunc.last_run)


@pytest.mark.parametrize("k1,k2", [(3, 3), (2, 5), (4, 6), (10, 10)])
def test_tbptt_truncation_error_matches_tbptt_and_full_bptt(k1, k2):
    cell = ug.nn.RNNCell(2, 3, seed=0)
    head = ug.train.Linear(3, 1, seed=0)
    rng = np.random.default_rng(0)
    T = 10
    xs, ys = rng.normal(size=(T, 2, 2)), rng.normal(size=(T, 2, 1))
    head.weight.grad = np.full((1, 3), 7.0)  # the user's: must come back unchanged
    err = ug.tbptt_truncation_error(cell, xs, ys, ug.mse_loss, k1, k2, readout=head)
    assert np.array_equal(head.weight.grad, np.full((1, 3), 7.0))
    assert all(p.grad is None for p in cell.parameters().values())
    # the kept terms add up to what tbptt itself accumulates with fixed weights
    ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=k1, k2=k2, readout=head)
    got = cell.weight_hh.grad.copy()
    cell.zero_grad()
    # full BPTT of the sum of the windows' losses
    outs, _ = ug.unroll(cell, T)(xs)
    total, prev = None, 0
    while prev < T:
        e = min(prev + k1, T)
        part = ug.mse_loss(head(outs[prev:e]), ys[prev:e])
        total = part if total is None else total + part
        prev = e
    total.backward()
    want = cell.weight_hh.grad.copy()
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err.relative_error["weight_hh"] == pytest.approx(rel, rel=1e-8, abs=1e-12)
    assert err.windows == (k1, k2) and "TBPTT(k1=" in err.table()
    if k1 == k2 == T:
        assert np.allclose(err.missing_norms["weight_hh"], 0, atol=1e-12)
    else:
        assert err.missing_norms["weight_hh"].max() > 0
    with pytest.raises(ug.TrainingError, match="k2=1 < k1=2"):
        ug.tbptt_truncation_error(cell, xs, ys, ug.mse_loss, 2, 1)


def test_arguments_of_the_wrong_kind_are_named():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net, _, _ = _run(cell, B=2)
    run = net.last_run
    one = ug.gradient_flow(run, weights="weight_hh")  # one name, not its letters
    assert list(one.weight_contribution_norms) == ["weight_hh"]
    for bad, words in ((1.5, "an int or a list"), ([True], "batch indices"), ([], "is empty"),
                       ("0", "an int or a list"), ([-1], "outside the batch")):
        with pytest.raises(ug.UnrollGraphError, match=words):
            ug.gradient_flow(run, samples=bad)
    with pytest.raises(ug.UnrollGraphError, match="parameter names"):
        ug.gradient_flow(run, weights=[3])
    with pytest.raises(ug.UnrollGraphError, match="a parameter name or a list"):
        ug.truncation_error(run, weights=3)
    with pytest.raises(ug.UnrollGraphError, match="labels must be a list"):
        ug.compare_flows([run, run], "ab")


# -- ragged lengths, the bound's scope, NaN and unmeasured values, the share column ----------

@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_ragged_lengths_each_sample_measured_to_its_own_end(kind):
    """With lengths=[6, 4, 2] each sample's Jacobian norms are those of running it alone over
    its own length; steps past it are NaN, and the aggregate is not a flat 1."""
    cell = CELLS[kind](3, 0)
    T, lengths = 6, [6, 4, 2]
    xs = np.random.default_rng(1).normal(size=(T, 3, 2))
    net = ug.unroll(cell, T)
    out, _ = net(xs, lengths=lengths)
    out.sum().backward()
    flow = ug.gradient_flow(net.last_run)
    for b, n in enumerate(lengths):
        alone = ug.unroll(cell, n)
        o, _ = alone(xs[:n, b:b + 1])
        o.sum().backward()
        ref = ug.gradient_flow(alone.last_run)
        for s in cell.states:
            got = flow._jac_samples[s][:, b]
            assert np.allclose(got[:n], ref._jac[s], rtol=1e-9, atol=1e-12)
            assert np.all(np.isnan(got[n:]))
    # the aggregate is the longest sample's, which decays going back: not 1 from t = 1 on
    first = flow.jacobian_norms if len(cell.states) == 1 else flow.jacobian_norms["h"]
    assert np.all(first[:-1] < 0.999)
    assert flow.measured_decay() == pytest.approx(first[:-1].max())   # the last step's 1 left out
    assert flow.lengths == lengths and flow.measured_samples == [0]
    assert "lengths [6, 4, 2]" in flow.table() and "own last real step" in flow.table()


def test_sigma_bound_is_qualified_for_a_residual_cell():
    cell = ug.nn.ResidualRNNCell(2, 8, hh_scale=0.1)
    net = ug.unroll(cell, 20)
    out, _ = net(np.random.default_rng(0).normal(size=(20, 2, 2)))
    out.sum().backward()
    flow = ug.gradient_flow(net.last_run, recurrent_weight="weight_hh", gamma=1.0)
    assert flow.sigma_max == pytest.approx(np.linalg.svd(cell.weight_hh.data)[1][0])
    assert flow.sigma_max < 1 and flow.measured_decay() > 1
    assert not flow.bound_applies and flow.regime is None
    text = flow.regime_text()
    assert "sufficient for vanishing" not in text and "not of that form" in text
    assert f"{flow.measured_decay():.3g}" in text
    assert "not applicable" in ug.gradient_flow(net.last_run, recurrent_weight="weight_hh",
                                                gamma=1.0).plot().axes[0].texts[-1].get_text()


def test_a_regime_the_measured_numbers_contradict_is_flagged():
    cell = ug.nn.RNNCell(2, 4, seed=0)
    cell.weight_hh.data = 1.3 * np.eye(4)
    net = ug.unroll(cell, 8)
    out, _ = net(np.zeros((8, 1, 2)))
    out.sum().backward()
    wrong = ug.gradient_flow(net.last_run, recurrent_weight="weight_hh", gamma=0.25)
    assert wrong.regime == "vanishing" and "contradicts it" in wrong.regime_text()
    right = ug.gradient_flow(net.last_run)
    assert right.regime == "may explode" and "contradicts" not in right.regime_text()


def test_state_grads_without_a_name_gives_every_state():
    net, _, _ = _run(ug.nn.LSTMCell(2, 3, seed=0))
    run = net.last_run
    both = run.state_grads()
    assert set(both) == {"h", "c"}
    for s in ("h", "c"):
        assert np.array_equal(both[s], run.state_grads(s))
    rnn, _, _ = _run(ug.nn.RNNCell(2, 3, seed=0))
    assert isinstance(rnn.last_run.state_grads(), np.ndarray)     # one state: the array
    with pytest.raises(ug.CellError, match="no state 'z'"):
        run.state_grads("z")


def test_unmeasured_samples_are_nan_not_zero():
    net, _, _ = _run(ug.nn.LSTMCell(2, 3, seed=0), B=3)
    flow = ug.gradient_flow(net.last_run, samples=[1])
    for s in ("h", "c"):
        per = flow.jacobian_norms_per_sample[s]
        assert np.all(np.isnan(per[:, [0, 2]])) and np.all(np.isfinite(per[:, 1]))
        assert np.array_equal(flow.jacobian_norms[s], per[:, 1])


def test_nan_gradients_give_nan_shares():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, 4)
    xs = np.ones((4, 1, 2))
    xs[1, 0, 0] = np.nan
    with np.errstate(invalid="ignore"):
        out, _ = net(xs)
        out.sum().backward()
        flow = ug.gradient_flow(net.last_run)
    assert np.all(np.isnan(flow.weight_contribution_shares["weight_hh"]))
    assert "nan" in flow.table().splitlines()[-1]


def test_share_column_uses_the_recurrent_weight_of_a_custom_cell():
    cell = ug.Cell("mine")
    x = cell.input("x", (2,))
    h = cell.state("h", (3,))
    W = cell.param("W", np.full((3, 2), 0.1))
    U = cell.param("U", 0.5 * np.eye(3))
    nxt = ug.tanh(x @ W.T + ug.sigmoid(h) @ U.T)      # not Elman-type: U is found anyway
    cell.feedback(h, nxt)
    cell.output("y", nxt)
    net = ug.unroll(cell, 5)
    out, _ = net(np.ones((5, 1, 2)))
    out.sum().backward()
    flow = ug.gradient_flow(net.last_run)
    assert flow.sigma_max is None and flow.share_weight == "U" and flow.share_identified
    assert "|term_t(U)|/sum" in flow.table()
    # no product with the state: the first parameter, and the table says so
    c2 = ug.Cell("additive")
    x2 = c2.input("x", (2,))
    h2 = c2.state("h", (2,))
    b = c2.param("b", np.ones(2))
    n2 = ug.tanh(x2 + h2 + b)
    c2.feedback(h2, n2)
    c2.output("y", n2)
    net2 = ug.unroll(c2, 4)
    o2, _ = net2(np.ones((4, 1, 2)))
    o2.sum().backward()
    f2 = ug.gradient_flow(net2.last_run)
    assert f2.share_weight == "b" and not f2.share_identified
    assert "no recurrent weight was identified" in f2.table()


def test_stacked_lstm_table_fits_100_columns():
    cell = ug.nn.LSTM(2, 3, num_layers=2, seed=0)
    net = ug.unroll(cell, 12)
    out, _ = net(np.ones((12, 1, 2)))
    out.sum().backward()
    text = ug.gradient_flow(net.last_run).table()
    assert max(len(line) for line in text.splitlines()) <= 100
    for s in cell.states:
        assert f"state {s}:" in text


# -- what the pictures show -------------------------------------------------------------------

def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _visible_ticks(ax, which="x"):
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    return [v for v in axis.get_majorticklocs() if lo <= v <= hi]


def test_plot_integer_ticks_zero_markers_and_hidden_carried_line():
    cell = ug.nn.RNNCell(2, 4, seed=0)
    net, _, _ = _run(cell, T=20, loss="last")
    flow = ug.gradient_flow(net.last_run)
    fig = flow.plot()
    ax = fig.axes[0]
    ticks = _visible_ticks(ax)
    assert len(ticks) >= 4 and all(float(v).is_integer() for v in ticks)
    # step 0's weight term is 0 (h_-1 = 0): a marker on the bottom axis, not a silent gap
    assert flow.weight_contribution_norms["weight_hh"][0] == 0
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert [0.0, 0.0] in offsets.tolist()
    labels = ax.get_legend().get_texts()
    assert any("zero" in t.get_text() for t in labels)
    # loss at the last step only: the carried part is the whole gradient; drawn once, and said
    assert not any(t.get_text().startswith("carried") for t in labels)
    assert any("all of it is carried" in t.get_text() for t in labels)
    assert len(ax.lines) == 4     # |dL/dh_t|, direct, Jacobian, weight term: no carried line


def test_plot_into_a_grid_keeps_legend_and_box_inside_each_axes():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), dpi=80)
    axes = fig.subplots(1, 2)
    for ax, kind in zip(axes, ("rnn", "gru")):
        net, _, _ = _run(CELLS[kind](3, 0), T=10)
        assert ug.gradient_flow(net.last_run).plot(ax=ax, title=kind) is fig
    r = _drawn(fig)
    for ax in axes:
        box = ax.get_window_extent(r)
        for art in [ax.get_legend()] + list(ax.texts):
            e = art.get_window_extent(r)
            assert box.x0 - 1 <= e.x0 and e.x1 <= box.x1 + 1, art
            assert box.y0 - 1 <= e.y0 and e.y1 <= box.y1 + 1, art


def test_long_titles_are_wrapped_inside_the_figure():
    net, _, _ = _run(ug.nn.RNNCell(2, 3, seed=0), T=8)
    long = "A title long enough to run off the side of the figure " * 3
    fig = ug.gradient_flow(net.last_run).plot(title=long.strip())
    r = _drawn(fig)
    t = fig.axes[0].title
    assert "\n" in t.get_text()
    e, f = t.get_window_extent(r), fig.bbox
    assert f.x0 <= e.x0 and e.x1 <= f.x1


def test_plot_of_several_states_one_colour_per_state():
    cell = ug.nn.LSTM(2, 3, num_layers=2, seed=0)
    net = ug.unroll(cell, 8)
    out, _ = net(np.ones((8, 1, 2)))
    out.sum().backward()
    flow = ug.gradient_flow(net.last_run)
    ax = flow.plot().axes[0]
    per_state = {}
    for ln in ax.lines:
        per_state.setdefault(ln.get_color(), []).append(ln)
    state_colours = [c for c, lines in per_state.items() if len(lines) >= 2]
    assert len(state_colours) == 4            # each state's lines share one colour
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [x for x in labels if x.startswith("state ")] == [f"state {s}" for s in cell.states]
    assert len(labels) <= 10
    # an LSTM (two states) also gets the direct and carried parts, as the RNN does
    net2, _, _ = _run(ug.nn.LSTMCell(2, 3, seed=0), T=8)
    labels2 = [t.get_text() for t in
               ug.gradient_flow(net2.last_run).plot().axes[0].get_legend().get_texts()]
    assert "carried from later steps" in labels2 and "direct: loss at step t" in labels2


def test_compare_flows_of_different_lengths_align_at_the_end():
    runs = []
    for T in (10, 40):
        net, _, _ = _run(ug.nn.RNNCell(2, 3, seed=0), T=T, loss="last")
        runs.append(net.last_run)
    fig = ug.compare_flows(runs, ["T = 10", "T = 40"])
    ax = fig.axes[0]
    assert "steps before the last" in ax.get_xlabel() and ax.xaxis_inverted()
    short, long_ = ax.lines[:2]
    assert list(short.get_xdata()) == list(range(9, -1, -1))
    assert list(long_.get_xdata()) == list(range(39, -1, -1))
    same = ug.compare_flows(runs, ["T = 10", "T = 40"], align="start")
    assert same.axes[0].get_xlabel() == "step t"
    with pytest.raises(ug.UnrollGraphError, match="align"):
        ug.compare_flows(runs, ["a", "b"], align="middle")


def test_compare_flows_colours_per_label_and_plain_state_names():
    from matplotlib.colors import to_hex

    flows = []
    for kind in ("rnn", "lstm"):
        net, _, _ = _run(CELLS[kind](3, 0), T=6)
        flows.append(ug.gradient_flow(net.last_run))
    colours = {"RNN": "#123456", "LSTM": "#abcdef", "unused": "#000000"}
    fig = ug.compare_flows(flows, ["RNN", "LSTM"], state=["h", "c"], colors=colours)
    ax = fig.axes[0]
    assert [to_hex(ln.get_color()) for ln in ax.lines] == ["#123456", "#abcdef"]
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert labels[:2] == ["RNN, state h", "LSTM, state c"]
    assert "‖∂L/∂h_t‖ or ‖∂L/∂c_t‖" in ax.get_title() and "s:" not in ax.get_title()
    with pytest.raises(ug.UnrollGraphError, match="no colour for"):
        ug.compare_flows(flows, ["RNN", "GRU"], colors=colours)


def test_truncation_plot_marks_step_0_and_labels_enough_ticks():
    cell = ug.nn.RNNCell(2, 6, seed=0)
    net = ug.unroll(cell, 20, truncate=5)
    out, _ = net(np.random.default_rng(0).normal(size=(20, 2, 2)))
    out.sum().backward()
    fig = ug.truncation_error(net.last_run).plot()
    ax = fig.axes[0]
    r = _drawn(fig)
    labelled = [t for t in ax.yaxis.get_ticklabels(which="both")
                if t.get_text() and t.get_visible() and t.get_window_extent(r).height > 0
                and ax.get_window_extent(r).y0 - 2 <= t.get_window_extent(r).y0
                <= ax.get_window_extent(r).y1 + 2]
    assert len(labelled) >= 4
    assert [0.0, 0.0] in np.concatenate([c.get_offsets() for c in ax.collections]).tolist()
    assert not ax.texts           # the cut is in the legend, not written over the lines
    assert any("truncated: no gradient" in t.get_text() for t in ax.get_legend().get_texts())
    assert all(float(v).is_integer() for v in _visible_ticks(ax))


@pytest.mark.parametrize("cell", [ug.nn.RNNCell(2, 3, seed=0), ug.nn.LSTMCell(2, 3, seed=0)],
                         ids=["rnn", "lstm"])
def test_table_lists_each_column_once(cell):
    net, _, _ = _run(cell, T=6)
    text = ug.gradient_flow(net.last_run).table()
    for head in (line.split() for line in text.splitlines() if line.startswith("t ")):
        assert len(head) == len(set(head)), head

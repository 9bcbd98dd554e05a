"""The training loop, evaluation, both forms of truncated BPTT (against hand-written numpy
Elman forward/backward loops) and the training example."""

import importlib.util
import io
import pathlib

import numpy as np
import pytest

import unrollgraph as ug
import unrollgraph.train as train_mod
from unrollgraph.errors import GradientError, UnrollGraphError
from unrollgraph.optim import TrainingError

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


# -- a hand-written Elman RNN in numpy ---------------------------------------------------------

def elman_forward(p, xs, h0):
    """States h_0..h_{T-1} after each step (h0 is the state before step 0)."""
    hs, h = [], h0
    for x in xs:
        h = np.tanh(x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"])
        hs.append(h)
    return hs


def elman_backward(p, xs, h_start, hs, dys, lo, hi):
    """Backpropagate output gradients dys[t] (dL/dh_t, t in [lo, hi)) through steps
    hi-1 down to lo only: h_start, the state before step lo, is a constant. Returns parameter
    gradients and dL/dx_t for every t (zero outside [lo, hi))."""
    g = {k: np.zeros_like(v) for k, v in p.items()}
    dxs = np.zeros_like(xs)
    dh = np.zeros_like(h_start)
    for t in range(hi - 1, lo - 1, -1):
        dh = dh + dys[t]
        dz = dh * (1.0 - hs[t] ** 2)
        h_prev = h_start if t == lo else hs[t - 1]
        g["weight_ih"] += dz.T @ xs[t]
        g["weight_hh"] += dz.T @ h_prev
        g["bias_ih"] += dz.sum(0)
        g["bias_hh"] += dz.sum(0)
        dxs[t] = dz @ p["weight_ih"]
        dh = dz @ p["weight_hh"]
    return g, dxs


def _data(T, B=3, D=2, H=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, B, D)), rng.normal(size=(T, B, H))


def _grads(cell):
    return {k: cell.parameters()[k].grad.copy() for k in NAMES}


# -- in-graph truncation: ug.unroll(cell, T, truncate=k) ---------------------------------------

@pytest.mark.parametrize("k", [1, 3, 5])
def test_in_graph_truncation_matches_hand_truncated_bptt(k):
    T, H = 7, 4
    xs_np, ys = _data(T, H=H)
    cell = ug.nn.RNNCell(2, H, seed=1)
    xs = ug.tensor(xs_np, requires_grad=True)
    outputs, _ = ug.unroll(cell, T, truncate=k)(xs)
    ug.mse_loss(outputs, ys).backward()

    p = cell.state_dict()
    h0 = np.zeros((3, H))
    hs = elman_forward(p, xs_np, h0)
    np.testing.assert_allclose(outputs.data, np.stack(hs), rtol=1e-13)
    # the loss is over every output, but outputs at steps t < T - k carry no gradient
    dys = [2.0 * (hs[t] - ys[t]) / ys.size if t >= T - k else np.zeros_like(h0)
           for t in range(T)]
    h_start = hs[T - k - 1] if k < T else h0
    want, dxs = elman_backward(p, xs_np, h_start, hs, dys, lo=T - k, hi=T)
    for name in NAMES:
        np.testing.assert_allclose(cell.parameters()[name].grad, want[name], rtol=1e-10,
                                   atol=1e-14)
    np.testing.assert_allclose(xs.grad, dxs, rtol=1e-10, atol=1e-14)
    assert np.all(xs.grad[: T - k] == 0.0)


def test_in_graph_truncation_at_or_beyond_T_is_full_bptt():
    T = 6
    xs, ys = _data(T)
    grads = []
    for truncate in (None, T, T + 4):
        cell = ug.nn.RNNCell(2, 4, seed=2)
        outputs, _ = ug.unroll(cell, T, truncate=truncate)(xs)
        ug.mse_loss(outputs, ys).backward()
        grads.append(_grads(cell))
    for g in grads[1:]:
        for name in NAMES:
            np.testing.assert_array_equal(g[name], grads[0][name])
    # and full BPTT is the hand-written loop without a cut
    p = ug.nn.RNNCell(2, 4, seed=2).state_dict()
    h0 = np.zeros((3, 4))
    hs = elman_forward(p, xs, h0)
    dys = [2.0 * (hs[t] - ys[t]) / ys.size for t in range(T)]
    want, _ = elman_backward(p, xs, h0, hs, dys, lo=0, hi=T)
    for name in NAMES:
        np.testing.assert_allclose(grads[0][name], want[name], rtol=1e-10)


# -- streaming TBPTT(k1, k2) -------------------------------------------------------------------

def _windows(T, k1, k2):
    """(begin, end, n) of each window, written out independently of the library."""
    out, end = [], 0
    while end < T:
        new_end = min(end + k1, T)
        out.append((max(0, new_end - k2), new_end, new_end - end))
        end = new_end
    return out


def test_window_schedule_example():
    assert _windows(11, 3, 5) == [(0, 3, 3), (1, 6, 3), (4, 9, 3), (6, 11, 2)]


@pytest.mark.parametrize("k1, k2", [(3, 5), (2, 2), (1, 4), (4, 9)])
def test_tbptt_gradients_match_hand_truncated_formula(k1, k2):
    """Without an optimizer the weights stay fixed and every window's gradient accumulates:
    sum over windows of d loss_window / d theta, each backpropagated only to its begin."""
    T, H = 11, 4
    xs, ys = _data(T, H=H, seed=4)
    cell = ug.nn.RNNCell(2, H, seed=3)
    losses, (h_last,) = ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=k1, k2=k2)

    p = cell.state_dict()
    h0 = np.zeros((3, H))
    hs = elman_forward(p, xs, h0)  # fixed weights: recomputed windows give these same states
    total = {name: np.zeros_like(v) for name, v in p.items()}
    want_losses = []
    for begin, end, n in _windows(T, k1, k2):
        size = n * ys[0].size
        dys = [2.0 * (hs[t] - ys[t]) / size if end - n <= t < end else np.zeros_like(h0)
               for t in range(T)]
        start = h0 if begin == 0 else hs[begin - 1]
        g, _ = elman_backward(p, xs, start, [None] * begin + hs[begin:], dys, lo=begin, hi=end)
        for name in NAMES:
            total[name] += g[name]
        want_losses.append(np.mean([(hs[t] - ys[t]) ** 2 for t in range(end - n, end)]))
    for name in NAMES:
        np.testing.assert_allclose(cell.parameters()[name].grad, total[name], rtol=1e-10,
                                   atol=1e-14)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-12)
    np.testing.assert_allclose(h_last, hs[-1], rtol=1e-13)


def test_tbptt_with_sgd_matches_hand_loop():
    """With an optimizer: each window starts from the state stored by the last window that
    computed it, runs with the current weights, then one SGD step."""
    T, H, k1, k2, lr = 9, 3, 2, 4, 0.3
    xs, ys = _data(T, H=H, seed=5)
    cell = ug.nn.RNNCell(2, H, seed=6)
    p = cell.state_dict()
    losses, (h_last,) = ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=k1, k2=k2,
                                       optimizer=ug.optim.SGD(cell.parameters(), lr=lr))
    starts = {0: np.zeros((3, H))}
    want_losses = []
    for begin, end, n in _windows(T, k1, k2):
        start = starts[begin]
        hw = elman_forward(p, xs[begin:end], start)
        full = [None] * begin + hw
        dys = [2.0 * (full[t] - ys[t]) / (n * ys[0].size) if end - n <= t < end else 0.0
               for t in range(end)]
        g, _ = elman_backward(p, xs, start, full, dys, lo=begin, hi=end)
        want_losses.append(np.mean([(full[t] - ys[t]) ** 2 for t in range(end - n, end)]))
        for name in NAMES:
            p[name] = p[name] - lr * g[name]
        for t in range(begin, end):
            starts[t + 1] = full[t]
    np.testing.assert_allclose(losses, want_losses, rtol=1e-12)
    for name in NAMES:
        np.testing.assert_allclose(cell.parameters()[name].data, p[name], rtol=1e-12)
    np.testing.assert_allclose(h_last, starts[T], rtol=1e-13)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_tbptt_with_one_window_is_full_bptt(kind):
    T = 6
    rng = np.random.default_rng(8)
    xs, ys = rng.normal(size=(T, 2, 3)), rng.normal(size=(T, 2, 1))
    make = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell}[kind]
    grads = []
    for mode in ("full", "tbptt", "tbptt_longer"):
        cell = make(3, 5, seed=0)
        head = ug.train.Linear(5, 1, seed=1)
        if mode == "full":
            outputs, _ = ug.unroll(cell, T)(xs)
            ug.mse_loss(head(outputs), ys).backward()
        else:
            k = T if mode == "tbptt" else T + 3
            losses, _ = ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=k, k2=k, readout=head)
            assert len(losses) == 1
        grads.append({**{k: v.grad for k, v in cell.parameters().items()},
                      **{"head." + k: v.grad for k, v in head.parameters().items()}})
    for g in grads[1:]:
        assert g.keys() == grads[0].keys()
        for name in g:
            np.testing.assert_array_equal(g[name], grads[0][name])


def test_tbptt_lstm_carries_both_states_and_a_given_start_state():
    T, H = 7, 3
    rng = np.random.default_rng(9)
    xs, ys = rng.normal(size=(T, 2, 2)), rng.normal(size=(T, 2, H))
    h0, c0 = rng.normal(size=(2, H)), rng.normal(size=(2, H))
    cell = ug.nn.LSTMCell(2, H, seed=0)
    _, (h, c) = ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=2, k2=3, state=(h0, c0))
    with ug.no_grad():
        _, (h_full, c_full) = ug.unroll(cell, T)(xs, state=(h0, c0))
    np.testing.assert_allclose(h, h_full.data, rtol=1e-13)
    np.testing.assert_allclose(c, c_full.data, rtol=1e-13)


def test_tbptt_builds_each_window_length_once(monkeypatch):
    built = []
    real = train_mod.unroll

    def counting(cell, steps, **kw):
        built.append(steps)
        return real(cell, steps, **kw)

    monkeypatch.setattr(train_mod, "unroll", counting)
    xs, ys = _data(20)
    cell = ug.nn.RNNCell(2, 4, seed=0)
    cache = {}
    losses, _ = ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=3, k2=6, cache=cache)
    assert len(losses) == 7  # windows end at 3, 6, ..., 18, 20
    assert sorted(built) == [3, 6]  # lengths 3 (first window) and 6 (all others)
    ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=3, k2=6, cache=cache)
    assert sorted(built) == [3, 6]  # reused across calls


@pytest.mark.parametrize("kwargs, words", [
    (dict(k1=4, k2=2), "k2=2 < k1=4"),
    (dict(k1=0, k2=2), "k1 must be a positive int"),
    (dict(k1=2, k2=2, clip=1.0), "clip needs an optimizer"),
])
def test_tbptt_errors(kwargs, words):
    xs, ys = _data(5)
    with pytest.raises(TrainingError) as info:
        ug.train.tbptt(ug.nn.RNNCell(2, 4, seed=0), xs, ys, ug.mse_loss, **kwargs)
    assert words in str(info.value)
    with pytest.raises(TrainingError, match="targets has 4"):
        ug.train.tbptt(ug.nn.RNNCell(2, 4, seed=0), xs, ys[:4], ug.mse_loss, k1=2, k2=2)


# -- fit / evaluate ----------------------------------------------------------------------------

def _regression(seed=0):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(4):
        x = rng.normal(size=(5, 2))
        batches.append((x, x @ np.array([[1.5], [-0.5]]) + 0.3))
    return batches


def test_fit_follows_the_sgd_recipe_per_batch():
    batches = _regression()
    w = ug.tensor(np.zeros((2, 1)), requires_grad=True)
    b = ug.tensor(np.zeros(1), requires_grad=True)
    hist = ug.train.fit(lambda x: x @ w + b, ug.optim.SGD([w, b], lr=0.1), batches, epochs=3,
                        progress=False)
    wn, bn = np.zeros((2, 1)), np.zeros(1)
    losses = []
    for _ in range(3):
        for x, y in batches:
            r = x @ wn + bn - y
            losses.append(np.mean(r ** 2))
            gw, gb = 2 * x.T @ r / r.size, 2 * r.sum(0) / r.size
            wn, bn = wn - 0.1 * gw, bn - 0.1 * gb
    np.testing.assert_allclose(w.data, wn, rtol=1e-12)
    np.testing.assert_allclose(b.data, bn, rtol=1e-12)
    np.testing.assert_allclose(hist.batch_loss, losses, rtol=1e-12)
    np.testing.assert_allclose(hist.epoch_loss, np.mean(np.reshape(losses, (3, 4)), axis=1))


def test_fit_clips_before_each_step():
    w = ug.tensor([0.0, 0.0], requires_grad=True)
    data = [(np.array([1.0, 1.0]), np.array([100.0, -100.0]))]
    ug.train.fit(lambda x: w * x, ug.optim.SGD([w], lr=1.0), data, clip=1.0, progress=False)
    # gradient (-100, 100) has norm 141.4; clipped to norm 1, the step is (1, -1) / sqrt(2)
    np.testing.assert_allclose(w.data, np.array([1.0, -1.0]) / np.sqrt(2), rtol=1e-6)


def test_fit_sequence_model_lowers_the_loss_and_evaluate_builds_no_graph():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(6, 16, 1))
    ys = np.cumsum(xs, axis=0)[-1]  # the sum of the inputs: needs the whole sequence
    cell = ug.nn.RNNCell(1, 8, seed=0)
    model = ug.train.SequenceModel(ug.unroll(cell, 6), ug.train.Linear(8, 1, seed=0),
                                   last=True)
    data = [(xs, ys)]
    before = ug.train.evaluate(model, data)
    assert all(p.grad is None for p in model.parameters().values())
    hist = ug.train.fit(model, ug.optim.Adam(model.parameters(), lr=0.05), data, epochs=60,
                        progress=False)
    after = ug.train.evaluate(model, data)
    assert after < 0.1 * before
    assert hist.epoch_loss[-1] < 0.1 * hist.epoch_loss[0]
    seen = []
    ug.train.evaluate(lambda x: seen.append(model(x)) or seen[-1], data)
    assert not seen[0].requires_grad and seen[0].is_leaf


def test_fit_accepts_an_unrolled_net_and_per_epoch_batches():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, 4)
    xs, ys = _data(4, H=3)
    calls = []

    def batches(epoch):
        calls.append(epoch)
        return [(xs, ys)]

    hist = ug.train.fit(net, ug.optim.SGD(cell.parameters(), lr=0.1), batches, epochs=3,
                        progress=False)
    assert calls == [0, 1, 2] and len(hist.epoch_loss) == 3
    assert hist.epoch_loss[-1] < hist.epoch_loss[0]


def test_fit_errors():
    w = ug.tensor([1.0], requires_grad=True)
    opt = ug.optim.SGD([w], lr=0.1)
    gen = ((np.ones(1), np.ones(1)) for _ in range(2))
    with pytest.raises(TrainingError, match="epoch 2"):
        ug.train.fit(lambda x: w * x, opt, gen, epochs=2, progress=False)
    with pytest.raises(TrainingError, match="not an \\(inputs, targets\\) pair"):
        ug.train.fit(lambda x: w * x, opt, [np.ones(1)], progress=False)
    with pytest.raises(TrainingError, match="one-element Tensor"):
        ug.train.fit(lambda x: w * x, opt, [(np.ones(2), np.ones(2))],
                     loss_fn=lambda p, y: (p - y) ** 2, progress=False)
    with pytest.raises(GradientError, match="lower the learning rate"):
        ug.train.fit(lambda x: w * x, opt, [(np.ones(1), np.array([np.inf]))], progress=False)
    with pytest.raises(TrainingError, match="epochs"):
        ug.train.fit(lambda x: w * x, opt, [(np.ones(1), np.ones(1))], epochs=0)
    with pytest.raises(UnrollGraphError, match="SequenceModel needs an unrolled net"):
        ug.train.SequenceModel(ug.nn.RNNCell(1, 2))


@pytest.mark.parametrize("call, words", [
    (lambda w, opt, data: ug.train.fit(lambda x: w * x, opt, data, clip="1", progress=False),
     "clip must be a real number, got str"),
    (lambda w, opt, data: ug.train.fit(lambda x: w * x, opt, data, clip=-1.0, progress=False),
     "invalid clip"),
    (lambda w, opt, data: ug.train.fit(lambda x: w * x, opt, data, epochs=True, progress=False),
     "epochs must be a positive int, got True"),
    (lambda w, opt, data: ug.train.fit(lambda x: w * x, opt, data, epochs=2.0, progress=False),
     "epochs must be a positive int, got 2.0"),
    (lambda w, opt, data: ug.train.fit(lambda x: w * x, None, data, progress=False),
     "optimizer must be an optimizer"),
    (lambda w, opt, data: ug.train.fit(lambda x: w * x, opt, data, loss_fn="mse",
                                       progress=False), "loss_fn must be callable"),
    (lambda w, opt, data: ug.train.evaluate(lambda x: w * x, data, loss_fn=None),
     "loss_fn must be callable"),
    (lambda w, opt, data: ug.train.tbptt(ug.nn.RNNCell(1, 1), np.ones((2, 1, 1)),
                                         np.ones((2, 1, 1)), ug.mse_loss, k1=True, k2=2),
     "k1 must be a positive int, got True"),
    (lambda w, opt, data: ug.train.tbptt(ug.nn.RNNCell(1, 1), np.ones((2, 1, 1)),
                                         np.ones((2, 1, 1)), ug.mse_loss, k1=1, k2=2,
                                         optimizer=opt, clip="x"),
     "clip must be a real number"),
    (lambda w, opt, data: ug.train.Linear(True, 2), "in_features must be a positive int"),
])
def test_training_arguments_are_type_checked_before_use(call, words):
    w = ug.tensor([1.0], requires_grad=True)
    opt = ug.optim.SGD([w], lr=0.1)
    with pytest.raises(TrainingError) as info:
        call(w, opt, [(np.ones(1), np.ones(1))])
    assert words in str(info.value)
    np.testing.assert_array_equal(w.data, [1.0])  # nothing ran


def test_progress_bar(capsys):
    w = ug.tensor([1.0], requires_grad=True)
    data = [(np.ones(1), np.ones(1))] * 3
    ug.train.fit(lambda x: w * x, ug.optim.SGD([w], lr=0.1), data, epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "6/6" in err and "loss=" in err and err.endswith("\n")
    for mode in (False, "auto"):  # "auto": stderr is not a terminal under capsys
        ug.train.fit(lambda x: w * x, ug.optim.SGD([w], lr=0.1), data, progress=mode)
        assert capsys.readouterr().err == ""
    for bad in ("yes", 1, None):
        with pytest.raises(TrainingError, match="progress must be True, False or 'auto'"):
            ug.train.fit(lambda x: w * x, ug.optim.SGD([w], lr=0.1), data, progress=bad)


def test_progress_bar_of_streaming_tbptt(capsys):
    cell = ug.nn.RNNCell(1, 2, seed=0)
    xs, ys = np.ones((10, 1, 1)), np.zeros((10, 1, 2))
    ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=3, k2=3, progress=True)
    err = capsys.readouterr().err
    assert "tbptt" in err and "4/4" in err and "loss=" in err  # windows end at 3, 6, 9, 10
    ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=3, k2=3)
    assert capsys.readouterr().err == ""


def test_progress_auto_draws_on_a_terminal_only_for_long_runs(monkeypatch):
    import tqdm.std

    class Tty(io.StringIO):
        def isatty(self):
            return True

    clock = iter(np.arange(0.0, 100.0, 0.3))
    monkeypatch.setattr(tqdm.std, "time", lambda: float(next(clock)))
    tty = Tty()
    bar = train_mod._progress("auto", 10, "epoch 1/1", "fit", "batch", file=tty)
    bar.update(1)  # 0.3 s in: too early to draw
    assert tty.getvalue() == ""
    bar.update(1)
    bar.update(1)  # later than half a second: a long run, draw
    bar.close()
    assert "epoch 1/1" in tty.getvalue() and "/10" in tty.getvalue()
    quiet = io.StringIO()  # not a terminal: "auto" draws nothing
    bar = train_mod._progress("auto", 10, "x", "fit", "batch", file=quiet)
    for _ in range(10):
        bar.update(1)
    bar.close()
    assert quiet.getvalue() == ""


# -- the example ---------------------------------------------------------------------------------

def test_train_rnn_example_learns_the_adding_problem():
    spec = importlib.util.spec_from_file_location("train_rnn", ROOT / "examples/train_rnn.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    lines = []
    res = mod.main(["--seed", "0"], out=lines.append)
    assert any("RNN" in s for s in lines) and any("LSTM" in s for s in lines)
    # predicting the mean scores 1/6; a net without a working gradient stays near or above it
    assert res["rnn"]["after"] < 0.3 * mod.BASELINE
    assert res["lstm"]["after"] < 0.1 * mod.BASELINE
    for r in res.values():
        assert r["epoch_loss"][-1] < 0.2 * r["epoch_loss"][0]

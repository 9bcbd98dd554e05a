"""A masked run's states as every view draws them (``net(xs, lengths=...)``): the state the
net carries on, ``Run.value("h@t")`` and ``Run.grad("h@t")`` (the rows of a sequence past
its length hold the state of the step before, kept), never the value the step computed on
the padding, which the mask drops."""

import html
import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

_FLOAT = re.compile(r"[-−+]?(?:\d+\.?\d*(?:e[-−+]?\d+)?|inf|nan)")


def _cell(kind: str):
    if kind == "custom":
        cell = ug.Cell("c")
        x = cell.input("x", (2,))
        h = cell.state("h", (2,))
        w = cell.param("W", np.array([[0.9, -0.4], [0.3, 0.8]]))
        u = cell.param("U", np.array([[0.5, 0.2], [-0.3, 0.6]]))
        nxt = ug.tanh(x @ w.T + h @ u.T)
        cell.feedback(h, nxt)
        cell.output("y", nxt * 2.0)
        return cell
    return getattr(ug.nn, kind)(2, 2, seed=0)


def _run(kind, T, lengths, seed=0, **unroll):
    """A masked run whose loss reads every output and the final states: a sequence's kept
    state gets a gradient past its length."""
    net = ug.unroll(_cell(kind), T, **unroll)
    xs = np.random.default_rng(seed).standard_normal((T, len(lengths), 2))
    out, state = net(xs, lengths=lengths)
    finals = list(state) if isinstance(state, tuple) else [state]
    loss = ug.mse_loss(out, np.zeros(out.shape))
    for f in finals:
        loss = loss + (f * f).sum() * 0.5
    loss.backward()
    return net, loss


def _numbers(text: str) -> tuple[str, np.ndarray]:
    """A printed value: ``("v", array)`` for written-out numbers, ``("norm", [norm])`` for
    the norm form ``‖·‖ 1.23 (shape)``."""
    text = html.unescape(text).strip()
    if text.startswith("‖·‖"):
        return "norm", np.array([float(_FLOAT.findall(text)[0])])
    return "v", np.array([float(s.replace("−", "-")) for s in _FLOAT.findall(text)])


def _agrees(text: str, want) -> bool:
    form, got = _numbers(text)
    want = np.asarray(want, dtype=np.float64)
    want = np.array([np.linalg.norm(want)]) if form == "norm" else want.reshape(-1)
    return got.shape == want.shape and bool(np.all(
        np.abs(got - want) <= 6e-3 * np.abs(want) + 1e-12))


def _cells_of_textbook(dot: str):
    """(state, step) -> (v text, ∇ text) of every state oval of a textbook view."""
    found = {}
    for line in dot.splitlines():
        m = re.search(r'tooltip="state (\S+) after step (\d+):', line)
        if m is None:
            continue
        rows = re.findall(r"<font [^>]*>((?:v|∇) = [^<]*)</font>", line)
        v = next((r[4:] for r in rows if r.startswith("v = ")), None)
        g = next((r[4:] for r in rows if r.startswith("∇ = ")), None)
        found[(html.unescape(m.group(1)), int(m.group(2)))] = (v, g)
    return found


def _cells_of_steps(dot: str, states):
    """(state, step) -> (v text, ∇ text) of every step box of a steps view."""
    found = {}
    for line in dot.splitlines():
        m = re.match(r'\s*"step_(\d+)" \[', line)
        if m is None:
            continue
        t = int(m.group(1))
        for s in states:
            v = re.search(rf">{s}: v = ([^<]*)<", line)
            g = re.search(rf">{s}: ∇ = ([^<]*)<", line)
            found[(s, t)] = (v and v.group(1), g and g.group(1))
    return found


def _check(net, found):
    run = net.last_run
    assert found
    for (s, t), (v, g) in found.items():
        want_v = run.value(f"{s}@{t}")
        assert v is not None and _agrees(v, want_v), (s, t, v, want_v)
        want_g = run.grad(f"{s}@{t}")
        if want_g is None:
            assert g is None, (s, t, g)
        else:
            assert g is not None and _agrees(g, want_g), (s, t, g, want_g)
            assert np.array_equal(want_g, run.state_grads(s)[t])  # one meaning of dL/dh_t


_KINDS = st.sampled_from(["RNNCell", "LSTMCell", "GRUCell", "custom"])
_NETS = st.sampled_from([{}, {"truncate": 2}, {"checkpoint": 2}, {"keep": "all"}])


@settings(max_examples=25, deadline=None)
@given(_KINDS, st.integers(2, 5), st.data(), _NETS, st.integers(0, 3))
def test_every_state_drawn_is_the_state_carried_on(kind, T, data, unroll, seed):
    lengths = data.draw(st.lists(st.integers(0, T), min_size=1, max_size=3))
    if "truncate" in unroll and T <= 2:
        unroll = {}
    net, loss = _run(kind, T, lengths, seed, **unroll)
    states = list(net.cell.states)
    _check(net, _cells_of_textbook(ug.to_dot(net, loss=loss, detail="textbook",
                                             max_elements=8)))
    _check(net, _cells_of_steps(ug.to_dot(net, loss=loss, detail="steps", max_elements=8),
                                states))
    # the norms a view prints for a larger batch (or max_elements=1): the same states
    _check(net, _cells_of_textbook(ug.to_dot(net, loss=loss, detail="textbook",
                                             max_elements=1)))


@settings(max_examples=6, deadline=None)
@given(st.sampled_from(["RNNCell", "LSTMCell"]), st.data())
def test_an_elided_textbook_view_draws_the_states_carried_on(kind, data):
    T = 30
    lengths = data.draw(st.lists(st.integers(0, T), min_size=2, max_size=3))
    net, loss = _run(kind, T, lengths)
    found = _cells_of_textbook(ug.to_dot(net, loss=loss, detail="textbook", ends=2,
                                         max_elements=8))
    assert sorted({t for _, t in found}) == [0, 1, 28, 29]
    _check(net, found)


def test_the_reported_case():
    """A sequence of length 2 in 4 steps: its h_2 and h_3 are its h_1, kept."""
    cell = ug.nn.RNNCell(2, 2, seed=0)
    net = ug.unroll(cell, 4)
    xs = np.random.default_rng(0).standard_normal((4, 2, 2))
    out, _ = net(xs, lengths=[4, 2])
    loss = ug.mse_loss(out, np.zeros(out.shape))
    loss.backward()
    run = net.last_run
    for t in (2, 3):
        assert np.array_equal(run.value(f"h@{t}")[1], run.value("h@1")[1])
    found = _cells_of_textbook(ug.to_dot(net, loss=loss, detail="textbook"))
    assert "0.0721" not in found[("h", 2)][0]
    _check(net, found)
    # a full-length sequence's state gradient is the one running it alone gives
    alone = ug.unroll(cell, 4)
    out1, _ = alone(xs[:, :1])
    (ug.mse_loss(out1, np.zeros(out1.shape)) / 2).backward()
    for t in range(4):
        assert np.allclose(run.grad(f"h@{t}")[0], alone.last_run.grad(f"h@{t}")[0],
                           rtol=1e-12, atol=1e-15)

"""An elided drawing of a truncated net never hides where truncation cuts: the steps either
side of the cut are drawn, every elided range is wholly cut or wholly kept, and the figures an
elided range prints cover all its steps. A node with no gradient computed is drawn without
fill, and the legend says so: its white bin is not "0" alone."""

import re
import subprocess

import numpy as np
import pytest

import unrollgraph as ug
from unrollgraph.render import _elision, _num

_RANGE = re.compile(r"steps (\d+) … (\d+)")


def _run(T, truncate, ends=None, state=None):
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=T, truncate=truncate)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, 1, 2)), state=state)
    loss = (outs * outs).sum()
    loss.backward()
    return net, loss


def _ranges(text):
    found = {(int(a), int(b)) for a, b in _RANGE.findall(text)}
    assert found, "no elided range drawn"
    return found


def _check_pure(ranges, T, truncate):
    c = T - truncate  # the first step the gradient reaches
    for a, b in ranges:
        assert b < c - 1 or a > c, (a, b, c)  # wholly cut or wholly kept, the cut drawn


@pytest.mark.parametrize("T,truncate,ends", [(30, 5, 2), (30, 20, 2), (40, 3, 1),
                                             (30, 25, 2)])
@pytest.mark.parametrize("detail", ["textbook", "elide"])
def test_an_elided_range_never_mixes_cut_and_kept_steps(T, truncate, ends, detail):
    net, loss = _run(T, truncate)
    text = ug.to_dot(net, loss=loss, detail=detail, ends=ends)
    _check_pure(_ranges(text), T, truncate)
    # the last cut step and the first kept one are drawn: the cut bar stands between them
    c = T - truncate
    assert re.search(rf"t = {c - 1} \(cut\)|<sub>{c - 1}</sub>", text)
    assert re.search(rf"t = {c}\b|<sub>{c}</sub>", text)


def test_a_figure_and_tikz_elide_clear_of_the_cut():
    full, lf = _run(30, None)
    cut, lc = _run(30, 5)
    fig = ug.render_side_by_side(full, cut, loss=(lf, lc), detail="elide", ends=1)
    ranges = _ranges(fig.source)
    _check_pure(ranges, 30, 5)
    assert len(ranges) == 1  # the same steps elided in both: step over step
    _check_pure(_ranges(ug.to_tikz(cut, loss=lc, detail="textbook")), 30, 5)
    small = ug.render_side_by_side(*_run(4, None)[:1], _run(4, 2)[0], detail="elide",
                                   ends=1)
    assert "steps 1 … 2" not in small.source  # (1 cut, 2 kept: nothing elided)


@pytest.mark.parametrize("truncate", [None, 5])
@pytest.mark.parametrize("detail", ["textbook", "elide"])
def test_the_printed_per_step_range_covers_every_elided_step(truncate, detail):
    net, loss = _run(30, truncate)
    text = ug.to_dot(net, loss=loss, detail=detail)
    (a, b), = _ranges(text)
    mags = []
    for t in range(a, b + 1):
        g = net.last_run.grad(net.state_nodes["h"][t])
        mags.append(None if g is None else float(np.linalg.norm(g)))
    # (the state's: the textbook view's elided output column prints its outputs' own)
    states = "\n".join(line for line in text.splitlines()
                       if not re.search(r'tooltip="(output|input) ', line))
    printed = re.findall(r"per step: ([^<]*)<", states)
    known = [m for m in mags if m is not None]
    if not known:  # (a wholly cut range: no figures, greyed)
        assert not printed, printed
        return
    lo = _num(min(known)) if len(known) == len(mags) else \
        f"none ({len(mags) - len(known)} of {len(mags)} steps)"
    assert printed == [f"{lo} … {_num(max(known))}"], printed


def test_elided_numbers_count_steps_without_gradient():
    from unrollgraph.render import _elided_numbers

    assert _elided_numbers([None, None]) is None
    rms, total, words = _elided_numbers([None, 3.0, 4.0])
    assert words == f"none (1 of 3 steps) … {_num(4.0)}"
    assert total == pytest.approx(5.0) and rms == pytest.approx(5.0 / np.sqrt(3))
    assert _elided_numbers([3.0, 4.0])[2] == f"{_num(3.0)} … {_num(4.0)}"


def _white_nodes(text):
    """Nodes filled white that print no gradient."""
    return [m.group(1) for m in re.finditer(r'^\s*"([^"]+)" \[(.*)\]$', text, re.M)
            if 'fillcolor="white"' in m.group(2) and "∇" not in m.group(2)]


@pytest.mark.parametrize("detail", ["textbook", "ops", "steps"])
def test_the_legend_names_what_has_no_gradient(detail):
    net, loss = _run(4, None)
    text = ug.to_dot(net, loss=loss, detail=detail, values=False)
    assert _white_nodes(text)
    assert "no gradient computed (inputs, initial states unless requires_grad)" in text
    assert ">0 or none<" in text and '<font point-size="7">0</font>' not in text
    # an initial state that requires grad gets one: the legend no longer lists it
    h0 = ug.tensor(np.zeros((1, 2)), requires_grad=True)
    net, loss = _run(4, None, state={"h": h0})
    text = ug.to_dot(net, loss=loss, detail=detail, values=False)
    assert "no gradient computed (inputs)" in text


def test_without_gradients_the_zero_bin_reads_zero():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    w = ug.tensor(-2.0, requires_grad=True, name="w")
    y = (x * w).tanh()
    y.backward()
    text = ug.to_dot(y)
    assert "no gradient computed" not in text
    assert '<font point-size="7">0</font>' in text


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_every_edge_into_a_cut_elided_box_is_greyed_and_none_into_a_kept_one(kind):
    """The elided box of cut steps is greyed, and so is every edge into it (the state edge
    from the step before, the shared weights' edges): truncation sends nothing back along
    them. Without truncation none of them is."""
    from unrollgraph.render import _THEMES

    cut_colour = _THEMES["light"]["cut_font"]
    make = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell}[kind]
    xs = np.random.default_rng(3).standard_normal((30, 1, 2))
    for truncate in (5, None):
        net = ug.unroll(make(2, 2, seed=0), 30, truncate=truncate)
        out, _ = net(xs)
        loss = (out * out).sum()
        loss.backward()
        src = ug.to_dot(net, loss=loss, detail="elide")
        into = [line for line in src.splitlines() if re.search(r'-> "elided" \[', line)
                or re.search(r'^\s*"elided" -> "n\d+" \[.*dir="back"', line)]
        assert len(into) >= 2, src
        for line in into:
            greyed = cut_colour in line and "dotted" in line
            assert greyed == (truncate is not None), line


@pytest.mark.parametrize("detail", ["textbook", "elide", "auto"])
def test_long_runs_either_side_of_the_cut_are_each_elided(detail):
    """T = 200, truncate = 100: the cut steps and the kept ones each a run of its own, the
    steps either side of the cut drawn; drawn well under the size guard (the shorter side
    was drawn in full, an LSTM's ops past max_nodes)."""
    T, truncate = 200, 100
    net = ug.unroll(ug.nn.LSTMCell(2, 2, seed=0), steps=T, truncate=truncate)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, 1, 2)))
    loss = (outs * outs).sum()
    loss.backward()
    text = ug.to_dot(net, loss=loss, detail=detail)
    ranges = _ranges(text)
    assert ranges == {(2, 98), (101, 197)}, ranges
    _check_pure(ranges, T, truncate)
    c = T - truncate
    for t in (0, 1, c - 1, c, T - 2, T - 1):  # the ends and the steps either side of the cut
        assert f"step {t}" in text or f"<sub>{t}</sub>" in text, t
    for t in (50, 150):
        assert f"<sub>{t}</sub>" not in text and f"t = {t}" not in text
    assert "(steps 2 … 98, 101 … 197 elided)" in text
    if detail == "elide":  # laid out by dot without a complaint
        done = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True)
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr.decode()[:400]


def test_a_short_side_of_the_cut_is_still_drawn_in_full():
    assert _elision(30, 2, (5,)) == [(2, 23)]  # (26, 27): two steps, drawn
    assert _elision(30, 1, (None, 5)) == [(1, 23)]  # (26, 28): three, drawn with ends=1
    assert _elision(40, 1, (None, 10)) == [(1, 28), (31, 38)]  # eight: elided

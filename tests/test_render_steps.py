"""The step view (``detail="steps"``): its boxes speak the words of every other view and print
their numbers by the same rule, and the state the outputs read comes first, as in the textbook
view."""

import html
import json
import re
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unrollgraph as ug

_CELLS = {
    "rnn": ug.nn.RNNCell,
    "lstm": ug.nn.LSTMCell,
    "gru": ug.nn.GRUCell,
}


def _run(name, T, batch=1, hidden=2, truncate=None):
    net = ug.unroll(_CELLS[name](2, hidden, seed=0), steps=T, truncate=truncate)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, batch, 2)))
    loss = (outs * outs).sum()
    loss.backward()
    return net, loss


def _rows(source: str, nid: str) -> list[str]:
    """The text rows of node ``nid``'s HTML label in DOT ``source`` (entities decoded)."""
    line = next(x for x in source.splitlines() if x.strip().startswith(f'"{nid}" ['))
    return [html.unescape(re.sub(r"<[^>]+>", "", cell))
            for cell in re.findall(r"<td>(.*?)</td>", line)]


def _state_order(net) -> list[str]:
    """The states top first, as the textbook view's rows: the last one a step computes on
    top."""
    g = net.graph
    return sorted(net.state_nodes, key=lambda s: -g.index(net.state_nodes[s][0]))


@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("batch,hidden", [(1, 2), (2, 3)])
def test_step_boxes_write_v_and_nabla_as_the_textbook_view(name, batch, hidden):
    """Each step box writes each state's value and gradient as ``h: v = …`` and
    ``h: ∇ = …``, the same numbers the textbook view writes in that state's node (written
    out, or as norms when a value has more than max_elements numbers: two samples of three
    units), with the state the outputs read first; never "h =" or "∂L/∂h =" (the words of no
    other view)."""
    net, loss = _run(name, 3, batch, hidden)
    steps = ug.to_dot(net, loss=loss, detail="steps")
    book = ug.to_dot(net, loss=loss, detail="textbook")
    g = net.graph
    for t in range(3):
        box = _rows(steps, f"step_{t}")
        want = [f"t = {t}"]
        for s in _state_order(net):
            node = [r for r in _rows(book, g.id(net.state_nodes[s][t]))
                    if r.startswith(("v = ", "∇ = "))]
            assert [r[0] for r in node] == ["v", "∇"], node
            want += [f"{s}: {r}" for r in node]
        assert [r for r in box if r] == want, (box, want)
        assert not any(r.startswith(("∂", "h =", "c =")) for r in box), box
    if hidden * batch > 4:
        assert "‖·‖" in "".join(_rows(steps, "step_0"))


def _layout(source: str) -> dict:
    done = subprocess.run(["dot", "-Tjson"], input=source.encode(), capture_output=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr.decode()[:400]
    return {o["name"]: tuple(float(v) for v in o["pos"].split(","))
            for o in json.loads(done.stdout)["objects"] if "pos" in o}


@pytest.mark.dot
@pytest.mark.parametrize("T", [1, 4])
def test_the_lstm_step_view_puts_h_first_as_the_textbook_view(T):
    """An LSTM's h (the state its outputs read) is the textbook view's upper state row; the
    step view draws h's initial state in the steps' row, beside the first box, and c's one
    row lower (c_init stood in the row, h_init under it), and writes h's rows first."""
    net, loss = _run("lstm", T)
    g = net.graph
    pos = _layout(ug.to_dot(net, loss=loss, detail="steps"))
    h, c = (pos[g.id(net.init_nodes[s])] for s in ("h", "c"))
    box = pos["step_0"]
    assert h[1] == pytest.approx(box[1]) and c[1] < box[1], (h, c, box)
    assert h[0] < box[0] and c[0] < box[0], (h, c, box)
    book = _layout(ug.to_dot(net, loss=loss, detail="textbook"))
    assert book[g.id(net.state_nodes["h"][0])][1] > book[g.id(net.state_nodes["c"][0])][1]
    rows = _rows(ug.to_dot(net, loss=loss, detail="steps"), "step_0")
    assert rows.index(next(r for r in rows if r.startswith("h:"))) \
        < rows.index(next(r for r in rows if r.startswith("c:")))


# -- where truncated BPTT stops the gradient: a bar to see on a slide ----------------------
_THEMES = ("light", "dark", "print")


def _bars(source: str) -> list[tuple[str, float, float]]:
    """Each bar ``dot`` draws where truncation stops a gradient: ``(colour, length of the
    bar, line width)`` in points, read from the SVG (the bar is the edge's 4-cornered arrow
    polygon; the arrowhead is a triangle)."""
    done = subprocess.run(["dot", "-Tsvg"], input=source.encode(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[:400]
    svg = done.stdout.decode()
    stops = {(a, b) for a, b in re.findall(r'^\s*"([^"]+)" -> "([^"]+)" \[[^\n]*"tee"',
                                           source, re.M)}
    out = []
    for group in re.findall(r'<g id="edge\d+" class="edge">(.*?)</g>', svg, re.S):
        title = html.unescape(re.search(r"<title>(.*?)</title>", group).group(1))
        if tuple(title.split("->")) not in stops:
            continue
        for fill, width, points in re.findall(
                r'<polygon fill="([^"]+)" stroke="[^"]+" stroke-width="([^"]+)" '
                r'points="([^"]+)"', group):
            pts = [tuple(float(v) for v in p.split(",")) for p in points.split()]
            if len(pts) != 5:  # (a triangle: the arrowhead)
                continue
            side = max(np.hypot(a[0] - b[0], a[1] - b[1]) for a, b in zip(pts, pts[1:]))
            out.append((fill, side, float(width)))
    return out


def _legend_stop_colour(source: str) -> str:
    """The colour the legend writes its bar (|) in."""
    line = next(x for x in source.splitlines() if x.strip().startswith('"legend" ['))
    return re.search(r'<font[^>]*color="([^"]+)"[^>]*><b>\|', line).group(1)


@pytest.mark.dot
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["textbook", "steps", "ops"]), st.integers(4, 12), st.data(),
       st.sampled_from(_THEMES), st.sampled_from(sorted(_CELLS)))
def test_the_truncation_bar_is_plainly_visible_in_every_view(detail, T, data, theme, name):
    """Where truncation stops the gradient (the last cut state into the first kept step, a
    cut step into its output), the edge carries a bar at least 12 points long drawn with a
    line at least 2.5 points wide, in a colour that is neither the greyed edges' nor the
    background's, the colour the legend draws its bar in (it was a 7-point grey tick on a
    grey dotted edge, lost at the greyed node's dashed border)."""
    if detail == "ops":
        T = min(T, 6)  # (every op of every step: a wide picture, slow to lay out)
    k = data.draw(st.integers(1, T - 1), label="truncate")
    net, loss = _run(name, T, truncate=k)
    source = ug.to_dot(net, loss=loss, detail=detail, theme=theme, values=False)
    bars = _bars(source)
    assert bars, "no bar drawn"
    theme_colours = _theme(theme)
    legend = _legend_stop_colour(source)
    for colour, length, width in bars:
        assert length >= 12 and width >= 2.5, (colour, length, width)
        assert colour == legend, (colour, legend)
        assert colour not in (theme_colours["cut_font"], theme_colours["bg"]), colour


def _theme(theme: str) -> dict:
    import importlib

    return importlib.import_module("unrollgraph.render")._THEMES[theme]

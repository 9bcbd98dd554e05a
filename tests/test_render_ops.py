"""The ops and elide views read cleanly: each state comes into its step on the left, level
(an LSTM's c as its h), the loss edge of elided steps rises between the kept steps, a bus is
one line, and the parts of a parameter's gradient are written as its values are."""

import html
import importlib
import json
import re
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.render import _array_text, _signed
from unrollgraph.view import view

_CELLS = {
    "rnn": lambda: ug.nn.RNNCell(2, 2, seed=0),
    "lstm": lambda: ug.nn.LSTMCell(2, 2, seed=0),
    "gru": lambda: ug.nn.GRUCell(2, 2, seed=0),
}


def _run(cell, T, lengths=None, truncate=None):
    net = ug.unroll(cell, steps=T, truncate=truncate)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, 2, 2)), lengths=lengths)
    loss = (outs * outs).sum()
    loss.backward()
    return net, loss


def _layout(diagram) -> dict:
    return json.loads(diagram.pipe(format="json"))


def _positions(layout) -> dict:
    return {o["name"]: tuple(float(v) for v in o["pos"].split(","))
            for o in layout["objects"] if "pos" in o}


def _clusters(layout) -> dict:
    """step -> its cluster's box ``(x0, y0, x1, y1)``."""
    return {int(o["name"].rsplit("_", 1)[1]): tuple(float(v) for v in o["bb"].split(","))
            for o in layout["objects"] if o["name"].startswith("cluster_step_")}


_geometry = importlib.import_module("test_render_layout")
_curve, _cross = _geometry._curve, _geometry._cross


def _drawn_edges(layout) -> list:
    """``(tail, head, curve)`` of each drawn edge, in the direction its arrow points."""
    names = {o["_gvid"]: o["name"] for o in layout["objects"]}
    out = []
    for e in layout["edges"]:
        if e.get("style") == "invis" or "pos" not in e:
            continue
        a, b, curve = names[e["tail"]], names[e["head"]], _curve(e["pos"])
        if e.get("dir") == "back":
            a, b, curve = b, a, curve[::-1]
        out.append((a, b, curve))
    return out


def _entries(net):
    """``(step, op, previous state)`` for each op of a step that reads the state the step
    before left (or an initial state)."""
    prev = {id(n): (s, t + 1) for s, ns in net.state_nodes.items() for t, n in enumerate(ns)}
    prev.update({id(n): (s, 0) for s, n in net.init_nodes.items()})
    for n in net.graph.nodes:
        for i in n.inputs:
            if n.step is not None and prev.get(id(i), (None, None))[1] == n.step:
                yield n.step, n, i


@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("lengths", [None, [3, 2]])
def test_each_state_comes_into_its_step_leftmost_in_its_row(name, lengths):
    """Every op reading the state the step before left stands leftmost in its row of its
    step, so the state's edge comes in from the left crossing nothing: an LSTM's f ⊙ c_{t-1}
    stood right of i ⊙ g, and c's edge crossed the step diagonally into it. (A masked net's
    kept state, ``where(mask, h_next, h_prev)``, reads the previous state too, but is the
    next state itself: it leaves on the right.)"""
    net, loss = _run(_CELLS[name](), 3, lengths)
    pos = _positions(_layout(ug.render(net, loss=loss, detail="ops", values=False)))
    net = view(net).net  # (the masked net a run with lengths= ran: the one drawn)
    g = net.graph
    entries = [(t, n, i) for t, n, i in _entries(net) if n.role != "next_state"]
    assert entries
    for t, n, _ in entries:
        x, y = pos[g.id(n)]
        row = [g.id(m) for m in g.nodes if m.step == t and m.op != "input"
               and g.id(m) in pos and abs(pos[g.id(m)][1] - y) < 1]
        left = [m for m in row if pos[m][0] < x]
        assert not left, f"{g.id(n)} ({n.name or n.op}, step {t}) has {left} left of it"


@pytest.mark.parametrize("T", [3, 6])
def test_the_lstm_cell_state_runs_level_into_the_next_step(T):
    """c_{t-1}'s edge enters step t level, at the height of f ⊙ c_{t-1}, as h's does into
    its matmul: inside step t's box it neither climbs nor falls."""
    net, loss = _run(ug.nn.LSTMCell(2, 2, seed=0), T)
    layout = _layout(ug.render(net, loss=loss, detail="ops", values=False))
    boxes, pos = _clusters(layout), _positions(layout)
    g = net.graph
    readers = {(g.id(i), g.id(n)): t for t, n, i in _entries(net)}
    edges = _drawn_edges(layout)
    found = 0
    for s, ns in net.state_nodes.items():
        for t in range(1, T):
            src = g.id(ns[t - 1])
            reader = next(b for (a, b) in readers if a == src)
            y = pos[reader][1]
            into = [c for a, b, c in edges if b == reader
                    and (a == src or a.startswith(src + "_out_row"))]
            assert len(into) == 1, (s, t, into)
            inside = [(px, py) for px, py in into[0] if px > boxes[t][0]]
            # (a spline sags a few points; a node is 40 high, and the diagonal climbed 90)
            assert inside and max(abs(py - y) for _, py in inside) < 12, \
                f"{s} into step {t} is not level in the step"
            found += 1
    assert found == 2 * (T - 1)


def test_the_loss_edge_of_elided_steps_rises_between_the_kept_steps():
    """From the elided steps' box up to the loss, the edge stays between the last kept
    step before them and the first after (it ran back through step 1's box)."""
    net, loss = _run(ug.nn.LSTMCell(2, 2, seed=0), 40)
    layout = _layout(ug.render(net, loss=loss, detail="elide", values=False))
    boxes = _clusters(layout)
    assert sorted(boxes) == [0, 1, 38, 39]
    edges = _drawn_edges(layout)
    path, at = [], "elided"
    while at != "loss":
        (curve, at), = [(c, b) for a, b, c in edges if a == at and
                        (b == "loss" or b == "elided_up")]
        path += curve
    assert path
    xs = [x for x, _ in path]
    assert boxes[1][2] < min(xs) and max(xs) < boxes[38][0], (min(xs), max(xs))


def _svg_edges(text: str) -> dict:
    done = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True)
    assert done.returncode == 0 and b"Warning" not in done.stderr, done.stderr.decode()[:300]
    svg = done.stdout.decode()
    out = {}
    for m in re.finditer(r'<g id="edge\d+" class="edge">\s*<title>(.*?)</title>(.*?)</g>',
                         svg, re.S):
        out[m.group(1).replace("&#45;&gt;", "->")] = (
            re.findall(r'<path[^>]* d="([^"]*)"', m.group(2)),
            re.findall(r'<polygon fill="([^"]*)"', m.group(2)))
    return out


@pytest.mark.parametrize("name,T,detail,truncate", [
    ("rnn", 4, "ops", None), ("lstm", 3, "ops", None), ("gru", 4, "ops", 1),
    ("rnn", 12, "elide", None), ("lstm", 12, "elide", 2)])
def test_a_bus_and_a_state_between_steps_are_each_one_line(name, T, detail, truncate):
    """Each segment of a bus between two steps' junctions, and each state's level edge into
    the next step, is drawn as one curve with a filled head: dot drew each such edge twice,
    two curves bowing apart (a lens), and with ports it read a pen width as an arrowhead."""
    net, loss = _run(_CELLS[name](), T, truncate=truncate)
    edges = _svg_edges(ug.to_dot(net, loss=loss, detail=detail, values=False))
    between = {k: v for k, v in edges.items()
               if re.search(r"_fan_\d+(:e)?->.*_fan_\d+", k) or "_out_row" in k.split("->")[0]}
    assert any("_fan_" in k for k in between) and any("_out_row" in k for k in between)
    for title, (paths, heads) in between.items():
        assert len(set(paths)) == 1, f"{title} drawn as {len(set(paths))} curves"
        assert "none" not in heads, f"{title}: an arrowhead drawn hollow"


def _part_rows(text: str, pid: str) -> list:
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(f'"{pid}" ['))
    return [html.unescape(r) for r in re.findall(r">(t = \d+: [^<]*|Σ = [^<]*)<", line)]


def test_the_parts_of_a_matrix_parameter_are_written_row_by_row():
    """``contributions=True``: a 2 × 2 weight's part of each step reads as a matrix, row by
    row, as its value does (it was a flat list of four numbers); a vector's as a vector."""
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=3)
    outs, _ = net(np.random.default_rng(0).standard_normal((3, 1, 2)),
                  state={"h": np.array([[0.5, -0.3]])})
    loss = (outs * outs).sum()
    loss.backward()
    text = ug.to_dot(net, loss=loss, contributions=True, detail="ops")
    g = net.graph
    parts = net.last_run.step_contributions("weight_hh")
    rows = _part_rows(text, g.id(net.param_nodes["weight_hh"]))
    assert len(rows) == 4
    for t in range(3):
        assert rows[t] == f"t = {t}: {_signed(parts[t])}"
        assert rows[t].count("[") == 3 and "], [" in rows[t]
    assert rows[3] == f"Σ = {_signed(net.cell.weight_hh.grad)}"
    bias = _part_rows(text, g.id(net.param_nodes["bias_hh"]))
    assert bias[0].count("[") == 1


def _skeleton(text: str) -> str:
    return re.sub(r"[^\[\], ]", "", text)


@settings(max_examples=40, deadline=None)
@given(shape=st.sampled_from([(2,), (3,), (4,), (2, 2), (1, 3), (1, 2, 2), (2, 1)]),
       seed=st.integers(0, 10**6))
def test_signed_text_is_shaped_as_the_value_text(shape, seed):
    """The signed text of a part (``+0.1``, ``−0.2``) is written in the shape the value
    labels use for an array of that shape, and reads back as its numbers."""
    a = np.random.default_rng(seed).standard_normal(shape)
    a[tuple(0 for _ in shape)] = 0.0
    signed = _signed(a)
    assert _skeleton(signed) == _skeleton(_array_text(a, a.size))
    numbers = [float(x.replace("−", "-")) for x in re.findall(r"[+−]?[0-9.e+-]+", signed)]
    assert np.allclose(numbers, a.reshape(-1), rtol=1e-2, atol=0)




def _sharpest_turn(points: list) -> float:
    """The largest change of direction, in degrees, between successive pieces of a path."""
    pts = [p for k, p in enumerate(points) if k == 0 or np.hypot(
        p[0] - points[k - 1][0], p[1] - points[k - 1][1]) > 2]
    worst = 0.0
    for p, q, r in zip(pts, pts[1:], pts[2:]):
        u, v = np.subtract(q, p), np.subtract(r, q)
        cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
        worst = max(worst, float(np.degrees(np.arccos(np.clip(cos, -1, 1)))))
    return worst


@pytest.mark.parametrize("name", sorted(_CELLS))
def test_a_masked_ops_view_carries_the_kept_state_over_the_mask(name):
    """``net(xs, lengths=...)``: the state a padded sequence keeps, read by the next step's
    ``where`` straight from the step before, runs over the step's top row, crossing no edge
    of the mask's (under the row, it crossed every one of them), and the initial state's
    edge rises into the first step without a spike (it turned back on itself, 140°, at its
    bend). (An LSTM's kept c, in a lower row, is crossed by the mask's edges rising past it
    to the top row.)"""
    net, loss = _run(_CELLS[name](), 4, lengths=[4, 2])
    layout = _layout(ug.render(net, loss=loss, detail="ops", values=False))
    net = view(net).net
    g = net.graph
    edges = _drawn_edges(layout)
    masks = {g.id(n): n.step for n in g.nodes if n.step is not None and n.op == "const"}
    skips = 0
    for s, ns in net.state_nodes.items():
        if s != "h":
            continue
        for t in range(1, 4):
            for a, b, curve in edges:
                if a != g.id(ns[t - 1]) or b != g.id(ns[t]):
                    continue
                skips += 1
                for m, _, mc in edges:
                    if masks.get(m) == t:
                        assert not _cross(curve, mc), f"{s}'s kept state into {t} crosses {m}"
    assert skips == 3
    for s, n in net.init_nodes.items():
        for a, bend, first in edges:
            if a != g.id(n) or "_to_" not in bend:
                continue
            (rest,) = [c for x, _, c in edges if x == bend]
            assert _sharpest_turn(first + rest) < 100, f"{s}'s initial state spikes"

"""Every drawing goes through Graphviz's ``dot`` without an error or a warning, alone or two
side by side, and the two pictures of a figure are laid out as each is alone: the initial
states before step 0 in the reading direction, the state edges between consecutive steps
short (measured on ``dot -Tjson``)."""

import importlib
import json
import re
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unrollgraph as ug

pytestmark = pytest.mark.dot

_CELLS = {
    "rnn": lambda: ug.nn.RNNCell(2, 2, seed=0),
    "lstm": lambda: ug.nn.LSTMCell(2, 2, seed=0),
    "gru": lambda: ug.nn.GRUCell(2, 2, seed=0),
}


def _run(name, T, truncate=None, lengths=None):
    net = ug.unroll(_CELLS[name](), steps=T, truncate=truncate)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, 2, 2)), lengths=lengths)
    loss = (outs * outs).sum()
    loss.backward()
    return net, loss


def _dot(source: str) -> dict:
    """``dot -Tjson`` of ``source``; fails on an error and on any warning."""
    done = subprocess.run(["dot", "-Tjson"], input=source.encode(), capture_output=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr.decode()[:400]
    return json.loads(done.stdout)


def _options(detail):
    return {"ends": 1} if detail == "elide" else {}


def _pair(name, T, truncate, masked):
    lengths = [T, max(1, T // 2)] if masked else None
    return _run(name, T, lengths=lengths), _run(name, T, truncate, lengths=lengths)


# -- every combination goes through dot ----------------------------------------------------
@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("direction", ["horizontal", "vertical"])  # ("auto": horizontal)
def test_full_beside_truncated_ops_view_goes_through_dot(name, direction):
    """The reported figure: full and truncated BPTT over 4 steps, op by op ("trouble in
    init_rank": a cluster round each picture, the step boxes within it)."""
    (full, lf), (cut, lc) = _pair(name, 4, 2, False)
    _dot(ug.render_side_by_side(full, cut, labels=("full", "cut"), loss=(lf, lc),
                                detail="ops", direction=direction).source)


_GRID = st.tuples(st.sampled_from(sorted(_CELLS)), st.integers(1, 8), st.data(),
                  st.booleans(), st.sampled_from(["ops", "textbook", "elide", "steps"]))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_GRID, st.sampled_from(["auto", "horizontal", "vertical"]))
def test_any_two_pictures_side_by_side_go_through_dot(case, direction):
    name, T, data, masked, detail = case
    truncate = data.draw(st.integers(1, T))
    (full, lf), (cut, lc) = _pair(name, T, truncate, masked)
    _dot(ug.render_side_by_side(full, cut, labels=("full", "cut"), loss=(lf, lc),
                                detail=detail, direction=direction,
                                **_options(detail)).source)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_GRID)
def test_any_one_picture_goes_through_dot(case):
    name, T, data, masked, detail = case
    truncate = data.draw(st.one_of(st.none(), st.integers(1, T)))
    net, loss = _run(name, T, truncate, [T, max(1, T // 2)] if masked else None)
    _dot(ug.to_dot(net, loss=loss, detail=detail, **_options(detail)))


# -- the initial states before step 0, in both pictures --------------------------------------
def _positions(layout) -> dict:
    return {o["name"]: tuple(float(v) for v in o["pos"].split(","))
            for o in layout["objects"] if "pos" in o}


def _boxes(layout, k) -> dict:
    """step -> the box ``(x0, y0, x1, y1)`` of step t of picture ``k``."""
    head = f"cluster_s{k}_step_"
    return {int(o["name"][len(head):]): tuple(float(v) for v in o["bb"].split(","))
            for o in layout["objects"] if o["name"].startswith(head)}


def _side_layout(pairs, detail, direction):
    """dot's layout of the two nets of ``pairs`` side by side, with their losses."""
    (full, lf), (cut, lc) = pairs
    return _dot(ug.render_side_by_side(full, cut, labels=("full", "cut"), loss=(lf, lc),
                                       detail=detail, values=False,
                                       direction=direction).source)


@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("T,masked", [(3, False), (4, True)])
@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_both_pictures_draw_their_initial_states_left_of_step_0(name, T, masked, direction):
    """As in a picture alone (see test_render_layout.py): each initial state left of the
    first step's box, and the steps' boxes left to right in time order, in each picture."""
    pairs = _pair(name, T, 1, masked)
    layout = _side_layout(pairs, "ops", direction)
    pos = _positions(layout)
    for k, (net, _) in enumerate(pairs):
        net = net.last_run.net  # (with lengths=, the masked twin ran and is drawn)
        boxes = _boxes(layout, k)
        assert sorted(boxes) == list(range(T))
        for s, n in net.init_nodes.items():
            x = pos[f"s{k}_{net.graph.id(n)}"][0]
            assert x < boxes[0][0], f"picture {k}: initial state {s} is not left of step 0"
        for t in range(T - 1):
            assert boxes[t][2] < boxes[t + 1][0], f"picture {k}: step {t + 1} not right of {t}"


@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_both_textbook_pictures_draw_the_initial_states_first_in_their_rows(name, direction):
    pairs = _pair(name, 3, 1, False)
    layout = _side_layout(pairs, "textbook", direction)
    pos = _positions(layout)
    for k, (net, _) in enumerate(pairs):
        g = net.graph
        for s, n in net.init_nodes.items():
            xs = [pos[f"s{k}_{g.id(m)}"][0] for m in net.state_nodes[s]]
            x0 = pos[f"s{k}_{g.id(n)}"][0]
            assert x0 < min(xs) and xs == sorted(xs), (k, s, x0, xs)


# -- state edges between consecutive steps are short ---------------------------------------
_curve = importlib.import_module("test_render_layout")._curve  # (dot's splines sampled)


def _state_edges(net, layout, prefix=""):
    """``(t, curve, box of step t)`` for each drawn edge from step t - 1 into step t."""
    g = net.graph
    step = {prefix + g.id(n): n.step for n in g.nodes if n.step is not None}
    names = {o["_gvid"]: o["name"] for o in layout["objects"]}
    for name in names.values():  # a state's bend, in its step: its edge on is the state's
        bend = re.fullmatch(re.escape(prefix) + r"(n\d+)_out_row\d+", name)
        if bend:
            step[name] = step[prefix + bend.group(1)]
    boxes = {}
    for o in layout["objects"]:
        head = f"cluster_{prefix}step_"
        if o["name"].startswith(head):
            boxes[int(o["name"][len(head):])] = tuple(float(v) for v in o["bb"].split(","))
    out = []
    for e in layout.get("edges", []):
        a, b = names[e["tail"]], names[e["head"]]
        if e.get("style") == "invis" or a not in step or b not in step:
            continue
        ta, tb = sorted((step[a], step[b]))
        if tb == ta + 1:
            out.append((tb, _curve(e["pos"]), boxes, (a, b)))
    return out


def _short(edges) -> None:
    """Each edge from step t - 1 into step t keeps within the two steps' boxes: it never
    runs past step t's far side (round the box) nor into another step."""
    assert edges
    for t, curve, boxes, ends in edges:
        lo, hi = boxes[t - 1][0], boxes[t][2]
        xs = [x for x, _ in curve]
        assert lo - 1 <= min(xs) and max(xs) <= hi + 1, (ends, t, min(xs), max(xs), lo, hi)


@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("T,lengths", [(4, [4, 2]), (4, None)])
def test_state_edges_between_consecutive_steps_run_between_them(name, T, lengths):
    """A masked GRU over 4 steps drew one state edge from step 0 round the far side of
    step 1's box into its first op (the masked steps were not held to one layout)."""
    net, loss = _run(name, T, lengths=lengths)
    layout = _dot(ug.to_dot(net, loss=loss, detail="ops", values=False))
    _short(_state_edges(net.last_run.net, layout))


@pytest.mark.parametrize("name", sorted(_CELLS))
def test_state_edges_run_between_the_steps_in_both_pictures(name):
    pairs = _pair(name, 4, 2, True)
    (full, lf), (cut, lc) = pairs
    layout = _dot(ug.render_side_by_side(full, cut, labels=("full", "cut"), loss=(lf, lc),
                                         detail="ops", values=False,
                                         direction="vertical").source)
    for k, (net, _) in enumerate(pairs):
        _short(_state_edges(net.last_run.net, layout, f"s{k}_"))


@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_stacked_pictures_stand_step_over_step(name):
    """Full over truncated BPTT: step t of the lower picture straight under step t of the
    upper one (the link dot needs to meet the lower picture from its first node pulled that
    node, and the whole lower picture, sideways)."""
    pairs = _pair(name, 8, 3, False)
    (full, lf), (cut, lc) = pairs
    layout = _dot(ug.render_side_by_side(full, cut, labels=("full", "cut"), loss=(lf, lc),
                                         detail="textbook", values=False,
                                         direction="vertical").source)
    pos = _positions(layout)
    xs = [[pos[f"s{k}_{net.graph.id(n)}"][0] for n in net.input_nodes["x"]]
          for k, (net, _) in enumerate(pairs)]
    step = xs[0][1] - xs[0][0]
    for t in range(8):
        assert abs(xs[0][t] - xs[1][t]) <= 0.3 * step, (t, xs)  # over it, not a neighbour


@pytest.mark.parametrize("name,detail", [("rnn", "textbook"), ("lstm", "textbook"),
                                         ("rnn", "ops")])
def test_stacked_pictures_align_their_steps_and_each_keeps_its_legend(name, detail):
    """Full over truncated BPTT over 8 steps: each input of the lower picture exactly under
    the same step's input of the upper one (the lower picture stood 60 to 80 points left),
    and each picture's legend (its own totals and marks) under that picture: the upper
    one's between the upper picture and the lower one's caption, the lower one's under the
    lower picture (both stood under the lower picture)."""
    pairs = _pair(name, 8, 3, False)
    (full, lf), (cut, lc) = pairs
    layout = _dot(ug.render_side_by_side(full, cut, labels=("full", "cut"), loss=(lf, lc),
                                         detail=detail, values=False,
                                         direction="vertical").source)
    pos = _positions(layout)
    xs = [[pos[f"s{k}_{net.graph.id(n)}"] for n in net.input_nodes["x"]]
          for k, (net, _) in enumerate(pairs)]
    for t in range(8):
        assert abs(xs[0][t][0] - xs[1][t][0]) <= 1, (t, xs[0][t], xs[1][t])
    lowest_upper = min(y for _, y in xs[0])
    highest_lower = max(y for k, (x, y) in pos.items() if k.startswith("s1_")
                        and k not in ("s1_legend", "s1_caption"))
    lowest_lower = min(y for k, (x, y) in pos.items() if k.startswith("s1_")
                       and k != "s1_legend")
    assert pos["s1_caption"][1] < pos["s0_legend"][1] < lowest_upper
    assert highest_lower < pos["s1_caption"][1]
    assert pos["s1_legend"][1] < lowest_lower

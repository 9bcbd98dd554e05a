"""Where the step view puts its parameters and initial states, alone and in a stacked figure,
and how two stacked elided views line up (positions read back from ``dot -Tjson``)."""

import functools
import importlib
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unrollgraph as ug

pytestmark = pytest.mark.dot

_CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}


sbs = importlib.import_module("test_side_by_side_steps")
_run = functools.partial(sbs._run, hidden=3)
_layout, _objects = sbs._layout, sbs._positions


def _edges(layout) -> dict:
    """(tail, head) -> the drawn spline's points, for every visible edge."""
    names = {o["_gvid"]: o["name"] for o in layout["objects"]}
    out = {}
    for e in layout.get("edges", []):
        if e.get("style") == "invis":
            continue
        pts = [tuple(float(v) for v in p.split(",")) for p in e["pos"].split()
               if p[0] not in "es"]
        out[(names[e["tail"]], names[e["head"]])] = pts
    return out


def _check_step_view(net, diagram, prefix=""):
    """Each parameter at the left end of its bus: level with its first junction, left of
    it, its trunk a level line; the parameters left of the first step. Each initial state
    off the steps' row enters step 0 in a short straight edge, and stands left of it."""
    layout = _layout(diagram)
    pos, edges = _objects(layout), _edges(layout)
    g = net.graph
    box = pos[f"{prefix}step_0"]
    for p in net.param_nodes.values():
        pid = prefix + g.id(p)
        x, y, w, _ = pos[pid]
        jx, jy, _, _ = pos[f"{pid}_fan_0"]
        assert abs(y - jy) <= 1, (pid, y, jy)  # in its bus's row (it stood under them all)
        assert x + w / 2 < jx, (pid, x, w, jx)
        assert x + w / 2 < box[0] - box[2] / 2 + 1, (pid, x, w, box)
        trunk = edges[(pid, f"{pid}_fan_0")]
        assert max(abs(py - jy) for _, py in trunk) <= 1, (pid, trunk)  # level, no loop
    top = max(net.state_nodes, key=lambda s: g.index(net.state_nodes[s][0]))
    for s, n in net.init_nodes.items():
        nid = prefix + g.id(n)
        x, y, w, h = pos[nid]
        assert x < box[0] - box[2] / 2, (s, x, box)
        if s == top:
            continue
        pts = edges[(nid, f"{prefix}step_0")]
        (ax, ay), (bx, by) = pts[0], pts[-1]
        chord = math.hypot(bx - ax, by - ay)
        # near straight: no control point farther off the chord than a seventh of its
        # length (the loop stood half the chord off); short: no longer than the state's
        # own size
        off = max(abs((bx - ax) * (py - ay) - (by - ay) * (px - ax)) / chord for px, py in pts)
        assert off <= chord / 7, (s, off, chord, pts)
        assert chord <= w + h, (s, chord, w, h)
        # into the box's lower left corner (it looped down and into the box's left side)
        assert bx <= box[0] - box[2] / 2 + 6 and by <= box[1] - box[3] / 2 + 6, (pts, box)
    return pos


def test_the_lstm_step_view_draws_its_parameters_and_c_init_beside_step_0():
    """The reported picture: an LSTMCell(2, 3) at T = 8, run and backpropagated. The
    parameters stood in a row at the far bottom left, their trunks running up in long
    loops into the first step; c_init's edge looped down and round into step 0's side."""
    net, loss = _run("lstm", 8)
    _check_step_view(net, ug.render(net, detail="steps"))
    _check_step_view(net, ug.render(net, loss=loss, detail="steps", values=False))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(_CELLS)), st.integers(2, 9), st.sampled_from([None, False]))
def test_any_step_view_draws_its_parameters_at_their_buses(name, T, values):
    net, loss = _run(name, T)
    _check_step_view(net, ug.render(net, loss=loss, detail="steps", values=values))


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_stacked_step_views_draw_their_parameters_alike(name):
    """Full over truncated BPTT, T = 8: the lower picture's parameters stood further left
    than the upper one's. Each picture as a picture alone, each parameter of the one
    straight over the same parameter of the other."""
    (a, la), (b, lb) = _run(name, 8), _run(name, 8, truncate=3)
    fig = ug.render_side_by_side(a, b, loss=(la, lb), detail="steps", direction="vertical")
    pos = _check_step_view(a, fig, "s0_")
    _check_step_view(b, fig, "s1_")
    for p in a.param_nodes.values():
        i = a.graph.id(p)
        assert abs(pos[f"s0_{i}"][0] - pos[f"s1_{i}"][0]) <= 1, (i, pos[f"s0_{i}"],
                                                                 pos[f"s1_{i}"])


def _check_stacked_elided(a, b, T, **options):
    (net_a, loss_a), (net_b, loss_b) = a, b
    fig = ug.render_side_by_side(net_a, net_b, loss=(loss_a, loss_b), detail="elide",
                                 direction="vertical", **options)
    pos = _objects(_layout(fig))
    drawn = sorted(int(n.rsplit("_", 1)[1]) for n in pos if n.startswith("cluster_s0_step_"))
    assert drawn and drawn == sorted(int(n.rsplit("_", 1)[1]) for n in pos
                                     if n.startswith("cluster_s1_step_"))
    width = pos[f"cluster_s0_step_{drawn[0]}"][2] - pos[f"cluster_s0_step_{drawn[0]}"][0]
    for t in drawn:  # step t of the one over step t of the other (within 2 % of a step)
        up, lo = pos[f"cluster_s0_step_{t}"], pos[f"cluster_s1_step_{t}"]
        assert abs(up[0] - lo[0]) <= 0.02 * width, (t, up, lo)
        assert abs(up[2] - lo[2]) <= 0.02 * width, (t, up, lo)
    # each legend in the same place under its own picture, just right of the last step
    left = [pos[f"s{k}_legend"][0] - pos[f"s{k}_legend"][2] / 2 for k in range(2)]
    assert abs(left[0] - left[1]) <= 0.02 * width, left
    last = pos[f"cluster_s0_step_{drawn[-1]}"]
    assert last[0] < left[0] < last[2] + width, (left, last)


def test_stacked_elided_lstm_views_stand_step_over_step_with_their_legends_alike():
    """The reported figure: two LSTM nets at T = 40, elided, full over truncated BPTT. The
    lower picture's columns stood 140 points (a sixth of a step) left of the upper one's,
    and its legend as far."""
    _check_stacked_elided(_run("lstm", 40), _run("lstm", 40, truncate=5), 40)

"""Two step views stacked in one figure (``render_side_by_side(..., detail="steps")``): step t
of the lower picture straight under step t of the upper one, the steps evenly spaced, and each
picture's legend under it in the same place (positions read back from ``dot -Tjson``)."""

import json
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unrollgraph as ug

pytestmark = pytest.mark.dot

_CELLS = {
    "rnn": ug.nn.RNNCell,
    "lstm": ug.nn.LSTMCell,
    "gru": ug.nn.GRUCell,
}


def _run(name, T, truncate=None, seed=0, batch=1, hidden=2):
    net = ug.unroll(_CELLS[name](2, hidden, seed=seed), steps=T, truncate=truncate)
    outs, _ = net(np.random.default_rng(seed).standard_normal((T, batch, 2)))
    loss = (outs * outs).sum()
    loss.backward()
    return net, loss


def _layout(diagram) -> dict:
    """``dot -Tjson`` of a diagram; no warning allowed."""
    done = subprocess.run(["dot", "-Tjson"], input=diagram.source.encode(),
                          capture_output=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr.decode()[:400]
    return json.loads(done.stdout)


def _positions(layout) -> dict:
    """name -> (x, y, width, height) in points, for nodes; name -> bounding box for
    clusters."""
    out = {}
    for o in layout["objects"]:
        if "pos" in o:
            x, y = (float(v) for v in o["pos"].split(","))
            out[o["name"]] = (x, y, float(o["width"]) * 72, float(o["height"]) * 72)
        elif "bb" in o:
            out[o["name"]] = tuple(float(v) for v in o["bb"].split(","))
    return out


def _objects(diagram) -> dict:
    """:func:`_positions` of a diagram's layout."""
    return _positions(_layout(diagram))


def _check_stacked(a, b, T, **options):
    (net_a, loss_a), (net_b, loss_b) = a, b
    fig = ug.render_side_by_side(net_a, net_b, labels=("one", "other"), loss=(loss_a, loss_b),
                                 detail="steps", direction="vertical", **options)
    pos = _objects(fig)
    xs = [[pos[f"s{k}_step_{t}"][0] for t in range(T)] for k in range(2)]
    for t in range(T):  # step t of the one straight over step t of the other
        assert abs(xs[0][t] - xs[1][t]) <= 1, (t, xs)
    for k in range(2):  # evenly spaced, as a picture alone (no step held apart)
        gaps = [q - p for p, q in zip(xs[k], xs[k][1:])]
        assert min(gaps) > 0 and max(gaps) <= 1.5 * min(gaps), (k, gaps)
        # the initial state in the steps' row no farther from step 0 than a step from the next
        init = pos[f"s{k}_{fig_lead(net_a if k == 0 else net_b)}"][0]
        assert 0 < xs[k][0] - init <= 1.2 * max(gaps), (k, init, xs[k])
    # each legend in the same place under its own picture: left sides in line, just right of
    # the last step's column; the upper one over the lower picture, the lower one under it
    left = [pos[f"s{k}_legend"][0] - pos[f"s{k}_legend"][2] / 2 for k in range(2)]
    assert abs(left[0] - left[1]) <= 1, left
    assert xs[0][-1] < left[0] < xs[0][-1] + pos["s0_step_0"][2], (left, xs[0][-1])
    upper = [v[1] for n, v in pos.items() if n.startswith("s0_") and n != "s0_legend"
             and not n.startswith("s0_side_gap")]
    lower = [v[1] for n, v in pos.items() if n.startswith("s1_") and n != "s1_legend"]
    legend_y = [pos[f"s{k}_legend"][1] for k in range(2)]
    assert max(lower) < legend_y[0] < min(upper), (legend_y, min(upper), max(lower))
    assert legend_y[1] < min(lower), (legend_y, min(lower))


def fig_lead(net) -> str:
    """The id of the initial state a step view draws in its steps' row: the state a step
    computes last (an LSTM's h)."""
    g = net.graph
    top = max(net.state_nodes, key=lambda s: g.index(net.state_nodes[s][0]))
    return g.id(net.init_nodes[top])


@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_stacked_step_views_stand_step_over_step_with_their_legends_alike(name):
    """The reported figure: full over truncated BPTT, T = 8. The lower picture's step 0
    stood 180 to 260 points left of the upper one's, and the upper legend stood right of the
    last step while the lower one stood under step 0."""
    _check_stacked(_run(name, 8), _run(name, 8, truncate=3), 8)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(_CELLS)), st.integers(5, 12), st.booleans(),
       st.sampled_from([(1, 2), (2, 3)]), st.sampled_from([None, False]))
def test_any_two_stacked_step_views_line_up(name, T, truncated, size, values):
    """Any two nets of T steps, the second truncated or with other weights and inputs, with
    values written out or as norms (a batch of two, three units) or left out."""
    batch, hidden = size
    a = _run(name, T, batch=batch, hidden=hidden)
    b = (_run(name, T, truncate=max(1, T // 3), batch=batch, hidden=hidden) if truncated
         else _run(name, T, seed=1, batch=batch, hidden=hidden))
    _check_stacked(a, b, T, values=values)


@pytest.mark.parametrize("detail", ["textbook", "ops"])
def test_stacked_textbook_and_ops_views_keep_their_legends_in_the_same_place(detail):
    """As the step views: each legend's left side just right of its picture's last step, the
    two in line (an op view's upper legend stood right of its lower one's by 470 points)."""
    (a, la), (b, lb) = _run("rnn", 6), _run("rnn", 6, truncate=2)
    pos = _objects(ug.render_side_by_side(a, b, labels=("one", "other"), loss=(la, lb),
                                          detail=detail, direction="vertical", values=False))
    left = [pos[f"s{k}_legend"][0] - pos[f"s{k}_legend"][2] / 2 for k in range(2)]
    assert abs(left[0] - left[1]) <= 1, left
    for k, net in enumerate((a, b)):
        last = pos[f"s{k}_{net.graph.id(net.input_nodes['x'][-1])}"][0]
        assert last < left[k], (k, last, left)

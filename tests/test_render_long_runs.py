"""Long truncated runs in the default view (``detail="auto"``): the elided op view is as
compact as the steps it draws, its legend under the steps as in the other op views.
Positions read back from ``dot -Tjson``."""

import json
import re

import numpy as np
import pytest

import unrollgraph as ug

pytestmark = pytest.mark.dot


def _run(cell, T, truncate):
    net = ug.unroll(cell, steps=T, truncate=truncate)
    outs, *_ = net(np.random.default_rng(0).standard_normal((T, 2, 2)))
    loss = ug.mse_loss(outs, np.zeros_like(outs.data))
    loss.backward()
    return net, loss


def _boxes(layout) -> list:
    """The steps' boxes and the elided steps' nodes, left to right, as ``(x0, x1, name)``."""
    out = []
    for o in layout["objects"]:
        name = o.get("name", "")
        if name.startswith("cluster_step_"):
            x0, _, x1, _ = map(float, o["bb"].split(","))
            out.append((x0, x1, name))
        elif re.fullmatch(r"elided\d*", name):
            x, half = float(o["pos"].split(",")[0]), float(o["width"]) * 36
            out.append((x - half, x + half, name))
    return sorted(out)


def _widest_empty_band(layout, left: float, right: float) -> float:
    """The widest x-interval within ``[left, right]`` that no drawn node or step box
    covers (invisible points and columns left out)."""
    spans = []
    for o in layout["objects"]:
        name = o.get("name", "")
        if "invis" in o.get("style", "") or o.get("shape") == "point":
            continue
        if name.startswith("cluster_step_"):
            x0, _, x1, _ = map(float, o["bb"].split(","))
        elif "pos" in o and "width" in o and float(o["width"]) > 0:
            x, half = float(o["pos"].split(",")[0]), float(o["width"]) * 36
            x0, x1 = x - half, x + half
        else:
            continue
        spans.append((x0, x1))
    widest, reach = 0.0, left
    for x0, x1 in sorted(spans):
        if x1 <= reach:
            continue
        if x0 > reach:
            widest = max(widest, min(x0, right) - reach)
        reach = max(reach, x1)
        if reach >= right:
            break
    return max(widest, right - reach)


@pytest.mark.parametrize("make", [lambda: ug.nn.RNNCell(2, 2, seed=0),
                                  lambda: ug.nn.LSTMCell(2, 2, seed=0)],
                         ids=["rnn", "lstm"])
def test_a_long_truncated_run_draws_no_gap_beside_its_elided_steps(make):
    """T = 200, truncate = 100 in the default view: two elided runs (the steps before the
    cut, the steps after it), each beside the drawn steps either side with no more room
    than between two steps' boxes (each elided run's invisible column took the title as
    its label and stood as wide as the title: an LSTM's gaps were 889 points, wider than a
    step), and the legend under the steps, within their width (it stood beside the last
    step)."""
    net, loss = _run(make(), 200, 100)
    d = ug.render(net, loss=loss)
    assert "elided101" in d.source  # (the view the default picks: two elided runs)
    layout = json.loads(d.pipe(format="json"))
    boxes = _boxes(layout)
    assert [n for *_, n in boxes].count("elided") == 1 and len(boxes) == 8, boxes
    step = min(x1 - x0 for x0, x1, n in boxes if n.startswith("cluster"))
    gaps = [(b[0] - a[1], a[2], b[2]) for a, b in zip(boxes, boxes[1:])]
    # no band of the picture, from the first step to the last, empty of anything drawn
    # wider than 24 points (a step's output may stand out over its box and hold the elided
    # run's column a little further on, which leaves no empty band)
    assert _widest_empty_band(layout, boxes[0][0], boxes[-1][1]) <= 24, (step, gaps)
    assert all(gap <= step / 4 for gap, *_ in gaps), (step, gaps)
    legend = next(o for o in layout["objects"] if o.get("name") == "legend")
    x, y = map(float, legend["pos"].split(","))
    half = float(legend["width"]) * 36
    assert boxes[0][0] <= x - half and x + half <= boxes[-1][1], (x, half, boxes)
    bottom = min(float(o["bb"].split(",")[1]) for o in layout["objects"]
                 if o.get("name", "").startswith("cluster_step_"))
    assert y + float(legend["height"]) * 36 <= bottom
    # the picture no wider than what it draws besides the legend
    ends = [float(o["pos"].split(",")[0]) + float(o["width"]) * 36
            for o in layout["objects"] if "pos" in o and "width" in o and o["name"] != "legend"]
    width = float(layout["bb"].split(",")[2])
    assert width <= max(ends) + 10, (width, max(ends))

"""The folded cell drawn alone (``ug.render(cell)``) read as a textbook figure: each parameter
next to the op reading it, each feedback round the outside of the cell, crossing no edge.
Positions read back from ``dot -Tjson``."""

import importlib
import json

import numpy as np
import pytest

import unrollgraph as ug

pytestmark = pytest.mark.dot

_CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}


def _cell(name, ran):
    cell = _CELLS[name](input_size=3, hidden_size=4, seed=0)
    if ran:  # (a backward: the parameters print their .grad, their boxes wider)
        net = ug.unroll(cell, steps=3)
        outs, *_ = net(np.random.default_rng(0).standard_normal((3, 2, 3)))
        ug.mse_loss(outs, np.zeros_like(outs.data)).backward()
    return cell


_geometry = importlib.import_module("test_render_layout")
_curve, _cross = _geometry._curve, _geometry._cross  # (dot's splines as polylines; crossing)


def _layout(cell):
    layout = json.loads(ug.render(cell).pipe(format="json"))
    names = {o["_gvid"]: o["name"] for o in layout["objects"]}
    boxes = {}
    for o in layout["objects"]:
        if "pos" in o:
            x, y = map(float, o["pos"].split(","))
            w, h = float(o["width"]) * 36, float(o["height"]) * 36
            boxes[o["name"]] = (x - w, y - h, x + w, y + h)
    edges = [(names[e["tail"]], names[e["head"]], e) for e in layout["edges"] if "pos" in e]
    return boxes, edges


@pytest.mark.parametrize("ran", [False, True], ids=["fresh", "after-backward"])
@pytest.mark.parametrize("name", sorted(_CELLS))
def test_the_folded_cells_feedback_runs_round_the_outside_crossing_no_edge(name, ran):
    """Each feedback (next state -> state, the one-step delay) is drawn as a path through
    two invisible corners, its rail between them outside every node of the rows it spans,
    and no part of it crosses another edge (as one edge against the rows, it ran through
    the middle of the cell: 2 crossings for an RNN, 5 for an LSTM)."""
    cell = _cell(name, ran)
    g = cell.graph()
    boxes, edges = _layout(cell)
    delay = [(a, b, e) for a, b, e in edges if a.startswith("delay") or b.startswith("delay")]
    assert len(delay) == 3 * len(cell.feedbacks)
    for state, nxt in cell.feedbacks.items():
        src, dst = g.id(nxt.node), g.id(cell.states[state].node)
        over = next(b for a, b, _ in delay if a == src)
        under = over.replace("_over", "_under")
        assert {(a, b) for a, b, _ in delay if over in (a, b) or under in (a, b)} == \
            {(src, over), (under, over), (under, dst)}
        x = (boxes[over][0] + boxes[over][2]) / 2
        lo, hi = boxes[under][1], boxes[over][3]
        beside = [b for n, b in boxes.items() if n != "legend" and not n.startswith("delay")
                  and b[3] > lo and b[1] < hi]
        assert all(b[2] < x for b in beside) or all(b[0] > x for b in beside), (state, x)
    crossings = [(a, b, c, d) for a, b, e in delay for c, d, f in edges
                 if f is not e and not {a, b} & {c, d} and not c.startswith("delay")
                 and _cross(_curve(e["pos"]), _curve(f["pos"]))]
    assert crossings == []


@pytest.mark.parametrize("ran", [False, True], ids=["fresh", "after-backward"])
@pytest.mark.parametrize("name", sorted(_CELLS))
def test_each_parameter_of_the_folded_cell_stands_under_the_op_reading_it(name, ran):
    """A bias stands in the row under the sum it is added into, beside the sum's other
    operand (in a row of the parameters under everything, bias_ih stood at the far left,
    its edge rising across several rows); a weight straight under the transpose reading
    it."""
    cell = _cell(name, ran)
    g = cell.graph()
    boxes, edges = _layout(cell)
    for pname, t in cell.parameters().items():
        p = g.id(t.node)
        readers = [b for a, b, _ in edges if a == p]
        assert len(readers) == 1, (pname, readers)
        reader = boxes[readers[0]]
        box = boxes[p]
        if pname.startswith("bias"):
            # in the row right under the reader's (the gap no more than ranksep), at most
            # half an inch aside
            assert 0 <= reader[1] - box[3] <= 0.32 * 72 + 2, (pname, box, reader)
            assert max(box[0] - reader[2], reader[0] - box[2]) <= 36, (pname, box, reader)
        else:  # under the reader, their boxes overlapping left to right
            assert box[3] <= reader[1] and box[0] < reader[2] and reader[0] < box[2], \
                (pname, box, reader)

"""An LSTM's op-view step is as narrow in a masked run and in a figure of two pictures as
drawn alone: its gates' row centred over the op they read in every case. Widths read back
from ``dot -Tjson``."""

import json

import numpy as np
import pytest

import unrollgraph as ug

pytestmark = pytest.mark.dot


def _run(T=3, lengths=None, truncate=None):
    net = ug.unroll(ug.nn.LSTMCell(2, 3, seed=0), steps=T, truncate=truncate)
    n = len(lengths) if lengths else 2
    outs, *_ = net(np.random.default_rng(0).standard_normal((T, n, 2)), lengths=lengths)
    loss = ug.mse_loss(outs, np.zeros_like(outs.data))
    loss.backward()
    return net, loss


def _step_widths(diagram) -> list:
    layout = json.loads(diagram.pipe(format="json"))
    out = []
    for o in layout["objects"]:
        if "cluster" in o.get("name", "") and "step_" in o["name"]:
            x0, _, x1, _ = map(float, o["bb"].split(","))
            out.append(x1 - x0)
    return out


def test_an_lstm_step_is_no_wider_masked_or_in_a_figure_than_alone():
    """Alone, an LSTM's step is about 700 points wide; masked (where nodes over the next
    states) and in a figure (folded cell beside it, or two runs) its rows were laid out
    uncentred, the gates' row hanging off to the right of the sum they read: 885 to 900
    points a step. Now each is at most a few points wider than alone."""
    net, loss = _run()
    alone = _step_widths(ug.render(net, loss=loss, detail="ops"))
    assert len(set(alone)) == 1
    masked_net, masked_loss = _run(lengths=[3, 1])
    masked = _step_widths(ug.render(masked_net, loss=masked_loss, detail="ops"))
    cut_net, cut_loss = _run(truncate=2)
    pair = _step_widths(ug.render_side_by_side(net, cut_net, loss=(loss, cut_loss),
                                               detail="ops"))
    beside = _step_widths(ug.render_side_by_side(net.cell, net, loss=(None, loss),
                                                 detail="ops"))
    for name, widths in (("masked", masked), ("two runs", pair), ("beside the cell", beside)):
        assert widths and max(widths) <= alone[0] + 40, (name, widths, alone[0])

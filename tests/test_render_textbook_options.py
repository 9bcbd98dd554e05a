"""Options the textbook view cannot draw are refused, not silently dropped: it draws whole
values with the weights on the edges, so it has no scalar edge for ``derivatives=`` and no op
path for ``highlight=`` (``contributions=`` it does draw, in the legend)."""

from __future__ import annotations

import numpy as np
import pytest

import unrollgraph as ug


def _net():
    net = ug.unroll(ug.nn.RNNCell(1, 1, seed=0), 3)
    out, _ = net(np.ones((3, 1, 1)))
    out.sum().backward()
    return net


@pytest.mark.parametrize("kw, word", [({"derivatives": True}, "derivatives="),
                                      ({"highlight": "h_next@1"}, "highlight=")])
def test_the_textbook_view_refuses_what_it_cannot_draw(kw, word):
    net = _net()
    with pytest.raises(ug.RenderError, match=word + r".*detail='ops'"):
        ug.to_dot(net, detail="textbook", **kw)
    ug.to_dot(net, detail="ops", **kw)  # where it is drawn


def test_the_textbook_view_draws_contributions():
    net = _net()
    assert ug.to_dot(net, detail="textbook", contributions=True) != ug.to_dot(
        net, detail="textbook")


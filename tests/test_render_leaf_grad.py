"""A tensor's history prints each leaf's ``.grad``, which adds up over every ``backward()``
call, as ``.grad`` with a legend row saying so, as the folded cell prints its parameters'."""

import html
import re

import numpy as np

import unrollgraph as ug
from unrollgraph.view import view

_FLOAT = re.compile(r"[-−+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf|nan)")


def _line(text, nid):
    return next(line for line in text.splitlines() if line.lstrip().startswith(f'"{nid}" ['))


def test_a_leaf_prints_its_accumulated_grad_as_grad_with_a_legend_row():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    w = ug.tensor(-1.5, requires_grad=True, name="w")
    for _ in range(2):  # two calls: x.grad holds twice one call's gradient
        y = ug.tanh(x * w)
        y.backward()
    text = ug.to_dot(y)
    g = view(y).graph
    for leaf in (x, w):
        line = _line(text, g.id(leaf.node))
        m = re.search(r"\.grad = ([^<]*)<", line)
        assert m, line
        got = float(_FLOAT.findall(html.unescape(m.group(1)))[0].replace("−", "-"))
        assert np.isclose(got, float(leaf.grad), rtol=6e-3)
        assert "∇ = " not in line
    # an op prints its gradient as ∇
    assert "∇ = " in _line(text, g.id(y.node))
    legend = _line(text, "legend")
    assert ">.grad<" in legend
    assert "a leaf tensor&#39;s .grad: the sum of its gradient over every" in legend \
        or "a leaf tensor's .grad: the sum of its gradient over every" in legend
    assert "backward() call since zero_grad()" in legend


def test_a_parameter_read_by_an_unrolled_net_says_every_step_too():
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=3)
    out, _ = net(np.random.default_rng(0).standard_normal((3, 1, 2)))
    loss = (out * out).sum()
    loss.backward()
    text = ug.to_dot(loss)
    legend = _line(text, "legend")
    assert "over every step and every" in legend
    assert text.count(".grad = ") == 4  # the four parameters, each once


def test_the_highlighted_leaf_is_named_by_what_it_prints():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    w = ug.tensor(-1.5, requires_grad=True, name="w")
    y = ug.tanh(x * w)
    y.backward()
    text = ug.to_dot(y, derivatives=True, highlight=x)
    assert ".grad of x: the product of the ∂" in text
    assert "∇ of x" not in text


def test_without_gradients_nothing_says_grad():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    y = x * 2.0
    text = ug.to_dot(y)
    assert ".grad" not in text

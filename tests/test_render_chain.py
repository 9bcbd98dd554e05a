"""render(..., chain_rule=True): the chain rule written beside a highlighted path."""

import re

import numpy as np
import pytest

import unrollgraph as ug


def _note(source):
    line = next(l for l in source.splitlines() if l.lstrip().startswith('"chain_rule"'))
    label = re.search(r"label=<(.*)>\];$", line).group(1)
    return [r for r in label.split("<br align='left'/>") if r]


def test_single_path_product_equals_the_gradient():
    x = ug.tensor(0.3, requires_grad=True, name="x")
    w = ug.tensor(-1.5, requires_grad=True, name="w")
    y = ug.sigmoid(ug.tanh(x * w) * 3.0)
    y.backward()
    rows = _note(ug.to_dot(y, derivatives=True, highlight=x, chain_rule=True))
    assert rows[1].startswith("path 1: x → ")
    assert len([r for r in rows if r.startswith("path")]) == 1
    product = float(rows[2].split("=")[-1])
    assert np.isclose(product, float(x.grad), rtol=5e-3)


def test_several_paths_each_product_and_their_sum():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    w = ug.tensor(2.0, requires_grad=True, name="w")
    z = x * w
    y = ug.tanh(z)
    loss = y * y + z
    loss.backward()
    rows = _note(ug.to_dot(loss, derivatives=True, highlight=w, chain_rule=True))
    paths = [r for r in rows if r.startswith("path")]
    assert len(paths) == 3
    assert any("(input 0)" in p for p in paths) and any("(input 1)" in p for p in paths)
    assert rows[-1].startswith("sum over the 3 paths = ")
    assert np.isclose(float(rows[-1].split("=")[-1]), float(w.grad), rtol=5e-3)


def test_chain_rule_needs_a_highlight_and_scalars():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    with pytest.raises(ug.RenderError, match="pass highlight="):
        ug.to_dot(ug.tanh(x), chain_rule=True)
    v = ug.tensor([0.5, 1.0], requires_grad=True, name="v")
    with pytest.raises(ug.RenderError, match="scalar"):
        ug.to_dot(ug.tanh(v).sum(), highlight=v, chain_rule=True)
    net = ug.unroll(ug.nn.RNNCell(1, 1, seed=0), steps=2)
    with pytest.raises(ug.RenderError, match="tensor's graph of scalars"):
        ug.to_dot(net, chain_rule=True, highlight="n3")

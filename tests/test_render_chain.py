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
    product = float(rows[2].split("=")[-1].replace("−", "-"))
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
    assert np.isclose(float(rows[-1].split("=")[-1].replace("−", "-")), float(w.grad), rtol=5e-3)


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


# -- derivatives=True where edges join tensors -------------------------------------------------
def _net_loss(H):
    cell = ug.nn.RNNCell(1, H, seed=0)
    net = ug.unroll(cell, steps=2)
    out, h = net(np.array([0.5, -1.0]).reshape(2, 1, 1))
    loss = (out * out).sum()
    loss.name = "loss"
    loss.backward()
    return net, loss


def _labels(source):
    return re.findall(r'->[^\n]*label=<[^\n]*>∂ ', source)


def test_derivatives_on_a_nets_loss_say_where_to_look_instead_of_drawing_nothing():
    net, loss = _net_loss(1)
    source = ug.to_dot(loss, derivatives=True)
    assert not _labels(source)  # the call of the net is one node: no edge joins scalars
    note = next(l for l in source.splitlines() if l.lstrip().startswith('"derivatives_note"'))
    assert "ug.render(net, loss=loss," in note and "ug.symbolic.chain_rule" in note
    # the unrolled graph of a one-unit net labels each step's edges
    unrolled = ug.to_dot(net, loss=loss, derivatives=True)
    assert len(_labels(unrolled)) >= 10 and '"derivatives_note"' not in unrolled
    # two units: no edge joins scalars there either, and the note says so
    net2, loss2 = _net_loss(2)
    source = ug.to_dot(net2, loss=loss2, derivatives=True)
    assert not _labels(source) and '"derivatives_note"' in source
    assert "ug.render(net, loss=loss," not in source  # already the unrolled graph


def test_partly_scalar_graphs_label_what_they_can_and_the_legend_says_which():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    v = ug.tensor([1.0, 2.0], requires_grad=True, name="v")
    y = (ug.tanh(x) * v).sum()
    y.backward()
    source = ug.to_dot(y, derivatives=True)
    assert len(_labels(source)) == 1  # x → tanh(x), the one edge between scalars
    assert "edges between tensors have none" in source
    assert '"derivatives_note"' not in source


# -- the legend of a tensor's picture: what the highlight and the ∂ mean, under the picture ----
def _scalar_chain():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    w = ug.tensor(-1.5, requires_grad=True, name="w")
    b = ug.tensor(0.25, requires_grad=True, name="b")
    y = ug.tanh(x * w + b)
    y.name = "y"
    y.backward()
    return x, y


def _legend_text(source):
    import html

    line = next(x for x in source.splitlines() if x.lstrip().startswith('"legend" ['))
    return html.unescape(re.sub(r"<[^>]+>", " ", line))


def test_the_legend_says_what_the_highlight_and_the_derivatives_mean():
    """The gallery's scalar chain: the legend named only the node shapes and the colour
    scale; it now says the highlight is the path from x to y and what an edge's ∂ is, and
    how x's gradient follows from them."""
    x, y = _scalar_chain()
    text = " ".join(_legend_text(ug.to_dot(y, derivatives=True, highlight=x)).split())
    assert "highlight: the paths from x to y" in text, text
    assert "local derivative ∂v/∂u" in text, text
    assert ".grad of x: the product of the ∂ along the highlighted path" in text, text
    plain = " ".join(_legend_text(ug.to_dot(y, derivatives=True)).split())
    assert "highlight" not in plain and "sum, over its paths to the output" in plain, plain
    assert "∂" not in " ".join(_legend_text(ug.to_dot(y)).split())


@pytest.mark.dot
@pytest.mark.parametrize("rankdir", [None, "LR", "TB"])
def test_the_legend_of_a_tensor_stands_under_the_picture(rankdir):
    """Where the reader's eye ends: the legend's top under the bottom of every node (it stood
    top-left, over the inputs)."""
    import json
    import subprocess

    x, y = _scalar_chain()
    source = ug.to_dot(y, derivatives=True, highlight=x, rankdir=rankdir)
    done = subprocess.run(["dot", "-Tjson"], input=source.encode(), capture_output=True)
    objs = {o["name"]: o for o in json.loads(done.stdout)["objects"] if "pos" in o}

    def bottom_top(o):
        y_ = float(o["pos"].split(",")[1])
        half = float(o["height"]) * 36
        return y_ - half, y_ + half

    legend_top = bottom_top(objs["legend"])[1]
    lowest = min(bottom_top(o)[0] for n, o in objs.items() if n != "legend")
    assert legend_top < lowest, (legend_top, lowest)

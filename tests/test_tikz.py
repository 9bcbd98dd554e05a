"""TikZ export, checked by its structure (no LaTeX engine is installed to compile it)."""

import json
import re
import shutil

import numpy as np
import pytest

import unrollgraph as ug
from unrollgraph.errors import RenderError
from unrollgraph.tikz import latex_text

pytestmark = pytest.mark.dot


def _net():
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=3)
    out, _ = net(np.ones((3, 1, 2)))
    loss = (out * out).sum()
    loss.backward()
    return net, loss


def _balanced(text):
    depth = 0
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth < 0:
            return False
        i += 1
    return depth == 0


def test_every_shape_and_text_line_of_the_layout_is_drawn():
    net, loss = _net()
    opts = dict(loss=loss, detail="textbook", theme="print")
    tex = ug.to_tikz(net, **opts)
    assert tex.startswith("\\documentclass[tikz]{standalone}")
    assert tex.count("\\begin{tikzpicture}") == 1 and tex.rstrip().endswith("\\end{document}")
    layout = json.loads(ug.render(net, **opts).pipe(format="json"))
    ops = [op for o in [layout] + layout["objects"] + layout["edges"]
           for k, v in o.items() if k.startswith("_") and k.endswith("draw_") for op in v]
    texts = [op["text"] for op in ops if op["op"] == "T"]
    ellipses = [op for op in ops if op["op"] in "Ee"]
    assert len(re.findall(r"^\\node\[", tex, flags=re.M)) == len(texts)
    assert tex.count(" ellipse [") == len(ellipses)
    for t in texts:
        assert "{" + latex_text(t) + "}" in tex
    assert "weight\\_hh" in tex and "weight\\_ih" in tex  # the edge labels
    assert _balanced(tex)
    # coordinates stay inside the layout's bounding box
    x1, y1 = (float(v) for v in layout["bb"].split(",")[2:])
    for x, y in re.findall(r"\((-?[0-9.]+),(-?[0-9.]+)\)", tex):
        assert -1 <= float(x) <= x1 + 1 and -1 <= float(y) <= y1 + 1
    body = ug.to_tikz(net, standalone=False, **opts)
    assert body.startswith("\\begin{tikzpicture}") and "documentclass" not in body


def test_hostile_names_are_latex_escaped():
    x = ug.tensor(1.0, requires_grad=True, name="\\Gamma_{1} & 5% #$~^")
    y = x * x
    y.backward()
    tex = ug.to_tikz(y)
    assert "\\textbackslash{}Gamma\\_\\{1\\} \\& 5\\% \\#\\$\\textasciitilde{}\\textasciicircum{}" \
        in tex
    assert _balanced(tex)


def test_a_diagram_is_exported_as_it_is_and_refuses_options():
    net, loss = _net()
    g = ug.render(net, loss=loss, detail="textbook")
    assert ug.to_tikz(g) == ug.to_tikz(net, loss=loss, detail="textbook")
    with pytest.raises(RenderError, match="drawn as it is"):
        ug.to_tikz(g, theme="print")
    with pytest.raises(RenderError, match="unknown render option"):
        ug.to_tikz(net, colour="red")


def test_without_dot_a_render_error(monkeypatch):
    net, loss = _net()
    monkeypatch.setenv("PATH", "/nonexistent")
    assert shutil.which("dot") is None
    with pytest.raises(RenderError, match="Graphviz"):
        ug.to_tikz(net, loss=loss)

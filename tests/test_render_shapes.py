"""The shapes docs/gallery.md names are the shapes the diagrams draw (the gallery called a
cell's per-step losses "ovals"; they are octagons)."""

import re
from pathlib import Path

import numpy as np

import unrollgraph as ug

_DOC = Path(__file__).resolve().parents[1] / "docs" / "gallery.md"
_NODE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" \[.*?shape="([a-z0-9]+)" style="([^"]*)"')


def _shapes(text: str) -> dict:
    return {m.group(1): (m.group(2), m.group(3)) for line in text.splitlines()
            if (m := _NODE.match(line))}


def _cost_cell():
    cell = ug.Cell("with_cost")
    x, target = cell.input("x", (2,)), cell.input("target", (2,))
    h = cell.state("h", (2,))
    W = cell.param("W", np.eye(2) * 0.5)
    hn = ug.tanh(x + h @ W, name="h_next")
    cell.feedback(h, hn)
    d = hn - target
    cell.output("cost", (d * d).sum(axis=-1))
    return cell


def test_the_gallery_names_the_shapes_drawn():
    doc = " ".join(_DOC.read_text().split())
    net = ug.unroll(_cost_cell(), steps=3)
    cost, _ = net({"x": np.ones((3, 1, 2)), "target": np.zeros((3, 1, 2))})
    loss = cost.sum()
    loss.backward()
    g = net.graph
    text = ug.to_dot(net, loss=loss, detail="textbook")
    shapes = _shapes(text)
    parts = [shapes[f"{g.id(n)}_out0"] for n in net.output_nodes["cost"]]
    assert {s for s, _ in parts} == {"octagon"}
    assert "the loss's parts: octagons" in doc
    ops = _shapes(ug.to_dot(net, loss=loss, detail="ops"))
    init = g.id(net.init_nodes["h"])
    assert ops[init][0] == "ellipse" and "initial states are ovals with a thick blue" in doc
    nxt = g.id(net.state_nodes["h"][0])
    assert ops[nxt] == ("box", "rounded,filled")
    assert "next state (`h_next`) a rounded box" in doc
    assert ops[g.id(net.param_nodes["W"])][0] == "cylinder" and "parameters are cylinders" in doc
    x0 = g.id(net.input_nodes["x"][0])
    assert ops[x0][0] == "invhouse" and "inputs are pentagons pointing down" in doc

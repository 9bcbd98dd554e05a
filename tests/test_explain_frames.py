"""The pictures of the narrated walk (``Explanation.frames()``, the stepper's picture): an
unrolled graph's steps side by side in time order, every gradient label clear of the other
labels and of the nodes, and a one-element gradient written as the number it is."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

import unrollgraph as ug

pytestmark = pytest.mark.dot

#: the least room between a label and another label or a node (points): text closer than
#: that reads as one
GAP = 3.0


def _walk(kind: str, steps: int = 3, hidden: int = 1):
    cell = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}[kind](
        1, hidden, seed=0)
    net = ug.unroll(cell, steps=steps)
    xs = np.random.default_rng(0).standard_normal((steps, 1, 1))
    out, *_ = net(xs)
    loss = ug.mean(out * out)
    loss.name = "L"
    return ug.explain(loss)


def _layout(frame) -> dict:
    """dot's layout of a frame (its JSON): node boxes, label boxes, node centres."""
    text = subprocess.run(["dot", "-Tjson"], input=frame.source.encode(),
                          capture_output=True, check=True).stdout
    g = json.loads(text)
    nodes, centres, labels = [], {}, []
    for o in g.get("objects", []):
        if "pos" in o and "width" in o and o.get("style") != "invis" and o.get("shape") \
                != "point":
            x, y = map(float, o["pos"].split(","))
            w, h = float(o["width"]) * 36, float(o["height"]) * 36
            nodes.append((o["name"], (x - w, y - h, x + w, y + h)))
            centres[o["name"]] = x
    for e in g.get("edges", []):
        size = 14.0
        for op in e.get("_ldraw_", []) + e.get("_xldraw_", []):
            if op["op"] == "F":
                size = op["size"]
            if op["op"] == "T":
                x, y = op["pt"]
                w = op["width"]
                x0 = {"l": x, "r": x - w}.get(op["align"], x - w / 2)
                labels.append((e["_gvid"], op["text"], (x0, y - 0.25 * size, x0 + w,
                                                        y + 0.8 * size)))
    return {"nodes": nodes, "labels": labels, "x": centres}


def _meet(a, b, gap=GAP) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_gradient_labels_stand_clear_of_each_other_and_of_the_nodes(kind):
    """In the last frame (every edge labelled) and one midway, no gradient on an edge
    touches another or a node (they did: ``[0.04571]`` against ``[−0.09927]``, the two
    labels of ``y * y`` against each other)."""
    ex = _walk(kind)
    frames = ex.frames()
    for k in (len(frames) // 2, len(frames) - 1):
        lay = _layout(frames[k])
        labels = lay["labels"]
        assert labels
        for i, (e1, t1, b1) in enumerate(labels):
            for e2, t2, b2 in labels[i + 1:]:
                assert e1 == e2 or not _meet(b1, b2), (kind, k, t1, t2)
            for name, nb in lay["nodes"]:
                assert not _meet(b1, nb), (kind, k, t1, name)


def test_a_one_element_gradient_is_written_as_a_number():
    """A one-unit RNN's gradients are (1, 1) arrays: the pictures write ``−0.6949``, not
    ``[−0.6949]``, on the edges and in the nodes; only a gradient of several elements is
    written in brackets, and so is the text of the walk."""
    import html

    ex = _walk("rnn")
    labels = [t for _, t, _ in _layout(ex.frames()[-1])["labels"]]
    assert labels and all(t.startswith("[") == ("," in t) for t in labels), labels
    drawn = html.unescape(ex._dot(None))
    for r in ex:
        if np.size(r.upstream) == 1:
            value = float(np.reshape(r.upstream, -1)[0])
            assert f"∇ {ug.labels.number(value, 4)}<" in drawn, r.label
            assert f"dL/d{r.label} = {ug.labels.number(value, 4, picture=False)}\n" in (
                ex.table() + "\n")


@pytest.mark.parametrize("kind,steps", [("rnn", 3), ("rnn", 5), ("lstm", 3), ("gru", 3),
                                        ("gru", 6)])
def test_the_steps_stand_side_by_side_in_time_order(kind, steps):
    """Every node of step t stands left of every node of step t + 1, in the stepper's
    picture and in every frame looked at (dot ordered the steps by crossings alone: t = 2,
    t = 0, t = 1), and the picture is wider than high no more than the steps make it."""
    ex = _walk(kind, steps)
    ids = {f"n{i}": n.step for i, n in enumerate(ex.nodes) if n.step is not None}
    frames = ex.frames()
    for frame in (frames[0], frames[len(frames) // 2], frames[-1]):
        x = _layout(frame)["x"]
        span = {}
        for nid, t in ids.items():
            lo, hi = span.get(t, (x[nid], x[nid]))
            span[t] = (min(lo, x[nid]), max(hi, x[nid]))
        order = sorted(span)
        assert order == list(range(steps))
        for t in order[:-1]:
            assert span[t][1] < span[t + 1][0], (kind, steps, t, span)

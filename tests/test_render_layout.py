"""Where Graphviz puts things: positions read back from ``dot -Tjson`` of the ops and textbook
views (every step laid out alike, rows aligned, edges only where values flow)."""

import json
import re

import numpy as np
import pytest

import unrollgraph as ug

pytestmark = pytest.mark.dot


def _custom_cell():
    cell = ug.Cell("mine")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    A = cell.param("A", np.eye(2))
    B = cell.param("B", np.eye(2) * 0.5)
    hn = ug.tanh(x @ A + ug.sigmoid(h @ B) * h, name="hn")
    cell.feedback(h, hn)
    cell.output("y", hn)
    return cell


_CELLS = {
    "rnn": lambda: ug.nn.RNNCell(2, 2, seed=0),
    "lstm": lambda: ug.nn.LSTMCell(2, 2, seed=0),
    "gru": lambda: ug.nn.GRUCell(2, 2, seed=0),
    "custom": _custom_cell,
}


def _run(cell, T, lengths=None):
    net = ug.unroll(cell, steps=T)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, 2, 2)), lengths=lengths)
    loss = (outs * outs).sum()
    loss.backward()
    return net, loss


def _positions(diagram) -> dict:
    layout = json.loads(diagram.pipe(format="json"))
    return {o["name"]: tuple(float(v) for v in o["pos"].split(","))
            for o in layout["objects"] if "pos" in o}


def _step_layouts(net, pos) -> dict:
    """step -> the step's ops as rows (bottom to top), each the ops' cell nodes left to
    right; the ops named by their index in the cell's graph."""
    g = net.graph
    index = {id(n): k for k, n in enumerate(net.cell.graph().nodes)}
    steps: dict = {}
    for n in g.nodes:
        if n.step is None or n.op == "input" or g.id(n) not in pos:
            continue
        key = index.get(id(n.origin), n.name or n.op)
        steps.setdefault(n.step, []).append((pos[g.id(n)], key))
    out = {}
    for t, items in steps.items():
        rows: dict = {}
        for (x, y), key in items:
            rows.setdefault(round(y), []).append((x, str(key)))
        out[t] = [[k for _, k in sorted(r)] for _, r in sorted(rows.items())]
    return out


@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("T,lengths", [(3, None), (6, None), (4, [4, 2])])
def test_every_step_of_the_ops_view_is_laid_out_alike(name, T, lengths):
    net, loss = _run(_CELLS[name](), T, lengths)
    diagram = ug.render(net, loss=loss, detail="ops", values=False)
    net = net.last_run.net  # with lengths=, the masked twin ran and is drawn
    layouts = _step_layouts(net, _positions(diagram))
    assert sorted(layouts) == list(range(T))
    first = layouts[0]
    for t, rows in layouts.items():
        assert rows == first, f"step {t} is laid out unlike step 0"
    # rows at the same height in every step
    pos = _positions(diagram)
    g = net.graph
    index = {id(n): k for k, n in enumerate(net.cell.graph().nodes)}
    heights = {}
    for n in g.nodes:
        if n.step is not None and n.op != "input" and g.id(n) in pos:
            key = index.get(id(n.origin), (n.name, n.op))
            heights.setdefault(key, set()).add(round(pos[g.id(n)][1]))
    assert all(len(h) == 1 for h in heights.values())


def _clusters(layout) -> dict:
    """step -> its cluster's box ``(x0, y0, x1, y1)``."""
    return {int(o["name"].rsplit("_", 1)[1]): tuple(float(v) for v in o["bb"].split(","))
            for o in layout["objects"] if o["name"].startswith("cluster_step_")}


@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("T,values", [(3, False), (6, False), (4, True)])
def test_every_step_of_the_ops_view_is_as_wide_with_its_outputs_over_it(name, T, values):
    """Every step's cluster is as wide as the others (the values in the labels differ) and
    each output stands straight over the op computing it, at the same place over its step
    as every other step's (the outputs were pulled towards the loss, off their steps)."""
    net, loss = _run(_CELLS[name](), T)
    layout = _layout(ug.render(net, loss=loss, detail="ops", values=values))
    boxes = _clusters(layout)
    assert sorted(boxes) == list(range(T))
    widths = [x1 - x0 for x0, _, x1, _ in boxes.values()]
    assert max(widths) - min(widths) <= 1, widths
    pos = {o["name"]: tuple(float(v) for v in o["pos"].split(","))
           for o in layout["objects"] if "pos" in o}
    g = net.graph
    for k, (out, ns) in enumerate(net.output_nodes.items()):
        offsets = []
        for t, n in enumerate(ns):
            x, _ = pos[f"{g.id(n)}_out{k}"]
            x0, _, x1, _ = boxes[t]
            assert abs(x - pos[g.id(n)][0]) <= 1, (out, t)  # over the op computing it
            assert x0 <= x <= x1, (out, t)  # over its own step
            offsets.append(x - x0)
        assert max(offsets) - min(offsets) <= 1, (out, offsets)


def test_the_elided_ops_view_draws_its_kept_steps_alike():
    net, loss = _run(ug.nn.LSTMCell(2, 2, seed=0), 9)
    diagram = ug.render(net, loss=loss, detail="elide", ends=2, values=False)
    layouts = _step_layouts(net, _positions(diagram))
    assert sorted(layouts) == [0, 1, 7, 8]
    assert all(rows == layouts[0] for rows in layouts.values())


def test_the_state_comes_in_on_the_left_of_each_step():
    """h_{t-1} @ W_hh stands left of x_t @ W_ih in every step, as the state's edge comes in
    from the step before (on the left) and the input from below; the parameters, each at the
    left end of its bus, are in the cell's order (named_parameters()), top to bottom, as
    every other view lists them."""
    net, loss = _run(ug.nn.RNNCell(2, 2, seed=0), 5)
    pos = _positions(ug.render(net, loss=loss, detail="ops"))
    g = net.graph
    for t in range(5):
        mms = [n for n in g.nodes if n.step == t and n.op == "matmul"]
        by_state = [n for n in mms if n.inputs[0].op != "input"]
        by_input = [n for n in mms if n.inputs[0].op == "input"]
        assert len(by_state) == len(by_input) == 1
        assert pos[g.id(by_state[0])][0] < pos[g.id(by_input[0])][0]
    p = net.param_nodes
    heights = [pos[g.id(n)][1] for n in p.values()]
    assert list(p) == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    assert heights == sorted(heights, reverse=True), heights  # the first on top


# -- the shared weights' buses -------------------------------------------------------------
def _layout(diagram) -> dict:
    return json.loads(diagram.pipe(format="json"))


def _curve(pos: str) -> list:
    """An edge's spline from ``dot -Tjson`` as a polyline (each cubic Bézier piece sampled)."""
    pts = [tuple(float(v) for v in p.split(",")) for p in pos.split(";")[0].split()
           if p[0] not in "es"]
    out = []
    for i in range(0, len(pts) - 3, 3):
        p0, p1, p2, p3 = pts[i:i + 4]
        for k in range(9):
            t = k / 8
            w = ((1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3)
            out.append(tuple(sum(c * p[j] for c, p in zip(w, (p0, p1, p2, p3)))
                             for j in (0, 1)))
    return out


def _cross(c1: list, c2: list) -> bool:
    def turn(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    for p, q in zip(c1, c1[1:]):
        for r, s in zip(c2, c2[1:]):
            if turn(p, q, r) * turn(p, q, s) < 0 and turn(r, s, p) * turn(r, s, q) < 0:
                return True
    return False


def _buses(net, layout) -> tuple[dict, dict, dict, list]:
    """junction -> (its step, its position); step -> its cluster's x range; shared node ->
    its junctions; and the junctions' edges into the ops, each ``(junction, reader, curve)``."""
    g = net.graph
    names = {o["_gvid"]: o["name"] for o in layout["objects"]}
    step_of = {g.id(n): n.step for n in g.nodes if n.step is not None}
    step_of["elided"] = "elided"
    boxes = {}
    for o in layout["objects"]:
        if o["name"].startswith("cluster_step_"):
            x0, _, x1, _ = (float(v) for v in o["bb"].split(","))
            boxes[int(o["name"].rsplit("_", 1)[1])] = (x0, x1)
    pos = {o["name"]: tuple(float(v) for v in o["pos"].split(","))
           for o in layout["objects"] if "pos" in o}
    junctions, reads, buses = {}, [], {}
    for e in layout["edges"]:
        a, b = names[e["tail"]], names[e["head"]]
        if "_fan" in a and "_fan" not in b and e.get("style") != "invis":
            reads.append((a, b, _curve(e["pos"])))
            junctions.setdefault(a, set()).add(step_of.get(b))
            buses.setdefault(a.rsplit("_fan", 1)[0], set()).add(a)
    return ({j: (steps, pos[j]) for j, steps in junctions.items()}, boxes, buses, reads)


def _check_buses(net, diagram) -> None:
    layout = _layout(diagram)
    junctions, boxes, buses, reads = _buses(net, layout)
    assert junctions, "no shared weight drawn through a junction"
    kept = sorted(boxes)
    for j, (steps, (x, _)) in junctions.items():
        # a junction feeds one step only (or the elided steps) ...
        assert len(steps) == 1, f"{j} feeds steps {sorted(map(str, steps))}"
        (t,) = steps
        if t == "elided":
            continue
        # ... and stands in that step's column: not under another step's cluster
        k = kept.index(t)
        left = boxes[kept[k - 1]][1] if k > 0 else -np.inf
        right = boxes[kept[k + 1]][0] if k + 1 < len(kept) else np.inf
        assert left <= x <= right, f"{j} at x={x} outside step {t}'s column {left, right}"
    for src, js in buses.items():
        # one bus per shared node: its junctions on one row, left to right in time order
        order = sorted(js, key=lambda j: int(j.rsplit("_", 1)[1]))
        assert len({round(junctions[j][1][1]) for j in order}) == 1, src
        xs = [junctions[j][1][0] for j in order]
        assert xs == sorted(xs), (src, xs)
    # the short edges up from the junctions into the ops never cross one another
    for i, (a, b, c) in enumerate(reads):
        for a2, b2, c2 in reads[i + 1:]:
            if b != b2:
                assert not _cross(c, c2), f"{a} -> {b} crosses {a2} -> {b2}"


@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("T,lengths", [(4, None), (4, [4, 2])])
def test_shared_weights_reach_each_step_through_their_own_junction(name, T, lengths):
    """Each shared weight runs along one bus: a junction per step, in that step's column,
    feeding only that step's ops; the junctions' edges into the ops cross none of each
    other (drawn all from one junction, they fanned out across the whole picture)."""
    net, loss = _run(_CELLS[name](), T, lengths)
    diagram = ug.render(net, loss=loss, detail="ops", values=False)
    _check_buses(net.last_run.net, diagram)


def test_the_elided_view_routes_shared_weights_through_buses():
    net, loss = _run(ug.nn.LSTMCell(2, 2, seed=0), 9)
    diagram = ug.render(net, loss=loss, detail="elide", ends=2, values=False)
    _check_buses(net, diagram)
    text = diagram.source
    # the elided steps get their own junction on each bus, its edge labelled × 5
    assert text.count('-> "elided"') >= 4 and "× 5<" in text


# -- the folded textbook cell ----------------------------------------------------------------
def _text_boxes(ops: list) -> list:
    """The boxes of the non-blank texts an xdot draw list writes (baseline to cap height)."""
    boxes, size = [], 14.0
    for o in ops:
        if o["op"] == "F":
            size = o["size"]
        elif o["op"] == "T" and o["text"].strip():
            (x, y), w = o["pt"], o["width"]
            x0 = {"l": x, "c": x - w / 2, "r": x - w}[o["align"]]
            boxes.append((o["text"], x0, y - 0.25 * size, x0 + w, y + 0.9 * size))
    return boxes


@pytest.mark.parametrize("name", sorted(_CELLS))
def test_folded_cell_edge_labels_clear_every_edge(name):
    """No edge of the folded cell runs through a weight's label (the loop back into a state
    was drawn touching its label, and an LSTM's edge from the delay into c through it)."""
    layout = _layout(ug.render(_CELLS[name](), detail="textbook"))
    edges = [e for e in layout["edges"] if "pos" in e and e.get("style") != "invis"]
    for e in edges:
        for key in ("_ldraw_", "_xldraw_"):
            for text, x0, y0, x1, y1 in _text_boxes(e.get(key, [])):
                for other in edges:
                    pen = float(other.get("penwidth", 1)) / 2  # the line's own width
                    inside = [(x, y) for x, y in _curve(other["pos"])
                              if x0 - pen < x < x1 + pen and y0 - pen < y < y1 + pen]
                    assert not inside, f"an edge runs through the label {text!r}"


# -- the step view's buses -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("T", [4, 8])
def test_the_step_view_draws_shared_weights_as_buses(name, T):
    """In ``detail="steps"`` each shared weight runs along a bus too: one junction per step,
    under that step's box (nearer it than its neighbours), the junctions on one row in time
    order, each junction's edge into its own step only, and those edges crossing none of
    another step's (drawn from one junction per weight, they fanned out across every step)."""
    net, loss = _run(_CELLS[name](), T)
    layout = _layout(ug.render(net, loss=loss, detail="steps", values=False))
    names = {o["_gvid"]: o["name"] for o in layout["objects"]}
    pos = {o["name"]: tuple(float(v) for v in o["pos"].split(","))
           for o in layout["objects"] if "pos" in o}
    centre = [pos[f"step_{t}"][0] for t in range(T)]
    reads, rows = [], {}
    for e in layout["edges"]:
        a, b = names[e["tail"]], names[e["head"]]
        if "_fan" in a and "_fan" not in b and e.get("style") != "invis":
            reads.append((a, b, _curve(e["pos"])))
    assert len(reads) == T * len(net.param_nodes)
    for a, b, _ in reads:
        t = int(a.rsplit("_", 1)[1])
        assert b == f"step_{t}", f"{a} feeds {b}"
        x, y = pos[a]
        left = (centre[t - 1] + centre[t]) / 2 if t > 0 else -np.inf
        right = (centre[t] + centre[t + 1]) / 2 if t + 1 < T else np.inf
        assert left <= x <= right, f"{a} at x={x} not under step {t} {left, right}"
        rows.setdefault(a.rsplit("_fan", 1)[0], []).append((t, x, round(y)))
    for src, js in rows.items():
        js.sort()
        assert len({y for _, _, y in js}) == 1, src
        assert [x for _, x, _ in js] == sorted(x for _, x, _ in js), src
    for i, (a, b, c) in enumerate(reads):
        for a2, b2, c2 in reads[i + 1:]:
            if b != b2:
                assert not _cross(c, c2), f"{a} -> {b} crosses {a2} -> {b2}"


@pytest.mark.parametrize("name,T", [("rnn", 8), ("lstm", 4), ("gru", 5), ("custom", 4)])
def test_the_step_view_stands_every_edge_into_a_box_straight_under_it(name, T):
    """The step view as a textbook draws it: each junction of each bus straight under its
    step box (its edge into the box runs straight up, inside the box's width), no two of
    those edges crossing, even within one step; each input straight under its box and each
    output straight over it; the steps evenly spaced; and the trunks, coming up from the
    parameters' row, crossing neither one another nor an input's edge (they crossed each
    other and the inputs', and the junctions' edges ran slanting across one another)."""
    net, loss = _run(_CELLS[name](), T)
    layout = _layout(ug.render(net, loss=loss, detail="steps", values=False))
    names = {o["_gvid"]: o["name"] for o in layout["objects"]}
    obj = {o["name"]: o for o in layout["objects"]}
    pos = {k: tuple(float(v) for v in o["pos"].split(",")) for k, o in obj.items()
           if "pos" in o}
    g = net.graph
    into = {g.id(n): f"step_{t}" for ns in net.input_nodes.values() for t, n in enumerate(ns)}
    inits = {g.id(n) for n in net.init_nodes.values()}
    reads, inputs, trunks, init_edges = [], [], [], []
    for e in layout["edges"]:
        a, b = names[e["tail"]], names[e["head"]]
        if e.get("style") == "invis":
            continue
        curve = _curve(e["pos"])
        if "_fan" in a and "_fan" not in b:
            reads.append((a, b, curve))
        elif "_fan" in b and "_fan" not in a:
            trunks.append((a, b, curve))
        elif into.get(a) == b:
            inputs.append((a, b, curve))
        elif a in inits:
            init_edges.append((a, b, curve))
    assert len(init_edges) == len(inits)
    for a, b, c in init_edges:  # (an LSTM's h_init bent round c_init, under it)
        for a2, b2, c2 in reads + trunks:
            assert not _cross(c, c2), f"{a} -> {b} crosses {a2} -> {b2}"
        for other in inits - {a}:  # through it or close round it (within 20 points)
            (x, y), o = pos[other], obj[other]
            w, h = float(o["width"]) * 72 / 2, float(o["height"]) * 72 / 2 + 20
            assert not any(x - w < px < x + w and y - h < py < y + h for px, py in c[1:]), \
                f"{a} -> {b} runs round {other}"
    assert len(reads) == T * len(net.param_nodes)
    assert len(inputs) == T * len(net.input_nodes)
    assert len(trunks) == len(net.param_nodes)
    for a, b, curve in reads:
        x, _ = pos[a]
        bx, _ = pos[b]
        half = float(obj[b]["width"]) * 72 / 2
        assert bx - half < x < bx + half, f"{a} at x={x} not under {b} ({bx} ± {half})"
        bent = max(abs(px - x) for px, _ in curve)
        assert bent < 1.5, f"{a} -> {b} runs {bent:.1f} pt off the vertical"
    for a, b, curve in inputs:
        # (dot rounds a port's place to whole points: within 2.5 points of the middle)
        assert abs(pos[a][0] - pos[b][0]) < 2.5, f"{a} not under {b}"
        assert max(abs(px - pos[a][0]) for px, _ in curve) < 1.5, f"{a} -> {b} bends"
    # the steps evenly spaced (the outputs over them drawn as wide as each other)
    gaps = np.diff([pos[f"step_{t}"][0] for t in range(T)])
    assert gaps.max() - gaps.min() < 2.5, f"steps unevenly spaced: {gaps}"
    for ns in net.output_nodes.values():
        for t, n in enumerate(ns):
            out = next(k for k in pos if k.startswith(g.id(n) + "_out"))
            assert abs(pos[out][0] - pos[f"step_{t}"][0]) < 2.5, f"{out} not over step {t}"
    for i, (a, b, c) in enumerate(reads):
        for a2, b2, c2 in reads[i + 1:]:
            assert not _cross(c, c2), f"{a} -> {b} crosses {a2} -> {b2}"
    for i, (a, b, c) in enumerate(trunks):
        for a2, b2, c2 in trunks[i + 1:]:
            assert not _cross(c, c2), f"the trunk {a} -> {b} crosses {a2} -> {b2}"
        for a2, b2, c2 in inputs:
            assert not _cross(c, c2), f"the trunk {a} -> {b} crosses {a2} -> {b2}"


# -- the legend --------------------------------------------------------------------------------
def _rnn_textbook(theme, T=4, **kw):
    net, loss = _run(ug.nn.RNNCell(2, 2, seed=0), T)
    return net, _layout(ug.render(net, loss=loss, detail="textbook", theme=theme, **kw))


@pytest.mark.parametrize("theme", ["print", "light"])
def test_textbook_kinds_differ_in_greyscale(theme):
    """Where every value is an oval, input, state, output and the loss's parts still differ in
    what greyscale keeps (shape, number of borders, border width), and the legend names each
    kind in different words (in print they all read "oval", in black)."""
    net, layout = _rnn_textbook(theme)
    g = net.graph
    objs = {o["name"]: o for o in layout["objects"]}
    ids = {
        "input": [g.id(n) for n in net.input_nodes["x"]],
        "state": [g.id(n) for n in net.state_nodes["h"]],
        "output": [f"{g.id(n)}_out0" for n in net.output_nodes["y"]],
        "part": [f"loss_{t}" for t in range(4)],
    }
    looks = {kind: {(objs[i]["shape"], objs[i].get("peripheries", "1"),
                     float(objs[i].get("penwidth", 1))) for i in nids}
             for kind, nids in ids.items()}
    kinds = sorted(looks)
    for a in kinds:
        for b in kinds:
            if a < b:
                assert not looks[a] & looks[b], (a, b, looks[a])
    legend = objs["legend"]["label"]
    words = re.findall(r"<b>([^<]*)</b></font></td><td[^>]*><font[^>]*>(input|state|output|"
                       r"the loss\S* part from step t)( \(|</font>)", legend)
    assert len(words) == 4 and len({w[0] for w in words}) == 4, words


@pytest.mark.parametrize("T,folded", [(4, False), (6, False), (4, True)])
def test_the_legend_stands_under_the_middle_of_the_picture(T, folded):
    """The legend stands under the unrolled picture's middle, not in one corner leaving the
    other empty."""
    net, layout = _rnn_textbook("print", T, folded=folded)
    g = net.graph
    pos = {o["name"]: tuple(float(v) for v in o["pos"].split(","))
           for o in layout["objects"] if "pos" in o}
    xs = [pos[g.id(n)][0] for n in net.input_nodes["x"]]
    legend = next(o for o in layout["objects"] if o["name"] == "legend")
    width = float(legend["width"]) * 72
    x = pos["legend"][0]
    assert abs(x - (xs[0] + xs[-1]) / 2) <= 0.1 * (xs[-1] - xs[0]), (x, xs)
    assert width >= 0.5 * (xs[-1] - xs[0])  # wide and short, in columns, under a wide picture


# -- two pictures in one figure ----------------------------------------------------------------
@pytest.mark.parametrize("detail", ["textbook"])
def test_stacked_pictures_have_steps_as_wide_as_each_other(detail):
    """Full over truncated BPTT: the truncated picture's values show less, but each of its
    steps is as wide as the full picture's, so step t of the one stands as far from step 0
    as step t of the other (the rows of different widths drifted apart step by step)."""
    full, loss = _run(ug.nn.RNNCell(2, 2, seed=0), 8)
    cut = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=8, truncate=3)
    outs, _ = cut(np.random.default_rng(0).standard_normal((8, 2, 2)))
    loss_c = (outs * outs).sum()
    loss_c.backward()
    fig = ug.render_side_by_side(full, cut, labels=("full", "cut"), loss=(loss, loss_c),
                                 detail=detail, values=False, direction="vertical")
    pos = {o["name"]: tuple(float(v) for v in o["pos"].split(","))
           for o in _layout(fig)["objects"] if "pos" in o}
    xs = [[pos[f"s{k}_{net.graph.id(n)}"][0] for n in net.input_nodes["x"]]
          for k, net in enumerate((full, cut))]
    for t in range(8):
        assert abs((xs[0][t] - xs[0][0]) - (xs[1][t] - xs[1][0])) <= 10, (t, xs)


# -- the stepper's picture ---------------------------------------------------------------------
def _stepper_cases():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    w = ug.tensor(1.5, requires_grad=True, name="w")
    a = ug.tensor(2.0, requires_grad=True, name="a")
    b = ug.tensor(2.0, requires_grad=True, name="b")
    return [ug.tanh(x * x + w * x), (a * b) * (a * b), x * x * x]


@pytest.mark.parametrize("k", range(3))
def test_the_stepper_keeps_the_gradient_labels_apart(k):
    """Two edges into one node carrying the same gradient (``x * x``: both slots get the
    same number) have their labels side by side; they stand apart by at least the width of
    two characters, not touching as they did."""
    from unrollgraph.html import _diagram

    layout = _layout(_diagram(ug.explain(_stepper_cases()[k]), "p"))
    boxes = [b for e in layout["edges"] for b in _text_boxes(e.get("_ldraw_", []))]
    assert len(boxes) >= 3
    for i, (t1, *a) in enumerate(boxes):
        for t2, *b in boxes[i + 1:]:
            gap = max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])
            assert gap >= 18, (t1, t2, gap)


@pytest.mark.parametrize("detail", ["ops", "auto"])
def test_a_constant_leaf_in_a_cell_is_drawn_as_a_constant(detail):
    # ug.tensor(0.5) in the cell's code is no parameter: a small box titled by its value
    # beside each op that reads it, never a shared weight's cylinder with a trunk and bus
    cell = ug.Cell("damp")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    A = cell.param("A", np.eye(2))
    hn = ug.tanh(x @ A + ug.tensor(0.5) * h, name="hn")
    cell.feedback(h, hn)
    cell.output("y", hn)
    net, loss = _run(cell, 3)
    leaf = next(n for n in net.graph.nodes if n.op == "leaf")
    lid = net.graph.id(leaf)
    layout = json.loads(ug.render(net, loss=loss, detail=detail).pipe(format="json"))
    names = {o["_gvid"]: o["name"] for o in layout["objects"]}
    assert lid not in names.values()  # no one shared node for it
    copies = [o for o in layout["objects"] if o["name"].startswith(lid + "_")]
    assert len(copies) == 3  # one per reading op, one reading op per step
    for o in copies:
        assert o["shape"] != "cylinder" and "0.5" in o["label"]
    for e in layout.get("edges", []):  # no bus: each copy has one edge, into its op
        assert not names[e["tail"]].startswith(lid + "_fan")
    assert "constant" in json.dumps(layout)  # its legend row


def _spline_points(edge) -> list:
    pts = []
    for d in edge.get("_draw_", []):
        pts += d.get("points", [])
    return pts


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_a_compact_print_weight_label_sits_on_its_own_edge(name):
    # every edge label of the compact textbook view is nearer its own edge than any other
    # edge out of another node (x_0's weight_ih never on the c_0 -> c_1 arrow)
    net, loss = _run(_CELLS[name](), 3)
    layout = json.loads(ug.render(net, loss=loss, detail="textbook", theme="print",
                                  compact=True).pipe(format="json"))
    edges = [e for e in layout.get("edges", []) if _spline_points(e)]
    for e in edges:
        lp = e.get("lp") or e.get("xlp")
        if not lp or not re.search(r"weight", e.get("label", "") + e.get("xlabel", "")):
            continue
        x, y = (float(v) for v in lp.split(","))

        def dist(f, x=x, y=y):
            return min((px - x) ** 2 + (py - y) ** 2 for px, py in _spline_points(f))

        own = dist(e)
        for f in edges:
            if f["tail"] != e["tail"] and f["head"] != e["head"]:
                assert own <= dist(f), (e.get("label") or e.get("xlabel"), f["tail"], f["head"])


# -- the initial states and the steps, left to right -------------------------------------
def _left_to_right(net, diagram):
    """Every initial state's node left of the first step's box, and the boxes of the steps
    drawn in time order, left to right, none over another."""
    layout = _layout(diagram)
    boxes = _clusters(layout)
    pos = {o["name"]: tuple(float(v) for v in o["pos"].split(","))
           for o in layout["objects"] if "pos" in o}
    g = net.graph
    first = boxes[min(boxes)]
    for s, n in net.init_nodes.items():
        assert pos[g.id(n)][0] < first[0], f"initial state {s} is not left of the first step"
    steps = sorted(boxes)
    for a, b in zip(steps, steps[1:]):
        assert boxes[a][2] < boxes[b][0], f"step {b} is not right of step {a}"


@pytest.mark.parametrize("name", sorted(_CELLS))
@pytest.mark.parametrize("T", range(1, 7))
def test_the_initial_states_stand_left_of_the_first_step(name, T):
    net, loss = _run(_CELLS[name](), T)
    _left_to_right(net, ug.render(net, loss=loss, detail="ops", values=False))


@pytest.mark.parametrize("name", sorted(_CELLS))
def test_the_initial_states_stand_left_of_the_first_step_when_masked_or_elided(name):
    net, loss = _run(_CELLS[name](), 3, lengths=[3, 1])
    diagram = ug.render(net, loss=loss, detail="ops", values=False)
    _left_to_right(net.last_run.net, diagram)
    net, loss = _run(_CELLS[name](), 12)
    _left_to_right(net, ug.render(net, loss=loss, detail="elide", ends=2, values=False))


@pytest.mark.parametrize("name", sorted(_CELLS))
def test_the_step_view_draws_the_initial_states_left_and_the_steps_in_order(name):
    for T in (1, 2, 3):
        net, loss = _run(_CELLS[name](), T)
        layout = _layout(ug.render(net, loss=loss, detail="steps", values=False))
        objs = {o["name"]: o for o in layout["objects"]}

        def span(nid, objs=objs):
            x = float(objs[nid]["pos"].split(",")[0])
            half = float(objs[nid]["width"]) * 36
            return x - half, x, x + half

        first = span("step_0")[0]
        for s, n in net.init_nodes.items():
            assert span(net.graph.id(n))[1] < first, (s, T)
        steps = [span(f"step_{t}") for t in range(T)]
        assert all(a[2] < b[0] for a, b in zip(steps, steps[1:])), T


# -- long unrolls of the ops view read left to right, step by step -------------------------
def _state_chains(net, layout) -> list:
    """For each state carried from step t - 1 into step t: ``(t, points)``, the drawn path
    from the state through its bend (if any) into the op reading it, as one polyline."""
    g = net.graph
    names = {o["_gvid"]: o["name"] for o in layout["objects"]}
    step = {g.id(n): n.step for n in g.nodes if n.step is not None}
    out_of: dict = {}  # tail -> [(head, curve)] of the drawn edges
    for e in layout["edges"]:
        if e.get("style") == "invis" or "pos" not in e:
            continue
        a, b = names[e["tail"]], names[e["head"]]
        if e.get("dir") == "back":  # written reversed; drawn from head to tail
            a, b = b, a
            curve = _curve(e["pos"])[::-1]
        else:
            curve = _curve(e["pos"])
        out_of.setdefault(a, []).append((b, curve))
    chains = []
    for ns in net.state_nodes.values():
        for n in ns[:-1]:
            for b, curve in out_of.get(g.id(n), []):
                if "_out_row" in b:
                    for head, rest in out_of.get(b, []):
                        chains.append((step[head], curve + rest))
                elif step.get(b) == n.step + 1:
                    chains.append((step[b], curve))
    return chains


@pytest.mark.parametrize("name,T", [("rnn", 8), ("rnn", 12), ("lstm", 8), ("gru", 8)])
def test_a_long_ops_view_reads_left_to_right_step_by_step(name, T):
    """The ops view over 8 and 12 steps as over 3: the steps' boxes left to right in time
    order, apart; each input inside its own step's box; each state edge from step t - 1 to
    step t running forwards (never back left over a step, nor round the picture); each
    shared parameter once, left of the first step, at the height of its bus (at T = 8 the
    inputs stood in one row far right, the state edges looped round the picture and the
    parameters piled up under its right end)."""
    net, loss = _run(_CELLS[name](), T)
    layout = _layout(ug.render(net, loss=loss, detail="ops", values=False))
    boxes = _clusters(layout)
    pos = {o["name"]: tuple(float(v) for v in o["pos"].split(","))
           for o in layout["objects"] if "pos" in o}
    assert sorted(boxes) == list(range(T))
    for t in range(1, T):
        assert boxes[t - 1][2] < boxes[t][0], f"steps {t - 1} and {t} overlap or swap"
    g = net.graph
    for ns in net.input_nodes.values():
        for t, n in enumerate(ns):
            x0, y0, x1, _ = boxes[t]
            x, y = pos[g.id(n)]
            assert x0 < x < x1 and y > y0, f"{g.id(n)} (input of step {t}) outside its step"
    chains = _state_chains(net, layout)
    assert len(chains) >= (T - 1) * len(net.state_nodes)
    for t, points in chains:
        xs = [x for x, _ in points]
        # (a spline's bend may swing back a few points; a node is wider than 20)
        back = max(max(xs[:k + 1]) - x for k, x in enumerate(xs))
        assert back < 20, f"a state edge into step {t} turns back {back} points"
        assert boxes[t - 1][0] <= min(xs) and max(xs) <= boxes[t][2], f"state edge into {t}"
    names = {o["_gvid"]: o["name"] for o in layout["objects"]}
    for p in net.param_nodes.values():
        x, y = pos[g.id(p)]
        assert x < boxes[0][0], f"{p.name} not left of the first step"
    for e in layout["edges"]:  # each trunk level, into its bus at the first step
        a, b = names[e["tail"]], names[e["head"]]
        if b.endswith("_fan_0") and "_fan" not in a and e.get("style") != "invis":
            assert abs(pos[a][1] - pos[b][1]) < 1, f"{a}'s trunk is not level"
            assert pos[a][0] < boxes[0][0] < pos[b][0] < boxes[0][2]


@pytest.mark.parametrize("name", sorted(_CELLS))
def test_folded_cell_delay_loops_are_open(name):
    """Each state's loop through its delay square (out to the square, back into the state)
    is an open loop: its two arcs stand well apart, whether or not a weight labels it (an
    LSTM's c, with no weight on its loop, was two arcs squashed flat on each other)."""
    layout = _layout(ug.render(_CELLS[name](), detail="textbook"))
    names = {o["_gvid"]: o["name"] for o in layout["objects"]}
    arcs: dict = {}
    for e in layout["edges"]:
        a, b = names[e["tail"]], names[e["head"]]
        if e.get("style") != "invis" and "pos" in e and ("delay" in a or "delay" in b):
            arcs.setdefault(frozenset((a, b)), []).append(_curve(e["pos"]))
    loops = [c for c in arcs.values() if len(c) == 2]
    assert loops
    for one, other in loops:
        # the widest opening: the point of one arc farthest from the other arc
        gap = max(min(np.hypot(x - x2, y - y2) for x2, y2 in other) for x, y in one)
        assert gap >= 10, gap


#: the widest a step of the ops view may be, in points (dot -Tjson, the light theme, these
#: cells at two units and a batch of two): measured, with about a tenth to spare
_STEP_PT = {"rnn": 640, "lstm": 720, "gru": 960, "custom": 530}
#: the numbers each cell's steps print with when its bound was measured: an LSTM's and a
#: GRU's every node as a norm (their gates held more than ``max_elements`` numbers, and a
#: step printed all its nodes alike), the others' written out (no node over the cap)
_STEP_NUMBERS = {"rnn": {}, "lstm": {"max_elements": 1}, "gru": {"max_elements": 1},
                 "custom": {}}


@pytest.mark.parametrize("name", sorted(_STEP_PT))
@pytest.mark.parametrize("T", [4, 8])
def test_a_step_of_the_ops_view_is_no_wider_than_it_needs(name, T):
    """Each step's box is at most ``_STEP_PT`` wide, and the picture at most the steps and
    what stands left of the first (parameters, initial states) and right of the last (the
    legend). An LSTM's step was 855 points wide: the ops the gates split into hung off to
    the right of gates, over an empty half of the step, and each column of ops ran an
    invisible line down to the bottom of the step, right of every op there.

    The width measured is the layout's, the numbers printed held as they were when the
    bounds were measured (``_STEP_NUMBERS``): each node now prints by its own size, and an
    LSTM's or a GRU's small vectors written out beside their gates' norms are wider text
    (GRU steps 1,267 points, LSTM 793) in the same layout. With every node a norm
    (``max_elements=1``) an LSTM's step is 660 points wide, as measured, and the layout
    before (855 points) fails the bound; a GRU's 894 (912 before)."""
    net, loss = _run(_CELLS[name](), T)
    layout = _layout(ug.render(net, loss=loss, detail="ops", **_STEP_NUMBERS[name]))
    boxes = _clusters(layout)
    assert sorted(boxes) == list(range(T))
    widths = [x1 - x0 for x0, _, x1, _ in boxes.values()]
    assert max(widths) <= _STEP_PT[name], (name, T, widths)
    width = float(layout["bb"].split(",")[2])
    assert width <= T * (_STEP_PT[name] + 8) + 800, (name, T, width)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("detail,T,truncate", [("ops", 4, None), ("ops", 8, None),
                                               ("elide", 30, None), ("ops", 6, 2)])
def test_op_views_stack_the_parameters_in_the_cells_order_every_step_one_width(
        name, detail, T, truncate):
    """The op and elided views stack the parameters' rows (each at its bus's left end) in
    the cell's order, named_parameters(), the first on top, as the textbook, step and TikZ
    views list them; and no step is laid out wider than another (measured in dot's
    layout: each step's cluster)."""
    net = ug.unroll(_CELLS[name](), steps=T, truncate=truncate)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, 1, 2)))
    loss = (outs * outs).sum()
    loss.backward()
    layout = _layout(ug.render(net, loss=loss, detail=detail, values=False))
    by_name = {o["name"]: o for o in layout["objects"]}
    g = net.graph
    heights = [float(by_name[g.id(n)]["pos"].split(",")[1]) for n in net.param_nodes.values()]
    assert heights == sorted(heights, reverse=True), (list(net.param_nodes), heights)
    widths = set()
    for o in layout["objects"]:
        if o.get("name", "").startswith("cluster_step_"):
            x0, _, x1, _ = map(float, o["bb"].split(","))
            widths.add(round(x1 - x0, 1))
    assert len(widths) == 1, widths


def test_the_ops_view_keeps_its_legend_under_the_steps():
    """A single op view's legend stands in a row of its own under the steps' inputs, within
    their width: beside the last step it widened an RNN's picture at T = 8 by its own
    width (the gallery's RNN, one sequence: 4479 points wide, 3957 with it under the steps)."""
    net, loss = _run(ug.nn.RNNCell(2, 2, seed=0), 8)
    layout = _layout(ug.render(net, loss=loss, detail="ops"))
    boxes = {o["name"]: list(map(float, o["bb"].split(","))) for o in layout["objects"]
             if o.get("name", "").startswith("cluster_step_")}
    legend = next(o for o in layout["objects"] if o.get("name") == "legend")
    x, y = map(float, legend["pos"].split(","))
    half = float(legend["width"]) * 36
    left = min(b[0] for b in boxes.values())
    right = max(b[2] for b in boxes.values())
    bottom = min(b[1] for b in boxes.values())
    assert left <= x - half and x + half <= right, (x, half, left, right)
    assert y + float(legend["height"]) * 36 <= bottom  # under every step's box
    # the picture no wider than what it draws besides the legend
    ends = [float(o["pos"].split(",")[0]) + float(o["width"]) * 36
            for o in layout["objects"] if "pos" in o and "width" in o and o["name"] != "legend"]
    width = float(layout["bb"].split(",")[2])
    assert width <= max(ends) + 10, (width, max(ends))


def _bus_bends(net, loss, **kw) -> tuple:
    """The spread of each bus's junction heights and the farthest any bus segment strays
    from its junctions' height, in points, in dot's layout of the op view."""
    layout = _layout(ug.render(net, loss=loss, detail="ops", **kw))
    names = {o["_gvid"]: o["name"] for o in layout["objects"]}
    pos = {o["name"]: tuple(float(v) for v in o["pos"].split(","))
           for o in layout["objects"] if "pos" in o}
    buses: dict = {}
    for n in pos:
        if "_fan_" in n:
            buses.setdefault(n.rsplit("_fan_", 1)[0], []).append(pos[n][1])
    off = [max(abs(py - pos[names[e["tail"]]][1]) for _, py in _curve(e["pos"]))
           for e in layout["edges"] if "pos" in e and "_fan_" in names[e["tail"]]
           and "_fan_" in names[e["head"]]]
    return max(max(ys) - min(ys) for ys in buses.values()), max(off)


@pytest.mark.parametrize("cls", [ug.nn.RNNCell, ug.nn.LSTMCell, ug.nn.GRUCell])
@pytest.mark.parametrize("T", [3, 5])
def test_derivatives_on_the_op_view_leave_every_bus_one_straight_row(cls, T):
    """With ``derivatives=True`` each junction's edge into the op it feeds carries its local
    derivative ``∂ a`` (one number: a cell of one unit, a batch of one). As an edge label,
    dot gave each label a node in the ranks the edge crossed: the RNN's first bus, whose
    junctions stand just under their ops, had its segments bowed 56 points round the
    labels, crossing the other buses. Each bus stays as straight as without the labels."""
    net = ug.unroll(cls(1, 1, seed=0), steps=T)
    out, _ = net(np.random.default_rng(0).standard_normal((T, 1, 1)))
    loss = (out * out).sum()
    loss.backward()
    spread, off = _bus_bends(net, loss, derivatives=True)
    assert spread < 1, spread
    assert off <= _bus_bends(net, loss)[1] + 1, off

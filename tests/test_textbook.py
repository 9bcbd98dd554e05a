"""The textbook view: rows of inputs, states, outputs and losses, weights on the edges."""

import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.render import _out_id


def _edges(text):
    """(tail, head) -> attributes of every drawn edge, in the direction its arrow points (an
    edge written upwards with dir=back points down)."""
    return {((b, a) if 'dir="back"' in rest else (a, b)): rest for a, b, rest in
            re.findall(r'^\s*"([^"]+)" -> "([^"]+)"(.*)$', text, flags=re.M)
            if "invis" not in rest}


def _points(text):
    return set(re.findall(r'^\s*"([^"]+)" \[shape="point"', text, flags=re.M))


def _flows(text):
    """The edges with each junction (a small dot where an edge splits) resolved: a -> j -> b
    is the flow (a, b), carrying the label of a -> j."""
    edges, points = _edges(text), _points(text)
    out = {k: v for k, v in edges.items() if k[0] not in points and k[1] not in points}
    for (a, j), rest in edges.items():
        if j in points:
            out.update({(a, b): rest for (i, b) in edges if i == j})
    return out


def _node_ids(text):
    return re.findall(r'^\s*"([^"]+)" \[', text, flags=re.M)


def _ranks(text):
    return [re.findall(r'"([^"]+)"', m) for m in re.findall(r"\{rank=same; ([^}]*)\}", text)]


def _run(cell, T=4, loss="all", seed=0):
    net = ug.unroll(cell, steps=T)
    D = next(iter(cell.inputs.values())).shape[-1]
    outs, _ = net(np.random.default_rng(seed).standard_normal((T, 1, D)))
    out = outs if isinstance(outs, ug.Tensor) else next(iter(outs.values()))
    L = (out * out).mean() if loss == "all" else (out[-1] * out[-1]).sum()
    L.backward()
    return net, L


def test_elman_over_four_steps_weights_on_edges_rows_aligned():
    net, L = _run(ug.nn.RNNCell(3, 2, seed=0))
    g = net.graph
    text = ug.to_dot(net, loss=L, detail="textbook")
    assert text == ug.render(net, loss=L, detail="textbook").source
    ids = set(_node_ids(text))
    assert not any(g.id(p) in ids for p in net.param_nodes.values())  # no parameter nodes
    assert "cylinder" not in text
    edges = _edges(text)
    xs, hs = net.input_nodes["x"], net.state_nodes["h"]
    prev = [net.init_nodes["h"]] + hs[:-1]
    for t in range(4):
        e = edges[(g.id(xs[t]), g.id(hs[t]))]
        assert "<i>weight_ih</i>" in e and "weight_hh" not in e
        e = edges[(g.id(prev[t]), g.id(hs[t]))]
        assert "<i>weight_hh</i>" in e and "weight_ih" not in e
    # biases are noted in the node they are added into, not on the edges
    assert not any("bias" in e for e in edges.values())
    assert "+ bias_hh, bias_ih" in text or "+ bias_ih, bias_hh" in text
    ranks = _ranks(text)
    assert [g.id(n) for n in [net.init_nodes["h"]] + hs] in ranks
    assert [g.id(n) for n in xs] in ranks
    assert [_out_id(g.id(n), 0) for n in net.output_nodes["y"]] in ranks
    # per-step losses L_t feed the total L
    assert [f"loss_{t}" for t in range(4)] in ranks
    for t in range(4):
        assert (_out_id(g.id(net.output_nodes["y"][t]), 0), f"loss_{t}") in edges
        assert (f"loss_{t}", "loss") in edges


def test_biases_can_be_left_out():
    net, L = _run(ug.nn.RNNCell(3, 2, seed=0))
    text = ug.to_dot(net, loss=L, detail="textbook", biases=False)
    assert "bias" not in text.split('"legend"')[0]


def test_a_loss_on_the_last_output_only_has_one_output_edge_to_it():
    net, L = _run(ug.nn.RNNCell(3, 2, seed=0), loss="last")
    text = ug.to_dot(net, loss=L, detail="textbook")
    into = [a for (a, b) in _edges(text) if b == "loss"]
    assert into == [_out_id(net.graph.id(net.output_nodes["y"][3]), 0)]
    assert "loss_" not in text


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_lstm_has_two_state_rows_and_gru_one(kind):
    cell = (ug.nn.LSTMCell if kind == "lstm" else ug.nn.GRUCell)(3, 2, seed=0)
    net, L = _run(cell)
    g = net.graph
    text = ug.to_dot(net, loss=L, detail="textbook")
    points = _points(text)
    ranks = [[i for i in r if i not in points] for r in _ranks(text)]
    assert sorted(net.state_nodes) == (["c", "h"] if kind == "lstm" else ["h"])
    edges = _flows(text)
    for s, ns in net.state_nodes.items():
        assert [g.id(n) for n in [net.init_nodes[s]] + ns] in ranks
        for t in range(1, 4):
            assert (g.id(ns[t - 1]), g.id(ns[t])) in edges
    if kind == "lstm":
        h, c = net.state_nodes["h"], net.state_nodes["c"]
        for t in range(1, 4):
            assert "weight_hh" in edges[(g.id(h[t - 1]), g.id(c[t]))]
            assert "label" not in edges[(g.id(c[t]), g.id(h[t]))]  # o * tanh(c): no weight
            assert "label" not in edges[(g.id(c[t - 1]), g.id(c[t]))]  # f * c: no weight
        # rows bottom to top: x, c, h, y (c computed first; h, read by the output, on top), so
        # c_t -> h_t and h_t -> y_t are straight and only x_t -> h_t passes a row
        import json

        layout = json.loads(ug.render(net, loss=L, detail="textbook").pipe(format="json"))
        y = {o["name"]: float(o["pos"].split(",")[1]) for o in layout["objects"] if "pos" in o}
        for t in range(4):
            column = [g.id(net.input_nodes["x"][t]), g.id(c[t]), g.id(h[t]),
                      g.id(net.output_nodes["y"][t]) + "_out0"]
            assert [y[i] for i in column] == sorted(y[i] for i in column)
            assert len({y[i] for i in column}) == 4
        # h_{t-1} reaches h_t and c_t through one junction in h's row, labelled once
        for t in range(1, 4):
            j = f"{g.id(h[t - 1])}_to_{g.id(h[t])}"
            assert j in points and "weight_hh" in _edges(text)[(g.id(h[t - 1]), j)]
            row = next(r for r in _ranks(text) if j in r)
            assert row.index(g.id(h[t - 1])) < row.index(j) < row.index(g.id(h[t]))


def test_a_custom_cell_edges_carry_its_own_parameter_names():
    cell = ug.Cell("mine")
    x = cell.input("x", (2,))
    h = cell.state("h", (3,))
    U = cell.param("U", np.ones((3, 2)) * 0.1)
    W = cell.param("W", np.eye(3) * 0.5)
    V = cell.param("V", np.ones((1, 3)))
    b = cell.param("b", np.zeros(3))
    h_next = ug.tanh(x @ U.T + h @ W.T + b, name="h_next")
    cell.feedback(h, h_next)
    cell.output("o", h_next @ V.T)
    net, L = _run(cell, T=3)
    g = net.graph
    text = ug.to_dot(net, loss=L, detail="textbook")
    edges = _edges(text)
    hs, os_ = net.state_nodes["h"], net.output_nodes["o"]
    for t in range(3):
        assert "<i>U</i>" in edges[(g.id(net.input_nodes["x"][t]), g.id(hs[t]))]
        assert "<i>V</i>" in edges[(g.id(hs[t]), _out_id(g.id(os_[t]), 0))]
    assert "<i>W</i>" in edges[(g.id(hs[0]), g.id(hs[1]))]
    assert "+ b<" in text
    folded = ug.to_dot(cell, detail="textbook")
    fedges = _edges(folded)
    squares = [n for n in _node_ids(folded) if n.startswith("fold_delay")]
    assert len(squares) == 1 and 'shape="square"' in folded
    # the loop: state -> square (the delay) -> state, the weight on the way back
    (into,) = [k for k in fedges if k[1] == squares[0]]
    (out,) = [k for k in fedges if k[0] == squares[0]]
    assert into[0] == out[1] and "<i>W</i>" in fedges[out]


def test_folded_lstm_one_delay_per_state_shared_by_its_readers():
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    text = ug.to_dot(cell, detail="textbook")
    edges = _edges(text)
    squares = [n for n in _node_ids(text) if n.startswith("fold_delay")]
    assert len(squares) == 2  # h and c, each delayed once
    outs = {sq: sorted(b for a, b in edges if a == sq) for sq in squares}
    # h's delay feeds both c and h (through weight_hh); c's delay feeds c alone (f * c)
    assert sorted(len(v) for v in outs.values()) == [1, 2]
    two = next(sq for sq, v in outs.items() if len(v) == 2)
    assert all("weight_hh" in edges[(two, b)] for b in outs[two])


def test_folded_beside_unrolled_and_cli_level():
    net, L = _run(ug.nn.RNNCell(3, 2, seed=0))
    text = ug.to_dot(net, loss=L, detail="textbook", folded=True)
    assert '"unfold"' in text and "fold_delay" in text
    assert "one-step delay z⁻¹" in text


@pytest.mark.dot
def test_textbook_pictures_go_through_dot():
    import subprocess

    for cell in (ug.nn.RNNCell(3, 2, seed=0), ug.nn.LSTMCell(3, 2, seed=0),
                 ug.nn.GRUCell(3, 2, seed=0)):
        net, L = _run(cell)
        for obj, kw in ((net, {"loss": L, "folded": True}), (cell, {})):
            subprocess.run(["dot", "-Tsvg"], check=True, capture_output=True,
                           input=ug.to_dot(obj, detail="textbook", **kw).encode())


# -- the op-level view: trunks, one row of parameters, natural op labels ---------------------
def test_ops_view_trunks_parameter_row_and_op_labels():
    net, L = _run(ug.nn.RNNCell(3, 2, seed=0))
    g = net.graph
    text = ug.to_dot(net, loss=L, detail="ops")
    params = [g.id(p) for p in net.param_nodes.values()]
    # every parameter at the left end of its own bus, in the bus's row, the buses in the
    # cell's order (named_parameters()), as every view lists them
    buses = [r for r in _ranks(text) if any(x.endswith("_fan_0") for x in r)]
    heads = [x for r in buses for x in r if x in params]
    assert heads == [g.id(net.param_nodes[k]) for k in (
        "weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    # one trunk per shared node, each labelled × 4, into its bus: its junctions in one row
    trunks = [(a, b, r) for (a, b), r in _edges(text).items() if b == a + "_fan_0"]
    assert len(trunks) == 4 and all("× 4<" in r for _, _, r in trunks)
    for a, _, _ in trunks:
        assert any(r[-4:] == [f"{a}_fan_{t}" for t in range(4)] and a in r for r in buses)
    # op symbols carry no step subscript ("+₀" reads "plus zero"); named values keep theirs
    assert not re.search(r"<b>[^<]*(\+|@|×)</b>?<sub>", text)
    assert "<b>+</b>" in text and "<b>matmul</b>" in text and "<b>@" not in text
    assert "<b>h_next<sub>2</sub></b>" in text


def test_textbook_contributions_list_signed_parts_in_the_legend():
    from unrollgraph.render import _h, _signed

    net, L = _run(ug.nn.RNNCell(1, 1, seed=0), T=3)
    text = ug.to_dot(net, loss=L, detail="textbook", contributions=True)
    parts = net.last_run.step_contributions("weight_hh").reshape(-1)
    for t, p in enumerate(parts):
        assert f"step {t}: {_h(_signed(p))}<" in text
    assert np.isclose(parts.sum(), float(net.cell.weight_hh.grad.reshape(-1)[0]))


# -- elision: the first and last steps, a ⋯ column for the rest ------------------------------
def _custom_cell():
    cell = ug.Cell("mine")
    x = cell.input("x", (3,))
    h = cell.state("h", (2,))
    A = cell.param("A", np.ones((2, 3)) * 0.1)
    B = cell.param("B", np.eye(2) * 0.5)
    h_next = ug.tanh(x @ A.T + ug.sigmoid(h @ B.T) * h, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    return cell


_CELLS = {"rnn": lambda: ug.nn.RNNCell(3, 2, seed=0), "lstm": lambda: ug.nn.LSTMCell(3, 2, seed=0),
          "gru": lambda: ug.nn.GRUCell(3, 2, seed=0), "custom": _custom_cell}


def _places(net):
    """Drawn id -> (row, step) of every input, state and output of the net."""
    g, out = net.graph, {}
    for k, ns in net.input_nodes.items():
        out.update({g.id(n): (("x", k), t) for t, n in enumerate(ns)})
    for s, ns in net.state_nodes.items():
        out.update({g.id(n): (("s", s), t) for t, n in enumerate(ns)})
        out[g.id(net.init_nodes[s])] = (("s", s), -1)
    for j, (k, ns) in enumerate(net.output_nodes.items()):
        out.update({_out_id(g.id(n), j): (("y", k), t) for t, n in enumerate(ns)})
    return out


def _label(rest):
    m = re.search(r"<i>(.*?)</i>", rest)
    return m.group(1) if m else None


def _dot_rows(text, places):
    """Id of each ⋯ node -> the row it stands in (found from its rank's other nodes)."""
    out = {}
    for rank in _ranks(text):
        rows = {places[i][0] for i in rank if i in places}
        for i in rank:
            if i.startswith("elided_") and "_to_" not in i:  # not a junction
                assert len(rows) == 1
                out[i] = rows.pop()
    return out


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(sorted(_CELLS)), st.integers(5, 11), st.integers(1, 2),
       st.sets(st.integers(0, 10), min_size=1))
def test_an_elided_textbook_view_draws_only_true_edges(kind, T, ends, read):
    """Every edge of the elided picture is an edge of the full one (a ⋯ standing for the
    elided steps of its row), with the same weights on it; every edge between drawn steps
    is kept; the loss is reached from exactly the outputs it reads."""
    read = sorted(t for t in read if t < T)
    assume(read and T > 2 * ends + 1)
    net = ug.unroll(_CELLS[kind](), steps=T)
    outs, _ = net(np.random.default_rng(0).standard_normal((T, 1, 3)))
    L = (outs[np.array(read)] ** 2).sum()
    L.backward()
    full = _flows(ug.to_dot(net, loss=L, detail="textbook", ends=T))
    text = ug.to_dot(net, loss=L, detail="textbook", ends=ends)
    short = _flows(text)
    places = _places(net)
    dots = _dot_rows(text, places)
    a, b = ends, T - ends - 1
    assert f"(steps {a} … {b} elided)" in text
    drawn = set(_node_ids(text))
    assert not any(places[i][1] in range(a, b + 1) for i in drawn if i in places)

    def stands_for(i, t_range):
        """The full picture's ids a drawn id may stand for."""
        if i in dots:
            return {j for j, (row, t) in places.items() if row == dots[i] and t in t_range}
        return {i}

    for (u, v), rest in short.items():
        if v == "loss" or u == "loss" or u.startswith("loss_") or v.startswith("loss_"):
            continue
        # an edge into the ⋯ column comes from the step before it (or is inside the column)
        us = stands_for(u, range(b, b + 1) if v not in dots else range(a, b + 1))
        vs = stands_for(v, range(a, a + 1) if u not in dots else range(a, b + 1))
        assert any((p, q) in full and _label(full[(p, q)]) == _label(rest)
                   for p in us for q in vs), (u, v, rest)
    kept = set(range(a)) | set(range(b + 1, T))
    for (p, q), rest in full.items():
        if p in places and q in places and places[p][1] in kept | {-1} and \
                places[q][1] in kept:
            assert (p, q) in short and _label(short[(p, q)]) == _label(rest), (p, q)
    # the loss reads exactly the outputs of `read`: one edge from the ⋯ if any is elided
    into = {u for (u, v) in short if v == "loss"}
    y = [i for i, (row, t) in places.items() if row[0] == "y" and t in read and t in kept]
    assert into == set(y) | ({d for d, row in dots.items() if row[0] == "y"}
                             if any(a <= t <= b for t in read) else set())


def test_textbook_elides_long_nets_and_on_request_with_the_ops_views_option():
    net, L = _run(ug.nn.RNNCell(3, 2, seed=0), T=30)
    g, h = net.graph, net.state_nodes["h"]
    text = ug.to_dot(net, loss=L, detail="textbook")
    ids = set(_node_ids(text))
    assert {g.id(h[t]) for t in (0, 1, 28, 29)} <= ids
    assert not any(g.id(h[t]) in ids for t in range(2, 28))
    assert "(steps 2 … 27 elided)" in text and "steps 2 … 27 left out (ends=2)" in text
    # the parts of the loss from the elided steps: one L node, their sum
    from unrollgraph.render import _num
    from unrollgraph.view import step_losses

    assert f"v = {_num(step_losses(net, L)[2:28].sum())}" in text
    # up to 24 steps all are drawn, unless ends= asks for fewer
    net9, L9 = _run(ug.nn.LSTMCell(3, 2, seed=0), T=9)
    assert "elided" not in ug.to_dot(net9, loss=L9, detail="textbook")
    text9 = ug.to_dot(net9, loss=L9, detail="textbook", ends=1)
    ids9 = set(_node_ids(text9))
    kept = {g9 for g9 in (net9.graph.id(n) for ns in net9.state_nodes.values() for n in ns)
            if g9 in ids9}
    assert kept == {net9.graph.id(ns[t]) for ns in net9.state_nodes.values() for t in (0, 8)}
    # the elided states are coloured on the one scale, by their gradient per step
    states9 = "\n".join(line for line in text9.splitlines() if 'tooltip="state ' in line)
    layout_mags = [float(m) for m in re.findall(r"‖∇‖ per step: ([0-9.e-]+) …", states9)]
    assert len(layout_mags) == 2  # one ⋯ per state row of the LSTM


# -- a loss the cell computes at each step -------------------------------------------------------
def _cell_with_loss(with_y=True):
    cell = ug.Cell("with_loss")
    x = cell.input("x", (2,))
    target = cell.input("target", (2,))
    h = cell.state("h", (2,))
    U = cell.param("U", np.eye(2) * 0.5)
    W = cell.param("W", np.eye(2) * 0.3)
    h_next = ug.tanh(x @ U.T + h @ W.T, name="h_next")
    cell.feedback(h, h_next)
    if with_y:
        cell.output("y", h_next)
    d = h_next - target
    cell.output("cost", (d * d).sum(axis=-1))
    return cell


def _run_with_loss(steps, T=4, with_y=True, how="sum"):
    net = ug.unroll(_cell_with_loss(with_y), steps=T)
    rng = np.random.default_rng(0)
    outs, _ = net({"x": rng.standard_normal((T, 1, 2)), "target": rng.standard_normal((T, 1, 2))})
    cost = outs["cost"] if isinstance(outs, dict) else outs
    read = cost if steps is None else cost[np.array(steps)]
    L = read.sum() if how == "sum" else read.mean()
    L.backward()
    return net, L


@pytest.mark.parametrize("with_y", [True, False])
@pytest.mark.parametrize("how", ["sum", "mean"])
def test_a_loss_the_cell_computes_is_drawn_as_the_parts_of_L(with_y, how):
    net, L = _run_with_loss(None, with_y=with_y, how=how)
    g = net.graph
    k = list(net.output_nodes).index("cost")
    text = ug.to_dot(net, loss=L, detail="textbook")
    cost = [_out_id(g.id(n), k) for n in net.output_nodes["cost"]]
    edges = _flows(text)
    assert sorted(a for (a, b) in edges if b == "loss") == sorted(cost)  # each part feeds L
    assert "loss_0" not in _node_ids(text)  # no second L_t beside the cell's own
    for c in cost:  # drawn as the loss's parts, in the loss's colour
        assert 'color="#cf222e"' in re.search(rf'^\s*"{c}" \[.*$', text, flags=re.M).group(0)
    assert ("L = Σ<sub>t</sub> cost<sub>t</sub>" if how == "sum" else
            "L = mean of cost<sub>t</sub>") in text
    if with_y:  # the output the loss does not read: no edge to it
        assert not any(b == "loss" and a.startswith(g.id(net.output_nodes["y"][0]))
                       for a, b in edges)
    # the target, read only by the losses, stands over them (Goodfellow et al., Fig. 10.3);
    # the input x under the states
    import json

    layout = json.loads(ug.render(net, loss=L, detail="textbook").pipe(format="json"))
    y = {o["name"]: float(o["pos"].split(",")[1]) for o in layout["objects"] if "pos" in o}
    for t in range(4):
        target, x = (g.id(net.input_nodes[n][t]) for n in ("target", "x"))
        h = g.id(net.state_nodes["h"][t])
        assert y[x] < y[h] < y[cost[t]] < y[target]
        assert (target, cost[t]) in edges and (h, cost[t]) in edges


@settings(max_examples=8, deadline=None)
@given(st.sets(st.integers(0, 3), min_size=1))
def test_a_loss_over_some_steps_of_the_cells_loss_reads_only_those(steps):
    steps = sorted(steps)
    net, L = _run_with_loss(steps)
    g = net.graph
    k = list(net.output_nodes).index("cost")
    text = ug.to_dot(net, loss=L, detail="textbook")
    into = {a for (a, b) in _flows(text) if b == "loss"}
    assert into == {_out_id(g.id(net.output_nodes["cost"][t]), k) for t in steps}
    assert ("L = Σ<sub>t</sub> cost<sub>t</sub>" in text) == (steps == [0, 1, 2, 3])
    if steps != [0, 1, 2, 3]:
        assert f"L = Σ cost<sub>t</sub> at t = {', '.join(map(str, steps))} = " in text
    # every step's own loss is drawn, read or not
    ids = set(_node_ids(text))
    assert all(_out_id(g.id(n), k) in ids for n in net.output_nodes["cost"])


@pytest.mark.dot
def test_hostile_names_in_an_elided_textbook_view_survive_dot():
    """The ⋯ nodes' and junctions' tooltips carry the user's names as written."""
    from test_render_truth import _all_text, _svg

    names = ["\\Gamma", "&amp;", "<b>", 'q"t', "n2"]
    cell = ug.Cell("c")
    x = cell.input(names[0], (1,))
    h = cell.state(names[1], (1,))
    c = cell.state(names[2], (1,))
    W = cell.param(names[3], np.ones((1, 1)) * 0.5)
    c_next = ug.tanh(h @ W.T + c + x, name="c_next")
    h_next = ug.tanh(h @ W.T + c_next, name="h_next")
    cell.feedback(h, h_next)
    cell.feedback(c, c_next)
    cell.output(names[4], h_next)
    net = ug.unroll(cell, 8)
    outs, _ = net(np.ones((8, 1, 1)))
    (outs * outs).sum().backward()
    text = ug.to_dot(net, detail="textbook", ends=1)
    assert "(steps 1 … 6 elided)" in text
    texts, tips = _all_text(_svg(text))
    for name in names[:3]:
        assert any(t.startswith(f"state {name} at steps 1 … 6") or
                   t.startswith(f"input {name} at steps 1 … 6") for t in tips), name
    assert any(t.startswith(f"output {names[4]} at steps 1 … 6") for t in tips)
    assert names[3] in texts  # the weight on the edges, as written


# -- outputs computed from outputs: the picture follows the values --------------------------------
def _chain_cell(depth, through_state):
    """A cell whose outputs are computed one from another (y -> z -> ... -> a per-step loss),
    the first from the state or from a value past it."""
    cell = ug.Cell("chain")
    x = cell.input("x", (2,))
    tgt = cell.input("tgt", (2,))
    h = cell.state("h", (2,))
    W = cell.param("W", np.eye(2) * 0.5)
    U = cell.param("U", np.eye(2) * 0.3)
    h_next = ug.tanh(x @ W.T + h @ U.T)
    cell.feedback(h, h_next)
    v = h_next
    if through_state:
        cell.output("h_out", h_next)
    for i in range(depth):
        v = v @ cell.param(f"V{i}", np.eye(2) * (0.7 + 0.1 * i)).T
        cell.output(f"y{i}", v)
    cell.output("loss_t", ((v - tgt) ** 2).mean(-1))
    return cell


@settings(max_examples=6, deadline=None)
@given(st.integers(1, 3), st.booleans(), st.integers(2, 4))
def test_textbook_edges_follow_real_paths_and_nodes_show_their_own_gradient(depth, through, T):
    from unrollgraph.render import _array_text

    net = ug.unroll(_chain_cell(depth, through), steps=T)
    rng = np.random.default_rng(0)
    outs, _ = net({"x": rng.standard_normal((T, 1, 2)), "tgt": rng.standard_normal((T, 1, 2))})
    L = outs["loss_t"].sum()
    L.backward()
    g, run = net.graph, net.last_run
    text = ug.to_dot(net, loss=L, detail="textbook")
    drawn = {}  # drawn id -> graph node, for every step-level value
    for n in g.nodes:
        drawn[g.id(n)] = n
    for k, ns in net.output_nodes.items():
        i = list(net.output_nodes).index(k)
        drawn.update({_out_id(g.id(n), i): n for n in ns})
    step_level = {id(n) for ns in [*net.input_nodes.values(), *net.state_nodes.values(),
                                   *net.output_nodes.values(), *net.init_nodes.values()]
                  for n in (ns if isinstance(ns, list) else [ns])}
    ids = set(_node_ids(text))

    def reaches(a, b):
        """A path a -> ... -> b through ops that are not step-level values."""
        stack, seen = [b], set()
        while stack:
            n = stack.pop()
            for i in n.inputs:
                if i is a:
                    return True
                if id(i) not in step_level and id(i) not in seen:
                    seen.add(id(i))
                    stack.append(i)
        return False

    checked = 0
    for a, b in _flows(text):
        if a in drawn and b in drawn and drawn[a] is not drawn[b]:
            assert reaches(drawn[a], drawn[b]), (a, b)
            checked += 1
    assert checked >= T * (depth + 2)
    for i in range(depth):  # each output feeds the next, and the last one the loss
        nxt = f"y{i + 1}" if i + 1 < depth else "loss_t"
        for t in range(T):
            a = _out_id(g.id(net.output_nodes[f"y{i}"][t]), list(net.output_nodes).index(f"y{i}"))
            b = _out_id(g.id(net.output_nodes[nxt][t]), list(net.output_nodes).index(nxt))
            assert (a, b) in _flows(text)
    states = {id(n) for ns in net.state_nodes.values() for n in ns}
    for nid in ids & set(drawn):
        n = drawn[nid]
        if id(n) in states and nid.endswith(tuple(f"_out{i}" for i in range(9))):
            continue  # an output that is the state: the part the loss sends to it
        grad = run.grads[net.slot(n)]
        label = re.search(rf'^\s*"{re.escape(nid)}" \[.*$', text, flags=re.M).group(0)
        want = _array_text(grad, 4)
        if want is not None and n.op != "input":
            assert "∇ = " + want.replace("[", "&#91;").replace("]", "&#93;") in label, nid
    # the folded cell draws the same chain: y_i -> y_{i+1} -> loss_t, nothing bypassing them
    from unrollgraph.textbook import _folded_edges

    cell = net.cell
    fold = {(a, b) for a, b, _w, _b, _d in _folded_edges(cell, cell.graph())}
    assert (("y", f"y{depth - 1}"), ("y", "loss_t")) in fold
    assert not any(b == ("y", "loss_t") and a[0] == "s" for a, b in fold)


@pytest.mark.parametrize("make", ["loss", "chain"])
def test_folded_cell_beside_the_unrolled_one_keeps_its_layout(make):
    """With ``folded=True`` the unrolled part keeps its rows and columns: every step's
    values in one column, the rows (inputs, states, outputs, losses, targets over them) in
    the same order as without the folded cell."""
    import json

    if make == "loss":
        net, L = _run_with_loss(None, T=4)
    else:
        net = ug.unroll(_chain_cell(2, False), steps=4)
        rng = np.random.default_rng(0)
        outs, _ = net({"x": rng.standard_normal((4, 1, 2)),
                       "tgt": rng.standard_normal((4, 1, 2))})
        L = outs["loss_t"].sum()
        L.backward()
    g = net.graph
    names = list(net.output_nodes)

    def step_ids(t):
        ids = {("x", k): g.id(ns[t]) for k, ns in net.input_nodes.items()}
        ids.update({("s", s): g.id(ns[t]) for s, ns in net.state_nodes.items()})
        ids.update({("y", k): _out_id(g.id(ns[t]), names.index(k))
                    for k, ns in net.output_nodes.items()})
        return ids

    layouts = []
    for folded in (False, True):
        lay = json.loads(ug.render(net, loss=L, detail="textbook", folded=folded)
                         .pipe(format="json"))
        pos = {o["name"]: tuple(map(float, o["pos"].split(","))) for o in lay["objects"]
               if "pos" in o}
        rows = []
        for t in range(4):
            ids = step_ids(t)
            xs = {round(pos[i][0]) for i in ids.values()}
            assert max(xs) - min(xs) <= 2, (folded, t, xs)  # one column per step
            rows.append(sorted(ids, key=lambda k: pos[ids[k]][1]))
        assert all(r == rows[0] for r in rows), (folded, rows)
        layouts.append(rows[0])
    assert layouts[0] == layouts[1]  # the same row order with and without the folded cell


@pytest.mark.parametrize("detail", ["textbook", "ops"])
@pytest.mark.parametrize("theme", ["light", "print"])
def test_a_batched_value_keeps_its_rows(detail, theme):
    # x of shape (T, 2, 2): each step's x_t is a batch of two rows of two, never read as a
    # flat four-component input
    net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=2)
    x = np.array([[[-0.732, -0.544], [-0.316, 0.412]], [[0.1, 0.2], [0.3, 0.4]]])
    outs, _ = net(x)
    loss = (outs * outs).sum()
    loss.backward()
    src = ug.render(net, loss=loss, detail=detail, theme=theme, max_elements=8).source
    src = src.replace("&#91;", "[").replace("&#93;", "]")
    assert "[[−0.732, −0.544], [−0.316, 0.412]]" in src
    assert "[−0.732, −0.544, −0.316, 0.412]" not in src


# -- the elided column: every row's ⋯ drawn as the row's values are -------------------------------
def _line_of(text, nid):
    return re.search(rf'^\s*"{re.escape(nid)}" \[.*$', text, flags=re.M).group(0)


@pytest.mark.parametrize("loss", ["all", "last"])
def test_the_elided_output_column_has_its_steps_fill_and_range_as_the_state_column(loss):
    """The elided output column was a bare ⋯ with no fill and no range beside the state
    column's filled oval with both: it is the row's double oval, titled ⋯, with the elided
    steps, the range of the outputs' own gradient norms (what each output prints), and a fill
    by their root mean square on the run's one scale."""
    from unrollgraph.render import _THEMES, _elided_numbers, _Scale

    net, L = _run(ug.nn.RNNCell(3, 2, seed=0), T=30, loss=loss)
    d = ug.render(net, loss=L, detail="textbook")
    text = d.source
    a, b = 2, 27
    seeds = net.last_run.seeds[0]  # the loss's gradient of each output itself
    mags = [float(np.linalg.norm(seeds[t])) for t in range(a, b + 1)]
    rms, _total, words = _elided_numbers(mags)
    line = next(li for li in text.splitlines() if 'tooltip="output y at steps 2 … 27' in li)
    assert 'shape="ellipse"' in line and 'peripheries="2"' in line and "<b>⋯</b>" in line
    assert f"steps {a} … {b}" in line
    assert f"‖∇‖ per step: {words}<" in line
    scale = _Scale([], _THEMES["light"]["ramp"], d.color_scale)
    want = scale.colour(rms) if rms > 0 else _THEMES["light"]["zero"]
    assert f'fillcolor="{want}"' in line, (want, line)
    if loss == "last":  # the outputs the loss does not read: 0, white, as each one drawn
        assert words == "0 … 0" and 'fillcolor="#ffffff"' in line
    # the input column: the row's oval with the elided steps (inputs have no gradient)
    line = next(li for li in text.splitlines() if 'tooltip="input x at steps 2 … 27' in li)
    assert 'shape="ellipse"' in line and f"steps {a} … {b}" in line
    assert 'fillcolor="white"' in line and "per step" not in line


def test_the_elided_column_of_the_cells_own_loss_is_a_part_octagon():
    net, L = _run_with_loss(None, T=30)
    text = ug.to_dot(net, loss=L, detail="textbook")
    line = next(li for li in text.splitlines() if "cost at steps 2 … 27" in li)
    assert 'shape="octagon"' in line and 'color="#cf222e"' in line
    assert "steps 2 … 27" in line and "‖∇‖ per step: " in line

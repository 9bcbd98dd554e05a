"""Diagrams say what the maths says: loss edges only where the value flows, each node with its
own gradient, per-step parts that visibly add up, names exactly as written, no two nodes
printed under one name."""

import re
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.render import _h, _num, _signed

SVG = "{http://www.w3.org/2000/svg}"


def _edges(text):
    return re.findall(r'^\s*"([^"]+)" -> "([^"]+)"(.*)$', text, flags=re.M)


def _node_line(text, nid):
    return next(line for line in text.splitlines() if line.strip().startswith(f'"{nid}" ['))


def _last_output_net(T=3, H=1, seed=0):
    cell = ug.nn.RNNCell(2, H, seed=seed)
    net = ug.unroll(cell, steps=T)
    outs, _ = net(np.random.default_rng(seed).standard_normal((T, 1, 2)))
    loss = (outs[-1] * outs[-1]).sum()
    loss.backward()
    return net, loss


def _out_box(net, t):
    n = net.output_nodes["y"][t]
    return f"{net.graph.id(n)}_out0"


# -- 1. a loss reads only the outputs it reads ----------------------------------------------
@pytest.mark.parametrize("detail", ["ops", "steps"])
def test_loss_over_the_last_output_has_one_edge_from_it(detail):
    net, loss = _last_output_net()
    seeds = net.last_run.seeds[0]
    assert np.all(seeds[:2] == 0) and np.all(seeds[2] != 0)
    text = ug.to_dot(net, loss=loss, detail=detail)
    into_loss = [a for a, b, rest in _edges(text) if b == "loss"]
    assert into_loss == [_out_box(net, 2)]
    # each output shows its own gradient (dL/dy_t), not the total one of the state it reads
    for t in range(3):
        line = _node_line(text, _out_box(net, t))
        own = _num(float(seeds[t].reshape(-1)[0]))
        assert f"∇ = {own}<" in line
    total_h0 = net.last_run.state_grads()[0].reshape(-1)[0]
    assert total_h0 != 0 and f"∇ = {_num(total_h0)}<" not in _node_line(text, _out_box(net, 0))


def test_highlight_does_not_run_through_outputs_the_loss_does_not_read():
    net, loss = _last_output_net()
    h0 = net.state_nodes["h"][0]
    text = ug.to_dot(net, loss=loss, highlight=h0, detail="ops")
    hot = {(a, b) for a, b, rest in _edges(text) if 'penwidth="3"' in rest}
    ids = [_out_box(net, t) for t in range(3)]
    assert (ids[2], "loss") in hot
    assert not any(b in ids[:2] or a in ids[:2] for a, b in hot)
    assert 'penwidth="3"' not in _node_line(text, ids[0])


def test_networkx_loss_node_reads_only_the_last_output():
    net, loss = _last_output_net()
    G = ug.to_networkx(net, loss=loss)
    lid = next(k for k, d in G.nodes(data=True) if d["op"] == "loss")
    assert [a for a, _ in G.in_edges(lid)] == [net.graph.id(net.output_nodes["y"][2])]


def test_a_loss_that_reads_an_output_with_zero_gradient_still_reads_it():
    # relu of a negative output: the gradient is zero but the value flows into the loss
    net = ug.unroll(ug.nn.RNNCell(2, 1, seed=0), steps=2)
    outs, _ = net(np.ones((2, 1, 2)))
    loss = ug.relu(outs[0] * 0.0 - 1.0).sum() + outs[1].sum()
    loss.backward()
    assert np.all(net.last_run.seeds[0][0] == 0)
    text = ug.to_dot(net, loss=loss)
    assert sorted(a for a, b, _ in _edges(text) if b == "loss") == sorted(
        _out_box(net, t) for t in range(2))


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 5).flatmap(lambda T: st.tuples(
    st.just(T), st.sets(st.integers(0, T - 1), min_size=1),
    st.sampled_from(["list", "slice", "mask", "sum"]))))
def test_random_losses_over_subsets_of_outputs(case):
    T, read, how = case
    read = sorted(read)
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=T), steps=T)
    outs, _ = net(np.random.default_rng(T).standard_normal((T, 1, 2)))
    if how == "list":
        picked = outs[read]
    elif how == "slice":
        read = list(range(read[0], T))
        picked = outs[read[0]:]
    elif how == "mask":
        mask = np.zeros(T, dtype=bool)
        mask[read] = True
        picked = outs[mask]
    else:
        picked = ug.stack([outs[t] for t in read])
    loss = (picked * picked).sum()
    loss.backward()
    want = sorted(_out_box(net, t) for t in read)
    for detail in ("ops", "steps"):
        text = ug.to_dot(net, loss=loss, detail=detail)
        assert sorted(a for a, b, _ in _edges(text) if b == "loss") == want
    G = ug.to_networkx(net, loss=loss)
    lid = next(k for k, d in G.nodes(data=True) if d["op"] == "loss")
    assert sorted(a for a, _ in G.in_edges(lid)) == sorted(
        net.graph.id(net.output_nodes["y"][t]) for t in read)


# -- 2. per-step parts, signed, visibly adding up -------------------------------------------
def test_scalar_parameter_parts_are_signed_and_sum_to_the_total():
    net, loss = _last_output_net()
    parts = net.last_run.step_contributions("weight_hh").reshape(-1)
    total = net.param_nodes["weight_hh"]
    text = ug.to_dot(net, loss=loss, contributions=True, detail="ops")
    line = _node_line(text, net.graph.id(total))
    for t, p in enumerate(parts):
        assert f"t = {t}: {_signed(p)}<" in line
    grad = float(net.cell.weight_hh.grad.reshape(-1)[0])
    assert np.isclose(parts.sum(), grad)
    assert f"Σ = {_signed(grad)}<" in line
    assert "‖∇‖" not in line  # values, not norms, for a scalar
    assert any(p < 0 for p in parts)  # the signs are what makes the sum readable
    assert _signed(-0.2409) == "−0.241" and _signed(0.0386) == "+0.0386" and _signed(0) == "0"


def test_large_parameter_parts_fall_back_to_norms_with_the_sum():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=3)
    outs, _ = net(np.ones((3, 1, 2)))
    loss = (outs * outs).sum()
    loss.backward()
    text = ug.to_dot(net, loss=loss, contributions=True, detail="ops")
    line = _node_line(text, net.graph.id(net.param_nodes["weight_hh"]))
    assert "norms shown" in line and "t = 2: ‖∇‖" in line and "Σ = ‖·‖" in line
    # a 3-vector bias fits max_elements=4: its parts are drawn as signed values
    bline = _node_line(text, net.graph.id(net.param_nodes["bias_hh"]))
    parts = net.last_run.step_contributions("bias_hh")
    assert f"t = 1: {_h(_signed(parts[1]))}<" in bline


# -- 3. names drawn exactly as written, everywhere -------------------------------------------
def _svg(text):
    out = subprocess.run(["dot", "-Tsvg"], input=text.encode("utf-8"), capture_output=True,
                         check=True).stdout
    return ET.fromstring(out)


def _all_text(root):
    texts = [(e.text or "").replace("\xa0", " ") for e in root.iter(f"{SVG}text")]
    tips = [v.replace("\xa0", " ") for e in root.iter() for k, v in e.attrib.items()
            if k.endswith("}title")]
    return texts, tips


@pytest.mark.dot
def test_backslash_gamma_and_entity_names_survive_dot():
    x = ug.tensor(1.0, requires_grad=True, name="\\Gamma")
    w = ug.tensor(2.0, requires_grad=True, name="&amp;")
    y = x * w
    y.backward()
    texts, tips = _all_text(_svg(ug.to_dot(y)))
    assert "\\Gamma" in texts and "&amp;" in texts
    assert not any("unrollgraph" in s and "amma" in s for s in texts + tips)
    assert "\\Gamma = leaf()  # shape ()" in tips and "&amp; = leaf()  # shape ()" in tips


@pytest.mark.dot
@pytest.mark.parametrize("name", ["\\Gamma", "&amp;", "\\N\\G\\E\\L\\T\\H", "a\\lb"])
def test_names_survive_in_titles_edge_labels_and_state_rows(name):
    cell = ug.Cell(name)
    x = cell.input("x", (1,))
    h = cell.state(name, (1,))
    W = cell.param("W" + name, np.ones((1, 1)))
    h_next = ug.tanh(x @ W + h, name="next" + name)
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    net = ug.unroll(cell, 3)
    out, _ = net(np.ones((3, 1, 1)))
    out.sum().backward()
    for detail in ("steps", "ops", "textbook"):
        texts, tips = _all_text(_svg(ug.to_dot(net, detail=detail, title=None)))
        joined = "\n".join(texts)
        assert name in joined  # the state's name (steps: edge labels; ops: init; textbook)
        assert any(t.startswith(name + " unrolled") for t in texts)  # the picture's title
        assert any(name in tip for tip in tips)


# -- 4. one printed name per node ------------------------------------------------------------
def test_a_user_name_equal_to_a_generated_id_is_not_printed_twice():
    a = ug.tensor(1.0, requires_grad=True, name="n2")
    b = ug.tensor(2.0, requires_grad=True)
    c = a * b
    d = c * a
    g = ug.Graph(d)
    names = [g.display_name(n) for n in g.nodes]
    assert len(set(names)) == len(names)
    # the user's name is printed as written; the generated name of node n2 gives way
    assert g.display_name(a.node) == "n2" and g.display_name(c.node) != "n2"
    printed = str(g)
    assert printed.count("\nn2 = ") + printed.startswith("n2 = ") == 1
    G = ug.to_networkx(d)
    shown = [dd["name"] for _, dd in G.nodes(data=True)]
    assert len(set(shown)) == len(shown)


def test_a_loss_named_like_a_node_is_exported_under_its_own_name():
    net, loss = _last_output_net()
    taken = net.graph.display_name(net.graph.nodes[3])
    loss.name = taken
    G = ug.to_networkx(net, loss=loss)
    shown = [dd["name"] for _, dd in G.nodes(data=True)]
    assert len(set(shown)) == len(shown)
    lid = next(k for k, d in G.nodes(data=True) if d["op"] == "loss")
    assert G.nodes[lid]["label"] == taken  # the user's name kept, only the shown one differs


_ALPHABET = ["n", "0", "1", "2", "@", "#", "_out0", "\\G", "&amp;", "step_", "loss", "x"]


@settings(max_examples=20, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_ALPHABET), min_size=1, max_size=4).map("".join),
                min_size=3, max_size=3))
def test_no_two_nodes_share_a_printed_name_or_a_dot_id(names):
    a = ug.tensor(1.0, requires_grad=True, name=names[0])
    b = ug.tensor(2.0, requires_grad=True, name=names[1])
    c = ug.tanh(a * b, name=names[2])
    d = c * a + b
    d.backward()
    g = ug.Graph(d)
    shown = [g.display_name(n) for n in g.nodes]
    assert len(set(shown)) == len(shown)
    G = ug.to_networkx(d)
    assert len({dd["name"] for _, dd in G.nodes(data=True)}) == G.number_of_nodes()
    text = ug.to_dot(d)
    ids = re.findall(r'^\s*"([^"]+)" \[', text, flags=re.M)
    assert len(set(ids)) == len(ids)  # node ids never come from names


_HOSTILE = ["\\G", "\\N", "\\E", "\\L", "\\T", "\\H", "\\n", "&amp;", "&", "<b>", '"', "'",
            "{", "}", "|", "]; x [", "é", "😀", " ", "a", "_", "%", "$", "#", "~", "^"]


@pytest.mark.dot
@settings(max_examples=10, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_HOSTILE), min_size=1, max_size=5).map("".join),
                min_size=4, max_size=4, unique=True))
def test_hostile_names_on_textbook_edge_labels_captions_and_tikz(names):
    from unrollgraph.tikz import latex_text

    cell = ug.Cell("c")
    x = cell.input("x", (1,))
    h = cell.state(names[0], (1,))
    U = cell.param(names[1], np.ones((1, 1)))
    W = cell.param(names[2], np.ones((1, 1)) * 0.5)
    h_next = ug.tanh(x @ U.T + h @ W.T, name="n")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    net = ug.unroll(cell, 2)
    out, _ = net(np.ones((2, 1, 1)))
    out.sum().backward()
    texts, _ = _all_text(_svg(ug.to_dot(net, detail="textbook")))
    assert names[1] in texts and names[2] in texts  # the edge labels, as written
    assert texts.count(names[1]) >= 2  # one per step
    both = ug.render_side_by_side(net, net, labels=(names[3], "b"), detail="textbook")
    texts, tips = _all_text(_svg(both.source))
    assert names[3] in texts and names[3] in tips
    tex = ug.to_tikz(net, detail="textbook")
    assert "{\\textit{" + latex_text(names[1]) + "}}" in tex


def test_a_loss_on_the_final_state_only_reads_the_last_state():
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=3)
    outs, h = net(np.ones((3, 1, 2)))
    loss = (h * h).sum()
    loss.backward()
    last = net.graph.id(net.state_nodes["h"][-1])
    for detail in ("ops", "textbook"):
        text = ug.to_dot(net, loss=loss, detail=detail)
        assert [a for a, b, _ in _edges(text) if b == "loss"] == [last]
    text = ug.to_dot(net, loss=loss, detail="steps")
    assert [a for a, b, _ in _edges(text) if b == "loss"] == ["step_2"]

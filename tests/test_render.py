"""Diagrams: DOT text structure, stable output, safe labels, levels of detail, gradients."""

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.errors import RenderError
from unrollgraph.render import _h, _Scale

GOLDEN = Path(__file__).parent / "golden"


def _rnn_run(T=3, H=3, D=2, truncate=None, seed=0):
    cell = ug.nn.RNNCell(D, H, seed=seed)
    net = ug.unroll(cell, steps=T, truncate=truncate)
    xs = np.random.default_rng(seed).standard_normal((T, 1, D))
    out, _ = net(xs)
    loss = (out * out).mean()
    loss.backward()
    return cell, net, loss


def _node_ids(text):
    """Ids of the node statements (not edges, not graph attributes)."""
    return re.findall(r'^\s*"([^"]+)" \[', text, flags=re.M)


def _edges(text):
    return re.findall(r'^\s*"([^"]+)" -> "([^"]+)"(.*)$', text, flags=re.M)


def test_one_cluster_per_step_and_no_other_cluster():
    _, net, _ = _rnn_run(T=5)
    text = ug.to_dot(net, detail="ops")
    assert text.count("subgraph cluster") == 5
    for t in range(5):
        assert f"subgraph cluster_step_{t} {{" in text
        assert f'label="t = {t}"' in text


def test_each_parameter_drawn_once_with_one_edge_per_step():
    T = 4
    _, net, _ = _rnn_run(T=T)
    g = net.graph
    text = ug.to_dot(net, detail="ops")
    ids = _node_ids(text)
    edges = _edges(text)
    for name, node in net.param_nodes.items():
        pid = g.id(node)
        assert ids.count(pid) == 1, name
        # the parameter's fan-out into the steps, directly or through a shared op like W.T
        sources = {pid} | {g.id(n) for n in g.nodes if n.step is None and node in n.inputs}
        # one trunk per shared node, labelled × T, into the first of its junctions, one per
        # step, joined in time order (the bus); from each one dashed edge into its step
        trunks = [e for e in edges if e[0] in sources and e[1] == e[0] + "_fan_0"]
        assert len(trunks) == 1 and f"× {T}<" in trunks[0][2], (name, trunks)
        src = trunks[0][0]
        bus = [e for e in edges if e[0].startswith(src + "_fan_") and
               e[1].startswith(src + "_fan_")]
        assert sorted((a, b) for a, b, _ in bus) == sorted(
            (f"{src}_fan_{t}", f"{src}_fan_{t + 1}") for t in range(T - 1))
        for t in range(T):
            fan = [e for e in edges if e[0] == f"{src}_fan_{t}" and "_fan_" not in e[1]]
            assert len(fan) == 1 and "dashed" in fan[0][2], (name, fan)
            reader = next(n for n in g.nodes if g.id(n) == fan[0][1])
            assert net.nodes[net.slot(reader)].step == t


def test_folded_cell_has_delay_edge_and_legend():
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    g = cell.graph()
    text = ug.to_dot(cell)
    edges = _edges(text)
    for state, nxt in cell.feedbacks.items():
        # next state -> over it, under the state -> over (the rail, labelled z⁻¹), under the
        # state -> state: one path round the outside of the cell, through invisible corners
        src, dst = g.id(nxt.node), g.id(cell.states[state].node)
        over = [e[1] for e in edges if e[0] == src and e[1].endswith("_over")]
        assert len(over) == 1, over
        rail = [e for e in edges if e[1] == over[0]]
        assert [e[0] for e in rail] == [src, over[0].replace("_over", "_under")], rail
        assert "z⁻¹" in rail[1][2] and "arrowhead" in rail[1][2]
        into = [e for e in edges if e[0] == rail[1][0]]
        assert [(e[1], "z⁻¹" in e[2]) for e in into] == [(over[0], True), (dst, False)], into
        for corner in (over[0], rail[1][0]):
            assert re.search(rf'node \[shape=point style=invis[^]]*\] "{corner}"', text)
    assert text.count("z⁻¹ (one-step delay)") == 2
    assert '"legend" [' in text
    assert "one-step delay" in text
    assert 'shape="cylinder"' in text and 'shape="invhouse"' in text


def test_colour_legend_only_with_gradients():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, 3)
    net(np.ones((3, 1, 2)))
    before = ug.to_dot(net)
    assert "gradient norm" not in before and "∇" not in before
    _, net, _ = _rnn_run(T=3)
    after = ug.to_dot(net)
    assert "gradient norm ‖∇‖ (log scale)" in after
    assert after.count("<td bgcolor=") >= 6  # the colour bar's cells


def test_colour_scale_is_monotone_in_gradient_norm():
    scale = _Scale([1e-6, 1e-3, 1.0], ["#ffffff", "#000000"])
    lum = [sum(int(c[i:i + 2], 16) for i in (1, 3, 5))
           for c in (scale.colour(m) for m in (1e-6, 1e-4, 1e-2, 1.0))]
    assert lum == sorted(lum, reverse=True) and lum[0] > lum[-1]


def test_vanishing_gradients_get_lighter_towards_the_start():
    cell = ug.nn.RNNCell(2, 4, seed=0)
    cell.load_state_dict({k: v * 0.3 for k, v in cell.state_dict().items()})
    net = ug.unroll(cell, 8)
    out, _ = net(np.ones((8, 1, 2)))
    out[-1].sum().backward()
    text = ug.to_dot(net, detail="ops")
    g = net.graph

    def fill(node):
        line = next(l for l in text.splitlines() if l.strip().startswith(f'"{g.id(node)}" ['))
        return re.search(r'fillcolor="(#[0-9a-f]{6})"', line).group(1)

    first, last = fill(net.state_nodes["h"][0]), fill(net.state_nodes["h"][-1])
    lum = lambda c: sum(int(c[i:i + 2], 16) for i in (1, 3, 5))
    assert lum(first) > lum(last)


def test_elision_node_with_count_and_aggregate():
    _, net, _ = _rnn_run(T=50)
    text = ug.to_dot(net, detail="elide", ends=2)
    assert text.count("subgraph cluster_step") == 4
    assert "… 46 steps …" in text
    assert "steps 2 … 47" in text
    assert "‖∂L/∂state‖ over them" in text
    # shared weights into the elision, through their trunk (× 50: 4 drawn steps + 46 elided)
    assert re.search(r'"n\d+_fan_2" -> "elided" .*× 46', text)
    assert re.search(r'"n\d+" -> "n\d+_fan_0" .*× 50<', text)


def test_steps_detail_one_box_per_step():
    T = 10
    _, net, _ = _rnn_run(T=T)
    text = ug.to_dot(net, detail="steps", contributions=True)
    assert all(f'"step_{t}" [' in text for t in range(T))
    pid = net.graph.id(net.param_nodes["weight_hh"])
    # one trunk (× T) into its bus: a junction per step joined in time order, and from each
    # junction one edge into its own step
    (trunk,) = [e for e in _edges(text) if e[0] == pid and "invis" not in e[2]]
    assert trunk[1] == pid + "_fan_0" and f"× {T}<" in trunk[2]
    bus = [(a, b) for a, b, _ in _edges(text) if a.startswith(pid + "_fan_")
           and b.startswith(pid + "_fan_")]
    assert sorted(bus) == sorted((f"{pid}_fan_{t}", f"{pid}_fan_{t + 1}") for t in range(T - 1))
    for t in range(T):
        fan = [e for e in _edges(text) if e[0] == f"{pid}_fan_{t}" and "_fan_" not in e[1]]
        assert [b for _, b, _ in fan] == [f"step_{t}"] and "dashed" in fan[0][2]
    assert "t = 0: ‖∇‖" in text


def test_golden_three_node_scalar_graph():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    w = ug.tensor(-2.0, requires_grad=True, name="w")
    y = x * w
    y.name = "y"
    y.backward()
    text = ug.to_dot(y, derivatives=True)
    path = GOLDEN / "scalar_mul.dot"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")
    assert len(_node_ids(text)) == 4  # x, w, y and the legend


def test_same_graph_same_bytes():
    _, net1, loss1 = _rnn_run(T=4)
    _, net2, loss2 = _rnn_run(T=4)
    a = ug.to_dot(net1, loss=loss1, contributions=True)
    assert a == ug.to_dot(net1, loss=loss1, contributions=True)
    assert a == ug.to_dot(net2, loss=loss2, contributions=True)
    assert ug.to_dot(loss1) == ug.to_dot(loss2)
    assert ug.to_dot(ug.nn.GRUCell(2, 3, seed=1)) == ug.to_dot(ug.nn.GRUCell(2, 3, seed=1))


HOSTILE = ['a"];evil[label="x', "<b>x</b>", "x\n}y", "{a|b}", "back\\slash", "q'&;"]


def test_hostile_names_are_escaped_in_the_text():
    for name in HOSTILE:
        x = ug.tensor(1.0, requires_grad=True, name=name)
        y = ug.tanh(x)
        y.name = name
        text = ug.to_dot(y)
        # outside quoted DOT strings (the escaped tooltips) no markup of the name survives
        bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
        assert "<b>x</b>" not in bare and "evil[" not in bare
        assert len(_node_ids(text)) == 3
        assert len(_edges(text)) == 1
    # a backslash is doubled: Graphviz reads "\\N" in a label as the node's id
    assert _h('a"<b>&\\{|}') == "a&quot;&lt;b&gt;&amp;&#92;&#92;&#123;&#124;&#125;"


@pytest.mark.dot
def test_hostile_names_render_without_extra_nodes():
    cell = ug.Cell('c"ell<i>')
    x = cell.input(HOSTILE[0], (2,))
    h = cell.state(HOSTILE[1], (2,))
    W = cell.param(HOSTILE[2], np.eye(2))
    h_next = ug.tanh(x @ W + h, name=HOSTILE[3])
    cell.feedback(h, h_next)
    cell.output(HOSTILE[4], h_next)
    net = ug.unroll(cell, 2)
    out, _ = net(np.ones((2, 1, 2)))
    out.sum().backward()
    for obj in (cell, net):
        text = ug.to_dot(obj)
        svg = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True,
                             check=True).stdout.decode()
        assert svg.count('<g id="node') == len(_node_ids(text))
        assert "evil" not in re.findall(r"<g id=\"node\d+\" class=\"node\">\s*<title>([^<]*)",
                                        svg)


def test_long_lstm_renders_by_default_with_elision():
    net = ug.unroll(ug.nn.LSTMCell(2, 3, seed=0), steps=2000)
    out, _ = net(np.random.default_rng(0).standard_normal((2000, 1, 2)))
    out.sum().backward()
    text = ug.to_dot(net)
    assert "… 1996 steps …" in text
    assert text.count("subgraph cluster_step") == 4
    assert len(_node_ids(text)) < 200


def test_explicit_enormous_request_raises_with_count_and_fix():
    net = ug.unroll(ug.nn.LSTMCell(2, 3, seed=0), steps=300)
    n = len(net.graph.nodes)
    with pytest.raises(RenderError, match=rf"all {n} nodes.*max_nodes=1500.*detail='elide'") \
            as err:
        ug.to_dot(net, detail="ops")
    # the count asked for is what is drawn: the net's nodes, one box per output and step, and
    # one junction per step for each shared node that several steps read (its bus)
    drawn = int(re.search(r"pass max_nodes=(\d+)", str(err.value)).group(1))
    reads: dict = {}
    for m in net.graph.nodes:
        for i in m.inputs:
            if i.step is None and m.step is not None and i.op not in ("init", "const"):
                reads.setdefault(id(i), set()).add(m.step)
    assert drawn == n + 300 + sum(len(k) for k in reads.values() if len(k) > 1)
    with pytest.raises(RenderError, match=f"would draw {drawn} nodes"):
        ug.to_dot(net, detail="ops", max_nodes=drawn - 1)
    assert ug.to_dot(net, detail="ops", max_nodes=drawn).count("subgraph cluster_step") == 300


def test_bad_options_raise_render_error():
    x = ug.tensor(1.0, name="x")
    with pytest.raises(RenderError, match="unknown render option 'colour'"):
        ug.to_dot(x, colour="red")
    with pytest.raises(RenderError, match="detail="):
        ug.to_dot(x, detail="everything")
    with pytest.raises(RenderError, match="no node called 'nope'"):
        ug.to_dot(ug.tanh(x), highlight="nope")
    assert isinstance(RenderError("x"), ug.UnrollGraphError)


def test_truncated_steps_are_greyed():
    _, net, _ = _rnn_run(T=4, truncate=2)
    text = ug.to_dot(net, detail="ops")
    assert 'label="t = 0 (cut)"' in text and 'label="t = 1 (cut)"' in text
    assert 'label="t = 2"' in text
    g = net.graph
    cut = g.id(net.state_nodes["h"][0])
    kept = g.id(net.state_nodes["h"][3])
    line = {i: next(l for l in text.splitlines() if l.strip().startswith(f'"{i}" ['))
            for i in (cut, kept)}
    assert "dashed" in line[cut] and "∇" not in line[cut]
    assert "dashed" not in line[kept] and "∇" in line[kept]
    assert "truncated BPTT sends it no gradient" in text


def test_highlight_and_local_derivatives():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    w = ug.tensor(-2.0, requires_grad=True, name="w")
    y = ug.tanh(x * w)
    y.backward()
    g = ug.Graph(y)
    text = ug.to_dot(y, highlight=x, derivatives=True)
    edges = {(a, b): rest for a, b, rest in _edges(text)}
    ix, iw, im = g.id(x.node), g.id(w.node), g.id(g.nodes[2])
    assert 'penwidth="3"' in edges[(ix, im)] and "∂ −2<" in edges[(ix, im)]
    assert 'penwidth="3"' not in edges[(iw, im)] and "∂ 0.5<" in edges[(iw, im)]


def test_dark_theme_and_loss_node():
    _, net, loss = _rnn_run(T=3)
    text = ug.to_dot(net, theme="dark", loss=loss)
    assert 'bgcolor="#0d1117"' in text
    assert re.search(r'"loss" \[shape="doubleoctagon"', text)
    assert f"L = {float(loss.data):.3g}" in text
    assert len([e for e in _edges(text) if e[1] == "loss"]) == 3


def test_tensor_graph_with_an_unrolled_call():
    _, net, loss = _rnn_run(T=3)
    text = ug.to_dot(loss)
    assert 'shape="box3d"' in text and "call of an unrolled net" in text


def test_render_returns_digraph_with_the_same_source():
    _, net, _ = _rnn_run(T=2)
    graph = ug.render(net)
    assert graph.source == ug.to_dot(net)


@pytest.mark.dot
def test_render_writes_files(tmp_path):
    cell, net, loss = _rnn_run(T=2)
    for fmt in ("svg", "png", "pdf"):
        out = ug.render(net, loss=loss).render(str(tmp_path / "net"), format=fmt)
        assert Path(out).stat().st_size > 500
    svg = ug.render(cell).render(str(tmp_path / "cell"), format="svg")
    assert "z⁻¹" in Path(svg).read_text(encoding="utf-8")


@pytest.mark.dot
def test_notebooks_show_the_picture_inline():
    """Jupyter calls _repr_mimebundle_: it must give an SVG of the drawing."""
    bundle = ug.render(ug.nn.RNNCell(2, 2, seed=0))._repr_mimebundle_()
    svg = bundle["image/svg+xml"]
    assert svg.lstrip().startswith("<?xml") and "z⁻¹" in svg


# -- long and hostile names -------------------------------------------------------------------
def _svg(text):
    """Run dot on the DOT text; return the parsed SVG root (fails on any dot error)."""
    import xml.etree.ElementTree as ET

    out = subprocess.run(["dot", "-Tsvg"], input=text.encode("utf-8"), capture_output=True,
                         check=True).stdout
    return ET.fromstring(out)


def _svg_nodes(root):
    """``{node id: (tooltip, [drawn text lines])}`` of every node group of an SVG."""
    ns = {"svg": "http://www.w3.org/2000/svg"}
    out = {}
    for g in root.iter("{http://www.w3.org/2000/svg}g"):
        if g.get("class") != "node":
            continue
        nid = g.find("svg:title", ns).text
        # Graphviz writes the second of two spaces as a no-break space (U+00A0) in SVG; the
        # names tested hold no U+00A0, so turning it back is exact
        tips = [v.replace("\xa0", " ") for e in g.iter() for k, v in e.attrib.items()
                if k.endswith("}title")]
        texts = [(e.text or "").replace("\xa0", " ")
                 for e in g.iter("{http://www.w3.org/2000/svg}text")]
        out[nid] = (tips[0] if tips else None, texts)
    return out


def _long_name_net(name):
    cell = ug.Cell("c")
    x = cell.input("x", (2,))
    h = cell.state("h", (2,))
    W = cell.param("W", np.eye(2))
    h_next = ug.tanh(x @ W + h, name=name)
    cell.feedback(h, h_next)
    cell.output(name + "!", h_next)
    net = ug.unroll(cell, 2)
    out, _ = net(np.ones((2, 1, 2)))
    loss = out.sum()
    loss.backward()
    return cell, net, loss


@pytest.mark.dot
def test_very_long_names_are_drawn_short_and_kept_whole_in_the_tooltip(tmp_path):
    from unrollgraph.render import _shown

    for n in (8_000, 10_000, 40_000):
        name = "".join(chr(ord("a") + k % 26) for k in range(n))
        x = ug.tensor(1.0, name=name)
        y = ug.tanh(x)
        nodes = _svg_nodes(_svg(ug.to_dot(y)))
        tip, texts = nodes["n0"]
        assert tip == f"{name} = leaf()  # shape ()"  # the whole name, as written
        assert texts[0] == _shown(name) and len(texts[0]) == 40
        assert texts[0].startswith(name[:26]) and texts[0].endswith(name[-13:])
        assert nodes["n1"][0] == f"n1 = tanh({name})  # shape ()"
        cell, net, loss = _long_name_net(name)
        for obj in (cell, net):
            svg_nodes = _svg_nodes(_svg(ug.to_dot(obj, loss=loss) if obj is net
                                        else ug.to_dot(obj)))
            outs = [v for k, v in svg_nodes.items() if "_out" in k]
            assert outs and all(v[0].startswith(f"output {name}!") for v in outs)
        # and through graphviz itself, to a file
        path = ug.render(net, loss=loss).render(str(tmp_path / f"long{n}"), format="svg")
        assert Path(path).stat().st_size > 1000


def test_a_long_multi_line_name_is_drawn_in_three_lines_at_most():
    from unrollgraph.render import _shown

    name = "\n".join(f"line {k} " + "x" * 60 for k in range(10))
    shown = _shown(name)
    assert shown.count("\n") == 2 and shown.endswith("\n…")
    assert all(len(line) <= 40 for line in shown.split("\n"))
    text = ug.to_dot(ug.tanh(ug.tensor(1.0, name=name)))
    assert text.count("<br/>") >= 2 and "line 9" not in text.split("tooltip=")[0]


def test_lone_surrogate_is_refused_at_the_door_and_never_reaches_render():
    with pytest.raises(ug.InvalidNameError, match="lone surrogate, U[+]D800"):
        ug.tensor(1.0, name="x\ud800")
    # a node made by hand (Node does not check) still renders: the character is replaced
    y = ug.tanh(ug.tensor(1.0))
    y.node._name = "bad\ud800name"
    text = ug.to_dot(y)
    text.encode("utf-8")  # no UnicodeEncodeError
    assert "bad\ufffdname" in text


@pytest.mark.dot
def test_every_dot_failure_is_a_render_error(tmp_path, monkeypatch):
    g = ug.render(ug.tanh(ug.tensor(1.0, name="x")))
    g.body.append('  "a" [label=<<b>unclosed>]\n')  # text dot refuses
    with pytest.raises(RenderError, match=r"Graphviz.s dot failed \(exit status 1\): .*mismatched"):
        g.pipe(format="svg")
    with pytest.raises(RenderError, match="Graphviz's dot failed"):
        g.render(str(tmp_path / "bad"), format="png")
    with pytest.raises(RenderError, match="Graphviz's dot failed"):
        g._repr_mimebundle_()
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on the path
    good = ug.render(ug.tanh(ug.tensor(1.0, name="x")))
    with pytest.raises(RenderError, match="Graphviz's programs are not installed"):
        good.render(str(tmp_path / "good"), format="svg")
    with pytest.raises(RenderError, match="not installed"):
        good.unflatten(stagger=2)


_NASTY = ['"', "\\", "\\N", "\\G", "\\E", "\\L", "\\T", "\\H", "\\n", "\\l", "\\r", "\\\\",
          "<", ">", "&", "&amp;", "&#92;", "&lt;b&gt;", "'", "{", "}", "|", "[", "]", ";",
          "\n", "<br/>", "]; evil [", " -> ", "é", "😀", "\u202e", "\u200b", "a", " "]


@pytest.mark.dot
@settings(max_examples=12, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_NASTY), min_size=1, max_size=6).map("".join),
                min_size=5, max_size=5, unique=True),
       st.integers(0, 80))
def test_hostile_names_reach_every_output_as_written_and_inject_nothing(names, pad):
    names = [n + "x" * pad if k == 1 else n for k, n in enumerate(names)]
    cell = ug.Cell(names[4])
    x = cell.input(names[0], (2,))
    h = cell.state(names[1], (2,))
    W = cell.param(names[2], np.eye(2))
    h_next = ug.tanh(x @ W + h, name=names[3])
    cell.feedback(h, h_next)
    cell.output(names[0] + "?", h_next)
    net = ug.unroll(cell, 2)
    out, _ = net(np.ones((2, 1, 2)))
    loss = out.sum()
    loss.backward()
    from unrollgraph.render import _shown

    for obj in (cell, net):
        g = obj.graph() if obj is cell else net.graph
        text = ug.to_dot(obj, loss=loss) if obj is net else ug.to_dot(obj)
        nodes = _svg_nodes(_svg(text))
        # nothing injected: the SVG has exactly the node statements of the DOT text
        assert sorted(nodes) == sorted(set(_node_ids(text)))
        for n in g.nodes:
            if g.id(n) not in nodes:
                continue  # a constant drawn per use
            tip, texts = nodes[g.id(n)]
            if n.op != "init":
                assert tip == g.equation(n)  # every character as written
            if n.name and n.op != "init":
                # the drawn lines (Graphviz writes no text element for a blank line)
                first = [line for line in _shown(n.name).split("\n") if line.strip()]
                assert texts[: len(first)] == first, (texts, first)
    G = ug.to_networkx(net)
    labels = {d["label"] for _, d in G.nodes(data=True)}
    assert {names[0], names[1] + "_init", names[2], names[3]} <= labels
    printed = str(net.graph)
    assert all(n in printed for n in names[:4])


# -- the size guard counts what is drawn --------------------------------------------------------
def _count_drawn(text):
    ids = set(_node_ids(text)) - {"legend"}
    return len(ids)


def test_steps_detail_guard_counts_nodes_not_steps():
    T = 1000
    net = ug.unroll(ug.nn.RNNCell(3, 4, seed=0), steps=T)
    out, _ = net(np.ones((T, 2, 3)))
    loss = (out * out).sum()
    loss.backward()
    with pytest.raises(RenderError) as err:
        ug.to_dot(net, loss=loss, detail="steps")
    msg = str(err.value)
    m = re.search(r"would draw (\d+) nodes and (\d+) edges, more than max_nodes=1500", msg)
    assert m and "detail='elide'" in msg
    n, e = int(m.group(1)), int(m.group(2))
    text = ug.to_dot(net, loss=loss, detail="steps", max_nodes=n)
    # 1000 boxes, inputs, outputs; 4 params and their buses (a junction per step), h0, loss;
    # and the invisible gaps that keep the outputs' row apart (one between neighbours); each
    # parameter stands in its own bus's row
    assert _count_drawn(text) == n == 3 * T + 4 + 4 * T + 2 + (T - 1)
    chains = [line for line in text.splitlines() if line.strip().startswith("{rank=same;")]
    assert len(_edges(text)) + sum(line.count(" -> ") for line in chains) == e


def test_large_ends_cannot_bypass_max_nodes():
    T = 1000
    net = ug.unroll(ug.nn.LSTMCell(3, 4, seed=0), steps=T)
    out, _ = net(np.ones((T, 1, 3)))
    out.sum().backward()
    with pytest.raises(RenderError, match=r"detail='elide' with ends=400 .*would draw at least"
                                          r".*smaller ends="):
        ug.to_dot(net, ends=400)  # refused before it is built
    with pytest.raises(RenderError, match=r"detail='elide' with ends=60 .*would draw \d+ nodes"
                                          r".*smaller ends=") as err:
        ug.to_dot(net, ends=60)  # built and counted
    n = int(re.search(r"pass max_nodes=(\d+)", str(err.value)).group(1))
    assert _count_drawn(ug.to_dot(net, ends=60, max_nodes=n)) == n


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 40), st.sampled_from(["auto", "ops", "steps", "elide"]),
       st.integers(1, 12), st.integers(5, 400))
def test_no_drawing_exceeds_max_nodes(T, detail, ends, limit):
    net = ug.unroll(ug.nn.GRUCell(2, 2, seed=0), steps=T)
    out, _ = net(np.ones((T, 1, 2)))
    out.sum().backward()
    try:
        text = ug.to_dot(net, detail=detail, ends=ends, max_nodes=limit)
    except RenderError as exc:
        m = re.search(r"pass max_nodes=(\d+)", str(exc))
        if m:  # the count given is exact: with it, the drawing is made with that many nodes
            n = int(m.group(1))
            assert n > limit
            assert _count_drawn(ug.to_dot(net, detail=detail, ends=ends, max_nodes=n)) == n
        return
    assert _count_drawn(text) <= limit


def test_contributions_rows_are_the_per_step_norms():
    _, net, loss = _rnn_run(T=12)
    text = ug.to_dot(net, contributions=True, detail="steps")
    parts = net.last_run.step_contributions("weight_hh")
    norms = [float(np.sqrt(np.sum(p * p))) for p in parts]
    from unrollgraph.render import _num

    for t in (0, 5, 11):
        assert f"‖∇‖ {_num(norms[t])}<" in text


def test_tensor_and_cell_drawings_are_guarded_on_what_is_drawn():
    x = ug.tensor(0.5, requires_grad=True, name="x")
    y = x
    for _ in range(700):
        y = ug.tanh(y) * 1.0  # two ops and a constant per round
    with pytest.raises(RenderError, match=r"this graph would draw 2101 nodes and 2100 edges, "
                                          r"more than max_nodes=1500"):
        ug.to_dot(y)
    assert _count_drawn(ug.to_dot(y, max_nodes=2101)) == 2101
    # a folded cell: its output boxes count too
    cell = ug.nn.LSTMCell(2, 3, seed=0)
    n = len(cell.graph().nodes)
    with pytest.raises(RenderError, match=rf"would draw {n + 1} nodes"):
        ug.to_dot(cell, max_nodes=n)


def test_the_elided_steps_fill_is_on_the_scale_of_one_step():
    """The box standing for elided steps is filled by the root mean square of their per-step
    gradient norms, which lies between the smallest and the largest of them, never by the
    norm over all of them together (larger than every step's: the box came out hotter than
    every step it stands for)."""
    from unrollgraph.render import _THEMES, _Scale
    _, net, _ = _rnn_run(T=50)
    run = net.last_run
    per_step = [float(np.linalg.norm(run.grad(f"h@{t}"))) for t in range(2, 48)]
    rms = float(np.sqrt(np.mean(np.square(per_step))))
    total = float(np.sqrt(np.sum(np.square(per_step))))
    lo, hi = min(per_step) / 10, total * 10
    text = ug.to_dot(net, detail="elide", ends=2, color_scale=(lo, hi))
    line = next(ln for ln in text.splitlines() if ln.lstrip().startswith('"elided" ['))
    fill = re.search(r'fillcolor="(#[0-9a-f]{6})"', line).group(1)
    scale = _Scale([], _THEMES["light"]["ramp"], (lo, hi))
    assert fill == scale.colour(rms) != scale.colour(total)

"""Names in the diagrams: the loss's own name, the initial state's one name in every view."""

import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.render import _hn


def _run(cell, T, k=None):
    net = ug.unroll(cell, T, truncate=k)
    o, _ = net(np.random.default_rng(0).standard_normal((T, 1, 2)))
    loss = ug.mse_loss(o, np.zeros(o.shape))
    loss.backward()
    return net, loss


def _labels(text):
    """The HTML labels of the nodes and edges of a DOT text (what the picture shows)."""
    return "\n".join(re.findall(r"label=<(.*?)>\]?$", text, flags=re.M) +
                     re.findall(r"label=<(.*?)> ", text))


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(["J", "cost", "&amp;", "<b>", "Λ", None]),
       st.sampled_from(["ops", "steps", "textbook"]), st.integers(2, 4))
def test_a_named_loss_is_called_by_its_name_everywhere(name, detail, T):
    net, loss = _run(ug.nn.RNNCell(2, 2, seed=0), T)
    if name is not None:
        loss.name = name
    text = ug.to_dot(net, loss=loss, detail=detail)
    sym = _hn(name) if name else "L"
    shown = _labels(text)
    if name is not None and name != "L":
        # no "L" standing for the loss: not as a value, a part, a sum or a derivative
        assert not re.search(r"(^|[ >(/∂Σ])L( =|<sub>|/)", shown), shown
        assert "add up to L" not in text and "∂L/" not in text
    assert f"{sym} = " in shown
    if detail == "textbook":  # the per-step parts are J_0, J_1, ... and J = Σ_t J_t
        assert f"{sym}<sub>0</sub>" in text
        assert f"{sym} = Σ<sub>t</sub> {sym}<sub>t</sub> = " in text


@settings(max_examples=8, deadline=None)
@given(st.sampled_from(["h", "a&amp;b", "<i>s", "h0", "état"]))
def test_the_initial_state_has_one_name_in_every_view(s):
    """``{state}_init`` in text and networkx, typeset ``{state}<sub>init</sub>`` in every
    diagram (the textbook view's h_0 is the first computed state, so h0 would name the wrong
    node); the state's name exactly as written, escaped."""
    cell = ug.Cell("c")
    x = cell.input("x", (2,))
    h = cell.state(s, (2,))
    nxt = ug.tanh(x @ cell.param("W", np.eye(2) * 0.5).T + h)
    cell.feedback(h, nxt)
    cell.output("y", nxt)
    net, loss = _run(cell, 3)
    init = net.init_nodes[s]
    g = net.graph
    assert g.display_name(init) == f"{s}_init"
    assert f"\n{s}_init = init()" in "\n" + str(g)
    G = ug.to_networkx(net, loss=loss)
    assert G.nodes[g.id(init)]["name"] == f"{s}_init"
    assert f"{s}0" not in [d["name"] for _, d in G.nodes(data=True)]
    for detail in ("ops", "steps", "textbook"):
        text = ug.to_dot(net, loss=loss, detail=detail)
        line = re.search(rf'^\s*"{g.id(init)}" \[.*$', text, flags=re.M).group(0)
        assert f"<b>{_hn(s)}<sub>init</sub></b>" in line, (detail, line)
        assert f">{_hn(s + '0')}<" not in text


@settings(max_examples=8, deadline=None)
@given(st.sampled_from(["RNNCell", "LSTMCell", "GRUCell"]), st.integers(1, 45))
def test_auto_detail_keeps_the_picture_narrow_as_the_steps_grow(kind, T):
    """``detail="auto"`` weighs the width (the number of steps) as well as the node count:
    never more op clusters side by side than a slide holds."""
    from unrollgraph.render import _AUTO_OPS_STEPS

    net, loss = _run(getattr(ug.nn, kind)(2, 2, seed=0), T)
    text = ug.to_dot(net, loss=loss)
    clusters = text.count("subgraph cluster_step")
    assert clusters <= _AUTO_OPS_STEPS, (T, clusters)
    if T <= _AUTO_OPS_STEPS:  # a small net is still drawn op by op
        assert clusters == T


def test_auto_detail_on_a_long_rnn_fits_a_slide():
    import json

    net, loss = _run(ug.nn.RNNCell(2, 2, seed=0), 40)
    layout = json.loads(ug.render(net, loss=loss).pipe(format="json"))
    width = float(layout["bb"].split(",")[2])
    assert width < 4000, width  # points; all 40 op clusters were 16,900 pt

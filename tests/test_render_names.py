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

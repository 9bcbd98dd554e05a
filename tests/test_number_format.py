"""One number format in every output (:func:`unrollgraph.labels.number`).

Pictures (DOT diagrams of every view, the narrated walk's picture, the HTML stepper's
picture, TikZ) write a negative number with the minus sign U+2212; text meant to be read
back or copied (the narrated walk printed or as Markdown, the stepper's record pane) with the
ASCII hyphen-minus, and every number there parses with ``float()``. Values, gradients, local
derivatives and the signed parts of a shared weight's gradient alike (the values printed
with ``-``, the parts with ``−``, in one picture).
"""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.labels import MINUS, number

#: a sign written before a number: not after a letter, digit, "_" or "." (a name, a range)
_ASCII_SIGN = re.compile(r"(?<![\w.])-(?=\d|\.\d|inf)")
_TYPO_SIGN = re.compile(r"(?<![\w.])" + MINUS + r"(?=\d|\.\d|inf)")
_ASCII_EXP = re.compile(r"\de-\d")
_TYPO_EXP = re.compile(r"\de" + MINUS + r"\d")
_TEXT_NUMBER = re.compile(r"(?<![\w.#@])[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]\d+)?(?![\w.])")

_values = st.one_of(st.floats(-50, 50), st.floats(-1e-4, 1e-4),
                    st.sampled_from([-1.5e-7, -2.0, -0.5, 3e5, -3e5]))


def _picture_text(source: str) -> str:
    """The text a DOT source draws: its labels and tooltips, entities decoded."""
    texts = re.findall(r"(?:label|xlabel|tooltip)=(<.*?>|\"(?:[^\"\\]|\\.)*\")(?= \w+=|\]|$)",
                       source, re.S | re.M)
    out = []
    for t in texts:
        out.append(html.unescape(re.sub(r"<[^>]*>", " ", t) if t.startswith("<") else t))
    return "\n".join(out)


def _check_picture(text: str, where: str) -> None:
    assert not _ASCII_SIGN.search(text), (where, _ASCII_SIGN.search(text), text[:400])
    assert not _ASCII_EXP.search(text), (where, text[:400])


def _check_text(text: str, where: str) -> None:
    assert not _TYPO_SIGN.search(text), (where, text[:400])
    assert not _TYPO_EXP.search(text), (where, text[:400])
    for m in _TEXT_NUMBER.finditer(text):
        float(m.group(0))  # every number reads back


def _net(w, x):
    cell = ug.Cell("c")
    xin = cell.input("x", (2,))
    h = cell.state("h", (2,))
    W = cell.param("W", np.array([[w, 0.5], [-0.25, 1.0]]))
    U = cell.param("U", np.array([[0.3, x], [0.1, -0.2]]))
    h_next = ug.tanh(xin @ U.T + h @ W.T, name="h_next")
    cell.feedback(h, h_next)
    cell.output("y", h_next)
    net = ug.unroll(cell, steps=3)
    xs = np.array([[[x, -1.0]], [[0.5, w]], [[-x, 0.25]]])
    out, _ = net(xs)
    loss = (out * out).sum()
    loss.name = "L"
    loss.backward()
    return net, loss


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=_values, x=_values, b=_values)
def test_every_number_follows_the_rule_of_its_output(w, x, b):
    xt = ug.tensor(x, requires_grad=True, name="x")
    wt = ug.tensor(w, requires_grad=True, name="w")
    bt = ug.tensor(b, requires_grad=True, name="b")
    y = ug.tanh(xt * wt + bt) * -2.5
    y.name = "y"
    y.backward()
    src = ug.to_dot(y, derivatives=True, highlight=xt, chain_rule=True)
    _check_picture(_picture_text(src), "scalar")
    ex = ug.explain(y)
    _check_text(str(ex), "explain")
    _check_text(ex.to_markdown(), "markdown")
    _check_picture(_picture_text(ex._dot(None)), "explain picture")

    net, loss = _net(w, x)
    for detail in ("steps", "textbook", "ops"):
        src = ug.to_dot(net, loss=loss, detail=detail, contributions=True, max_elements=8)
        _check_picture(_picture_text(src), detail)
    _check_text(str(ug.explain(loss)), "net explain")


def test_number_is_the_one_format():
    assert number(-0.241379) == MINUS + "0.241"
    assert number(-0.241379, picture=False) == "-0.241"
    assert number(-1.5e-7, 4) == MINUS + "1.5e" + MINUS + "07"
    assert float(number(-1.5e-7, 4, picture=False)) == -1.5e-7
    assert number(0.5, signed=True) == "+0.5" and number(-0.0) == "0"


@pytest.mark.dot
def test_the_stepper_and_tikz_follow_the_picture_rule_and_the_pane_the_text_rule():
    net, loss = _net(-0.75, -1.25)
    page = ug.explain(loss).to_html()
    svg = page[page.index("<svg"):page.index("</svg>")]
    drawn = html.unescape(" ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg)))
    assert MINUS in drawn
    _check_picture(drawn, "stepper picture")
    data = json.loads(re.search(r'<script type="application/json">(.*?)</script>', page,
                                re.S).group(1))
    pane = "\n".join(f["text"] for f in data["frames"])
    assert "-0." in pane
    _check_text(pane, "stepper pane")
    tex = ug.to_tikz(net, loss=loss, detail="ops")
    shown = " ".join(re.findall(r"\\selectfont\{(.*)\}\}$", tex, re.M))
    shown = re.sub(r"\\raisebox\{-?[0-9.]+bp\}", "", shown)  # (a subscript's drop)
    assert MINUS in shown
    _check_picture(shown.replace("-{}", "-"), "tikz")


def _scaled_loss(value: float):
    """A 3-step RNN whose loss is ``value`` (its outputs squared, summed and scaled)."""
    cell = ug.nn.RNNCell(1, 1, seed=0)
    net = ug.unroll(cell, steps=3)
    out, _ = net(np.linspace(-1, 1, 3).reshape(3, 1, 1))
    base = float((out * out).sum().item())
    loss = (out * out).sum() * (value / base)
    loss.name = "L"
    loss.backward()
    return net, loss


def test_a_rounded_number_never_reads_as_exact():
    """Rounding keeps its trailing zeros (``2.00``), an exact number is written as it is
    (``2``, ``0.5``, ``0.3`` for ``0.1 + 0.2``, a float32 ``0.1``), and every number still
    reads back with ``float()`` to within its digits."""
    assert number(2.0027) == "2.00" and number(2.0) == "2"
    assert number(-0.0400012, picture=False) == "-0.0400" and number(-0.04) == MINUS + "0.04"
    assert number(100.4) == "100.4" and number(99.96) == "99.96"  # never "100" nor "100."
    assert number(0.1 + 0.2) == "0.3" and number(np.float32(0.1)) == "0.1"
    assert number(1.00003, 4, picture=False) == "1.000" and number(-1.5e-7, 4) == (
        MINUS + "1.5e" + MINUS + "07")
    assert number(123456.7) == "1.23e+05" and number(3e5) == "3e+05"
    assert number(2.0027, signed=True) == "+2.00"
    rng = np.random.default_rng(0)
    for x in np.concatenate([rng.standard_normal(200) * 10.0 ** rng.integers(-8, 8, 200),
                             np.round(rng.standard_normal(50), 2)]):
        for digits in (3, 4):
            text = number(x, digits, picture=False)
            back = float(text)
            assert abs(back - x) <= abs(x) * 10.0 ** (1 - digits), (x, text)
            mantissa = text.split("e")[0].lstrip("-").replace(".", "").lstrip("0")
            if abs(back - x) > abs(x) * 2.0 ** -24:  # rounded: every digit kept is shown
                assert len(mantissa) >= digits, (x, text)
            assert not text.split("e")[0].endswith("."), text


def test_a_loss_box_shows_that_its_value_is_rounded():
    """A loss of 2.0027 reads ``L = 2.00`` in every view's loss box (never ``L = 2``, which
    its parts would not add up to), and ``2.003`` in the narrated walk's text."""
    net, loss = _scaled_loss(2.0027)
    for detail in ("textbook", "ops", "steps"):
        drawn = _picture_text(ug.to_dot(net, loss=loss, detail=detail))
        assert "L = 2.00" in drawn, (detail, re.findall(r"L = \S+", drawn))
        assert not re.search(r"L = 2(?![.\d])", drawn), detail
    x = ug.tensor(1.0, requires_grad=True, name="x")
    ex = ug.explain(x * 2.00003)
    assert "sends 2.000 to x" in str(ex) and "| 2.000 → x |" in ex.to_markdown()
    assert "∇ 2.000" in _picture_text(ex._dot(None))

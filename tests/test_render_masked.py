"""The textbook view of a masked run (``net(xs, lengths=...)``): the cell's own structure, as
without lengths, and a note of what the mask does."""

import html
import re
import subprocess
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug

_NODE = re.compile(r'^\s*"([^"]+)" \[(.*)\]$')
_EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[(.*)\]$')


def _title(attrs: str) -> str:
    """A node's name as drawn (its first bold text), a junction's ``•``."""
    if 'shape="point"' in attrs:
        return "•"
    m = re.search(r"<b>(.*?)</b>", attrs)
    return m.group(1) if m else attrs


def _structure(text: str):
    """The drawn nodes (by name) and edges (names of both ends, label, colour) of a DOT
    text: what a reader sees, whatever the node ids."""
    names, edges = {}, []
    for line in text.splitlines():
        e = _EDGE.match(line)
        if e is None:
            m = _NODE.match(line)
            if m and m.group(1) not in ("legend",):
                names[m.group(1)] = _title(m.group(2))
            continue
        a, b, attrs = e.groups()
        if "style=invis" in attrs:
            continue
        label = re.search(r"label=<(.*?)>\]?(?: |$)", attrs)
        label = re.sub(r"<[^>]+>|&#160;", "", label.group(1)).strip() if label else ""
        colour = re.search(r'color="([^"]+)"', attrs)
        edges.append((a, b, label, colour and colour.group(1)))
    edges = Counter((names.get(a, a), names.get(b, b), lab, col) for a, b, lab, col in edges)
    return Counter(names.values()), edges


def _cell(kind: str, name: str | None = None):
    if kind == "custom":  # user names, and an output computed from the state by a weight
        cell = ug.Cell(name or "c")
        x = cell.input("x&<i>", (2,))
        h = cell.state("<b>h", (3,))
        w = cell.param("W", np.full((3, 2), 0.3))
        u = cell.param("U", np.eye(3) * 0.5)
        nxt = ug.tanh(x @ w.T + h @ u.T)
        cell.feedback(h, nxt)
        cell.output("y\"o", nxt @ cell.param("V", np.ones((2, 3)) * 0.2).T)
        return cell
    return getattr(ug.nn, kind)(2, 3, seed=0)


def _draw(kind, T, lengths, batch=None, **options):
    cell = _cell(kind)
    net = ug.unroll(cell, steps=T)
    xs = np.random.default_rng(0).normal(size=(T, batch or len(lengths), 2))
    out, _ = net(xs, lengths=lengths) if lengths is not None else net(xs)
    loss = (out * out).sum()
    loss.backward()
    options.setdefault("detail", "textbook")
    return ug.to_dot(net, loss=loss, **options), out


_KINDS = st.sampled_from(["RNNCell", "LSTMCell", "GRUCell", "custom"])
_OPTIONS = st.sampled_from([{}, {"compact": True}, {"folded": True}, {"biases": False},
                            {"values": False}])


@settings(max_examples=16, deadline=None)
@given(_KINDS, st.integers(2, 5), st.data(), _OPTIONS)
def test_a_masked_run_is_drawn_with_the_cells_own_structure(kind, T, data, options):
    lengths = data.draw(st.lists(st.integers(0, T), min_size=1, max_size=3))
    masked, _ = _draw(kind, T, lengths, **options)
    plain, _ = _draw(kind, T, None, batch=len(lengths), **options)
    nodes_m, edges_m = _structure(masked)
    nodes_p, edges_p = _structure(plain)
    assert nodes_m == nodes_p
    assert edges_m == edges_p


@settings(max_examples=10, deadline=None)
@given(_KINDS, st.integers(2, 5), st.data())
def test_the_mask_is_noted_and_the_padded_steps_marked(kind, T, data):
    lengths = data.draw(st.lists(st.integers(0, T), min_size=1, max_size=3))
    text, _ = _draw(kind, T, lengths)
    shown = html.unescape(text)
    assert f"sequence lengths {lengths}" in shown  # the title
    assert "a step past a sequence's length keeps its state and outputs 0" in shown
    for t in range(T):
        padded = [b for b, n in enumerate(lengths) if t >= n]
        x_t = re.search(rf'"n\d+" \[[^\n]*<b>[^<]*<sub>{t}</sub></b>[^\n]*tooltip="input '
                        rf'[^"]* at step {t}[";]', text)
        assert x_t is not None
        mark = f"pads sequence{'s' if len(padded) > 1 else ''} " \
               f"{', '.join(map(str, padded))}</font>"
        assert (mark in x_t.group(0)) == bool(padded), (t, padded, x_t.group(0))


@settings(max_examples=8, deadline=None)
@given(st.sampled_from(["RNNCell", "LSTMCell", "GRUCell"]), st.integers(2, 5), st.data())
def test_the_outputs_drawn_are_the_masked_runs_own(kind, T, data):
    """Values and gradients stay the masked run's: an output past a sequence's length is 0
    there, and its gradient is what the loss (sum of y squared) sends to it, 2 y."""
    lengths = data.draw(st.lists(st.integers(0, T - 1), min_size=2, max_size=3))
    text, out = _draw(kind, T, lengths)
    y = out.data
    ys = [line for line in text.splitlines() if re.match(r'\s*"n\d+_out0" \[', line)]
    assert len(ys) == T
    for t, line in enumerate(ys):
        assert f"<sub>{t}</sub>" in line
        drawn = re.search(r"v = ‖·‖ (\S+) .*∇ = ‖·‖ (\S+) ", line)
        assert drawn is not None, line
        v, g = (float(a) for a in drawn.groups())
        assert np.isclose(v, np.linalg.norm(y[t]), rtol=5e-3, atol=1e-12), (t, v)
        assert np.isclose(g, np.linalg.norm(2 * y[t]), rtol=5e-3, atol=1e-12), (t, g)
        if t >= max(lengths):
            assert v == 0 and g == 0


def test_user_names_stay_escaped_in_a_masked_run():
    """The user's names reach the HTML labels escaped, and the SVG as text, never markup,
    as in the unmasked run's picture."""
    for lengths in ([3, 1], None):
        text, _ = _draw("custom", 3, lengths, batch=2)
        labels = "\n".join(re.findall(r"label=<(.*?)>\]?(?: |$)", text, flags=re.M))
        for raw, escaped in (("x&<i>", "x&amp;&lt;i&gt;"), ("<b>h", "&lt;b&gt;h"),
                             ('y"o', "y&quot;o")):
            assert raw not in labels and escaped in labels, (raw, lengths)
        svg = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True,
                             check=True).stdout
        assert "<b>h" not in svg and "&lt;b&gt;h" in svg and "<i>" not in svg


@settings(max_examples=6, deadline=None)
@given(st.sampled_from(["RNNCell", "LSTMCell"]), st.integers(2, 4), st.data())
def test_the_steps_view_notes_the_mask_and_marks_the_padded_steps(kind, T, data):
    lengths = data.draw(st.lists(st.integers(0, T), min_size=1, max_size=3))
    cell = _cell(kind)
    net = ug.unroll(cell, steps=T)
    out, _ = net(np.random.default_rng(0).normal(size=(T, len(lengths), 2)), lengths=lengths)
    (out * out).sum().backward()
    text = ug.to_dot(net, loss=(out * out).sum(), detail="steps")
    assert f"sequence lengths {lengths}" in html.unescape(text)
    for t in range(T):
        box = next(line for line in text.splitlines() if line.lstrip().startswith(
            f'"step_{t}" ['))
        padded = [b for b, n in enumerate(lengths) if t >= n]
        assert ("pads sequence" in box) == bool(padded)
        if padded:
            assert ", ".join(map(str, padded)) + "</font>" in box


def test_an_unmasked_run_has_no_mask_note():
    text, _ = _draw("LSTMCell", 3, None, batch=2)
    assert "sequence lengths" not in text and "pads sequence" not in text


def _labels_and_fills(text: str) -> list:
    """Every node line of a DOT text without the mask's note (the title's words, the
    legend's row, a tooltip's sentence): names, numbers and fill colours as drawn."""
    out = []
    for line in text.splitlines():
        m = _NODE.match(line)
        if m is None or m.group(1) in ("legend",) or "labelloc" in line:
            continue
        attrs = re.sub(r'tooltip="[^"]*"', "", m.group(2))
        out.append((m.group(1), attrs))
    return out


@settings(max_examples=8, deadline=None)
@given(_KINDS, st.integers(2, 5), st.integers(1, 3), st.booleans())
def test_lengths_that_mask_nothing_draw_the_unmasked_picture(kind, T, batch, compact):
    """Each state shows the value its step computes and the total gradient through it (the
    step's outputs and every later step), as without lengths: a full-length mask changes no
    number and no colour of the textbook view."""
    for detail in ("textbook", "steps"):
        opts = {"compact": compact} if detail == "textbook" else {}
        masked, _ = _draw(kind, T, [T] * batch, detail=detail, **opts)
        plain, _ = _draw(kind, T, None, batch=batch, detail=detail, **opts)
        m, p = _labels_and_fills(masked), _labels_and_fills(plain)
        assert [a for _, a in m] == [a for _, a in p], detail


def test_the_ops_view_says_at_each_step_which_sequences_it_pads():
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=5)
    out, _ = net(np.random.default_rng(0).normal(size=(5, 2, 2)), lengths=[5, 3])
    (out * out).sum().backward()
    src = ug.to_dot(net, detail="ops")
    for t in range(5):
        words = "pads sequence 1" if t >= 3 else "every sequence runs"
        mask = re.search(rf"<b>mask<sub>{t}</sub></b>.*?\n", src).group(0)
        assert words in mask, (t, mask)
        x = re.search(rf"<b>x<sub>{t}</sub></b>.*?\n", src).group(0)
        assert ("pads sequence 1" in x) == (t >= 3), (t, x)

"""Diagrams as a new user meets them: every option combination passes real `dot`, truncation
greys only what gets no gradient, a loss= of the wrong run or kind is refused, names print as
typed in TikZ, the legend names shapes in words, and the command line says what it accepts."""

import re
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.cli import main
from unrollgraph.errors import RenderError
from unrollgraph.render import _THEMES
from unrollgraph.tikz import latex_text

EMPTY = re.compile(r"<(font|b|i|sub|sup|u)\b[^>]*></\1>")
CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}


def _run(kind="rnn", T=4, truncate=None, seed=0):
    net = ug.unroll(CELLS[kind](2, 2, seed=seed), steps=T, truncate=truncate)
    outs, _ = net(np.random.default_rng(seed).standard_normal((T, 1, 2)))
    loss = ug.mse_loss(outs, np.zeros(outs.shape))
    loss.backward()
    return net, loss


def _dot_ok(text):
    done = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[:500]
    assert b"Warning" not in done.stderr, done.stderr.decode()[:500]


def _node_line(text, nid):
    return next(line for line in text.splitlines() if line.strip().startswith(f'"{nid}" ['))


def _legend(text):
    return _node_line(text, "legend")


# -- 1. no empty HTML element in any label -----------------------------------------------------
@pytest.mark.dot
@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_textbook_with_contributions_passes_dot(kind):
    net, loss = _run(kind)
    g = ug.render(net, loss=loss, contributions=True, detail="textbook")
    assert g.pipe(format="svg").startswith(b"<?xml")
    assert not EMPTY.search(g.source)


@pytest.mark.dot
def test_cli_textbook_contributions_writes_the_picture(tmp_path):
    out = tmp_path / "e.svg"
    assert main(["render", "rnn", "--grad", "--detail", "textbook", "--contributions",
                 "-o", str(out)]) == 0
    assert out.read_bytes().startswith(b"<?xml")


@pytest.mark.dot
@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(sorted(CELLS)),
       detail=st.sampled_from(["auto", "ops", "steps", "elide", "textbook"]),
       contributions=st.booleans(), theme=st.sampled_from(sorted(_THEMES)),
       values=st.sampled_from([None, True, False]), derivatives=st.booleans(),
       truncate=st.sampled_from([None, 1]), folded=st.booleans(), legend=st.booleans())
def test_every_option_combination_passes_real_dot(kind, detail, contributions, theme, values,
                                                  derivatives, truncate, folded, legend):
    net, loss = _run(kind, T=5, truncate=truncate)
    # (the textbook view refuses derivatives=: tests/test_render_textbook_options.py)
    opts = dict(detail=detail, contributions=contributions, theme=theme, values=values,
                derivatives=derivatives and detail != "textbook", legend=legend, ends=1)
    if folded and detail == "textbook":
        opts["folded"] = True
    text = ug.to_dot(net, loss=loss, **opts)
    assert not EMPTY.search(text)
    _dot_ok(text)


# -- 2. truncation greys only what gets no gradient --------------------------------------------
@pytest.mark.parametrize("detail", ["steps", "ops", "textbook"])
def test_truncated_outputs_read_by_the_loss_are_not_greyed(detail):
    net, loss = _run("rnn", T=6, truncate=2)
    text = ug.to_dot(net, loss=loss, detail=detail)
    g = net.graph
    cut_fill = _THEMES["light"]["cut_fill"]
    for t in range(6):
        box = f"{g.id(net.output_nodes['y'][t])}_out0"
        line = _node_line(text, box)
        assert "dashed" not in line and cut_fill not in line, (t, line)
        assert "∇ = &#91;" in line  # its own, non-zero gradient is printed
    # the cut is on the edge from the step into the output, for the cut steps only
    into = {a: rest for a, b, rest in
            re.findall(r'^\s*"([^"]+)" -> "([^"]+)"(.*)$', text, flags=re.M)
            if b == f"{g.id(net.output_nodes['y'][0])}_out0" and "invis" not in rest}
    assert into and all("dotted" in rest for rest in into.values())
    into_last = [rest for a, b, rest in
                 re.findall(r'^\s*"([^"]+)" -> "([^"]+)"(.*)$', text, flags=re.M)
                 if b == f"{g.id(net.output_nodes['y'][5])}_out0" and "invis" not in rest]
    assert into_last and not any("dotted" in r for r in into_last)
    legend = _legend(text)
    assert "truncated BPTT sends no gradient back along it" in legend
    assert "cut off by truncation" not in legend


# -- 3. loss= must be this run's loss tensor ---------------------------------------------------
def test_a_loss_from_another_net_or_not_a_tensor_is_refused():
    net, loss = _run("rnn", T=3)
    other, loss2 = _run("rnn", T=3, seed=1)
    with pytest.raises(RenderError, match="not computed from this net's run"):
        ug.to_dot(net, loss=loss2)
    for bad in ("x", 3.0):
        with pytest.raises(RenderError, match="must be the loss Tensor"):
            ug.to_dot(net, loss=bad)
    outs, _ = net(np.ones((3, 1, 2)))  # a later run: the drawn one
    with pytest.raises(RenderError, match="earlier run"):
        ug.to_dot(net, loss=loss)
    x = ug.tensor(1.0, requires_grad=True)
    with pytest.raises(RenderError, match="unrolled net"):
        ug.to_dot(ug.tanh(x), loss=ug.tanh(x))
    ug.to_dot(net.last_run, loss=(outs * outs).sum())  # the right one is drawn


# -- 4. TikZ prints every character as typed ---------------------------------------------------
_UNDO = [(r"\textbackslash{}", "\\"), (r"\textasciicircum{}", "^"), (r"\textasciitilde{}", "~"),
         (r"\textless{}", "<"), (r"\textgreater{}", ">"), (r"\textbar{}", "|"),
         (r"\textquotesingle{}", "'"), (r"\textasciigrave{}", "`"), (r"\{", "{"), (r"\}", "}"),
         (r"\$", "$"), (r"\&", "&"), (r"\#", "#"), (r"\_", "_"), (r"\%", "%"),
         ("-{}", "-"), (",{}", ","), ("\\ ", " ")]


def _typeset(tex):
    """What LaTeX prints for the escaped text, one command at a time (the test's model)."""
    out, i = [], 0
    while i < len(tex):
        for cmd, ch in _UNDO:
            if tex.startswith(cmd, i):
                out.append(ch)
                i += len(cmd)
                break
        else:
            assert tex[i] not in "\\{}$&#^_%~", tex  # no bare special character
            out.append(tex[i])
            i += 1
    return "".join(out)


def test_tikz_name_with_ligatures_prints_as_typed():
    name = "a--b``h''i^"
    tex = latex_text(name)
    assert _typeset(tex) == name
    for lig in ("--", "``", "''", ",,", "\\^{}"):
        assert lig not in tex


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab-`',!?<>|^~\\{}$&#_% \"", max_size=24))
def test_tikz_text_of_a_hostile_alphabet_prints_as_typed(text):
    tex = latex_text(text)
    assert _typeset(tex) == text
    for lig in ("--", "``", "''", ",,", "!`", "?`", "<<", ">>"):
        assert lig not in tex


# -- 5. folded= only where it is drawn ---------------------------------------------------------
@pytest.mark.parametrize("detail", ["ops", "steps", "elide", "auto"])
def test_folded_outside_the_textbook_view_is_refused(detail):
    net, loss = _run("rnn", T=3)
    with pytest.raises(RenderError, match="folded=True .* detail='textbook'"):
        ug.to_dot(net, loss=loss, detail=detail, folded=True)
    with pytest.raises(RenderError, match="folded=True"):
        ug.to_dot(net.cell, detail="textbook", folded=True)


# -- 6, 7. shared ops and the legend -----------------------------------------------------------
def test_shared_ops_are_not_dashed_and_the_legend_names_shapes_in_words():
    net, loss = _run("rnn", T=3, truncate=1)
    text = ug.to_dot(net, loss=loss, detail="ops")
    wt = net.graph.id(next(n for n in net.graph.nodes if n.role == "shared"))
    assert "dashed" not in _node_line(text, wt)
    legend = _legend(text)
    for jargon in ("invhouse", "doubleoctagon", "(house)", "(ellipse)", "(box)"):
        assert jargon not in legend
    for words in ("pentagon, point down", "pentagon, point up", "cylinder", "oval",
                  "rounded box", "square-cornered box", "double octagon"):
        assert words in legend
    # dashed borders mean one thing: cut by truncation
    assert "dashed border: truncated BPTT sends it no gradient" in legend


_KIND_ROW = re.compile(r'<td align="right"><font[^>]*><b>([^<]*)</b></font></td>'
                       r'<td align="left"><font[^>]*>([^<]*)')


def _pictures():
    """A picture of every view and kind of node: ops, elided (constants, next states), steps,
    textbook, a masked run, a folded cell, a tensor's graph, in colour and in print."""
    out = {}
    for theme in ("light", "print"):
        for kind in ("rnn", "lstm", "gru"):
            net, loss = _run(kind, T=5, truncate=2)
            for detail in ("ops", "elide", "steps", "textbook"):
                out[theme, kind, detail] = ug.to_dot(net, loss=loss, detail=detail, ends=1,
                                                     theme=theme)
            out[theme, kind, "folded"] = ug.to_dot(net.cell, theme=theme)
        net = ug.unroll(ug.nn.GRUCell(2, 2, seed=0), steps=3)
        outs, _ = net(np.ones((3, 2, 2)), lengths=[3, 1])
        loss = (outs * outs).sum()
        loss.backward()
        out[theme, "masked", "ops"] = ug.to_dot(net, loss=loss, detail="ops", theme=theme)
        x = ug.tensor(0.5, requires_grad=True, name="x")
        y = ug.tanh(x * 2.0 + ug.tensor(1.0))
        y.backward()
        out[theme, "tensor", ""] = ug.to_dot(y, theme=theme)
    return out


def test_the_legend_tells_every_kind_of_node_apart_in_words():
    """Each node row of a legend names its shape in words no other row uses: colour alone
    (the next state, the operation and the constant were each a "rounded box", told apart
    by colour only) is lost in a greyscale print."""
    for key, text in _pictures().items():
        rows = _KIND_ROW.findall(_legend(text))
        words = [w for w, _ in rows]
        assert len(rows) >= 3 and len(set(words)) == len(words), (key, rows)


def _attrs(line):
    return dict(re.findall(r'(\w+)="([^"]*)"', re.sub(r"label=<<table.*?</table>>", "", line)))


@pytest.mark.parametrize("theme", ["light", "print"])
def test_the_op_views_legend_words_are_what_is_drawn(theme):
    """The elided view of a GRU draws every kind of rounded box: the words say what tells
    them apart as drawn (a next state's border is thicker than an op's, a constant's box is
    small, the elided steps' box is titled by their number; the elided box, said to be
    thick, was drawn with an op's border)."""
    net, loss = _run("gru", T=5)
    text = ug.to_dot(net, loss=loss, detail="elide", ends=1, theme=theme)
    g = net.graph
    words = {m: w for w, m in _KIND_ROW.findall(_legend(text))}
    assert words["next state"] == "thick rounded box"
    assert words["operation"] == "rounded box"
    assert words["constant"] == "small rounded box"
    assert words["elided steps"] == "rounded box titled … N steps …"
    assert words["op on weights alone, computed once (Wᵀ)"] == "square-cornered box"
    pen = {}
    for n in g.nodes:
        if n.step not in (0, 4) or n.op in ("input", "const"):
            continue
        a = _attrs(_node_line(text, g.id(n)))
        assert a["shape"] == "box" and "rounded" in a["style"], a
        kind = "next state" if n.role == "next_state" else "operation"
        pen.setdefault(kind, set()).add(float(a["penwidth"]))
    elided = _attrs(_node_line(text, "elided"))
    assert "bold" not in elided["style"] and "rounded" in elided["style"]
    assert re.search(r"<b>… \d+ steps …</b>", _node_line(text, "elided"))
    assert len(pen["next state"]) == 1 and len(pen["operation"]) == 1, pen
    thick, thin = pen["next state"].pop(), pen["operation"].pop()
    assert thick >= 1.6 * thin and float(elided["penwidth"]) == thin
    consts = [line for line in text.splitlines() if re.match(r'\s*"n\d+_n\d+" \[', line)]
    assert consts and all(_attrs(c)["height"] == "0.25" for c in consts)


def test_print_textbook_legend_says_the_shapes_drawn():
    net, loss = _run("rnn", T=3)
    legend = _legend(ug.to_dot(net, loss=loss, detail="textbook", theme="print"))
    assert "oval" in legend and "pentagon" not in legend and "ellipse" not in legend
    assert "double octagon" in legend


# -- 8. the command line --------------------------------------------------------------------
def test_cli_size_hint_names_the_cli_option(tmp_path, capsys):
    out = tmp_path / "x.dot"
    assert main(["render", "lstm", "--steps", "300", "--detail", "ops", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"pass --max-nodes \d+ to draw it anyway", err)
    assert "max_nodes" not in err and "--detail elide" in err and not out.exists()
    small = ["render", "lstm", "--steps", "3", "--detail", "ops", "-o", str(out)]
    assert main(small + ["--max-nodes", "50"]) == 2
    m = re.search(r"pass --max-nodes (\d+)", capsys.readouterr().err)
    assert main(small + ["--max-nodes", m.group(1)]) == 0 and out.exists()


@pytest.mark.parametrize("extra", [[], ["-f", "svg"]])
def test_cli_folder_output_is_refused(tmp_path, capsys, extra):
    assert main(["render", "rnn", *extra, "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not tmp_path.with_name(tmp_path.name + ".svg").exists()
    assert main(["render", "rnn", *extra, "-o", "/"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_cli_folded_with_truncate_is_refused(tmp_path, capsys):
    assert main(["render", "rnn", "--folded", "--truncate", "2", "-o",
                 str(tmp_path / "f.dot")]) == 2
    assert "--truncate" in capsys.readouterr().err


# -- 12. one name for the loss -----------------------------------------------------------------
def test_the_loss_is_called_l_from_the_api_and_the_cli(tmp_path):
    net, loss = _run("rnn", T=3)
    loss.name = None
    title = re.compile(r'"loss" \[[^\n]*<b>L</b>')
    for detail in ("ops", "steps", "textbook"):
        assert title.search(ug.to_dot(net, loss=loss, detail=detail)), detail
    out = tmp_path / "a.dot"
    for detail in ("ops", "textbook"):
        assert main(["render", "rnn", "--grad", "--detail", detail, "-o", str(out)]) == 0
        assert title.search(out.read_text(encoding="utf-8")), detail


# -- 11. per-step losses carry their values, or are not drawn ----------------------------------
def test_per_step_losses_show_values_that_add_up_to_the_loss():
    net, loss = _run("rnn", T=4)  # mse_loss over every output
    text = ug.to_dot(net, loss=loss, detail="textbook")
    parts = []
    for t in range(4):
        m = re.search(r"v = ([-0-9.e]+)", _node_line(text, f"loss_{t}"))
        parts.append(float(m.group(1)))
    assert np.isclose(sum(parts), loss.item(), rtol=1e-2)
    assert "L = Σ<sub>t</sub> L<sub>t</sub> = " in _node_line(text, "loss")
    outs, _ = net(np.random.default_rng(1).standard_normal((4, 1, 2)))
    mean = (outs * outs + 1.0).mean()  # a mean of per-element terms splits too
    mean.backward()
    parts = ug.view.step_losses(net, mean)
    want = [float(((outs.data[t] ** 2) + 1.0).sum() / outs.data.size) for t in range(4)]
    assert np.allclose(parts, want)


def test_a_loss_that_does_not_split_over_steps_draws_no_per_step_nodes():
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=4)
    outs, _ = net(np.random.default_rng(0).standard_normal((4, 1, 2)))
    loss = ug.tanh(outs.sum()) * 2.0  # no sum of per-step parts
    loss.backward()
    text = ug.to_dot(net, loss=loss, detail="textbook")
    assert "loss_" not in text
    into = [a for a, b in re.findall(r'^\s*"([^"]+)" -> "([^"]+)"', text, flags=re.M)
            if b == "loss"]
    assert len(into) == 4
    assert "Σ<sub>t</sub>" not in _node_line(text, "loss")


# -- 10. two wide pictures stack ---------------------------------------------------------------
@pytest.mark.dot
def test_side_by_side_stacks_wide_pictures_vertically():
    import json

    full, loss = _run("rnn", T=8)
    cut, loss_t = _run("rnn", T=8, truncate=3)
    boxes = {}
    for direction in ("auto", "vertical", "horizontal"):
        g = ug.render_side_by_side(full, cut, labels=("full", "cut"), loss=(loss, loss_t),
                                   detail="textbook", values=False, direction=direction)
        lay = json.loads(g.pipe(format="json"))
        bb = {}  # each picture's box: round its drawn nodes (its legend aside)
        for o in lay["objects"]:
            name = o.get("name", "")
            if "pos" in o and name[:3] in ("s0_", "s1_") and not name.endswith("legend") \
                    and o.get("style") != "invis":
                x, y = (float(v) for v in o["pos"].split(","))
                w, h = float(o["width"]) * 36, float(o["height"]) * 36
                box = bb.setdefault(name[:2], [x - w, y - h, x + w, y + h])
                box[:] = [min(box[0], x - w), min(box[1], y - h), max(box[2], x + w),
                          max(box[3], y + h)]
        boxes[direction] = bb
    for direction in ("auto", "vertical"):
        a, b = boxes[direction]["s0"], boxes[direction]["s1"]
        assert a[1] >= b[3] - 1  # a's bottom over b's top (y grows upwards)
    a, b = boxes["horizontal"]["s0"], boxes["horizontal"]["s1"]
    assert a[2] <= b[0] + 1  # side by side
    with pytest.raises(RenderError, match="direction"):
        ug.render_side_by_side(full, cut, direction="diagonal")


# -- 9. a 16-step figure for a slide -----------------------------------------------------------
@pytest.mark.dot
def test_compact_textbook_of_sixteen_steps_fits_a_slide(tmp_path):
    import json

    net, loss = _run("rnn", T=16)
    sizes = {}
    for compact in (False, True):
        g = ug.render(net, loss=loss, detail="textbook", theme="print", compact=compact,
                      legend=False)
        bb = [float(v) for v in json.loads(g.pipe(format="json"))["bb"].split(",")]
        sizes[compact] = bb[2] / bb[3]
        text = g.source
    assert sizes[True] < 4.6 and sizes[False] > 6
    assert "v = " not in text and "∇ = " not in text  # names only; the fill is the gradient
    assert "fillcolor=\"#ffffff\"" not in _node_line(text, net.graph.id(net.state_nodes["h"][15]))
    with pytest.raises(RenderError, match="compact=True"):
        ug.to_dot(net, loss=loss, detail="ops", compact=True)
    out = tmp_path / "s.dot"
    assert main(["render", "rnn", "--steps", "16", "--grad", "--detail", "textbook",
                 "--compact", "-o", str(out)]) == 0
    assert main(["render", "rnn", "--compact", "-o", str(out)]) == 2

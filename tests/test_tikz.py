"""TikZ export: checked by its structure, and compiled by real LaTeX engines (lualatex and
pdflatex, with pdftotext reading the text back; ./dev installs them)."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

import unrollgraph as ug
from unrollgraph.errors import RenderError
from unrollgraph.tikz import _PDFTEX, _document, latex_text

pytestmark = pytest.mark.dot


def _net():
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=3)
    out, _ = net(np.ones((3, 1, 2)))
    loss = (out * out).sum()
    loss.backward()
    return net, loss


def _balanced(text):
    depth = 0
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth < 0:
            return False
        i += 1
    return depth == 0


def test_every_shape_and_text_line_of_the_layout_is_drawn():
    net, loss = _net()
    opts = dict(loss=loss, detail="textbook", theme="print")
    tex = ug.to_tikz(net, **opts)
    assert "\\documentclass{article}" in tex
    assert tex.count("\\begin{tikzpicture}") == 1 and tex.rstrip().endswith("\\end{document}")
    layout = json.loads(ug.render(net, **opts).pipe(format="json"))
    ops = [op for o in [layout] + layout["objects"] + layout["edges"]
           for k, v in o.items() if k.startswith("_") and k.endswith("draw_") for op in v]
    texts = [op["text"] for op in ops if op["op"] == "T"]
    ellipses = [op for op in ops if op["op"] in "Ee"]
    # one \pgftext per line of text: the pieces of a line (a name and its subscript) in one
    lines = 0
    for o in [layout] + layout["objects"] + layout["edges"]:
        for k, v in o.items():
            if not (k.startswith("_") and k.endswith("draw_")):
                continue
            prev = None
            for op in v:
                if op["op"] in "EePpLBb":
                    prev = None
                if op["op"] != "T":
                    continue
                joined = prev is not None and op["align"] == prev["align"] == "l" and \
                    op["pt"][1] == prev["pt"][1] and \
                    abs(prev["pt"][0] + prev["width"] - op["pt"][0]) < 0.5
                lines += not joined
                prev = op
    assert lines < len(texts)  # (the textbook view's names have their steps in subscript)
    assert len(re.findall(r"^\\pgftext\[", tex, flags=re.M)) == lines
    assert tex.count(" ellipse [") == len(ellipses)
    for t in texts:
        assert "{" + latex_text(t) + "}" in tex
    assert "weight\\_hh" in tex and "weight\\_ih" in tex  # the edge labels
    assert _balanced(tex)
    # coordinates stay inside the layout's bounding box
    x1, y1 = (float(v) for v in layout["bb"].split(",")[2:])
    for x, y in re.findall(r"\((-?[0-9.]+),(-?[0-9.]+)\)", tex):
        assert -1 <= float(x) <= x1 + 1 and -1 <= float(y) <= y1 + 1
    body = ug.to_tikz(net, standalone=False, **opts)
    assert body.startswith("\\begin{tikzpicture}") and "documentclass" not in body


def test_a_subscript_is_set_right_after_the_text_it_follows():
    """Graphviz places each piece of a line (``h`` bold, ``0`` in subscript) where its own
    font metrics end the piece before; LaTeX's letters are narrower, and set at those places
    ``h₀`` read ``h 0`` and ``Σₜ Lₜ`` ``Σ ₜ L ₜ``. A line is one box, its pieces one after
    the other, the subscript lowered in it."""
    net, loss = _net()
    loss.name = "L"
    tex = ug.to_tikz(net, loss=loss, detail="textbook")
    lines = [line for line in tex.splitlines() if line.startswith("\\pgftext[")]
    h0 = [line for line in lines if "\\textbf{h}}}\\raisebox{" in line]
    assert h0 and all(line.endswith("\\selectfont{\\textbf{0}}}}}") or "textbf{1}" in line
                      or "textbf{2}" in line or "textbf{init}" in line for line in h0)
    total = [line for line in lines if "{L = Σ}" in line]
    assert len(total) == 1 and re.search(
        r"\{L = Σ\}\}\\raisebox\{-[0-9.]+bp\}\{\{\\color\[RGB\]\{[0-9,]+\}\\fontsize\{6.48\}"
        r"\{6.48\}\\selectfont\{t\}\}\}\{\\color\[RGB\]\{[0-9,]+\}\\fontsize\{9\}\{9\}"
        r"\\selectfont\{\\ L\}\}", total[0]), total[0]
    # no line of text is a subscript alone, set where Graphviz ended the piece before
    for line in lines:
        assert not re.match(r"\\pgftext\[[^]]*\]\{\{\\color\[RGB\]\{[0-9,]+\}"
                            r"\\fontsize\{(6.48|8.64)\}", line), line
    assert any(re.match(r"\\pgftext\[[^]]*\]\{\{\\color\[RGB\]\{[0-9,]+\}\\fontsize\{9\}",
                        line) for line in lines)  # (the pattern matches a line's start)


def test_hostile_names_are_latex_escaped():
    x = ug.tensor(1.0, requires_grad=True, name="\\Gamma_{1} & 5% #$~^")
    y = x * x
    y.backward()
    tex = ug.to_tikz(y)
    assert "\\textbackslash{}Gamma\\_\\{1\\} \\& 5\\% \\#\\$\\textasciitilde{}\\textasciicircum{}" \
        in tex
    # spaces TeX would drop (leading, trailing, in a run) are control spaces
    assert latex_text(" a  b ") == "\\ a \\ b\\ "
    assert _balanced(tex)


def test_a_diagram_is_exported_as_it_is_and_refuses_options():
    net, loss = _net()
    g = ug.render(net, loss=loss, detail="textbook")
    assert ug.to_tikz(g) == ug.to_tikz(net, loss=loss, detail="textbook")
    with pytest.raises(RenderError, match="drawn as it is"):
        ug.to_tikz(g, theme="print")
    with pytest.raises(RenderError, match="unknown render option"):
        ug.to_tikz(net, colour="red")


def test_without_dot_a_render_error(monkeypatch):
    net, loss = _net()
    monkeypatch.setenv("PATH", "/nonexistent")
    assert shutil.which("dot") is None
    with pytest.raises(RenderError, match="Graphviz"):
        ug.to_tikz(net, loss=loss)


# -- compiled by LaTeX ------------------------------------------------------------------------
#: names a user may give: LaTeX's specials, Unicode, TeX commands, ligature starters, names
#: that look like ids the diagram generates
_HOSTILE = ["\\Gamma", "{a}", "$x$", "a&b", "#1", "x^2", "y_t", "50%", "~z", "n2", "n0",
            "loss", "legend", "n1_out0", "∇L", "Σ", "Wᵀ", "αβγ", "Ω_t", "a--b", "''q''", "`q`",
            "<b>", "|x|", "ü", "a\\\\b", "it's", "!`", ",,q", "h₀", "\\relax}", "a  b"]


def _tools():
    missing = [t for t in ("lualatex", "pdflatex", "pdftotext") if shutil.which(t) is None]
    assert not missing, (
        f"{', '.join(missing)} missing: './dev test' installs them, or run 'sudo apt-get "
        "install -y --no-install-recommends texlive-latex-base texlive-pictures "
        "texlive-luatex poppler-utils'")


def _compile(tex: str, engine: str, tmp_path) -> list[str]:
    """Compile ``tex`` with ``engine``; the text of each page of the PDF (pdftotext)."""
    _tools()
    d = tmp_path / engine
    d.mkdir()
    (d / "f.tex").write_text(tex, encoding="utf-8")
    r = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "f.tex"],
                       cwd=d, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    log = (d / "f.log").read_text(encoding="utf-8", errors="replace")
    assert "Missing character" not in log  # every character had a glyph
    info = subprocess.run(["pdfinfo", str(d / "f.pdf")], capture_output=True, text=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, flags=re.M).group(1))
    return [subprocess.run(["pdftotext", "-raw", "-f", str(p), "-l", str(p), str(d / "f.pdf"), "-"],
                           capture_output=True, text=True, check=True).stdout
            for p in range(1, pages + 1)]


def _flat(text: str) -> str:
    return " ".join(text.split())


def _texts(diagram) -> list[str]:
    layout = json.loads(diagram.pipe(format="json"))
    return [op["text"] for o in [layout] + layout.get("objects", []) + layout.get("edges", [])
            for k, v in o.items() if k.startswith("_") and k.endswith("draw_") for op in v
            if op["op"] == "T" and op["text"].strip()]


def _hostile_figure():
    terms = [ug.tensor(1.0 + k, requires_grad=True, name=nm) for k, nm in enumerate(_HOSTILE)]
    y = ug.stack(terms).sum()
    y.backward()
    return ug.render(y, legend=False, values=False, grads=False)


def _figures():
    """The textbook and ops views of an RNN and an LSTM, and the hostile names' figure (the
    first with values and legend, every symbol they print; the others lighter, as TikZ sets
    some hundred nodes a second)."""
    out = []
    for cell in (ug.nn.RNNCell(2, 2, seed=0), ug.nn.LSTMCell(2, 2, seed=0)):
        net = ug.unroll(cell, steps=2)
        outs, _ = net(np.ones((2, 1, 2)))
        loss = (outs * outs).sum()
        loss.backward()
        for detail in ("textbook", "ops"):
            light = {} if not out else {"values": False, "grads": False, "legend": False}
            out.append(ug.render(net, loss=loss, detail=detail, **light))
    out.append(_hostile_figure())
    return out


@pytest.fixture(scope="module")
def figures():
    return _figures()


def _one_document(figures) -> str:
    """All figures in one document, a page each (one engine start for all of them)."""
    bodies = [ug.to_tikz(f, standalone=False) for f in figures]
    sizes = [json.loads(f.pipe(format="json"))["bb"].split(",") for f in figures]
    size = (max(float(s[2]) for s in sizes), max(float(s[3]) for s in sizes))
    return _document("\\newpage\n\\noindent\n".join(bodies), size)


@pytest.mark.latex
def test_views_and_hostile_names_compile_with_lualatex_and_read_back_as_written(figures,
                                                                                 tmp_path):
    pages = _compile(_one_document(figures), "lualatex", tmp_path)
    assert len(pages) == len(figures)
    for fig, page in zip(figures, pages):
        flat = _flat(page)
        for text in _texts(fig):  # every text line of the layout, character for character
            assert _flat(text) in flat, (text, page[:500])
    hostile = _flat(pages[-1])
    for name in _HOSTILE:
        assert _flat(name) in hostile, name
    assert "weight_hh" in _flat(pages[0]) and "weight_ih" in _flat(pages[2])


@pytest.mark.latex
def test_textbook_views_and_hostile_names_compile_with_pdflatex(figures, tmp_path):
    figures = [figures[0], figures[-1]]  # a textbook view, the hostile names
    tex = _one_document(figures)
    pages = _compile(tex, "pdflatex", tmp_path)
    assert len(pages) == len(figures)
    # pdflatex sets the symbols through LaTeX commands (∇ as \nabla, ᵀ as a superscript T):
    # the names of ASCII and Latin-1 read back as written, the others are declared
    hostile = _flat(pages[-1])
    for name in _HOSTILE:
        if all(ord(c) < 256 for c in name):
            assert _flat(name) in hostile, name
    for c in {c for f in figures for t in _texts(f) for c in t if ord(c) >= 256}:
        assert c in _PDFTEX and f"\\DeclareUnicodeCharacter{{{ord(c):04X}}}" in tex, c
    assert "weight_hh" in _flat(pages[0]) and "weight_ih" in _flat(pages[0])


@pytest.mark.latex
def test_a_standalone_document_is_one_page_the_size_of_the_layout(tmp_path):
    net = ug.unroll(ug.nn.GRUCell(2, 2, seed=0), steps=2)
    outs, _ = net(np.ones((2, 1, 2)))
    (outs * outs).sum().backward()
    diagram = ug.render(net, detail="textbook", theme="print", legend=False)
    tex = ug.to_tikz(diagram)
    pages = _compile(tex, "pdflatex", tmp_path)
    assert len(pages) == 1 and "weight_hh" in pages[0]
    info = subprocess.run(["pdfinfo", str(tmp_path / "pdflatex" / "f.pdf")],
                          capture_output=True, text=True).stdout
    w, h = (float(v) for v in re.search(r"Page size:\s+([0-9.]+) x ([0-9.]+)", info).groups())
    bb = [float(v) for v in json.loads(diagram.pipe(format="json"))["bb"].split(",")]
    assert abs(w - bb[2]) < 0.5 and abs(h - bb[3]) < 0.5


def test_every_symbol_the_diagrams_write_has_a_pdflatex_spelling():
    """The modules that write labels hold no character above Latin-1 that the pdflatex
    preamble could not declare (a new symbol in a label needs its LaTeX command)."""
    import pathlib

    import unrollgraph

    root = pathlib.Path(unrollgraph.__file__).parent
    for name in ("render.py", "textbook.py", "view.py"):
        text = (root / name).read_text(encoding="utf-8")
        assert not sorted({c for c in text if ord(c) >= 256} - set(_PDFTEX)), name


@pytest.mark.latex
def test_a_picture_input_into_a_lualatex_paper_keeps_its_symbols_with_the_documented_lines(
        tmp_path):
    """The preamble lines docs/gallery.md gives for a standalone=False picture in a lualatex
    paper set every symbol (∇, ᵀ, ∂ ...): the log has no missing character and the text
    reads back; without them the paper's font drops the symbols."""
    import pathlib

    doc = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "gallery.md").read_text()
    section = doc[doc.index("**A picture in a paper"):]
    preamble, use = re.findall(r"```latex\n(.*?)```", section, re.S)[:2]
    net = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=2)
    outs, _ = net(np.ones((2, 1, 2)))
    (outs * outs).sum().backward()
    (tmp_path / "lualatex").mkdir()
    (tmp_path / "lualatex" / "figure.tex").write_text(ug.to_tikz(net, standalone=False),
                                                      encoding="utf-8")
    use = use.split("% or ")[1]  # the picture scaled to the text width: on one page
    tex = ("\\documentclass{article}\n" + preamble + "\\begin{document}\nText.\n\n"
           + use + "\n\\end{document}\n")
    d = tmp_path / "lualatex"
    (d / "f.tex").write_text(tex, encoding="utf-8")
    _tools()
    r = subprocess.run(["lualatex", "-interaction=nonstopmode", "-halt-on-error", "f.tex"],
                       cwd=d, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "Missing character" not in (d / "f.log").read_text(errors="replace")
    text = subprocess.run(["pdftotext", str(d / "f.pdf"), "-"], capture_output=True,
                          text=True, check=True).stdout
    assert "∇" in text and "ᵀ" in text and "∂" in text

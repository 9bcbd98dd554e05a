"""Diagrams as LaTeX/TikZ pictures for papers.

:func:`to_tikz` lays the diagram out with Graphviz (``dot -Tjson``, which gives every shape,
curve, arrowhead and piece of text as drawing operations at its final position) and writes each
operation as one TikZ command, each line of text as one box (a name and its subscript set one
after the other, as LaTeX measures them), so the picture in the paper is the picture on the
screen, with its numbers as text that LaTeX sets.

The standalone document needs only LaTeX's base classes, TikZ and ``geometry`` (the page is
the picture's size). It compiles with ``lualatex`` (any character: the labels are set in
Liberation Sans, the font Graphviz measured them in, falling back to DejaVu Sans for symbols
such as ∇), ``xelatex`` (DejaVu Sans), or ``pdflatex``, for which every non-ASCII character of
the picture that LaTeX's ``utf8`` input does not know (∇, ‖, Greek, sub- and superscripts,
arrows) is declared with the LaTeX command that prints it; a character with no such command
(CJK, emoji) needs ``lualatex``.
"""

from __future__ import annotations

import json

from .errors import RenderError

__all__ = ["to_tikz"]

_LATEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&",
          "#": r"\#", "^": r"\textasciicircum{}", "_": r"\_", "%": r"\%",
          "~": r"\textasciitilde{}", "<": r"\textless{}", ">": r"\textgreater{}",
          "|": r"\textbar{}", "'": r"\textquotesingle{}", "`": r"\textasciigrave{}"}
#: characters that start a TeX ligature (``--`` an en dash, ``,,`` a low quote): each is
#: followed by ``{}``, which ends any ligature (quotes are written as straight-quote commands,
#: since TeX fonts print a lone ' or ` curly)
_LIGATURE = set("-,")
_NAMED = {"white": (255, 255, 255), "black": (0, 0, 0)}
_ALIGN = {"l": "base,left", "c": "base", "r": "base,right"}

#: pdflatex spellings of the non-ASCII characters labels use (and of Greek, sub- and
#: superscript digits), declared in the standalone document's preamble when the picture holds
#: them; Latin-1 letters need none (``inputenc`` and T1 fonts set them)
_GREEK = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
          "rho varsigma sigma tau upsilon phi chi psi omega").split()
_PDFTEX = {
    "∇": r"\ensuremath{\nabla}", "∂": r"\ensuremath{\partial}", "‖": r"\ensuremath{\|}",
    "∑": r"\ensuremath{\sum}", "√": r"\ensuremath{\surd}", "∞": r"\ensuremath{\infty}",
    "≈": r"\ensuremath{\approx}", "≤": r"\ensuremath{\leq}", "≥": r"\ensuremath{\geq}",
    "≠": r"\ensuremath{\neq}", "±": r"\ensuremath{\pm}", "·": r"\ensuremath{\cdot}",
    "×": r"\ensuremath{\times}", "∘": r"\ensuremath{\circ}", "⊙": r"\ensuremath{\odot}",
    "−": r"\ensuremath{-}", "→": r"\ensuremath{\rightarrow}", "←": r"\ensuremath{\leftarrow}",
    "⟹": r"\ensuremath{\Longrightarrow}", "⋯": r"\ensuremath{\cdots}",
    "⋮": r"\ensuremath{\vdots}", "…": r"\ensuremath{\ldots}", "⁻": r"\textsuperscript{-}",
    "ᵀ": r"\textsuperscript{T}", "ⁿ": r"\textsuperscript{n}", "■": r"\rule{0.55em}{0.55em}",
    "━": r"\rule[0.25em]{1em}{0.15em}", "▭": r"\fbox{\rule{0.8em}{0pt}}",
    "⟨": r"\ensuremath{\langle}", "⟩": r"\ensuremath{\rangle}",
    "✓": r"\ensuremath{\surd}",  # a kept state (checkpoint=); no package needed
}
#: capitals that look like Latin letters are printed as those letters (as in math)
_LATIN_CAPITALS = {"alpha": "A", "beta": "B", "epsilon": "E", "zeta": "Z", "eta": "H",
                   "iota": "I", "kappa": "K", "mu": "M", "nu": "N", "omicron": "O", "rho": "P",
                   "tau": "T", "chi": "X"}
for _k, _g in enumerate(_GREEK):
    _PDFTEX[chr(0x3B1 + _k)] = "o" if _g == "omicron" else r"\ensuremath{\%s}" % _g
    if _g != "varsigma":  # (no capital final sigma)
        _PDFTEX[chr(0x391 + _k)] = _LATIN_CAPITALS.get(_g) or r"\ensuremath{\%s}" % (
            _g[0].upper() + _g[1:])
for _k, _d in enumerate("₀₁₂₃₄₅₆₇₈₉"):
    _PDFTEX[_d] = r"\textsubscript{%d}" % _k
for _k, _d in enumerate("⁰¹²³⁴⁵⁶⁷⁸⁹"):
    _PDFTEX[_d] = r"\textsuperscript{%d}" % _k



def to_tikz(obj, standalone: bool = True, **options) -> str:
    """Return the diagram of ``obj`` as a TikZ picture (LaTeX source).

    Parameters
    ----------
    obj : Tensor, Cell, Unrolled, Run, or a diagram from :func:`render` / ``render_side_by_side``
        What to draw.
    standalone : bool
        ``True`` (default): a whole document (``article`` with a page the size of the
        picture) that compiles on its own with lualatex, xelatex or pdflatex, needing only
        TikZ and ``geometry`` (Debian: ``texlive-latex-base texlive-pictures``, and
        ``texlive-luatex`` for lualatex); ``False``: only the ``tikzpicture`` environment,
        to paste into a paper (which loads ``tikz``).
    **options
        The options of :func:`to_dot` (``detail="textbook"``, ``theme="print"``,
        ``color_scale=``...); not allowed with a diagram, which is drawn as it is.

    Returns
    -------
    str
        LaTeX source; coordinates are in points (``bp``), as Graphviz laid them out.
        ``lualatex`` sets any character a font on the system has; ``pdflatex`` sets ASCII,
        Latin-1 and the symbols the preamble declares (∇, ‖, Greek, sub- and superscripts,
        arrows). Pasting the ``standalone=False`` picture into a pdflatex paper, copy those
        ``\\DeclareUnicodeCharacter`` lines of the standalone document into its preamble;
        into a lualatex paper, set it in a font with a fallback for the symbols (the paper's
        Latin Modern has no ∇, ᵀ, ∂: LaTeX only warns and drops them), with the preamble
        lines given in docs/gallery.md ("A picture in a paper").

    Raises
    ------
    RenderError
        For the options :func:`to_dot` refuses, options given with a diagram, or when
        Graphviz's ``dot`` is missing or fails (it does the layout).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor(0.5, requires_grad=True, name="x")
    >>> y = ug.tanh(x * x)
    >>> y.backward()
    >>> tex = ug.to_tikz(y, theme="print")
    >>> "\\\\documentclass{article}" in tex
    True
    >>> "\\\\begin{tikzpicture}" in tex and "{x}" in tex
    True
    """
    from .render import render

    if hasattr(obj, "pipe") and hasattr(obj, "source"):
        if options:
            raise RenderError(
                f"to_tikz: a diagram is drawn as it is, so options ({', '.join(options)}) "
                "cannot be applied to it; pass the net (or tensor, or cell) instead"
            )
        diagram = obj
    else:
        diagram = render(obj, **options)
    if not isinstance(standalone, bool):
        raise RenderError(f"standalone must be True or False, got {standalone!r}")
    if not hasattr(diagram, "pipe"):  # pragma: no cover - render always returns a diagram
        raise RenderError("to_tikz needs a diagram")
    layout = json.loads(diagram.pipe(format="json").decode("utf-8"))
    body = _picture(layout)
    if not standalone:
        return body
    return _document(body, _bbox(layout))


def _bbox(layout: dict) -> tuple[float, float]:
    """Width and height of the layout (points)."""
    try:
        x0, y0, x1, y1 = (float(v) for v in layout["bb"].split(","))
    except (KeyError, ValueError):  # pragma: no cover - dot always writes bb
        return 1.0, 1.0
    return max(x1 - x0, 1.0), max(y1 - y0, 1.0)


def _document(body: str, size: tuple[float, float]) -> str:
    """``body`` as a document whose page is the picture: lualatex, xelatex or pdflatex."""
    used = sorted({c for c in body if c in _PDFTEX})
    declare = "".join(f"  \\DeclareUnicodeCharacter{{{ord(c):04X}}}{{{_PDFTEX[c]}}}\n"
                      for c in used)
    w, h = (_n(v) for v in size)
    return (
        "% an unrollgraph diagram: compile with lualatex, xelatex or pdflatex (pdflatex sets\n"
        "% ASCII, Latin-1 and the characters declared below; the others need lualatex)\n"
        "\\documentclass{article}\n"
        "\\usepackage{iftex}\n"
        "\\ifPDFTeX\n"
        "  \\usepackage{lmodern}\n"
        "  \\usepackage[T1]{fontenc}\n"
        "  \\usepackage[utf8]{inputenc}\n"
        "  \\renewcommand{\\familydefault}{\\sfdefault}\n"
        + declare +
        "\\else\n"
        "  \\usepackage{fontspec}\n"
        "  % TeX's ligatures off (a name's -- stays two hyphens); Liberation Sans is the font\n"
        "  % Graphviz measured the labels in, DejaVu Sans sets the symbols it lacks (nabla)\n"
        "  \\IfFontExistsTF{DejaVu Sans}{\\ifLuaTeX\n"
        "    \\directlua{luaotfload.add_fallback(\"unrollgraph\", {\"DejaVu Sans:mode=node;\"})}\n"
        "    \\IfFontExistsTF{Liberation Sans}{\\setmainfont{Liberation Sans}%\n"
        "      [Ligatures=TeXOff, RawFeature={fallback=unrollgraph}]}%\n"
        "      {\\setmainfont{DejaVu Sans}[Ligatures=TeXOff]}\n"
        "  \\else\\setmainfont{DejaVu Sans}[Ligatures=TeXOff]\\fi}%\n"
        "  {\\setmainfont{Latin Modern Sans}[Ligatures=TeXOff]}\n"
        "\\fi\n"
        "\\usepackage{tikz}\n"
        f"\\usepackage[paperwidth={w}bp,paperheight={h}bp,margin=0pt]{{geometry}}\n"
        "\\pagestyle{empty}\n"
        "\\begin{document}\n"
        "\\noindent\n" + body + "\\end{document}\n")


def _picture(layout: dict) -> str:
    w, h = _bbox(layout)
    out = ["\\begin{tikzpicture}[x=1bp, y=1bp, line cap=round, line join=round]\n",
           f"\\useasboundingbox (0,0) rectangle {_pt((w, h))};\n"]
    pen = _Pen()
    out += pen.run(layout.get("_draw_", []))
    objects = layout.get("objects", [])
    clusters = [o for o in objects if "nodes" in o or "edges" in o]
    nodes = [o for o in objects if o not in clusters]
    for o in clusters:
        out += pen.run(o.get("_draw_", []) + o.get("_ldraw_", []))
    for e in layout.get("edges", []):
        for key in ("_draw_", "_hdraw_", "_tdraw_", "_ldraw_", "_xldraw_", "_hldraw_",
                    "_tldraw_"):
            out += pen.run(e.get(key, []))
    for o in nodes:
        out += pen.run(o.get("_draw_", []) + o.get("_ldraw_", []))
    out += pen.run(layout.get("_ldraw_", []))
    out.append("\\end{tikzpicture}\n")
    return "".join(out)


def _rgb(colour: str):
    """``(r, g, b)`` of a Graphviz colour, or None when it is transparent."""
    c = colour.strip().lower()
    if c in ("transparent", "none", ""):
        return None
    if c.startswith("#") and len(c) in (7, 9):
        if len(c) == 9 and c[7:9] == "00":
            return None
        return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)
    return _NAMED.get(c, (0, 0, 0))


def _col(rgb) -> str:
    return "{rgb,255:red,%d;green,%d;blue,%d}" % rgb


def _n(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _pt(p) -> str:
    return f"({_n(p[0])},{_n(p[1])})"


def latex_text(text: str) -> str:
    """``text`` with LaTeX's special characters escaped and its ligatures broken, so every
    character prints as typed (``--`` stays two hyphens, ``````, ``''`` stay straight).

    Examples
    --------
    >>> latex_text("\\\\Gamma_{t} & 50%")
    '\\\\textbackslash{}Gamma\\\\_\\\\{t\\\\} \\\\& 50\\\\%'
    >>> latex_text("a--b^")
    'a-{}-{}b\\\\textasciicircum{}'
    """
    out = []
    for k, c in enumerate(text):
        if c == " " and (k == 0 or k == len(text) - 1 or text[k - 1] == " "):
            out.append("\\ ")  # a space TeX would drop (leading, trailing, or in a run)
        else:
            out.append(_LATEX.get(c, c + "{}" if c in _LIGATURE else c))
    return "".join(out)


class _Pen:
    """The drawing state of Graphviz's xdot operations, written as TikZ commands."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.stroke = (0, 0, 0)
        self.fill = None
        self.width = 1.0
        self.dash = None
        self.size = 14.0
        self.bold = self.italic = self.sub = self.sup = False

    def style(self, filled: bool) -> str:
        opts = []
        if self.stroke is not None:
            opts.append("draw=" + _col(self.stroke))
        if filled and self.fill is not None:
            opts.append("fill=" + _col(self.fill))
        opts.append(f"line width={_n(self.width)}pt")
        if self.dash:
            opts.append(self.dash)
        return ", ".join(opts)

    def shape(self, path: str, filled: bool) -> list[str]:
        if self.stroke is None and not (filled and self.fill is not None):
            return []
        return [f"\\path[{self.style(filled)}] {path};\n"]

    def run(self, ops: list) -> list[str]:
        out: list[str] = []
        line: list = []  # the pieces of one line of text (see :meth:`continues`)
        self.reset()
        for op in ops:
            kind = op.get("op")
            if line and kind in ("E", "e", "P", "p", "L", "B", "b"):
                out.append(self.text(line))
                line = []
            if kind == "c":
                self.stroke = _rgb(op.get("color", "black"))
            elif kind == "C":
                self.fill = _rgb(op.get("color", "black"))
            elif kind == "S":
                self.set_style(op.get("style", ""))
            elif kind == "F":
                self.size = float(op.get("size", 14.0))
            elif kind == "t":
                flags = int(op.get("fontchar", 0))
                # xdot's font flags: 1 bold, 2 italic, 8 superscript, 16 subscript
                self.bold, self.italic = bool(flags & 1), bool(flags & 2)
                self.sup, self.sub = bool(flags & 8), bool(flags & 16)
            elif kind in ("E", "e"):
                x, y, w, h = op["rect"]
                out += self.shape(f"({_n(x)},{_n(y)}) ellipse [x radius={_n(w)}, "
                                  f"y radius={_n(h)}]", kind == "E")
            elif kind in ("P", "p", "L"):
                pts = " -- ".join(_pt(p) for p in op["points"])
                out += self.shape(pts + (" -- cycle" if kind != "L" else ""), kind == "P")
            elif kind in ("B", "b"):
                pts = op["points"]
                path = _pt(pts[0])
                for k in range(1, len(pts) - 2, 3):
                    path += (f" .. controls {_pt(pts[k])} and {_pt(pts[k + 1])} .. "
                             f"{_pt(pts[k + 2])}")
                out += self.shape(path + (" -- cycle" if kind == "B" else ""), kind == "B")
            elif kind == "T":
                piece = (op, self.stroke or (0, 0, 0), self.size, self.bold, self.italic,
                         self.sub, self.sup)
                if line and not _continues(line[-1][0], op):
                    out.append(self.text(line))
                    line = []
                line.append(piece)
        if line:
            out.append(self.text(line))
        return out

    def set_style(self, style: str) -> None:
        if style.startswith("setlinewidth("):
            try:
                self.width = float(style[len("setlinewidth("):-1])
            except ValueError:
                pass
        elif style == "dashed":
            self.dash = "dashed"
        elif style == "dotted":
            self.dash = "dotted"
        elif style == "solid":
            self.dash = None
        elif style == "bold":
            self.width = 2.0

    def text(self, line: list) -> str:
        """One line of text: its pieces (Graphviz gives a label's line as one piece per
        font, colour and sub- or superscript, each at the place its own metrics put it) set
        one after the other in one box from the line's start, so that LaTeX's narrower
        letters leave no gap before a subscript (``h₀``, ``Σₜ Lₜ``)."""
        first = line[0][0]
        x, y = first["pt"]
        parts = []
        for op, colour, size, bold, italic, sub, sup in line:
            text = latex_text(op.get("text", ""))
            if bold:
                text = f"\\textbf{{{text}}}"
            if italic:
                text = f"\\textit{{{text}}}"
            rise = 0.0
            if sub or sup:  # set smaller, below or above the line's baseline
                rise = -0.25 * size if sub else 0.4 * size
                size *= 0.72
            part = (f"{{\\color[RGB]{{{','.join(map(str, colour))}}}"
                    f"\\fontsize{{{_n(size)}}}{{{_n(size)}}}\\selectfont{{{text}}}}}")
            if len(line) == 1:
                y += rise  # (a line of one piece: its baseline moved, as before)
            elif rise:
                part = f"\\raisebox{{{_n(rise)}bp}}{{{part}}}"
            parts.append(part)
        anchor = _ALIGN.get(first.get("align", "c"), "base")
        # pgf's own text command: what a TikZ node would draw, with less work per label
        return (f"\\pgftext[{anchor},at={{\\pgfqpoint{{{_n(x)}bp}}{{{_n(y)}bp}}}}]"
                f"{{{''.join(parts)}}}\n")


def _continues(prev: dict, op: dict) -> bool:
    """Whether text piece ``op`` continues the line of piece ``prev``: both set from the
    left, on one baseline, ``op`` starting where ``prev`` ends (Graphviz's width)."""
    if prev.get("align", "c") != "l" or op.get("align", "c") != "l" or "width" not in prev:
        return False
    (x0, y0), (x1, y1) = prev["pt"], op["pt"]
    return abs(y1 - y0) < 0.01 and abs(x0 + float(prev["width"]) - x1) < 0.5

"""Diagrams as LaTeX/TikZ pictures for papers.

:func:`to_tikz` lays the diagram out with Graphviz (``dot -Tjson``, which gives every shape,
curve, arrowhead and text line as drawing operations at its final position) and writes each
operation as one TikZ command, so the picture in the paper is the picture on the screen, with
its numbers as text that LaTeX sets. The labels hold Unicode (∇, ‖, subscripts): compile with
``lualatex`` or ``xelatex``.
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
_ALIGN = {"l": "base west", "c": "base", "r": "base east"}


def to_tikz(obj, standalone: bool = True, **options) -> str:
    """Return the diagram of ``obj`` as a TikZ picture (LaTeX source).

    Parameters
    ----------
    obj : Tensor, Cell, Unrolled, Run, or a diagram from :func:`render` / ``render_side_by_side``
        What to draw.
    standalone : bool
        ``True`` (default): a whole document (``\\documentclass[tikz]{standalone}``) that
        compiles on its own; ``False``: only the ``tikzpicture`` environment, to paste into a
        paper (which loads ``tikz``).
    **options
        The options of :func:`to_dot` (``detail="textbook"``, ``theme="print"``,
        ``color_scale=``...); not allowed with a diagram, which is drawn as it is.

    Returns
    -------
    str
        LaTeX source; coordinates are in points, as Graphviz laid them out. Compile with
        ``lualatex`` or ``xelatex`` (the labels hold Unicode).

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
    >>> tex.startswith("\\\\documentclass[tikz]{standalone}")
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
    return ("\\documentclass[tikz]{standalone}\n"
            "% labels hold Unicode (∇, ‖, subscripts): compile with lualatex or xelatex\n"
            "\\usepackage{iftex}\n"
            "\\ifPDFTeX\\usepackage[utf8]{inputenc}\\else\\usepackage{fontspec}\\fi\n"
            "\\begin{document}\n" + body + "\\end{document}\n")


def _picture(layout: dict) -> str:
    out = ["\\begin{tikzpicture}[x=1pt, y=1pt, line cap=round, line join=round]\n"]
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
    return "".join(_LATEX.get(c, c + "{}" if c in _LIGATURE else c) for c in text)


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
        self.bold = self.italic = False

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
        self.reset()
        for op in ops:
            kind = op.get("op")
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
                self.bold, self.italic = bool(flags & 1), bool(flags & 2)
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
                out.append(self.text(op))
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

    def text(self, op: dict) -> str:
        colour = self.stroke or (0, 0, 0)
        text = latex_text(op.get("text", ""))
        if self.bold:
            text = f"\\textbf{{{text}}}"
        if self.italic:
            text = f"\\textit{{{text}}}"
        size = _n(self.size)
        anchor = _ALIGN.get(op.get("align", "c"), "base")
        return (f"\\node[anchor={anchor}, inner sep=0pt, text={_col(colour)}, "
                f"font=\\fontsize{{{size}}}{{{size}}}\\selectfont] at {_pt(op['pt'])} "
                f"{{{text}}};\n")

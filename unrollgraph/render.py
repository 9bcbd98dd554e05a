"""Graphviz diagrams of graphs, folded cells and unrolled nets, with their gradients.

:func:`to_dot` builds the DOT text as plain strings (no ``dot`` program needed), so it can be
tested, diffed and kept as a golden file; :func:`render` wraps the same text in a
``graphviz.Digraph`` whose ``.render(name, format="svg")`` writes a file and which displays
inline in Jupyter.

Everything is read through :func:`unrollgraph.view.view`: node ids are the graph's stable ids
(``n0, n1, ...``), so the same graph always gives byte-identical DOT text. Every user-given
name goes through HTML escaping before it reaches a label, so no name can add DOT statements.

Pictures, by the kind of object:

* a Tensor: its history, one node per op, left to right, the output on the right;
* a Cell (folded): the body with the recurrent edge drawn back from the next state to the
  state, labelled as a one-step delay z⁻¹;
* an unrolled net: one cluster per step (t = 0 ... T-1) with time flowing left to right,
  each step's inputs at the bottom of its cluster, outputs and the loss at the top, each state
  leaving its step through a bend in it and entering the next step level, every shared
  parameter drawn once, left of the first step at the end of its bus, its fan-out edges
  dashed. Long unrolls switch to one box per step (``detail="steps"``) or to the first and
  last steps with an elision node (``detail="elide"``).

After a backward pass each node shows its gradient and is filled by the gradient's norm on one
log-scale for the whole picture (the colour bar is in the legend); for an unrolled net's run
the scale is the run's, the same in every view of it (textbook, steps, ops, elided).
"""

from __future__ import annotations

import math
import re

import numpy as np

from .checkpoint import kept_steps
from .errors import RenderError
from .graph import Node
from .labels import MINUS, OP_SYMBOLS, index_text, number, op_label
from .tensor import Tensor
from .view import GraphView, loss_runs, reads, view

__all__ = ["render", "to_dot", "render_side_by_side", "OPTIONS"]

#: Every option :func:`to_dot` and :func:`render` accept, with its default.
OPTIONS = {
    "detail": "auto",
    "values": None,
    "grads": None,
    "contributions": False,
    "derivatives": False,
    "chain_rule": False,
    "highlight": None,
    "loss": None,
    "theme": "light",
    "legend": True,
    "ends": 2,
    "max_nodes": 1500,
    "max_elements": 4,
    "title": None,
    "rankdir": None,
    "biases": True,
    "folded": False,
    "compact": False,
    "color_scale": None,
    "fontsize": None,
    "scale": 1.0,
}

_DETAILS = ("auto", "ops", "steps", "elide", "textbook")
#: below this many nodes ``detail="auto"`` draws every op of an unrolled net.
_AUTO_OPS = 300
#: up to this many steps ``detail="auto"`` draws one box per step before eliding.
_AUTO_STEPS = 24
#: up to this many steps ``detail="auto"`` may draw every op: each step is a column of ops
#: about 300-500 pt wide, so 6 steps already fill a wide slide (an RNN: about 2,700 pt)
_AUTO_OPS_STEPS = 6
#: a drawing whose lower bound of nodes is this many times ``max_nodes`` is refused before it
#: is built; smaller ones are built (linear, Python only) and their exact size checked.
_EARLY = 10

_THEMES = {
    "light": {
        "bg": "white", "font": "#1f2328", "muted": "#6e7781", "edge": "#57606a",
        "shared_edge": "#a371f7", "recurrent": "#1d4ed8", "cluster": "#d0d7de",
        "cluster_bg": "#f6f8fa", "nofill": "white", "cut_fill": "#eaeef2", "cut_font": "#8c959f",
        "highlight": "#cf222e", "stop": "#1f2328",
        "param": "#8250df", "input": "#1a7f37", "leaf": "#1a7f37", "state": "#1d4ed8",
        "output": "#bc4c00", "op": "#57606a", "shared": "#8250df", "const": "#6e7781",
        "call": "#57606a", "loss": "#cf222e", "part": "#cf222e", "elide": "#57606a",
        "step": "#1d4ed8",
        "zero": "#ffffff",
        "ramp": ["#fdf6e3", "#fde68a", "#f59e0b", "#dc2626", "#6b0f3a"],
    },
    "dark": {
        "bg": "#0d1117", "font": "#e6edf3", "muted": "#8b949e", "edge": "#8b949e",
        "shared_edge": "#bc8cff", "recurrent": "#58a6ff", "cluster": "#30363d",
        "cluster_bg": "#161b22", "nofill": "#0d1117", "cut_fill": "#21262d",
        "cut_font": "#6e7681", "highlight": "#ff7b72", "stop": "#e6edf3",
        "param": "#d2a8ff", "input": "#56d364", "leaf": "#56d364", "state": "#58a6ff",
        "output": "#ffa657", "op": "#8b949e", "shared": "#d2a8ff", "const": "#8b949e",
        "call": "#8b949e", "loss": "#ff7b72", "part": "#ff7b72", "elide": "#8b949e",
        "step": "#58a6ff",
        "zero": "#0d1117",
        "ramp": ["#1c2541", "#1f6f8b", "#3fa34d", "#e9c46a", "#fff3b0"],
    },
    # black on white for slides and papers: the gradient scale is the only colour
    "print": {
        "bg": "white", "font": "#000000", "muted": "#333333", "edge": "#000000",
        "shared_edge": "#555555", "recurrent": "#000000", "cluster": "#888888",
        "cluster_bg": "white", "nofill": "white", "cut_fill": "#eeeeee", "cut_font": "#777777",
        "highlight": "#000000", "stop": "#000000",
        "param": "#000000", "input": "#000000", "leaf": "#000000", "state": "#000000",
        "output": "#000000", "op": "#000000", "shared": "#000000", "const": "#555555",
        "call": "#000000", "loss": "#000000", "part": "#000000", "elide": "#000000",
        "step": "#000000",
        "zero": "#ffffff",
        "ramp": ["#fdf6e3", "#fde68a", "#f59e0b", "#dc2626", "#6b0f3a"],
    },
}
#: the line width and arrow size of an edge where truncated BPTT stops the gradient: its bar
#: (a ``tee`` at the greyed end) stands out on a slide at any number of steps
_STOP_PEN = "3"
_STOP_ARROW = "1.3"
#: a line break in a legend's text, its lines set flush left
_BR = '<br align="left"/>'
#: type size of node titles (points) by theme; every other size follows in proportion
_TITLE_PT = {"light": 12, "dark": 12, "print": 16}
#: line widths are multiplied by this in the print theme
_PRINT_PEN = 1.6

# shape and extra style of each kind of node
_SHAPES = {
    "param": ("cylinder", ""), "input": ("invhouse", ""), "leaf": ("ellipse", ""),
    "state": ("ellipse", ""), "next_state": ("box", "rounded"), "output": ("house", ""),
    "op": ("box", "rounded"), "shared": ("box", ""), "const": ("box", "rounded"),
    "call": ("box3d", ""), "loss": ("doubleoctagon", ""), "part": ("octagon", ""),
    "elide": ("box", "rounded"),
    "step": ("box", "rounded"), "mask": ("box", "rounded"),
}

#: each shape as a reader would name it (the legend speaks of what is drawn, not of Graphviz)
_WORDS = {
    "cylinder": "cylinder", "invhouse": "pentagon, point down", "house": "pentagon, point up",
    "ellipse": "oval", "circle": "circle", "doublecircle": "double circle",
    "doubleoctagon": "double octagon", "box3d": "3-D box", "square": "square", "point": "dot",
    "octagon": "octagon",
}


#: what tells apart kinds drawn in one shape and border, in words around the shape's
_TELLS = {"const": "small {}", "elide": "{} titled … N steps …", "mask": "small {} titled mask"}


def _shape_words(shape: str, style: str = "") -> str:
    """``("box", "rounded")`` -> ``"rounded box"``: a shape and its style in plain words."""
    if shape == "box":
        words = "rounded box" if "rounded" in style else "square-cornered box"
    else:
        words = _WORDS.get(shape, shape)
    if "double" in style:  # (not Graphviz's: a second border, peripheries=2)
        words = "double " + words
    if "bold" in style:
        words = "thick " + words
    return words


_SYMBOLS = OP_SYMBOLS  # (one table for every output: unrollgraph/labels.py)


def to_dot(obj, **options) -> str:
    """Return the DOT text of the diagram of ``obj`` (no ``dot`` program needed).

    Parameters
    ----------
    obj : Tensor, Cell, Unrolled or Run
        A tensor (its history is drawn), a cell (drawn folded, with its delay edge) or an
        unrolled net (drawn unrolled; values and gradients come from its last run).
    detail : {"auto", "textbook", "ops", "steps", "elide"}
        For unrolled nets: ``"textbook"`` draws rows of inputs, states (one row per state),
        outputs and per-step losses, time left to right, the weights as labels on the edges
        they act on (derived from the op paths, for any cell); for a cell, the folded cell
        with a black square (the delay) on each recurrent edge. ``"ops"`` draws every op, each
        shared weight's fan-out as a bus: a trunk labelled ``× T``, then a junction in every
        step, under the op it feeds; ``"steps"`` one box per step; ``"elide"`` the first
        and last ``ends`` steps op by op and one node "… n steps …" for the rest.
        ``"auto"`` picks ``"ops"`` for a small graph over at most 6 steps (each step's ops
        are a column of their own, so the width grows with the steps), else ``"steps"`` up
        to 24 steps, else ``"elide"``.
    biases : bool
        Textbook view: note the biases (parameters added into a value) in that value's node
        (default) or leave them out.
    folded : bool
        Textbook view of an unrolled net: draw the folded cell beside it.
    compact : bool
        Textbook view: each node shows its name only (values left out, gradients only as the
        fill colour on the legend's scale; the biases are listed once in the legend), so a
        16-step figure fits a slide.
    values, grads : bool, optional
        Show each node's value / gradient (a number, a small array, or shape and norm). By
        default shown when there are any.
    contributions : bool
        Shared parameters also list the signed per-step parts of their gradient (values when
        they fit in ``max_elements``, norms otherwise) and their sum.
    derivatives : bool
        Label each edge between two scalars with the local derivative d(target)/d(source).
    chain_rule : bool
        With ``highlight`` on a tensor's graph of scalars: write the chain rule for the
        highlighted node beside the diagram, each path from it to the output as the product
        of the local derivatives on its edges, and the sum over paths (the node's gradient).
    highlight : Tensor, Node or str, optional
        Highlight the path from the loss (the outputs) down to this node; a string is a
        display name (``"h_next@1"``) or a stable id (``"n7"``).
    loss : Tensor, optional
        For an unrolled net: the loss computed from its outputs, drawn at the top with an edge
        from each output step it reads (see :func:`unrollgraph.view.read_outputs`).
    theme : {"light", "dark", "print"}
        ``"print"``: black on white, larger type, thicker lines; colour only on the gradient
        scale.
    color_scale : (float, float) or diagram, optional
        The gradient colour scale's ``(min, max)`` norms, or a diagram from :func:`render`
        whose ``.color_scale`` to share, so that several pictures compare on one scale.
        Without it, an unrolled net's views of one run share one scale by themselves: it
        spans the gradients of the run's values (parameters, initial states, each step's
        inputs, states and outputs), whatever the level of detail.
    fontsize : float, optional
        Type size of node titles in points (default 12, 16 with ``theme="print"``); every
        other size follows in proportion.
    scale : float
        Multiplies every type size and line width (default 1).
    legend : bool
        Draw the legend (node kinds, edge kinds and the gradient colour bar).
    ends : int
        Steps drawn at each end with ``detail="elide"``, and by the textbook view, which
        draws the first and last ``ends`` steps and a ``⋯`` column for the rest when the net
        has more than 24 steps, or when ``ends`` is given and leaves steps out.
    max_nodes : int
        Largest number of nodes the drawing may have, whatever the ``detail``: counted as
        drawn (step boxes, inputs, outputs, constants drawn per use, the loss; the legend
        aside) before the text goes to ``dot``.
    max_elements : int
        One rule for every node, in every view: every step copy of one node of the cell
        prints alike, in full (nested by rows, as numpy prints them: a batch of two rows of
        two reads ``[[a, b], [c, d]]``) when that node's values and gradients have at most
        this many elements, else each as its norm and shape (``‖·‖ 1.45 (2×3)``, which the
        legend explains when the picture prints one). A value computed once (a parameter,
        an op on parameters, a node of a tensor's graph) is printed in full when it has at
        most this many elements itself. A single number is always printed.
    title : str, optional
        A caption (by default the cell's name and the number of steps).
    rankdir : {"LR", "BT", "TB", "RL"}, optional
        Layout direction; defaults to ``"LR"`` for tensors, ``"BT"`` for cells and nets.

    Returns
    -------
    str

    Raises
    ------
    RenderError
        For an unknown option or value, or a drawing larger than ``max_nodes`` (the message
        gives the number of nodes and edges it would have and how to draw less).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor(0.5, requires_grad=True, name="x")
    >>> y = ug.tanh(x * x)
    >>> y.backward()
    >>> text = ug.to_dot(y)
    >>> text.startswith("digraph unrollgraph {")
    True
    >>> '"n0" -> "n1"' in text
    True
    """
    name, body = _build(obj, options)
    return f"digraph {name} {{\n" + "".join(body) + "}\n"


def render(obj, **options):
    """Return a ``graphviz.Digraph`` of the diagram of ``obj``.

    Takes the same options as :func:`to_dot`; ``render(obj).source == to_dot(obj)``. Write a
    file with ``.render("name", format="svg")`` (or ``"png"``, ``"pdf"``), which needs
    Graphviz's ``dot`` program; in Jupyter the object displays inline.

    Returns
    -------
    graphviz.Digraph
        A subclass of it whose ``render``, ``pipe``, ``view`` and ``unflatten`` raise
        :class:`RenderError` when Graphviz fails (no ``dot`` program, ``dot`` exiting with an
        error, text it cannot encode), with Graphviz's own message. Its ``color_scale`` is the
        ``(min, max)`` of its gradient scale (``None`` without gradients), to pass to another
        render as ``color_scale=``.

    Raises
    ------
    RenderError
        As :func:`to_dot`.

    Examples
    --------
    >>> import graphviz, numpy as np, unrollgraph as ug
    >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=3)
    >>> outputs, h = net(np.ones((3, 1, 2)))
    >>> g = ug.render(net)
    >>> isinstance(g, graphviz.Digraph), g.source.count("subgraph cluster_step")
    (True, 3)
    """
    name, body, scale = _build_scaled(obj, options)
    diagram = _diagram_class()(name=name, body=body)
    diagram.color_scale = scale.range if scale is not None else None
    return diagram


_DIAGRAM = None


def _diagram_class():
    """``graphviz.Digraph`` with Graphviz's failures turned into :class:`RenderError` (made on
    first use: graphviz is imported only when a diagram is rendered)."""
    global _DIAGRAM
    if _DIAGRAM is not None:
        return _DIAGRAM
    import graphviz

    def guarded(method):
        def call(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except graphviz.ExecutableNotFound as exc:
                raise RenderError(
                    f"Graphviz's programs are not installed ({exc}); install Graphviz "
                    "(apt-get install graphviz, brew install graphviz...) or use ug.to_dot "
                    "for the DOT text"
                ) from exc
            except graphviz.CalledProcessError as exc:
                err = exc.stderr
                if isinstance(err, bytes):
                    err = err.decode("utf-8", "replace")
                err = " ".join((err or "").split())
                err = err if len(err) <= 400 else err[:397] + "..."
                raise RenderError(
                    f"Graphviz's {exc.cmd[0] if exc.cmd else 'dot'} failed (exit status "
                    f"{exc.returncode}): {err or 'no message'}; the DOT text is "
                    "ug.to_dot(...) with the same options"
                ) from exc
            except UnicodeError as exc:
                raise RenderError(
                    f"the diagram holds text Graphviz cannot be given ({exc}); names are "
                    "checked where they enter, so a node made by hand holds it"
                ) from exc

        call.__name__ = method.__name__
        call.__doc__ = method.__doc__
        return call

    class DiagramSource(graphviz.Source):
        """A ``graphviz.Source`` (what ``unflatten`` gives) whose failures are
        :class:`RenderError`."""

        render = guarded(graphviz.Source.render)
        pipe = guarded(graphviz.Source.pipe)
        view = guarded(graphviz.Source.view)

    def _unflatten(self, *args, **kwargs):
        src = graphviz.Digraph.unflatten(self, *args, **kwargs)
        return DiagramSource(src.source, filename=src.filename, directory=src.directory,
                             format=src.format, engine=src.engine, encoding=src.encoding)

    _unflatten.__name__ = "unflatten"

    class Diagram(graphviz.Digraph):
        """A ``graphviz.Digraph`` whose failures are :class:`RenderError`."""

        render = guarded(graphviz.Digraph.render)
        pipe = guarded(graphviz.Digraph.pipe)
        view = guarded(graphviz.Digraph.view)
        unflatten = guarded(_unflatten)

    _DIAGRAM = Diagram
    return Diagram


# -- options ---------------------------------------------------------------------------------
def _options(options: dict) -> dict:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise RenderError(
            f"unknown render option {unknown[0]!r}; the options are {', '.join(OPTIONS)}"
        )
    opts = dict(OPTIONS)
    opts.update(options)
    if opts["detail"] not in _DETAILS:
        raise RenderError(
            f"detail={opts['detail']!r} is not a level of detail; use one of {_DETAILS}"
        )
    if opts["theme"] not in _THEMES:
        raise RenderError(f"theme={opts['theme']!r} is unknown; use one of {tuple(_THEMES)}")
    for key in ("ends", "max_nodes", "max_elements"):
        v = opts[key]
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise RenderError(f"{key} must be a positive int, got {v!r}")
    if opts["rankdir"] not in (None, "LR", "RL", "TB", "BT"):
        raise RenderError(f"rankdir={opts['rankdir']!r}; use 'LR', 'RL', 'TB' or 'BT'")
    for key in ("fontsize", "scale"):
        v = opts[key]
        if v is None and key == "fontsize":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(v) or not 0 < v <= 200:
            raise RenderError(f"{key} must be a positive number (at most 200), got {v!r}")
    # (whether the scale given is a diagram's: the legend of a folded cell says whose)
    opts["_scale_of_diagram"] = hasattr(opts["color_scale"], "color_scale") and \
        not isinstance(opts["color_scale"], (tuple, list))
    opts["color_scale"] = _scale_range(opts["color_scale"])
    opts["_given"] = frozenset(options)  # what the caller chose (not a default)
    return opts


def _scale_range(given):
    """``color_scale=``: None, ``(min, max)`` gradient norms, or a diagram made by
    :func:`render` (its ``.color_scale``)."""
    if given is None:
        return None
    if hasattr(given, "color_scale") and not isinstance(given, (tuple, list)):
        rng = given.color_scale
        if rng is None:
            raise RenderError(
                "color_scale: that diagram has no gradient scale (it shows no gradients); "
                "pass (min, max) or a diagram drawn after a backward pass"
            )
        return rng
    try:
        lo, hi = (float(x) for x in given)
    except (TypeError, ValueError):
        raise RenderError(
            f"color_scale must be (min, max) gradient norms or a diagram from ug.render, got "
            f"{given!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise RenderError(
            f"color_scale=({lo!r}, {hi!r}): the gradient scale is logarithmic, so it needs "
            "0 < min < max (finite); norms outside it take the end colours"
        )
    return (lo, hi)


def _shaped(n: Node) -> str:
    return n.label() if n.shape is None else f"{n.label()} {n.shape}"


def _derivatives_note(drawer) -> str | None:
    """derivatives=True on a drawing where no edge joins two scalars: a note saying so, and
    what draws or derives the chain rule there, instead of a drawing with no label at all
    (the edges that do join scalars are labelled, and the legend says which)."""
    missed = getattr(drawer, "unlabelled", [])
    if not missed or getattr(drawer, "labelled", 0):
        return None
    src, dst = missed[0]
    rows = ["derivatives=True: no edge here joins two scalars, so none is labelled",
            f"with a local derivative (e.g. {_shaped(src)} → {_shaped(dst)})."]
    if any(n.op == "unrolled" for n in drawer.g.nodes):
        rows += ["The net's call is one node here: ug.render(net, loss=loss,",
                 "derivatives=True) draws its steps (scalars: one unit, batch of one)."]
    rows += ["ug.explain(loss) narrates each local derivative with its numbers;",
             "ug.symbolic.chain_rule(loss, wrt) writes them as Jacobians."]
    t = drawer.t
    label = "<br align='left'/>".join(_h(r) for r in rows) + "<br align='left'/>"
    return (f'  "derivatives_note" [shape=note style=filled fillcolor="{t["bg"]}" '
            f'color="{t["font"]}" fontcolor="{t["font"]}" label=<{label}>]')


def _build(obj, options: dict) -> tuple[str, list[str]]:
    name, lines, _ = _build_scaled(obj, options)
    return name, lines


def _build_scaled(obj, options: dict, drawers: list | None = None, legend_columns: int = 3,
                  figure: bool = False, truncates: tuple = ()):
    """The drawing's name, its DOT lines sized for the theme, and its gradient scale (the
    drawer that made them is appended to ``drawers`` when given; its legend in at most
    ``legend_columns`` columns; ``figure``: drawn as one of two pictures of a figure;
    ``truncates``: the truncations of both nets of a figure, whose elided steps are the
    same steps in both, each picture's drawn either side of either cut)."""
    opts = _options(options)
    drawer = _drawer(obj, opts)
    drawer.legend_cap = legend_columns
    drawer.in_figure = figure
    drawer.figure_truncates = truncates
    lines = drawer.build()
    if drawers is not None:
        drawers.append(drawer)
    note = _derivatives_note(drawer) if opts["derivatives"] else None
    if note is not None:
        lines = list(lines) + [note]
    factor = (opts["fontsize"] or _TITLE_PT[opts["theme"]]) / 12 * opts["scale"]
    pen = opts["scale"] * (_PRINT_PEN if opts["theme"] == "print" else 1.0)
    if factor != 1 or pen != 1:
        lines = [_resize(line, factor, pen) for line in lines]
    return "unrollgraph", lines, drawer.scale


_POINT = re.compile(r'(point-size=")([0-9.]+)')
_FONT = re.compile(r"(fontsize=)([0-9.]+)")


def _resize(line: str, factor: float, pen: float) -> str:
    """Scale every type size and line width written in ``line``. User text is inside quoted
    strings and HTML labels; only the sizes the drawing wrote there are touched (an HTML
    label's ``point-size="..."``: user text cannot hold a raw quote), so a name such as
    ``fontsize=3`` is left as written."""
    def times(k):
        return lambda m: m.group(1) + f"{float(m.group(2)) * k:.3g}"

    out, i, n = [], 0, len(line)
    while i < n:
        c = line[i]
        if c == "<" and line[:i].rstrip().endswith("="):  # an HTML label
            depth, j = 0, i
            while j < n:
                depth += {"<": 1, ">": -1}.get(line[j], 0)
                j += 1
                if depth == 0:
                    break
            out.append(_POINT.sub(times(factor), line[i:j]))
            i = j
        elif c == '"':  # a quoted string: a pen width we wrote, or text left alone
            j = i + 1
            while j < n and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            text = line[i:j + 1]
            if line[:i].endswith("penwidth="):
                text = f'"{float(text[1:-1]) * pen:.3g}"'
            out.append(text)
            i = j + 1
        else:
            j = i
            while j < n and line[j] not in '"<':
                j += 1
            j = max(j, i + 1)
            out.append(_FONT.sub(times(factor), line[i:j]))
            i = j
    line = "".join(out)
    if pen != 1 and line.lstrip().startswith('edge [fontname'):
        line = line.replace("]", f' penwidth="{1.2 * pen:.3g}"]', 1)
    if factor != 1 and line.lstrip().startswith(("node [fontname", "edge [fontname")):
        line = line.replace("]", f" fontsize={14 * factor:.3g}]", 1)
    return line


def _drawer(obj, opts: dict):
    v = view(obj)
    if opts["chain_rule"] and v.kind != "tensor":
        raise RenderError(
            f"chain_rule=True writes the chain rule on a tensor's graph of scalars, not on "
            f"a {v.kind} view; for an unrolled net, ug.symbolic.chain_rule(loss, param) "
            "writes it path by path through the steps, ug.symbolic.bptt(net, param) step by "
            "step, and ug.explain(loss) narrates it with the numbers")
    if opts["folded"] and not (opts["detail"] == "textbook" and v.kind == "unrolled"):
        raise RenderError(
            "folded=True draws the folded cell beside an unrolled net in the textbook view: "
            "use it with detail='textbook' on an unrolled net (draw a cell itself for the "
            f"folded cell alone); here detail={opts['detail']!r} on {_A[v.kind]}"
        )
    if opts["detail"] == "textbook":
        ignored = [k for k in ("derivatives", "highlight") if opts[k] not in (None, False)]
        if ignored:
            raise RenderError(
                f"{' and '.join(k + '=' for k in ignored)}: the textbook view draws whole "
                "values (states, inputs, outputs) with the weights on the edges, so it has "
                "no edge between two scalars to label with a local derivative (derivatives=) "
                "and no op path to highlight (highlight=); use detail='ops' (highlight= works "
                "with detail='steps' too), or leave them out")
    if opts["compact"] and opts["detail"] != "textbook":
        raise RenderError(
            "compact=True shortens the textbook view's node labels: use it with "
            f"detail='textbook' (here detail={opts['detail']!r})"
        )
    if opts["loss"] is not None:
        _check_loss(obj, v, opts["loss"])
    if opts["detail"] == "textbook" and v.kind in ("unrolled", "cell"):
        from .textbook import Folded, Textbook

        return (Textbook if v.kind == "unrolled" else Folded)(v, opts)
    if v.kind == "unrolled":
        return _Unrolled(v, opts)
    if v.kind in ("tensor", "cell", "graph"):
        return _Plain(v, opts)
    raise RenderError(f"cannot draw a view of kind {v.kind!r}")  # pragma: no cover


_A = {"unrolled": "an unrolled net", "cell": "a cell", "tensor": "a tensor", "graph": "a graph"}


def _check_loss(obj, v: GraphView, loss) -> None:
    """Refuse a ``loss=`` that is not a tensor computed from the drawn run of the drawn net:
    its value and its edges would be drawn on a picture they do not belong to."""
    if not isinstance(loss, Tensor):
        raise RenderError(
            f"loss= must be the loss Tensor computed from the net's outputs, got "
            f"{type(loss).__name__} {_shown(repr(loss))!r}"
        )
    if v.kind != "unrolled":
        raise RenderError(
            f"loss= is drawn over an unrolled net's outputs; this is a {v.kind}, whose "
            "history already holds what it computes: leave out loss="
        )
    runs = loss_runs(loss)
    drawn = obj if hasattr(obj, "grads") else getattr(obj, "last_run", None)
    name = v.net.cell.name
    if not any(r.net is v.net or r is drawn for r in runs):
        raise RenderError(
            f"loss= was not computed from this net's run: its graph reads no output or state "
            f"of the unrolled {name!r}; pass the loss computed from this net's outputs"
        )
    if drawn is not None and all(r is not drawn for r in runs):
        raise RenderError(
            f"loss= was computed from an earlier run of the unrolled {name!r}, not the drawn "
            "one (the net's last run); draw that run (ug.render(run, ...)) or pass the loss "
            "of the last run"
        )


# -- text ------------------------------------------------------------------------------------
#: characters of a name drawn in a label; longer names are drawn shortened with "…" (the
#: tooltip, the printed graph and the networkx export keep the whole name).
_DRAWN_CHARS = 40
#: lines of a name drawn in a label.
_DRAWN_LINES = 3
#: longest quoted DOT string written in one piece: Graphviz's scanner refuses strings longer
#: than 16384 bytes, so longer text is written as "..." + "..." (DOT's concatenation).
_CHUNK = 4000
#: characters per line of a diagram's title drawn.
_TITLE_CHARS = 160


def _shown(text, chars: int = _DRAWN_CHARS) -> str:
    """What is drawn of a name: at most ``_DRAWN_LINES`` lines of ``chars`` characters, cut in
    the middle with "…" so both its start and its end stay visible."""
    text = str(text)
    lines = text.split("\n")
    if len(lines) > _DRAWN_LINES:
        lines = lines[: _DRAWN_LINES - 1] + ["…"]
    keep = chars - 1
    out = []
    for line in lines:
        if len(line) > chars:
            line = line[: keep - keep // 3] + "…" + line[len(line) - keep // 3:]
        out.append(line)
    return "\n".join(out)


def _hn(name) -> str:
    """A user name as drawn in a label: shortened (:func:`_shown`), then escaped."""
    return _h(_shown(name))


def _h(text) -> str:
    """Escape ``text`` for an HTML-like label: nothing in it can close the label, and no
    backslash sequence in it (``\\N``, ``\\G``...) is expanded by Graphviz."""
    out = []
    for ch in str(text):
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == '"':
            out.append("&quot;")
        elif ch == "'":
            out.append("&#39;")
        elif ch == "\\":
            # Graphviz reads a backslash in a label as the start of an escape (\\N is the
            # node's id): a doubled backslash is one backslash
            out.append("&#92;&#92;")
        elif ch in "{}|[];":
            out.append(f"&#{ord(ch)};")
        elif ch == "\n":
            out.append("<br/>")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append("?")
        elif "\ud800" <= ch <= "\udfff":
            out.append("\ufffd")  # a lone surrogate cannot be written in UTF-8
        else:
            out.append(ch)
    return "".join(out)


def _q_char(c: str) -> str:
    if c == "\\":
        # an escString is read twice (the DOT scanner, then the \\N \\G... expansion), each
        # halving a doubled backslash: four in the file are one in the output
        return "\\\\\\\\"
    if c == '"':
        return '\\"'
    if c == "&":
        return "&amp;"  # Graphviz decodes entities in strings: "&amp;" must stay as written
    if c == "\n":
        return "\\n"
    if ord(c) < 32:
        return "?"
    if "\ud800" <= c <= "\udfff":
        return "\ufffd"
    return c


def _q(text) -> str:
    """A double-quoted DOT string (escString) holding ``text`` literally; long text is
    written in pieces joined by DOT's ``+``."""
    pieces = [_q_char(c) for c in str(text)]
    chunks, cur, size = [], [], 0
    for p in pieces:
        if size + len(p) > _CHUNK and cur:
            chunks.append("".join(cur))
            cur, size = [], 0
        cur.append(p)
        size += len(p)
    chunks.append("".join(cur))
    return " + ".join(f'"{c}"' for c in chunks)


def _attrs(attrs: dict) -> str:
    parts = []
    for k, val in attrs.items():
        if val is None:
            continue
        if isinstance(val, _Html):
            parts.append(f"{k}=<{val.text}>")
        else:
            parts.append(f"{k}={_q(val)}")
    return "[" + " ".join(parts) + "]" if parts else ""


class _Html:
    """A trusted HTML-like label (built only from escaped pieces)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _num(x) -> str:
    """A number as the diagrams write it (:func:`unrollgraph.labels.number`: 3 digits,
    a negative one with U+2212)."""
    return number(x, 3)


def _signed(a) -> str:
    """Values with their sign written (``+0.0386``, ``−0.241``, ``0``), so parts that add up
    read as a sum; a matrix row by row (``[[+0.1, −0.2], [0, +0.3]]``), as ``_array_text``
    writes values."""
    arr = np.asarray(a, dtype=np.float64).reshape(-1)

    def one(x):
        return number(x, 3, signed=True)

    if arr.size == 1:
        return one(arr[0])
    arr = np.asarray(a, dtype=np.float64)  # its rows kept, as the value labels keep theirs
    while arr.ndim > 1 and arr.shape[0] == 1:
        arr = arr[0]
    return np.array2string(arr, separator=", ", threshold=arr.size + 1, max_line_width=10**6,
                           formatter={"all": one}).replace("\n", "")


def _mag(g) -> float | None:
    if g is None:
        return None
    arr = np.asarray(g, dtype=np.float64)
    return float(np.sqrt(np.sum(arr * arr)))


def _mags(arrays: list) -> list:
    """:func:`_mag` of each array (None for None), in one vectorised pass per shape."""
    out: list = [None] * len(arrays)
    by_shape: dict = {}
    for i, a in enumerate(arrays):
        if a is not None:
            a = np.asarray(a, dtype=np.float64)
            by_shape.setdefault(a.shape, []).append((i, a))
    for items in by_shape.values():
        flat = np.stack([a.reshape(-1) for _, a in items])
        for (i, _), m in zip(items, np.sqrt(np.sum(flat * flat, axis=1)).tolist()):
            out[i] = m
    return out


def _array_text(a, limit: int) -> str | None:
    if a is None or isinstance(a, tuple):
        return None
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiub":
        return None
    if arr.size == 1:
        return _num(arr.reshape(-1)[0])
    if arr.size <= limit:  # the rows kept: a (2, 2) batch never reads as four components
        while arr.ndim > 1 and arr.shape[0] == 1:
            arr = arr[0]  # (a batch of one reads as its row, as a textbook writes it)
        return np.array2string(arr, separator=", ", threshold=arr.size + 1,
                               max_line_width=10**6,
                               formatter={"all": lambda x: _num(x)}).replace("\n", "")
    norm = _mag(arr) if arr.dtype.kind == "f" else None
    shape = "×".join(str(s) for s in arr.shape)
    return f"‖·‖ {_num(norm)} ({shape})" if norm is not None else shape


def _font(text: str, size=None, colour: str | None = None, bold: bool = False) -> str:
    """``text`` (already escaped) in a ``<font>`` (and ``<b>``) element; empty text gives
    the empty string, since Graphviz refuses an empty element in an HTML label."""
    if not text:
        return ""
    if bold:
        text = f"<b>{text}</b>"
    attrs = (f' point-size="{size}"' if size is not None else "") + \
        (f' color="{colour}"' if colour else "")
    return f"<font{attrs}>{text}</font>" if attrs else text


def _label(title: str, rows: list[str], font: str | None = None) -> _Html:
    """An HTML table label: a bold title then small rows (all arguments already escaped)."""
    cells = [f"<tr><td>{_font(title, 12, font, bold=True) or ' '}</td></tr>"]
    cells += [f"<tr><td>{_font(r, 9, font)}</td></tr>" for r in rows if r]
    return _Html('<table border="0" cellborder="0" cellspacing="0" cellpadding="1">'
                 + "".join(cells) + "</table>")


# -- text widths -----------------------------------------------------------------------------
#: advance widths of the printable ASCII characters (space to ~) in Helvetica, whose metrics
#: Liberation Sans and Arial share, in thousandths of the type size
_ADVANCE = [int(w) for w in (
    "278 278 355 556 556 889 667 191 333 333 389 584 278 333 278 278 556 556 556 556 556 556 "
    "556 556 556 556 278 278 584 584 584 556 1015 667 667 722 722 667 611 778 722 278 500 667 "
    "556 833 722 778 667 778 722 667 611 722 667 944 667 667 611 278 278 278 469 556 333 556 "
    "556 500 556 556 278 556 556 222 222 500 222 833 556 556 556 556 333 500 278 556 500 722 "
    "500 500 500 334 260 334 584").split()]
_ENTITY = re.compile(r"&(#\d+|[a-z]+);")
_TAG = re.compile(r"<[^>]*>")


def _text_points(text: str, size: float, bold: bool) -> float:
    """An upper estimate of the width of ``text`` (plain, unescaped) set at ``size`` points:
    Helvetica's advance widths for ASCII (a bold face's widen by at most about a fifth),
    0.88 em for the minus sign U+2212 of the numbers (Graphviz measures it 0.84 em, as
    ``+``), a full em for any other character (a symbol the fallback font sets)."""
    em = 0.0
    for c in text:
        k = ord(c) - 32
        em += _ADVANCE[k] / 1000 * (1.2 if bold else 1.05) if 0 <= k < len(_ADVANCE) else (
            0.88 if c == MINUS else 1.0)
    return em * size


def _label_points(label: str, factor: float) -> float:
    """An upper estimate of the width of an HTML label made by :func:`_label`, its type
    sizes multiplied by ``factor``: its widest row."""
    widest = 0.0
    for row in re.findall(r"<tr>(.*?)</tr>", label):
        size = float(m.group(1)) if (m := re.search(r'point-size="([0-9.]+)"', row)) else 14
        bold = "<b>" in row
        text = _ENTITY.sub(lambda m: chr(int(m.group(1)[1:])) if m.group(1)[0] == "#" else
                           {"amp": "&", "lt": "<", "gt": ">", "quot": '"'}.get(m.group(1), "?"),
                           _TAG.sub("", row.replace("<br/>", "\n")))
        for line in text.split("\n"):
            widest = max(widest, _text_points(line, size * factor, bold))
    return widest


# -- colours ---------------------------------------------------------------------------------
def _hex(c: str) -> tuple[int, int, int]:
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


class _Scale:
    """One log scale of gradient norms for the whole picture."""

    def __init__(self, mags, ramp, fixed=None):
        good = [m for m in mags if m is not None and m > 0 and math.isfinite(m)]
        self.ramp = ramp
        self.empty = not good
        if fixed is not None:  # one scale shared with other pictures
            self.lo, self.hi = math.log10(fixed[0]), math.log10(fixed[1])
        elif good:
            self.lo = math.log10(min(good))
            self.hi = math.log10(max(good))
            if self.hi - self.lo < 1.0:  # at least one decade, centred on the data
                mid = (self.hi + self.lo) / 2
                self.lo, self.hi = mid - 0.5, mid + 0.5

    def colour(self, m: float) -> str:
        u = (math.log10(m) - self.lo) / (self.hi - self.lo)
        u = min(1.0, max(0.0, u)) * (len(self.ramp) - 1)
        k = min(int(u), len(self.ramp) - 2)
        f = u - k
        a, b = _hex(self.ramp[k]), _hex(self.ramp[k + 1])
        rgb = [round(x + (y - x) * f) for x, y in zip(a, b)]
        return "#" + "".join(f"{c:02x}" for c in rgb)

    @property
    def range(self) -> tuple[float, float] | None:
        """``(min, max)`` gradient norms of the scale, to share with another picture."""
        return None if self.empty else (10.0 ** self.lo, 10.0 ** self.hi)

    def ticks(self) -> list[float]:
        """Six log-spaced values from the smallest to the largest norm."""
        return [self.lo + (self.hi - self.lo) * k / 5 for k in range(6)]


def _text_on(fill: str) -> str:
    r, g, b = _hex(fill)
    return "#ffffff" if 0.299 * r + 0.587 * g + 0.114 * b < 140 else "#111111"


# -- the drawing -----------------------------------------------------------------------------
#: the kinds of node that may be drawn without a gradient (none computed for them), in the
#: words of the legend's row that says so
_NOGRAD_WORDS = {"input": "inputs", "state": "initial states unless requires_grad",
                 "param": "parameters with requires_grad off", "leaf": "leaf tensors",
                 "const": "constants", "op": "ops", "next_state": "states",
                 "output": "outputs", "shared": "ops on weights", "elide": "steps",
                 "call": "calls of an unrolled net", "mask": "padding masks"}
#: the kinds of node drawn unfilled though a gradient reaches them: the loss (where the
#: gradient starts) and its parts are drawn in their own colour, never filled
_UNCOLOURED_WORDS = {frozenset({"loss"}): "the loss", frozenset({"part"}): "the loss's parts",
                     frozenset({"loss", "part"}): "the loss and its parts"}
#: the words for a node whose gradient is not finite (nan or inf): drawn unfilled too
_NONFINITE = "gradient not finite (nan or inf)"


class _Drawer:
    """Shared machinery: nodes, edges, node styles, gradient colours and the legend."""

    in_figure = False  # drawn as one of the two pictures of a figure (render_side_by_side)

    def __init__(self, v: GraphView, opts: dict):
        self.v = v
        self.g = v.graph
        self.o = opts
        self.t = _THEMES[opts["theme"]]
        self.lines: list[str] = []
        self.kinds_used: set[str] = set()
        self.edges_used: set[str] = set()
        self.has_values = False
        self.has_grads = False
        self.scale: _Scale | None = None
        self.path: set[int] = set()
        self.legend_shapes: dict[str, list] = {}  # kind -> the (shape, style) drawn
        self.n_nodes = 0  # nodes and edges drawn (the legend aside): what the guard counts
        self.n_edges = 0
        self.drawn_links: set[tuple[str, str]] = set()  # (tail, head) of each drawn edge
        self.cut_ids: set[str] = set()  # the nodes drawn greyed (truncation: no gradient)
        self.node_at: dict[str, tuple[int, str]] = {}  # id -> (its line, its label)
        self.norm_mark: str | None = None  # the first ‖·‖ printed (see number_text)
        # what is drawn unfilled, in the legend's words: no gradient computed (kind -> the
        # words of the nodes drawn so; a caller may name a node's own words, ``nograd=``),
        # drawn uncoloured (the loss), or a gradient that is not finite
        self.nograd_what: dict[str, str] = {}
        self.uncoloured: set[str] = set()
        self.nonfinite = False

    @property
    def nograd_kinds(self) -> set:
        """The words of every node drawn unfilled for want of a gradient."""
        return set(self.nograd_what)

    def make_scale(self, mags) -> _Scale:
        return _Scale(mags, self.t["ramp"], self.o["color_scale"])

    # values and gradients
    def value(self, n: Node):
        try:
            return self.v.value(n)
        except (IndexError, KeyError):  # pragma: no cover - a node outside the run
            return None

    def grad(self, n: Node):
        return self.v.grad(n)

    def state_grad(self, n: Node):
        """The gradient of state node ``n`` as the state the net carries on: in a masked run
        (``lengths=``) :meth:`Run.state_grad_of` (a sequence's rows up to its length take
        the value its step computed, past it the kept state's), else :meth:`grad`."""
        run = self.v.run
        if run is None or run.grads is None or _unmasked(n) is n:
            return self.grad(n)
        return run.state_grad_of(n)

    def limit(self, n: Node) -> int:
        """The ``max_elements`` that ``n``'s value and gradient are printed with: one rule
        for every node of every view. Every step copy of one node of the cell prints alike:
        each written out when that node's values and gradients, in every step, have at most
        ``max_elements`` elements, else each (but a single number) as its norm and shape.
        So an LSTM of two units writes out its 1×2 states and ops beside its 1×8 gates,
        which print as norms, and a node prints the same in every view. A value computed
        once (a parameter, an op on parameters, a node of a tensor's graph) prints by its
        own size."""
        cap = self.o["max_elements"]
        if n.origin is None or n.step is None:  # (an initial state too: it has one copy)
            return cap
        largest = getattr(self, "_largest", None)
        if largest is None:  # the largest copy of each node of the cell, in one pass
            largest = self._largest = {}
            for m in self.g.nodes:
                if m.origin is not None and m.step is not None:
                    k = id(m.origin)
                    for a in (self.value(m), self.grad(m)):
                        if a is not None and not isinstance(a, tuple):
                            largest[k] = max(largest.get(k, 0), np.size(a))
        return cap if largest.get(id(n.origin), 0) <= cap else 1

    def number_text(self, a, n: Node) -> str | None:
        """``a``, ``n``'s value or gradient, as :meth:`limit` has it printed (see
        :func:`_array_text`); the first norm printed is kept for the legend's row that
        says what ``‖·‖`` is."""
        text = _array_text(a, self.limit(n))
        if text is not None and text.startswith("‖·‖") and self.norm_mark is None:
            self.norm_mark = text
        return text

    def show_values(self) -> bool:
        want = self.o["values"]
        return self.has_values if want is None else bool(want)

    def show_grads(self) -> bool:
        want = self.o["grads"]
        return self.has_grads if want is None else bool(want)

    # primitives
    def emit(self, line: str, indent: int = 1) -> None:
        self.lines.append("  " * indent + line + "\n")

    def node(self, nid: str, kind: str, title: str, rows: list[str], mag=None, cut=False,
             indent=1, tooltip=None, hot=False, state=False, shape=None,
             group: str | None = None, kept: bool = False, nograd: str | None = None) -> None:
        """Draw one node: its shape from ``kind`` (or ``shape``), its fill from the gradient
        norm ``mag``; ``group`` is Graphviz's (an edge within a group is kept straight).
        ``nograd``: the legend's words for this node where it is drawn unfilled, no
        gradient computed (by default its kind's, ``_NOGRAD_WORDS``).
        ``kept``: a state a checkpointed run keeps, marked by a ✓ after the title (in the
        text colour chosen for the fill) and a thick border."""
        t = self.t
        self.n_nodes += 1
        if kept:
            title += " ✓"
            self.kinds_used.add("kept")
        self.kinds_used.add(kind)
        kind_shape, extra = _SHAPES[kind]
        shape = shape or kind_shape
        # where every value is an oval (the textbook view), the kinds differ in their border
        # too, so that they are told apart in greyscale: a state's is thick, an output's
        # double (an input's thin, a loss's part is an octagon); a state is thick in every
        # shape (a next state's rounded box beside an op's thin one)
        double = shape == "ellipse" and kind == "output"
        marks = extra + (",double" if double else "") + (",bold" if state else "")
        drawn = self.legend_shapes.setdefault(kind, [])
        if (shape, marks) not in drawn:
            drawn.append((shape, marks))
        styles = [s for s in extra.split(",") if s] + ["filled"]
        border = t["state"] if state else t[kind if kind in t else "op"]
        fill, font = t["nofill"], t["font"]
        if cut:
            fill, font, border = t["cut_fill"], t["cut_font"], t["cut_font"]
            styles.append("dashed")
            self.kinds_used.add("cut")
            self.cut_ids.add(nid)
        elif mag is not None and self.show_grads() and self.scale and not self.scale.empty:
            if mag > 0 and math.isfinite(mag):
                fill = self.scale.colour(mag)
                font = _text_on(fill)
            elif mag == 0:
                fill = t["zero"]
            else:
                self.nonfinite = True  # (unfilled: the legend says why)
        elif mag is None and self.show_grads() and self.scale and not self.scale.empty:
            # unfilled: the legend names exactly the kinds drawn so (its colour is zero's)
            if kind in ("loss", "part"):
                self.uncoloured.add(kind)
            else:
                words = nograd or _NOGRAD_WORDS.get(kind, kind)
                self.nograd_what.setdefault(words, kind)
        if hot:
            border = t["highlight"]
        attrs = {
            "shape": shape,
            "style": ",".join(dict.fromkeys(styles)),
            "fillcolor": fill,
            "color": border,
            "penwidth": "4.5" if kept else "3" if hot else (
                "2" if state or kind in ("param", "loss", "part") else "1.2"),
            "label": _label(title, rows, font if font != t["font"] else None),
            "tooltip": tooltip,
            "group": group,
            "peripheries": "2" if double else None,
        }
        if kind in ("const", "mask"):
            attrs.update(margin="0.02,0.02", height="0.25", width="0.3")
        self.node_at[nid] = (len(self.lines), attrs["label"].text)
        self.emit(f'"{nid}" {_attrs(attrs)}', indent)

    def edge(self, a: str, b: str, kind: str = "data", label: str | None = None,
             hot: bool = False, cut: bool = False, constraint: bool = True, indent=1,
             back: bool = False, label_pt: int = 9, arrow: bool = True,
             ports: tuple | None = None, xlabel: bool = False, weight: int | None = None,
             at_tail: bool = False) -> None:
        t = self.t
        self.n_edges += 1
        # where truncation stops the gradient: from a greyed node into one that is not (the
        # last cut state into the first kept step, a cut step into its output): the value
        # flows on, no gradient comes back; dotted as every edge truncation sends no
        # gradient back along, and barred at the greyed end, where the gradient stops
        src, dst = (b, a) if back else (a, b)
        stop = src in self.cut_ids and dst not in self.cut_ids
        cut = cut or stop
        self.edges_used.add("stop" if stop else kind)
        attrs: dict = {"color": t["edge"]}
        if kind == "shared":
            attrs.update(color=t["shared_edge"], style="dashed", arrowsize="0.6")
        elif kind == "trunk":
            attrs.update(color=t["shared_edge"], penwidth="2.5")
        elif kind in ("recurrent", "delay"):
            attrs.update(color=t["recurrent"], penwidth="2")
        elif kind == "loss":
            attrs.update(color=t["loss"], arrowsize="0.6")
        if cut:
            attrs.update(color=t["cut_font"], style="dotted")
            self.edges_used.add("cut")
        if hot:
            attrs.update(color=t["highlight"], penwidth="3")
            self.edges_used.add("hot")
        if label is not None:
            # an xlabel is placed after layout: the edge stays straight and takes no rank
            # (so is a tail label, at the edge's start: ``at_tail``)
            text = _font(label, label_pt, attrs["color"])
            if text:
                attrs["taillabel" if at_tail else "xlabel" if xlabel else "label"] = _Html(text)
        if not arrow and not stop:
            # and no size: Graphviz draws arrowheads on a flat edge between clusters, drawn
            # in two parts, whatever arrowhead says
            attrs.update(arrowhead="none", arrowsize="0")
        if ports:
            # (and the arrowhead filled: dot draws the head of an edge with ports, at times,
            # as an outline unless its fill colour is given)
            attrs.update(tailport=ports[0], headport=ports[1], fillcolor=attrs["color"])
        if not constraint:
            attrs["constraint"] = "false"
        if stop:  # the bar at the source's end, the arrowhead (if any) at the other
            # (large, thick and in the text's colour, not the greyed edge's: the place where
            # the gradient stops is what a reader of a truncated net looks for, on a slide)
            point = "onormal" if arrow else "none"
            attrs.update(dir="both", arrowtail=point if back else "tee",
                         arrowhead="tee" if back else point, color=t["stop"],
                         penwidth=_STOP_PEN, arrowsize=_STOP_ARROW)
        elif back:
            attrs["dir"] = "back"
        if weight is not None:
            attrs["weight"] = str(weight)
        self.drawn_links.add((a, b))
        self.emit(f'"{a}" -> "{b}" {_attrs(attrs)}', indent)

    def row(self, ids: list[str]) -> None:
        """Put nodes on one rank, left to right in the given (time) order."""
        if len(ids) > 1:
            self.n_edges += len(ids) - 1  # invisible, but laid out by dot all the same
            chain = " -> ".join(f'"{i}"' for i in ids)
            self.emit(f"{{rank=same; {chain} [style=invis]}}")

    # node text
    def is_const(self, n: Node) -> bool:
        """Whether ``n`` is drawn as a constant (small, titled by its value)."""
        return n.op == "const"

    def title(self, n: Node, with_step: bool = False) -> str:
        if n.op == "init" and n.origin is not None and n.origin.name and \
                n.name == f"{n.origin.name}_init":
            base = _hn(n.origin.name) + "<sub>init</sub>"  # h_init, as in the textbook view
        elif n.name:
            base = _hn(n.name)
        elif n.op == "transpose" and n.inputs and n.inputs[0].name:
            base = _hn(n.inputs[0].name) + "ᵀ"
        elif n.op == "getitem":  # a slice as written: gates[:, 0:8]
            base = _hn(op_label(n))
            src = n.inputs[0] if n.inputs else None
            if with_step and n.step is not None and src is not None and src.name and \
                    "index" in n.attrs:  # the step on the value sliced, as it is drawn
                base = (_hn(src.name) + f"<sub>{n.step}</sub>"
                        + _h(index_text(n.attrs["index"])))
        elif self.is_const(n):
            val = self.value(n)
            text = _array_text(val, 1) if val is not None else None
            base = _h(text) if text and np.size(val) == 1 else "const"
        else:
            base = _h(_SYMBOLS.get(n.op, n.op))
        if with_step and n.step is not None and (n.name or n.op in ("input", "init")):
            # a named value carries its step (h_next₂); an op's symbol does not ("+₀" reads as
            # "plus zero"): its cluster gives the step
            base += f"<sub>{n.step}</sub>"
        return base

    def rows(self, n: Node, grad_label: str = "∇") -> list[str]:
        rows = []
        op = _h(n.op) if n.op not in ("leaf", "param", "input", "state", "init") else ""
        shape = _h(self.g.shape_text(n)) if n.shape not in (None, ()) else ""
        info = " · ".join(x for x in (op, shape) if x)
        if info and not self.is_const(n):
            rows.append(info)
        if self.show_values() and not self.is_const(n):
            text = self.number_text(self.value(n), n)
            if text is not None:
                rows.append("v = " + _h(text))
        if self.show_grads():
            text = self.number_text(self.grad(n), n)
            if text is not None:
                rows.append(f"{grad_label} = " + _h(text))
        return rows

    def tooltip(self, n: Node) -> str:
        return self.g.equation(n)

    def derivative(self, src: Node, dst: Node, k: int) -> str | None:
        """The local derivative d dst / d src (input slot k) when both are scalars; the
        edges left without one are counted (``self.unlabelled``) so that the drawing can say
        so rather than draw nothing silently."""
        if not self.o["derivatives"] or dst.is_leaf:
            return None
        from .ops import get_op

        if not hasattr(self, "unlabelled"):
            self.unlabelled, self.labelled = [], 0
        vals = [self.value(i) for i in dst.inputs]
        ans = self.value(dst)
        if ans is None or any(x is None or np.size(x) != 1 for x in vals + [ans]):
            self.unlabelled.append((src, dst))
            return None
        try:
            f = get_op(dst.op).input_vjp(k)
            if f is None:
                return None
            d = f(np.ones_like(ans), ans, *vals, **dst.attrs)
        except Exception:  # an op whose VJP cannot run on these values: no label
            d = None
        if d is None or np.size(d) != 1:
            self.unlabelled.append((src, dst))
            return None
        self.labelled += 1
        return "∂ " + _h(_num(np.reshape(d, -1)[0]))

    def loss_sym(self) -> str:
        """The loss's symbol in labels (HTML): its own name when the user named it (``J``:
        ``J = Σ_t J_t``, ``∂J/∂h``), ``L`` for an unnamed loss."""
        name = getattr(self.o.get("loss"), "name", None)
        return _hn(name) if name else "L"

    def path_words(self) -> str:
        """The legend's words for the highlighted path (``highlight=``)."""
        ends = getattr(self, "path_ends", None)
        if ends is None:
            return "highlight: the paths along which the gradient flows back"
        target, roots = ends
        names = [_h(_shown(self.g.display_name(r))) for r in roots[:3]]
        to = ", ".join(names) + (" …" if len(roots) > 3 else "") if names else "the output"
        return (f"highlight: the paths from {_h(_shown(self.g.display_name(target)))} to "
                f"{to}{_BR}(borders and edges), along which its gradient comes back{_BR}")

    def derivatives_row(self) -> list[tuple[str, str]]:
        """The legend's rows saying what the ``∂`` on an edge is, how the gradients follow
        from them, and how many edges carry none (between tensors: no scalar derivative)."""
        missed = getattr(self, "unlabelled", [])
        if not self.o["derivatives"] or not getattr(self, "labelled", 0):
            return []
        rows = [("∂ a", f"on an edge u → v: the local derivative ∂v/∂u = a,{_BR}"
                        f"at the drawn values{_BR}")]
        ends = getattr(self, "path_ends", None)
        if ends is not None:
            name = _h(_shown(self.g.display_name(ends[0])))
            sign = ".grad" if getattr(self, "leaf_grads", False) and \
                ends[0].op in ("param", "leaf") else "∇"  # (as its node prints it)
            rows.append(("", f"{sign} of {name}: the product of the ∂ along the highlighted{_BR}"
                             f"path (the sum of the products, over several paths){_BR}"))
        else:
            rows.append(("", f"a node's ∇: the sum, over its paths to the output,{_BR}"
                             f"of the product of the ∂ along each{_BR}"))
        if missed:
            rows.append(("", f"{len(missed)} edges between tensors have none (see ug.explain)"))
        return rows

    # highlight
    def find(self, target) -> Node:
        node = getattr(target, "node", target)
        if isinstance(node, Node):
            if node in self.g:
                return node
            raise RenderError(
                f"highlight: node {node.label()} is not in this graph; pass a node (or tensor) "
                "of the drawn graph, or its display name"
            )
        if isinstance(node, str):
            for n in self.g.nodes:
                if self.g.id(n) == node or self.g.display_name(n) == node:
                    return n
            names = [self.g.display_name(n) for n in self.g.nodes if n.name][:8]
            raise RenderError(
                f"highlight: no node called {node!r}; use a display name such as "
                f"{', '.join(map(repr, names))} or a stable id like 'n3'"
            )
        raise RenderError(
            f"highlight must be a Tensor, a Node or a name, got {type(target).__name__}"
        )

    def compute_path(self, roots: list[Node]) -> None:
        """Nodes on some path from ``highlight`` up to one of ``roots``."""
        if self.o["highlight"] is None:
            return
        target = self.find(self.o["highlight"])
        consumers: dict[int, list[Node]] = {}
        for a, b in self.g.edges:
            consumers.setdefault(id(a), []).append(b)
        down = {id(target)}
        stack = [target]
        while stack:
            n = stack.pop()
            for c in consumers.get(id(n), ()):
                if id(c) not in down:
                    down.add(id(c))
                    stack.append(c)
        up = {id(r) for r in roots if id(r) in down}
        stack = [r for r in roots if id(r) in down]
        while stack:
            n = stack.pop()
            for i in n.inputs:
                if id(i) in down and id(i) not in up:
                    up.add(id(i))
                    stack.append(i)
        self.path = up
        # (the legend names them: the paths from the highlighted node to the roots reached)
        self.path_ends = (target, [r for r in roots if id(r) in up])

    # size guard
    def guard(self, drawn: int, what: str, fixes: str, exact: bool = True) -> None:
        """Refuse a drawing of more than ``max_nodes`` nodes before ``dot`` gets it.

        The exact check counts what was drawn. The early check (``exact=False``) takes a
        lower bound known before drawing and refuses only drawings far over the limit, so
        that building them is not wasted work."""
        limit = self.o["max_nodes"]
        if exact and drawn > limit:
            raise RenderError(
                f"{what} would draw {drawn} nodes and {self.n_edges} edges, more than "
                f"max_nodes={limit} (Graphviz takes minutes on drawings this large); "
                f"{fixes}, or pass max_nodes={drawn} to draw it anyway"
            )
        if not exact and drawn > _EARLY * limit:
            raise RenderError(
                f"{what} would draw at least {drawn} nodes, far more than max_nodes={limit} "
                f"(Graphviz takes minutes on drawings this large); {fixes}, or raise max_nodes"
            )

    # legend
    def legend(self, extra_rows: list[tuple[str, str]] = ()) -> None:
        if not self.o["legend"]:
            return
        extra_rows = list(extra_rows) + self.derivatives_row()
        t = self.t
        names = {
            "param": "parameter: one weight, shared by every step", "input": "input",
            "leaf": "leaf tensor",
            "state": "state", "next_state": "next state", "output": "output",
            "op": "operation", "shared": "op on weights alone, computed once (Wᵀ)",
            "const": "constant",
            "call": "call of an unrolled net", "loss": "loss",
            "part": f"the loss's part from step t (the parts add up to {self.loss_sym()})",
            "elide": "elided steps",
            "step": "one time step (detail='ops' draws its ops)",
            "cut": "greyed, dashed border: truncated BPTT sends it no gradient",
            "mask": ("padding mask (lengths=): per sequence, whether the step is within its "
                     f"length; each where op takes{_BR}the step's value there and past it "
                     f"the state kept (an output: 0); data, so no gradient{_BR}"),
            "kept": "a state the checkpointed run keeps (the others it recomputes)",
        }
        rows = []
        for kind in names:
            if kind not in self.kinds_used:
                continue
            if kind == "cut":
                colour, words = t["cut_font"], "grey"
            elif kind == "kept":
                colour, words = t["state"], "✓, thick border"
            else:
                colour = t["state"] if kind == "next_state" else t[kind if kind in t else "op"]
                drawn = self.legend_shapes.get(kind) or [_SHAPES[kind]]
                words = " or ".join(dict.fromkeys(_shape_words(*d) for d in drawn))
                words = _TELLS.get(kind, "{}").format(words)
            # the shape in words, in the colour it is drawn in: a swatch box would show
            # every kind as the same rectangle
            rows.append((f'<td align="right">{_font(words, 9, colour, bold=True)}</td>',
                         f'<td align="left">{_font(names[kind], 9)}</td>'))
        edge_names = {
            "trunk": ("━━", t["shared_edge"],
                      "a shared weight's trunk and bus: × T steps read it"),
            "shared": ("- - -", t["shared_edge"], "shared-weight edge (one per reading op)"),
            "recurrent": ("━━", t["recurrent"], "state carried to the next step"),
            "delay": ("━━", t["recurrent"], "z⁻¹: one-step delay (next state → state)"),
            "cut": ("· · ·", t["cut_font"], "dotted, grey: the value flows forward; truncated "
                                        "BPTT sends no gradient back along it"),
            "stop": ("|· ·", t["stop"], "where truncated BPTT stops the gradient (at the "
                                    "bar): the value flows on, no gradient comes back"),
            "hot": ("━━", t["highlight"], self.path_words()),
        }
        for kind, (sym, colour, text) in edge_names.items():
            if kind in self.edges_used:
                rows.append((f'<td>{_font(sym, None, colour, bold=True)}</td>',
                             f'<td align="left">{_font(text, 9)}</td>'))
        if self.norm_mark:  # what ‖·‖ is, where a value prints as its norm
            cap = self.o["max_elements"]
            words = (_h("the Euclidean norm √(Σ x²) and shape of an array,") + _BR
                     + _h(f"written for more than {cap} "
                          f"number{'s' if cap != 1 else ''} (max_elements)") + _BR)
            rows.append((f'<td>{_font(_h(self.norm_mark), 9)}</td>',
                         f'<td align="left">{_font(words, 9)}</td>'))
        unfilled = self.unfilled_words()
        if unfilled and self.show_grads() and self.scale is not None and not self.scale.empty:
            # one line each: no gradient computed, the loss uncoloured, not finite
            text = _h(unfilled[0]) if len(unfilled) == 1 else \
                "".join(_h(w + (";" if k < len(unfilled) - 1 else "")) + _BR
                        for k, w in enumerate(unfilled))
            rows.append((f'<td align="right">{_font("no fill", 9, bold=True)}</td>',
                         f'<td align="left">{_font(text, 9)}</td>'))
        for left, right in extra_rows:
            rows.append((f'<td>{_font(left, 10) or " "}</td>',
                         f'<td align="left">{_font(right, 9) or " "}</td>'))
        # in several columns side by side under a wide picture: no empty corner beside it
        k = max(1, min(getattr(self, "legend_columns", 1), len(rows)))
        per = -(-len(rows) // k)
        cols = [rows[i * per:(i + 1) * per] for i in range(k)]
        lines = []
        for i in range(per):
            cells = [c[i] if i < len(c) else ("<td> </td>", "<td> </td>") for c in cols]
            lines.append("<tr>" + "<td> </td>".join(a + b for a, b in cells) + "</tr>")
        span = 3 * k - 1
        table = (
            f'<table border="1" cellborder="0" cellspacing="2" cellpadding="2" '
            f'color="{t["cluster"]}" bgcolor="{t["bg"]}">'
            f'<tr><td colspan="{span}"><font point-size="10"><b>legend</b></font></td></tr>'
            + "".join(lines)
        )
        if self.show_grads() and self.scale is not None and not self.scale.empty:
            table += self.colour_bar(span)
        table += "</table>"
        self.emit(f'"legend" {_attrs({"shape": "plain", "label": _Html(table)})}')

    def unfilled_words(self) -> list[str]:
        """The legend's words for the nodes drawn unfilled, exactly the kinds drawn so: with
        no gradient computed (in the order of ``_NOGRAD_WORDS``, then any a view named
        itself), the loss and its parts (uncoloured), a gradient that is not finite."""
        order = list(_NOGRAD_WORDS.values())
        words = sorted(self.nograd_what,
                       key=lambda w: (order.index(w) if w in order else len(order), w))
        parts = [f"no gradient computed ({', '.join(words)})"] if words else []
        if self.uncoloured:
            parts.append("not coloured: " + _UNCOLOURED_WORDS[frozenset(self.uncoloured)])
        if self.nonfinite:
            parts.append(_NONFINITE)
        return parts

    def colour_bar(self, span: int = 2) -> str:
        s = self.scale
        ticks = s.ticks()
        cells = "".join(
            f'<td bgcolor="{s.colour(10.0 ** k)}" width="30" height="12"> </td>' for k in ticks
        )
        labels = "".join(f'<td><font point-size="7">{_num(10.0 ** k)}</font></td>'
                         for k in ticks)
        # the colour of exactly 0, which a node drawn with no gradient computed has too
        zero = "0 or none" if self.nograd_kinds else "0"
        title = getattr(self, "bar_title", None) or "gradient norm ‖∇‖ (log scale)"
        return (
            f'<tr><td colspan="{span}"><font point-size="9">{title}'
            "</font></td></tr>"
            f'<tr><td colspan="{span}"><table border="0" cellspacing="0" cellpadding="1">'
            f'<tr><td bgcolor="{self.t["zero"]}" border="1" width="14"> </td>{cells}</tr>'
            f'<tr><td><font point-size="7">{zero}</font></td>{labels}</tr></table></td></tr>'
        )

    def header(self, rankdir: str, title: str | None, full_title: str | None = None) -> None:
        t = self.t
        self.emit(f'graph [rankdir={rankdir} bgcolor="{t["bg"]}" fontname="Helvetica" '
                  f'fontcolor="{t["font"]}" nodesep="0.22" ranksep="0.32" newrank=true '
                  'labelloc=t fontsize=14]')
        self.emit(f'node [fontname="Helvetica" fontcolor="{t["font"]}" margin="0.06,0.03"]')
        self.emit(_EDGE_DEFAULTS)
        self.emit('edge [fontname="Helvetica" arrowsize="0.7"]')
        if title:
            # a title is a sentence: drawn up to _TITLE_CHARS, the cell's name in it shortened
            # like any name (the default titles), the whole text in the tooltip
            self.emit(f"label=<<b>{_h(_shown(title, _TITLE_CHARS))}</b>> "
                      f"tooltip={_q(full_title or title)}")


#: Every edge attribute the drawings write, declared first and in alphabetical order, each with
#: Graphviz's default (and the drawings' arrow size and font). Why: for a level edge with ports
#: between neighbours, dot (2.43) routes the edge in a graph of its own, whose attributes it
#: declares in alphabetical order, and reads the arrowheads there by the positions the
#: attributes have in the drawing: declared in another order, an edge's pen width was read as
#: its arrowhead (a warning, an outlined head). Declared so, the positions agree.
_EDGE_DEFAULTS = "edge [" + " ".join(f'{k}="{v}"' for k, v in sorted({
    "arrowhead": "normal", "arrowsize": "0.7", "arrowtail": "normal", "class": "",
    "color": "black", "comment": "", "constraint": "true", "dir": "forward", "fillcolor": "",
    "fontcolor": "black", "fontname": "Helvetica", "fontsize": "14", "headport": "", "id": "",
    "label": "", "minlen": "1", "penwidth": "1", "style": "", "taillabel": "", "tailport": "",
    "tooltip": "", "weight": "1", "xlabel": ""}.items())) + "]"


class _Plain(_Drawer):
    """A Tensor's history or a folded Cell: every op, one node each."""

    def build(self) -> list[str]:
        v, g, o = self.v, self.g, self.o
        fixes = "draw a smaller part of it (the tensor computed earlier)"
        self.guard(len(g.nodes), "this graph", fixes, exact=False)
        nodes = g.nodes
        self.has_values = any(
            self.value(n) is not None for n in nodes if n.op not in ("const", "param")
        ) or any(self.value(n) is not None for n in nodes if n.op == "param")
        self.has_grads = any(self.grad(n) is not None for n in nodes)
        cell = v.cell if v.kind == "cell" else None
        outputs, nexts, fb = {}, set(), []
        if cell is not None:
            for k, t in cell.outputs.items():
                outputs.setdefault(id(t.node), []).append(k)
            nexts = {id(a) for a, _ in v.feedback}
            fb = v.feedback
        roots = list(g.outputs)
        self.compute_path(roots)
        self.scale = self.make_scale([_mag(self.grad(n)) for n in nodes])
        # a cell's parameters print .grad, which adds up over every backward() call: the
        # picture says so, and whose colour scale fills them
        grad_label, notes = ("∇", []) if cell is None or not self.has_grads else \
            (".grad", self.grad_notes())
        # a tensor's history: a leaf prints its .grad, which adds up over every backward()
        # call too: printed as .grad, the legend saying so (an op's ∇ is its gradient)
        leaf_grads = cell is None and self.show_grads() and any(
            n.op in ("param", "leaf") and self.grad(n) is not None for n in nodes)
        self.leaf_grads = leaf_grads
        if leaf_grads:
            notes = self.leaf_grad_notes(nodes)
        default_dir = "BT" if cell is not None else "LR"
        title = full = o["title"]
        if title is None and cell is not None:
            what = "(folded): the recurrent edge is a one-step delay z⁻¹"
            title, full = f"cell {_shown(cell.name)} {what}", f"cell {cell.name} {what}"
        self.header(o["rankdir"] or default_dir, title, full)
        for n in nodes:
            nid = g.id(n)
            kind, state = self.kind(n, cell, outputs, nexts)
            hot = id(n) in self.path
            label = ".grad" if leaf_grads and n.op in ("param", "leaf") else grad_label
            self.node(nid, kind, self.title(n), self.rows(n, label),
                      _mag(self.grad(n)), tooltip=self.tooltip(n), hot=hot, state=state,
                      nograd="states" if cell is not None and kind == "state" else None)
        # (a cell's parameters in no row of their own: each stands under the op reading it,
        # a bias beside its sum, as in a textbook figure; in a row under everything they
        # stood far from their readers, their edges long and slanting across the cell)
        for n in nodes:
            for k, i in enumerate(n.inputs):
                hot = id(i) in self.path and id(n) in self.path
                self.edge(g.id(i), g.id(n), label=self.derivative(i, n, k), hot=hot)
        out_index = {name: k for k, name in enumerate(cell.outputs)} if cell else {}
        by_id = {id(n): n for n in nodes}
        for src, names in outputs.items():
            node = by_id[src]
            for name in names:
                oid = _out_id(g.id(node), out_index[name])
                self.node(oid, "output", _hn(name), ["output"], tooltip=f"output {name}")
                self.edge(g.id(node), oid)
        for k, (nxt, st) in enumerate(fb):
            self.delay_edge(g.id(nxt), g.id(st), k)
        if o["chain_rule"]:
            self.chain_rule_note(roots)
        self.guard(self.n_nodes, "this graph", fixes)
        self.legend(notes)
        self.place_legend(roots, o["rankdir"] or default_dir)
        return self.lines

    def delay_edge(self, nxt: str, state: str, k: int) -> None:
        """The ``k``-th feedback of a folded cell, from its next state ``nxt`` back to its
        ``state``, drawn round the outside of the cell: up out of the next state to an
        invisible corner a row over it, down a rail of its own (labelled z⁻¹) to a corner a
        row under the state, and up into the state. Each end is an edge between two rows,
        which dot orders with the others so that it crosses none, and the rail runs outside
        every row. (Drawn as one edge against the rows, ``constraint=false``, dot ran it
        through the middle of the cell, across the edges there; with level ends, one into
        the state's row and one out of the next state's, dot left nodes between the state
        and its rail, and the level end ran under them, across their edges.)"""
        top, bottom = f"delay{k}_over", f"delay{k}_under"
        self.emit(_foot(top, f"delay{k}"))
        self.emit(_foot(bottom, f"delay{k}"))
        self.edge(nxt, top, "delay", arrow=False)
        self.edge(bottom, top, "delay", label="z⁻¹ (one-step delay)", arrow=False,
                  xlabel=True)
        self.edge(bottom, state, "delay")

    def grad_notes(self) -> list[tuple[str, str]]:
        """The legend's row saying what a folded cell's ``.grad`` is, and the colour bar's
        title saying whose scale fills the parameters: the figure's one scale beside a run's
        view (:func:`render_side_by_side`), the one given (``color_scale=``), or the cell's
        own, which spans its parameters' norms alone (an unrolled view's spans its run's
        values, so one gradient gets another colour there)."""
        if self.in_figure:
            whose = "the figure's one scale, shared with the picture beside it"
        elif self.o.get("_scale_of_diagram"):
            whose = "the scale of the diagram given (color_scale=): one gradient, one colour"
        elif "color_scale" in self.o.get("_given", ()):
            whose = "the scale given (color_scale=)"
        else:
            whose = ("this picture's own: these parameters' norms alone<br/>(an unrolled "
                     "view's scale spans its run's values; color_scale=that diagram shares "
                     "it)")
        self.bar_title = f"‖.grad‖ (log scale) on {whose}"
        return [(".grad", f"a parameter's .grad: the sum of its gradient over every step and"
                          f"{_BR}every backward() call since zero_grad(){_BR}")]

    def leaf_grad_notes(self, nodes) -> list[tuple[str, str]]:
        """The legend's row saying what the ``.grad`` a tensor's history prints on its leaves
        is: the sum over every ``backward()`` call (a cell's parameter read by an unrolled
        net: over every step too), as the folded cell's row says of its parameters."""
        ops = {n.op for n in nodes if n.op in ("param", "leaf") and self.grad(n) is not None}
        who = {frozenset({"param"}): "a parameter's", frozenset({"leaf"}): "a leaf tensor's",
               frozenset({"param", "leaf"}): "a parameter's or leaf tensor's"}[frozenset(ops)]
        steps = "every step and " if "param" in ops else ""
        return [(".grad", f"{who} .grad: the sum of its gradient over {steps}every{_BR}"
                          f"backward() call since zero_grad(){_BR}")]

    def place_legend(self, roots: list, rankdir: str) -> None:
        """The legend where the reader's eye ends: under the last output, in its column
        (left to right) or in a row of its own under it (top to bottom). Bottom to top (a
        folded cell), dot puts it in the lowest row, at the bottom already."""
        if not roots or not any(line.lstrip().startswith('"legend" [') for line in self.lines):
            return
        root = self.g.id(roots[-1])
        self.n_edges += 1
        if rankdir in ("LR", "RL"):
            self.emit(f'{{rank=same; "{root}" -> "legend" [style=invis]}}')
        elif rankdir == "TB":
            self.emit(f'"{root}" -> "legend" [style=invis]')

    def chain_rule_note(self, roots) -> None:
        """A note listing, for each path from the highlighted node to an output, the product of
        the local derivatives on its edges, and their sum."""
        if self.o["highlight"] is None:
            raise RenderError("chain_rule=True writes the chain rule for one node: pass "
                              "highlight=that node (a tensor, a node or its name)")
        g = self.g
        target = self.find(self.o["highlight"])
        consumers: dict = {}
        for n in g.nodes:
            for k, i in enumerate(n.inputs):
                consumers.setdefault(id(i), []).append((n, k))
        rootset = {id(r) for r in roots}
        paths = []
        stack = [(target, [(target, None)], [])]
        while stack:
            n, nodes, factors = stack.pop()
            if id(n) in rootset:
                paths.append((nodes, factors))
            for c, k in consumers.get(id(n), ()):
                d = self.local_scalar(n, c, k)
                if d is None:
                    raise RenderError(
                        f"chain_rule=True needs scalar values on the path: {c.label()} = "
                        f"{c.op}(...) has no scalar local derivative here; for tensors and "
                        "unrolled nets, ug.symbolic.chain_rule(loss, wrt) writes the chain "
                        "rule with Jacobians and ug.explain(loss) narrates it with numbers")
                twice = sum(i is n for i in c.inputs) > 1  # x * x: say which slot
                stack.append((c, nodes + [(c, k if twice else None)], factors + [d]))
            if len(paths) > 200:
                raise RenderError("chain_rule=True: more than 200 paths to list; highlight a "
                                  "node nearer the output")
        paths.reverse()
        from .explain import _const_name, _operand, display_names

        given = {id(n): _const_name(self.value(n), picture=True) for n in g.nodes
                 if n.op == "const" and not n.name and self.value(n) is not None}
        names = display_names(g.nodes, g.id, {k: v for k, v in given.items() if v})

        def name(n):  # the names ug.explain prints
            return names[id(n)]

        rows = [f"chain rule: d{_operand(name(roots[0]))}/d{_operand(name(target))}"]
        total = 0.0
        for k, (nodes, factors) in enumerate(paths[:12]):
            prod = float(np.prod(factors)) if factors else 1.0
            route = " → ".join(name(n) + ("" if k is None else f" (input {k})")
                               for n, k in nodes)
            rows.append(f"path {k + 1}: {route}")
            rows.append("   " + " × ".join(_num(f) for f in factors) + f" = {_num(prod)}")
        for _nodes, factors in paths:
            total += float(np.prod(factors)) if factors else 1.0
        if len(paths) > 12:
            rows.append(f"… {len(paths) - 12} more paths")
        if len(paths) != 1:
            rows.append(f"sum over the {len(paths)} paths = {_num(total)}")
        label = "<br align='left'/>".join(_h(r) for r in rows) + "<br align='left'/>"
        t = self.t
        self.emit(f'"chain_rule" [shape=note style=filled fillcolor="{t["bg"]}" '
                  f'color="{t["highlight"]}" fontcolor="{t["font"]}" label=<{label}>];')
        self.n_nodes += 1

    def local_scalar(self, src: Node, dst: Node, k: int):
        """d dst / d src (input slot k) as a float when both are scalars, else None."""
        from .ops import get_op

        vals = [self.value(i) for i in dst.inputs]
        ans = self.value(dst)
        if ans is None or any(x is None or np.size(x) != 1 for x in vals + [ans]):
            return None
        f = get_op(dst.op).input_vjp(k)
        if f is None:
            return None
        with np.errstate(all="ignore"):
            d = f(np.ones_like(ans), ans, *vals, **dst.attrs)
        return None if d is None or np.size(d) != 1 else float(np.reshape(d, -1)[0])

    def kind(self, n: Node, cell, outputs, nexts) -> tuple[str, bool]:
        if n.op in ("param", "input", "state", "const", "leaf"):
            return n.op, n.op == "state"
        if n.op == "unrolled":
            return "call", False
        if cell is not None and id(n) in nexts:
            return "next_state", True
        if cell is None and n is self.g.nodes[-1] and n in self.g.outputs:
            return "output", False
        return "op", False



#: points a rounded box adds around its label's text, or more (margins, cell padding)
_BOX_PAD = 40
#: how many invisible edges join a step's column to its foot (see ``_Unrolled.feet``)
_FOOT_COPIES = 3
#: the pull holding a column of a figure's picture straight over its foot (see feet)
_PLUMB_WEIGHT = 100


#: the width of one port along the bottom of a step box (more than nodesep: the edges
#: into neighbouring ports run side by side, straight)
_PORT_PT = 16
_STEPS_NODESEP = 0.05


def _foot(nid: str, group: str | None = None) -> str:
    """The statement of an invisible point that holds a column in place: written with its
    attributes as defaults of its own subgraph, it is no node statement of the drawing, and
    Graphviz draws nothing for it."""
    attrs = "shape=point style=invis width=0 height=0" + (f' group="{group}"' if group else "")
    return f'subgraph {{ node [{attrs}] "{nid}" }}'


def _step_of_foot(nid: str) -> str:
    """``"step3"`` of the foot ``"step3_col1_foot"``; ``"elided"`` of the elided one."""
    return nid.split("_", 1)[0]


def _out_id(nid: str, k: int) -> str:
    """Id of the output box of the ``k``-th declared output, drawn off node ``nid``."""
    return f"{nid}_out{k}"


def _unmasked(n: Node) -> Node:
    """The value a masked net's ``where`` node wraps (the cell's own output or next state,
    which the mask replaces by 0 or by the state kept past a sequence's length); any other
    node itself."""
    if n.op == "where" and len(n.inputs) == 3 and n.inputs[0].role == "mask":
        return n.inputs[1]
    return n


def _lengths_of(net, run) -> list[int] | None:
    """The sequence lengths of a masked net's run, as ints; None for an unmasked net or a
    masked one never run."""
    if not getattr(net, "masked", False) or run is None:
        return None
    lengths = getattr(run, "lengths", None)
    return None if lengths is None else [int(v) for v in np.asarray(lengths).ravel()]


def _list_text(values: list, most: int = 8) -> str:
    """``[5, 2]``; a long list as its first and last few: ``[5, 2, 3, …, 4, 5]``."""
    if len(values) > most:
        values = [*values[:most // 2], "…", *values[-(most // 2):]]
    return "[" + ", ".join(str(v) for v in values) + "]"


def _mask_note(net, run) -> tuple[str, str] | None:
    """The title's words and the legend's sentence for a masked net (``lengths=``): what
    its mask does. None for an unmasked net."""
    if not getattr(net, "masked", False):
        return None
    lengths = _lengths_of(net, run)
    what = "a step past a sequence's length keeps its state and outputs 0"
    if lengths is None:
        return ", masked (lengths=)", f"masked net: {what}"
    title = f", sequence lengths {_list_text(lengths)}"
    return title, f"sequence lengths {_list_text(lengths)}: {what}"


def _mask_legend(net, run, note: tuple[str, str], more: str = "") -> str:
    """The legend's text for a masked net: ``note``'s sentence (escaped) and ``more``, and
    when the run padded a sequence, a line saying what its padded inputs hold: the copy of a
    real input the run computes on, which the picture draws (see ``run._padded_inputs``)."""
    text = _h(note[1]) + more
    lengths = _lengths_of(net, run)
    if lengths and 0 < max(lengths) and min(lengths) < net.steps:
        text += _BR + _h("a padded step's input is drawn as it computes: a copy of the "
                         "sequence's last real one" + (" (the longest's first for an empty "
                                                        "one)" if 0 in lengths else "")) + _BR
    return text


def _grad_note(net, drawn_grad) -> tuple[str, str] | None:
    """The legend's row for parameters whose ``.grad`` is not the gradient the picture
    draws (``.grad`` adds up over ``backward()`` calls, and holds the terms of a loss
    outside the net; the picture shows the drawn run's alone), or None when every one is."""
    params = net.cell.parameters()
    more = []
    for name, node in net.param_nodes.items():
        p, g = params.get(name), drawn_grad(node)
        if p is not None and p.grad is not None and g is not None and not np.array_equal(
                p.grad, g):
            more.append(name + ".grad")
    if not more:
        return None
    if len(more) == len(net.param_nodes) > 1:
        names = "every parameter's .grad holds"
    else:
        names = (more[0] + " holds" if len(more) == 1
                 else ", ".join(more[:-1]) + " and " + more[-1] + " hold")
    return "∇ total", (_h(f"the drawn run's gradient; {names} a different one:") + _BR + _h(
        "a sum over backward() calls (zero_grad() before each),") + _BR
        + _h("a later call's gradient, or loss terms outside the net") + _BR)


def _padded(net, run, t: int) -> list[int]:
    """The sequences (batch indices) step ``t`` pads in a masked run."""
    lengths = _lengths_of(net, run)
    return [] if lengths is None else [b for b, n in enumerate(lengths) if t >= n]


def _pads_text(padded: list[int]) -> str:
    """``pads sequence 1``, ``pads sequences 0, 3``: the row marking a step that pads."""
    return f"pads sequence{'s' if len(padded) > 1 else ''} {_list_text(padded)[1:-1]}"


def _elided_numbers(mags: list) -> tuple[float, float, str] | None:
    """Of the gradient norms of the elided steps, one a step (None: no gradient reached
    it): their root mean square (the fill, on the scale of one step's norm), their norm
    together, and ``"min … max"`` over every step of them (``"none"`` the least when a step
    has none, with how many). None when no step has a gradient."""
    known = [m for m in mags if m is not None]
    if not known:
        return None
    total = sum(m * m for m in known)
    lo = _num(min(known))
    if len(known) < len(mags):
        lo = f"none ({len(mags) - len(known)} of {len(mags)} steps)"
    return math.sqrt(total / len(mags)), math.sqrt(total), f"{lo} … {_num(max(known))}"


def _drawn_words(spans: list, k: int, T: int) -> str:
    """What an elided drawing of the runs ``spans`` draws, in words for its legend."""
    if spans == [(k, T - k - 1)]:
        return f"the first and last {k} steps are drawn"
    return "the others are drawn, the steps either side of a truncation cut among them"


def _elision(T: int, k: int, truncates=(None,)) -> list[tuple[int, int]]:
    """The runs of steps ``(a, b)`` an elided drawing leaves out, in time order (empty: it
    draws every step).

    Without truncation, all but the first and last ``k``. With it, never a run that mixes
    steps truncation cuts (``t < T - truncate``) with steps it keeps: the last cut step and
    the first kept one are always drawn, so the cut stands between two drawn steps; the
    longer of the two runs on either side of them is elided, and the shorter too when it
    has more steps than an elided drawing of its own would draw (``2 k + 1``): a long run
    each side of the cut is a run of its own. Several truncations (the two nets of a
    figure, drawn step over step): runs clear of every cut. A run of fewer than two steps
    is not elided (it is drawn).

    >>> _elision(30, 2, (None,)), _elision(30, 2, (5,)), _elision(4, 1, (2,))
    ([(2, 27)], [(2, 23)], [])
    >>> _elision(200, 2, (100,))
    [(2, 98), (101, 197)]
    """
    runs = [(k, T - k - 1)]
    for truncate in truncates:
        c = T - truncate if truncate is not None else 0
        split = []
        for a, b in runs:
            if 0 < c < T and a <= c and b >= c - 1:  # the cut inside (or at the edge of) it
                two = [(a, min(b, c - 2)), (max(a, c + 1), b)]  # cut steps, kept steps
                longer = max(two, key=lambda r: r[1] - r[0])
                split += [r for r in two if r == longer or r[1] - r[0] + 1 > 2 * k + 1]
            else:
                split.append((a, b))
        runs = split
    return [(a, b) for a, b in runs if b - a + 1 >= 2]


class _Unrolled(_Drawer):
    """An unrolled net: clusters per step, shared weights once, optional elision."""

    def build(self) -> list[str]:
        v, g, o = self.v, self.g, self.o
        net, run = v.net, v.run
        T = net.steps
        detail = self.pick_detail(len(g.nodes), T)
        k = o["ends"]
        truncates = getattr(self, "figure_truncates", ()) or (net.truncate,)
        spans = _elision(T, k, truncates) if detail == "elide" or self.elides(T) else []
        if detail == "elide" and not spans:
            detail = "ops"
        self.detail = detail
        self.net, self.run, self.T = net, run, T
        self.has_values = run is not None
        self.has_grads = run is not None and run.grads is not None
        self.outputs_of: dict[int, list[str]] = {}
        self.out_index = {name: j for j, name in enumerate(net.output_nodes)}
        for name, ns in net.output_nodes.items():
            for n in ns:
                self.outputs_of.setdefault(id(n), []).append(name)
        # the elided runs of steps; ``elided`` is the one being drawn (the first, else None)
        self.spans = spans
        self.kept = set(range(T)) - {t for a, b in spans for t in range(a, b + 1)}
        self.elided = spans[0] if spans else None
        self.guard(self.least_drawn(), self.what(), self.fixes(), exact=False)
        self.seeded_reads: list = []
        self.seeded = self.seeded_nodes()
        self.seeded_outputs = {name: [n for n, kind, nm in self.seeded_reads
                                      if kind == "output" and nm == name]
                               for name in net.output_nodes}
        self.compute_path(self.seeded or [n for ns in net.output_nodes.values() for n in ns])
        self.contrib = self.contributions()
        self.scale = self.make_scale(self.all_mags())
        title = full = o["title"]
        if title is None:
            what = f" unrolled over T = {T} steps"
            if net.truncate:
                what += f", truncated BPTT: gradient through the last {net.truncate} steps"
            if getattr(net, "checkpoint", None):
                what += f", checkpointed: a run keeps the state every {net.checkpoint} steps"
            note = _mask_note(net, run)
            if note:
                what += note[0]
            if self.spans:
                what += " (steps " + ", ".join(f"{a} … {b}" for a, b in self.spans) + \
                    " elided)"
            title, full = _shown(net.cell.name) + what, net.cell.name + what
        self.header(o["rankdir"] or "BT", title, full)
        self.draw_body()
        self.draw_loss()
        self.guard(self.n_nodes, self.what(), self.fixes())
        self.legend(self.legend_rows())
        under = getattr(self, "legend_under", None)
        if under:
            # a row of its own under the inputs (in theirs, its height set them far under
            # the buses, in the middle of the row)
            self.emit(f'"legend" -> "{under}" [style=invis weight=0]')
        return self.lines

    def elides(self, T: int) -> bool:
        """Whether a view other than ``detail="elide"`` leaves out middle steps."""
        return False

    def draw_body(self) -> None:
        if self.detail == "steps":
            self.build_steps()
        else:
            self.build_ops()

    def what(self) -> str:
        d, o = self.detail, self.o
        if d == "elide":
            return f"detail='elide' with ends={o['ends']} ({2 * o['ends']} steps op by op)"
        if d == "steps":
            return f"detail='steps' ({self.T} step boxes with their inputs and outputs)"
        return (f"detail='ops' (all {len(self.g.nodes)} nodes of the unrolled net, every op "
                f"of all {self.T} steps)")

    def fixes(self) -> str:
        d, o = self.detail, self.o
        if d == "elide":
            return ("use a smaller ends= (ends=1 draws the first and last step), or "
                    "detail='steps' (one box per step) for a short net")
        if d == "steps":
            return (f"use detail='elide' (the first and last ends={o['ends']} steps op by op "
                    "and one node for the rest)")
        return (f"use detail='elide' (first and last ends={o['ends']} steps), detail='steps' "
                "(one box per step)")

    def least_drawn(self) -> int:
        """A lower bound of the nodes the drawing will have, known before drawing it."""
        net = self.net
        if self.detail == "steps":
            return self.T * (1 + len(net.input_nodes) + len(net.output_nodes))
        kept = self.kept
        return sum(1 for n in self.g.nodes
                   if not self.is_const(n) and (n.step is None or n.step in kept))

    def pick_detail(self, n_nodes: int, T: int) -> str:
        o = self.o
        detail = o["detail"]
        if detail == "auto":
            # every op while the picture stays both small and narrow: one op cluster per
            # step side by side, so the width grows with the steps, not only with the nodes
            if n_nodes <= min(_AUTO_OPS, o["max_nodes"]) and T <= _AUTO_OPS_STEPS:
                return "ops"
            return "steps" if T <= _AUTO_STEPS else "elide"
        return detail

    # data
    def seeded_nodes(self) -> list[Node]:
        """Output (or final-state) nodes the loss sent a gradient to."""
        run, net = self.run, self.net
        seeds = run.seeds if run is not None else None
        if seeds is None or run.grads is None:
            return []
        self.seeded_reads = reads(net, seeds, self.o["loss"])
        return [n for n, _, _ in self.seeded_reads]

    def own_grad(self, name: str, t: int):
        """The gradient the loss sends to output ``name`` at step ``t`` itself (not the total
        gradient of the node it is read from, which also collects later steps' parts)."""
        run = self.run
        if run is None or run.grads is None or run.seeds is None:
            return None
        seed = run.seeds[self.out_index[name]]
        if seed is None:
            return np.zeros_like(np.asarray(self.value(self.net.output_nodes[name][t])))
        return seed[t]

    def output_rows(self, name: str, t: int) -> list[str]:
        rows = ["output"]
        n = self.net.output_nodes[name][t]
        if self.show_values():
            text = self.number_text(self.value(n), n)
            if text is not None:
                rows.append("v = " + _h(text))
        if self.show_grads():
            text = self.number_text(self.own_grad(name, t), n)
            if text is not None:
                rows.append("∇ = " + _h(text))
        return rows

    def output_mag(self, name: str, t: int):
        return _mag(self.own_grad(name, t)) if self.has_grads else None

    def output_hot(self, name: str, t: int) -> bool:
        """An output box is on the highlighted path only if the loss reads it."""
        n = self.net.output_nodes[name][t]
        return id(n) in self.path and any(
            s is n for s in self.seeded_outputs.get(name, ()))

    def contributions(self) -> dict:
        """Parameter name -> the signed per-step parts of its gradient, (T, *shape)."""
        if not self.o["contributions"] or not self.has_grads:
            return {}
        return {name: np.asarray(self.run.step_contributions(name), dtype=np.float64)
                for name in self.net.param_nodes}

    def part_text(self, part, limit: int | None = None) -> str:
        """One step's part: its signed values when they fit in ``limit`` (by default
        ``max_elements``), its norm otherwise (computed in one vectorised pass per parameter
        by the caller's array)."""
        if part.size <= (self.o["max_elements"] if limit is None else limit):
            return _h(_signed(part))
        return f"‖∇‖ {_h(_num(_mag(part)))}"

    def state_mag(self, t: int) -> float | None:
        """Norm of the gradient of all states at step ``t`` (``None`` without one)."""
        mags = getattr(self, "_state_mags", None)
        if mags is None:
            mags = self._state_mags = self.state_mags()
        return mags[t]

    def state_mags(self) -> list:
        """:meth:`state_mag` of every step, one vectorised norm per state."""
        T = self.T
        total = np.zeros(T)
        have = np.zeros(T, dtype=bool)
        for ns in self.net.state_nodes.values():
            gs = [self.state_grad(n) for n in ns]
            steps = [t for t, x in enumerate(gs) if x is not None]
            if steps:
                flat = np.stack([np.asarray(gs[t], dtype=np.float64).reshape(-1)
                                 for t in steps])
                total[steps] += np.einsum("ij,ij->i", flat, flat)
                have[steps] = True
        return [math.sqrt(v) if h else None for v, h in zip(total.tolist(), have.tolist())]

    def elided_mags(self) -> list:
        """The state gradient norm of every step of the elided run drawn (``elided``; None:
        no gradient there)."""
        cache = self.__dict__.setdefault("_elided_mags", {})
        if self.elided not in cache:
            a, b = self.elided
            cache[self.elided] = [self.state_mag(t) for t in range(a, b + 1)]
        return cache[self.elided]

    def span_of(self, t: int) -> tuple[int, int] | None:
        """The elided run holding step ``t`` (None: it is drawn)."""
        return next((sp for sp in getattr(self, "spans", ()) if sp[0] <= t <= sp[1]), None)

    def eid(self, span=None) -> str:
        """The id of the node standing for an elided run (``elided``'s by default): the
        first run's ``"elided"``, a later one's ``"elided<its first step>"``."""
        span = span or self.elided
        return "elided" if span == self.spans[0] else f"elided{span[0]}"

    def all_mags(self) -> list:
        """The gradient norms the automatic colour scale spans: a function of the run alone,
        the same in every view of it (textbook, steps, ops, elided), so that one gradient
        gets one colour in each. They are the gradients of the run's values, which every
        view draws: the parameters, the initial states, each step's inputs, states and
        outputs (each output's own, from the loss, too) and each step's states together (a
        step box). The fills a view derives from them (an elided column's root mean square)
        lie within them. An op view draws more: an op (or a masked run's ``where``) whose
        norm lies beyond the scale takes its end colour, and :attr:`beyond` says so to the
        legend."""
        if not self.has_grads:
            return []
        net = self.net
        nodes = [n for n in self.shared_nodes() if n.op == "param"]
        nodes += list(net.init_nodes.values())
        for kind in (net.input_nodes, net.state_nodes, net.output_nodes):
            nodes += [_unmasked(n) for ns in kind.values() for n in ns]
        nodes += [n for ns in net.output_nodes.values() for n in ns]  # (the textbook's)
        mags = _mags([self.grad(n) for n in nodes])
        if getattr(net, "masked", False):  # (the states carried on, as the views draw them)
            mags += _mags([self.state_grad(n) for ns in net.state_nodes.values() for n in ns])
        mags += [self.output_mag(name, t) for name in net.output_nodes for t in range(self.T)]
        mags += self.state_mags()
        if self.detail in ("ops", "elide") and self.o["color_scale"] is None:
            ends = _Scale(mags, self.t["ramp"]).range
            if ends is not None:
                lo, hi = ends[0] * (1 - 1e-9), ends[1] * (1 + 1e-9)
                masked = self.masked_states()  # (filled by the state's gradient)
                drawn = _mags([self.state_grad(n) if id(n) in masked else self.grad(n)
                               for n in self.g.nodes if not self.is_const(n)
                               and (n.step is None or n.step in self.kept)])
                self.beyond = any(m is not None and m > 0 and not lo <= m <= hi
                                  for m in drawn)
        return mags

    def aggregate(self) -> float | None:
        """The norm of the gradient over all elided steps together (the label's figure)."""
        got = _elided_numbers(self.elided_mags())
        return got[1] if got else None

    def elided_fill(self) -> float | None:
        """The elided steps' fill: the root mean square of their per-step norms, on the
        scale of one step's norm as every other node (the norm over all of them together
        grows with their number and would colour the box hotter than any step in it)."""
        got = _elided_numbers(self.elided_mags())
        return got[0] if got else None

    def is_const(self, n: Node) -> bool:
        """A constant, or a leaf the cell reads that is none of its parameters (a
        ``ug.tensor(0.5)`` in the cell's code): drawn per use as a constant, never as a
        shared weight with its trunk and bus."""
        return n.op == "const" or (n.op == "leaf" and n.step is None)

    def shared_nodes(self) -> list[Node]:
        return [n for n in self.g.nodes if n.step is None and n.op != "init"
                and not self.is_const(n)]

    def param_rank(self) -> dict[str, int]:
        """The id of each shared node -> its place in the cell's order of the parameters
        (``named_parameters()``, as ``net.param_nodes``), the order the step view lists them
        in, as the textbook view's legend: a parameter's own place, an op on parameters
        (``weight_hhᵀ``) that of the first parameter it reads."""
        g = self.g
        rank = {g.id(p): k for k, p in enumerate(self.net.param_nodes.values())}
        for n in self.shared_nodes():  # (topological: an op after what it reads)
            if g.id(n) not in rank:
                rank[g.id(n)] = min((rank.get(g.id(i), len(rank)) for i in n.inputs),
                                    default=len(rank))
        return rank

    # node kinds
    def kind(self, n: Node) -> tuple[str, bool]:
        if n.op == "param":
            return "param", False
        if n.op == "input":
            return "input", False
        if n.op == "init":
            return "state", True
        if n.role == "mask":  # (a constant of the run's lengths: named for what it is)
            return "mask", False
        if self.is_const(n):
            return "const", False
        if n.role == "shared":
            return "shared", False
        if n.role == "next_state":
            return "next_state", True
        return "op", False

    def param_rows(self, n: Node) -> list[str]:
        name = next((k for k, p in self.net.param_nodes.items() if p is n), None)
        parts = self.contrib.get(name)
        if parts is None:
            return self.rows(n, grad_label="∇ total")
        # the parts, signed, then their sum: the reader sees Σ_t = total
        rows = self.rows(n, grad_label="")
        rows = [r for r in rows if not r.startswith(" = ")]
        small = parts[0].size <= self.limit(n)
        rows.append("∇ = Σ<sub>t</sub> (part of step t):" if small
                    else "∇ = Σ<sub>t</sub> (part of step t), norms shown:")
        shown = list(range(len(parts)))
        if len(shown) > 8:
            shown = shown[:3] + [None] + shown[-3:]
        for t in shown:
            rows.append("⋮" if t is None else
                        f"t = {t}: {self.part_text(parts[t], self.limit(n))}")
        total = self.grad(n)
        if total is not None:
            text = _h(_signed(np.asarray(total))) if small else \
                _h(self.number_text(total, n))
            rows.append(f"Σ = {text}")
        return rows

    def masked_states(self) -> dict:
        """id of each state node of a masked run (``h_kept = where(mask, h_next, h_prev)``)
        -> the state's name: the node a reader of the op view takes for the state h_t."""
        found = getattr(self, "_masked_states", None)
        if found is None:
            found = self._masked_states = {
                id(n): s for s, ns in self.net.state_nodes.items() for n in ns
                if _unmasked(n) is not n}
        return found

    def masked_state_rows(self, n: Node, texts: list[str]) -> tuple[list[str], float | None]:
        """The rows and the fill of op ``n`` in the op view. A masked run's state node
        (``h_kept``, a where op) prints its own gradient, and under it the gradient of the
        state the net carries on, ``∂L/∂h_t`` (:meth:`Run.state_grad_of`, as
        ``state_grads()[t]`` and every other view give it), which fills it: the op's own
        gradient is what reaches the where op (the later steps' parts), not the state's
        (the step's outputs read the next state the where op wraps)."""
        s = self.masked_states().get(id(n))
        if s is None or not self.has_grads:
            return texts, _mag(self.grad(n))
        grad = self.state_grad(n)
        if self.show_grads():
            text = self.number_text(grad, n)
            if text is not None:
                texts = texts + [f"∂{self.loss_sym()}/∂{_hn(s)}<sub>{n.step}</sub> = "
                                 + _h(text)]
                drawn = getattr(self, "masked_drawn", [])
                self.masked_drawn = drawn + [s] if s not in drawn else drawn
        return texts, _mag(grad)

    # ops detail
    def build_ops(self) -> None:
        g, net = self.g, self.net
        kept, T = self.kept, self.T
        shared = self.shared_nodes()
        params = [n for n in shared if n.op == "param"]
        by_step: dict[int, list[Node]] = {}
        for n in g.nodes:
            if n.step is not None and n.step in kept:
                by_step.setdefault(n.step, []).append(n)
        # the second crossing minimisation dot runs over a graph with clusters reorders
        # nodes within ranks against the order asked for below: one pass keeps it
        self.emit("graph [remincross=false]")
        self.side: dict[int, int] = {}
        self.first_row: dict[int, list[str]] = {}  # step -> its lowest row of ops
        self.cluster_end: dict[int, int] = {}  # step -> the line that closes its cluster
        levels = {t: self.step_levels([n for n in ns if n.op != "input"])
                  for t, ns in by_step.items()}
        t0 = min(kept)
        init_rows = self.init_states(levels[t0])  # first: see init_states()
        for n in shared:
            kind, state = self.kind(n)
            rows = self.param_rows(n) if kind == "param" else self.rows(n)
            self.node(g.id(n), kind, self.title(n), rows, _mag(self.grad(n)),
                      tooltip=self.tooltip(n), hot=id(n) in self.path)
        rank = self.param_rank()
        self.shared_side = {g.id(n): rank[g.id(n)] for n in shared}
        order = {id(n): k for k, n in enumerate(shared)}
        params.sort(key=lambda p: (rank[g.id(p)], order[id(p)]))
        # the steps held to one layout by feet (see feet()), an elided net's too: each state
        # leaves its step through bends in its own box (state_bends()), so the steps no
        # longer pull the elided column out of its place (the code for loose steps stays
        # for a subclass that turns this off)
        self.rigid = True
        # held steps: each shared value read by several steps stands left of the first
        # step at the end of its own bus, which it feeds straight from the left (see
        # trunks()); the others, and all of them in an elided net, in a row under everything
        self.on_bus: set = set()
        self.params = params
        if params and not self.rigid:
            self.param_row(params)
        bottom = []  # the row under the steps: the inputs in time order
        # loose steps (a subclass's): under the first step, an invisible stand-in for each
        # initial state, its edges into the first step as the previous step's state's into
        # the others (held steps need none: every state comes into a step level, from the
        # left, in the row of the op reading it, as the initial states come into the first)
        self.ghost: dict = {}  # initial state -> its stand-in
        for n in net.init_nodes.values() if not self.rigid else ():
            ghost = self.ghost[id(n)] = f"{g.id(n)}_ghost"
            self.emit(_foot(ghost))
            bottom.append(ghost)
        step_inputs: dict = {}  # step -> its inputs: the buses' rows sit over them
        groups = self.bus_groups(shared, by_step)
        # each step's ops in columns, one Graphviz group per column: every step is then
        # drawn as the same rigid picture, and its junctions and outputs straight in line
        self.column_of: dict[int, str] = {}
        self.column_order: dict[int, list[str]] = {}
        for t in levels:
            self.column_of.update(self.step_columns(t, levels[t], groups))
        self.junction_group = {j: self.column_of[k] for k, j in groups.items()
                               if k in self.column_of}
        self.step_rows = {t: {d: [g.id(n) for n in level] for d, level in lv.items()}
                          for t, lv in levels.items()}
        self.column_of_id = {g.id(n): self.column_of[id(n)] for ns in by_step.values()
                             for n in ns if id(n) in self.column_of}
        self.junctions: set = set()
        self.input_col: dict = {}  # input -> its column (input_column())
        self.bends = self.state_bends(levels) if self.rigid else {}
        self.row_of_id = {i: d for lv in self.step_rows.values() for d, ids in lv.items()
                          for i in ids}
        self.state_id = {id(n): g.id(n) for ns in net.state_nodes.values() for n in ns}
        top = []  # the row over the steps: outputs in time order
        rows: dict[int, list[str]] = {}  # depth in its step -> ops of every step
        kept_ids = {id(ns[t]) for ns in net.state_nodes.values()  # checkpoint=: ✓ states
                    for t in kept_steps(net)}
        for t in range(T):
            if t not in kept:
                span = self.span_of(t)
                if span is not None and t == span[0]:
                    self.elided = span
                    self.draw_elision()
                    if self.loss_reads_elided():
                        # the loss edge of the elided steps rises through a point of the
                        # outputs' row, between the kept steps' outputs, straight over the
                        # elided box: free, dot took it round through a kept step's box
                        self.emit(_foot(f"{self.eid()}_up", self.eid()))
                        top.append(f"{self.eid()}_up")
                continue
            inner, outside = [], []
            for n in by_step.get(t, []):
                (outside if n.op == "input" else inner).append(n)
            if self.rigid:
                self.emit(f"subgraph cluster_step_{t} {{")
                self.cluster_style(t)
                for bend, d, col in self.bends.values():
                    if col.startswith(f"step{t}_"):
                        self.emit(_foot(bend, col), 2)
                        rows.setdefault(d, []).append(bend)
            # held steps: each input in its step's box, in a column of its own, so under its
            # step whatever the number of steps (outside the boxes, dot placed the inputs'
            # row anywhere along the picture); else under the steps, by their feet
            padded = _padded(net, self.run, t)  # (a masked run's padding: which sequences)
            pads = [_pads_text(padded)] if padded else []
            for n in outside:
                self.node(g.id(n), "input", self.title(n, with_step=True), self.rows(n) + pads,
                          _mag(self.grad(n)), cut=self.v.is_cut(n), tooltip=self.tooltip(n),
                          hot=id(n) in self.path, indent=2 if self.rigid else 1,
                          group=self.input_column(t, n, inner))
                bottom.append(g.id(n))
                step_inputs.setdefault(t, []).append(g.id(n))
            if not self.rigid:
                self.emit(f"subgraph cluster_step_{t} {{")
                self.cluster_style(t)
            for d, level in sorted(levels[t].items()):
                ids = [g.id(n) for n in level]
                self.first_row.setdefault(t, ids)
                rows.setdefault(d, []).extend(ids)
                if len(ids) > 1:  # left to right in the cell's order
                    self.n_edges += len(ids) - 1
                    self.emit("{rank=same; " + " -> ".join(f'"{i}"' for i in ids)
                              + " [style=invis weight=100]}", 2)
            for n in inner:
                kind, state = self.kind(n)
                cut = self.v.is_cut(n)
                for i in n.inputs:
                    if self.is_const(i) and i.step is None:  # a copy of a constant per use
                        self.node(f"{g.id(i)}_{g.id(n)}", "const", self.title(i), [], cut=cut,
                                  indent=2)
                texts = self.rows(n)
                if n.role == "mask" and not texts:  # (its value is the lengths': what it does)
                    texts = pads or ["every sequence runs"]
                texts, mag = self.masked_state_rows(n, texts)
                self.node(g.id(n), kind, self.title(n, with_step=True), texts,
                          mag, cut=cut, indent=2, tooltip=self.tooltip(n),
                          hot=id(n) in self.path, state=state, group=self.column_of.get(id(n)),
                          kept=id(n) in kept_ids)
            self.cluster_end[t] = len(self.lines)  # where the step's junctions go
            self.emit("}")
            for n in inner:
                for name in self.outputs_of.get(id(n), []):
                    oid = _out_id(g.id(n), self.out_index[name])
                    # an output is never cut: the loss sends it its own gradient whatever
                    # the truncation; the cut is on the edge from its step into it
                    self.node(oid, "output", _hn(name) + f"<sub>{t}</sub>",
                              self.output_rows(name, t), self.output_mag(name, t),
                              hot=self.output_hot(name, t),
                              tooltip=f"output {name} at step {t}",
                              group=self.column_of.get(id(n)))  # straight over its op
                    top.append(oid)
        self.same_widths(by_step)
        self.row(bottom)
        self.row(top)
        ghosts = set(self.ghost.values())
        for d, ids in init_rows.items():
            chain = [i for i in ids if i in ghosts] + rows.get(d, [])[:1]
            if len(chain) > 1:  # (no edge joins an initial state to them: see init_states)
                self.n_edges += len(chain) - 1
                self.emit("{rank=same; " + " -> ".join(f'"{i}"' for i in chain)
                          + " [style=invis]}")
            rows[d] = ids + rows.get(d, [])
        for d in sorted(rows):  # row d of every step on one rank: the steps look alike
            if len(rows[d]) > 1:
                self.emit("{rank=same; " + " ".join(f'"{i}"' for i in rows[d]) + "}")
        if not self.rigid:  # the stand-ins under the first step
            self.under(shared, bottom)
            step_inputs[t0] = list(self.ghost.values()) + step_inputs.get(t0, [])
        self.ops_edges(shared, step_inputs)
        if self.rigid:  # the shared values no bus carries: a row under everything
            self.bottom_ids = [] if any(g.id(n) not in self.on_bus for n in shared) \
                else list(bottom)  # (else the inputs are the lowest row)
            rest = [n for n in shared if g.id(n) not in self.on_bus]
            self.param_row([p for p in params if g.id(p) not in self.on_bus])
            self.under(rest, bottom)
        if bottom and not self.in_figure and self.o["legend"]:
            # the legend in a row of its own under the steps' inputs, under the middle
            # step: beside the last step, it widened the picture by its own width
            self.legend_under = bottom[len(bottom) // 2]
            self.n_edges += 1  # (drawn with the legend: see build())

    def param_row(self, params: list) -> None:
        """The parameters as one row, under everything, on the side they are read."""
        if params:
            self.n_edges += len(params) - 1
            self.emit("{rank=source; " + " -> ".join(f'"{self.g.id(p)}"' for p in params)
                      + (" [style=invis]" if len(params) > 1 else "") + "}")

    def state_bends(self, levels: dict) -> dict:
        """Where each state leaves its step (held steps only): an invisible bend point in
        the step's box, in the row of each op of the next step that reads the state, in a
        column of its own right of the step's columns (the lowest row's leftmost). The
        state's edge runs down its step into the bend, then level into the next step, to
        the op reading it, as the initial state comes into the first step: dot routes every
        state edge inside the step it leaves, so it can neither wander round the picture
        nor back over a step, however many steps there are. The last step has its bends
        too (invisible edges reach them), so every step is laid out alike.

        Returns ``(id of the state, row of its reader) -> (bend id, row, column)``; a state
        read in its own row or higher gets none (its edge is drawn as before)."""
        g, net = self.g, self.net
        kept = sorted(levels)
        row_of = {id(n): d for lv in levels.values() for d, level in lv.items()
                  for n in level}
        bends = {}
        for t in kept:
            found = []
            for k, (s, ns) in enumerate(net.state_nodes.items()):
                into = net.init_nodes[s] if t == kept[0] else ns[t - 1]
                d = row_of.get(id(ns[t]))
                if d is None:
                    continue
                rows = {row_of[id(n)] for level in levels[t].values() for n in level
                        if any(i is into for i in n.inputs)}
                found += [(r, k, ns[t]) for r in rows if r < d]
            cols = self.column_order[t]
            for r, k, n in sorted(found, key=lambda f: (f[0], f[1])):
                col = f"step{t}_bend{k}_{r}"
                cols.append(col)
                bends[(id(n), r)] = (f"{g.id(n)}_out_row{r}", r, col)
        return bends

    def input_column(self, t: int, n: Node, inner: list) -> str | None:
        """The column of its own of the input ``n`` of step ``t``: just right of the column
        of its first reader, in the order of every step's columns, so that each step's input
        stands at one place under its step, whatever the number of steps (outside the steps'
        boxes, dot placed the inputs' row anywhere along the picture)."""
        reader = next((m for m in inner if any(i is n for i in m.inputs)), None)
        col = self.column_of.get(id(reader)) if reader is not None else None
        if col is None or not self.rigid:
            return None
        cols = self.column_order[t]
        own = f"{col}_in{sum(c.startswith(col + '_in') for c in cols)}"
        cols.insert(cols.index(col) + 1, own)
        self.input_col[self.g.id(n)] = own
        return own

    def init_states(self, levels: dict) -> dict:
        """Draw the initial states, left of the first step, each in the row of its first
        reader there (its edge runs straight in from the left); an edge into a reader in a
        higher row turns into that reader's row just left of the step, at an invisible bend
        point (``self.init_via``: (initial state, reader) -> the bend's id). Returns depth ->
        the ids of the initial states and bends in that row.

        Why this holds them left: Graphviz orders a node outside a cluster against the
        cluster only by counting crossings, a heuristic that puts a state's long edge on
        either side of the first step's box. An edge between a node outside a cluster and a
        node inside, on the same rank, takes no part in that ordering: each initial state,
        with its bends, is then a connected component of its own in the ordering. dot lays
        out components side by side, left to right in the order their first nodes were
        declared; the initial states are declared before any other node, so they come
        first, left of every step, whatever the cell and the number of steps."""
        g, net = self.g, self.net
        row_of = {id(n): d for d, level in levels.items() for n in level}
        place = {id(n): k for level in levels.values() for k, n in enumerate(level)}
        self.init_via: dict = {}
        found = []
        for s, n in net.init_nodes.items():
            readers = [m for level in levels.values() for m in level
                       if any(i is n for i in m.inputs)]
            readers.sort(key=lambda m: (row_of[id(m)], place[id(m)]))
            found.append((s, n, readers))
        # in a row of two, the one read further right declared first: further left
        found.sort(key=lambda f: -place[id(f[2][0])] if f[2] else 0)
        rows: dict = {}
        self.init_ids = [g.id(n) for _, n, _ in found]
        for s, n, readers in found:
            self.node(g.id(n), "state", self.title(n), self.rows(n), _mag(self.grad(n)),
                      tooltip=f"initial state {s}", hot=id(n) in self.path, state=True,
                      cut=self.v.is_cut(net.state_nodes[s][0]))
            d0 = row_of[id(readers[0])] if readers else min(levels, default=0)
            rows.setdefault(d0, []).append(g.id(n))
        for _, n, readers in found:
            d0 = row_of[id(readers[0])] if readers else None
            for m in readers:
                if row_of[id(m)] != d0:
                    bend = f"{g.id(n)}_to_{g.id(m)}"
                    self.emit(_foot(bend))
                    self.init_via[(id(n), id(m))] = bend
                    rows.setdefault(row_of[id(m)], []).append(bend)
        return rows

    def same_widths(self, by_step: dict) -> None:
        """Each op drawn as wide in every step: as wide as the widest of its copies, by an
        upper estimate of the labels' widths (the labels differ by their values). With every
        step's columns in the same order, every step's cluster is then as wide as the
        others, and its outputs stand over it as in the others."""
        o = self.o
        factor = (o["fontsize"] or _TITLE_PT[o["theme"]]) / 12 * o["scale"]
        widest: dict = {}
        drawn = []
        for ns in by_step.values():
            for n in ns:
                at = self.node_at.get(self.g.id(n))
                if at is None:
                    continue
                key = id(n.origin) if n.origin is not None else (n.name, n.op)
                w = _label_points(at[1], factor) + _BOX_PAD * factor
                widest[key] = max(widest.get(key, 0.0), w)
                drawn.append((at[0], key))
        for k, key in drawn:
            self.lines[k] = self.lines[k].replace(" [", f' [width="{widest[key] / 72:.3f}" ', 1)

    def bus_groups(self, shared: list, by_step: dict) -> dict:
        """op -> the Graphviz group it shares with the junction of the bus feeding it (the
        edge between them is then kept straight and uncrossed): each op that reads one
        shared node read in several steps, the first such it reads."""
        g, ids = self.g, {id(n) for n in shared}
        steps: dict = {}
        for t, ns in by_step.items():
            for n in ns:
                for i in n.inputs:
                    if id(i) in ids:
                        steps.setdefault(id(i), set()).add(t)
        firsts = {a for a, _ in getattr(self, "spans", ())}
        if firsts:
            for n in self.g.nodes:
                if n.step in firsts:
                    for i in n.inputs:
                        if id(i) in ids:
                            steps.setdefault(id(i), set()).add(n.step)
        groups, uses = {}, {}
        for t, ns in by_step.items():
            for n in ns:
                for i in n.inputs:
                    if id(i) in ids and len(steps[id(i)]) > 1:
                        j = f"{g.id(i)}_fan_{t}"
                        uses[j] = uses.get(j, 0) + 1
                        groups.setdefault(id(n), j)
        self.n_buses = sum(len(ts) > 1 for ts in steps.values())
        # a junction feeding two ops keeps neither straight
        groups = {k: j for k, j in groups.items() if uses[j] == 1}
        self.grouped = set(groups.values())
        return groups

    def step_columns(self, t: int, levels: dict, groups: dict) -> dict:
        """op -> the Graphviz group of its column in step ``t``, and ``levels``' rows put in
        the columns' order (left to right).

        Row by row from the bottom, an op stands in the column of its first input computed
        in the step when that input is the column's top (the edge between them then runs
        straight up through empty rows); of several ops of a row reading one such top, the
        middle one does, so the row is centred over the op it reads. Any other op starts a
        column of its own, just right of its first input's column (just left of it, if it
        stands left of the middle one; else right of the column of the op left of it in
        its row). An op fed by a bus junction
        (``groups``) always starts one, over its junction (above an op, the junction's edge
        would run through it). The columns are the same in every step, each step's names its
        own: no edge between steps is pulled straight."""
        def reads_prev(n) -> bool:  # the previous step's values (or the initial state)
            return any(i.op == "init" or (i.step is not None and i.step != n.step
                                          and i.op != "input") for i in n.inputs)

        col: dict[int, int] = {}
        top: dict[int, int] = {}  # column -> the id of its highest op so far
        order: list[int] = []  # the columns left to right
        entry: set = set()  # the columns holding an op that reads the previous step
        for d in sorted(levels):
            used: list = []
            stack: dict = {}  # column -> the ops of this row that may stand on it
            for n in levels[d]:
                spine = next((i for i in n.inputs if id(i) in col), None)
                if spine is None or id(n) in groups:
                    continue
                sc = col[id(spine)]
                # (a next state never over an op reading the previous state, an LSTM's
                # c_next over f ⊙ c: the column would have to stand both first, where the
                # state comes in, and last, where it leaves)
                if top[sc] == id(spine) and not (n.role == "next_state" and sc in entry):
                    stack.setdefault(sc, []).append(id(n))
            # of several ops reading the top of one column (an LSTM's gates split four
            # ways), the middle one stands on it, the others left and right of it: the
            # row is centred over the op it reads instead of hanging off to its right (in a
            # masked net and in a figure of two pictures too: there, uncentred, an LSTM's
            # step was 893 and 885 points wide, 724 and 735 centred)
            mid = {sc: len(ks) // 2 if len(ks) > 2 else 0 for sc, ks in stack.items()}
            on = {ks[mid[sc]]: sc for sc, ks in stack.items()}
            for n in levels[d]:
                c = on.get(id(n))
                spine = next((i for i in n.inputs if id(i) in col), None)
                if c is None:
                    c = len(order)
                    after = col[id(spine)] if spine is not None else \
                        (used[-1] if used else None)
                    k = order.index(after) + 1 if after is not None else 0
                    if spine is not None and id(n) in stack.get(after, []) and \
                            stack[after].index(id(n)) < mid[after]:
                        k -= 1  # (left of the middle one: before its column)
                    while k < len(order) and order[k] in used:  # after this row's new ones
                        k += 1
                    order.insert(k, c)
                used.append(c)
                col[id(n)] = c
                top[c] = id(n)
                if reads_prev(n):
                    entry.add(c)
        # the state comes in on the left and leaves on the right: the columns of ops reading
        # the previous step's values first, those of the next states last, the higher next
        # state further right (its edge runs down the step's right side, outside the
        # others), as the edges between steps cross no column then
        key: dict[int, tuple] = {}
        for d in levels:
            for n in levels[d]:
                k = (2, d) if n.role == "next_state" else (0, 0) if reads_prev(n) else (1, 0)
                c = col[id(n)]
                key[c] = max(key.get(c, k), k) if k != (1, 0) else key.get(c, (1, 0))
        order.sort(key=lambda c: key.get(c, (1, 0)))
        rank = {c: k for k, c in enumerate(order)}
        for d in levels:
            levels[d].sort(key=lambda n: rank[col[id(n)]])
        self.column_order[t] = [f"step{t}_col{c}" for c in order]
        return {k: f"step{t}_col{c}" for k, c in col.items()}

    def step_levels(self, inner: list) -> dict:
        """The rows of one step's ops: depth -> ops left to right.

        An op's row is its depth (the longest op path to it from the values entering the
        step); an op read only later in the step (an LSTM's output gate) is lifted to the row
        under its first reader, so it does not sit far below it on a long edge. Within a row
        the ops stand in the order of the cell's graph (its formulas read left to right:
        ``x @ W_ih`` before ``h @ W_hh``). Every step is a copy of the cell, so every step
        gets the same rows in the same order."""
        ids = {id(n) for n in inner}
        depth: dict[int, int] = {}
        for n in inner:  # graph order is topological
            ins = [depth[id(i)] for i in n.inputs if id(i) in ids]
            depth[id(n)] = 1 + max(ins) if ins else 0
        readers: dict[int, list[int]] = {}
        for n in inner:
            for i in n.inputs:
                if id(i) in ids:
                    readers.setdefault(id(i), []).append(id(n))
        kept = {id(n) for n in inner if n.role in ("next_state", "output")}
        for ns in self.net.output_nodes.values():
            kept.update(id(n) for n in ns)
        for n in reversed(inner):
            r = readers.get(id(n))
            # (a value the step makes from nothing, as a masked net's mask and zero, too:
            # at the bottom, its edge ran up through the whole step into the op on top, and
            # drove the state edges into the step round the step's box)
            if r and (depth[id(n)] > 0 or not n.inputs) and id(n) not in kept:
                depth[id(n)] = max(depth[id(n)], min(depth[k] for k in r) - 1)
        # the side: ops that read the previous step's state (it comes in from the left) stand
        # left of ops that read only this step's inputs (they come in from below)
        side: dict[int, int] = {}
        for n in inner:
            own = [side[id(i)] for i in n.inputs if id(i) in ids]
            outer = [0 if i.op in ("init", "state") or (i.step is not None and i.op != "input")
                     else 1 if i.op == "input" else 2 for i in n.inputs if id(i) not in ids]
            side[id(n)] = min(own + outer, default=2)
        levels: dict[int, list] = {}
        for _, n in sorted(enumerate(inner), key=lambda kn: (side[id(kn[1])], kn[0])):
            levels.setdefault(depth[id(n)], []).append(n)
        self.side.update(side)
        return levels

    def under(self, shared: list[Node], bottom: list[str], pull: bool = True) -> None:
        """The parameters' row under the inputs' row, centred under the middle step; with
        ``pull=False`` the row only stands lower (weightless edges: the parameters then sit
        where their trunks rise, and pull no input off its step)."""
        if shared and bottom:
            mid = bottom[len(bottom) // 2]
            self.n_edges += len(shared)  # invisible, but laid out by dot all the same
            extra = "" if pull else " weight=0"
            for p in shared:
                self.emit(f'"{self.g.id(p)}" -> "{mid}" [style=invis{extra}]')

    def cluster_style(self, t: int) -> None:
        t_ = self.t
        cut = self.net.truncate is not None and t < self.T - self.net.truncate
        label = f"t = {t}" + (" (cut)" if cut else "")
        self.emit(f'label="{label}" style="rounded,filled" color="{t_["cluster"]}" '
                  f'fillcolor="{t_["cluster_bg"]}" fontcolor="{t_["muted"]}" fontsize=11',
                  2)

    def draw_elision(self) -> None:
        a, b = self.elided
        n = b - a + 1
        rows = [f"steps {a} … {b}"]
        hidden = sum(1 for t in kept_steps(self.net) if a <= t <= b)
        if hidden:  # checkpoint=: the ✓ states this column stands for
            rows.append(f"{hidden} kept state{'s' if hidden > 1 else ''} ✓ among them")
        got = _elided_numbers(self.elided_mags())
        if self.show_grads() and got is not None:
            rows.append(f"‖∂{self.loss_sym()}/∂state‖ over them: {_h(_num(got[1]))}")
            rows.append(f"per step: {_h(got[2])}")
        self.node(self.eid(), "elide", f"… {n} steps …", rows, got[0] if got else None,
                  cut=self.elided_cut(), group=self.eid())

    def elided_cut(self) -> bool:
        """Whether truncation sends the elided steps no gradient (an elision never mixes
        cut and kept steps: see _elision): the box, and every edge into it, greyed."""
        states = [ns[self.elided[1]] for ns in self.net.state_nodes.values()]
        return bool(states) and self.v.is_cut(states[0])

    def loss_reads_elided(self) -> bool:
        """Whether the loss reads a value of a step of the elided run drawn (its edge
        leaves the elided box)."""
        a, b = self.elided
        return any(n.step is not None and a <= n.step <= b for n, _, _ in self.seeded_reads)

    def port(self, side: str) -> str:
        """The compass point of a node's side for this picture's ``rankdir``: ``"next"``
        faces the next step (the next node of a row), ``"prev"`` the step before, ``"up"``
        the outputs (the rank after)."""
        rankdir = self.o["rankdir"] or "BT"
        return {"BT": {"next": "e", "prev": "w", "up": "n"},
                "TB": {"next": "e", "prev": "w", "up": "s"},
                "LR": {"next": "s", "prev": "n", "up": "e"},
                "RL": {"next": "s", "prev": "n", "up": "w"}}[rankdir][side]

    def skip_ports(self, reader: Node, label) -> tuple | None:
        """The ports ``(source's, reader's)`` of a level state edge into a next state reading
        it (a masked net's ``h_kept = where(mask, h_next, h_prev)``: the state a padded
        sequence keeps): out of the state's top and into the reader's top corner on the side
        of the step before, so that dot routes it over the row, where it crosses only the
        edges up to the outputs (under the row, it crossed every edge of the mask's). Not
        into the top itself: with both ends at the top of a node (a kept state is read by
        the next one, which the one after reads in turn), dot's router failed in every
        rankdir ("Unable to reclaim box space"; the edge was drawn along the tops of the
        nodes between). Top to bottom (``rankdir="TB"``), dot failed with one end at the top
        too, and routes the edge over the row with neither: out of a corner and into a
        corner (found by laying out LSTM and two-state cells of 2 to 4 steps, batches of 1
        and 3, the final states read or not, with values and without). ``None`` for any
        other reader, or an edge with a label."""
        if reader.role != "next_state" or label:
            return None
        up = self.port("up")

        def corner(side):  # (a compass corner: n or s first)
            return up + side if up in "ns" else side + up

        if up == "s":
            return corner(self.port("next")), corner(self.port("prev"))
        return up, corner(self.port("prev"))

    def forward_edge(self, a: str, b: str, **kw) -> None:
        """A state edge from one step to a later one. It is written reversed with
        ``dir=back`` (the arrow still points from ``a`` to ``b``): the next step's first ops
        then sit low in their cluster, so the edge runs down between the clusters instead of
        looping round the whole picture."""
        self.edge(b, a, "recurrent", back=True, **kw)

    def ops_edges(self, shared: list[Node], step_inputs: dict) -> None:
        g, net = self.g, self.net
        shared_ids = {id(n) for n in shared}
        state_ids = {id(n) for ns in net.state_nodes.values() for n in ns}
        state_ids |= {id(n) for n in net.init_nodes.values()}
        done: set = set()
        fan: dict = {}  # shared node -> the step nodes reading it, drawn through one trunk
        for n in g.nodes:
            if id(n) in shared_ids:
                for i in n.inputs:  # shared ops (W.T) read shared nodes
                    self.edge(g.id(i), g.id(n), hot=self.on_path(i, n))
                continue
            if n.step is None:
                continue
            if n.step not in self.kept:
                span = self.span_of(n.step)
                if span is not None and n.step == span[0]:
                    self.elided = span
                    e = self.eid()
                    for i in n.inputs:
                        from_kept = i.step is not None and i.step in self.kept
                        if id(i) in state_ids and (from_kept or i.op == "init") and \
                                (g.id(i), e) not in done:
                            done.add((g.id(i), e))
                            self.forward_edge(g.id(i), e, cut=self.elided_cut())
                continue
            cut = self.v.is_cut(n)
            # the op straight over its first input of the same step (one edge heavier
            # than the others breaks dot's ties alike in every step)
            spine = next((i for i in n.inputs if i.step == n.step and i.op != "input"), None)
            for k, i in enumerate(n.inputs):
                label = self.derivative(i, n, k)
                hot = self.on_path(i, n)
                if id(i) in shared_ids:
                    fan.setdefault(g.id(i), []).append((g.id(n), label, hot, cut, n.step, 1))
                elif i.step is not None and i.step not in self.kept:
                    e = self.eid(self.span_of(i.step))
                    if (e, g.id(n)) not in done:
                        done.add((e, g.id(n)))
                        self.forward_edge(e, g.id(n), cut=cut)
                elif self.is_const(i) and i.step is None:
                    self.edge(f"{g.id(i)}_{g.id(n)}", g.id(n), label=label, cut=cut)
                elif i.op == "init":  # from the left, in the reader's row (init_states())
                    bend = self.init_via.get((id(i), id(n)))
                    if bend is not None and (g.id(i), bend) not in done:
                        done.add((g.id(i), bend))  # (once for a reader reading it twice)
                        self.edge(g.id(i), bend, "recurrent", hot=hot, cut=cut, arrow=False)
                    self.edge(bend or g.id(i), g.id(n), "recurrent", label=label, hot=hot,
                              cut=cut, ports=self.skip_ports(n, label))
                    ghost = self.ghost.get(id(i))
                    if ghost is not None:
                        self.n_edges += 1
                        self.emit(f'"{ghost}" -> "{g.id(n)}" [style=invis]')
                elif i.step is not None and i.step != n.step:
                    bend = self.bends.get((id(i), self.row_of_id.get(g.id(n))), (None,))[0]
                    if bend is None:
                        level = self.row_of_id.get(g.id(i)) == self.row_of_id.get(g.id(n))
                        ports = self.skip_ports(n, label) if level else None
                        self.forward_edge(g.id(i), g.id(n), label=label, hot=hot, cut=cut,
                                          ports=ports and ports[::-1])  # (written reversed)
                        continue
                    if (g.id(i), bend) not in done:  # down its step (state_bends())
                        done.add((g.id(i), bend))
                        if cut:  # (one edge: greyed as its ends are)
                            self.cut_ids.add(bend)
                        self.forward_edge(g.id(i), bend, hot=hot, cut=cut, arrow=False)
                    # (level into the next step, from the east of the bend to the west of
                    # the op: without ports dot routes it twice, two curves bowing apart)
                    self.edge(bend, g.id(n), "recurrent", label=label, hot=hot,
                              cut=cut or self.v.is_cut(i),
                              ports=None if label else (self.port("next"), self.port("prev")))
                else:
                    # heavy within a step: each step keeps the cell's own layout, which
                    # the edges between steps cannot pull out of shape
                    self.edge(g.id(i), g.id(n), label=label, hot=hot, cut=cut,
                              weight=None if i.op == "input" else 120 if i is spine else 100)
                    if i.op == "input":  # the input straight under the op reading it
                        # (held steps: under every bus, each a row of its own: not in a
                        # bus's row, which would run round it)
                        low = f" minlen={self.n_buses + 1}" if self.rigid else ""
                        if low:
                            self.lines[-1] = self.lines[-1].replace(" [", f" [{low[1:]} ", 1)
                        self.n_edges += 1
                        self.emit(f'"{g.id(i)}" -> "{g.id(n)}" [style=invis weight=4{low}]')
            for name in self.outputs_of.get(id(n), []):
                # heavy: the output straight over the op computing it, not pulled
                # aside by its edge to the loss
                self.edge(g.id(n), _out_id(g.id(n), self.out_index[name]),
                          hot=self.output_hot(name, n.step), cut=cut, weight=20)
        for span in self.spans:
            self.elided = span
            n = span[1] - span[0] + 1
            read = {id(i) for m in g.nodes if m.step == span[0] for i in m.inputs}
            for p in shared:
                if id(p) in read:
                    fan.setdefault(g.id(p), []).append(
                        (self.eid(), f"× {n}", False, self.elided_cut(), span[0], n))
        for (sid, _), (bend, _, _) in self.bends.items():  # the last step's: invisible
            src = self.state_id[sid]
            if (src, bend) not in done:
                self.n_edges += 1
                self.emit(f'"{bend}" -> "{src}" [style=invis]')
        self.lowest: dict = {}  # step -> its lowest junction
        self.trunks(fan)
        if not self.rigid:
            for t, ids in sorted(step_inputs.items()):  # each step's inputs under its buses
                if t in self.lowest:
                    self.n_edges += len(ids)
                    for i in ids:
                        self.emit(f'"{i}" -> "{self.lowest[t]}" [style=invis weight=0]')
        else:
            self.feet(step_inputs)

    def feet(self, step_inputs: dict) -> None:
        """Each step's columns held in order: under the step's lowest junction, one
        invisible foot per column, the feet chained left to right (heavy: the columns stand
        as close as their nodes allow), and each column a chain from its foot up through its
        junction and its ops. The links of the chains are drawn several times over,
        invisibly: dot counts each crossing of each copy, so it orders every step's columns
        as the feet stand, the pull of the edges between steps notwithstanding. Every step is
        then the same rigid picture, its cluster as wide as the others; the step's inputs
        (``step_inputs``: step -> ids) stand under its feet. A column of ops that no
        junction feeds stands on no foot: its chain's line down to the feet took a place in
        every row under it, right of the ops there, and the step grew as a staircase; the
        order of its rows holds it, and it stands over the rows under it."""
        order = self.column_order
        self.floor: list = []  # each step's first foot (ranked by no edge from below)
        members: dict = {}  # column -> its nodes, bottom to top: its junction, then its ops
        for j, c in self.junction_group.items():
            if j in self.junctions:
                members.setdefault(c, []).append(j)
        for t in order:
            for _d, ids in sorted(self.step_rows.get(t, {}).items()):
                for i in ids:
                    members.setdefault(self.column_of_id[i], []).append(i)
        for c in self.input_col.values():  # an input's column: its foot over it, alone
            members.setdefault(c, [])
        for bend, _, c in self.bends.values():  # a state's bend, alone in its column
            members.setdefault(c, []).append(bend)
        # a column of ops alone (no junction under it, no input, no bend) stands on no
        # foot: its line down to the feet ran through the gaps of every row under it, so
        # that the columns starting high up (an LSTM's gates) stood right of those under
        # them, and the step grew as a staircase; the rows' own order holds them
        lined = {c for c, ms in members.items() if not ms or ms[0] in self.junctions}
        lined |= {c for _, _, c in self.bends.values()}
        # (and the column of each op drawn with an output over it)
        lined |= {self.column_of[k] for k in self.outputs_of if k in self.column_of}
        for cols in order.values():
            if not any(c in lined for c in cols):
                lined.update(cols)  # (no bus feeds the step: every column on its foot)
        if self.in_figure:  # (a figure of two pictures holds its steps by their feet)
            lined = set(members)
        # (in a figure of two pictures, an elided view's column of an op with an output over
        # it stands straight over its foot: the figure holds the output of step t of the
        # lower picture under that foot in the upper one, and the lower picture's legend by
        # the foot of its last step; unheld, the foot stood a part of a step aside, and the
        # two legends as far apart)
        plumb = {self.column_of[k] for k in self.outputs_of if k in self.column_of} \
            if self.in_figure and self.detail != "ops" else set()
        feet = []
        for t, cols in sorted(order.items()):
            cols = [c for c in cols if c in lined]
            ids = [f"{c}_foot" for c in cols if c in members]
            for c in cols:
                if c not in members:
                    continue
                chain = [f"{c}_foot"] + members[c]
                for lo, hi in zip(chain, chain[1:]):
                    if (lo, hi) in self.drawn_links:
                        continue  # (a parallel copy would bend the drawn edge)
                    self.n_edges += _FOOT_COPIES
                    for k in range(_FOOT_COPIES):
                        w = _PLUMB_WEIGHT if c in plumb and not k else 0
                        self.emit(f'"{lo}" -> "{hi}" [style=invis weight={w}]')
            if len(ids) > 1:
                self.n_edges += len(ids) - 1
                self.emit("{rank=same; " + " -> ".join(f'"{i}"' for i in ids)
                          + " [style=invis weight=100]}")
            if ids and t in self.lowest:
                self.n_edges += 1
                # (ranked, as no edge from below holds the feet up: they sank to the
                # bottom of a figure of two pictures, and the steps' boxes with them)
                self.emit(f'"{ids[0]}" -> "{self.lowest[t]}" [style=invis weight=1]')
            feet += ids
            if ids:  # (what a figure of two pictures holds over the lower one: see bottom_ids)
                self.floor.append(ids[0])
            for i in step_inputs.get(t, []) if ids else []:
                if i in self.input_col:  # (its column holds it: a link to its foot would
                    continue  # pull the feet out of their order)
                self.n_edges += 1
                self.emit(f'"{i}" -> "{ids[0]}" [style=invis weight=0]')
        if feet:
            self.emit("{rank=same; " + " ".join(f'"{i}"' for i in feet) + "}")
            ends = [(a, b) for a, b in zip(feet, feet[1:])
                    if _step_of_foot(a) != _step_of_foot(b)]
            if ends:  # the steps left to right in time order
                self.n_edges += len(ends)
                self.emit("{rank=same; edge [style=invis weight=0] "
                          + " ".join(f'"{a}" -> "{b}";' for a, b in ends) + "}")
            for t in sorted(order, reverse=True):  # each step's feet in its cluster
                if t in self.cluster_end:
                    self.lines.insert(self.cluster_end[t], "".join(
                        "    " + _foot(f"{c}_foot", c) + "\n" for c in order[t]
                        if c in members and c in lined))

    def trunks(self, fan: dict) -> None:
        """Each shared node's fan-out as a bus: one junction per step, under the step it
        feeds, the junctions joined left to right in time order, and the trunk coming up from
        the shared node once, into the first junction, labelled with the number of steps that
        read it (× T). From each junction one short edge goes up to each op of its step that
        reads the shared node: no edge runs across the picture to another step.

        ``fan`` maps a shared node's id to its uses ``(reader, label, hot, cut, step, steps)``:
        ``step`` orders the junctions (an elided run of steps sits at its first step) and
        ``steps`` is how many steps the use stands for. Each bus is one row, the rows in the
        order of the parameters' row, the first on top; each junction is in its step's
        cluster, under the step's first row of ops."""
        buses = []
        side = getattr(self, "shared_side", {})
        for src, uses in fan.items():
            at: dict = {}
            for u in uses:
                at.setdefault(u[4], []).append(u)
            if len(at) < 2:  # one step reads it: its edges go straight there
                for dst, label, hot, cut, _, _ in uses:
                    self.edge(src, dst, "shared", label=label, hot=hot, cut=cut)
                continue
            buses.append((side.get(src, 2), src, at))
        if not buses:
            return
        buses.sort(key=lambda b: b[0])  # stable: the shared nodes' order within a side
        times = sorted({t for _, _, at in buses for t in at})
        # step by step, each step's junctions in the order of its ops: dot's first ordering
        # of a rank follows the input, and keeps it where nothing better is to be had
        for t in times:
            for _, src, at in buses:
                if t in at:
                    self.n_nodes += 1
                    n = max(u[5] for u in at[t])
                    what = f"steps {t} … {t + n - 1}" if n > 1 else f"step {t}"
                    j = f"{src}_fan_{t}"
                    self.junctions.add(j)
                    self.emit(f'"{j}" ' + _attrs({
                        "shape": "point", "width": "0.09", "color": self.t["shared_edge"],
                        "tooltip": f"into {what}",
                        "group": self.junction_group.get(j)}))
        for t in times:
            for _, src, at in buses:
                j = f"{src}_fan_{t}"
                for dst, label, hot, cut, _, _ in at.get(t, []):
                    # heavy: the junction straight under the op it feeds (or under its own
                    # port of the step box it feeds, in the step view)
                    port = getattr(self, "read_port", {}).get(src)
                    # (its label, a local derivative ∂ or an elided box's "× n", an
                    # xlabel: as a label, each took a node in the ranks the edge crossed,
                    # which bent the buses round them)
                    self.edge(j, dst, "shared", label=label, hot=hot, cut=cut,
                              weight=getattr(self, "read_weight", 50),
                              ports=("n", f"{port}:s") if port else None, xlabel=True)
        rows = []
        for _, src, at in buses:
            ts = sorted(at)
            js = [f"{src}_fan_{t}" for t in ts]
            feed = self.bus_feed(src) if getattr(self, "rigid", False) and \
                hasattr(self, "on_bus") else []
            if getattr(self, "detail", None) == "steps":
                feed = [src]  # (the step view's parameter at its bus's left end, as above)
            rows.append((feed[0] if feed else js[0], js))  # (its head: see below)
            # one row (an ops view of held steps: with the shared values feeding it, at its
            # left end: its trunk is a short level edge, and no trunk crosses another)
            self.emit("{rank=same; " + " ".join(f'"{j}"' for j in feed + js) + "}")
            # the trunk into the first junction, the bus on from it left to right in time
            # order (no arrowheads: it carries one value to every step)
            count = sum(max(u[5] for u in at[t]) for t in ts)
            hot = [any(u[2] for u in at[t]) for t in ts]
            # (level, from the left of the steps: an xlabel, as a level edge's label would
            # take a rank of its own between the bus's row and the one above; in the ops
            # view at the trunk's start, next to the shared value: as an xlabel dot set it
            # half way, in the first step, on its shared-weight edges)
            ops = bool(feed) and getattr(self, "detail", None) != "steps"
            self.edge(src, js[0], "trunk", label=f"× {count}", hot=any(hot), arrow=False,
                      xlabel=bool(feed), at_tail=ops)
            for k in range(len(js) - 1):  # weightless: the junctions follow their ops
                # (op views: from the east of one junction to the west of the next; without
                # ports, dot routes a level edge between two step boxes twice, two curves
                # bowing apart. Not between the step view's junctions: there, dot mangles
                # the arrow attributes of an edge with ports, and draws it once anyway)
                ports = (self.port("next"), self.port("prev")) \
                    if getattr(self, "detail", None) != "steps" else None
                self.edge(js[k], js[k + 1], "trunk", hot=any(hot[k + 1:]), arrow=False,
                          weight=0, ports=ports)
        first_row = self.first_row
        # each step's junctions in its cluster, under its ops: dot orders them with the
        # step's ops (outside, it places them all where the cluster stands, in any order)
        for t in sorted(times, reverse=True):  # from the end: the earlier lines stay put
            js = " ".join(f'"{src}_fan_{t}"' for _, src, at in buses if t in at)
            if t in self.cluster_end:
                self.lines.insert(self.cluster_end[t], "    " + js + "\n")
            elif self.span_of(t) is not None:
                # under the elided steps' node, a column (an invisible cluster keeps it one;
                # with a label of its own, the empty one: a cluster takes the graph's label,
                # the title, and stood as wide as the title, with a gap beside the box)
                e = self.eid(self.span_of(t))
                self.emit(f'subgraph cluster_{e} {{ label="" style=invis "{e}" {js} }}')
        drawn = {(f"{src}_fan_{t}", u[0]) for _, src, at in buses for t, us in at.items()
                 for u in us}
        # the rows stacked, the first on top: its first junction under the first step's
        # first row of ops, each other row under the one before by what feeds them, left of
        # the steps, where there is (linked by their first junctions, the rows zig-zagged
        # through the first step's columns, and drew a junction there off the op it feeds);
        # in a figure of two pictures by their first junctions, which hold the lower
        # picture's steps under the upper one's
        top = first_row[min(first_row)]  # (the op of it the first row feeds, if any)
        links = [(rows[0][1][0], next((op for op in top if (rows[0][1][0], op) in drawn),
                                      top[0]))] + \
            [(b[0], a[0]) if a[0] not in a[1] and b[0] not in b[1] and not self.in_figure
             else (b[1][0], a[1][0]) for a, b in zip(rows, rows[1:])]
        for below, above in links:
            if (below, above) not in drawn:  # (a second edge would bend the drawn one)
                self.n_edges += 1
                self.emit(f'"{below}" -> "{above}" [style=invis weight=0]')
        if getattr(self, "detail", None) == "steps":
            # each later step's junctions tied one under the other in the buses' order (an
            # order for dot only: with the parameters in the buses' rows, it set a step's
            # last junction left of the others', its edge hooking round theirs into its port)
            for t in times[1:]:
                js = [f"{src}_fan_{t}" for _, src, at in buses if t in at]
                for above, below in zip(js, js[1:]):
                    self.n_edges += 1
                    self.emit(f'"{below}" -> "{above}" [style=invis weight=0]')
        self.lowest = {t: next(f"{src}_fan_{t}" for _, src, at in reversed(buses) if t in at)
                       for t in times}

    def bus_feed(self, src: str) -> list[str]:
        """The ids of the shared node ``src`` and of the shared nodes it is computed from
        (``weight_hh`` of ``weight_hhᵀ``), not yet on a bus row, in the order they feed it:
        they stand in the row of ``src``'s bus, left of the first step (held steps only).

        Why they stand left: an edge between a node outside a cluster and one inside, on
        the same rank, takes no part in dot's ordering (see init_states()), so each such
        group is a component of its own, laid out before the steps."""
        g = self.g
        node = {g.id(n): n for n in self.shared_nodes()}
        out, todo = [], [src]
        while todo:
            i = todo.pop()
            if i in self.on_bus or i not in node:
                continue
            self.on_bus.add(i)
            out.append(i)
            todo.extend(g.id(m) for m in reversed(node[i].inputs))
        return out[::-1]

    def on_path(self, a: Node, b: Node) -> bool:
        return id(a) in self.path and id(b) in self.path

    # steps detail
    def build_steps(self) -> None:
        g, net, T = self.g, self.net, self.T
        rank = self.param_rank()
        shared = sorted((n for n in self.shared_nodes() if n.op == "param"),
                        key=lambda n: rank[g.id(n)])
        for n in shared:
            self.node(g.id(n), "param", self.title(n), self.param_rows(n), _mag(self.grad(n)),
                      tooltip=self.tooltip(n))
        states = list(net.state_nodes)
        # each step box has a row of ports along its bottom: one per parameter, left of the
        # middle in the buses' order (the first bus's leftmost: its trunk, the highest,
        # comes in left of the others), the inputs' in the middle, and as much room again
        # on the right; each junction stands under its port, each input under its own, so
        # every edge into a box runs straight up and none crosses another
        self.read_port = {g.id(p): f"w{k}" for k, p in enumerate(shared)}
        # (close neighbours allowed: dot keeps the edges side by side as far apart as nodesep
        # and more, wider than a port; the boxes stay apart by their edges' labels)
        self.emit(f'graph [nodesep="{_STEPS_NODESEP}"]')
        inputs = list(net.input_nodes)
        first_output = next(iter(net.output_nodes), None)
        cells = [f'<td port="w{k}" width="@PW@" height="1"></td>'
                 for k in range(len(shared))]
        cells += [f'<td port="x{k}" width="@PW@" height="1"></td>'
                  for k in range(len(inputs))]
        # (as many cells right as left: a box wider than its ports widens each alike)
        cells += ['<td width="@PW@" height="1"></td>'] * len(shared)
        port_row = ('<tr><td><table border="0" cellborder="0" cellspacing="0" '
                    'cellpadding="0"><tr>' + "".join(cells) + "</tr></table></td></tr>")
        bottom, middle, top = [], [], []
        # the states top first, as the textbook view's rows: the last a step computes (an
        # LSTM's h, the state its outputs read) on top, where the reader looks first
        states.sort(key=lambda s: -g.index(_unmasked(net.state_nodes[s][0])))
        for s in states:
            n = net.init_nodes[s]
            self.node(g.id(n), "state", self.title(n), self.rows(n), _mag(self.grad(n)),
                      state=True, cut=self.v.is_cut(net.state_nodes[s][0]))
            middle.append(g.id(n))
        # the top state's initial value in the steps' row, just left of the first box; any
        # other one row lower, beside the first bus, its edge going up into the box's left
        # side (in the steps' row, it would bend round the one next to the box)
        raised, middle = middle[1:], middle[:1]
        # (a side-by-side figure joins the lower picture to the upper one from it)
        self.lead_id = middle[0] if middle else None
        for t in range(T):
            cut = self.v.is_cut(net.state_nodes[states[0]][t]) if states else False
            for ns in net.input_nodes.values():
                n = ns[t]
                self.node(g.id(n), "input", self.title(n, True), self.rows(n),
                          _mag(self.grad(n)), cut=cut,  # one input: under the box's middle
                          group=f"step_{t}" if len(inputs) == 1 else None)
                bottom.append(g.id(n))
            padded = _padded(net, self.run, t)
            rows = [_pads_text(padded)] if padded else []  # (a masked run's padding)
            for s in states:  # (masked: the state carried on, as the textbook view)
                # each state's value and gradient in the words of every other view (v =,
                # ∇ =), after the state's name: a step box holds every state of the step
                kept = net.state_nodes[s][t]
                n = _unmasked(kept)  # (the cell's node: how its numbers print)
                text = self.number_text(self.value(kept), n) if self.show_values() else None
                if text:
                    rows.append(f"{_hn(s)}: v = {_h(text)}")
                gt = self.number_text(self.state_grad(kept), n) if self.show_grads() else None
                if gt:
                    rows.append(f"{_hn(s)}: ∇ = {_h(gt)}")
            self.node(f"step_{t}", "step", f"t = {t}", rows, self.state_mag(t), cut=cut,
                      state=True, tooltip=f"{net.cell.name} at step {t}", group=f"step_{t}",
                      kept=t in kept_steps(net))  # checkpoint=: the run kept its state
            k = self.node_at[f"step_{t}"][0]
            head, tail = self.lines[k].rsplit("</table>", 1)
            self.lines[k] = head + port_row + "</table>" + tail
            middle.append(f"step_{t}")
            for name, ns in net.output_nodes.items():
                n = ns[t]
                oid = _out_id(g.id(n), self.out_index[name])
                self.node(oid, "output", _hn(name) + f"<sub>{t}</sub>",
                          self.output_rows(name, t)[1:], self.output_mag(name, t),
                          tooltip=f"output {name} at step {t}",
                          group=f"step_{t}" if name == first_output else None)  # over it
                top.append(oid)
        # every output as wide as the widest (their labels differ by their values): the
        # steps under them then stand evenly spaced
        o = self.o
        factor = (o["fontsize"] or _TITLE_PT[o["theme"]]) / 12 * o["scale"]
        if top:
            # each pentagon of one size: as wide as an estimate of the widest label (its
            # text stands in the pentagon's upright part), as high as its rows and its roof
            wide = 1.2 * max(_label_points(self.node_at[i][1], factor) for i in top) \
                + 12 * factor
            lines = max(self.node_at[i][1].count("<tr>") for i in top)
            high = (16 + 12 * (lines - 1)) * factor * 1.6 + 8
            for i in top:
                k = self.node_at[i][0]
                self.lines[k] = self.lines[k].replace(
                    " [", f' [fixedsize="true" width="{wide / 72:.3f}" '
                    f'height="{high / 72:.3f}" ', 1)
        # every step box as wide as the widest (an upper estimate of its label), so that
        # the boxes, held apart by the state's edges, stand evenly too: its row of ports
        # (cells of one width, at least _PORT_PT) is as wide as that, and sets the width
        boxes = [f"step_{t}" for t in range(T)]
        wide = 1.2 * max(_label_points(self.node_at[i][1], factor) for i in boxes) \
            if boxes else 0.0
        each = max(_PORT_PT, math.ceil(wide / len(cells)))
        for i in boxes:
            k = self.node_at[i][0]
            self.lines[k] = self.lines[k].replace("@PW@", str(each))
        self.row(bottom)
        self.spaced_row(top, "top")
        self.legend_under = bottom[0] if bottom and shared and T >= 2 and self.o["legend"] \
            else None
        self.n_edges += bool(self.legend_under)  # (drawn with the legend: see build())
        if shared and T < 2:
            # one step (no bus): the parameters in one row under everything, left to right
            # in the ports' order, ending left of the step's inputs. With buses, each
            # stands at the left end of its own bus (see trunks()), its trunk a short level
            # edge, as in the ops view
            ids = [g.id(p) for p in shared]
            if bottom:
                self.n_nodes += 1
                self.emit('"params_end" [shape=point style=invis width="0.01"]')
                self.n_edges += 1
                self.emit(f'"params_end" -> "{bottom[0]}" [style=invis weight=10]')
                ids.append("params_end")
            self.spaced_row(ids, "params", rank="source")
        self.emit("{rank=same; " + " ".join(f'"{m}"' for m in middle) + "}")
        label = ", ".join(_hn(s) for s in states)
        param_name = {id(q): k for k, q in net.param_nodes.items()}
        contribs = [self.contrib.get(param_name.get(id(p))) for p in shared]
        contribs = [None if c is None else [self.part_text(x) for x in c] for c in contribs]
        fan: dict = {}  # each parameter's fan-out into the steps, through one trunk
        # the boxes apart by their state's edge: dot keeps the ends of an edge within a rank
        # minlen × nodesep apart (as far as nodesep's usual width, twice over)
        gap = math.ceil(2 * 0.22 / _STEPS_NODESEP)
        for t in range(T):
            cut = self.v.is_cut(net.state_nodes[states[0]][t]) if states else False
            for k, ns in enumerate(net.input_nodes.values()):
                self.edge(g.id(ns[t]), f"step_{t}", cut=cut, ports=("n", f"x{k}:s"),
                          weight=400)
            for p, c in zip(shared, contribs):
                lab = c[t] if c else None
                fan.setdefault(g.id(p), []).append((f"step_{t}", lab, False, cut, t, 1))
            if t == 0:
                for n in net.init_nodes.values():
                    if g.id(n) in middle:  # (an edge within the row: its ends kept apart)
                        self.edge(g.id(n), "step_0", "recurrent", cut=cut)
                        self.lines[-1] = self.lines[-1].replace(
                            " [", f' [minlen="{gap}" ', 1)
                    else:  # (up into the box's lower left corner: short and straight)
                        self.edge(g.id(n), "step_0", "recurrent", cut=cut, ports=(None, "sw"))
            else:
                self.edge(f"step_{t - 1}", f"step_{t}", "recurrent", label=label, cut=cut)
                self.lines[-1] = self.lines[-1].replace(" [", f' [minlen="{gap}" ', 1)
            for name, ns in net.output_nodes.items():
                self.edge(f"step_{t}", _out_id(g.id(ns[t]), self.out_index[name]), cut=cut)
        # each parameter's bus, as in the op-level views: a junction under every step box,
        # the junctions joined in time order, the trunk (× T) into the first
        self.first_row = {0: ["step_0"]}
        self.cluster_end, self.junction_group, self.junctions = {}, {}, set()
        self.lowest = {}
        self.read_weight = 400  # several junctions under each box, each pulled under it
        self.trunks(fan)
        first = next((f"{g.id(p)}_fan_0" for p in shared if f"{g.id(p)}_fan_0" in
                      self.junctions), None)
        for i in raised:  # in a row of their own between the steps and the first bus
            if first is not None:  # (in the bus's row, its trunk ran through them)
                self.n_edges += 1
                self.emit(f'"{first}" -> "{i}" [style=invis weight=0]')
        if len(raised) > 1:
            self.spaced_row(raised, "raised")
        if raised:  # the first under the top state's, left of the first box (pulled under
            # the box's corner by its edge alone, it stood half under the box)
            self.n_edges += 1
            self.emit(f'"{raised[0]}" -> "{self.lead_id}" [style=invis weight=10]')
        if T >= 2 and shared:
            # the parameters one column, left of the first step, under the initial states:
            # each at the left end of its bus (as its own piece, dot set all but the first
            # right of the last step, the trunks running back under the buses)
            column = ((raised[-1:] or [self.lead_id]) if self.lead_id else []) \
                + [g.id(p) for p in shared]
            for above, below in zip(column, column[1:]):
                self.n_edges += 1
                self.emit(f'"{below}" -> "{above}" [style=invis weight=10]')
        for t in range(T):  # each step's inputs under its junctions
            if t in self.lowest:
                for ns in net.input_nodes.values():
                    self.n_edges += 1
                    self.emit(f'"{g.id(ns[t])}" -> "{self.lowest[t]}" [style=invis weight=0]')

    # loss
    def spaced_row(self, ids: list[str], name: str, rank: str = "same") -> None:
        """Nodes on one rank, left to right in the given order, an invisible gap of nodesep's
        usual width between neighbours (the step view sets nodesep small for its ports)."""
        chain = []
        for k, i in enumerate(ids):
            if k:
                self.n_nodes += 1
                gap = f"{name}_gap_{k}"
                self.emit(f'"{gap}" [shape=box style=invis label="" fixedsize=true '
                          f'width="0.22" height="0.01"]')
                chain.append(gap)
            chain.append(i)
        if rank != "same":
            self.emit(f"{{rank={rank}; " + " ".join(f'"{i}"' for i in chain) + "}")
        if len(chain) > 1:
            self.n_edges += len(chain) - 1
            self.emit("{rank=same; " + " -> ".join(f'"{i}"' for i in chain)
                      + " [style=invis]}")

    def draw_loss(self) -> None:
        if not self.seeded:
            return
        loss = self.o["loss"]
        rows = []
        if loss is not None and self.show_values():
            text = _array_text(getattr(loss, "data", loss), 1)
            if text is not None:
                rows.append(f"{self.loss_sym()} = " + _h(text))
        rows.append(f"∂{self.loss_sym()}/∂{self.loss_sym()} = 1")
        name = getattr(loss, "name", None) or "L"
        self.node("loss", "loss", _hn(name), rows, hot=bool(self.path), tooltip=name)
        self.emit('{rank=sink; "loss"}')
        g = self.g
        done = set()
        for n, kind, nm in self.seeded_reads:
            if kind == "output" and (self.detail == "steps" or n.step in self.kept):
                src = _out_id(g.id(n), self.out_index[nm])
            elif self.detail == "steps":
                src = f"step_{n.step}"  # a final state: the step box holds it
            elif n.step not in self.kept:
                src = self.eid(self.span_of(n.step))
            else:
                src = g.id(n)
            if src not in done:
                done.add(src)
                hot = id(n) in self.path and bool(self.path)
                if src.startswith("elided"):  # up through its point of the outputs' row
                    self.edge(src, f"{src}_up", "loss", hot=hot, arrow=False)
                    src = f"{src}_up"
                self.edge(src, "loss", "loss", hot=hot)

    def legend_rows(self) -> list[tuple[str, str]]:
        rows = []
        if self.detail == "elide":
            k = self.o["ends"]
            rows.append(("…", f"detail='elide': first and last {k} steps drawn"
                         if self.spans == [(k, self.T - k - 1)] else
                         "detail='elide': steps " + ", ".join(
                             f"{a} … {b}" for a, b in self.spans) + " elided; "
                         + _drawn_words(self.spans, k, self.T)))
        note = _mask_note(self.net, self.run)
        if note:
            rows.append(("lengths", _mask_legend(
                self.net, self.run, note, "; a step box that pads a sequence says which"
                if self.detail == "steps" else "")))
        masked = getattr(self, "masked_drawn", [])
        if masked:  # a masked run's state nodes (op view): which number is the state's
            sym = self.loss_sym()
            names = ", ".join(f"∂{sym}/∂{_hn(s)}<sub>t</sub>" for s in masked)
            s0 = _hn(masked[0])
            rows.append((names, (
                f"on a state {s0}_kept<sub>t</sub> (a where op): the gradient of the "
                f"state {s0}<sub>t</sub> the net carries on{_BR}(run.state_grads()[t]), "
                f"which fills the node: up to a sequence's length the ∇ of{_BR}the step's "
                f"next state, past it the kept state's own. The ∇ over it is the where{_BR}"
                f"op's own: what the later steps (and a loss reading the final state) send "
                f"it;{_BR}the step's outputs read the next state, not it{_BR}")))
        note = _grad_note(self.net, self.grad) if self.show_grads() else None
        if note:
            rows.append(note)
        if getattr(self, "beyond", False) and self.show_grads():
            rows.append(("‖∇‖", "the scale of the run's values, as in its other views: an op "
                                "beyond it takes its end colour"))
        return rows


# -- several pictures on one scale -----------------------------------------------------------
def _prefixed(line: str, prefix: str) -> str:
    """``line`` with every node id (a quoted string that is not an attribute value) given
    ``prefix``. Attribute values follow ``=`` (or ``+`` when a long one is continued) and HTML
    labels are skipped whole, so user text inside them is never rewritten."""
    out, i, n = [], 0, len(line)
    while i < n:
        c = line[i]
        if c == "<" and line[:i].rstrip().endswith("="):
            depth, j = 0, i
            while j < n:
                depth += {"<": 1, ">": -1}.get(line[j], 0)
                j += 1
                if depth == 0:
                    break
            out.append(line[i:j])
            i = j
        elif c == '"':
            j = i + 1
            while j < n and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            text = line[i:j + 1]
            value = line[:i].rstrip().endswith(("=", "+"))
            out.append(text if value else '"' + prefix + text[1:])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def render_side_by_side(a, b, labels=("a", "b"), direction="auto", **options):
    """Draw two objects in one figure, side by side or one above the other, on one gradient
    colour scale.

    Parameters
    ----------
    a, b : Tensor, Cell, Unrolled or Run
        What to draw (for example the same net with full and with truncated BPTT).
    labels : (str, str)
        A caption over each picture.
    direction : {"auto", "horizontal", "vertical"}
        ``"vertical"`` stacks ``a`` over ``b`` (for wide pictures: a slide stays readable);
        ``"auto"`` (default) stacks them when either is an unrolled net of more than
        4 steps, and puts them side by side otherwise.
    **options
        As :func:`to_dot`; ``loss=`` may be a pair ``(loss_a, loss_b)``. Unless
        ``color_scale=`` is given, the scale spans the gradient norms of both pictures.

    Returns
    -------
    graphviz.Digraph
        As :func:`render`, with ``.color_scale`` the shared ``(min, max)``. Each picture is
        a subgraph (``side0``, ``side1``; not a cluster: ``dot`` lays out clusters within
        clusters badly) with its ids prefixed ``s0_`` / ``s1_``, laid out as it is alone,
        under a caption node (``s0_caption``, ``s1_caption``).

    Raises
    ------
    RenderError
        As :func:`to_dot`, or when ``labels`` is not two strings or ``direction`` is unknown.

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> full = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=4)
    >>> cut = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=4, truncate=2)
    >>> xs = np.ones((4, 1, 2))
    >>> for net in (full, cut):
    ...     outs, _ = net(xs)
    ...     (outs * outs).sum().backward()
    >>> g = ug.render_side_by_side(full, cut, labels=("full BPTT", "truncated"),
    ...                            detail="textbook")
    >>> g.source.count("subgraph side")
    2
    """
    if not (isinstance(labels, (tuple, list)) and len(labels) == 2
            and all(isinstance(x, str) for x in labels)):
        raise RenderError(f"labels must be two strings, got {labels!r}")
    if direction not in ("auto", "horizontal", "vertical"):
        raise RenderError(f"direction={direction!r}; use 'auto', 'horizontal' or 'vertical'")
    if direction == "auto":
        wide = any(getattr(view(x).net, "steps", 0) > 4 for x in (a, b)
                   if _is_unrolled_or_cell(x))
        direction = "vertical" if wide else "horizontal"
    loss = options.pop("loss", None)
    losses = tuple(loss) if isinstance(loss, (tuple, list)) else (loss, loss)
    opts = [dict(options, loss=losses[0]), dict(options, loss=losses[1])]
    nets = [view(x).net if _is_unrolled_or_cell(x) else None for x in (a, b)]
    truncates = ()  # two nets of one length: their elided steps the same (step over step)
    if all(hasattr(n, "truncate") for n in nets) and nets[0].steps == nets[1].steps:
        truncates = tuple(n.truncate for n in nets)
    if options.get("color_scale") is None:
        ranges = [_build_scaled(x, dict(o, legend=False), figure=True,
                                truncates=truncates)[2]
                  for x, o in zip((a, b), opts)]
        ends = [r.range for r in ranges if r is not None and r.range is not None]
        if ends:
            shared = (min(r[0] for r in ends), max(r[1] for r in ends))
            for o in opts:
                o["color_scale"] = shared
    rankdir = options.get("rankdir") or ("BT" if _is_unrolled_or_cell(a) else "LR")
    stacked = direction == "vertical" and rankdir in ("BT", "TB")
    body, scale, ends_of, drawers, captions, floors = [], None, [], [], [], []
    low, high = [[], []], [[], []]  # each picture's first and last rows, when it has them
    for k, (x, o, label) in enumerate(zip((a, b), opts, labels)):
        # (two legends side by side under the pictures: each in at most two columns)
        _, lines, sc = _build_scaled(x, o, drawers, legend_columns=2, figure=True,
                                     truncates=truncates)
        scale = scale or sc
        head = [line for line in lines if line.lstrip().startswith(("graph [", "node [",
                                                                     "edge ["))]
        if not k:
            body += head  # the first picture's defaults hold for the whole figure
        # Each picture in a plain subgraph, not in a cluster: Graphviz's dot (2.43) lays
        # out clusters within a cluster badly. It fails ("trouble in init_rank") where a
        # node outside a step's box shares a group with one inside, and it reorders rows
        # that invisible edges hold in order (an initial state drawn right of step 0).
        # Its caption is a node over it instead of the cluster's label.
        body.append(f"  subgraph side{k} {{\n")
        legend, picture = [], []
        for line in lines:
            if line in head:
                continue
            if line.lstrip().startswith('"legend" ['):
                line = line.replace("<b>legend</b>", f"<b>legend: {_h(_shown(label))}</b>", 1)
                legend.append(_prefixed(line, f"s{k}_"))
                continue
            if line.lstrip().startswith('"legend" -> '):
                continue  # what places a picture's legend under it: here legends stand apart
            if line.lstrip().startswith("label=<"):
                continue  # each picture's own title gives way to its caption
            if line.lstrip().startswith("subgraph cluster_"):  # clusters of one name merge
                line = line.replace("subgraph cluster_", f"subgraph cluster_s{k}_", 1)
            # a picture's first and last rows are its own, not the figure's: rank=source
            # would put the upper picture's parameters under the lower picture
            m = _RANK_END.match(line)
            if m:
                (low if m.group(2) in ("source", "min") else high)[k] += _QUOTED.findall(
                    _prefixed(line, f"s{k}_"))
                line = _RANK_END.sub(r"\1{rank=same;", line)
            body.append("  " + _prefixed(line, f"s{k}_"))
            picture.append(body[-1])
        cap = f"s{k}_caption"
        captions.append(cap)
        body.append(f'    "{cap}" ' + _attrs({
            "shape": "plaintext", "margin": "0.05", "tooltip": label,
            "label": _Html(f'<font point-size="{16 * drawers[-1].o["scale"]:.3g}">'
                           f"<b>{_h(_shown(label, _TITLE_CHARS))}</b></font>")}) + "\n")
        src, snk = _ends(picture)
        src, snk = (low[k] or src), (high[k] or snk)
        floor = []
        if getattr(drawers[-1], "bottom_ids", None):  # (an ops view: its inputs' row, and
            # its feet, which no edge from below holds up: each over the gap between the two)
            src = [f"s{k}_{i}" for i in drawers[-1].bottom_ids]
            floor = [f"s{k}_{i}" for i in drawers[-1].floor]
        floors.append(floor)
        nodes = [m.group(1) for line in picture if (m := _NODE.match(line))]
        # over the picture's middle: after its last row (rankdir=BT: upwards), else
        # before its first (TB: the top; LR: the left)
        if rankdir == "BT":
            ref = (snk or nodes[-1:] or [None])
            if ref[0] is not None:
                body.append(f'    "{ref[len(ref) // 2]}" -> "{cap}" [style=invis]\n')
        else:
            ref = (src or nodes[:1] or [None])
            if ref[0] is not None:
                body.append(f'    "{cap}" -> "{ref[len(ref) // 2]}" [style=invis]\n')
        body.append("  }\n")
        body += legend  # outside the pictures, so neither is pushed aside by its legend
        ends_of.append((src, snk))
    if stacked:  # both legends one whole, even width: see _legend_even
        at = [i for i, line in enumerate(body) if _NODE.match(line)
              and _NODE.match(line).group(1) in ("s0_legend", "s1_legend")]
        width = max((_legend_width(body[i]) for i in at), default=0)
        for i in at:
            body[i] = _legend_even(body[i], width)
    if stacked:
        # a over b, ranked by no edge between them: an edge would make the two one piece
        # that dot orders as a whole, and it then orders neither as it does the picture
        # alone (rows out of order, state edges round the steps' boxes). An invisible
        # point just past the upper picture's first row (the upper picture's legend in its
        # row), the lower picture's caption a row lower, which the lower picture's last
        # row comes before.
        (a_src, a_snk), (b_src, b_snk) = ends_of
        upper = a_src if rankdir == "BT" else a_snk
        if upper:
            body.append('  "s0_side_gap" [shape=point style=invis width=0 height=0]\n')
            u = upper[len(upper) // 2]
            body.append(f'  "s0_side_gap" -> "{u}" [style=invis]\n' if rankdir == "BT"
                        else f'  "{u}" -> "s0_side_gap" [style=invis]\n')
            body.append(f'  "{captions[1]}" -> "s0_side_gap" [style=invis]\n'
                        if rankdir == "BT" else
                        f'  "s0_side_gap" -> "{captions[1]}" [style=invis]\n')
        # step t of the one straight over step t of the other: one edge from the lower
        # picture's first node (its first initial state, on its left) to the upper one's
        # holds their left sides in line, and each value of step t is as wide in both.
        # (dot then meets the lower picture from that node, as it meets a picture alone.)
        # An ops view's initial states are each a piece of their own to dot, declared
        # first (see _Unrolled.init_states): each of the lower picture's joined to the
        # upper picture's, in one column.
        inits = [getattr(d, "init_ids", []) + sorted(getattr(d, "on_bus", ()))
                 for d in drawers]  # (and the shared values left of an ops view's steps)
        leads = [getattr(d, "lead_id", None) for d in drawers]
        link_attrs = "style=invis"
        if inits[0] and inits[0] == inits[1]:
            links = [(f"s0_{i}", f"s1_{i}") for i in inits[0]]
        elif None not in leads:
            # (a step view: from the initial state left of its first box, of weight 0, an
            # order only: from its first node, a parameter, the link passed between the
            # lower picture's first two steps and held them apart, and the upper one's with
            # them; pulled straight, it drew each initial state twice as far from its step)
            links = [(f"s0_{leads[0]}", f"s1_{leads[1]}")]
            link_attrs = "style=invis weight=0"
        else:
            first = [next((m.group(1) for line in body if line.startswith(f'    "s{k}_')
                           and (m := _NODE.match(line))), None) for k in range(2)]
            links = [tuple(first)] if None not in first else []
        for hi, lo in links:
            body.append(f'  "{lo}" -> "{hi}" [{link_attrs}]\n' if rankdir == "BT"
                        else f'  "{hi}" -> "{lo}" [{link_attrs}]\n')
        # and step t of the one over step t of the other: from the top of each column of
        # the lower picture to the bottom of the same column of the upper one, heavy (the
        # links above hold only the left sides, and the first values of the two differ in
        # width: the lower picture stood a part of a step to the left)
        # (through an invisible point each, in the row under the upper picture: the points
        # in time order, then the upper picture's legend, its own totals and marks, under
        # it and right of every link: among them, it pushed the steps apart)
        # (not in an ops view: there each picture's parameters and initial states are
        # pieces of their own to dot, left of its steps, which such links would join)
        cols = [_columns(d, k, body, plumb=True) if getattr(d, "detail", None) != "ops"
                else {} for k, d in enumerate(drawers)]
        row, through = [], []
        for t in sorted(set(cols[0]) & set(cols[1])):
            (up_lo, up_hi), (lo_lo, lo_hi) = cols[0][t], cols[1][t]
            if rankdir == "BT" and upper:
                p = f"s0_side_gap_{t}"
                row.append(p)
                body.append(f'  "{p}" [shape=point style=invis width=0 height=0]\n'
                            f'  "{lo_hi}" -> "{p}" [style=invis weight={_COLUMN_WEIGHT}]\n')
                if up_lo not in upper and not up_lo.endswith("_foot"):
                    # the link crosses the upper picture's first row (a step view's
                    # parameters): through a point of that row, right of its last node, so
                    # that dot sets none of the row between two columns (between step 0 and
                    # step 1 it held them twice as far apart as the others)
                    q = f"s0_side_col_{t}"
                    through.append(q)
                    body.append(f'  "{q}" [shape=point style=invis width=0 height=0]\n'
                                f'  "{p}" -> "{q}" [style=invis weight={_COLUMN_WEIGHT}]\n')
                    p = q
                body.append(f'  "{p}" -> "{up_lo}" [style=invis weight={_COLUMN_WEIGHT}]\n')
            else:
                body.append(f'  "{lo_hi}" -> "{up_lo}" [style=invis weight={_COLUMN_WEIGHT}]\n'
                            if rankdir == "BT" else
                            f'  "{up_hi}" -> "{lo_lo}" [style=invis weight={_COLUMN_WEIGHT}]\n')
        if through:
            body.append("  {rank=same; edge [style=invis] "
                        + " -> ".join(f'"{x}"' for x in [upper[-1]] + through) + "}\n")
        # each picture's last step: its legend's left side just right of it (without
        # columns, an op view: its last input)
        ends_at = [cols[k][max(set(cols[0]) & set(cols[1]))][0]
                   if set(cols[0]) & set(cols[1]) else _last_input(d, k, body)
                   for k, d in enumerate(drawers)]
        if rankdir == "BT" and upper and not row and ends_at[0] is not None:
            row.append("s0_side_gap_end")
            body.append('  "s0_side_gap_end" [shape=point style=invis width=0 height=0]\n'
                        f'  "s0_side_gap_end" -> "{ends_at[0]}" '
                        f"[style=invis weight={_COLUMN_WEIGHT}]\n")
        if rankdir == "BT" and upper:
            row += [x for x in ("s0_legend",)
                    if any(line.lstrip().startswith(f'"{x}" [') for line in body)]
            body.append('  {rank=same; "s0_side_gap" ' + " ".join(f'"{x}"' for x in row)
                        + "}\n")
            if len(row) > 1:
                body.append("  {rank=same; edge [style=invis] "
                            + " -> ".join(f'"{x}"' for x in row) + "}\n")
        _same_widths(drawers, body)
        # each picture's legend in a row of its own under it (on the picture's bottom row,
        # its height would pull that row away from the rest): the upper one's over the
        # lower picture's caption (above), the lower one's under the lower picture
        for k, ends in ((0, a_src if rankdir == "BT" else a_snk),
                        (1, b_src if rankdir == "BT" else b_snk)):
            leg = f"s{k}_legend"
            if not ends or not any(line.lstrip().startswith(f'"{leg}" [') for line in body):
                continue
            lo = ends[-1]  # (under its right end, as the upper one's)
            if k == 0 and upper and rankdir == "BT":
                continue  # (in the row of the gap, above)
            body.append(f'  "{leg}" -> "{lo}" [style=invis]\n' if rankdir == "BT"
                        else f'  "{lo}" -> "{leg}" [style=invis]\n')
            if k == 1 and ends_at[1] is not None and upper and rankdir == "BT":
                # in the same place as the upper one's, which the row of the gap puts just
                # right of the last step's column: an invisible point in the legend's row
                # straight under the lower picture's last column, the legend just right of it
                last = ends_at[1]
                body.append('  "s0_side_gap_legend" [shape=point style=invis width=0 height=0]\n'
                            f'  "s0_side_gap_legend" -> "{last}" '
                            f"[style=invis weight={_COLUMN_WEIGHT}]\n"
                            "  {rank=same; edge [style=invis] "
                            f'"s0_side_gap_legend" -> "{leg}"}}\n')
                if not any(cols) and any(line.lstrip().startswith('"s0_legend" [')
                                         for line in body):
                    # (an ops view: no column holds step t of the one over step t of the
                    # other, and the widths of the numbers they print set their last steps
                    # a few points apart: the legends held in line by a heavy invisible edge
                    # of their own, right of every step)
                    body.append(f'  "{leg}" -> "s0_legend" [style=invis weight=1000]\n')
    elif direction == "horizontal":
        # the captions level, and each row of the one level with the same row of the
        # other: step by step, the bottom and top of every column (the first step both
        # draw)
        body.append(f'  {{rank=same; "{captions[0]}" "{captions[1]}"}}\n')
        cols = [_columns(d, k, body) for k, d in enumerate(drawers)]
        common = sorted(set(cols[0]) & set(cols[1]))
        if common:
            t = common[0]
            for j in range(2):
                body.append(f'  {{rank=same; "{cols[0][t][j]}" "{cols[1][t][j]}"}}\n')
    diagram = _diagram_class()(name="unrollgraph", body=body)
    diagram.color_scale = scale.range if scale is not None else None
    return diagram


def _last_input(drawer, k: int, body: list) -> str | None:
    """The id (in picture ``k`` of a side-by-side figure) of the last step's first input, when
    the picture draws it."""
    net = getattr(drawer, "net", None)
    if net is None or not net.input_nodes:
        return None
    nid = f"s{k}_{drawer.g.id(next(iter(net.input_nodes.values()))[-1])}"
    drawn = any((m := _NODE.match(line)) and m.group(1) == nid for line in body)
    return nid if drawn else None


_CELL = re.compile(r"<td([^>]*)>(.*?)</td>", re.S)
_NESTED = re.compile(r"<table.*?</table>", re.S)


def _cell_points(text: str) -> float:
    """An upper estimate of the width of a table cell's text (its lines, at its type size)."""
    size = float(m.group(1)) if (m := re.search(r'point-size="([0-9.]+)"', text)) else 14
    bold = "<b>" in text
    plain = _ENTITY.sub(lambda m: chr(int(m.group(1)[1:])) if m.group(1)[0] == "#" else
                        {"amp": "&", "lt": "<", "gt": ">", "quot": '"'}.get(m.group(1), "?"),
                        _TAG.sub("", re.sub(r"<br[^>]*>", "\n", text)))
    return max(_text_points(line, size, bold) for line in plain.split("\n"))


def _legend_width(line: str) -> int:
    """An upper estimate, in a whole, even number of points, of the width a legend's table
    needs (0 when the line draws no table)."""
    start = line.find("label=<")
    if start < 0 or "<table" not in line[start:]:
        return 0
    head = line.index("<table", start)
    tag_end = line.index(">", head)
    body = line[tag_end + 1:line.rindex("</table>")]
    nested: list[float] = []

    def keep(m) -> str:  # the colour bar: its cells' widths, each padded by 1 point a side
        first = m.group(0).split("</tr>")[0]
        nested.append(sum(float(w) + 2 for w in re.findall(r'width="([0-9.]+)"', first)))
        return f"@{len(nested) - 1}@"

    body = _NESTED.sub(keep, body)
    cols: dict[int, float] = {}
    spanned = 0.0
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        k = 0
        for attrs, text in _CELL.findall(row):
            span = int(m.group(1)) if (m := re.search(r'colspan="(\d+)"', attrs)) else 1
            got = re.fullmatch(r"@(\d+)@", text.strip())
            # (dot measures text about a tenth wider than Helvetica's advance widths)
            w = (nested[int(got.group(1))] if got else 1.15 * _cell_points(text)) + 4
            if span == 1:
                cols[k] = max(cols.get(k, 0.0), w)
            else:
                spanned = max(spanned, w - 2 * (span - 1))
            k += span
    need = max(sum(cols.values()) + 2 * (len(cols) + 1), spanned + 4) + 2  # spacing, border
    return 2 * math.ceil(need / 2)


def _legend_even(line: str, width: int) -> str:
    """A stacked figure's legend set ``width`` points wide (its table's ``width``): the two
    legends of the figure one whole, even width, the wider one's :func:`_legend_width`. The
    figure puts the two legends' left sides in line, a fixed distance right of one point;
    dot places a node's middle on whole points and rounds the distance from that point to
    it, which takes in half the node's width: two legends of a fractional width, or of
    different widths, stood up to a point apart."""
    start = line.find("label=<")
    if start < 0 or "<table" not in line[start:] or width <= 0:
        return line
    head = line.index("<table", start)
    return line[:head] + f'<table width="{width}"' + line[head + len("<table"):]


def _same_widths(drawers: list, body: list) -> None:
    """The values of step t of both pictures of a side-by-side figure drawn as wide (as the
    wider of the two, by an upper estimate of their labels), so that the columns of the one
    are as wide as the other's and stand over them."""
    nets = [getattr(d, "net", None) for d in drawers]
    if None in nets or nets[0].steps != nets[1].steps:
        return
    keys = [[d.g.id(n.init_nodes[s]) for d, n in zip(drawers, nets)]
            for s in nets[0].init_nodes if s in nets[1].init_nodes]  # a value: its two ids
    for t in range(nets[0].steps):
        for kind in ("input_nodes", "state_nodes", "output_nodes"):
            for name in getattr(nets[0], kind):
                if name not in getattr(nets[1], kind):
                    continue
                ids = [d.g.id(getattr(n, kind)[name][t]) for d, n in zip(drawers, nets)]
                if kind == "output_nodes":
                    ids = [_out_id(i, d.out_index[name]) for i, d in zip(ids, drawers)]
                keys.append(ids)
        keys += [[f"loss_{t}", f"loss_{t}"], [f"step_{t}", f"step_{t}"]]
    factor = [(d.o["fontsize"] or _TITLE_PT[d.o["theme"]]) / 12 * d.o["scale"]
              for d in drawers]
    where = {}
    for i, line in enumerate(body):
        m = _NODE.match(line)
        if m:
            where[m.group(1)] = i
    for ids in keys:
        drawn = [d.node_at.get(i) for d, i in zip(drawers, ids)]
        if None in drawn or any(f"s{k}_{i}" not in where for k, i in enumerate(ids)):
            continue
        # an oval is about its text times √2 wide, and its margins: an upper bound
        w = max(_label_points(at[1], f) for at, f in zip(drawn, factor)) * 1.6 + 30
        for k, i in enumerate(ids):
            j = where[f"s{k}_{i}"]
            body[j] = body[j].replace(" [", f' [width="{w / 72:.3f}" ', 1)


def _columns(drawer, k: int, body: list, plumb: bool = False) -> dict:
    """step -> the ids (in picture ``k`` of a side-by-side figure) of the bottom and the top
    node drawn in that step's column: its first input, and its part of the loss or else its
    first output. Only the steps an unrolled net's picture draws both of.

    ``plumb``: the bottom one straight under the top one where the picture stands its steps'
    ops in columns (an elided view: the input stands under the step's first op, the output
    over its last, a part of a step to the right): the invisible foot of the output's
    column, in the input's row. Step t of a picture stacked under another then stands under
    step t of that one when the one's top is held over the other's bottom."""
    net = getattr(drawer, "net", None)
    if net is None or not net.input_nodes or not net.output_nodes:
        return {}
    drawn = {m.group(1) for line in body if (m := _NODE.match(line))}
    feet = set(_FOOT_ID.findall("".join(body))) if plumb else set()
    column = getattr(drawer, "column_of_id", {})
    g, out = drawer.g, {}
    name, ns = next(iter(net.output_nodes.items()))
    j = drawer.out_index[name]
    for t, x in enumerate(next(iter(net.input_nodes.values()))):
        lo = f"s{k}_{g.id(x)}"
        hi = next((f"s{k}_{c}" for c in (f"loss_{t}", _out_id(g.id(ns[t]), j))
                   if f"s{k}_{c}" in drawn), None)
        foot = f"s{k}_{column.get(g.id(ns[t]))}_foot"
        if lo in drawn and hi is not None:
            out[t] = (foot if foot in feet else lo, hi)
    return out


#: the weight of the invisible edges holding step t of a stacked figure's lower picture under
#: step t of the upper one: above the step view's own pulls (400: each step's inputs and
#: junctions under its box), which else win and leave a step of one picture aside
_COLUMN_WEIGHT = 1000
_EDGE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)"(.*)$')
_NODE = re.compile(r'^\s*"((?:[^"\\]|\\.)*)" \[')
_RANK_END = re.compile(r"^(\s*)\{rank=(source|sink|min|max);", re.M)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FOOT_ID = re.compile(r'"(s[01]_[^"]*_foot)"')


def _ends(lines: list[str]) -> tuple[list[str], list[str]]:
    """The nodes a picture starts from (no laid-out edge into them) and ends at (none out of
    them)."""
    nodes, into, out = [], set(), set()
    for line in lines:
        m = _EDGE.match(line)
        if m:
            if "invis" not in m.group(3) and "constraint" not in m.group(3):
                out.add(m.group(1))
                into.add(m.group(2))
            continue
        m = _NODE.match(line)
        if m:
            nodes.append(m.group(1))
    return ([n for n in nodes if n not in into and n in out],
            [n for n in nodes if n not in out and n in into])


def _is_unrolled_or_cell(obj) -> bool:
    return view(obj).kind in ("unrolled", "cell")

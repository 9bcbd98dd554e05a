"""The textbook picture of a recurrent net: time left to right, inputs in a row at the bottom,
each state in a row of its own joined by the recurrent edges, outputs and losses at the top,
and the weights written on the edges they act on instead of drawn as nodes.

A masked net (``net(xs, lengths=...)``) wraps each step's outputs and next states in
``where`` nodes (a padded step outputs 0 and keeps the state). Those nodes are part of the
step, not values of their own: the edges are derived from the values they wrap, so the picture
has the cell's own structure, and each value drawn is the masked one (the state the next step
reads, the output the loss reads) with its true value and gradient.

The edges and their labels are derived from the graph, for any cell: between two step-level
values (an input, a state, an output) there is an edge when some op path leads from one to the
other without passing another step-level value, and it is labelled with the parameters read by
the ops on those paths. A parameter read by an addition (``x @ W.T + b``) is a bias: it is
noted in the node it is added into, or left out with ``biases=False``.
"""

from __future__ import annotations

from .checkpoint import kept_steps
from .graph import Node
from .render import (
    _AUTO_STEPS,
    _TITLE_PT,
    _array_text,
    _attrs,
    _Drawer,
    _drawn_words,
    _elided_numbers,
    _grad_note,
    _h,
    _hn,
    _Html,
    _list_text,
    _mag,
    _mask_legend,
    _mask_note,
    _num,
    _out_id,
    _padded,
    _pads_text,
    _Scale,
    _shown,
    _unmasked,
    _Unrolled,
)
from .tensor import Tensor
from .view import loss_outputs, step_losses

__all__ = ["edge_params", "computed_once"]

_ADDS = ("add", "sub")


def edge_params(target: Node, stops: dict, is_param, is_shared) -> dict:
    """The step-level sources of ``target`` and the parameters on the op paths from each.

    Parameters
    ----------
    target : Node
        A step-level value (a state, an output).
    stops : dict
        ``id(node) -> key`` of every step-level value the walk stops at (inputs, earlier
        states, other states of the step); ``target`` itself is not a stop.
    is_param, is_shared : callable
        ``node -> bool``: a parameter; a node computed once from parameters (``W.T``).

    Returns
    -------
    dict
        ``key -> (weights, biases)``, two lists of parameter nodes in first-seen order.

    Examples
    --------
    >>> import unrollgraph as ug, numpy as np
    >>> cell = ug.nn.RNNCell(2, 3, seed=0)
    >>> g = cell.graph()
    >>> nxt = cell.feedbacks["h"].node
    >>> stops = {id(cell.inputs["x"].node): "x", id(cell.states["h"].node): "h"}
    >>> shared = computed_once(g)
    >>> out = edge_params(nxt, stops, lambda n: n.op == "param", lambda n: id(n) in shared)
    >>> {k: ([p.name for p in w], [p.name for p in b]) for k, (w, b) in sorted(out.items())}
    {'h': (['weight_hh'], ['bias_hh']), 'x': (['weight_ih'], ['bias_ih'])}
    """
    # the region: ops reached backwards from target, stopping at step-level values
    region: dict[int, Node] = {}
    hit: dict[int, Node] = {}
    stack = [target]
    while stack:
        n = stack.pop()
        if id(n) in region:
            continue
        region[id(n)] = n
        for i in n.inputs:
            if id(i) in stops:
                hit[id(i)] = i
            elif not (is_param(i) or is_shared(i) or i.is_leaf or i.op == "init"):
                stack.append(i)
    consumers: dict[int, list[Node]] = {}
    for n in region.values():
        for i in n.inputs:
            consumers.setdefault(id(i), []).append(n)
    out: dict = {}
    for sid in hit:
        # ops on a path from src to target: reached forwards from src inside the region
        on = {}
        stack = list(consumers.get(sid, ()))
        while stack:
            n = stack.pop()
            if id(n) in on:
                continue
            on[id(n)] = n
            stack += consumers.get(id(n), ())
        weights, biases = [], []
        for n in sorted(on.values(), key=lambda m: list(region).index(id(m))):
            for i in n.inputs:
                for p in _params_under(i, is_param, is_shared):
                    bucket = biases if n.op in _ADDS and is_param(i) else weights
                    if all(p is not q for q in weights + biases):
                        bucket.append(p)
        key = stops[sid]
        if key in out:  # two stops with one key (never in practice): merge
            w0, b0 = out[key]
            weights = w0 + [p for p in weights if all(p is not q for q in w0)]
            biases = b0 + [p for p in biases if all(p is not q for q in b0)]
        out[key] = (weights, biases)
    return out


def _params_under(n: Node, is_param, is_shared) -> list[Node]:
    if is_param(n):
        return [n]
    if is_shared(n):
        found = []
        for i in n.inputs:
            found += [p for p in _params_under(i, is_param, is_shared)
                      if all(p is not q for q in found)]
        return found
    return []


def computed_once(graph) -> set:
    """Ids of the ops of ``graph`` that read parameters and constants only (``W.T``): the
    same at every step, drawn as part of the weight they are computed from.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> g = ug.nn.RNNCell(2, 3, seed=0).graph()
    >>> sorted(n.inputs[0].name for n in g.nodes if id(n) in computed_once(g))
    ['weight_hh', 'weight_ih']
    """
    varying: set = set()
    once: set = set()
    for n in graph.nodes:
        if n.op in ("input", "state", "init", "leaf") or any(id(i) in varying
                                                            for i in n.inputs):
            varying.add(id(n))
        elif not n.is_leaf:
            once.add(id(n))
    return once


def _names(params: list[Node], order=None) -> str:
    """The parameters' names, in ``order`` (declaration order: ids of the cell's parameter
    nodes) when given."""
    if order:
        params = sorted(params, key=lambda p: order.get(id(p), len(order)))
    return ", ".join(_hn(p.name) for p in params)


def _sub(text: str, t) -> str:
    return f"{text}<sub>{t}</sub>"


class _Rows:
    """Rows of the picture (bottom to top), each a list of node ids left to right."""

    def __init__(self):
        self.order: list = []
        self.ids: dict = {}

    def add(self, key, nid: str, first: bool = False) -> None:
        if key not in self.ids:
            self.order.append(key)
            self.ids[key] = []
        if first:
            self.ids[key].insert(0, nid)
        else:
            self.ids[key].append(nid)

    def rank(self, key) -> int:
        return self.order.index(key)


def _folded_edges(cell, g) -> list:
    """``(source key, target key, weights, biases, delayed)`` of the folded cell; keys are
    ``("x", name)``, ``("s", name)`` and ``("y", name)``."""
    once = computed_once(g)
    nexts = {id(t.node): s for s, t in cell.feedbacks.items()}
    base = {id(t.node): ("x", k) for k, t in cell.inputs.items()}
    base.update({id(t.node): ("prev", k) for k, t in cell.states.items()})
    targets = [(t.node, ("s", s)) for s, t in cell.feedbacks.items()]
    for k, t in cell.outputs.items():
        if id(t.node) not in nexts:
            targets.append((t.node, ("y", k)))
    out = []
    outs = {id(t.node): ("y", k) for k, t in cell.outputs.items() if id(t.node) not in nexts}
    for node, key in targets:
        stops = dict(base)
        # another output on the way (loss_t computed from y): the edge comes from it
        stops.update({i: k for i, k in outs.items() if i != id(node)})
        stops.update({i: ("s", s) for i, s in nexts.items() if i != id(node)})
        found = edge_params(node, stops, lambda n: n.op == "param", lambda n: id(n) in once)
        for src, (w, b) in found.items():
            delayed = src[0] == "prev"
            out.append((("s", src[1]) if delayed else src, key, w, b, delayed))
    for k, t in cell.outputs.items():
        if id(t.node) in nexts:
            out.append((("s", nexts[id(t.node)]), ("y", k), [], [], False))
    return out


class Folded(_Drawer):
    """The folded cell as in a textbook: one node per input, state and output, the weights
    on the edges, each recurrent edge through a small black square (the one-step delay)."""

    def build(self) -> list[str]:
        o = self.o
        cell = self.v.cell
        self.scale = _Scale([], self.t["ramp"])
        title = full = o["title"]
        if title is None:
            what = "(folded): ■ on an edge is the one-step delay z⁻¹"
            title, full = f"cell {_shown(cell.name)} {what}", f"cell {cell.name} {what}"
        self.header(o["rankdir"] or "BT", title, full)
        rows = _Rows()
        draw_folded(self, cell, "", rows)
        for key in rows.order:
            self.row(rows.ids[key])
        self.guard(self.n_nodes, "this cell", "draw it with detail='ops'")
        self.legend([("■", "one-step delay z⁻¹ (the value of the previous step)")])
        return self.lines


def draw_folded(d: _Drawer, cell, prefix: str, rows: _Rows, order=None) -> dict:
    """Draw the folded cell into drawer ``d``; node ids start with ``prefix``. ``order``: the
    row keys bottom to top when the folded cell stands beside an unrolled picture, whose
    columns its own column then follows."""
    g = cell.graph()
    edges = _folded_edges(cell, g)
    ids = {}
    shown = {"x": cell.inputs, "s": cell.states, "y": cell.outputs}
    kinds = {"x": ("input", "ellipse"), "s": ("state", "ellipse"), "y": ("output", "ellipse")}
    # the parameters in the cell's order (named_parameters()), as every view lists them
    decl = {id(t.node): i for i, t in enumerate(cell.parameters().values())}
    notes: dict = {}
    for _src, dst, _w, b, _delayed in edges:
        if b and d.o["biases"]:
            notes.setdefault(dst, [])
            notes[dst] += [p for p in b if all(p is not q for q in notes[dst])]
    # states bottom to top in the order a step computes them, as in the unrolled picture
    shown["s"] = sorted(cell.states, key=lambda s: g.index(cell.feedbacks[s].node))
    for what in ("x", "s", "y"):
        for name in shown[what]:
            key = (what, name)
            nid = f"{prefix}fold_{what}{len(ids)}"
            ids[key] = nid
            kind, shape = kinds[what]
            rows_ = [f"+ {_names(notes[key], decl)}"] if key in notes else []
            d.node(nid, kind, _hn(name), rows_, state=what == "s", shape=shape,
                   nograd="the folded cell",
                   tooltip=f"{({'x': 'input', 's': 'state', 'y': 'output'})[what]} {name}")
            rows.add(key, nid, first=True)
    def rank(key) -> int:
        return order.index(key) if order is not None and key in order else rows.rank(key)

    squares: dict = {}  # one delay per state read a step late, shared by all its readers
    for src, dst, w, _b, delayed in edges:
        label = f"<i>{_names(w, decl)}</i>" if w else None
        a, z = ids[src], ids[dst]
        if delayed:
            sq = squares.get(src)
            if sq is None:
                sq = squares[src] = f"{prefix}fold_delay{len(squares)}"
                d.n_nodes += 1
                d.emit(f'"{sq}" ' + _attrs({
                    "shape": "square", "style": "filled", "label": "",
                    "fillcolor": d.t["font"], "color": d.t["font"], "width": "0.14",
                    "height": "0.14", "fixedsize": "true",
                    "tooltip": "one-step delay z⁻¹: the value of the previous step"}))
                # the square beside its state, in its row: the loop runs out to it and back
                row = rows.ids[src]
                row.insert(row.index(a) + 1, sq)
                d.edge(a, sq, "recurrent", arrow=False, label=" ", label_pt=11)
            if src == dst:
                # back along the row into its own state: dot hangs the label under the edge
                # touching the text's top, and another state's edge out of the square runs
                # down through its end; a thin blank line over it and blank space after it
                # (which widens the loop) keep both clear. A loop with no weight (an LSTM's
                # c) gets a blank label as wide as a weight's: without one, dot squashed its
                # two arcs flat against each other
                label = f'<font point-size="5"> </font><br/>{label or "&#160;" * 10}' \
                    f'{"&#160;" * 8}'
            elif label:  # to another row: beside the slanting edge, a space off it
                label = f"&#160;&#160;{label}"
            d.edge(sq, z, "recurrent", label=label, label_pt=11)
            continue
        # an edge down to a lower row (a target over the loss it feeds) is written upwards
        # with its arrow reversed, as in the unrolled picture: the rows keep their order
        down = rank(src) > rank(dst)
        ends = (z, a) if down else (a, z)
        if abs(rank(dst) - rank(src)) > 1:
            # past a row: a label placed after layout (xlabel) may sit on the bent edge;
            # a label placed with the layout stands beside it
            d.edge(*ends, label=label, label_pt=11, back=down)
        else:
            # placed after the layout, beside the edge with no gap: a space each side
            label = label and f"&#160;{label}&#160;"
            d.edge(*ends, label=label, label_pt=11, xlabel=True, back=down)
    # one column: inputs under states under outputs
    if order is not None:  # every row, in the unrolled picture's order
        col = [ids[k] for k in order if k in ids]
    else:
        col = [ids[k] for k in ids if k[0] == "x"][:1] + \
            [ids[k] for k in ids if k[0] == "s"] + [ids[k] for k in ids if k[0] == "y"][:1]
    for a, b in zip(col, col[1:]):
        d.n_edges += 1
        d.emit(f'"{a}" -> "{b}" [style=invis weight=8]')
    return ids


class Textbook(_Unrolled):
    """An unrolled net as in a textbook: rows of inputs, states (one row per state), outputs
    and losses, time left to right, the weights on the edges."""

    def pick_detail(self, n_nodes: int, T: int) -> str:
        return "textbook"

    def elides(self, T: int) -> bool:
        """The first and last ``ends`` steps and a ``⋯`` column for the rest, when the net
        has more than 24 steps, or when ``ends`` is given and leaves steps out."""
        k = self.o["ends"]
        return T > 2 * k + 1 and (T > _AUTO_STEPS or "ends" in self.o.get("_given", ()))

    def what(self) -> str:
        if self.spans:
            return (f"detail='textbook' with ends={self.o['ends']} ({len(self.kept)} of "
                    f"the {self.T} steps)")
        return f"detail='textbook' ({self.T} steps, one node per value per step)"

    def fixes(self) -> str:
        if self.spans:
            return "use a smaller ends= (ends=1 draws the first and last step)"
        return (f"pass ends= to draw the first and last steps and a ⋯ column for the rest "
                f"(ends={self.o['ends']}), or use detail='elide'")

    def least_drawn(self) -> int:
        net = self.net
        return (len(self.kept) + len(self.spans)) * (
            len(net.input_nodes) + len(net.state_nodes) + len(net.output_nodes))

    def out_grad(self, name: str, t: int):
        """The gradient drawn in output ``name`` at step ``t``: the engine's gradient of the
        node (what flows through it, to the loss or to a loss computed from it in the cell);
        for an output that is a state, the part the loss sends to the output itself (the
        state's box shows the node's total)."""
        n = self.net.output_nodes[name][t]
        if any(_unmasked(n) is _unmasked(ns[t]) for ns in self.net.state_nodes.values()):
            return self.own_grad(name, t)
        return self.grad(n) if self.has_grads else None

    def out_mag(self, name: str, t: int):
        return _mag(self.out_grad(name, t)) if self.has_grads else None

    def elided_state_mags(self, s: str) -> list:
        """The gradient norms of state ``s`` at the steps of the elided run drawn."""
        a, b = self.elided
        # every elided step, None where no gradient reaches it (the caller counts those)
        return [_mag(self.state_grad(n)) for n in self.net.state_nodes[s][a:b + 1]]

    def legend(self, extra_rows=()) -> None:
        # as many columns as the picture is wide enough for, under its middle
        drawn = len(self.kept) + len(self.spans) + bool(self.o["folded"])
        self.legend_columns = min(1 if drawn < 3 else 2 if drawn < 6 else 3,
                                  getattr(self, "legend_cap", 3))
        super().legend(extra_rows)
        bottom = getattr(self, "bottom", None)
        if self.o["legend"] and bottom:  # under the bottom row: no edge bends round it
            self.n_edges += len(bottom)
            for b in bottom:
                self.emit(f'"legend" -> "{b}" [style=invis]')

    def legend_rows(self) -> list:
        rows = []
        if self.spans:
            rows.append(("⋯", "steps " + ", ".join(f"{a} … {b}" for a, b in self.spans)
                         + f" left out (ends={self.o['ends']}): "
                         + _drawn_words(self.spans, self.o["ends"], self.T)))
        if self.o["folded"]:
            rows.append(("■", "one-step delay z⁻¹ (the value of the previous step)"))
        note = _mask_note(self.net, self.run)
        if note:  # what the mask does; the steps that pad a sequence say which in x_t
            rows.append(("lengths", _mask_legend(self.net, self.run, note,
                                                 "; the input of a step that pads a "
                                                 "sequence says which")))
        rows.append(("<i>W</i>", "a weight on an edge: the parameters the ops between the "
                                 "two values read" + ("<br/>(named at t = 0: every step reads "
                                                      "the same)" if self.o["compact"] else "")))
        if self.o["biases"] and self.o["compact"]:
            names = [p for p in self.net.param_nodes.values() if id(p) in self.bias_ids]
            if names:
                rows.append(("+ " + _names(names), "biases added on the way to each state"
                                                  "<br/>(for an LSTM or GRU, into its gates)"))
        elif self.o["biases"] and self.bias_ids:
            rows.append(("+ b", "biases the step adds on the way to this value (for an "
                                "LSTM or GRU, into its gates)"))
        if self.has_grads:
            for name, p in self.net.param_nodes.items():
                text = self.number_text(self.grad(p), p)
                if text is None:
                    continue
                rows.append((f"<i>{_hn(name)}</i>", "∇ total = " + _h(text)))
                parts = self.contrib.get(name)
                if parts is not None:  # the signed parts, one per step, that add up to it
                    shown = list(range(len(parts)))
                    if len(shown) > 8:
                        shown = shown[:3] + [None] + shown[-3:]
                    for t in shown:
                        rows.append(("", "⋮" if t is None else
                                     f"step {t}: {self.part_text(parts[t], self.limit(p))}"))
        note = _grad_note(self.net, self.grad) if self.has_grads else None
        if note:
            rows.append(note)
        return rows

    def value_rows(self, n: Node, grad=None, own=False, value=None) -> list[str]:
        """The v = and ∇ = rows of ``n`` (``grad``, ``value``: other numbers printed the way
        ``n``'s are, a masked run's state carried on)."""
        rows = []
        if self.o["compact"]:  # the name only: the gradient is the fill colour
            return rows
        if self.show_values():
            text = self.number_text(self.value(n) if value is None else value, n)
            if text is not None:
                rows.append("v = " + _h(text))
        if self.show_grads():
            text = self.number_text(grad if own else self.grad(n), n)
            if text is not None:
                rows.append("∇ = " + _h(text))
        return rows

    def draw_body(self) -> None:
        g, net, T = self.g, self.net, self.T
        self.bias_ids: set = set()
        rows = _Rows()
        # room between the rows for the weights' names, in proportion to the type size
        o = self.o
        factor = (o["fontsize"] or _TITLE_PT[o["theme"]]) / 12 * o["scale"]
        self.emit(f"graph [ranksep={0.5 * factor:.3g}]")
        # row order, bottom to top: inputs, states in the order a step computes them, outputs
        # states bottom to top in the order a step computes them (an LSTM's c under h): c_t
        # rises straight into h_t and h_t straight into the output over it; h_{t-1} reaches
        # c_t and h_t through one junction in h's row, and only x_t -> h_t passes a row
        states = sorted(net.state_nodes, key=lambda s: g.index(_unmasked(net.state_nodes[s][0])))
        self.states = states
        # an output that is the cell's own loss at each step is the loss's part L_t: drawn
        # in the top row, under L, in the loss's colour
        self.loss_outs = loss_outputs(net, self.o["loss"]) if self.seeded else {}
        outs = sorted(net.output_nodes, key=lambda k: k in self.loss_outs)
        self.once = {id(n) for n in g.nodes if n.step is None and not n.is_leaf}
        # an input read only by those losses (a target) is drawn over them, as the targets
        # over the losses in Goodfellow et al.'s Fig. 10.3
        found0, _ = self.step_values(0)
        feeds = {k: {dst for dst, srcs in found0.items() if ("x", k) in srcs}
                 for k in net.input_nodes}
        over = [k for k in net.input_nodes if feeds[k] and all(
            d[0] == "y" and d[1] in self.loss_outs for d in feeds[k])]
        order = ([("x", k) for k in net.input_nodes if k not in over]
                 + [("s", s) for s in states] + [("y", k) for k in outs]
                 + [("x", k) for k in over])
        self.rank = {key: r for r, key in enumerate(order)}
        if self.o["folded"]:
            # the folded cell beside the unrolled one, its values in the unrolled rows and
            # in their order (a target over the loss it feeds, as in every step's column)
            draw_folded(self, net.cell, "", rows, order)
            self.emit('"unfold" ' + _attrs({"shape": "plaintext", "label": _Html(
                f'<font point-size="12" color="{self.t["muted"]}">unfold ⟹</font>')}))
            self.n_nodes += 1
        if self.o["folded"] and states:
            rows.add(("s", states[-1]), "unfold")
        for s in states:
            n0 = net.init_nodes[s]
            cut = self.v.is_cut(net.state_nodes[s][0])
            self.node(g.id(n0), "state", _sub(_hn(s), "init"), self.value_rows(n0),
                      _mag(self.grad(n0)), cut=cut, state=True, shape="ellipse",
                      tooltip=f"initial state {s}", hot=id(n0) in self.path)
            rows.add(("s", s), g.id(n0))
        self.node_of = {g.id(n): n for n in g.nodes}
        decl = self.decl = {id(p): i for i, p in enumerate(net.param_nodes.values())}
        self.dots: dict = {}  # row -> the "⋯" node standing for the elided run drawn
        self.all_dots: dict = {}  # elided run -> its dots
        kept = kept_steps(net)
        for t in range(T):
            span = self.span_of(t)
            if span is not None:
                if t == span[0]:
                    self.elided = span
                    self.draw_dots(order, rows)
                continue
            found, notes = self.step_values(t)
            cut = self.v.is_cut(net.state_nodes[states[0]][t]) if states else False
            padded = _padded(net, self.run, t)
            pads = [_pads_text(padded)] if padded else []
            for k, ns in net.input_nodes.items():
                n = ns[t]
                self.node(g.id(n), "input", _sub(_hn(k), t), pads + self.value_rows(n),
                          _mag(self.grad(n)), cut=self.v.is_cut(n), shape="ellipse",
                          tooltip=f"input {k} at step {t}" + (
                              f"; padding for sequences {_list_text(padded)}: their state "
                              "is kept and their output is 0" if padded else ""),
                          hot=id(n) in self.path)
                rows.add(("x", k), g.id(n))
            for s in states:
                n = net.state_nodes[s][t]
                for key in notes:
                    self.bias_ids.update(id(p) for p in notes[key])
                extra = [f"+ {_names(notes[('s', s)], decl)}"] if notes[("s", s)] and \
                    self.o["biases"] and not self.o["compact"] else []
                # (masked: the state carried on, Run.value/grad("h@t"): a sequence's rows up
                # to its length the value its step computed, with its total gradient (what
                # the step's outputs and the next step send to it), past its length the
                # state of the step before, kept, with the kept state's gradient)
                m = _unmasked(n)
                grad = self.state_grad(n) if self.has_grads else None
                self.node(g.id(n), "state", _sub(_hn(s), t),
                          extra + self.value_rows(m, grad, own=True, value=self.value(n)),
                          _mag(grad), cut=cut, state=True, shape="ellipse",
                          tooltip=f"state {s} after step {t}: {g.equation(m)}"
                          + ("; masked: a padded sequence keeps the state of the step before"
                             if m is not n else ""),
                          hot=id(n) in self.path, kept=t in kept)
                rows.add(("s", s), g.id(n))
            for k, ns in net.output_nodes.items():
                n = ns[t]
                oid = _out_id(g.id(n), self.out_index[k])
                extra = [f"+ {_names(notes[('y', k)], decl)}"] if notes.get(("y", k)) and \
                    self.o["biases"] and not self.o["compact"] else []
                part = k in self.loss_outs
                self.node(oid, "part" if part else "output", _sub(_hn(k), t),
                          extra + self.value_rows(n, self.out_grad(k, t), own=True),
                          self.out_mag(k, t), shape="octagon" if part else "ellipse",
                          tooltip=(f"{k} at step {t}: the cell's own loss at this step, the "
                                   f"part of {getattr(self.o['loss'], 'name', None) or 'L'} "
                                   "it computes") if part else
                          f"output {k} at step {t}", hot=self.output_hot(k, t))
                rows.add(("y", k), oid)
            ids = self.step_ids(t)
            self.step_edges(t, found, ids, rows, cut)
            self.column([ids[key] for key in order if key in ids])
        for key in rows.order:
            self.row(rows.ids[key])
        low = [i for i in rows.ids.get(order[0], []) if not i.startswith("fold_")] \
            if order else None  # (the folded cell's beside)
        # the legend under the middle: the middle node of the bottom row, or the two
        self.bottom = low[(len(low) - 1) // 2: len(low) // 2 + 1] if low else None
        # the targets' row is the top one: L goes over it, not beside it
        top = rows.ids.get(order[-1]) if over else None
        self.top = top[len(top) // 2] if top else None

    def step_values(self, t: int):
        """The edges into step ``t``'s values: ``found[dst][src] = (weights, biases)``, and
        the biases added into each value."""
        net, states = self.net, self.states
        stops = {}
        for k, ns in net.input_nodes.items():
            stops[id(ns[t])] = ("x", k)
        for s in states:
            prev = net.init_nodes[s] if t == 0 else net.state_nodes[s][t - 1]
            stops[id(prev)] = ("prev", s)
        # a masked net's values are where nodes over the cell's own (the step reads the
        # masked states of the step before): the edges are those of the values they wrap
        state_ids = {id(_unmasked(net.state_nodes[s][t])) for s in states}
        # an output another value is computed from (loss_t from y_t): the path passes y_t,
        # so the edge comes from y_t (a state an output stands for stays the state)
        for k, ns in net.output_nodes.items():
            if id(_unmasked(ns[t])) not in state_ids:
                stops[id(_unmasked(ns[t]))] = ("y", k)
        for s in states:
            stops[id(_unmasked(net.state_nodes[s][t]))] = ("s", s)
        targets = [(_unmasked(net.state_nodes[s][t]), ("s", s)) for s in states]
        for k, ns in net.output_nodes.items():
            if id(_unmasked(ns[t])) not in state_ids:
                targets.append((_unmasked(ns[t]), ("y", k)))
        found, notes = {}, {}
        for node, key in targets:
            st = {i: v for i, v in stops.items() if i != id(node)}
            found[key] = edge_params(node, st, lambda n: n.op == "param",
                                     lambda n: id(n) in self.once)
            notes[key] = []
            for _w, b in found[key].values():
                notes[key] += [p for p in b if all(p is not q for q in notes[key])]
        return found, notes

    def step_ids(self, t: int) -> dict:
        """Row key -> the id drawn for step ``t``'s value (``("prev", s)``: the state it
        reads); an elided step's values are its row's ``⋯``."""
        g, net = self.g, self.net
        if self.span_of(t) is not None:
            ids = dict(self.all_dots[self.span_of(t)])
        else:
            ids = {("x", k): g.id(ns[t]) for k, ns in net.input_nodes.items()}
            ids.update({("s", s): g.id(net.state_nodes[s][t]) for s in self.states})
            ids.update({("y", k): _out_id(g.id(ns[t]), self.out_index[k])
                        for k, ns in net.output_nodes.items()})
        for s in self.states:
            if t == 0:
                ids[("prev", s)] = g.id(net.init_nodes[s])
            elif self.span_of(t - 1) is not None:
                ids[("prev", s)] = self.all_dots[self.span_of(t - 1)][("s", s)]
            else:
                ids[("prev", s)] = g.id(net.state_nodes[s][t - 1])
        return ids

    def step_edges(self, t: int, found: dict, ids: dict, rows: _Rows, cut: bool,
                   within_dots: bool = False) -> None:
        """The edges of step ``t``, each labelled with the weights between its two values.
        ``within_dots``: the first elided step, whose values are the ``⋯`` column: its edges
        from the step before come in, the others join the column's ``⋯`` nodes."""
        net, node_of, rank = self.net, self.node_of, self.rank
        # one source feeding several values through the same weights, one of them in its
        # own row (h_{t-1} into h_t and c_t through weight_hh): one labelled edge to a
        # junction in that row, then an arrow to each value
        groups: dict = {}
        for dst, srcs in found.items():
            for src, (w, _b) in srcs.items():
                groups.setdefault((src, tuple(id(p) for p in w)), []).append((dst, w))
        for (src, _), dsts in groups.items():
            w = dsts[0][1]
            a = ids[src]
            label = f"<i>{_names(w, self.decl)}</i>" if w else None
            if self.o["compact"] and t > 0:  # the same weights at every step:
                label = None  # named once, on the first step's edges
            src_row = ("s", src[1]) if src[0] == "prev" else src
            kind = "recurrent" if src[0] == "prev" else "data"
            hots = {dst: self.on_path(node_of[a], node_of[ids[dst]])
                    if a in node_of and ids[dst] in node_of else False for dst, _ in dsts}
            if len(dsts) > 1 and w and any(dst == src_row for dst, _ in dsts):
                j = f"{a}_to_{ids[src_row]}"
                self.junction(j, kind, f"{_names(w, self.decl)}: read on the way from "
                                       f"{self.name_of(a)} to each value its arrows reach")
                row = rows.ids[src_row]
                row.insert(row.index(ids[src_row]), j)
                # (its label placed after the layout: a label on this edge in its row
                # takes part in ordering the row, and dot then at times puts the state
                # right of the junction it feeds, the edge looping back round it)
                self.edge(a, j, kind, label=label, label_pt=11, cut=cut,
                          hot=any(hots.values()), arrow=False, xlabel=True)
                src_node, label = j, None
            else:
                src_node = a
            for dst, _w in dsts:
                # an edge down to a lower row (h_{t-1} into c_t) is written upwards with its
                # arrow reversed: dot then routes it straight down instead of round a loop
                down = rank[src_row] > rank[dst]
                ends = (ids[dst], src_node) if down else (src_node, ids[dst])
                # past a row, a label placed after the layout (xlabel) may land on another
                # edge (x_0's weight on the c_0 -> c_1 arrow): placed with the layout, it
                # stands beside its own
                self.edge(*ends, kind, label=label, label_pt=11, cut=cut, hot=hots[dst],
                          back=down,
                          xlabel=src_row != dst and abs(rank[dst] - rank[src_row]) <= 1)
        state_ids = {id(_unmasked(net.state_nodes[s][t])): s for s in self.states}
        for k, ns in net.output_nodes.items():
            if id(_unmasked(ns[t])) in state_ids:
                self.edge(ids[("s", state_ids[id(_unmasked(ns[t]))])], ids[("y", k)], cut=cut,
                          hot=False if within_dots else self.output_hot(k, t))

    def name_of(self, nid: str) -> str:
        n = self.node_of.get(nid)
        if n is not None:
            return self.g.display_name(n)
        return next((f"{key[1]} in the elided steps {a} … {b}"
                     for (a, b), dots in self.all_dots.items() for key, d in dots.items()
                     if d == nid), nid)

    def elided_mags(self, key) -> list:
        """The gradient norms of row ``key``'s value at each elided step (None where it has
        none), as each step's node of the row is filled: a state's as the net carries it
        on, an output's as the loss sends it (see :meth:`out_grad`), an input's its own."""
        a, b = self.elided
        kind, name = key
        if kind == "s":
            return self.elided_state_mags(name)
        if kind == "y":
            return [self.out_mag(name, t) for t in range(a, b + 1)]
        return [_mag(self.grad(n)) for n in self.net.input_nodes[name][a:b + 1]]

    def draw_dots(self, order: list, rows: _Rows) -> None:
        """The elided steps as one column: a ``⋯`` in each row, drawn as the row's values are
        (an input's oval, a state's, an output's or a loss part's), with the elided steps'
        range and, where they have gradients, the range of their norms per step and a fill
        by their root mean square (on the scale of one step's norm, as the others); the
        edges from the step before come in."""
        a, b = self.elided
        net = self.net
        cut = self.v.is_cut(net.state_nodes[self.states[0]][b]) if self.states else False
        before = sum(len(d) for d in self.all_dots.values())  # (ids apart from every run's)
        self.dots = self.all_dots[self.elided] = {}
        for key in order:
            nid = self.dots[key] = f"elided_{key[0]}{before + len(self.dots)}"
            part = key[0] == "y" and key[1] in self.loss_outs
            what = {"x": "input", "s": "state", "y": "output"}[key[0]]
            if part:
                what = "the loss's part"
            tip = f"{what} {key[1]} at steps {a} … {b} (elided)"
            mag, rows_ = None, [f"steps {a} … {b}"]
            if key[0] == "s":
                hidden = sum(1 for t in kept_steps(net) if a <= t <= b)
                if hidden:  # checkpoint=: the ✓ states this column stands for
                    rows_.append(f"{hidden} kept ✓ among them")
            got = _elided_numbers(self.elided_mags(key)) if self.has_grads else None
            if got:
                mag = got[0]  # on the scale of one step's norm, as the others
                if self.show_grads() and not self.o["compact"]:
                    rows_.append(f"‖∇‖ per step: {_h(got[2])}")
                    tip += f"; the fill is the root mean square, {_num(mag)}"
            kind = {"x": "input", "s": "state", "y": "part" if part else "output"}[key[0]]
            # greyed as the row's values of a drawn step are: a state and an input where
            # truncation cuts the steps, an output never (the loss sends it its gradient)
            greyed = cut if key[0] == "s" else key[0] == "x" and self.v.is_cut(
                net.input_nodes[key[1]][b])
            self.node(nid, kind, "⋯", rows_, mag, cut=greyed,
                      shape="octagon" if part else "ellipse", tooltip=tip,
                      state=key[0] == "s")
            rows.add(key, nid)
        found, _notes = self.step_values(a)
        cut_a = self.v.is_cut(net.state_nodes[self.states[0]][a]) if self.states else False
        self.step_edges(a, found, self.step_ids(a), rows, cut_a, within_dots=True)
        self.column([self.dots[key] for key in order])

    def junction(self, nid: str, kind: str, tooltip: str) -> None:
        """A small dot where one edge splits into several."""
        self.n_nodes += 1
        colour = self.t["recurrent" if kind == "recurrent" else "edge"]
        self.emit(f'"{nid}" ' + _attrs({"shape": "point", "width": "0.08", "color": colour,
                                         "tooltip": tooltip}))

    def column(self, ids: list[str]) -> None:
        """Keep one step's values in one column, rows in order (invisible, heavy edges)."""
        for a, b in zip(ids, ids[1:]):
            self.n_edges += 1
            self.emit(f'"{a}" -> "{b}" [style=invis weight=8]')

    def draw_loss(self) -> None:
        if not self.seeded:
            return
        g = self.g
        loss = self.o["loss"]
        by_step = {n.step for n, kind, _ in self.seeded_reads if kind == "output"}
        # a loss over several steps: L_t nodes feeding L, only where the split is computed
        # (never a node suggesting a decomposition whose parts cannot be shown)
        parts = step_losses(self.net, loss) if len(by_step) > 1 and \
            isinstance(loss, Tensor) and not self.loss_outs else None
        rows = []
        if loss is not None and self.show_values():
            text = _array_text(getattr(loss, "data", loss), 1)
            if text is not None:
                sym = self.loss_sym()
                sigma = f"Σ<sub>t</sub> {_sub(sym, 't')} = " if parts is not None else ""
                for k, how in self.loss_outs.items():  # the cell's own per-step losses
                    read = sorted({n.step for n, _, nm in self.seeded_reads if nm == k})
                    at = "" if len(read) == self.T else " at t = " + (
                        ", ".join(map(str, read)) if len(read) <= 6 else "the steps read")
                    sigma = ("Σ " if how == "sum" else "mean of ") + \
                        f"{_hn(k)}<sub>t</sub>{at} = "
                    if how == "sum" and not at:
                        sigma = f"Σ<sub>t</sub> {_hn(k)}<sub>t</sub> = "
                rows.append(f"{sym} = {sigma}{_h(text)}")
        name = getattr(loss, "name", None) or "L"
        self.node("loss", "loss", _hn(name), rows, hot=bool(self.path), tooltip=name,
                  shape="doublecircle" if not rows else "doubleoctagon")
        self.emit('{rank=sink; "loss"}')
        if getattr(self, "top", None):
            self.n_edges += 1
            self.emit(f'"{self.top}" -> "loss" [style=invis]')
        lrow = []
        done = set()
        for n, kind, nm in self.seeded_reads:
            hot = id(n) in self.path and bool(self.path)
            if kind == "state":  # a final state the loss reads
                self.edge(g.id(n), "loss", "loss", hot=hot)
                continue
            span = self.span_of(n.step)
            elided = span is not None
            if elided:  # the elided steps the loss reads: one edge from their ⋯
                src, hot = self.all_dots[span][("y", nm)], False
            else:
                src = _out_id(g.id(n), self.out_index[nm])
            if parts is not None:
                lid = (("loss_elided" if span == self.spans[0] else f"loss_elided{span[0]}")
                       if elided else f"loss_{n.step}")
                if lid not in lrow:
                    lrow.append(lid)
                    if elided:
                        a, b = span
                        value = float(parts[a:b + 1].sum())
                        title = f"{self.loss_sym()}<sub>{a}…{b}</sub>"
                        what = f"the parts of the loss from steps {a} … {b}, added"
                    else:
                        value, title = parts[n.step], _sub(self.loss_sym(), n.step)
                        what = f"the part of the loss from step {n.step}"
                    part = [f"v = {_h(_num(value))}"] \
                        if self.show_values() and not self.o["compact"] else []
                    self.node(lid, "part", title, part, hot=hot, shape="octagon",
                              tooltip=f"{what}: {_num(value)} (the parts add up to "
                                      f"{getattr(loss, 'name', None) or 'L'})")
                    self.edge(lid, "loss", "loss", hot=hot)
                if (src, lid) not in done:
                    done.add((src, lid))
                    self.edge(src, lid, "loss", hot=hot)
                    self.column([src, lid])  # L_t over y_t
            elif (src, "loss") not in done:
                done.add((src, "loss"))
                self.edge(src, "loss", "loss", hot=hot)
        self.row(lrow)

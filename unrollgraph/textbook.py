"""The textbook picture of a recurrent net: time left to right, inputs in a row at the bottom,
each state in a row of its own joined by the recurrent edges, outputs and losses at the top,
and the weights written on the edges they act on instead of drawn as nodes.

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
    _array_text,
    _attrs,
    _Drawer,
    _h,
    _hn,
    _Html,
    _mag,
    _num,
    _out_id,
    _Scale,
    _shown,
    _Unrolled,
)
from .tensor import Tensor
from .view import step_losses

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
    for node, key in targets:
        stops = dict(base)
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


def draw_folded(d: _Drawer, cell, prefix: str, rows: _Rows) -> dict:
    """Draw the folded cell into drawer ``d``; node ids start with ``prefix``."""
    g = cell.graph()
    edges = _folded_edges(cell, g)
    ids = {}
    shown = {"x": cell.inputs, "s": cell.states, "y": cell.outputs}
    kinds = {"x": ("input", "ellipse"), "s": ("state", "ellipse"), "y": ("output", "ellipse")}
    notes: dict = {}
    for _src, dst, _w, b, _delayed in edges:
        if b and d.o["biases"]:
            notes.setdefault(dst, [])
            notes[dst] += [p for p in b if all(p is not q for q in notes[dst])]
    for what in ("x", "s", "y"):
        for name in shown[what]:
            key = (what, name)
            nid = f"{prefix}fold_{what}{len(ids)}"
            ids[key] = nid
            kind, shape = kinds[what]
            decl = {id(n): i for i, n in enumerate(n for n in g.nodes if n.op == "param")}
            rows_ = [f"+ {_names(notes[key], decl)}"] if key in notes else []
            d.node(nid, kind, _hn(name), rows_, state=what == "s", shape=shape,
                   tooltip=f"{({'x': 'input', 's': 'state', 'y': 'output'})[what]} {name}")
            rows.add(key, nid, first=True)
    squares: dict = {}  # one delay per state read a step late, shared by all its readers
    for src, dst, w, _b, delayed in edges:
        label = f"<i>{_names(w)}</i>" if w else None
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
            d.edge(sq, z, "recurrent", label=label, label_pt=11)
        else:
            d.edge(a, z, label=label, label_pt=11, xlabel=True)
    # one column: inputs under states under outputs
    col = [ids[k] for k in ids if k[0] == "x"][:1] + [ids[k] for k in ids if k[0] == "s"] + \
        [ids[k] for k in ids if k[0] == "y"][:1]
    for a, b in zip(col, col[1:]):
        d.n_edges += 1
        d.emit(f'"{a}" -> "{b}" [style=invis weight=8]')
    return ids


class Textbook(_Unrolled):
    """An unrolled net as in a textbook: rows of inputs, states (one row per state), outputs
    and losses, time left to right, the weights on the edges."""

    def pick_detail(self, n_nodes: int, T: int) -> str:
        return "textbook"

    def what(self) -> str:
        return f"detail='textbook' ({self.T} steps, one node per value per step)"

    def fixes(self) -> str:
        return f"use detail='elide' (the first and last ends={self.o['ends']} steps)"

    def least_drawn(self) -> int:
        net = self.net
        return self.T * (len(net.input_nodes) + len(net.state_nodes) + len(net.output_nodes))

    def all_mags(self) -> list:
        if not self.has_grads:
            return []
        net = self.net
        mags = [_mag(self.grad(n)) for ns in list(net.input_nodes.values())
                + list(net.state_nodes.values()) for n in ns]
        mags += [_mag(self.grad(n)) for n in net.init_nodes.values()]
        mags += [self.output_mag(k, t) for k in net.output_nodes for t in range(self.T)]
        return mags

    def legend_rows(self) -> list:
        rows = []
        if self.o["folded"]:
            rows.append(("■", "one-step delay z⁻¹ (the value of the previous step)"))
        rows.append(("<i>W</i>", "a weight on an edge: the parameters the ops between the "
                                 "two values read" + ("<br/>(named at t = 0: every step reads "
                                                      "the same)" if self.o["compact"] else "")))
        if self.o["biases"] and self.o["compact"]:
            names = [p for p in self.net.param_nodes.values() if id(p) in self.bias_ids]
            if names:
                rows.append(("+ " + _names(names), "biases added on the way to each state"
                                                  "<br/>(for an LSTM or GRU, into its gates)"))
        elif self.o["biases"]:
            rows.append(("+ b", "biases the step adds on the way to this value (for an "
                                "LSTM or GRU, into its gates)"))
        if self.has_grads:
            for name, p in self.net.param_nodes.items():
                text = _array_text(self.grad(p), self.o["max_elements"])
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
                                     f"step {t}: {self.part_text(parts[t])}"))
        return rows

    def value_rows(self, n: Node, grad=None, own=False) -> list[str]:
        rows = []
        if self.o["compact"]:  # the name only: the gradient is the fill colour
            return rows
        if self.show_values():
            text = _array_text(self.value(n), self.o["max_elements"])
            if text is not None:
                rows.append("v = " + _h(text))
        if self.show_grads():
            text = _array_text(grad if own else self.grad(n), self.o["max_elements"])
            if text is not None:
                rows.append("∇ = " + _h(text))
        return rows

    def draw_body(self) -> None:
        g, net, T = self.g, self.net, self.T
        self.bias_ids: set = set()
        rows = _Rows()
        # row order, bottom to top: inputs, states in the order a step computes them, outputs
        if self.o["folded"]:
            draw_folded(self, net.cell, "", rows)
            self.emit('"unfold" ' + _attrs({"shape": "plaintext", "label": _Html(
                f'<font point-size="12" color="{self.t["muted"]}">unfold ⟹</font>')}))
            self.n_nodes += 1
        # states bottom to top in the reverse of the order a step computes them (an LSTM's h
        # under c, as in Olah's figures): h_{t-1} then rises into c_t, and c_t comes down
        # into h_t inside the step
        states = sorted(net.state_nodes, key=lambda s: -g.index(net.state_nodes[s][0]))
        order = ([("x", k) for k in net.input_nodes] + [("s", s) for s in states]
                 + [("y", k) for k in net.output_nodes])
        rank = {key: r for r, key in enumerate(order)}
        if self.o["folded"] and states:
            rows.add(("s", states[-1]), "unfold")
        cut_of = {}
        for s in states:
            n0 = net.init_nodes[s]
            cut = self.v.is_cut(net.state_nodes[s][0])
            self.node(g.id(n0), "state", _sub(_hn(s), "init"), self.value_rows(n0),
                      _mag(self.grad(n0)), cut=cut, state=True, shape="ellipse",
                      tooltip=f"initial state {s}", hot=id(n0) in self.path)
            rows.add(("s", s), g.id(n0))
        once = {id(n) for n in g.nodes if n.step is None and not n.is_leaf}
        decl = {id(p): i for i, p in enumerate(net.param_nodes.values())}
        is_param = lambda n: n.op == "param"  # noqa: E731
        is_shared = lambda n: id(n) in once  # noqa: E731
        kept = kept_steps(net)
        for t in range(T):
            stops = {}
            for k, ns in net.input_nodes.items():
                stops[id(ns[t])] = ("x", k)
            for s in states:
                prev = net.init_nodes[s] if t == 0 else net.state_nodes[s][t - 1]
                stops[id(prev)] = ("prev", s)
            for s in states:
                stops[id(net.state_nodes[s][t])] = ("s", s)
            cut = self.v.is_cut(net.state_nodes[states[0]][t]) if states else False
            cut_of[t] = cut
            for k, ns in net.input_nodes.items():
                n = ns[t]
                self.node(g.id(n), "input", _sub(_hn(k), t), self.value_rows(n),
                          _mag(self.grad(n)), cut=self.v.is_cut(n), shape="ellipse",
                          tooltip=f"input {k} at step {t}", hot=id(n) in self.path)
                rows.add(("x", k), g.id(n))
            targets = [(net.state_nodes[s][t], ("s", s)) for s in states]
            state_ids = {id(net.state_nodes[s][t]): s for s in states}
            for k, ns in net.output_nodes.items():
                if id(ns[t]) not in state_ids:
                    targets.append((ns[t], ("y", k)))
            found = {}
            notes = {}
            for node, key in targets:
                st = {i: v for i, v in stops.items() if i != id(node)}
                found[key] = edge_params(node, st, is_param, is_shared)
                notes[key] = []
                for _w, b in found[key].values():
                    notes[key] += [p for p in b if all(p is not q for q in notes[key])]
            for s in states:
                n = net.state_nodes[s][t]
                for key in notes:
                    self.bias_ids.update(id(p) for p in notes[key])
                extra = [f"+ {_names(notes[('s', s)], decl)}"] if notes[("s", s)] and \
                    self.o["biases"] and not self.o["compact"] else []
                if t in kept:  # checkpoint=: the run kept this state, recomputed the others
                    extra.append("kept")
                self.node(g.id(n), "state", _sub(_hn(s), t), extra + self.value_rows(n),
                          _mag(self.grad(n)), cut=cut, state=True, shape="ellipse",
                          tooltip=f"state {s} after step {t}: {g.equation(n)}",
                          hot=id(n) in self.path)
                rows.add(("s", s), g.id(n))
            for k, ns in net.output_nodes.items():
                n = ns[t]
                oid = _out_id(g.id(n), self.out_index[k])
                extra = [f"+ {_names(notes[('y', k)], decl)}"] if notes.get(("y", k)) and \
                    self.o["biases"] and not self.o["compact"] else []
                self.node(oid, "output", _sub(_hn(k), t),
                          extra + self.value_rows(n, self.own_grad(k, t), own=True),
                          self.output_mag(k, t), shape="ellipse",
                          tooltip=f"output {k} at step {t}", hot=self.output_hot(k, t))
                rows.add(("y", k), oid)
            # edges, labelled with the weights between the two values
            ids = {("x", k): g.id(ns[t]) for k, ns in net.input_nodes.items()}
            for s in states:
                prev = net.init_nodes[s] if t == 0 else net.state_nodes[s][t - 1]
                ids[("prev", s)] = g.id(prev)
                ids[("s", s)] = g.id(net.state_nodes[s][t])
            for k, ns in net.output_nodes.items():
                ids[("y", k)] = _out_id(g.id(ns[t]), self.out_index[k])
            node_of = {g.id(n): n for n in g.nodes}
            for dst, srcs in found.items():
                for src, (w, _b) in srcs.items():
                    a, z = ids[src], ids[dst]
                    label = f"<i>{_names(w)}</i>" if w else None
                    if self.o["compact"] and t > 0:  # the same weights at every step:
                        label = None  # named once, on the first step's edges
                    src_row = ("s", src[1]) if src[0] == "prev" else src
                    hot = self.on_path(node_of[a], node_of[z]) if a in node_of and \
                        z in node_of else False
                    kind = "recurrent" if src[0] == "prev" else "data"
                    self.edge(a, z, kind, label=label, label_pt=11, cut=cut, hot=hot,
                              constraint=rank[src_row] <= rank[dst],
                              xlabel=src_row != dst)
            for k, ns in net.output_nodes.items():
                if id(ns[t]) in state_ids:
                    self.edge(g.id(ns[t]), ids[("y", k)], cut=cut,
                              hot=self.output_hot(k, t))
            self.column([ids[key] for key in order if key in ids])
        for key in rows.order:
            self.row(rows.ids[key])

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
            isinstance(loss, Tensor) else None
        rows = []
        if loss is not None and self.show_values():
            text = _array_text(getattr(loss, "data", loss), 1)
            if text is not None:
                sigma = "Σ<sub>t</sub> L<sub>t</sub> = " if parts is not None else ""
                rows.append(f"L = {sigma}{_h(text)}")
        name = getattr(loss, "name", None) or "L"
        self.node("loss", "loss", _hn(name), rows, hot=bool(self.path), tooltip=name,
                  shape="doublecircle" if not rows else "doubleoctagon")
        self.emit('{rank=sink; "loss"}')
        lrow = []
        for n, kind, nm in self.seeded_reads:
            hot = id(n) in self.path and bool(self.path)
            if kind == "state":  # a final state the loss reads
                self.edge(g.id(n), "loss", "loss", hot=hot)
                continue
            src = _out_id(g.id(n), self.out_index[nm])
            if parts is not None:
                lid = f"loss_{n.step}"
                if lid not in lrow:
                    lrow.append(lid)
                    part = [f"v = {_h(_num(parts[n.step]))}"] \
                        if self.show_values() and not self.o["compact"] else []
                    self.node(lid, "part", _sub("L", n.step), part,
                              tooltip=f"the part of the loss from step {n.step}: "
                                      f"{_num(parts[n.step])} (the parts add up to L)",
                              hot=hot)
                    self.edge(lid, "loss", "loss", hot=hot)
                self.edge(src, lid, "loss", hot=hot)
            else:
                self.edge(src, "loss", "loss", hot=hot)
        self.row(lrow)

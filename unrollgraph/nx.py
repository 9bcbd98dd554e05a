"""networkx interchange: export any graph with stable node ids, and import one back."""

from __future__ import annotations

import numpy as np

from .errors import GraphError
from .graph import Graph, Node, toposort

__all__ = ["to_networkx", "from_networkx"]


def to_networkx(obj):
    """Export a Tensor's graph, a Cell or an unrolled net as a ``networkx.DiGraph``.

    Node ids are ``"n0", "n1", ...`` in topological order, so they are the same on every run.
    Node attributes: ``op``, ``name`` (display name), ``label`` (user name or None), ``shape``,
    ``step``, ``role``, ``attrs``, and ``value`` / ``grad`` (numpy arrays) where known. Edge
    attributes: ``index`` (the input slot), ``feedback=True`` on a cell's delay edges,
    ``shared=True`` on edges leaving a node shared by all steps of an unrolled net.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor(1.0, name="x")
    >>> G = ug.to_networkx(ug.tanh(x))
    >>> sorted(G.nodes), G.nodes["n1"]["op"], list(G.edges)
    (['n0', 'n1'], 'tanh', [('n0', 'n1')])
    """
    import networkx as nx

    from .view import view

    v = view(obj)
    g = v.graph
    G = nx.DiGraph(kind=v.kind)
    for n in g.nodes:
        attrs = {
            "op": n.op,
            "name": g.display_name(n),
            "label": n.name,
            "shape": None if n.shape is None else tuple(n.shape),
            "step": n.step,
            "role": n.role,
            "attrs": {k: a for k, a in n.attrs.items() if not k.startswith("_")},
        }
        val, grad = v.value(n), v.grad(n)
        if isinstance(val, np.ndarray):
            attrs["value"] = val
        if isinstance(grad, np.ndarray):
            attrs["grad"] = grad
        G.add_node(g.id(n), **attrs)
    for n in g.nodes:
        for k, i in enumerate(n.inputs):
            if i in g:
                shared = v.kind == "unrolled" and i.step is None and n.step is not None
                G.add_edge(g.id(i), g.id(n), index=k, feedback=False, shared=shared)
    for nxt, state in v.feedback:
        G.add_edge(g.id(nxt), g.id(state), index=0, feedback=True, shared=False)
    return G


def from_networkx(G) -> Graph:
    """Rebuild a :class:`Graph` from a DiGraph made by :func:`to_networkx` (or by hand).

    Each node needs an ``op``; inputs are the in-edges ordered by their ``index`` attribute.
    Edges marked ``feedback=True`` are one-step delays and are returned in
    ``graph.feedback`` as ``(next_value, state)`` pairs rather than as inputs; any other cycle
    is a :class:`CycleError` that names the loop.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> G = ug.to_networkx(ug.tanh(ug.tensor(1.0, name="x")))
    >>> print(ug.from_networkx(G))
    x = leaf()  # shape ()
    n1 = tanh(x)  # shape ()
    """
    for key, data in G.nodes(data=True):
        if "op" not in data:
            raise GraphError(f"networkx node {key!r} has no 'op' attribute; every node needs one")
    preds = {}
    for key in G.nodes:
        ins = [(d.get("index", 0), u) for u, _, d in G.in_edges(key, data=True)
               if not d.get("feedback")]
        preds[key] = [u for _, u in sorted(ins, key=lambda p: (p[0], str(p[1])))]

    class _Key:
        __slots__ = ("key",)

        def __init__(self, key):
            self.key = key

        def label(self):
            return str(G.nodes[self.key].get("name") or self.key)

    wrap = {k: _Key(k) for k in G.nodes}
    keys = sorted(G.nodes, key=_natural)
    order = toposort([wrap[k] for k in keys],
                     lambda w: [wrap[p] for p in preds[w.key]])
    built: dict = {}
    for w in order:
        d = G.nodes[w.key]
        built[w.key] = Node(
            d["op"],
            tuple(built[p] for p in preds[w.key]),
            dict(d.get("attrs") or {}),
            d.get("label"),
            d.get("shape"),
            step=d.get("step"),
            role=d.get("role"),
        )
    sinks = [built[k] for k in keys
             if not any(not dd.get("feedback") for _, _, dd in G.out_edges(k, data=True))]
    graph = Graph(sinks, order=[built[w.key] for w in order])
    graph.feedback = [
        (built[u], built[v]) for u, v, d in G.edges(data=True) if d.get("feedback")
    ]
    return graph




def _natural(key):
    """Sort ids like n2 before n10 (ids from to_networkx), anything else by its text."""
    text = str(key)
    digits = text.lstrip("abcdefghijklmnopqrstuvwxyz_")
    head = text[: len(text) - len(digits)]
    return (head, int(digits)) if digits.isdigit() else (text, -1)

"""One read-only view over anything that has a graph: a Tensor's history, a Cell (folded) or an
unrolled net. Diagrams (render), networkx export and the chain-rule narrative all read graphs
through this view, so they agree on node ids, values and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .cell import Cell
from .errors import GraphError
from .graph import Graph, Node, toposort
from .tensor import Tensor
from .unroll import Run, Unrolled

__all__ = ["GraphView", "view"]


@dataclass
class GraphView:
    """What a diagram or an export needs to know about a graph.

    Attributes
    ----------
    kind : str
        ``"tensor"``, ``"cell"``, ``"unrolled"`` or ``"graph"``.
    graph : Graph
        Nodes in topological order, with stable ids ``graph.id(node)``.
    value, grad : callable
        ``node -> ndarray or None``.
    feedback : list of (Node, Node)
        Delay edges ``(next_value, state)`` of a folded cell.
    cell, net, run : optional
        The cell, the unrolled net and the run the values come from.
    """

    kind: str
    graph: Graph
    value: Callable[[Node], object] = lambda n: None
    grad: Callable[[Node], object] = lambda n: None
    feedback: list = field(default_factory=list)
    cell: Cell | None = None
    net: Unrolled | None = None
    run: Run | None = None

    @property
    def steps(self) -> int | None:
        return None if self.net is None else self.net.steps

    def is_cut(self, node: Node) -> bool:
        """Nodes that truncated BPTT keeps gradient away from."""
        return self.net is not None and self.net.is_cut(node)


def view(obj) -> GraphView:
    """Build the :class:`GraphView` of a Tensor, Cell, Unrolled net, Run or Graph.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor(2.0, requires_grad=True, name="x")
    >>> y = x * x
    >>> y.backward()
    >>> v = view(y)
    >>> v.kind, float(v.grad(x.node))
    ('tensor', 4.0)
    """
    if isinstance(obj, Tensor):
        tensors = toposort([obj], lambda t: t._parents)
        by_node = {id(t.node): t for t in tensors}
        graph = Graph([obj.node], order=[t.node for t in tensors])

        def value(n):
            t = by_node.get(id(n))
            return None if t is None or not isinstance(t.data, np.ndarray) else t.data

        def grad(n):
            t = by_node.get(id(n))
            return None if t is None else t.grad

        return GraphView("tensor", graph, value, grad)
    if isinstance(obj, Cell):
        graph = obj.graph()
        leaves = obj.leaf_tensors()

        def cvalue(n):
            t = leaves.get(id(n))
            return t.data if t is not None and n.op in ("param", "const", "leaf") else None

        def cgrad(n):
            t = leaves.get(id(n))
            return t.grad if t is not None and n.op == "param" else None

        fb = [(t.node, obj.states[s].node) for s, t in obj.feedbacks.items()]
        return GraphView("cell", graph, cvalue, cgrad, fb, cell=obj)
    if isinstance(obj, Run):
        net, run = obj.net, obj
    elif isinstance(obj, Unrolled):
        net, run = obj, obj.last_run
    elif isinstance(obj, Graph):
        # a Graph rebuilt by from_networkx keeps its delay edges in .feedback
        return GraphView("graph", obj, feedback=list(getattr(obj, "feedback", None) or []))
    else:
        raise GraphError(
            f"cannot take the graph of a {type(obj).__name__}; pass a Tensor, a Cell, an "
            "unrolled net (ug.unroll(...)) or a Graph"
        )
    if run is not None and run.net is not net:
        net = run.net  # the last call ran the masked twin (lengths=...): draw what ran
    if run is not None:
        run = run.full()  # a keep="needed" run recomputes what it did not keep

    def uvalue(n):
        v = None if run is None else run.values[net.slot(n)]
        return v if isinstance(v, np.ndarray) else None  # None where keep="needed" freed it

    def ugrad(n):
        return None if run is None or run.grads is None else run.grads[net.slot(n)]

    return GraphView("unrolled", net.graph, uvalue, ugrad, cell=net.cell, net=net, run=run)

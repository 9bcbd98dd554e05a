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

__all__ = ["GraphView", "view", "read_outputs", "reads"]


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

    def ugrad(n):  # (Run.grad: None where the reference walk puts no gradient)
        return None if run is None or run.grads is None else run.grad(n)

    return GraphView("unrolled", net.graph, uvalue, ugrad, cell=net.cell, net=net, run=run)


def read_outputs(net, seeds, loss=None) -> list[Node]:
    """The output nodes (and final states) a loss reads, one per step it reads.

    With ``loss`` (a Tensor computed from the net's outputs) the answer is structural: an
    output read through indexing along time (``outputs[-1]``, ``outputs[1:]``, a boolean mask)
    is read at the steps the index selects, an output read by any other op at every step, a
    final state when the loss's graph holds it. Without ``loss``, or when the loss's graph
    holds no output of this net, the gradient decides: a step is read when the loss sent it a
    gradient that is not zero everywhere (``seeds``, as kept by the run).

    Parameters
    ----------
    net : Unrolled
    seeds : list or None
        ``Run.seeds``: one gradient (T, ...) per output, then one per final state.
    loss : Tensor, optional

    Returns
    -------
    list of Node
        Output nodes in output then time order, then final-state nodes.

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=3)
    >>> outputs, h = net(np.ones((3, 1, 2)))
    >>> loss = (outputs[-1] * outputs[-1]).sum()
    >>> loss.backward()
    >>> [n.step for n in read_outputs(net, net.last_run.seeds, loss)]
    [2]
    """
    return [n for n, _, _ in reads(net, seeds, loss)]


def reads(net, seeds, loss=None) -> list:
    """:func:`read_outputs` with what each node is read as: ``(node, "output", name)`` or
    ``(node, "state", name)`` (a final state; for a cell whose output is its state, one node
    is both, and the loss may read either)."""
    outs = list(net.output_nodes.values())
    finals = [ns[-1] for ns in net.state_nodes.values()]
    read = _read_structurally(net, loss) if isinstance(loss, Tensor) else None
    if read is None:
        if seeds is None:
            return []
        read = {}
        for i, s in enumerate(seeds):
            if s is None:
                continue
            arr = np.asarray(s)
            if i < len(outs):
                flat = arr.reshape(len(outs[i]), -1)
                read[i] = set(np.flatnonzero(np.any(flat != 0, axis=1)).tolist())  # NaN: read
            elif np.any(arr != 0):
                read[i] = {net.steps - 1}
    out_names, state_names = list(net.output_nodes), list(net.state_nodes)
    nodes = []
    for i in sorted(read):
        if i < len(outs):
            nodes += [(outs[i][t], "output", out_names[i]) for t in sorted(read[i])]
        else:
            nodes.append((finals[i - len(outs)], "state", state_names[i - len(outs)]))
    return nodes


def _read_structurally(net, loss) -> dict | None:
    """Output index -> steps the loss's graph reads, or None when it reads none of ``net``'s
    items. Indexing is applied to an array of step numbers, so every index NumPy accepts
    (negative, slices, masks, ``...``) selects exactly the steps it reads."""
    tensors = toposort([loss], lambda t: t._parents)
    read: dict = {}
    found = False
    for t in tensors:
        for p in t._parents:
            if p.node.op != "item" or not p._parents:
                continue
            call = p._parents[0]
            run = call.node.attrs.get("_run")
            if call.node.op != "unrolled" or run is None or run.net is not net:
                continue
            found = True
            k = p.node.attrs.get("index", 0)
            steps = read.setdefault(k, set())
            n_out = len(net.output_nodes)
            if k >= n_out:
                steps.add(net.steps - 1)
                continue
            shape = np.shape(p.data)
            if t.node.op == "getitem":
                when = np.arange(shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
                try:
                    picked = np.broadcast_to(when, shape)[t.node.attrs["index"]]
                except (IndexError, TypeError, ValueError):  # pragma: no cover - checked op
                    picked = np.arange(shape[0])
                steps.update(np.unique(picked).tolist())
            else:
                steps.update(range(shape[0]))
    return read if found else None


def loss_runs(loss) -> list:
    """The runs of unrolled nets whose outputs (or final states) ``loss`` was computed from,
    in the order its graph reaches them.

    Parameters
    ----------
    loss : Tensor

    Returns
    -------
    list of Run

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=3)
    >>> outputs, h = net(np.ones((3, 1, 2)))
    >>> [r is net.last_run for r in loss_runs((outputs * outputs).sum())]
    [True]
    """
    found = []
    for t in toposort([loss], lambda t: t._parents):
        if t.node.op == "unrolled":
            run = t.node.attrs.get("_run")
            if run is not None and all(run is not r for r in found):
                found.append(run)
    return found


#: ops that compute each element of their result from the same element of their inputs
_ELEMENTWISE = frozenset({"abs", "add", "clip", "div", "exp", "log", "maximum", "minimum",
                          "mul", "neg", "pow", "powc", "relu", "sigmoid", "sqrt", "sub", "tanh"})


def step_losses(net, loss):
    """The parts ``L_t`` of a scalar loss, one per step, that add up to it, where the loss
    splits over time: a sum or mean over all elements of terms computed element by element
    from the net's outputs (``(y * y).mean()``), or ``mse_loss`` of the outputs. ``None`` for
    any other loss (its split over steps is not defined).

    Parameters
    ----------
    net : Unrolled
    loss : Tensor

    Returns
    -------
    numpy.ndarray of shape (T,), float64, or None

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=3)
    >>> outputs, h = net(np.ones((3, 1, 2)))
    >>> loss = (outputs * outputs).sum()
    >>> parts = step_losses(net, loss)
    >>> parts.shape, bool(np.isclose(parts.sum(), loss.item()))
    ((3,), True)
    >>> step_losses(net, (outputs[-1] * outputs[-1]).sum()) is None
    True
    """
    if not isinstance(loss, Tensor) or np.size(loss.data) != 1:
        return None
    T = net.steps
    n_out = len(net.output_nodes)

    def output_item(x) -> bool:
        if x.node.op != "item" or not x._parents:
            return False
        call = x._parents[0]
        run = call.node.attrs.get("_run")
        return call.node.op == "unrolled" and run is not None and run.net is net and \
            x.node.attrs.get("index", 0) < n_out

    def per_element(x, shape) -> bool:
        """x holds one term per element of an output (time first), from outputs and
        constants only; reads at least one output."""
        seen = []

        def walk(y) -> bool:
            if output_item(y):
                seen.append(y)
                return np.shape(y.data) == shape
            if not y._parents:  # a constant: broadcast over the terms, never along time
                return not y.requires_grad and np.ndim(y.data) < len(shape) or \
                    np.shape(y.data) == shape
            if y.node.op not in _ELEMENTWISE or np.shape(y.data) != shape:
                return False
            return all(walk(p) for p in y._parents)

        return walk(x) and bool(seen)

    op = loss.node.op
    parents = loss._parents
    terms = None
    if op in ("sum", "mean") and loss.node.attrs.get("axis") is None and parents:
        e = parents[0]
        shape = np.shape(e.data)
        if len(shape) >= 1 and shape[0] == T and per_element(e, shape):
            terms = np.asarray(e.data, dtype=np.float64).reshape(T, -1).sum(axis=1)
            if op == "mean":
                terms = terms / max(1, int(np.prod(shape)))
    elif op == "mse_loss" and len(parents) == 2:
        pred, target = parents
        shape = np.shape(pred.data)
        if len(shape) >= 1 and shape[0] == T and output_item(pred) and not target._parents:
            d = np.asarray(pred.data, dtype=np.float64) - np.asarray(target.data,
                                                                     dtype=np.float64)
            terms = (d * d).reshape(T, -1).sum(axis=1) / max(1, d.size)
    if terms is None:
        return None
    total = float(np.asarray(loss.data, dtype=np.float64).reshape(-1)[0])
    if not np.isclose(terms.sum(), total, rtol=1e-6, atol=1e-12):  # pragma: no cover
        return None
    return terms


def loss_outputs(net, loss) -> dict:
    """The outputs of ``net`` that are per-step losses the total loss adds up: ``name ->
    "sum"`` or ``"mean"`` when ``loss`` is the sum (or mean) over all elements of that output
    (or of some of its steps, indexed along time), and the output holds one number per
    sample at each step (``(B,)``, ``(B, 1)``). A cell computing its own loss at each step
    has such an output; the textbook view draws it as the loss's part L_t.

    Parameters
    ----------
    net : Unrolled
    loss : Tensor

    Returns
    -------
    dict

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> cell = ug.Cell("c")
    >>> x, h = cell.input("x", (2,)), cell.state("h", (2,))
    >>> W = cell.param("W", np.eye(2))
    >>> h_next = ug.tanh(x @ W + h, name="h_next")
    >>> cell.feedback(h, h_next)
    >>> cell.output("cost", (h_next * h_next).sum(axis=-1))
    >>> net = ug.unroll(cell, steps=3)
    >>> cost, _ = net(np.ones((3, 1, 2)))
    >>> loss_outputs(net, cost.sum())
    {'cost': 'sum'}
    >>> loss_outputs(net, (cost * cost).sum())
    {}
    """
    if not isinstance(loss, Tensor) or np.size(loss.data) != 1 or not loss._parents:
        return {}
    op = loss.node.op
    if op not in ("sum", "mean") or loss.node.attrs.get("axis") is not None:
        return {}
    x = loss._parents[0]
    if x.node.op == "getitem" and x._parents:  # some steps: outputs[1:], outputs[[0, 2]]
        index = x.node.attrs.get("index")
        if isinstance(index, tuple) and any(not (isinstance(i, slice) and i == slice(None))
                                            for i in index[1:]):
            return {}  # an index into the samples or features: not each step's whole loss
        x = x._parents[0]
    if not _is_output_item(net, x):
        return {}
    shape = np.shape(x.data)  # (T, B) or (T, B, 1)
    if len(shape) < 2 or int(np.prod(shape[2:], dtype=np.int64)) != 1:
        return {}
    names = list(net.output_nodes)
    return {names[x.node.attrs.get("index", 0)]: op}


def _is_output_item(net, x) -> bool:
    """``x`` is one of ``net``'s outputs (all steps), as its call returned it."""
    if x.node.op != "item" or not x._parents:
        return False
    call = x._parents[0]
    run = call.node.attrs.get("_run")
    return call.node.op == "unrolled" and run is not None and run.net is net and \
        x.node.attrs.get("index", 0) < len(net.output_nodes)

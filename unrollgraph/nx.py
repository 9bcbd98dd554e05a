"""networkx interchange: export any graph with stable node ids, and import one back.

The export is a ``networkx.MultiDiGraph`` (a subclass of ``networkx.DiGraph``) with one edge
per input slot, keyed by the slot's index: ``x * x`` has two edges from ``x`` to the product,
so a graph that reads one value twice survives the round trip. :func:`from_networkx` rebuilds
the same graph op for op and input for input, and checks what it is given.
"""

from __future__ import annotations

import inspect
import numbers

import numpy as np

from .errors import GraphError
from .graph import LEAF_OPS, Graph, Node, check_name, toposort

__all__ = ["to_networkx", "from_networkx"]

#: ops a graph may hold besides the registry's: leaves, the pick of one output of an unrolled
#: net's call (``item``), and the loss node of an unrolled net's export (``loss``: a scalar
#: computed from the outputs outside the unrolled graph; its inputs are the outputs it read).
_STRUCTURAL = {"item": 1, "loss": None}


def to_networkx(obj, loss=None):
    """Export a Tensor's graph, a Cell or an unrolled net as a ``networkx.MultiDiGraph``.

    A ``MultiDiGraph`` is a ``networkx.DiGraph`` that can hold several edges between one pair
    of nodes, one per input slot (``x * x`` reads ``x`` twice). Node ids are
    ``"n0", "n1", ...`` in topological order, so they are the same on every run.

    Parameters
    ----------
    obj : Tensor, Cell, Unrolled, Run or Graph
        What to export: a tensor's history, a folded cell (with its delay edges) or an
        unrolled net (values and gradients from its last run).
    loss : Tensor, optional
        For an unrolled net: the loss computed from its outputs, exported as the node ``loss``
        (its value and name). After a backward pass the loss node is exported even without
        this argument, with an edge from every output the loss read.

    Returns
    -------
    networkx.MultiDiGraph
        Node attributes: ``op``, ``name`` (display name), ``label`` (user name or None),
        ``shape``, ``dtype``, ``step``, ``role``, ``batched`` (the first axis is the batch),
        ``attrs``, and ``value`` / ``grad`` (numpy arrays) where known. Edge keys and the
        ``index`` attribute are the input slot; ``feedback=True`` marks a cell's delay edges
        (key ``"delay"``), ``shared=True`` edges leaving a node shared by all steps of an
        unrolled net. Graph attributes: ``kind``, ``outputs`` (ids of the graph's outputs, one
        node listed once per output it is) and ``output_names`` (beside each id, what it is
        an output as, exactly as the user named it: a cell's output ``y``, the state ``h`` a
        value feeds back to, an unrolled output with its step ``y@3``, a final state ``h``,
        the loss's name; a tensor's or graph's own output, its display name).

    Raises
    ------
    GraphError
        For an object that has no graph.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor(1.0, name="x")
    >>> G = ug.to_networkx(x * x)
    >>> sorted(G.nodes), G.nodes["n1"]["op"], sorted(G.edges(keys=True))
    (['n0', 'n1'], 'mul', [('n0', 'n1', 0), ('n0', 'n1', 1)])
    """
    import networkx as nx

    from .view import view

    v = view(obj)
    g = v.graph
    G = nx.MultiDiGraph(kind=v.kind, outputs=[g.id(o) for o in g.outputs if o in g],
                        output_names=_output_names(v))
    batched = g._batched
    # a Graph rebuilt from an unrolled net's export has its steps: its edges are shared alike
    stepped = v.kind == "unrolled" or (v.kind == "graph" and any(
        n.step is not None for n in g.nodes))
    for n in g.nodes:
        attrs = {
            "op": n.op,
            "name": g.display_name(n),
            "label": n.name,
            "shape": None if n.shape is None else tuple(n.shape),
            "dtype": n.dtype,
            "step": n.step,
            "role": n.role,
            "batched": id(n) in batched,
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
                shared = stepped and i.step is None and n.step is not None
                G.add_edge(g.id(i), g.id(n), key=k, index=k, feedback=False, shared=shared)
    for nxt, state in v.feedback:
        G.add_edge(g.id(nxt), g.id(state), key="delay", index=0, feedback=True, shared=False)
    if v.kind == "unrolled":
        _add_loss(G, v, loss)
    return G


def _output_names(v) -> list:
    """Beside each id of ``G.graph["outputs"]``, the name it is an output as."""
    g = v.graph
    if v.kind == "cell":
        names = list(v.cell.outputs) + list(v.cell.feedbacks)
    elif v.kind == "unrolled":
        net = v.net
        names = [f"{k}@{t}" for k, ns in net.output_nodes.items() for t in range(len(ns))]
        names += list(net.state_nodes)
    else:
        names = [g.display_name(o) for o in g.outputs]
    return [nm for o, nm in zip(g.outputs, names) if o in g]


def _add_loss(G, v, loss) -> None:
    """The loss node of an unrolled net: the outputs (or final states) its gradient reached."""
    from .view import read_outputs

    run, net = v.run, v.net
    seeds = None if run is None or run.grads is None else run.seeds
    if seeds is None and loss is None:
        return
    g = v.graph
    outs = list(net.output_nodes.values())
    # an edge only from the outputs the loss reads (see view.read_outputs)
    sources = read_outputs(net, seeds, loss)
    if not sources and seeds is None:  # nothing known of what the loss read
        sources = [n for ns in outs for n in ns]
    lid = f"n{len(g.nodes)}"
    given = getattr(loss, "name", None)
    name = given or "loss"
    shown = {g.display_name(n): n for n in g.nodes}
    if given and shown.get(name) is not None and not shown[name].name:
        # a generated name gives way to the user's: the node gets a prime, as in Graph
        other = name
        while other in shown or other == name:
            other += "′"
        G.nodes[g.id(shown[name])]["name"] = other
    elif name in shown:  # two user names alike (told apart by the id), or "loss" generated
        name = f"{name}#{lid}" if given else name
        while name in shown:
            name += "′"
    attrs = {"op": "loss", "name": name, "label": getattr(loss, "name", None), "shape": (),
             "dtype": None, "step": None, "role": "loss", "batched": False, "attrs": {}}
    data = getattr(loss, "data", None) if loss is not None else None
    if isinstance(data, np.ndarray):
        attrs["value"] = data
        attrs["dtype"] = data.dtype.name
    if seeds is not None:
        attrs["grad"] = np.ones((), dtype=np.float64)
    G.add_node(lid, **attrs)
    for k, n in enumerate(sources):
        G.add_edge(g.id(n), lid, key=k, index=k, feedback=False, shared=False)
    G.graph["outputs"] = list(G.graph["outputs"]) + [lid]
    G.graph["output_names"] = list(G.graph["output_names"]) + [name]


def from_networkx(G) -> Graph:
    """Rebuild a :class:`Graph` from a graph made by :func:`to_networkx` (or by hand).

    Parameters
    ----------
    G : networkx.MultiDiGraph or networkx.DiGraph
        Each node needs an ``op`` (a registered op, a leaf kind, ``"item"`` or ``"loss"``)
        and the attributes its op takes (``attrs``). A node's inputs are its in-edges ordered
        by their ``index`` attribute, which must number them ``0, 1, ...`` with none missing or
        repeated (a node with a single input may leave it out). A simple ``DiGraph`` holds one
        edge per pair of nodes, so an op that reads one value twice (``x * x``) needs a
        ``MultiDiGraph``. Edges marked ``feedback=True`` are one-step delays into a
        ``state`` node and are returned in ``graph.feedback`` as ``(next_value, state)``
        pairs rather than as inputs.

    Returns
    -------
    Graph
        In the order of the ids (``n2`` before ``n10``) when that order is topological; the
        display names, batch axes and outputs exported by :func:`to_networkx` are restored,
        so the graph prints as the exported one did.

    Raises
    ------
    GraphError
        For an object that is not a directed networkx graph, a node without an ``op``, an
        unknown op, a wrong number of inputs for the op, missing, repeated or non-integer
        edge indices, attributes the op does not take or lacks, malformed ``shape`` or
        ``step``, or a delay edge that does not end at a state.
    CycleError
        For a cycle that does not pass through a delay edge; the message names the loop.
    InvalidNameError
        For a ``label`` that is not a valid name (see :func:`unrollgraph.graph.check_name`).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor(1.0, name="x")
    >>> print(ug.from_networkx(ug.to_networkx(ug.tanh(x * x))))
    x = leaf()  # shape ()
    n1 = mul(x, x)  # shape ()
    n2 = tanh(n1)  # shape ()
    """
    if not (hasattr(G, "is_directed") and hasattr(G, "is_multigraph") and hasattr(G, "nodes")):
        raise GraphError(
            f"from_networkx needs a networkx DiGraph or MultiDiGraph, got {type(G).__name__}"
        )
    if not G.is_directed():
        raise GraphError(
            f"from_networkx needs a directed graph, got an undirected {type(G).__name__}: an "
            "edge must say which node is the input; build a networkx.MultiDiGraph"
        )
    multi = G.is_multigraph()

    def edges_in(key):
        if multi:
            return [(u, d) for u, _, _, d in G.in_edges(key, keys=True, data=True)]
        return [(u, d) for u, _, d in G.in_edges(key, data=True)]

    ops = {key: _node_op(key, data) for key, data in G.nodes(data=True)}
    preds: dict = {}
    for key in G.nodes:
        ins = [(u, d) for u, d in edges_in(key) if not d.get("feedback")]
        preds[key] = _ordered_inputs(key, ops[key], ins, multi)

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
    names: dict = {}
    batched: set = set()
    for w in order:
        d = G.nodes[w.key]
        label = check_name(d.get("label"), f"label of networkx node {w.key!r}")
        node = Node(
            ops[w.key],
            tuple(built[p] for p in preds[w.key]),
            _node_attrs(w.key, ops[w.key], len(preds[w.key]), d.get("attrs")),
            label,
            _node_shape(w.key, d.get("shape")),
            dtype=_node_text(w.key, "dtype", d.get("dtype")),
            step=_node_step(w.key, d.get("step")),
            role=_node_text(w.key, "role", d.get("role")),
        )
        built[w.key] = node
        shown = d.get("name")
        if label is None and isinstance(shown, str) and shown:
            names[id(node)] = shown
        if d.get("batched"):
            batched.add(id(node))
    exported = G.graph.get("outputs")
    if exported is not None:
        missing = [k for k in exported if k not in built]
        if missing:
            raise GraphError(
                f"the graph attribute 'outputs' names {missing[0]!r}, which is not a node; "
                "list ids of the graph's nodes or drop the attribute"
            )
        sinks = [built[k] for k in exported]
    else:
        sinks = [built[k] for k in keys if not any(
            not d.get("feedback") for _, _, d in G.out_edges(k, data=True))]
    graph = Graph(sinks, order=[built[w.key] for w in order], names=names, batched=batched)
    feedback = []
    fb_edges = (
        [(u, v, d) for u, v, _, d in G.edges(keys=True, data=True)] if multi
        else list(G.edges(data=True))
    )
    seen_states: set = set()
    for u, v, d in fb_edges:
        if not d.get("feedback"):
            continue
        if ops[v] != "state":
            raise GraphError(
                f"delay edge {u!r} -> {v!r} ends at a {ops[v]!r} node; a feedback edge carries "
                "a next value into a 'state' node"
            )
        if v in seen_states:
            raise GraphError(
                f"state {v!r} has more than one delay edge; each state takes its next value "
                "from exactly one node"
            )
        seen_states.add(v)
        feedback.append((built[u], built[v]))
    graph.feedback = feedback
    return graph


def _node_op(key, data) -> str:
    if "op" not in data:
        raise GraphError(f"networkx node {key!r} has no 'op' attribute; every node needs one")
    op = data["op"]
    if not isinstance(op, str):
        raise GraphError(f"networkx node {key!r}: 'op' must be a str, got {op!r}")
    if op not in LEAF_OPS and op not in _STRUCTURAL:
        from .ops import get_op

        try:
            get_op(op)
        except GraphError as exc:
            raise GraphError(f"networkx node {key!r}: {exc}") from None
    return op


def _arity(op: str):
    """Number of inputs ``op`` takes; ``None`` for any number (at least one)."""
    if op in LEAF_OPS:
        return 0
    if op in _STRUCTURAL:
        return _STRUCTURAL[op]
    from .ops import get_op

    return get_op(op).arity


def _ordered_inputs(key, op: str, ins: list, multi: bool) -> list:
    """The input nodes of ``key`` in slot order, after checking the edge indices."""
    want = _arity(op)
    if want is not None and len(ins) != want:
        hint = ""
        if not multi and want > len(ins):
            hint = (" (a simple DiGraph holds one edge per pair of nodes, so an op that reads "
                    "one value twice, like x * x, needs a networkx.MultiDiGraph)")
        raise GraphError(
            f"networkx node {key!r}: op {op!r} takes {want} input(s) but has {len(ins)} "
            f"in-edge(s){hint}; give it one edge per input slot, with index=0, 1, ..."
        )
    if want is None and not ins:
        raise GraphError(f"networkx node {key!r}: op {op!r} needs at least one input edge")
    if len(ins) == 1 and "index" not in ins[0][1]:
        return [ins[0][0]]
    slots = {}
    for u, d in ins:
        k = d.get("index")
        if k is None:
            raise GraphError(
                f"networkx node {key!r}: the edge from {u!r} has no 'index' attribute; with "
                f"{len(ins)} inputs each edge needs index=0..{len(ins) - 1} to give the order"
            )
        if not isinstance(k, numbers.Integral) or isinstance(k, bool):
            raise GraphError(
                f"networkx node {key!r}: the edge from {u!r} has index={k!r}; an input index "
                "is an int"
            )
        k = int(k)
        if k in slots:
            raise GraphError(
                f"networkx node {key!r}: edges from {slots[k]!r} and {u!r} both have index={k}; "
                "each input slot takes exactly one edge"
            )
        slots[k] = u
    if sorted(slots) != list(range(len(ins))):
        missing = sorted(set(range(len(ins))) - set(slots))
        raise GraphError(
            f"networkx node {key!r}: input indices {sorted(slots)} are not 0..{len(ins) - 1} "
            f"(missing {missing}); number the input edges 0, 1, ... in slot order"
        )
    return [slots[k] for k in range(len(ins))]


def _node_attrs(key, op: str, n_inputs: int, attrs) -> dict:
    """The op's attributes, checked against what its forward takes."""
    if attrs is None:
        attrs = {}
    if not isinstance(attrs, dict):
        raise GraphError(
            f"networkx node {key!r}: 'attrs' must be a dict, got {type(attrs).__name__}"
        )
    attrs = dict(attrs)
    if op == "item":
        if not isinstance(attrs.get("index"), numbers.Integral):
            raise GraphError(f"networkx node {key!r}: op 'item' needs an int attribute 'index'")
        return attrs
    if op in LEAF_OPS or op in _STRUCTURAL:
        return attrs
    from .ops import get_op

    forward = get_op(op).forward
    try:
        sig = inspect.signature(forward)
    except (TypeError, ValueError):  # pragma: no cover - a builtin forward: cannot check
        return attrs
    try:
        sig.bind(*([None] * n_inputs), **attrs)
    except TypeError as exc:
        takes = [p.name for p in sig.parameters.values()
                 if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)][n_inputs:]
        raise GraphError(
            f"networkx node {key!r}: attributes {sorted(attrs)} do not fit op {op!r} ({exc}); "
            f"it takes {takes or 'no attributes'}"
        ) from None
    return attrs


def _node_shape(key, shape):
    if shape is None:
        return None
    try:
        out = tuple(shape)
    except TypeError:
        out = None
    if out is None or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                              and s >= 0 for s in out):
        raise GraphError(
            f"networkx node {key!r}: shape {shape!r} is not a tuple of non-negative ints"
        )
    return tuple(int(s) for s in out)


def _node_step(key, step):
    if step is None:
        return None
    if not isinstance(step, numbers.Integral) or isinstance(step, bool) or step < 0:
        raise GraphError(f"networkx node {key!r}: step {step!r} is not a non-negative int")
    return int(step)


def _node_text(key, field: str, value):
    if value is None or isinstance(value, str):
        return value
    raise GraphError(f"networkx node {key!r}: {field} {value!r} is not a str")


def _natural(key):
    """Sort ids like n2 before n10 (ids from to_networkx), anything else by its text."""
    text = str(key)
    digits = text.lstrip("abcdefghijklmnopqrstuvwxyz_")
    head = text[: len(text) - len(digits)]
    return (head, int(digits)) if digits.isdigit() else (text, -1)

"""Graph records: immutable :class:`Node` objects, an iterative topological sort, and
:class:`Graph`, the set of nodes reachable from some outputs printed one equation per line.

Nodes hold no closures and no values: an op name, input nodes, attributes and metadata. That is
what lets a graph be copied (the unroller), drawn (render), exported (networkx) and printed.
"""

from __future__ import annotations

import contextlib
import gc
import re
import threading
from operator import attrgetter
from typing import Any, Callable, Iterable, Sequence

from .errors import CycleError, GraphError, InvalidNameError
from .labels import index_text

__all__ = ["Node", "Graph", "toposort", "LEAF_OPS", "check_name", "gc_paused"]

#: ops that have no inputs: their value comes from outside the graph.
LEAF_OPS = frozenset({"leaf", "param", "input", "state", "const", "init"})


#: characters a name may not hold: control characters other than the newline (C0, DEL, C1),
#: lone surrogates (no encoding can write them) and the non-characters U+FFFE / U+FFFF (XML, so
#: SVG, cannot hold them). Everything else reaches every output as written.
_BAD_NAME_CHARS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def check_name(name, what: str = "name", optional: bool = True):
    """Return ``name`` if it is a valid name, else raise :class:`InvalidNameError`.

    A name is a non-empty ``str`` (``None`` means "no name" where ``optional``). It may hold
    any character that text, DOT, SVG and networkx outputs can all carry exactly as written:
    letters, digits, punctuation, quotes, backslashes, markup characters, newlines, any
    language, emoji. Refused: other control characters (tab, NUL, ESC, DEL...), lone
    surrogates and the non-characters U+FFFE and U+FFFF. Names are never altered: a name is
    refused rather than changed.

    Parameters
    ----------
    name : str or None
        The name to check.
    what : str
        What the name is for, used in the message (``"name of tanh"``, ``"input name"``...).
    optional : bool
        Whether ``None`` is accepted.

    Returns
    -------
    str or None
        ``name`` itself.

    Raises
    ------
    InvalidNameError
        For a non-string (``name=123``), an empty string, or a character outputs cannot hold;
        the message says which character and where.

    Examples
    --------
    >>> check_name('a "quoted" <name>')
    'a "quoted" <name>'
    >>> check_name(123)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    unrollgraph.errors.InvalidNameError: name must be a str, got int 123; pass name=str(123) ...
    """
    if name is None:
        if optional:
            return None
        raise InvalidNameError(f"{what} must be a str, got None")
    if not isinstance(name, str):
        text = repr(name)
        text = text if len(text) <= 60 else text[:57] + "..."
        raise InvalidNameError(
            f"{what} must be a str, got {type(name).__name__} {text}; pass name=str({text}) "
            "if you mean that text" + (", or None for no name" if optional else "")
        )
    if not name:
        raise InvalidNameError(
            f"{what} is the empty string; give a non-empty name"
            + (" (or None for no name)" if optional else "")
        )
    bad = _BAD_NAME_CHARS.search(name)
    if bad is not None:
        ch, at = bad.group(), bad.start()
        kind = "a lone surrogate" if "\ud800" <= ch <= "\udfff" else (
            "a non-character" if ch in "\ufffe\uffff" else "a control character")
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise InvalidNameError(
            f"{what} {shown!r} holds {kind}, U+{ord(ch):04X}, at position {at}: names "
            "must be text every output (printed graphs, DOT, SVG, networkx) can carry as "
            "written (newlines are allowed); remove or replace that character"
        )
    return name


class Node:
    """One explicit operation (or leaf) of a computational graph.

    A node is a plain record and is never modified after it is made; use :meth:`replace` to get
    an edited copy.

    Parameters
    ----------
    op : str
        Name of a registered op (see :mod:`unrollgraph.ops`) or a leaf kind: ``"leaf"``,
        ``"param"``, ``"input"``, ``"state"``, ``"init"`` or ``"const"``.
    inputs : tuple of Node
        The nodes whose values this op consumes, in order.
    attrs : dict, optional
        Static attributes of the op (an axis, a shape, an exponent...).
    name : str, optional
        A user-given name, used in printing and diagrams. Not checked here (a node is made
        for every op applied); the places where names come from the user (``ug.tensor``, an
        op's ``name=``, ``Tensor.name``, a cell's declarations, :func:`from_networkx`) check
        them with :func:`check_name`.
    shape : tuple of int, optional
        Shape of the value (for a cell, the shape with a batch of one).
    dtype : str, optional
        ``"float64"``, ``"float32"``...
    step : int, optional
        For nodes of an unrolled graph: the time step the node belongs to (``None`` for nodes
        shared by all steps, such as parameters).
    origin : Node, optional
        For nodes of an unrolled graph: the cell node this one is a copy of.
    role : str, optional
        ``"param"``, ``"input"``, ``"state"``, ``"output"``... for diagrams.

    Examples
    --------
    >>> a = Node("leaf", name="a", shape=(2,))
    >>> b = Node("tanh", (a,), shape=(2,))
    >>> b.inputs[0].name
    'a'
    >>> b.replace(name="h").name
    'h'
    """

    # Fields live in private slots and are read through the read-only properties below: a
    # plain slot store in __init__ is several times cheaper than going around an overridden
    # __setattr__, and a node is made for every op applied (see benchmarks/overhead.py).
    __slots__ = ("_op", "_inputs", "_attrs", "_name", "_shape", "_dtype", "_step", "_origin",
                 "_role")
    _fields = ("op", "inputs", "attrs", "name", "shape", "dtype", "step", "origin", "role")

    def __init__(
        self,
        op: str,
        inputs: tuple = (),
        attrs: dict | None = None,
        name: str | None = None,
        shape: tuple | None = None,
        dtype: str | None = None,
        step: int | None = None,
        origin: "Node | None" = None,
        role: str | None = None,
    ):
        self._op = op
        self._inputs = inputs
        self._attrs = attrs if attrs is not None else _EMPTY
        self._name = name
        self._shape = shape
        self._dtype = dtype
        self._step = step
        self._origin = origin
        self._role = role

    def replace(self, **changes: Any) -> "Node":
        """Return a copy of this node with some fields changed."""
        fields = {k: getattr(self, k) for k in Node._fields}
        fields.update(changes)
        return Node(**fields)

    @property
    def is_leaf(self) -> bool:
        """True for nodes without inputs (leaves, params, inputs, states, constants)."""
        return self.op in LEAF_OPS

    def label(self) -> str:
        """A short human name: the user name, else the op (used in error messages); an
        output picked from a net's call is named as :func:`unrollgraph.explain` names it
        (``y (all steps)``, ``final h``)."""
        if self.name:
            base = self.name
        elif self.op == "item" and self.inputs and "_run" in self.inputs[0].attrs:
            base = item_label(self)
        else:
            base = f"<{self.op}>"
        return base if self.step is None else f"{base}@{self.step}"

    def __repr__(self) -> str:
        return f"Node({self.op!r}, name={self.name!r}, shape={self.shape})"


_EMPTY: dict = {}


def item_label(node: Node) -> str:
    """The name of output ``node.attrs["index"]`` of a net's call (an ``item`` node): the
    cell's output name with ``(all steps)`` (the outputs come stacked over the steps), or
    ``final <state>`` for a final state."""
    net = node.inputs[0].attrs["_run"].net
    outs, states = list(net.output_nodes), list(net.state_nodes)
    k = node.attrs["index"]
    return f"{outs[k]} (all steps)" if k < len(outs) else f"final {states[k - len(outs)]}"


def made_by(node: Node) -> str:
    """Where a computed tensor's value comes from, as a message says it: ``computed by op
    'mul'``, or for an output or final state of a net's call (an ``item`` node, which is no
    op a user writes) ``the output 'y' of a call of the unrolled net of cell 'GRUCell'``.

    Examples
    --------
    >>> made_by(Node("mul", name="q"))
    "computed by op 'mul'"
    """
    if node.op == "item" and node.inputs and "_run" in node.inputs[0].attrs:
        net = node.inputs[0].attrs["_run"].net
        outs, states = list(net.output_nodes), list(net.state_nodes)
        k = node.attrs["index"]
        what = (f"the output {outs[k]!r}" if k < len(outs) else
                f"the final state {states[k - len(outs)]!r}")
        return f"{what} of a call of the unrolled net of cell {net.cell.name!r} (net(xs))"
    return f"computed by op {node.op!r}"


def _read_only(field: str) -> property:
    def refuse(self, value):
        raise AttributeError(
            f"Node is immutable; use node.replace({field}=...) for an edited copy"
        )

    return property(attrgetter("_" + field), refuse, None, f"The node's ``{field}`` (read-only).")


for _f in Node._fields:
    setattr(Node, _f, _read_only(_f))
del _f


_gc_lock = threading.Lock()
_gc_pause = {"depth": 0, "was_enabled": False}  # depth of nested pauses, the setting before


@contextlib.contextmanager
def gc_paused():
    """Keep Python's cyclic garbage collector off inside the block, then restore its setting.

    Building an unrolled graph and compiling its schedule allocate a few container objects per
    node and free almost none; each automatic collection walks every object still alive, so
    with the collector on, the build's cost grows faster than the number of nodes (a quarter
    of the build at T = 100,000). The records made inside hold no reference cycles that need
    the collector (nodes point at their inputs, never back), so nothing is lost by collecting
    later. Pauses nest and may overlap across threads: the first to enter records whether the
    collector was on and turns it off, the last to leave (normally or by an exception) turns
    it back on if it was. A collector the caller had turned off stays off.

    Examples
    --------
    >>> import gc
    >>> with gc_paused():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """
    with _gc_lock:
        if _gc_pause["depth"] == 0:
            _gc_pause["was_enabled"] = gc.isenabled()
            gc.disable()
        _gc_pause["depth"] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pause["depth"] -= 1
            if _gc_pause["depth"] == 0 and _gc_pause["was_enabled"]:
                gc.enable()


def toposort(roots: Iterable, parents: Callable[[Any], Sequence] = lambda n: n.inputs) -> list:
    """Return every object reachable from ``roots`` in topological order (inputs first).

    The walk uses an explicit stack, so graphs of millions of nodes sort without recursion.
    The order is deterministic: it depends only on the graph and the order of ``roots``.

    Parameters
    ----------
    roots : iterable
        Start objects (usually output nodes).
    parents : callable
        Returns the inputs of an object.

    Raises
    ------
    CycleError
        If the objects form a cycle; the error lists the loop.

    Examples
    --------
    >>> a = Node("leaf", name="a"); b = Node("neg", (a,)); c = Node("add", (a, b))
    >>> [n.op for n in toposort([c])]
    ['leaf', 'neg', 'add']
    """
    order: list = []
    state: dict[int, int] = {}  # id -> 1 on stack, 2 done
    for root in roots:
        if state.get(id(root)) == 2:
            continue
        stack = [(root, iter(parents(root)))]
        state[id(root)] = 1
        while stack:
            node, it = stack[-1]
            for p in it:
                s = state.get(id(p))
                if s is None:
                    state[id(p)] = 1
                    stack.append((p, iter(parents(p))))
                    break
                if s == 1:
                    loop = [n for n, _ in stack]
                    loop = loop[next(i for i, n in enumerate(loop) if n is p) :]
                    names = " -> ".join(_describe(n) for n in loop + [p])
                    raise CycleError(
                        f"cycle without a one-step delay: {names}; a recurrent edge must go "
                        "through cell.feedback(state, next_value)",
                        loop,
                    )
            else:
                stack.pop()
                state[id(node)] = 2
                order.append(node)
    return order


def _describe(obj) -> str:
    label = getattr(obj, "label", None)
    return label() if callable(label) else str(obj)


class Graph:
    """The nodes reachable from some outputs, in topological order, with stable ids.

    Ids are ``n0, n1, ...`` in topological order, so the same graph always gets the same ids
    and printed or exported graphs can be diffed and kept as golden files.

    Parameters
    ----------
    outputs : Node, Tensor, or a sequence of them
        The graph's outputs. Tensors are accepted and stand for their nodes.
    order : sequence of Node, optional
        The nodes in a known topological order (skips the sort).
    names : dict, optional
        ``id(node) -> display name`` for nodes without a user name.
    batched : set, optional
        ``id(node)`` of nodes whose first axis is the batch: printed as ``B``.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor([1.0, 2.0], name="x")
    >>> print(ug.Graph(ug.tanh(x * 2.0)))
    x = leaf()  # shape (2,)
    n1 = const()  # shape ()
    n2 = mul(x, n1)  # shape (2,)
    n3 = tanh(n2)  # shape (2,)
    """

    def __init__(self, outputs, order=None, names=None, batched=None):
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        self.outputs = [getattr(o, "node", o) for o in outputs]
        for o in self.outputs:
            if not isinstance(o, Node):
                raise GraphError(f"Graph outputs must be Nodes or Tensors, got {type(o).__name__}")
        self.nodes: list[Node] = list(order) if order is not None else toposort(self.outputs)
        self._index = {id(n): i for i, n in enumerate(self.nodes)}
        self._given_names = names or {}
        self._batched = batched or set()

    def index(self, node: Node) -> int:
        """Position of ``node`` in topological order."""
        return self._index[id(node)]

    def __contains__(self, node) -> bool:
        return id(getattr(node, "node", node)) in self._index

    def __len__(self) -> int:
        return len(self.nodes)

    def id(self, node: Node) -> str:
        """Stable id of ``node``: ``n<position>``."""
        return f"n{self._index[id(node)]}"

    @property
    def edges(self) -> list[tuple[Node, Node]]:
        """``(source, target)`` pairs, one per input slot, in topological order."""
        return [(i, n) for n in self.nodes for i in n.inputs]

    def display_name(self, node: Node) -> str:
        """The name printed for ``node``: its user name (with ``@step`` when it has a step),
        else a generated name (its stable id; a slice as written, ``gates[:, 0:8]``, after the
        printed name of what it slices; or the name of the cell node it copies).

        A user name is printed as written. Only where two nodes carry the same user name is
        the id appended to tell them apart (``W#n3``). A generated name that reads as a user
        name or another printed name (a tensor named ``"n1"`` beside node ``n1``) gets primes
        appended (``n1′``) until it is unique: a user's name never loses to a generated one.
        """
        if not hasattr(self, "_names"):
            counts: dict[str, int] = {}
            for n in self.nodes:
                if n.name:
                    counts[n.label()] = counts.get(n.label(), 0) + 1
            self._names = {}
            taken: set = set()
            for i, n in enumerate(self.nodes):  # user names first: as written where unique
                if n.name:
                    key = n.label()
                    if counts[key] > 1:
                        key = f"{key}#n{i}"
                        while key in counts or key in taken:
                            key += "′"
                    self._names[id(n)] = key
                    taken.add(key)
            for i, n in enumerate(self.nodes):  # then the generated ones, around them
                if not n.name:
                    key = self._given_names.get(id(n)) or (
                        # a slice reads as written, after the name of what it slices
                        f"{self._names[id(n.inputs[0])]}{index_text(n.attrs['index'])}"
                        if n.op == "getitem" and n.step is None and "index" in n.attrs
                        else f"n{i}" if n.step is None else f"n{i}@{n.step}")
                    while key in taken:
                        key += "′"
                    self._names[id(n)] = key
                    taken.add(key)
        return self._names[id(node)]

    def equation(self, node: Node) -> str:
        """One line of text for ``node``: ``h@2 = tanh(z@2)  # shape (4, 5)``."""
        args = ", ".join(self.display_name(i) for i in node.inputs)
        attrs = {
            k: v for k, v in node.attrs.items()
            if not k.startswith("_") and v is not None and v is not False
        }
        if attrs:
            extra = ", ".join(
                f"{k}={index_text(v) if node.op == 'getitem' and k == 'index' else _short(v)}"
                for k, v in sorted(attrs.items()))
            args = f"{args}, {extra}" if args else extra
        line = f"{self.display_name(node)} = {node.op}({args})"
        if node.shape is not None:
            line += f"  # shape {self.shape_text(node)}"
        return line

    def shape_text(self, node: Node) -> str:
        """The node's shape as text, with ``B`` for a batch axis: ``(B, 4)``."""
        shape = tuple(node.shape)
        if id(node) in self._batched and shape:
            inner = ", ".join(str(s) for s in ("B",) + shape[1:])
            return f"({inner},)" if len(shape) == 1 else f"({inner})"
        return str(shape)

    def __str__(self) -> str:
        return "\n".join(self.equation(n) for n in self.nodes)

    def __repr__(self) -> str:
        return f"<Graph: {len(self.nodes)} nodes, {len(self.outputs)} outputs>"


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."

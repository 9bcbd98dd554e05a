"""The backward walk narrated: :func:`explain` replays the reverse-mode walk that
``backward()`` performs and records, for every node it visits, the gradient that arrives, the
local derivative of its op for each input, and what it sends to each input.

An unrolled net is opened up: its call (one node of the eager graph) is replaced by the walk
through the unrolled graph, step T-1 down to 0, so a shared weight is seen receiving one part
of its gradient per step, its running sum growing step by step (backpropagation through time).
"""

from __future__ import annotations

import functools
import html
import os
import re

import numpy as np

from .graph import Graph, Node
from .labels import number, op_label
from .ops import _nan_sign, get_op
from .tensor import _release as _release_input

__all__ = ["explain", "Explanation", "Record", "Local", "Skipped"]

#: the colour of a node's gradient line in the pictures (the stepper finds the line by it)
GRAD_COLOUR = "#1f2329"

#: the room left and right of a gradient on an edge, besides the cell's padding (points)
_SIDE = 6

#: above this many edges the diagrams use dot's quick layout settings
_FAST_LAYOUT_EDGES = 150

#: the local derivative of each op for each input, in words and symbols (``@`` is written by
#: :func:`_formula`, which names the transposes); ``{0}``, ``{1}`` are
#: the inputs' names (in parentheses unless one word; ``{r0}`` as written, inside a function's
#: parentheses) and ``{x}`` the input this derivative is taken with respect to
_FORMULAS = {
    "add": ("d({0} + {1})/d{x} = 1", "d({0} + {1})/d{x} = 1"),
    "sub": ("d({0} - {1})/d{x} = 1", "d({0} - {1})/d{x} = -1"),
    "mul": ("d({0} * {1})/d{x} = {1}", "d({0} * {1})/d{x} = {0}"),
    "div": ("d({0} / {1})/d{x} = 1/{1}", "d({0} / {1})/d{x} = -{0}/{1}^2"),
    "pow": ("d({0}^{1})/d{x} = {1} * {0}^({1} - 1)", "d({0}^{1})/d{x} = {0}^{1} * log({r0})"),
    "neg": ("d(-{0})/d{x} = -1",),
    "exp": ("d exp({r0})/d{x} = exp({r0})",),
    "log": ("d log({r0})/d{x} = 1/{0}",),
    "tanh": ("d tanh({r0})/d{x} = 1 - tanh({r0})^2",),
    "sigmoid": ("d sigmoid({r0})/d{x} = sigmoid({r0}) * (1 - sigmoid({r0}))",),
    "relu": ("d relu({r0})/d{x} = 1 where {0} > 0, else 0",),
    "sqrt": ("d sqrt({r0})/d{x} = 1 / (2 sqrt({r0}))",),
    "abs": ("d |{r0}|/d{x} = sign({r0})",),
    "sum": ("d sum({r0})/d{x} = 1 (upstream copied back to every element)",),
    "mean": ("d mean({r0})/d{x} = 1/n (upstream shared out over the n elements)",),
    "reshape": ("reshape: upstream reshaped back to the shape of {0}",),
    "transpose": ("transpose: upstream transposed back to {0}",),
}

# one word, or a slice of one (``gates[:, 0:8]@2``): an operand needing no parentheses
_PLAIN = re.compile(r"[\w.@#ᵀ']+|[\w.ᵀ']*\[[^\[\]\n]*\](?:@\d+)?(?:#\w+)?")


def _operand(name: str) -> str:
    """A name as an operand in a formula: in parentheses unless it is one word."""
    return name if _PLAIN.fullmatch(name) else f"({name})"


_SUBSCRIPT = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _base_name(n: Node) -> str:
    """The name the diagrams draw for ``n``: its user name, else the label of the op
    (:func:`unrollgraph.labels.op_label`: ``Wᵀ``, ``gates[:, 0:8]``, ``+``); ``@step`` added
    for a node of an unrolled step."""
    base = n.name if n.name else op_label(n)
    return base if n.step is None else f"{base}@{n.step}"


def display_names(nodes, ids, given=None) -> dict:
    """``id(node) -> name`` for ``nodes``: the names the diagrams draw (:func:`_base_name`,
    or ``given[id(node)]``), with ``#`` and the node's id (``ids(node)``: ``n12``) appended
    only where two nodes would print the same name.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> from unrollgraph.graph import Graph
    >>> W = ug.tensor([[1.0]], requires_grad=True, name="W")
    >>> y = (W.T + 1.0) + 2.0
    >>> g = Graph([y.node])
    >>> sorted(display_names(g.nodes, g.id).values())
    ['+#n3', '+#n5', 'W', 'Wᵀ', 'const#n2', 'const#n4']
    """
    given = given or {}
    names = {id(n): given.get(id(n)) or _base_name(n) for n in nodes}
    for _ in range(3):  # a suffixed name may meet a user's name written the same way
        count: dict = {}
        for n in nodes:
            count[names[id(n)]] = count.get(names[id(n)], 0) + 1
        clash = [n for n in nodes if count[names[id(n)]] > 1]
        if not clash:
            break
        for n in clash:
            names[id(n)] = f"{names[id(n)]}#{ids(n)}"
    return names


def _local_value(op: str, k: int, ans, vals, attrs):
    """The factor the upstream gradient is multiplied by (elementwise), or the matrix it is
    multiplied by for ``@``; ``None`` where no simple factor exists."""
    with np.errstate(all="ignore"):
        if op == "add":
            return np.ones(()) * 1.0
        if op == "sub":
            return np.ones(()) * (1.0 if k == 0 else -1.0)
        if op == "mul":
            return vals[1 - k]
        if op == "div":
            return 1.0 / vals[1] if k == 0 else -ans / vals[1]
        if op == "pow":
            a, b = vals
            return b * np.power(a, b - 1) if k == 0 else ans * np.log(a)
        if op == "powc":
            p = attrs["p"]
            return p * np.power(vals[0], p - 1) if p != 0 else np.zeros(np.shape(vals[0]))
        if op == "neg":
            return np.ones(()) * -1.0
        if op == "exp":
            return ans
        if op == "log":
            return 1.0 / vals[0]
        if op == "tanh":
            return 1.0 - ans * ans
        if op == "sigmoid":
            return ans * (1.0 - ans)
        if op == "relu":
            return (~(np.asarray(vals[0]) <= 0)).astype(float)  # NaN passes, as the VJP
        if op == "sqrt":
            return 1.0 / (2.0 * ans)
        if op == "abs":
            return _nan_sign(np.asarray(vals[0], dtype=float))  # 0 at NaN, as the VJP
        if op == "matmul":
            other = vals[1 - k]
            return np.swapaxes(other, -1, -2) if np.ndim(other) >= 2 else other
        if op == "sum":
            return np.ones(()) * 1.0
        if op == "mean":
            return np.ones(()) * (np.size(ans) / max(np.size(vals[0]), 1))
    return None


def _formula(node: Node, k: int, name) -> str:
    """The local derivative of ``node``'s op with respect to input ``k``, naming the real
    inputs (``name``: Node -> display name)."""
    ins = [_operand(name(i)) for i in node.inputs]
    x = ins[k] if k < len(ins) else f"(input {k})"
    if ins.count(ins[k] if k < len(ins) else None) > 1:  # x * x: say which use (its slot)
        x = f"{x} (input {k})"
    op = node.op
    if op == "matmul" and len(ins) == 2:
        t0, t1 = _transposed(ins[0]), _transposed(ins[1])
        return (f"d({ins[0]} @ {ins[1]})/d{x}: upstream @ {t1}, with {t1}" if k == 0 else
                f"d({ins[0]} @ {ins[1]})/d{x}: {t0} @ upstream, with {t0}")
    if op == "powc":
        p = node.attrs.get("p")
        return (f"d({ins[0]}^{_fmt_num(p)})/d{x} = {_fmt_num(p)} * "
                f"{ins[0]}^{_fmt_num(p - 1)}")
    forms = _FORMULAS.get(op)
    if forms is not None and k < len(forms) and len(ins) >= len(forms):
        raw = {f"r{j}": name(i) for j, i in enumerate(node.inputs)}
        return forms[k].format(*ins, x=x, **raw)
    return f"vector-Jacobian product of {op} for input {k} ({name(node.inputs[k])})"


def _transposed(name: str) -> str:
    """The transpose of a named operand: ``W^T``, and ``W`` for ``Wᵀ`` (never ``Wᵀ^T``)."""
    if name.endswith("ᵀ") and len(name) > 1:
        return name[:-1]
    return f"{name}^T"


def _fmt_num(x) -> str:
    x = float(x)
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return number(x, 4, picture=False)


def summary(a, limit: int = 4, picture: bool = False) -> str:
    """An array as short text: the numbers when it has at most ``limit`` elements, else its
    shape and norm; numbers as :func:`unrollgraph.labels.number` writes them, for a picture
    (``picture=True``: U+2212) or for text (ASCII ``-``)."""
    if a is None:
        return "-"
    arr = np.asarray(a, dtype=np.float64)
    if arr.size <= limit:
        flat = [_num(x, picture) for x in arr.reshape(-1)]
        # one element (a scalar, or a (1, 1) state of one unit and a batch of one): a number
        return flat[0] if arr.size == 1 else "[" + ", ".join(flat) + "]"
    norm = float(np.sqrt(np.sum(arr * arr))) if np.all(np.isfinite(arr)) else float("nan")
    return f"{arr.shape} |.|={_num(norm, picture)}"


def _num(x, picture: bool = False) -> str:
    return number(x, 4, picture=picture)


class Local:
    """The local derivative of a node's op with respect to one input.

    Attributes
    ----------
    input : Node
    index : int
        The input slot.
    formula : str
        In words and symbols (``"d tanh(z)/dz = 1 - tanh(z)^2"``).
    value : numpy.ndarray or None
        The elementwise factor (or the matrix multiplied by, for ``@``); ``None`` for ops
        described by their vector-Jacobian product only.
    sent : numpy.ndarray
        The contribution sent to the input (the input's shape).
    total : numpy.ndarray
        The input's running total once this contribution has arrived (every earlier
        contribution to it, in walk order, plus this one).
    received, remaining : int
        How many contributions the input has received with this one, and how many are
        still to come.
    """

    __slots__ = ("input", "index", "formula", "value", "sent", "total", "received",
                 "remaining", "_make")

    def __init__(self, input, index, formula, value, sent):
        self.input, self.index, self.formula, self.value, self.sent = (
            input, index, formula, value, sent)
        self.total, self.received, self.remaining = sent, 1, 0
        self._make = None  # names (Node -> str) -> the formula written with those names

    def written(self, names) -> str:
        """The formula written with other names (``names``: Node -> name)."""
        return self._make(names) if self._make is not None else self.formula

    def running(self) -> str | None:
        """The input's running total after this contribution, as every output format
        prints it (``None`` for an input that receives one contribution only)."""
        if self.received + self.remaining <= 1:
            return None
        more = "last one" if self.remaining == 0 else f"{self.remaining} more to come"
        return (f"running total {summary(self.total)} "
                f"({self.received} of {self.received + self.remaining}; {more})")


def _with_value(loc, formula: str | None = None) -> str:
    """A local derivative's formula (by default as the walk prints it) followed by its
    value, unless the formula already ends with that value (``d(a + b)/da = 1``, not
    ``= 1 = 1``)."""
    formula = loc.formula if formula is None else formula
    if loc.value is None:
        return formula
    value = summary(loc.value)
    if formula.endswith(f"= {value}") or f"= {value} (" in formula:
        return formula
    return f"{formula} = {value}"


class Record:
    """One node visited by the backward walk.

    Attributes
    ----------
    node : Node
    label : str
        The node's display name.
    op : str
    step : int or None
        The time step, for nodes of an unrolled graph.
    upstream : numpy.ndarray
        dL/d(node), the gradient arriving at the node (the node's shape).
    locals : list of Local
        One per input slot the gradient goes to (``x * x`` has two for ``x``).
    sent : dict
        Input ``Node`` -> the sum of what this record sends it (the input's shape).
    totals : dict
        Input ``Node`` -> ``(running_total, received, remaining)`` once this record has
        sent everything (the last of its :class:`Local` to that input): the sum of the
        contributions the input has received so far, how many that is, and how many are
        still to come.
    """

    __slots__ = ("node", "label", "op", "step", "upstream", "locals", "sent", "totals", "index")

    def __init__(self, node, label, upstream):
        self.node = node
        self.label = label
        self.op = node.op
        self.step = node.step
        self.upstream = upstream
        self.locals: list[Local] = []
        self.sent: dict = {}
        self.totals: dict = {}
        self.index = 0

    def lines(self, names, rename: bool = False) -> list[str]:
        """The record as lines of text (``names``: Node -> display name); ``rename=True``
        writes every name with ``names``, the record's own and those in its formulas too."""
        label = names(self.node) if rename else self.label
        step = "" if self.step is None else f"  step {self.step}"
        out = [f"[{self.index}] {label} = {self.op}{step}",
               f"    upstream dL/d{label} = {summary(self.upstream)}"]
        for loc in self.locals:
            name = names(loc.input)
            formula = loc.written(names) if rename else loc.formula
            full = _with_value(loc, formula)
            if len(full) > 92:  # the value on a line of its own, not cut
                out.append(f"    {formula}")
                out.append(f"     {full[len(formula):]}")
            else:
                out.append(f"    {full}")
            out.append(f"      sends {summary(loc.sent)} to {name}")
            running = loc.running()
            if running is not None:
                out.append(f"      {name} {running}")
        return out

    def __repr__(self) -> str:
        return f"<Record {self.label} ({self.op}) upstream={summary(self.upstream)}>"


class Skipped:
    """A node the walk does not go through, with the reason (``node``, ``label``, ``step``,
    ``reason``)."""

    __slots__ = ("node", "label", "step", "reason")

    def __init__(self, node, label, reason):
        self.node, self.label, self.step, self.reason = node, label, node.step, reason

    def __repr__(self) -> str:
        return f"<Skipped {self.label}: {self.reason}>"


class Explanation:
    """The narrated backward walk returned by :func:`explain`: a sequence of :class:`Record`.

    Attributes
    ----------
    records : list of Record
        In the order ``backward()`` visits the nodes.
    skipped : list of Skipped
        Nodes cut by truncation, with the reason.
    nodes : list of Node
        Every node of the (opened-up) graph drawn in the frames, in topological order: those
        the walk visits or an edge joins (a net's input given as an array, which the steps
        read row by row, is drawn as its rows).
    edges : list of (Node, Node, int)
        ``(input, node, slot)`` for every input slot.
    """

    def __init__(self, records, skipped, nodes, names, loss, links=None):
        self.records = records
        self.skipped = skipped
        self.nodes = nodes
        self._names = names
        self.loss = loss
        links = links or {}
        drawn = {id(n) for n in nodes}
        self.edges = [(i, n, k) for n in nodes for k, i in enumerate(n.inputs)
                      if id(i) in drawn]
        # an output picked from a net's call stacks the steps' nodes
        self.edges += [(m, n, t) for n in nodes for t, m in enumerate(links.get(id(n), ()))
                       if id(m) in drawn]
        have = {(id(a), id(b), k) for a, b, k in self.edges}
        for r in records:  # an input row handed to the whole input tensor, an initial state
            for loc in r.locals:
                if (id(loc.input), id(r.node), loc.index) not in have:
                    have.add((id(loc.input), id(r.node), loc.index))
                    self.edges.append((loc.input, r.node, loc.index))
        # a node joined to nothing drawn and not visited (a net's input given as an array,
        # read only through its rows) would stand alone in the picture: left out
        touched = {id(r.node) for r in records}
        touched.update(i for a, b, _ in self.edges for i in (id(a), id(b)))
        self.nodes = [n for n in nodes if id(n) in touched] or list(nodes)

    def edge_keys(self, record, local) -> list:
        """The drawn edges ``(id(source), id(target), slot)`` a contribution travels along
        (one: every contribution is sent along an edge of its own)."""
        return [(id(local.input), id(record.node), local.index)]

    def _node(self, node, what: str) -> Node:
        """``node`` as a Node of this walk: a Node, a Tensor (its node) or a name as
        printed."""
        from .errors import GradientError
        from .tensor import Tensor

        if isinstance(node, Tensor):
            node = node.node
        if isinstance(node, Node):
            return node
        if isinstance(node, str):
            every = list(self.nodes) + [r.node for r in self.records]
            every += [loc.input for r in self.records for loc in r.locals]
            for n in every:
                if self.name(n) == node:
                    return n
            known = sorted({self.name(n) for n in every})
            raise GradientError(
                f"Explanation.{what}: no node of this walk is named {node!r}; names are "
                f"{known[:12]}{' ...' if len(known) > 12 else ''}")
        raise GradientError(
            f"Explanation.{what}: node must be a Node (record.node), a Tensor or a name as "
            f"printed, got {type(node).__name__}")

    def name(self, node) -> str:
        """The display name of ``node`` (a Node or a Tensor) in this explanation."""
        node = self._node(node, "name")
        return self._names.get(id(node)) or node.label()

    def _plain(self, n: Node, picture: bool = False) -> str:
        """What the diagrams draw for ``n``, without its step: its user name, the name given
        to it (a constant's value, a net's output), or its op's label (``+``, ``Wᵀ``)."""
        given = self._pictured.get(id(n)) if picture else None
        return given or self._given.get(id(n)) or (n.name if n.name else op_label(n))

    def _base(self, n: Node) -> str:
        """:meth:`name` without the id appended where two names clash."""
        return self._given.get(id(n)) or _base_name(n)

    def _tags(self) -> dict:
        """``id(node) -> tag`` for the nodes that would print the same name as another
        (two ``+`` of step 2): the number of the node's record, ``[4]``, as the stepper
        numbers them, or, for a node the walk does not visit, ``(1)``, ``(2)``... in the
        order of the graph. The stepper writes it after the name, in the picture and in the
        text, where :meth:`name` appends the node's id (``+@2#n12``)."""
        if not hasattr(self, "_tag_cache"):
            every = getattr(self, "_every", None) or list(self.nodes)
            count: dict = {}
            for n in every:
                b = self._base(n)
                count[b] = count.get(b, 0) + 1
            record = {}
            for r in self.records:
                record.setdefault(id(r.node), r.index)
            tags, seen = {}, {}
            for n in every:
                b = self._base(n)
                if count[b] > 1:
                    if id(n) in record:
                        tags[id(n)] = f"[{record[id(n)]}]"
                    else:
                        seen[b] = seen.get(b, 0) + 1
                        tags[id(n)] = f"({seen[b]})"
            self._tag_cache = tags
        return self._tag_cache

    def _reader_name(self, node) -> str:
        """The name the stepper prints for ``node``: the diagrams' name with its step
        (``+@2``, ``h_next@2``) and, where two would read the same, its tag (``+@2 [4]``),
        never an internal id."""
        node = self._node(node, "name")
        if not hasattr(self, "_given"):  # (an explanation built by hand)
            return self.name(node)
        base = self._base(node)
        tag = self._tags().get(id(node))
        return base if tag is None else f"{base} {tag}"

    def _title(self, n: Node) -> tuple:
        """The HTML title of ``n`` in the picture, as the diagrams draw it (a named value's
        step in subscript, ``h_next₂``; an op by its symbol) with its tag, and the step when
        the title does not carry it."""
        from .render import _h

        if not hasattr(self, "_given"):  # (an explanation built by hand)
            return _h(self.name(n)), None
        title = _h(self._plain(n, picture=True))
        step = n.step
        if step is not None and (n.name or n.op in ("input", "init")):
            # (in subscript digits, one run of text: a <sub> element is a text of its own,
            # placed by Graphviz's metrics, which a browser's narrower font leaves a gap before)
            title += str(step).translate(_SUBSCRIPT)
            step = None
        tag = self._tags().get(id(n))
        if tag is not None:
            title += f" <font color='#57606a'>{_h(tag)}</font>"
        return title, step

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, k):
        return self.records[k]

    def contributions(self, node) -> list:
        """Every contribution sent to ``node``, in walk order (one per input slot); they sum
        to the node's upstream gradient.

        Parameters
        ----------
        node : Node, Tensor or str
            A node of the walk (``record.node``), a tensor of the graph, or the name the
            walk prints (``"h_next@1"``).

        Raises
        ------
        GradientError
            For a name no node of the walk has, or an argument of another type.
        """
        node = self._node(node, "contributions")
        return [loc.sent for r in self.records for loc in r.locals if loc.input is node]

    def table(self, width: int = 100) -> str:
        """The walk as plain text, one block per record, no line longer than ``width``.

        Arrays of more than four numbers are shown as their shape and norm.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> x = ug.tensor(3.0, requires_grad=True, name="x")
        >>> print(ug.explain(x * x).table())
        Backward walk from ×: 2 nodes
        [0] × = mul
            upstream dL/d× = 1
            d(x * x)/dx (input 0) = x = 3
              sends 3 to x
              x running total 3 (1 of 2; 1 more to come)
            d(x * x)/dx (input 1) = x = 3
              sends 3 to x
              x running total 6 (2 of 2; last one)
        [1] x = leaf
            upstream dL/dx = 6
        """
        from .errors import GradientError

        if isinstance(width, bool) or not isinstance(width, int) or width < 20:
            raise GradientError(f"Explanation.table: width must be an int of at least 20 "
                                f"(characters per line), got {width!r}")
        lines = [f"Backward walk from {self.name(self.loss)}: {len(self.records)} nodes"]
        for r in self.records:
            lines.extend(r.lines(self.name))
        for s in self.skipped:
            lines.append(f"skipped {s.label}: {s.reason}")
        return "\n".join(_fit(line, width) for line in lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"<Explanation: {len(self.records)} records, {len(self.skipped)} skipped>"

    def to_markdown(self) -> str:
        """The walk as a Markdown table (one row per record, then the skipped nodes); names
        are escaped (``|``, ``<``, ``&``).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> x = ug.tensor(3.0, requires_grad=True, name="x")
        >>> print(ug.explain(x * 2.0).to_markdown().splitlines()[2])
        | 0 | × | mul |  | 1 | d(x * 2)/dx = 2 | 2 → x |
        """
        rows = ["| # | node | op | step | upstream dL/d(node) | local derivative | sent |",
                "|---|---|---|---|---|---|---|"]
        for r in self.records:
            local = "<br>".join(_md(_with_value(loc)) for loc in r.locals) or "-"
            sent = []
            for loc in r.locals:
                text = f"{summary(loc.sent)} → {self.name(loc.input)}"
                running = loc.running()
                if running is not None:
                    text += f" ({running})"
                sent.append(_md(text))
            rows.append(f"| {r.index} | {_md(r.label)} | {r.op} | "
                        f"{'' if r.step is None else r.step} | {_md(summary(r.upstream))} | "
                        f"{local} | {'<br>'.join(sent) or '-'} |")
        text = "\n".join(rows) + "\n"
        if self.skipped:
            text += "\nSkipped:\n\n" + "".join(
                f"- {_md(s.label)}: {_md(s.reason)}\n" for s in self.skipped)
        return text

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    # -- pictures --------------------------------------------------------------------------------
    def _dot(self, k: int | None, prefix: str = "") -> str:
        """DOT text of the graph at record ``k`` (``None``: every element, for the stepper,
        which switches classes per frame).

        An unrolled graph's nodes stand in one box per time step (``t = 0``, ``t = 1``...),
        the steps side by side, time running left to right as in the other unrolled
        pictures: an edge from one step into a later one (the state carried on) does not
        rank its head above its tail. A gradient on an edge stands in a padded cell, clear
        of its edge, of the other labels and of the nodes."""
        from .render import _h, _q

        done_nodes, done_edges = set(), set()
        current = None
        if k is not None:
            current = self.records[k].node
            for r in self.records[: k + 1]:
                done_nodes.add(id(r.node))
                for loc in r.locals:
                    done_edges.update(self.edge_keys(r, loc))
        sent = {}
        for r in self.records[: (len(self.records) if k is None else k + 1)]:
            for loc in r.locals:
                keys = self.edge_keys(r, loc)
                for t, key in enumerate(keys):
                    sent[key] = loc.sent if len(keys) == 1 else loc.sent[t]
        ids = {id(n): f"{prefix}n{i}" for i, n in enumerate(self.nodes)}
        lines = ["digraph explain {", '  rankdir="BT"; newrank=true; ordering=out; nodesep=0.15; '
                 'ranksep=0.3;',
                 '  node [fontname="Helvetica" shape=box style="rounded,filled" '
                 'fillcolor="#ffffff" fontsize=12 margin="0.08,0.03"];',
                 '  edge [fontname="Helvetica" fontsize=10 arrowsize=0.7];']
        if len(self.edges) > _FAST_LAYOUT_EDGES:
            # a long unrolled graph: dot's crossing minimisation and spline routing would take
            # minutes; a short search and straight edges lay it out in seconds (the steps'
            # rows, see _step_order, leave little to search). Its gradients stay labels, each
            # given a place of its own: placed beside the edges after the layout (xlabel),
            # they fell on nodes and on each other
            lines.append("  mclimit=0.1; remincross=false; splines=line;")
        records = {id(r.node): r for r in self.records}
        steps: dict = {}
        for n in self.nodes:
            if n.step is not None:
                steps.setdefault(n.step, []).append(n)
        node_lines = {}
        for n in self.nodes:
            nid = ids[id(n)]
            r = records.get(id(n))
            title, step = self._title(n)
            info = " · ".join(x for x in ("" if n.is_leaf else _h(n.op),
                                          "" if step is None else f"step {step}") if x)
            op = f"<br/><font point-size='10'>{info}</font>" if info else ""
            grad = ""
            if r is not None and (k is None or id(n) in done_nodes):
                # the stepper finds this line by its colour, to show it only once visited
                grad = (f"<br/><font point-size='10' color='{GRAD_COLOUR}'>"
                        f"∇ {_h(summary(r.upstream, picture=True))}</font>")
            style = {}
            if k is not None:
                if n is current:
                    style = {"color": "#cf222e", "penwidth": "3", "fillcolor": "#ffebe9"}
                elif id(n) not in done_nodes:
                    style = {"color": "#d0d7de", "fontcolor": "#8c959f"}
            extra = "".join(f" {a}={_q(v)}" for a, v in style.items())
            node_lines[id(n)] = f'"{nid}" [id="{nid}" label=<{title}{op}{grad}>{extra}];'
        lines.extend("  " + node_lines[id(n)] for n in self.nodes)
        lines.extend(self._step_order(steps, ids, prefix, self._step_rows(steps),
                                      walls=k is not None))
        for e, (a, b, slot) in enumerate(self.edges):
            key = (id(a), id(b), slot)
            attrs = {"id": f"{prefix}e{e}"}
            label = None
            if key in sent:
                label = _h(summary(sent[key], picture=True))
            if a.step is not None and b.step is not None and a.step != b.step:
                # a state carried to a later step: from high in one step to low in the next,
                # an edge that ranks nothing
                attrs["constraint"] = "false"
            if k is not None:
                if key in done_edges:
                    attrs.update(color="#0969da", penwidth="2", fontcolor="#0969da")
                else:
                    attrs.update(color="#d0d7de", style="dashed")
                    label = None
            body = " ".join(f"{a2}={_q(v)}" for a2, v in attrs.items())
            if label is not None:
                # padded, the more on its sides: the text stands clear of its own edge and of
                # its neighbours (two labels side by side, as x * x has, two characters apart)
                body += (f' label=<<table border="0" cellborder="0" cellpadding="2" '
                         f'cellspacing="0"><tr><td width="{_SIDE}"></td><td>{label}</td>'
                         f'<td width="{_SIDE}"></td></tr></table>>')
            lines.append(f'  "{ids[id(a)]}" -> "{ids[id(b)]}" [{body}];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _step_rows(self, steps: dict) -> dict:
        """``id(node) -> row`` for the nodes of an unrolled step: 0 for a node no other node
        of its step feeds, else one more than the highest of those that feed it (the same
        for every step's copy of a node)."""
        row: dict = {}
        feeds: dict = {}
        for a, b, _ in self.edges:
            if a.step is not None and a.step == b.step:
                feeds.setdefault(id(b), []).append(a)
        for t in sorted(steps):
            for n in steps[t]:  # (in topological order)
                row[id(n)] = 0
            changed = True
            while changed:  # (a record's edge may run against the order of the nodes)
                changed = False
                for n in steps[t]:
                    r = max((row[id(a)] + 1 for a in feeds.get(id(n), ())), default=0)
                    if r > row[id(n)]:
                        row[id(n)], changed = r, True
        return row

    def _step_order(self, steps: dict, ids: dict, prefix: str, row: dict,
                    walls: bool = False) -> list:
        """The DOT lines that lay the unrolled steps out side by side, in time order left to
        right: each row of a step (:meth:`_step_rows`) on one rank with the same row of
        every other step, every node of step t left of every node of the next step there
        (through an invisible separator: an edge in one rank keeps its tail left of its
        head), the nodes of no step that feed a step under the steps, those that read one
        over them. ``_step_boxes`` of :mod:`unrollgraph.html` draws a box round each step;
        ``walls=True`` draws the walls (a frame's dashed line between two steps)."""
        if not steps:
            return []
        top = max(row.values())
        out = []
        floor, ceiling = f"{prefix}floor", f"{prefix}ceiling"
        invisible = 'shape=point style=invis width=0 height=0 label=""'
        out.append(f'  "{floor}" [{invisible}]; "{ceiling}" [{invisible}];')
        stepped = {id(n) for ns in steps.values() for n in ns}
        below, above = [], []
        for a, b, _ in self.edges:
            if id(a) not in stepped and id(b) in stepped and a not in below:
                below.append(a)
            if id(a) in stepped and id(b) not in stepped and b not in above:
                above.append(b)
        below = [n for n in below if n not in above]
        for n in below:
            out.append(f'  "{ids[id(n)]}" -> "{floor}" [style=invis weight=0];')
        for n in above:
            out.append(f'  "{ceiling}" -> "{ids[id(n)]}" [style=invis weight=0];')
        order = sorted(steps)
        for r in range(top + 1):
            by_step = [[n for n in steps[t] if row[id(n)] == r] for t in order]
            extra = ([floor] if r == 0 else []) + ([ceiling] if r == top else [])
            members = extra + [ids[id(n)] for ns in by_step for n in ns]
            body = ["{rank=same; " + " ".join(f'"{m}"' for m in members) + ";"]
            first = next(ns[0] for ns in by_step if ns)
            for e in extra:  # the floor and ceiling left of every step
                body.append(f'"{e}" -> "{ids[id(first)]}" [style=invis];')
            # a wall between each step and the next, in every row: left of it every node of
            # the one, right of it every node of the other
            for k in range(len(order) - 1):
                wall = f"{prefix}wall{r}_{k}"
                body.append(f'"{wall}" [{invisible}];')
                left = [ids[id(n)] for n in by_step[k]] or ([f"{prefix}wall{r}_{k - 1}"]
                                                           if k else [])
                body.extend(f'"{i}" -> "{wall}" [style=invis];' for i in left)
                body.extend(f'"{wall}" -> "{ids[id(n)]}" [style=invis];'
                            for n in by_step[k + 1])
            out.append("  " + " ".join(body) + "}")
        # each wall straight up through the rows (heavy: dot pulls its pieces into one line)
        look = ('style=dashed color="#d0d7de" arrowhead=none penwidth=1.5' if walls
                else "style=invis")
        for k in range(len(order) - 1):
            for r in range(top):
                out.append(f'  "{prefix}wall{r}_{k}" -> "{prefix}wall{r + 1}_{k}" '
                           f'[{look} weight=100];')
        return out

    def frames(self) -> list:
        """One ``graphviz.Digraph`` per record: the current node highlighted, the edges already
        traversed solid with the gradients they carried, the rest faded.

        Returns
        -------
        list of graphviz.Digraph

        Examples
        --------
        >>> import unrollgraph as ug
        >>> x = ug.tensor(0.5, requires_grad=True, name="x")
        >>> frames = ug.explain(ug.tanh(x)).frames()
        >>> len(frames), frames[0].source.count('penwidth="3"')
        (2, 1)
        """
        from .render import _diagram_class

        cls = _diagram_class()
        out = []
        for k in range(len(self.records)):
            source = self._dot(k)
            body = source.split("\n", 1)[1].rsplit("}", 1)[0]
            out.append(cls(name="explain", body=[line + "\n" for line in body.splitlines()]))
        return out

    def to_html(self, path=None, title: str | None = None) -> str:
        """Write a self-contained HTML page stepping through the walk; returns its text.

        The page holds the picture (inline SVG, laid out by Graphviz's ``dot``), its style and
        a few lines of JavaScript: Previous/Next, the arrow keys and a slider move through
        the records, the current node outlined, the edges already traversed solid with their
        gradients, the record's text beside the picture. An unrolled graph's steps stand side
        by side in time order, each in a box. The picture is shown whole where it fits at a
        readable size, else at that size, scrolling to keep the current node in view; its
        buttons zoom it (smaller, Fit, 100%, larger). Nothing is fetched.

        Parameters
        ----------
        path : str or path-like, optional
            Where to write the page (UTF-8); without it, only the text is returned.
        title : str, optional

        Returns
        -------
        str

        Raises
        ------
        RenderError
            When Graphviz's ``dot`` program is missing or fails.
        GradientError
            For a ``path`` or ``title`` of the wrong type.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> x = ug.tensor(0.5, requires_grad=True, name="<x>")
        >>> page = ug.explain(ug.tanh(x)).to_html()
        >>> page.startswith("<!DOCTYPE html>"), "<x>" in page
        (True, False)
        """
        from .errors import GradientError
        from .html import stepper

        if title is not None and not isinstance(title, str):
            raise GradientError(f"Explanation.to_html: title must be a str, got "
                                f"{type(title).__name__}")
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise GradientError(f"Explanation.to_html: path must be a file name (str or "
                                f"path-like), got {type(path).__name__}")
        text = stepper(self, title=title)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    def _repr_html_(self) -> str:
        from .html import stepper

        return stepper(self, embed=True)


def _md(text: str) -> str:
    return html.escape(str(text), quote=False).replace("|", "&#124;").replace("\n", "<br>")


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


# -- the walk ------------------------------------------------------------------------------------
def explain(loss) -> Explanation:
    """Narrate the backward walk from ``loss``: one record per node that ``loss.backward()``
    visits, in the same order, with the same numbers.

    Nothing is changed: no ``.grad`` is written. An unrolled net's call is opened up into its
    unrolled graph (values from ``net.last_run``), walked step T-1 down to 0.

    Parameters
    ----------
    loss : Tensor
        A tensor of one element that requires grad (the walk starts from the gradient 1, as
        ``backward()`` does); reduce a larger one first (``ug.explain(y.sum())``).

    Returns
    -------
    Explanation

    Raises
    ------
    GradientError
        If ``loss`` is not a Tensor (an unrolled net: call it and build a loss from its
        outputs), does not require grad (nothing to explain), or has more than one element.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor(3.0, requires_grad=True, name="x")
    >>> y = x * x
    >>> ex = ug.explain(y)
    >>> [float(c) for c in ex.contributions(x.node)]
    [3.0, 3.0]
    """
    from .errors import GradientError
    from .tensor import Tensor, _count_uses, _route_item

    if not isinstance(loss, Tensor):
        from .symbolic import _describe

        raise GradientError(
            f"explain(): loss must be a Tensor of one element, got {_describe(loss)}; for a "
            "net, call it (out, h = net(xs)) and explain a loss computed from its outputs, "
            "e.g. ug.explain((out * out).sum())")
    if not loss.requires_grad:
        raise GradientError(
            f"explain(): {loss.node.label()} does not require grad, so backward() would have "
            "nothing to walk; build it from tensors made with requires_grad=True")
    if loss.data.size != 1:
        raise GradientError(
            f"explain() walks back from a scalar, as backward() does; {loss.node.label()} has "
            f"shape {loss.shape}: reduce it first, e.g. ug.explain(y.sum())")
    seed = np.ones_like(loss.data)
    records: list[Record] = []
    skipped: list[Skipped] = []
    nodes: list[Node] = []
    names: dict = {}  # every node the walk touches -> a name given to it (or None)

    uses = _count_uses(loss)  # the same first pass as backward(), so the same walk
    eager = Graph([loss.node])
    names.update(_item_names(eager))
    names.update(_const_names(loss))
    pictured = {k: v for k, v in _const_names(loss, picture=True).items() if v is not None}
    grads: dict = {id(loss): seed}
    ready = [loss]
    reaches: dict = {}  # an unrolled net's run -> _reach(run), computed once
    while ready:
        t = ready.pop()
        g = grads.pop(id(t), None)
        parents = t._parents
        node = t.node
        if node.op == "item":
            p = parents[0]
            if g is not None:
                _route_item(grads, node, p, g)
                records.append(_item_record(node, np.asarray(g), reaches))
                names.setdefault(id(node), None)
            _release(p, uses, ready)
            continue
        if node.op == "unrolled":
            if g is not None:
                leaf_g = _walk_unrolled(t, g, records, skipped, nodes, names)
                for p, gk in zip(parents, leaf_g):
                    if gk is not None and p.requires_grad:
                        prev = grads.get(id(p))
                        grads[id(p)] = gk if prev is None else prev + gk
            for p in parents:
                if p.requires_grad:
                    _release(p, uses, ready)
            continue
        if g is None:
            for p in parents:
                if p.requires_grad:
                    _release(p, uses, ready)
            continue
        names.setdefault(id(node), None)
        rec = Record(node, None, np.asarray(g))
        records.append(rec)
        if not parents:
            continue
        op = get_op(node.op)
        values = tuple(p._data for p in parents)
        for k, p in enumerate(parents):
            if not p.requires_grad:
                continue
            f = op.input_vjp(k)
            gk = None if f is None else f(g, t._data, *values, **node.attrs)
            if gk is not None:
                gk = np.asarray(gk)
                names.setdefault(id(p.node), None)
                rec.locals.append(Local(p.node, k, None,
                                        _local_value(node.op, k, t._data, values, node.attrs),
                                        gk))
                prev = grads.get(id(p))
                grads[id(p)] = gk if prev is None else prev + gk
            _release(p, uses, ready)
    # the nodes drawn: the eager graph's, with an unrolled call replaced by its unrolled graph
    drawn = []
    seen = set()
    links: dict = {}  # an output picked from a net's call -> the unrolled nodes it stacks
    for n in eager.nodes:
        if n.op == "item":
            links[id(n)] = _picked(n)
        if n.op == "unrolled":
            run = n.attrs["_run"]
            for m in run.net.nodes:
                if id(m) in names and id(m) not in seen:
                    seen.add(id(m))
                    drawn.append(m)
            continue
        if id(n) not in seen:
            seen.add(id(n))
            drawn.append(n)
            names.setdefault(id(n), None)
    final, every, given = _final_names(eager, names, drawn, records, skipped)
    _running_totals(records)
    ex = Explanation(records, skipped, drawn, final, loss.node, links)
    ex._every, ex._given, ex._pictured = every, given, pictured
    return ex


def _picked(item) -> list:
    """The unrolled nodes an output picked from a net's call stacks: an output's T per-step
    nodes, or a final state's last node."""
    net = item.inputs[0].attrs["_run"].net
    outs = list(net.output_nodes.values())
    k = item.attrs["index"]
    return outs[k] if k < len(outs) else [list(net.state_nodes.values())[k - len(outs)][-1]]


def _item_record(item, g, reaches) -> Record:
    """The record of an output picked from a net's call: it hands each step's row of its
    gradient to that step's node (or the whole of it to the last state), so that every
    gradient arriving in the unrolled graph is a recorded contribution."""
    run = item.inputs[0].attrs["_run"]
    if id(run) not in reaches:
        reaches[id(run)] = _reach(run)
    reach = reaches[id(run)][1]
    rec = Record(item, None, g)
    picked = _picked(item)
    if len(picked) == 1 and item.attrs["index"] >= len(run.net.output_nodes):
        m = picked[0]
        if id(m) in reach:
            rec.locals.append(Local(m, 0, lambda of, m=m: f"{of(item)} is {of(m)}, the state "
                                    "after the last step", None, g))
        return rec
    for t, m in enumerate(picked):
        if id(m) in reach:
            rec.locals.append(Local(m, t, lambda of, m=m, t=t: f"row {t} of {of(item)} is "
                                    f"{of(m)}", None, np.asarray(g[t])))
    return rec


def _reach(run) -> tuple:
    """``(want, reach)`` for an unrolled run: the ids of the nodes whose gradient leads to a
    leaf that needs one (parameters, inputs and initial states requiring grad), with the
    truncation's cuts (``want``) and without (``reach``)."""
    net = run.net
    leaf_nodes = {id(p.node): p for p in run.leaves}
    needs = set()
    for p in net.param_nodes.values():
        if id(p) in leaf_nodes and leaf_nodes[id(p)].requires_grad:
            needs.add(id(p))
    for k, ns in net.input_nodes.items():
        if run.xs[k].requires_grad:
            needs.update(id(n) for n in ns)
    for k, n in net.init_nodes.items():
        s = run.states.get(k)
        if getattr(s, "requires_grad", False):
            needs.add(id(n))
    want = set(needs)
    reach = set(needs)
    for n in net.nodes:
        if n.is_leaf:
            continue
        op = get_op(n.op)
        ks = [k for k in range(len(n.inputs)) if op.input_vjp(k) is not None]
        if any(id(n.inputs[k]) in reach for k in ks):
            reach.add(id(n))
        if not net.is_cut(n) and any(id(n.inputs[k]) in want for k in ks):
            want.add(id(n))
    return want, reach


def _ids(eager) -> dict:
    """``id(node) -> id`` that tells apart nodes printing the same name: an unrolled graph's
    nodes by their cell node's id (``n12``: ``+@2#n12`` is step 2's copy of ``n12``), the
    eager graph's by their own, written ``e3`` when an unrolled graph is opened inside it."""
    ids: dict = {}
    opened = False
    for n in eager.nodes:
        if n.op == "unrolled":
            opened = True
            net = n.attrs["_run"].net
            cell_graph = net._cell_graph
            for m in net.graph.nodes:
                ids[id(m)] = (cell_graph.id(m.origin) if m.origin is not None
                              and m.origin in cell_graph else net.graph.id(m))
    for i, n in enumerate(eager.nodes):
        ids.setdefault(id(n), f"{'e' if opened else 'n'}{i}")
    return ids


def _const_name(value, picture: bool = False) -> str | None:
    """A constant of one element is named by its value, as the diagrams draw it (3 digits;
    a negative one with U+2212 in a picture, ASCII ``-`` in text)."""
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "fiub":
        return None
    return number(arr.reshape(-1)[0], 3, picture=picture)


def _const_names(loss, picture: bool = False) -> dict:
    names, seen, stack = {}, set(), [loss]
    while stack:
        t = stack.pop()
        if id(t.node) in seen:
            continue
        seen.add(id(t.node))
        if t.node.op == "const" and not t.node.name and _const_name(t._data) is not None:
            names[id(t.node)] = _const_name(t._data, picture)
        stack.extend(t._parents)
    return names


def _item_names(eager) -> dict:
    """The names of the unnamed outputs picked from a net's call (``y (all steps)``)."""
    names = {}
    for n in eager.nodes:
        if n.op == "item" and not n.name:  # an output of a net's call, all steps stacked
            names[id(n)] = n.label()
    return names


def graph_names(eager, nodes, given=None) -> dict:
    """The names :func:`explain` prints for ``nodes`` of the loss's graph ``eager`` (with its
    unrolled calls opened), for the other views of the chain rule to print the same."""
    return display_names(nodes, lambda n, ids=_ids(eager): ids.get(id(n), "?"),
                         {**_item_names(eager), **(given or {})})


def _final_names(eager, given, drawn, records, skipped) -> tuple:
    """The names printed for every node of the walk: the diagrams' names, with the node's
    id appended only where two would read the same; then each record's label and formulas.
    An unrolled graph's nodes are told apart by their ids in it (``n12``), the eager
    graph's by theirs, written ``e3`` when an unrolled graph is opened inside it. Returns
    the names, every node named and the names given (constants, a net's outputs)."""
    ids = _ids(eager)
    nodes, seen = [], set()
    every = list(drawn) + [r.node for r in records] + [s.node for s in skipped]
    every += [loc.input for r in records for loc in r.locals]
    every += [i for r in records for i in r.node.inputs]  # named in the formulas
    for n in every:
        if id(n) not in seen:
            seen.add(id(n))
            nodes.append(n)
    given = {k: v for k, v in given.items() if v is not None}
    names = display_names(nodes, lambda n: ids.get(id(n), "?"), given)
    name = names.__getitem__

    def of(n):
        return name(id(n))

    for r in records:
        r.label = of(r.node)
        for loc in r.locals:
            if loc.formula is None:
                loc._make = functools.partial(_formula, r.node, loc.index)
            elif callable(loc.formula):
                loc._make = loc.formula
            if loc._make is not None:
                loc.formula = loc._make(of)
    for s in skipped:
        s.label = of(s.node)
    return names, nodes, given


def _release(p, uses, ready) -> None:
    """backward()'s release of an input (ready once every reader has been visited), for
    inputs that take part in the walk."""
    if p.requires_grad:
        _release_input(p, uses, ready)


def _running_totals(records) -> None:
    count: dict = {}
    for r in records:
        for loc in r.locals:
            count[id(loc.input)] = count.get(id(loc.input), 0) + 1
    running: dict = {}
    got: dict = {}
    for k, r in enumerate(records):
        r.index = k
        for loc in r.locals:
            i = id(loc.input)
            prev = running.get(i)
            running[i] = loc.sent if prev is None else prev + loc.sent
            got[i] = got.get(i, 0) + 1
            r.sent[loc.input] = (loc.sent if loc.input not in r.sent
                                 else r.sent[loc.input] + loc.sent)
            loc.total, loc.received, loc.remaining = running[i], got[i], count[i] - got[i]
            r.totals[loc.input] = (running[i], got[i], count[i] - got[i])


def _walk_unrolled(call, seeds, records, skipped, nodes, names) -> list:
    """Walk the unrolled graph of one call of a net; return the gradients of the call's
    leaves (inputs stacked over time, parameters, initial states)."""
    run = call.node.attrs["_run"]
    net = run.net
    # the nodes whose gradient leads to a parameter, input or initial state that requires
    # grad (want), and the same were there no truncation (reach)
    want, reach = _reach(run)
    grads: dict = {}

    def add(n, g):
        prev = grads.get(id(n))
        grads[id(n)] = g if prev is None else prev + g

    outs = list(net.output_nodes.values())
    for k, g in enumerate(seeds):
        if g is None:
            continue
        # the same contributions the records of the picked outputs sent (_item_record)
        if k < len(outs):
            for t, n in enumerate(outs[k]):
                if id(n) in reach:
                    add(n, np.asarray(g[t]))
        else:
            n = list(net.state_nodes.values())[k - len(outs)][-1]
            if id(n) in reach:
                add(n, np.asarray(g))
    input_of = {}
    for k, ns in net.input_nodes.items():
        for t, n in enumerate(ns):
            input_of[id(n)] = (k, t)
    init_of = {id(n): k for k, n in net.init_nodes.items()}
    xs_grads = {}
    init_grads = {}
    param_grads = {}
    for n in reversed(net.nodes):
        g = grads.pop(id(n), None)
        if id(n) in reach and not n.is_leaf and net.is_cut(n):
            names.setdefault(id(n), None)
            got = "" if g is None else f"; it receives {summary(g)} but passes nothing back"
            skipped.append(Skipped(n, None, (
                f"cut by truncation (truncate={net.truncate}): steps before "
                f"{net.steps - net.truncate} pass no gradient back{got}")))
            continue
        if g is None or id(n) not in want:
            continue
        names.setdefault(id(n), None)
        if n.op == "param":
            param_grads[id(n)] = g
            continue  # a parameter is a leaf of the eager graph: the eager walk records it
        rec = Record(n, None, g)
        records.append(rec)
        if id(n) in input_of:
            k, t = input_of[id(n)]
            x = run.xs[k]
            part = np.zeros(x.shape, dtype=x.dtype)
            part[t] = g
            names.setdefault(id(x.node), None if x.node.name else f"{k} (all steps)")
            rec.locals.append(Local(x.node, t, lambda of, n=n, x=x, t=t:
                                    f"{of(n)} is row {t} of {of(x.node)}", None, part))
            xs_grads[k] = part if k not in xs_grads else xs_grads[k] + part
            continue
        if id(n) in init_of:
            k = init_of[id(n)]
            s = run.states[k]
            names.setdefault(id(s.node), None if s.node.name else n.label())
            rec.locals.append(Local(s.node, 0, lambda of, n=n, s=s:
                                    f"{of(n)} is the initial state given ({of(s.node)})",
                                    None, np.asarray(g)))
            init_grads[k] = np.asarray(g)
            continue
        if n.is_leaf:
            continue
        op = get_op(n.op)
        ans = run.value(n)
        vals = [run.value(i) for i in n.inputs]
        for i, v in zip(n.inputs, vals):  # named in the formulas
            if i.op == "const" and not i.name and _const_name(v) is not None:
                names[id(i)] = _const_name(v)
        for k, i in enumerate(n.inputs):
            f = op.input_vjp(k)
            if f is None or id(i) not in want:
                continue
            gk = f(g, ans, *vals, **n.attrs)
            if gk is None:
                continue
            gk = np.asarray(gk)
            names.setdefault(id(i), None)
            rec.locals.append(Local(i, k, None,
                                    _local_value(n.op, k, ans, vals, n.attrs), gk))
            add(i, gk)
    out = []
    for (kind, key), p in zip(run.leaf_kinds, run.leaves):
        if kind == "param":
            # its parts were sent by the records above; the eager walk gets their sum
            out.append(param_grads.get(id(p.node)))
        elif kind == "input":
            out.append(xs_grads.get(key))
        else:
            out.append(init_grads.get(key))
    return out

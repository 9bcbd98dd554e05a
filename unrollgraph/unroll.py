"""The unroller: copy a cyclic cell T times into an acyclic graph.

``unroll(cell, steps=T)`` clones the cell's op nodes once per step with a memo (a dict from a
cell node to its copy at this step): parameters (and anything computed from parameters alone,
such as ``W.T``) map to themselves and appear once, shared by every step; the state read at
step t maps to the next-state node of step t-1 (the delay edge, z^-1). The result is an
ordinary acyclic graph, so backpropagation through time is plain reverse-mode autodiff on it:
a shared weight's gradient is the sum of its T contributions because gradients accumulate.

This module only builds the graph. The flow is cell -> unroll (this graph) -> schedule
(:mod:`unrollgraph.compile`, once per net) -> run (:mod:`unrollgraph.run`, once per call).
"""

from __future__ import annotations

import gc
import threading

import numpy as np

from .cell import Cell
from .checkpoint import CheckpointedRun, kept_steps, resolve_checkpoint
from .compile import compile_schedule
from .errors import CellError
from .graph import Graph, Node, gc_paused
from .run import NetNames, Run, call

__all__ = ["unroll", "Unrolled", "Run"]


def unroll(cell: Cell, steps: int, truncate: int | None = None, masked: bool = False,
           keep: str = "needed", checkpoint: int | str | None = None):
    """Unroll ``cell`` over ``steps`` time steps into an acyclic graph.

    Parameters
    ----------
    cell : Cell
        The recurrent cell.
    steps : int
        Number of time steps T.
    truncate : int, optional
        Truncated BPTT inside the graph, like Theano's ``truncate_gradient``: gradient flows
        only through the last ``truncate`` steps. Nodes of steps ``t < T - truncate`` take no
        part in the backward pass (they are drawn greyed). ``truncate >= T`` is full BPTT.
    masked : bool
        Add per-step mask nodes so sequences of different lengths can share a batch (``net(xs,
        lengths=...)`` builds this variant for you).
    keep : {"needed", "all"}
        What a run keeps. ``"needed"`` (the default) keeps what backpropagation reads (the
        values a VJP uses, the outputs, the states and their gradients) and drops the rest
        during the run: less memory, and less of it to touch, which is faster. Diagrams and
        :meth:`Run.value` still show every value and gradient: the run recomputes the rest
        once when asked (:meth:`Run.full`). ``"all"`` keeps everything as it is computed.
    checkpoint : int, "sqrt" or None
        Gradient checkpointing through time (Chen et al. 2016): a run keeps its outputs and
        the state of every ``checkpoint``-th step only, and the backward pass recomputes
        each segment of that many steps from its kept state. ``"sqrt"`` takes
        ``ceil(sqrt(steps))`` steps per segment, where memory is least (about 3 sqrt(T)
        steps' worth of activations instead of T) for one more forward pass. The
        gradients are those of full BPTT (to rounding: the segments sum in another
        order). A value of ``steps`` or more is no checkpointing. Any value but None is
        refused with ``keep="all"`` (:class:`~unrollgraph.CellError`), whatever ``steps``.
        The graph is the same; diagrams read a recomputation (:meth:`Run.full`).

    Returns
    -------
    Unrolled

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> cell = ug.nn.RNNCell(2, 3, seed=0)
    >>> net = ug.unroll(cell, steps=4)
    >>> outputs, h = net(np.ones((4, 1, 2)))
    >>> outputs.shape, h.shape
    ((4, 1, 3), (1, 3))
    >>> outputs.sum().backward()
    >>> cell.weight_hh.grad.shape
    (3, 3)
    >>> lean = ug.unroll(cell, steps=100, checkpoint="sqrt")   # keeps 10 states of 100
    >>> lean.checkpoint
    10
    """
    return Unrolled(cell, steps, truncate=truncate, masked=masked, keep=keep,
                    checkpoint=checkpoint)


def _body_copier(cell: Cell, body: list, copied_elsewhere: set, roles: dict, order: list):
    """The copy of one step's body, as a function ``copy(memo, t)``. It does what this loop
    does, with each cell node's fields read once instead of once per step::

        for n in body:
            if id(n) not in copied_elsewhere:   # parameters, states, the step's inputs
                memo[id(n)] = Node(n.op, tuple(memo[id(i)] for i in n.inputs), n.attrs,
                                   n.name, n.shape, n.dtype, step=t, origin=n,
                                   role=roles.get(id(n)))
                order.append(memo[id(n)])
    """
    recipe = []
    for n in body:
        if id(n) in copied_elsewhere:
            continue
        if n.is_leaf:  # a batched leaf can only be a placeholder (copied elsewhere)
            raise CellError(f"cell {cell.name!r}: unexpected leaf {n.label()}")
        recipe.append((id(n), n.op, tuple(id(i) for i in n.inputs), n.attrs, n.name, n.shape,
                       n.dtype, n, roles.get(id(n))))
    append = order.append

    def copy(memo: dict, t: int) -> None:
        for key, op, inputs, attrs, name, shape, dtype, origin, role in recipe:
            node = memo[key] = Node(op, tuple([memo[i] for i in inputs]), attrs, name, shape,
                                    dtype, t, origin, role)
            append(node)

    return copy


#: nets of this many nodes or more are followed by one full collection (see _settle)
SETTLE_NODES = 100_000


def _settle(nodes: int) -> None:
    """After building a large net, one full collection of Python's garbage collector, if the
    collector is on. The objects made while it was paused (a few per node) are young: left
    alone, the collector walks all of them three times in the next calls (as it promotes
    them through its three generations); a full collection now walks them once and files
    them as old. Small nets skip it (it would cost more than it saves)."""
    if nodes >= SETTLE_NODES and gc.isenabled():
        gc.collect()


class _CopyNames:
    """``id(node) -> name`` of the unrolled copies that have no name of their own: the name of
    the cell node copied, with ``@step`` (``h_next@3``). Computed when a name is asked for
    (a diagram asks for a few; a long net would hold T of them)."""

    def __init__(self, graph: Graph, cell_graph: Graph):
        self._graph, self._cell_graph = graph, cell_graph

    def get(self, key: int, default=None):
        i = self._graph._index.get(key)
        if i is None:
            return default
        n = self._graph.nodes[i]
        if n.name:
            return default
        cg = self._cell_graph
        if n.origin is not None and n.origin in cg:
            src = n.origin
        elif n in cg:  # a constant of the cell: the cell's own node, under the cell's id
            src = n
        else:
            return default
        base = cg.display_name(src)
        return base if n.step is None else f"{base}@{n.step}"


class Unrolled:
    """A cell unrolled over T steps: an acyclic graph plus its compiled schedule.

    Call it as ``outputs, state = net(xs, state=None, lengths=None)``.

    Attributes
    ----------
    cell : Cell
    steps : int
    graph : Graph
        Every node of the unrolled graph, parameters once.
    param_nodes : dict
        Parameter name -> its single node, in the cell's order (``named_parameters()``).
    input_nodes, output_nodes, state_nodes : dict
        Name -> list of T nodes (``state_nodes[s][t]`` is the state after step t).
    init_nodes : dict
        State name -> the initial-state node.
    last_run : Run or None
        Values (and, after backward, gradients) of the most recent call made by the current
        thread (in a thread that has not called the net: of any thread's most recent call).
    checkpoint : int or None
        The segment length k of gradient checkpointing (``unroll(..., checkpoint=)``, with
        ``"sqrt"`` resolved to ``ceil(sqrt(T))``); None without checkpointing, or when
        ``k >= T`` (one segment: plain BPTT).
    kept_steps : tuple of int
        The steps t whose state (after step t) a checkpointed run keeps: the last step's
        and every k-th before it, counted back from the last; empty without checkpointing
        (every state is kept). Diagrams mark them.

    Notes
    -----
    The net is built for the cell as it was: declaring a new member of the cell afterwards
    (an input, state, parameter, feedback or output) makes the next call, or a run's
    recomputation, raise :class:`~unrollgraph.CellError`; unroll the cell again. Several
    threads may call one net at once: each call has its own :class:`Run`.
    """

    @property
    def kept_steps(self) -> tuple:
        """The steps whose state a checkpointed run keeps (see the class docstring).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=8, checkpoint=3).kept_steps
        (1, 4, 7)
        >>> ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=8).kept_steps
        ()
        """
        return tuple(sorted(kept_steps(self)))

    def parameters(self) -> dict:
        """The cell's parameters, by name: ``net.parameters()`` is ``net.cell.parameters()``
        (each weight once, shared by every step), to hand to an optimizer.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=4)
        >>> sorted(net.parameters()) == sorted(net.cell.parameters())
        True
        >>> opt = ug.optim.SGD(net.parameters(), lr=0.1)
        """
        return self.cell.parameters()

    def zero_grad(self) -> None:
        """Reset every parameter's ``.grad`` to ``None``, as PyTorch's ``Module.zero_grad()``:
        ``net.zero_grad()`` is ``net.cell.zero_grad()`` (the weights are the cell's, shared
        by every step). Inputs given as tensors keep theirs.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=4)
        >>> out, h = net(np.ones((4, 1, 2)))
        >>> out.sum().backward()
        >>> net.zero_grad()
        >>> [p.grad for p in net.parameters().values()]
        [None, None, None, None]
        """
        self.cell.zero_grad()

    def named_parameters(self, prefix: str = ""):
        """The cell's parameters as ``(name, tensor)`` pairs, as PyTorch's
        ``named_parameters()``: ``net.cell.named_parameters(prefix)`` (each weight once,
        shared by every step, in the cell's order).

        Parameters
        ----------
        prefix : str, optional
            Put before every name with a dot.

        Yields
        ------
        tuple of (str, Tensor)

        Examples
        --------
        >>> import unrollgraph as ug
        >>> net = ug.unroll(ug.nn.GRUCell(2, 3, seed=0), steps=4)
        >>> [name for name, _ in net.named_parameters(prefix="gru")]
        ['gru.weight_ih', 'gru.weight_hh', 'gru.bias_ih', 'gru.bias_hh']
        """
        return self.cell.named_parameters(prefix)

    def __init__(self, cell: Cell, steps: int, truncate: int | None = None,
                 masked: bool = False, keep: str = "needed",
                 checkpoint: int | str | None = None):
        if not isinstance(cell, Cell):
            raise CellError(f"unroll() needs a ug.Cell, got {type(cell).__name__}")
        if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) \
                or steps < 1:
            raise CellError(f"unroll(): steps must be a positive int, got {steps!r}")
        if truncate is not None and (isinstance(truncate, (bool, np.bool_)) or not isinstance(
                truncate, (int, np.integer)) or truncate < 1):
            raise CellError(f"unroll(): truncate must be a positive int or None, got {truncate!r}")
        if not isinstance(masked, (bool, np.bool_)):
            raise CellError(f"unroll(): masked must be True or False, got {masked!r}")
        if keep not in ("all", "needed"):
            raise CellError(f"unroll(): keep must be 'all' or 'needed', got {keep!r}")
        self.checkpoint = resolve_checkpoint(checkpoint, steps)
        if checkpoint is not None and keep == "all":  # whatever k (even one segment)
            raise CellError(
                f"unroll(): checkpoint={checkpoint!r} keeps the state of every k-th step only "
                "and keep='all' keeps every value: pass one of them (Run.full() recomputes "
                "every value of a checkpointed run when asked)"
            )
        self._run_type = Run if self.checkpoint is None else CheckpointedRun
        self._segment_nets: dict = {}  # (length, truncate) -> a segment's net (checkpoint=)
        cell.validate()
        self.cell = cell
        self.keep = keep
        self.steps = int(steps)
        self.truncate = None if truncate is None or truncate >= steps else int(truncate)
        self.masked = masked
        self._cell_structure = cell._structure()  # what the net is built for (_check_cell)
        self._runs = threading.local()  # .last: this thread's last run (see last_run)
        self._last_any = None
        self.last_run = None
        self._masked_twin: Unrolled | None = None
        self._input_names = list(cell.inputs)
        self._input_shapes = {k: tuple(t.shape[1:]) for k, t in cell.inputs.items()}
        with gc_paused():  # a few objects per node, no cycles: collecting now only costs
            self._build()
        _settle(len(self.nodes))
        self._bprogs: dict = {}

    @property
    def last_run(self) -> Run | None:
        run = getattr(self._runs, "last", None)
        return self._last_any if run is None else run

    @last_run.setter
    def last_run(self, run: Run | None) -> None:
        self._runs.last = self._last_any = run

    def _check_cell(self) -> None:
        """Raise CellError if the cell has gained members since it was unrolled."""
        if self.cell._version != self._cell_structure[0]:
            self._cell_structure = self.cell._check_structure(self._cell_structure)

    # -- building: the clone with a memo ------------------------------------------------------
    def _build(self) -> None:
        """Unroll: copy the cell's body once per step (the whole idea, in three parts)."""
        cell = self.cell
        cell_graph = self._cell_graph = cell.graph()
        body = cell_graph.nodes  # the cell's nodes, inputs before the nodes that read them
        order: list[Node] = []  # the unrolled graph's nodes, in an order that computes
        # 1. What does not depend on the batch (parameters, W.T, constants) exists once and is
        #    shared by every step: it maps to itself.
        shared = self._shared_nodes(body, order)
        # 2. The initial states: what step 0 reads through each delay edge.
        self.init_nodes = {}
        for s, st in cell.states.items():
            self.init_nodes[s] = Node("init", name=f"{s}_init", shape=st.node.shape,
                                      dtype=st.node.dtype, origin=st.node, role="init")
            order.append(self.init_nodes[s])
        prev = {id(cell.states[s].node): self.init_nodes[s] for s in cell.states}
        # 3. T copies of the rest. The memo maps a cell node to its copy at step t.
        nexts = {s: t.node for s, t in cell.feedbacks.items()}  # state -> its next value
        roles = {id(t.node): "output" for t in cell.outputs.values()}
        roles.update({id(n): "next_state" for n in nexts.values()})
        self.input_nodes = {k: [] for k in cell.inputs}
        self.output_nodes = {k: [] for k in cell.outputs}
        self.state_nodes = {k: [] for k in cell.states}
        copied_elsewhere = set(shared) | set(prev) | {id(ph.node) for ph in cell.inputs.values()}
        copy_body = _body_copier(cell, body, copied_elsewhere, roles, order)
        for t in range(self.steps):
            memo = dict(shared)  # parameters map to themselves
            memo.update(prev)  # the delay edge: a state reads step t-1's next state
            for k, ph in cell.inputs.items():  # step t's slice of each input sequence
                memo[id(ph.node)] = Node("input", name=k, shape=ph.node.shape,
                                         dtype=ph.node.dtype, step=t, origin=ph.node,
                                         role="input")
                self.input_nodes[k].append(memo[id(ph.node)])
                order.append(memo[id(ph.node)])
            # every other node n: memo[id(n)] = Node(n.op, (memo[id(i)] for i in n.inputs),
            # ..., step=t, origin=n), in the body's order (so each input is copied first)
            copy_body(memo, t)
            prev = self._step_ends(t, memo, prev, nexts, order)  # outputs; states for t+1
        self.nodes = order
        self.graph = self._as_graph(cell_graph, order)
        compile_schedule(self)  # derived once: what every run executes (compile.py)

    def _shared_nodes(self, body, order: list) -> dict:
        """The batch-free part of the cell, once: parameters and constants are their own
        copy, and a node computed from them alone (``W.T``) one copy shared by every step."""
        cell = self.cell
        leaves = cell.leaf_tensors()
        batched = self._cell_graph._batched
        param_ids = {id(t.node): k for k, t in cell.parameters().items()}
        shared: dict[int, Node] = {}  # cell node id -> unrolled node (step None)
        self.param_nodes = {}
        self.const_values: dict[int, np.ndarray] = {}
        for n in body:
            if id(n) in batched:
                continue
            if n.is_leaf:
                shared[id(n)] = n
                if id(n) in param_ids:
                    self.param_nodes[param_ids[id(n)]] = n
                else:
                    self.const_values[id(n)] = leaves[id(n)].data
            else:
                shared[id(n)] = n.replace(
                    inputs=tuple(shared[id(i)] for i in n.inputs), origin=n, role="shared"
                )
            order.append(shared[id(n)])
        # in the cell's order (named_parameters(): PyTorch's for the cells of nn), which
        # the step and textbook views list them in
        rank = {k: i for i, k in enumerate(cell.parameters())}
        self.param_nodes = dict(sorted(self.param_nodes.items(), key=lambda kv: rank[kv[0]]))
        self.mask_nodes: list[Node] = []
        self._kept_ids: set = set()  # the masked net's "keep the state" where nodes
        return shared

    def _step_ends(self, t: int, memo: dict, prev: dict, nexts: dict, order: list) -> dict:
        """Record step t's outputs and next states; return the memo entries of step t+1's
        states. A masked net (``lengths=``) adds ``where`` nodes here: past its length a
        sequence outputs zeros and keeps its state."""
        cell = self.cell
        masks: dict = {}  # one mask per rank: (B,), (B, 1), (B, 1, 1)...

        def mask_for(shape):
            rank = len(shape)
            if rank not in masks:
                masks[rank] = Node("const", name="mask", shape=(1,) * rank, dtype="bool",
                                   step=t, role="mask")
                self.mask_nodes.append(masks[rank])
                order.append(masks[rank])
            return masks[rank]

        for k, o in cell.outputs.items():
            node = memo[id(o.node)]
            if self.masked:
                mask = mask_for(node.shape)
                zero = Node("const", shape=(), dtype="float64", step=t, role="const")
                self.const_values[id(zero)] = np.zeros(())
                order.append(zero)
                node = Node("where", (mask, node, zero), {}, f"{k}_masked", node.shape,
                            node.dtype, step=t, role="output")
                order.append(node)
            self.output_nodes[k].append(node)
        nxt = {}
        for s, st in cell.states.items():
            node = memo[id(nexts[s])]
            if self.masked:
                mask = mask_for(node.shape)
                node = Node("where", (mask, node, prev[id(st.node)]), {}, f"{s}_kept",
                            node.shape, node.dtype, step=t, role="next_state")
                self._kept_ids.add(id(node))
                order.append(node)
            self.state_nodes[s].append(node)
            nxt[id(st.node)] = node
        return nxt

    def _as_graph(self, cell_graph, order: list) -> Graph:
        """The unrolled nodes as a Graph: a copy is named after its cell node and step
        (``h_next@3``), and is batched where its cell node is."""
        roots = [n for ns in self.output_nodes.values() for n in ns]
        roots += [ns[-1] for ns in self.state_nodes.values()]
        in_cell = cell_graph._index
        batched_ids = set()
        add = batched_ids.add
        for n in order:
            if n.origin is not None and id(n.origin) in in_cell:
                if id(n.origin) in cell_graph._batched:
                    add(id(n))
            elif n.step is not None or n.role in ("init", "mask"):
                add(id(n))
        graph = Graph(roots, order=order, batched=batched_ids)
        graph._given_names = _CopyNames(graph, cell_graph)
        return graph

    def slot(self, node) -> int:
        """Index of ``node`` in the schedule (and in a run's value and gradient lists).

        Parameters
        ----------
        node : Node, Tensor or str
            A node of the unrolled graph (``net.nodes``, ``net.graph.nodes``,
            ``net.output_nodes``), a parameter tensor, or a name as :meth:`Run.value`
            takes it: a display name as ``print(net.graph)`` shows it (``"h_next@0"``,
            ``"W"``) or a member's name at a step (``"h@t"``, ``"x_t"``, ``"h_init"``).

        Returns
        -------
        int
            The slot: ``run.values[slot]`` and ``run.grads[slot]`` are the node's.

        Raises
        ------
        GraphError
            ``node`` is not a node of this net (a cell's own placeholder, say) or no node
            has that name; the message names it and lists the accepted forms (with close
            names, where there are any).

        Examples
        --------
        >>> import unrollgraph as ug
        >>> cell = ug.Cell("rnn")
        >>> x, h = cell.input("x", (2,)), cell.state("h", (2,))
        >>> cell.feedback(h, ug.tanh(x + h))
        >>> net = ug.unroll(cell, steps=3)
        >>> net.slot("h@1") == net.slot(net.state_nodes["h"][1])
        True
        >>> net.slot("hh@1")
        Traceback (most recent call last):
        ...
        unrollgraph.errors.GraphError: net.slot('hh@1'): no node of the unrolled graph ...
        """
        if isinstance(node, Node):
            s = self._slot.get(id(node))
            if s is not None:
                return s
        return NetNames(self)._slot_of(node, "slot")

    def is_cut(self, node: Node) -> bool:
        """True if truncation keeps gradient away from ``node`` (it is drawn greyed)."""
        return (
            self.truncate is not None
            and node.step is not None
            and node.step < self.steps - self.truncate
        )

    # -- calling: the run itself is run.py's -------------------------------------------------
    def __call__(self, xs=None, state=None, lengths=None):
        """Run the unrolled net on a batch.

        Parameters
        ----------
        xs : array_like or Tensor, shape (T, B, ...), or dict name -> such
            Per-step inputs. A Tensor that requires grad receives ``.grad`` after backward.
            Left out (or None) for a cell without inputs: ``net()``.
        state : array, Tensor or tuple, optional
            Initial state(s) shaped (B, ...), in declaration order; the cell's init otherwise.
        lengths : sequence of int, optional
            Length of each sequence in the batch; steps past a sequence's length leave its
            state unchanged and give zero outputs (so they add nothing to a sum-type loss).
            Whatever the padding holds is never computed on (those steps run on a copy of
            the sequence's last real input), so padded steps contribute exactly zero gradient:
            the result equals running each sequence alone at its own length.

        Returns
        -------
        outputs : Tensor (T, B, ...) for a one-output cell, else dict name -> Tensor
            Of the cell's float type (:attr:`Cell.dtype`), as the final states.
        state : Tensor for a one-state cell, else tuple in declaration order

        Raises
        ------
        ShapeError
            An input, initial state or ``lengths`` of the wrong shape (the message names it,
            with the shape expected).
        CellError
            Missing or unknown inputs or states.
        DTypeError
            Data that are not real numbers; a float64 input or initial state for a float32
            cell (numbers, lists and integer arrays take the cell's type).

        The arrays given are copied, never changed (docs/cells.md).
        """
        self._check_cell()
        if lengths is not None and not self.masked:
            if self._masked_twin is None:
                self._masked_twin = Unrolled(self.cell, self.steps, self.truncate, masked=True,
                                             keep=self.keep, checkpoint=self.checkpoint)
            out = self._masked_twin(xs, state=state, lengths=lengths)
            self.last_run = self._masked_twin.last_run
            return out
        return call(self, xs, state, lengths)

    def __str__(self) -> str:
        return str(self.graph)

    def __repr__(self) -> str:
        return (
            f"<Unrolled {self.cell.name!r}: T={self.steps}, {len(self.nodes)} nodes, "
            f"{len(self.param_nodes)} shared params"
            + (f", truncate={self.truncate}" if self.truncate else "")
            + (f", checkpoint={self.checkpoint}" if self.checkpoint else "") + ">"
        )

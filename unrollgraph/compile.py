"""Compiling a schedule from an unrolled graph.

The unrolled graph (:mod:`unrollgraph.unroll`) is the source of truth; this module derives
from it, once per net, everything a run executes: the program (one entry per op node: its
slot, its input slots, its forward, one VJP per input, its attributes, its step), the slots a
lean run may drop, the time-batched part of each step, the per-step templates
(:mod:`unrollgraph.schedule`) and, per set of slots that need a gradient, the backward
program. None of it changes the graph; a run (:mod:`unrollgraph.run`) only reads it.
docs/architecture.md explains each speed-up.
"""

from __future__ import annotations

import numpy as np

from .graph import LEAF_OPS, gc_paused
from .ops import get_op
from .schedule import BufferPool, StepTemplates, flush_program, plan_time_batching

__all__ = ["compile_schedule", "forward_steps", "late_frees", "stand_ins", "backward_program",
           "plain_templates", "filed_rows", "flush_after_steps"]


def compile_schedule(net) -> None:
    slot = net._slot = net.graph._index  # id(node) -> its slot: its place in the graph
    net._prog = prog = _program(net.nodes, slot)
    net._param_slots = {k: slot[id(n)] for k, n in net.param_nodes.items()}
    net._used_params = {k: p for k, p in net.cell._params.items()
                         if k in net._param_slots}
    net._input_slots = {k: [slot[id(n)] for n in ns] for k, ns in net.input_nodes.items()}
    net._init_slots = {k: slot[id(n)] for k, n in net.init_nodes.items()}
    net._output_slots = {k: [slot[id(n)] for n in ns] for k, ns in net.output_nodes.items()}
    net._state_slots = {k: [slot[id(n)] for n in ns] for k, ns in net.state_nodes.items()}
    net._const_slots = [(slot[i], v) for i, v in net.const_values.items() if i in slot]
    net._const_only = [s for s, _ in net._const_slots]
    net._mask_slots = [slot[id(n)] for n in net.mask_nodes]
    net._shared_prog = [e for e in prog if e[5] is None]
    net._row_major = _row_major_operands(net, prog)
    # per-step blocks of contiguous slots, and the state slots each step reads
    first: dict = {}
    count: dict = {}
    for i, step in enumerate([n.step for n in net.nodes]):
        if step is not None:
            if step in count:
                count[step] += 1
            else:
                first[step], count[step] = i, 1
    blocks = [(first[t], count[t]) for t in range(net.steps)]
    names = list(net.cell.states)
    state_in = [tuple(net._init_slots[k] for k in names)] + [
        tuple(net._state_slots[k][t - 1] for k in names) for t in range(1, net.steps)
    ]
    net._unread = _unread_slots(net, prog)
    # each state's value before its mask (the state itself in an unmasked net); a state
    # passed on from another (h1 <- h0) is the value that one's step computed
    def before_mask(n):
        while id(n) in net._kept_ids:
            n = n.inputs[1]
        return slot[id(n)]

    net._state_pre_slots = {k: [before_mask(n) for n in ns]
                             for k, ns in net.state_nodes.items()}
    # slots whose gradients Run.state_grads reads (a lean run keeps them only in the second
    # backward pass that state_grads makes: keeping them in the first would double BPTT's memory)
    net._kept_grads = frozenset(
        s for slots in list(net._state_slots.values()) + list(net._output_slots.values())
        + list(net._state_pre_slots.values()) for s in slots)
    outputs = {s for slots in net._output_slots.values() for s in slots}
    net._unread_by_step = [[] for _ in range(net.steps)]
    for s in net._unread:
        step = net.nodes[s].step
        if step is not None and s not in outputs:
            net._unread_by_step[step].append(s)
    net._time_batch = _plan_time_batching(net)
    skip = frozenset(s for tb in net._time_batch for s in tb.slots)
    # block offsets whose gradients a lean run's state_grads pass keeps: states and outputs
    # (and, in a masked net, each state's value before its mask)
    keep_grads = frozenset(
        s - blocks[net.nodes[s].step][0] for s in net._kept_grads
        if net.nodes[s].step is not None
    )
    batched = net.graph._batched
    shapes = []  # per slot: (shape, batched), one object per distinct pair
    same: dict = {}
    for n in net.nodes:
        pair = (None if n.shape is None else tuple(n.shape), id(n) in batched)
        shapes.append(same.setdefault(pair, pair))
    seeded = frozenset(
        s for slots in list(net._output_slots.values()) + list(net._state_slots.values())
        for s in slots
    )
    net._templates = StepTemplates(prog, blocks, state_in, skip, keep_grads, shapes,
                                    seeded, frozenset(net._unread) - outputs)
    # the plain path's templates (see plain_templates), made on first use
    net._plain_args = (prog, blocks, state_in, frozenset(), keep_grads, shapes, seeded,
                       frozenset(net._unread) - outputs)
    net._plain_templates = None
    net._step_lists: dict = {}  # (fuse, lean, donate) -> compiled forward of each step
    net._stand_in_cache: dict = {}
    net._late_cache: dict = {}
    net._rows_cache: dict = {}
    net._flush_cache: dict = {}
    net._pool = BufferPool()  # (T, B, ...) arrays reused from run to run
    if not net._templates.ok:
        net._time_batch = []
    # time-batched nodes that a lean run needs no per-step views of (no step reads them,
    # no VJP reads them), and those all of whose per-step values a lean run frees
    unread = set(net._unread)
    step_reads = {i for e in prog if e[5] is not None and e[0] not in skip for i in e[1]}
    net._tb_unviewed = frozenset(
        k for k, tb in enumerate(net._time_batch)
        if all(s in unread and s not in step_reads for s in tb.slots)
    )
    net._tb_unread = [k for k, tb in enumerate(net._time_batch)
                       if all(s in unread for s in tb.slots)]
    # whether a time-batched slice's gradient is stacked on its own, a chunk at a time (a
    # GRU's three input gates: three more arrays per step of a chunk, see run._chunk_steps)
    net._tb_sliced = any(tb.op == "getitem" for tb in net._time_batch)
    net._broadcast = _broadcast_operands(net, prog, skip) if net._templates.ok else ()
    # small batches: one call for an op on several slices (an LSTM's three sigmoids)
    # beats three; large ones: contiguous slices beat fewer calls
    net._fuse_size = net._templates.fusable() if net._templates.ok else 0


def _row_major_operands(net, prog) -> tuple:
    """The shared slots (parameters and values computed once per run) that only the steps
    read, each time as the right operand of a ``matmul`` (an Elman or LSTM step's
    ``h @ W_hh.T``): the forward pass multiplies by a row-major copy of such a value when it
    is a column-major view (``W.T``), which BLAS multiplies by faster
    (:func:`unrollgraph.run.row_major_operands`)."""
    shared = {e[0] for e in prog if e[5] is None} | set(net._param_slots.values())
    nodes = net.nodes
    ok = dict.fromkeys(shared, False)
    for out, ins, _fwd, _vjps, _kw, step in prog:
        for k, i in enumerate(ins):
            if i in ok:
                if step is None or k != 1 or nodes[out].op != "matmul" or ins[0] == i:
                    ok[i] = None  # read otherwise: its layout stays
                elif ok[i] is False:
                    ok[i] = True
    return tuple(sorted(s for s, v in ok.items() if v))


def _broadcast_operands(net, prog, skip) -> tuple:
    """``(slot, reader)`` for each shared slot (a parameter, a value computed once per run)
    that only the steps' adds read (outside the time-batched part, ``skip``) and that has
    fewer axes than the batched sum it is added into (a bias ``b_hh`` added to
    ``h @ W_hh.T``): ``reader`` is one of those adds, whose shape a run's copy of the
    value broadcast to the batch takes (:func:`unrollgraph.run.broadcast_operands`)."""
    shared = {e[0] for e in prog if e[5] is None} | set(net._param_slots.values())
    nodes = net.nodes
    batched = net.graph._batched
    found: dict = {}  # slot -> an add reading it, or None: read otherwise
    for out, ins, _fwd, _vjps, _kw, step in prog:
        n = nodes[out]
        for i in ins:
            prev = found.get(i, False)
            if i not in shared or prev is None:
                continue
            m = nodes[i]
            found[i] = (out if prev is False else prev) if (
                step is not None and out not in skip and n.op == "add"
                and id(n) in batched and id(m) not in batched
                and n.shape is not None and m.shape is not None
                and 0 < len(m.shape) < len(n.shape)
                and tuple(n.shape[len(n.shape) - len(m.shape):]) == tuple(m.shape)
                and (prev is False or tuple(nodes[prev].shape[1:]) == tuple(n.shape[1:]))
            ) else None
    return tuple(sorted((s, r) for s, r in found.items() if r is not None))


def _program(nodes, slot) -> list:
    """``(out, ins, forward, vjps, attrs, step)`` for every op node, in schedule order. The
    registry is read once per op and arity: the T copies of a cell node share one entry's
    functions (and the node's attributes, which are never modified)."""
    prog = []
    append = prog.append
    funcs: dict = {}  # (op, arity) -> (forward, per-input VJPs)
    for out, n in enumerate(nodes):
        op = n.op
        if op in LEAF_OPS:
            continue
        ins = tuple([slot[id(i)] for i in n.inputs])
        f = funcs.get((op, len(ins)))
        if f is None:
            entry = get_op(op)
            f = funcs[op, len(ins)] = (entry.forward, tuple(entry.input_vjp(k)
                                                            for k in range(len(ins))))
        append((out, ins, f[0], f[1], n.attrs, n.step))
    return prog


def plain_templates(net):
    """The step templates of the plain path (None if the steps do not share a shape).

    The plain path computes everything a step needs inside the step (no time-batched input
    projection) and adds each step's part of a shared weight's gradient into it in place
    (no parts filed for a flush), as a hand-written loop does: at small sizes the stacking
    and the extra calls of the batched devices cost more than they save
    (``run._plain_path`` chooses)."""
    tpl = net._plain_templates
    if tpl is None:
        with gc_paused():
            tpl = StepTemplates(*net._plain_args, defer=False)
        tpl.fuse_size = tpl.fusable() if tpl.ok else 0
        net._plain_templates = tpl
    return tpl if tpl.ok else None


def forward_steps(net, fuse: bool, lean: bool, donate: bool, rows: bool = False,
                  plain: bool = False) -> list:
    """The compiled forward of every step, ``(function, first slot, state slots)``.

    ``rows`` (lean and donate only): the steps compute the outputs straight into the rows
    of the run's output arrays (see :meth:`StepTemplates.forward_fn`); a net whose outputs
    are not all computed inside the steps gets no such list: ``None``. ``plain``: the
    steps of the plain path (:func:`plain_templates`)."""
    tpl = plain_templates(net) if plain else net._templates
    fuse_size = tpl.fuse_size if plain else net._fuse_size
    key = (fuse and bool(fuse_size), lean, lean and donate, rows and lean and donate, plain)
    steps = net._step_lists.get(key)
    if steps is None:
        outs = None
        if key[3]:
            outs = tpl.output_offsets(list(net._output_slots.values()))
            if outs is None:
                return None
        with gc_paused():  # T entries made once (see gc_paused)
            steps = net._step_lists.setdefault(key, [  # one list per key, even with threads
                (tpl.forward_fn(t, *key[:3], outs), tpl.blocks[t][0], tpl.state_in[t])
                for t in range(net.steps)
            ])
    return steps


def late_frees(net, steps, plain: bool = False) -> list:
    """Per step, the unread slots its lean function leaves in place (read by the next
    step, or computed outside it): the run frees them after the next step."""
    late = net._late_cache.get(id(steps))
    if late is None:
        unviewed = () if plain else {s for k in net._tb_unviewed
                                     for s in net._time_batch[k].slots}
        late = net._late_cache[id(steps)] = [
            [s for s in net._unread_by_step[t] if s - b not in fn.freed
             and s not in unviewed]
            for t, (fn, b, _s) in enumerate(steps)
        ]
    return late


def filed_rows(net, steps) -> tuple:
    """The producer offsets of the backward ``steps`` (from :func:`backward_program`) that
    compute the parts they file for a flush into rows of a chunk's buffer
    (:class:`~unrollgraph.schedule.GradRows`), in a fixed order."""
    rows = net._rows_cache.get(id(steps))
    if rows is None:
        found: set = set()
        for fn, _b, _s in steps:
            found |= fn.rows
        rows = net._rows_cache[id(steps)] = (tuple(sorted(found)), steps)
    return rows[0]


def flush_after_steps(net, order: tuple, shared: list):
    """The straight-line function (:func:`~unrollgraph.schedule.flush_program`) that
    flushes the parts filed under the keys ``order``, backpropagates through the
    time-batched nodes and then through the ``shared`` entries of a backward program
    (:func:`backward_program`), made once per net, order and program; None where the
    generic loops run."""
    key = (order, id(shared))  # (the program lives on the net: its id is its own)
    cache = net._flush_cache
    fn = cache.get(key, False)
    if fn is False:
        with gc_paused():
            fn = flush_program(net._templates, net._time_batch, order, net._input_slots,
                               shared)
        fn = cache.setdefault(key, fn)
    return fn


def stand_ins(net, batch: int, dtype) -> list:
    """Per block offset, the ``_Freed`` stand-in a lean step leaves for a value it drops
    (shared by all steps: only its shape and dtype are read)."""
    key = (batch, dtype)
    out = net._stand_in_cache.get(key)
    if out is None:
        first, length = net._templates.blocks[0]
        out = []
        for n in net.nodes[first:first + length]:
            shape = tuple(n.shape or ())
            if id(n) in net.graph._batched and shape:
                shape = (batch,) + shape[1:]
            out.append(_Freed(shape, dtype))
        net._stand_in_cache = {key: out}  # one batch size at a time is the common case
    return out


def _unread_slots(net, prog) -> list:
    """Op-node slots whose values no VJP reads and that are neither an output nor a state
    (freed by ``keep="needed"``). A net that runs the forward pass only (``forward_only``:
    checkpointing's forward pass over a segment) drops every value a step computes but its
    states and outputs."""
    # a run keeps every output and state it returns or reports (the outputs are stacked
    # after the run, Run.value and state_grads read the states): never a stand-in
    kept = {s for slots in list(net._state_slots.values()) + list(
        net._output_slots.values()) for s in slots}
    if getattr(net, "forward_only", False):
        return [e[0] for e in prog if e[5] is not None and e[0] not in kept]
    read = [False] * len(net.nodes)
    nodes = net.nodes
    reads_of: dict = {}  # (op, arity) -> what its VJPs read
    for out, ins, _fwd, _vjps, _kw, _step in prog:
        key = (nodes[out].op, len(ins))
        reads = reads_of.get(key)
        if reads is None:
            reads = get_op(key[0]).reads
            if reads is None:
                reads = ("ans",) + tuple(range(len(ins)))
            reads_of[key] = reads
        for r in reads:
            read[out if r == "ans" else ins[r]] = True
    return [e[0] for e in prog if not read[e[0]] and e[0] not in kept]


def _plan_time_batching(net) -> list:
    cell = net.cell
    body = net._cell_graph.nodes
    state_dep: set = set()
    for n in body:
        if n.op == "state" or any(id(i) in state_dep for i in n.inputs):
            state_dep.add(id(n))
    clones: dict = {}
    shared_slot: dict = {}
    for i, n in enumerate(net.nodes):
        if n.origin is None:
            continue
        if n.step is None:
            shared_slot[id(n.origin)] = i
        else:
            clones.setdefault(id(n.origin), []).append(i)
    # shared leaves (params, constants) are their own origin
    for n in body:
        if id(n) in net._slot and n.is_leaf:
            shared_slot[id(n)] = net._slot[id(n)]
    input_names = {id(t.node): k for k, t in cell.inputs.items()}
    shapes = {id(n): n.shape for n in body}
    return plan_time_batching(body, net._cell_graph._batched, state_dep, shapes, clones,
                              input_names, shared_slot, get_op)


def backward_program(net, needs: tuple, drop: bool = False, keep: bool = False,
                     plain: bool = False) -> list:
    """Entries in reverse order with only the VJPs that lead to something needing grad;
    ``drop``: the compiled steps drop each intermediate gradient once used (``keep``: except
    those of the states and outputs, for :meth:`Run.state_grads`); ``plain``: the steps
    of the plain path (:func:`plain_templates`)."""
    key = (needs, drop, keep, plain)
    if key in net._bprogs:
        return net._bprogs[key]
    with gc_paused():  # a few entries per node, made once (see gc_paused)
        return _backward_program(net, key)


def _backward_program(net, key) -> tuple:
    needs, drop, keep, plain = key
    want = [False] * len(net.nodes)
    for i in needs:
        want[i] = True
    first = 0 if net.truncate is None else net.steps - net.truncate
    for out, ins, _fwd, vjps, _kw, step in net._prog:
        if step is not None and step < first:
            continue  # cut by truncation
        # (through the inputs with a derivative: a where's condition passes no gradient)
        for i, f in zip(ins, vjps):
            if f is not None and want[i]:
                want[out] = True
                break
    steps = None
    tpl = plain_templates(net) if plain else net._templates
    if tpl is not None and tpl.ok:
        steps = [
            (tpl.backward_fn(t, want, drop, keep), tpl.blocks[t][0], tpl.state_in[t])
            for t in range(net.steps - 1, first - 1, -1)
        ]
    shared = _reverse_entries(reversed(net._shared_prog), want)
    bprog = _Program(net._prog, want) if steps is not None else _reverse_entries(
        reversed(net._prog), want)
    net._bprogs[key] = (bprog, want, steps, shared)
    return net._bprogs[key]


def _reverse_entries(entries, want) -> list:
    """The backward program's entries ``(out, ins, ((input, vjp), ...), kw, step)`` of the
    forward ``entries`` given in reverse order: those that lead to a slot in ``want``."""
    bprog = []
    for out, ins, _fwd, vjps, kw, step in entries:
        if not want[out]:
            continue
        fns = tuple([(i, f) for i, f in zip(ins, vjps) if f is not None and want[i]])
        if fns:
            bprog.append((out, ins, fns, kw, step))
    return bprog


class _Program:
    """The whole backward program, made on first use: a net with compiled step functions
    reads it only for the generic reference walk and per-step contributions."""

    __slots__ = ("_prog", "_want", "_entries")

    def __init__(self, prog, want):
        self._prog, self._want, self._entries = prog, want, None

    def _list(self) -> list:
        if self._entries is None:
            with gc_paused():
                self._entries = _reverse_entries(reversed(self._prog), self._want)
        return self._entries

    def __iter__(self):
        return iter(self._list())

    def __len__(self) -> int:
        return len(self._list())

    def __getitem__(self, k):
        return self._list()[k]


class _Freed:
    """Stands in for a value freed by ``keep="needed"``: its shape and dtype remain."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __repr__(self) -> str:
        return f"<freed {self.dtype} array of shape {self.shape}>"

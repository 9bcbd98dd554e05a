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

from .ops import get_op
from .schedule import BufferPool, StepTemplates, plan_time_batching

__all__ = ["compile_schedule", "forward_steps", "late_frees", "stand_ins", "backward_program"]


def compile_schedule(net) -> None:
    slot = {id(n): i for i, n in enumerate(net.nodes)}
    net._slot = slot
    prog = []
    for n in net.nodes:
        if n.is_leaf:
            continue
        op = get_op(n.op)
        ins = tuple(slot[id(i)] for i in n.inputs)
        vjps = tuple(op.input_vjp(k) for k in range(len(ins)))
        prog.append((slot[id(n)], ins, op.forward, vjps, dict(n.attrs), n.step))
    net._prog = prog
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
    # per-step blocks of contiguous slots, and the state slots each step reads
    first: dict = {}
    count: dict = {}
    for i, n in enumerate(net.nodes):
        if n.step is not None:
            first.setdefault(n.step, i)
            count[n.step] = count.get(n.step, 0) + 1
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
    shapes = [(None if n.shape is None else tuple(n.shape), id(n) in batched)
              for n in net.nodes]
    seeded = frozenset(
        s for slots in list(net._output_slots.values()) + list(net._state_slots.values())
        for s in slots
    )
    net._templates = StepTemplates(prog, blocks, state_in, skip, keep_grads, shapes,
                                    seeded, frozenset(net._unread) - outputs)
    net._step_lists: dict = {}  # (fuse, lean, donate) -> compiled forward of each step
    net._stand_in_cache: dict = {}
    net._late_cache: dict = {}
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
    # small batches: one call for an op on several slices (an LSTM's three sigmoids)
    # beats three; large ones: contiguous slices beat fewer calls
    net._fuse_size = net._templates.fusable() if net._templates.ok else 0


def forward_steps(net, fuse: bool, lean: bool, donate: bool, rows: bool = False) -> list:
    """The compiled forward of every step, ``(function, first slot, state slots)``.

    ``rows`` (lean and donate only): the steps compute the outputs straight into the rows
    of the run's output arrays (see :meth:`StepTemplates.forward_fn`); a net whose outputs
    are not all computed inside the steps gets no such list: ``None``."""
    key = (fuse and bool(net._fuse_size), lean, lean and donate, rows and lean and donate)
    steps = net._step_lists.get(key)
    if steps is None:
        tpl = net._templates
        outs = None
        if key[3]:
            outs = tpl.output_offsets(list(net._output_slots.values()))
            if outs is None:
                return None
        steps = net._step_lists.setdefault(key, [  # one list per key, even with threads
            (tpl.forward_fn(t, *key[:3], outs), tpl.blocks[t][0], tpl.state_in[t])
            for t in range(net.steps)
        ])
    return steps


def late_frees(net, steps) -> list:
    """Per step, the unread slots its lean function leaves in place (read by the next
    step, or computed outside it): the run frees them after the next step."""
    late = net._late_cache.get(id(steps))
    if late is None:
        unviewed = {s for k in net._tb_unviewed for s in net._time_batch[k].slots}
        late = net._late_cache[id(steps)] = [
            [s for s in net._unread_by_step[t] if s - b not in fn.freed
             and s not in unviewed]
            for t, (fn, b, _s) in enumerate(steps)
        ]
    return late


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
    (freed by ``keep="needed"``)."""
    read = [False] * len(net.nodes)
    for out, ins, _fwd, _vjps, _kw, _step in prog:
        reads = get_op(net.nodes[out].op).reads
        if reads is None:
            reads = ("ans",) + tuple(range(len(ins)))
        for r in reads:
            read[out if r == "ans" else ins[r]] = True
    # a run keeps every output and state it returns or reports (the outputs are stacked
    # after the run, Run.value and state_grads read the states): never a stand-in
    kept = {s for slots in list(net._state_slots.values()) + list(
        net._output_slots.values()) for s in slots}
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


def backward_program(net, needs: tuple, drop: bool = False, keep: bool = False) -> list:
    """Entries in reverse order with only the VJPs that lead to something needing grad;
    ``drop``: the compiled steps drop each intermediate gradient once used (``keep``: except
    those of the states and outputs, for :meth:`Run.state_grads`)."""
    key = (needs, drop, keep)
    if key in net._bprogs:
        return net._bprogs[key]
    want = [False] * len(net.nodes)
    for i in needs:
        want[i] = True
    for e in net._prog:
        out, ins, vjps, step = e[0], e[1], e[3], e[5]
        if net.truncate is not None and step is not None and \
                step < net.steps - net.truncate:
            continue
        # (through the inputs with a derivative: a where's condition passes no gradient)
        if any(want[i] for i, f in zip(ins, vjps) if f is not None):
            want[out] = True
    bprog = []
    for out, ins, _fwd, vjps, kw, step in reversed(net._prog):
        if not want[out]:
            continue
        fns = tuple((i, f) for i, f in zip(ins, vjps) if f is not None and want[i])
        if fns:
            bprog.append((out, ins, fns, kw, step))
    steps = None
    tpl = net._templates
    if tpl.ok:
        first = 0 if net.truncate is None else net.steps - net.truncate
        steps = [
            (tpl.backward_fn(t, want, drop, keep), tpl.blocks[t][0], tpl.state_in[t])
            for t in range(net.steps - 1, first - 1, -1)
        ]
    shared = [e for e in bprog if e[4] is None]
    net._bprogs[key] = (bprog, want, steps, shared)
    return net._bprogs[key]


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

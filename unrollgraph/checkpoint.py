"""Gradient checkpointing through time: keep every k-th state, recompute the rest.

``ug.unroll(cell, steps=T, checkpoint=k)`` runs the unrolled graph in segments of k steps
(Chen, Xu, Zhang and Guestrin 2016, "Training Deep Nets with Sublinear Memory Cost"). The
forward pass keeps only the outputs and the state entering each segment; the backward pass
walks the segments from the last to the first, recomputes each one's forward pass from its
kept state, and backpropagates through it with the gradient of the state it handed on. The
memory of the activations is then about ``T/k + 2k`` steps' worth instead of ``T`` (least at
``k = sqrt(T)``: ``checkpoint="sqrt"``), for one more forward pass.

What a run holds beyond that is kept out: the run maps only the slots it keeps (no list over
all T steps' slots), reads its outputs' steps as rows of the arrays the call returned, keeps
a state that is an output (an RNN's h) as such a row, gives its segments no buffer pool
(their arrays go back to the allocator when a segment ends), flushes a segment's stacked
per-step gradients once at its end (or half of it at a time: :data:`SEGMENT_CHUNKS`), and
sums the parameters' gradients in place across segments. A segment whose backward pass reads
only values the run kept (the Elman RNN's: its outputs, inputs and entering state) is not
recomputed at all.

What the time is spent on is kept to the recomputation: the forward pass runs each segment
compiled for the forward pass alone (:func:`_forward_type`: every value but the outputs and
the state handed on is dropped once read, and the steps compute in place), and the last
segment, whose backward pass comes first, is run keeping what that pass reads and held for
it instead of recomputed (the peak is reached during a segment's backward pass, holding one
segment's activations, anyway). The segments are aligned to the end (:func:`_segments`): the
last one is a full k steps, the first one the short one, so the fewest steps are recomputed.

The recomputation itself is teacher-forced (:func:`_teacher_forced`) where a state is also an
output (an LSTM's and a GRU's h, :func:`_held_states`): the run holds that state for every
step, as rows of the output it returned, so a value of a step that depends on earlier steps
only through such states (and the inputs, the parameters, the other values of its step that
do) is computed for the whole segment at once, as the input projection is: one product
``h W_hhᵀ`` of all the segment's rows, each gate's ops on ``(k, B, ...)`` arrays; only what
depends on a state that is not held (the LSTM's c, and what reads it) runs step by step, and
the outputs are the kept rows themselves. The values then land in the segment's slots as
row views of those arrays, and the segment's ordinary backward pass reads them. The numbers
are the steps' own, but for the rounding of a product: BLAS may sum a product of ``k B``
rows in another order than ``k`` products of ``B`` rows (of one row, say), so the gradients
equal full BPTT's to rounding (1e-12 relative, as any two executors of the library); and
:meth:`CheckpointedRun.full` recomputes such a segment's gradients teacher-forced too, so it
still reproduces the run's bit for bit. A stacked value that only other stacked values read
goes once they have run (the sum of the gates), and a kept slice is copied out of its
source, so the recomputation holds no more than the steps would. It falls back to the steps
where it does not apply: the generic node-by-node path (anomaly mode), a masked run
(``lengths=``), the plain path of short segments (see :func:`~unrollgraph.run._plain_path`),
or a cell with no value to batch beyond the input projection.

A segment is an unrolled net of k steps of the same cell (built once per length and
truncation, sharing the cell's parameters), run with the same compiled schedule as any net.
The graph of the T-step net is unchanged: diagrams and ``Run.value``/``Run.grad`` read a
recomputation of the whole run (:meth:`CheckpointedRun.full`), stitched from the same
segments so that it reproduces the checkpointed run's numbers bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from .compile import _Freed, backward_program, stand_ins
from .errors import CellError, UnrollGraphError
from .graph import Node
from .run import (
    Run,
    _acc,
    _plan,
    _read_only,
    broadcast_operands,
    row_major_operands,
)
from .schedule import _POOLED_UFUNCS, _ref, _time_batched_kw, time_batched_chunk
from .tensor import _FLAGS, _MODE, Tensor, _dtype_name

__all__ = ["CheckpointedRun", "resolve_checkpoint", "kept_steps"]


def resolve_checkpoint(checkpoint, steps: int):
    """The segment length for ``unroll(..., checkpoint=)``: an int k, ``"sqrt"`` for
    ``ceil(sqrt(T))``, or None; None also when ``k >= T`` (one segment: nothing to save).

    Raises
    ------
    CellError
        For anything else, naming the value.

    Examples
    --------
    >>> resolve_checkpoint("sqrt", 10000), resolve_checkpoint(3, 10), resolve_checkpoint(20, 10)
    (100, 3, None)
    """
    if checkpoint is None:
        return None
    if isinstance(checkpoint, str) and checkpoint == "sqrt":
        k = math.isqrt(steps - 1) + 1  # ceil(sqrt(T))
    elif isinstance(checkpoint, (bool, np.bool_)) or not isinstance(
            checkpoint, (int, np.integer)) or checkpoint < 1:
        raise CellError(
            f"unroll(): checkpoint must be a positive int (keep the state every k steps), "
            f"'sqrt' or None, got {checkpoint!r}"
        )
    else:
        k = int(checkpoint)
    return None if k >= steps else k


def kept_steps(net) -> frozenset:
    """The steps t whose state (after step t) a run of ``net`` keeps under checkpointing:
    the last step's and every k-th before it, counted back from the last (each segment's
    last step: the segments are aligned to the end, see :func:`_segments`); empty for a
    net without ``checkpoint=`` (which keeps every state). Diagrams mark them.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> sorted(kept_steps(ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=8, checkpoint=3)))
    [1, 4, 7]
    """
    k = getattr(net, "checkpoint", None)
    if not k:
        return frozenset()
    return frozenset(range(net.steps - 1, -1, -k))


def _segments(net) -> list:
    """``(first step, end step, segment net key)`` of each segment, in time order. The
    segments are aligned to the end: every one is k steps long but the first, which takes
    what is left (``T - k * (ceil(T / k) - 1)`` steps). The last segment, whose backward
    pass comes first, is held from the forward pass instead of recomputed: a full one
    leaves the fewest steps to recompute (T = 1,000, k = 32: 968 instead of 992). The key
    is ``(length, truncate)``: a segment the truncation cuts through gets its own cut, and
    one it cuts entirely has ``truncate=0``.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> [s[:2] for s in _segments(ug.unroll(ug.nn.RNNCell(2, 3, seed=0), 8, checkpoint=3))]
    [(0, 2), (2, 5), (5, 8)]
    """
    k, T = net.checkpoint, net.steps
    cut = 0 if net.truncate is None else T - net.truncate  # steps before this get no gradient
    out = []
    first = T - (T - 1) // k * k  # the first segment's length: 1 to k
    for a in [0] + list(range(first, T, k)):
        b = a + first if a == 0 else a + k
        out.append((a, b, (b - a, 0 if b <= cut else b - cut if a < cut else None)))
    return out


def _seeds_skip_the_cut(net) -> bool:
    """True if an output or a state is a leaf (an input, the initial state, a parameter) or
    a node shared by every step (``W.T``): the gradient placed on it reaches it even in a
    step that truncation cuts, so the cut segments still take part in the backward pass."""
    slots = list(net._output_slots.values()) + list(net._state_slots.values())
    return any(net.nodes[s].is_leaf or net.nodes[s].step is None for ss in slots for s in ss)


def _held_states(net) -> dict:
    """Per state, the index of the output that is the state itself at every step (an RNN's
    and an LSTM's h), else None: a run keeps such a state as a row of that output."""
    held = net.__dict__.get("_held_states")
    if held is None:
        held = {}
        outs = list(net._output_slots.values())
        for k, slots in net._state_slots.items():
            held[k] = next((n for n, o in enumerate(outs) if o == slots), None)
        net._held_states = held
    return held


def _reads_kept_only(seg) -> bool:
    """Whether the lean backward pass of segment net ``seg`` reads, of the values its steps
    compute, only its outputs (beside its inputs, the state entering it and the shared
    part): every other value a step computes is one no VJP reads (an Elman RNN: the
    backward pass reads tanh's output, the hidden state, and the inputs). A checkpointed
    run keeps those outputs (the call returns them), so it need not recompute such a
    segment for its backward pass (:meth:`CheckpointedRun._place`)."""
    ok = seg.__dict__.get("_reads_kept_only")
    if ok is None:
        unread = set(seg._unread)
        kept = {s for slots in seg._output_slots.values() for s in slots}
        kept |= {s for slots in seg._input_slots.values() for s in slots}
        ok = (seg._templates.ok and not seg.masked and not seg._mask_slots
              and len(seg._tb_unread) == len(seg._time_batch)
              and all(n.step is None or s in unread or s in kept
                      for s, n in enumerate(seg.nodes)))
        seg._reads_kept_only = ok
    return ok


_FORWARD_TYPES: dict = {}


def _forward_type(cls):
    """The subclass of the net class ``cls`` whose nets are compiled to run the forward
    pass only: a lean run of one drops every value but the states and outputs as soon as
    the next step has read it (no backward pass reads them), so that each step computes
    in place in the arrays the step before dropped. The checkpointed forward pass runs
    its segments so: it keeps nothing of them but the outputs and the state handed on."""
    sub = _FORWARD_TYPES.get(cls)
    if sub is None:
        sub = _FORWARD_TYPES.setdefault(
            cls, type(f"ForwardOnly{cls.__name__}", (cls,), {"forward_only": True}))
    return sub


def _segment_net(net, key, forward_only: bool = False):
    """The unrolled net of one segment (built once per length and truncation; and per
    length for the forward pass alone, ``forward_only``: see :func:`_forward_type`)."""
    nets = net._segment_nets
    if forward_only:
        key = (key[0], None, "forward")  # (truncation changes no value)
    seg = nets.get(key)
    if seg is None:
        length, truncate = key[:2]
        cls = _forward_type(type(net)) if forward_only else type(net)
        seg = cls(net.cell, length, truncate=truncate or None, masked=net.masked,
                  keep="needed")
        if truncate == 0:  # every step cut: only gradients placed on leaves get through
            seg.truncate = 0
        seg._whole = net  # its errors name its nodes as the whole net's printout does
        # no buffer pool: a pool keeps a segment's (k, B, ...) arrays between the segments
        # and passes, where freed arrays go back to the allocator, which hands them out
        # again (the input projection's to the backward's stacked gradients)
        seg._pool = None
        seg = nets.setdefault(key, seg)
    return seg


# chunks per segment of a segment's backward (the shared weights' gradients and the
# time-batched nodes' backward, and the time-batched forward, a chunk at a time, see
# run._chunk_steps): the per-step parts held until a chunk is flushed and their stack. A
# flush has a fixed cost (a product and an in-place sum per weight, the stacking calls, the
# bookkeeping around them: about 0.2 ms), which more chunks pay more often (a GRU at
# T = 1,000: three chunks per segment cost 64 flushes more than full BPTT's 32, about
# 12 ms, a tenth of a forward pass), and the parts take memory beside what the segment's
# backward pass holds anyway. A recomputed segment is flushed once, at its end, where its
# parts are small beside its recomputed activations (an LSTM's four gate gradients per step
# beside the eight arrays a step keeps); in two halves where they are not: a segment put in
# place holds no activations of its own (the parts are then the bulk of its backward pass's
# memory), and a net whose time-batched slices stack gradients of their own (a GRU's input
# gates) stacks nine (B, H) arrays per step at a flush. In one chunk either would take
# the activations over 3 sqrt(T) steps' worth at T = 1,000 (benchmarks/checkpoint.py).
# Those halves are of at most SMALL_CHUNK_STEPS steps: longer stacks outgrow the cache (the
# GRU at T = 10,000, k = 100, B = 16: a step 4115 ms with halves of 50 steps, 3942 ms with
# thirds of 34)
SEGMENT_CHUNKS = 1
SMALL_SEGMENT_CHUNKS = 2
SMALL_CHUNK_STEPS = 34


def _segment_chunk(length: int, small: bool = False) -> int:
    """Steps per chunk of a segment of ``length`` steps (0: the segment at once);
    ``small``: in :data:`SMALL_SEGMENT_CHUNKS` chunks or more, of at most
    :data:`SMALL_CHUNK_STEPS` steps, else in :data:`SEGMENT_CHUNKS`.

    Examples
    --------
    >>> _segment_chunk(32), _segment_chunk(32, small=True), _segment_chunk(3, small=True)
    (0, 16, 2)
    >>> _segment_chunk(100, small=True)
    34
    """
    chunks = SEGMENT_CHUNKS
    if small:
        chunks = max(SMALL_SEGMENT_CHUNKS, -(-length // SMALL_CHUNK_STEPS))
    chunk = -(-length // chunks)
    return 0 if chunk >= length else max(chunk, 2)


def _own(v):
    """``v``, or a copy of it if it is a view of a larger array (the same bits)."""
    return v.copy() if type(v) is np.ndarray and v.base is not None and \
        v.base.nbytes > v.nbytes else v


class _Kept:
    """A run's values (or gradients) by slot, holding only the few slots a checkpointed
    run keeps: ``kept[s]`` is None (``default``) for every other slot of the net. It reads
    like a plain run's list (indexing, ``len``, iteration over all slots), which would hold
    one entry per node of all T steps: a checkpointed run's memory must not grow that way.

    Examples
    --------
    >>> kept = _Kept(4)
    >>> kept[2] = "a"
    >>> len(kept), list(kept), kept[3], list(kept.items())
    (4, [None, None, 'a', None], None, [(2, 'a')])
    """

    __slots__ = ("n", "default", "_held")

    def __init__(self, n: int, default=None):
        self.n, self.default, self._held = n, default, {}

    def _check(self, s) -> None:
        if type(s) is not int or not 0 <= s < self.n:
            raise IndexError(f"slot {s!r} is not a slot of this net (0 to {self.n - 1})")

    def __getitem__(self, s):
        v = self._held.get(s, self)
        if v is self:
            self._check(s)
            return self.default
        return v

    def __setitem__(self, s, v) -> None:
        if s not in self._held:
            self._check(s)
        self._held[s] = v

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        held, default = self._held, self.default
        return (held.get(s, default) for s in range(self.n))

    def items(self):
        """``(slot, value)`` of the slots held."""
        return self._held.items()

    def dense(self) -> list:
        """The plain run's form: a list with one entry per slot."""
        return list(self)


def _rows_of(part, whole, a: int) -> bool:
    """Whether ``part`` is the rows ``a, a + 1, ...`` of array ``whole`` (no copy needed).

    Examples
    --------
    >>> w = np.zeros((5, 2))
    >>> _rows_of(w[2:4], w, 2), _rows_of(w[2:4].copy(), w, 2), _rows_of(w[1:3], w, 2)
    (True, False, False)
    """
    return (type(part) is np.ndarray and part.base is not None and part.base is (
        whole.base if whole.base is not None else whole) and part.shape[1:] == whole.shape[1:]
        and part.strides == whole.strides and part.ctypes.data == whole[a:a + 1].ctypes.data)


def _leaf(arr, requires_grad: bool) -> Tensor:
    return Tensor(arr, Node("leaf", shape=arr.shape, dtype=_dtype_name(arr)), (), requires_grad)


class _SegmentRun(Run):
    """The run of one segment. Its backward pass adds the parameters' gradients into the
    sums of the later segments (``params_in``: (slot, array) pairs, arrays the checkpointed
    run owns), in place, chunk by chunk, as a plain run adds its chunks: no second array
    per parameter for the segment's own part."""

    params_in: list = []
    # in the checkpointed run's forward pass: the CheckpointedRun whose output arrays the
    # segment's steps compute their outputs into (see _row_buffers); None: arrays of its own
    rows_of = None
    # in a checkpointed backward pass: (the CheckpointedRun, the segment's index), to
    # recompute the segment teacher-forced where that applies (see _teacher_forced)
    teacher = None
    teacher_forced = False  # whether its forward pass was recomputed so

    def forward(self) -> None:
        tf = self.teacher
        if tf is None or not _teacher_forced(tf[0], tf[1], self):
            super().forward()

    def _row_buffers(self, fr, dtype):
        """As :meth:`Run._row_buffers`, but in the checkpointed forward pass the rows are
        those of the whole run's output arrays, ``(T + 1, B, ...)`` for an output that is
        the state (row 0 the initial state, so a segment's rows start with the state it
        entered with: the row the segment before computed) and ``(T, B, ...)`` otherwise:
        the steps write the outputs the call returns, with no copy per segment."""
        whole = self.rows_of
        if whole is None:
            return super()._row_buffers(fr, dtype)
        net, base, batched, leads = self._row_context()
        a = self.first_step
        T = whole.net.steps
        vals = self.values
        outs, state_rows, arrays = [], [], whole._row_arrays
        for n, (slots, init) in enumerate(zip(net._output_slots.values(), leads)):
            if id(net.nodes[slots[0]]) not in batched:
                return None
            shape = tuple(fr[slots[0] - base].shape)
            v = vals[init] if init is not None else None
            lead = type(v) is np.ndarray and v.shape == shape and v.dtype == dtype
            if len(arrays) == n:  # (the first segment: the arrays of all T steps)
                arrays.append(np.empty((T + lead,) + shape, dtype))
            arr = arrays[n]
            if arr.shape != (T + lead,) + shape or arr.dtype != dtype:
                return super()._row_buffers(fr, dtype)  # (not the layout of the first)
            if lead:
                buf = arr[a:a + len(slots) + 1]
                if a == 0:
                    buf[0] = v
                vals[init] = buf[0]  # (a later segment's: the row it entered with)
                outs.append(buf[1:])
                state_rows.append((buf, (init,) + tuple(slots)))
            else:
                outs.append(arr[a:a + len(slots)])
        self.outputs = outs
        self._pending_rows = tuple(state_rows)
        return outs

    def _seeded(self, want, seeds=None) -> tuple:
        grads, owned = super()._seeded(want, seeds)
        for s, g in self.params_in:
            if grads[s] is not None:  # a seed on the parameter itself (an output that is one)
                g += grads[s]
            grads[s] = g
            owned[s] = True
        return grads, owned


# -- teacher-forced recomputation ------------------------------------------------------------

class _TeacherPlan:
    """How a segment net's steps are recomputed teacher-forced (see :func:`_teacher_plan`):
    per entry of a step (in the step's order, the time-batched nodes left out) its kind,
    ``"out"`` (an output: the kept row), ``"bat"`` (for a chunk of steps at once) or
    ``"seq"`` (step by step), with the references of its inputs (``("b", offset)`` a value
    of the same step, ``("s", j)`` the j-th state entering the step, ``("c", slot)`` a
    shared value) and the op's attributes for a leading time axis; and per block offset
    what it is: a time-batched node (its index), an output (its index), how many batched
    entries read it, whether a step-by-step entry reads it, whether no VJP reads it."""

    __slots__ = ("entries", "tb_at", "out_at", "readers", "seq_reads", "unread", "held")

    def __init__(self, entries, tb_at, out_at, readers, seq_reads, unread, held):
        self.entries, self.tb_at, self.out_at = entries, tb_at, out_at
        self.readers, self.seq_reads, self.unread, self.held = (
            readers, seq_reads, unread, held)


def _teacher_plan(seg, held: dict):
    """The teacher-forced plan of segment net ``seg`` (:class:`_TeacherPlan`, made once per
    net), or None where it does not apply: steps not alike, a masked net, no entry to run
    for a chunk of steps at once, or an output that is not an entry of its step.

    A value of a step is computed for a chunk of steps at once (``"bat"``) where its op
    takes a leading time axis (elementwise ops, a product by a shared matrix, a slice) and
    every input is a shared value, a batched value of the same step, a time-batched node,
    an output (its rows are kept) or a state that is an output (``held``: state name ->
    the output's index; its values entering the chunk's steps are the kept rows before
    them): the run holds all of those for every step before the recomputation starts."""
    plan = seg.__dict__.get("_teacher")
    if plan is not None or "_teacher" in seg.__dict__:
        return plan
    seg._teacher = None
    tpl = seg._templates
    if not tpl.ok or seg.masked or seg._mask_slots or not seg.steps or \
            any(sig is not tpl.sigs[0] for sig in tpl.sigs):
        return None
    base, length = tpl.blocks[0]
    names = list(seg.cell.states)
    state_in = tpl.state_in[0]
    held_j = {j: held[k] for j, k in enumerate(names) if held.get(k) is not None}
    tb_at = {tb.slots[0] - base: k for k, tb in enumerate(seg._time_batch)}
    out_at = {}
    for n, slots in enumerate(seg._output_slots.values()):
        offs = {s - tpl.blocks[t][0] for t, s in enumerate(slots)}
        if len(offs) != 1 or not 0 <= slots[0] - base < length:
            return None
        out_at.setdefault(offs.pop(), n)
    nodes = seg.nodes
    unread = {s - base for s in seg._unread if nodes[s].step == 0}
    kind: dict = {off: "bat" for off in tb_at}
    kind.update({off: "bat" for off in out_at})
    entries = []
    readers: dict = {}
    seq_reads: set = set()
    for out, ins, fwd, _vjps, kw, _step in tpl.step_entries[0]:
        off = out - base
        if off in tb_at:
            continue
        refs = tuple(_ref(i, base, state_in, length) for i in ins)
        if None in refs:
            return None
        if off in out_at:
            entries.append(("out", off, refs, fwd, kw, None))
            continue
        node = nodes[out]
        tkw = _time_batched_kw(node.op, dict(kw))
        ok = tkw is not None and any(r[0] != "c" for r in refs)
        for p, (what, key) in enumerate(refs):
            if not ok:
                break
            if what == "b":
                ok = kind.get(key) == "bat"
            elif what == "s":
                ok = key in held_j
            else:  # shared: broadcast over the steps as over the batch
                shape = nodes[key].shape
                ok = shape is not None and len(shape) <= len(node.shape or ()) and (
                    node.op != "matmul" or (p == 1 and len(shape) == 2))
        if ok and node.op == "matmul" and refs[0][0] == "c":
            ok = False
        kind[off] = "bat" if ok else "seq"
        for what, key in refs:
            if what == "b":
                if ok:
                    readers[key] = readers.get(key, 0) + 1
                else:
                    seq_reads.add(key)
        entries.append(("bat" if ok else "seq", off, refs, fwd, tkw if ok else kw,
                         node.op))
    if not any(e[0] == "bat" for e in entries):
        return None
    plan = _TeacherPlan(tuple(entries), tb_at, out_at, readers, frozenset(seq_reads),
                        frozenset(unread), held_j)
    seg._teacher = plan
    return plan


def _batched_matmul(a, b):
    """``a @ b`` for a stack ``a`` (steps, B, ..., n) and a matrix ``b``: one product of
    all the rows (the product a time-batched input projection makes)."""
    if b.ndim == 2 and a.ndim > 2 and a.flags.c_contiguous:
        return np.matmul(a.reshape(-1, a.shape[-1]), b).reshape(a.shape[:-1] + b.shape[1:])
    return np.matmul(a, b)


def _teacher_forced(ck, i: int, run) -> bool:
    """Recompute segment ``i`` of the checkpointed run ``ck`` in ``run`` teacher-forced (see
    the module docstring): the values its backward pass reads, computed for a chunk of
    steps at once wherever they depend on earlier steps only through states the run kept
    for every step (the outputs' rows), step by step elsewhere. False (nothing kept) where
    the method does not apply: the generic node-by-node path, anomaly mode, the plain path,
    a masked net, steps that are not alike, or nothing to gain (no value a chunk of steps
    computes at once beyond the time-batched input projection)."""
    seg = run.net
    if run.generic_forward or run.generic_backward or run.keep not in ("needed", "all") or \
            _FLAGS.anomaly or _MODE.get().anomaly or run.lengths is not None:
        return False
    plan = _teacher_plan(seg, _held_states(ck.net))
    if plan is None:
        return False
    vals = run.values
    batch = run.batch
    rplan = _plan(seg)
    dtype = next(iter(run.xs.values()))._data.dtype if run.xs else rplan.dtype
    if run._path(dtype)[0]:  # (the plain path: nothing to batch)
        return False
    seg._check_cell()
    run._place_leaves(rplan, dtype)
    lean = run.keep == "needed"
    tpl = seg._templates
    blocks = tpl.blocks
    L = seg.steps
    a = ck.segments[i][0]
    outs = ck._outs
    names = list(seg.cell.states)
    inits = [seg._init_slots[k] for k in names]
    chunk = run.flush_chunk or 0
    C = chunk or L
    tbs = seg._time_batch
    no_views = seg._tb_unviewed if lean else ()
    stream = bool(chunk) and lean and len(seg._tb_unread) == len(tbs)
    full = {} if chunk and not stream else None
    fr = stand_ins(seg, batch, dtype)
    stacked: dict = {}
    swapped = None
    try:
        for out, ins, fwd, _v, kw, _s in seg._shared_prog:
            vals[out] = fwd(*[vals[j] for j in ins], **kw)
        if seg._row_major and batch > 1:
            swapped = row_major_operands(seg._row_major, vals)
        if seg._broadcast and batch > 1:
            swapped = broadcast_operands(seg, vals, batch, swapped)
        for t0 in range(0, L, C):
            t1 = min(t0 + C, L)
            part = time_batched_chunk(tbs, vals, run.xs_data, t0, t1, None, full, no_views,
                                      _Freed) if tbs else {}
            if tbs and not chunk:
                stacked = part  # (the one chunk: the segment's; a value freed leaves it)
            if t0 == 0:
                shapes = {k: (tuple(v.shape[1:]), v.dtype) for k, v in part.items()}
            # per block offset, its values for the chunk's steps (k, B, ...)
            S = {}
            for off, k in plan.tb_at.items():
                if off in plan.readers or off in plan.seq_reads or not lean or \
                        off not in plan.unread:
                    S[off] = part[k]
                else:  # (read by the time-batched nodes alone: done with)
                    part.pop(k, None)
            for off, n in plan.out_at.items():
                S[off] = outs[n][a + t0:a + t1]
            held: dict = {}
            readers = dict(plan.readers)
            for what, off, refs, fwd, kw, op in plan.entries:
                if what != "bat":
                    continue
                args = []
                for kind, key in refs:
                    if kind == "b":
                        args.append(S[key])
                    elif kind == "s":
                        v = held.get(key)
                        if v is None:
                            v = held[key] = _held_rows(ck, plan.held[key], a, t0, t1,
                                                       vals[inits[key]])
                        args.append(v)
                    else:
                        args.append(vals[key])
                t = _used_up(plan, op, kw, refs, args, readers)
                if t is not None:
                    v = _POOLED_UFUNCS[op](*args, out=t)  # (its array is used up)
                else:
                    v = _batched_matmul(*args) if op == "matmul" else fwd(*args, **kw)
                if lean and off not in plan.unread and type(v) is np.ndarray and \
                        v.base is not None and v.base.nbytes > v.nbytes:
                    v = v.copy()  # (a kept slice: the rest of its source goes)
                S[off] = v
                for kind, key in refs:
                    if kind == "b" and key in readers:
                        readers[key] -= 1
                        if lean and not readers[key] and key not in plan.seq_reads and \
                                key in plan.unread and key not in plan.out_at:
                            del S[key]
                            if key in plan.tb_at:  # (its rows too, which the steps read)
                                part.pop(plan.tb_at[key], None)
                                if lean:
                                    for t in range(t0, t1):
                                        vals[blocks[t][0] + key] = fr[key]
            del held, args
            # the chunk's values, a row per step (stand-ins for those no VJP reads)
            for what, off, *_rest in plan.entries:
                if what == "seq":
                    continue
                v = S.get(off)
                for t in range(t0, t1):
                    s = blocks[t][0] + off
                    vals[s] = fr[off] if v is None else v[t - t0]
            for t in range(t0, t1):
                b = blocks[t][0]
                for what, off, refs, fwd, kw, _op in plan.entries:
                    if what == "seq":
                        args = [vals[b + key] if kind == "b" else vals[key] if kind == "c"
                                else vals[tpl.state_in[t][key]] for kind, key in refs]
                        vals[b + off] = fwd(*args, **kw) if kw else fwd(*args)
            S = part = None
            if lean:
                for t in range(t0, t1):
                    b = blocks[t][0]
                    for off in plan.unread:
                        vals[b + off] = fr[off]
        if tbs:
            if stream:
                stacked = {k: _Freed((L,) + shape, dt) for k, (shape, dt) in shapes.items()}
            elif chunk:
                stacked = full
            else:
                for k, (shape, dt) in shapes.items():
                    if k not in stacked:
                        stacked[k] = _Freed((L,) + shape, dt)
            if lean:
                for k in seg._tb_unread:
                    v = stacked[k]
                    stacked[k] = _Freed(v.shape, v.dtype)
    except UnrollGraphError:
        raise
    except Exception:  # (the step-by-step forward pass reports it, naming the node)
        run.values = [None] * len(seg.nodes)
        run.stacked = {}
        return False
    finally:
        if swapped:
            for s, v in swapped:
                vals[s] = v
    run.stacked = stacked
    run.generic_forward = False
    run.lean_steps = lean
    run.teacher_forced = True
    return True


def _used_up(plan, op, kw, refs, args, readers):
    """The argument of a teacher-forced elementwise op that it may compute into, or None:
    a value of the chunk that this op reads last, no VJP reads, nor a step-by-step entry,
    and that is no time-batched node's or output's array, an array of its own of the result's
    type and shape (the other arguments broadcast into it)."""
    if op not in _POOLED_UFUNCS or kw:
        return None
    for m in ((0, 1) if op in ("add", "mul") else (0,))[:len(refs)]:
        kind, key = refs[m]
        t = args[m]
        if kind == "b" and readers.get(key) == 1 and key in plan.unread and \
                key not in plan.seq_reads and key not in plan.tb_at and \
                key not in plan.out_at and type(t) is np.ndarray and \
                t.base is None and t.flags.writeable and all(
                    type(x) is np.ndarray and x.dtype is t.dtype and (
                        x.shape == t.shape or x.shape == t.shape[t.ndim - x.ndim:])
                    for x in args):
            return t
    return None


def _held_rows(ck, n: int, a: int, t0: int, t1: int, entering):
    """The values of the state kept as output ``n`` entering the steps ``t0 .. t1 - 1`` of
    the segment starting at step ``a``: rows ``a + t0 - 1 ..`` of that output (the state
    entering the segment for its first step), a view of the (T + 1, B, ...) array the
    forward pass computed the states into where it holds them all, else a stack."""
    out = ck._outs[n]
    rows = ck._row_arrays[n] if n < len(ck._row_arrays) else None
    if rows is not None and len(rows) == ck.net.steps + 1 and _rows_of(out, rows, 1) and (
            t0 or (type(entering) is np.ndarray and entering.shape == rows.shape[1:]
                   and entering.ctypes.data == rows[a].ctypes.data
                   and entering.strides == rows.strides[1:])):
        return rows[a + t0:a + t1]
    return np.stack([entering if t == 0 else out[a + t - 1] for t in range(t0, t1)])


class CheckpointedRun(Run):
    """One call of a net unrolled with ``checkpoint=k``: its outputs, the state entering
    each segment and, after backward, the gradients of its leaves (parameters, inputs,
    initial states). Everything
    else is recomputed on request (:meth:`full`, held on the run until :meth:`release`)."""

    def __init__(self, net, xs: dict, states: dict, lengths, batch: int, keep: str = "needed"):
        super().__init__(net, xs, states, lengths, batch, keep)
        # the slots it keeps: parameters, initial and kept states (the outputs are the
        # (T, B, ...) arrays the call returns, their steps read as rows on request)
        self.values = _Kept(len(net.nodes))
        self.segments = _segments(net)
        self._cut_matters = net.truncate is not None and _seeds_skip_the_cut(net)
        self._paths: list = [None] * len(self.segments)  # per segment: how it ran
        self._outputs: list | None = None  # the (T, B, ...) outputs, until call() takes them
        # the arrays the forward pass's segments compute their outputs into (see
        # _SegmentRun._row_buffers): (T + 1, B, ...) for an output that is the state
        self._row_arrays: list = []
        self._outs: list = []  # the same arrays, kept (the run reads their rows)
        self._stacked: dict = {}  # segment -> its time-batched values' stand-ins
        # the last segment's run, from the forward pass to the first backward pass, which
        # reads its values instead of a recomputation's (None: recompute it)
        self._held: Run | None = None
        # the segments the last backward pass recomputed teacher-forced (full() recomputes
        # their gradients so too)
        self._tf: set = set()

    # -- the segments ------------------------------------------------------------------------
    def _segment_run(self, i: int, states: dict, keep: str, forward_only: bool = False) -> Run:
        a, b, key = self.segments[i]
        seg = _segment_net(self.net, key, forward_only)
        xs = {k: _leaf(v[a:b], self.xs[k].requires_grad) for k, v in self.xs_data.items()}
        run = _SegmentRun(seg, xs, states, None, self.batch, keep)
        run.first_step = a  # its errors name the steps of the whole run
        if self.lengths is not None:
            # the sequences' lengths within the segment; the inputs stay as this run padded
            # them over all T steps
            run.lengths = np.clip(np.asarray(self.lengths) - a, 0, b - a)
        run._born = self._born
        path = self._paths[i]
        if path is not None:  # a recomputation takes the path the run took: the same bits
            (run.generic_forward, run.generic_backward, run.flush_chunk,
             run.plain) = path
        else:
            back = _segment_net(self.net, key)  # (the net its backward pass runs)
            run.flush_chunk = _segment_chunk(b - a, back._tb_sliced or _reads_kept_only(back))
        return run

    def _entering(self, i: int, grad: dict | None) -> dict:
        """The state entering segment ``i``: the caller's (segment 0) or the one kept; as
        tensors asking for their gradient where ``grad`` says so."""
        if i == 0:
            return self.states
        net, a = self.net, self.segments[i][0]
        kept = {s: self.values[slots[a - 1]] for s, slots in net._state_slots.items()}
        return kept if grad is None else {s: _leaf(v, grad[s]) for s, v in kept.items()}

    def _wants(self, drop: bool) -> list:
        """Per segment, which states entering it need their gradient: those through which
        something needing a gradient (a parameter, an input, the initial state) reaches it,
        as the backward program of the whole unrolled graph would find (so that the same
        nodes get gradients)."""
        net = self.net
        out = [None]
        grad = {k: isinstance(h, Tensor) and h.requires_grad for k, h in self.states.items()}
        for i in range(len(self.segments) - 1):
            seg = _segment_net(net, self.segments[i][2])
            needs = [seg._param_slots[k] for k, p in seg._used_params.items()
                     if p.requires_grad]
            for k, slots in seg._input_slots.items():
                if self.xs[k].requires_grad:
                    needs += slots
            needs += [seg._init_slots[k] for k, g in grad.items() if g]
            want = backward_program(seg, tuple(sorted(needs)), drop)[1]
            grad = {k: want[slots[-1]] for k, slots in seg._state_slots.items()}
            out.append(grad)
        return out

    def _record(self, i: int, run: Run) -> None:
        self._paths[i] = (run.generic_forward, run.generic_backward, run.flush_chunk,
                          run.plain)
        if run.stacked and i not in self._stacked:  # (the time-batched values' shapes)
            self._stacked[i] = {k: _Freed(v.shape, v.dtype) for k, v in run.stacked.items()}

    def _place(self, i: int, run: Run) -> bool:
        """Instead of recomputing segment ``i`` for its backward pass, put in its ``run``
        the values that pass reads, where they are all values the checkpointed run kept
        (:func:`_reads_kept_only`): the parameters, the inputs' rows, the state entering
        it, and the outputs' rows, the same arrays (a recomputation gives the same bits);
        the values no VJP reads are the stand-ins a lean pass leaves. False (nothing done)
        where the backward pass needs a recomputation, or the segment ran on the generic
        node-by-node path (a recomputation takes the same)."""
        seg = run.net
        path = self._paths[i]
        if path is None or path[0] or path[1] or _FLAGS.anomaly or _MODE.get().anomaly \
                or not _reads_kept_only(seg):
            return False
        a = self.segments[i][0]
        vals = run.values
        for k, p in seg._used_params.items():
            vals[seg._param_slots[k]] = p.data
        dtype = next(iter(run.xs_data.values())).dtype if run.xs_data else np.dtype(
            np.float64)
        for s, v in seg._const_slots:  # (as the forward pass: a number takes the run's type)
            vals[s] = v.astype(dtype) if v.ndim == 0 and v.dtype.kind == "f" else v
        fr = stand_ins(seg, self.batch, dtype)
        for b, count in seg._templates.blocks:
            vals[b:b + count] = fr[:count]
        for k, slots in seg._input_slots.items():
            for s, v in zip(slots, run.xs_data[k]):
                vals[s] = v
        entering = self.values if i == 0 else None
        for k, s in seg._init_slots.items():
            if entering is not None:
                vals[s] = entering[self.net._init_slots[k]]
            else:
                h = run.states[k]
                vals[s] = h._data if isinstance(h, Tensor) else h
        for out, ins, fwd, _v, kw, _s in seg._shared_prog:
            vals[out] = fwd(*[vals[j] for j in ins], **kw)
        for n, slots in enumerate(seg._output_slots.values()):
            rows = self._outs[n][a:a + len(slots)]
            for s, v in zip(slots, rows):
                vals[s] = v
        run.stacked = dict(self._stacked.get(i, {}))
        run.lean_steps = True
        return True
        self.generic_forward |= run.generic_forward
        self.generic_backward |= run.generic_backward

    def _backward_segment(self, i: int, run: Run, seeds: list, carry: list,
                          totals: dict) -> list:
        """Backpropagate segment ``i``'s run with the output gradients ``seeds`` and the
        gradients ``carry`` of the state it hands on, adding the parameters' gradients into
        ``totals`` (name -> the sum over the later segments, updated); return the gradients
        of the state entering it (None where none reaches)."""
        a, b, _key = self.segments[i]
        n_out = len(self.net._output_slots)
        seeds = [None if g is None else g[a:b] for g in seeds[:n_out]] + carry
        seg = run.net
        run.params_in = [(seg._param_slots[k], g) for k, g in totals.items()]
        run.backward(seeds)
        for k, s in seg._param_slots.items():
            g = run.grads[s]
            if g is not None:
                # (the first part: a copy the run owns, since later parts add into it)
                totals[k] = g if k in totals else np.array(g, copy=True)
        return [run.grads[s] for s in seg._init_slots.values()]

    def _needs_backward(self, i: int) -> bool:
        """Whether segment ``i`` takes part in the backward pass (truncation cuts it)."""
        return self.segments[i][2][1] != 0 or self._cut_matters

    # -- the run ----------------------------------------------------------------------------
    def forward(self) -> None:
        """Run the segments in time order, keeping the outputs, the state entering each
        segment and the final state."""
        net, vals = self.net, self.values
        net._check_cell()
        for k, p in net._used_params.items():
            vals[net._param_slots[k]] = p.data
        states = self.states
        outs: list = []
        held = _held_states(net)
        last = len(self.segments) - 1
        for i, (a, b, _key) in enumerate(self.segments):
            # the segments run for the forward pass alone (keeping nothing of theirs but
            # the outputs and the state handed on), except: the last one keeps what its
            # backward pass (which comes next) reads, held for that pass instead of a
            # recomputation; and where that pass reads only values the run keeps (it puts
            # them in place), the segment's own net keeps no more than those already
            kept_only = _reads_kept_only(_segment_net(net, self.segments[i][2]))
            hold = i == last and not kept_only
            run = self._segment_run(i, states, "needed", forward_only=not (hold or kept_only))
            run.rows_of = self
            run.forward()
            run.rows_of = None  # (no cycle: the last segment's run stays on this one)
            seg = run.net
            if i == 0:  # (a copy if the segment's steps hold it in a row of their array)
                for k, s in net._init_slots.items():
                    vals[s] = _own(run.values[seg._init_slots[k]])
            # the segment's outputs, in the arrays the call returns: computed into their
            # rows by the steps (see _SegmentRun._row_buffers), else copied there at once
            for n, part in enumerate(run.stacked_outputs()):
                if i == 0:
                    rows = self._row_arrays[n] if n < len(self._row_arrays) else None
                    outs.append(rows[1:] if rows is not None and len(rows) > net.steps
                                else rows if rows is not None
                                else np.empty((net.steps,) + part.shape[1:], part.dtype))
                if not _rows_of(part, outs[n], a):
                    outs[n][a:b] = part
            part = None  # (a view of the segment's array: let it go with the segment)
            # the state handed on, kept: a row of an output that is this state (no copy),
            # else the segment's value (a copy if it is a view: a lean step may compute a
            # state in place in an array of the whole segment, which must not stay alive)
            states = {k: outs[held[k]][b - 1] if held[k] is not None
                      else _own(run.values[seg._state_slots[k][-1]]) for k in net._state_slots}
            for k, v in states.items():
                vals[net._state_slots[k][b - 1]] = v
            self._record(i, run)
            if hold:
                self._held = run
            del run
        self._outputs = outs
        self._outs = outs
        self.lean_steps = True  # (nothing for call() to free)

    def stacked_outputs(self) -> list:
        outs, self._outputs = self._outputs, None  # (the run keeps views of them)
        return outs

    def backward(self, seeds: list) -> None:
        """Backpropagate through the segments, last to first, recomputing each from the
        state kept at its start; the gradients of the parameters add up segment by segment,
        those of the inputs and the initial state are filed by step."""
        net = self.net
        self.seeds = seeds
        self._full = None
        self._tf = set()
        grads = _Kept(len(net.nodes))
        n_out = len(net._output_slots)
        carry = list(seeds[n_out:])  # the final states' gradients
        totals: dict = {}  # parameter -> its gradient summed over the segments so far
        wants = self._wants(True)
        for i in range(len(self.segments) - 1, -1, -1):
            if not self._needs_backward(i):
                break
            a, b, _key = self.segments[i]
            run, self._held = self._held, None
            if run is not None:  # the last segment, as the forward pass left it
                run.states = self._entering(i, wants[i])
            else:
                run = self._segment_run(i, self._entering(i, wants[i]), "needed")
                if not self._place(i, run):
                    run.teacher = (self, i)
                    run.forward()
                    run.teacher = None
                    if run.teacher_forced:
                        self._tf.add(i)
            carry = self._backward_segment(i, run, seeds, carry, totals)
            seg = run.net
            for k, slots in seg._input_slots.items():
                for j, s in enumerate(slots):
                    g = run.grads[s]
                    if g is not None:
                        grads[net._input_slots[k][a + j]] = g
            if i == 0:
                for k, s in seg._init_slots.items():
                    if run.grads[s] is not None:
                        grads[net._init_slots[k]] = run.grads[s]
            self._record(i, run)
            del run
        for k, g in totals.items():
            grads[net._param_slots[k]] = g
        self.grads = grads

    # -- inspection: from a recomputation -----------------------------------------------------
    def full(self) -> Run:
        """The whole run with every value and gradient, recomputed segment by segment as the
        run computed them (so what the run kept comes out bit for bit the same; otherwise
        the parameters or inputs have changed since and
        :class:`~unrollgraph.UnrollGraphError` says so). It holds all T steps: for diagrams
        and inspection, not for training.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=9, checkpoint=3)
        >>> out, h = net(np.ones((9, 1, 2)))
        >>> out.sum().backward()
        >>> run = net.last_run
        >>> z = net.state_nodes["h"][4].inputs[0]   # the sum inside tanh at step 4
        >>> run.values[net.slot(z)] is None   # not kept
        True
        >>> run.full().values[net.slot(z)].shape
        (1, 3)
        """
        if self._full is not None:
            return self._full
        self._check_unchanged("full")
        net = self.net
        full = Run(net, self.xs, self.states, self.lengths, self.batch, "all")
        full._born = self._born
        full.xs_data = self.xs_data
        full.generic_forward = self.generic_forward
        full.generic_backward = self.generic_backward
        shared = sum(1 for n in net.nodes if n.step is None)
        per = (len(net.nodes) - shared) // net.steps  # slots per step, the same every step
        runs, states = [], self.states
        for i, (a, _b, _key) in enumerate(self.segments):
            run = self._segment_run(i, states, "all")
            run.forward()
            seg = run.net
            if i == 0:  # the shared part (parameters, W.T) and the initial states
                full.values[:shared] = run.values[:shared]
            # step j of the segment is step a + j of the run: its slots are a * per further
            full.values[shared + a * per:a * per + len(seg.nodes)] = run.values[shared:]
            states = {k: run.values[seg._state_slots[k][-1]] for k in net._state_slots}
            runs.append(run)
        if self.seeds is not None:
            grads: list = [None] * len(net.nodes)
            owned = [False] * len(net.nodes)
            carry = list(self.seeds[len(net._output_slots):])
            totals: dict = {}
            params = set(net._param_slots.values())  # (the same slots in every segment)
            wants = self._wants(False)
            for i in range(len(self.segments) - 1, -1, -1):
                if not self._needs_backward(i):
                    break
                run, a = runs[i], self.segments[i][0]
                if i:  # the entering state asks for its gradient where it is needed
                    run.states = {k: _leaf(v, wants[i][k]) for k, v in run.states.items()}
                if i in self._tf:
                    # the backward pass read a teacher-forced recomputation, whose values
                    # may differ from the steps' in the last bits (a product of k B rows
                    # may round otherwise than k of B): its gradients come from one too
                    again = self._segment_run(i, run.states, "all")
                    again.teacher = (self, i)
                    again.forward()
                    again.teacher = None
                    if not again.teacher_forced:
                        raise UnrollGraphError(
                            f"Run.full(): segment {i} (steps {a} to "
                            f"{self.segments[i][1] - 1}) was recomputed teacher-forced for "
                            "the backward pass but cannot be now; call the net again")
                    run = again
                carry = self._backward_segment(i, run, self.seeds, carry, totals)
                seg = run.net
                inits = set(seg._init_slots.values())
                for s in range(shared):  # shared nodes: the segments' parts add up
                    g = run.grads[s]
                    if s in inits:
                        if i == 0:
                            grads[s] = g
                    elif g is not None and s not in params:  # (those sum in totals)
                        _acc(grads, owned, s, g)
                grads[shared + a * per:a * per + len(seg.nodes)] = run.grads[shared:]
            for k, g in totals.items():
                grads[net._param_slots[k]] = g
            full.seeds = self.seeds
            full.grads = grads
        self._check_kept(full.values, self.values.dense(), "value")
        for n, slots in enumerate(net._output_slots.values()):  # the rows of the outputs
            self._check_kept(full.values, dict(zip(slots, self._outs[n])), "value")
        if full.grads is not None:
            self._check_kept(full.grads, self.grads.dense(), "gradient")
        self._full = full
        return full

    def _check_kept(self, again: list, kept, what: str) -> None:
        if isinstance(kept, dict):  # slot -> value, for the slots named
            slots = list(kept)
            super()._check_kept([again[s] for s in slots], list(kept.values()), what)
        else:
            super()._check_kept(again, kept, what)

    def _output_row(self, s: int):
        """The value of slot ``s`` if it is an output's at some step: that row of the
        (T, B, ...) array the call returned; else None."""
        node = self.net.nodes[s]
        t = node.step
        if t is None or not self._outs:
            return None
        for n, slots in enumerate(self.net._output_slots.values()):
            if slots[t] == s:
                return self._outs[n][t]
        return None

    def value(self, node):
        s = self._slot_of(node, "value")
        v = self.values[s]
        if v is None:
            v = self._output_row(s)
        if v is None or self.net.nodes[s].step is None:
            # recomputed, or a shared leaf (a parameter's live array): refuse if it changed
            self._check_unchanged("value")
        return _read_only(v if v is not None else self.full().values[s])  # (as Run.value)

    value.__doc__ = Run.value.__doc__

    def state_grads(self, name: str | None = None):
        self._need_backward()
        if self._full is None:
            k = self.net.checkpoint
            self._check_unchanged("state_grads", (
                f": a run checkpointed every {k} steps keeps the state only at its kept "
                f"steps {sorted(kept_steps(self.net))[:6]}"
                f"{'...' if len(self.segments) > 6 else ''} and no state's gradient, which "
                "state_grads() recomputes segment by segment"))
        return self.full().state_grads(name)

    state_grads.__doc__ = Run.state_grads.__doc__

    def step_contributions(self, param: str) -> np.ndarray:
        self._need_backward()
        self._check_unchanged("step_contributions")
        return self.full().step_contributions(param)

    step_contributions.__doc__ = Run.step_contributions.__doc__

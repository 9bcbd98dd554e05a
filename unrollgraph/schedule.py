"""Step templates: straight-line Python for one time step of an unrolled graph.

Every step of an unrolled net runs the same ops on the same relative slots; only the block's
first slot ``b`` and the slots of the incoming states differ. So the schedule compiles one
function per distinct step shape,

    def step(v, b, s0):            # v: values, b: first slot of the block, s0: state in
        v[b+1] = F0(v[b+0], v[2])  # x@t @ W.T   (slot 2 is the shared W.T)
        ...

and, for each pattern of which slots need a gradient, one backward function that calls each
op's per-input VJPs and accumulates in place where it owns the buffer. Python's per-op dispatch
(list building, attribute lookups, keyword unpacking) then disappears from the inner loop and
a step costs little more than its numpy calls. This is derived data: the graph stays the source
of truth, and a net whose steps do not share a shape falls back to the generic loop.

The same module holds the other derived speed-ups: time batching of a step's non-recurrent part
(``plan_time_batching``), shared-weight gradients filed per step and computed once
(``StepTemplates.flush``), and one call for an elementwise op on several slices of a value
(``_sliced_elementwise``). docs/architecture.md explains each.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections import Counter
from ctypes import addressof, c_char
from sys import getrefcount

import numpy as np

__all__ = ["StepTemplates", "plan_time_batching", "TimeBatch", "stack", "take", "BufferPool",
           "time_batched_chunk", "chunk_of", "Filed", "GradRows"]


def _ref(slot, base, state_in, block_len):
    """Express an input slot relative to a block: ('b', k), ('s', j) or ('c', slot)."""
    if base <= slot < base + block_len:
        return ("b", slot - base)
    if slot in state_in:
        return ("s", state_in.index(slot))
    if slot < base:
        return ("c", slot)
    return None


def _expr(ref) -> str:
    kind, k = ref
    return {"b": f"b+{k}" if k else "b", "s": f"s{k}", "c": str(k)}[kind]


class StepTemplates:
    """Compiled per-step forward and backward functions for an unrolled net.

    Parameters
    ----------
    entries : list
        ``(out, ins, fwd, vjps, kw, step)`` for every op node, in schedule order.
    blocks : list of (int, int)
        ``(first_slot, length)`` of each step's block of slots.
    state_in : list of tuple
        For each step, the slots of the states it reads (init or previous next-state).
    skip : set of int
        Output slots computed elsewhere (time-batched nodes, see :func:`plan_time_batching`).
    keep_grads : set of int
        Block offsets (states, outputs) whose gradients a ``keep="needed"`` run's second
        backward pass for :meth:`Run.state_grads <unrollgraph.Run.state_grads>` keeps (the
        run's own backward pass keeps none).
    shapes : list of (tuple, bool)
        Per slot: the cell shape and whether it has a batch axis (for inline VJPs).
    seeded : set of int
        Slots that receive output gradients from outside (never "single-source").
    defer : bool
        File each step's part of a shared weight's gradient for one call after the loop
        (:meth:`flush`); False: add it into the weight's gradient step by step, in place
        (the plain path of small runs).

    ``ok`` is False when the steps do not share a shape; callers then use the generic loop.
    """

    def __init__(self, entries, blocks, state_in, skip=frozenset(), keep_grads=frozenset(),
                 shapes=None, seeded=frozenset(), unread=frozenset(), defer=True):
        self.blocks = blocks
        self.defer = defer
        self.unread = unread  # slots whose values no VJP reads, nor anything after the run
        self.shapes = shapes  # per slot: (cell shape, has a batch axis)
        self.keep_grads = keep_grads  # block offsets a lean state_grads pass keeps
        self.state_in = state_in
        self.ok = True
        by_step: dict = {}
        for e in entries:
            if e[5] is not None and e[0] not in skip:
                by_step.setdefault(e[5], []).append(e)
        self.step_entries = [by_step.get(t, []) for t in range(len(blocks))]
        self.sigs = []
        self._fwd_cache: dict = {}
        self._plan_cache: dict = {}
        self._bwd_cache: dict = {}
        self.deferred: dict = {}  # (out, input) -> (vjp, input index, target slot, needs other)
        if not _OP_OF:
            _OP_OF.update(_ops_by_forward())
        self.rel: list = []
        # the T steps of a net are alike: equal refs and signatures are made one object
        # (less memory, and cache keys that compare by identity)
        inblock = [("b", k) for k in range(max((n for _, n in blocks), default=0))]
        kw_keys: dict = {}  # id(kw) -> _kw_key(kw) (the copies of a node share one kw)
        same: dict = {}
        same_rel: dict = {}
        for t, es in enumerate(self.step_entries):
            base, length = blocks[t]
            end = base + length
            s_in = state_in[t]
            rel = []
            for out, ins, fwd, vjps, kw, _ in es:
                refs = tuple([inblock[i - base] if base <= i < end
                              else _ref(i, base, s_in, length) for i in ins])
                if None in refs or not (base <= out < end):
                    self.ok = False
                    return
                refs = same.setdefault(refs, refs)
                key = kw_keys.get(id(kw))
                if key is None:
                    key = kw_keys[id(kw)] = _kw_key(kw)
                rel.append((out - base, refs, fwd, vjps, key, kw))
            sig = tuple([(r[0], r[1], id(r[2]), r[4]) for r in rel])
            sig = same.setdefault(sig, sig)
            # a step like an earlier one (same signature and VJPs) shares its entry list
            rel = same_rel.setdefault((id(sig), tuple([id(r[3]) for r in rel])), rel)
            self.rel.append(rel)
            self.sigs.append(sig)
        reads = Counter(i for e in entries for i in e[1])  # slot -> how many inputs read it
        self.single = self._single_reader_offsets(reads, seeded)
        self.tiled = self._tiled_offsets(reads, seeded)

    def _single_reader_offsets(self, reads, seeded) -> frozenset:
        """Block offsets whose slot, at every step, is read by exactly one input of one op and
        gets no output gradient from outside: its gradient is that one VJP, stored as is.
        ``reads``: slot -> how many op inputs read it."""
        single = None
        for base, length in self.blocks:
            here = {k for k in range(length)
                    if reads.get(base + k, 0) == 1 and base + k not in seeded}
            single = here if single is None else single & here
        return frozenset(single or ())

    def _tiled_offsets(self, reads, seeded) -> dict:
        """Block offsets whose value is read only by basic-index getitems that cut it into
        pieces along one axis, the pieces tiling it exactly (an LSTM's four gates). The
        gradient is then the pieces' gradients concatenated: one allocation and one copy,
        instead of a zero-filled array and one strided add per piece.

        Returns ``{offset: (axis, ((rel entry number, start, stop), ...) in order of start)}``.
        """
        if self.shapes is None:
            return {}
        found = None
        for t, rel in enumerate(self.rel):
            base, _ = self.blocks[t]
            cuts: dict = {}
            for k, (_out, refs, fwd, _v, _key, kw) in enumerate(rel):
                if _OP_OF.get(fwd) != "getitem" or refs[0][0] != "b":
                    continue
                cut = _axis_cut(kw.get("index"), self.shapes[base + refs[0][1]][0])
                cuts.setdefault(refs[0][1], []).append(None if cut is None else (k,) + cut)
            here = {}
            for off, pieces in cuts.items():
                if None in pieces or len(pieces) != reads.get(base + off, 0) \
                        or base + off in seeded or len({p[1] for p in pieces}) != 1:
                    continue
                axis = pieces[0][1]
                pieces.sort(key=lambda p: p[2])
                ends = [0] + [p[3] for p in pieces]
                if all(p[2] == e for p, e in zip(pieces, ends)) and \
                        ends[-1] == self.shapes[base + off][0][axis]:
                    here[off] = (axis, tuple((p[0], p[2], p[3]) for p in pieces))
            found = here if found is None else {k: v for k, v in found.items()
                                                 if here.get(k) == v}
        return found or {}

    # -- forward -------------------------------------------------------------------------------
    def forward_fn(self, t, fuse=False, lean=False, donate=False, outs=None):
        """Step ``t``'s forward function.

        ``fuse`` runs one elementwise op on several slices of a value as one call (cheaper
        for small batches, see _sliced_elementwise). ``lean`` (``keep="needed"``) drops each
        value no VJP reads as soon as its last reader in the step has run; ``donate`` also
        lets such a value's array take the result of its one reader in place
        (``t = h @ W; t += b``), which is exact when all operands share one dtype.
        ``outs`` (with ``lean`` and ``donate``): the block offsets of the outputs, which
        the function then computes straight into row ``i`` of the run's output arrays
        ``O`` (its arguments after ``fr``), so that no per-step copy follows."""
        plan = None
        if lean:
            # the plan depends on the step's shape and on which of its slots are unread or
            # read by the next step: the same for (nearly) every step, so computed once
            base, length = self.blocks[t]
            unread = self.unread
            later = self.state_in[t + 1] if t + 1 < len(self.state_in) else ()
            pkey = (self.sigs[t], fuse, donate,
                    tuple([k for k in range(length) if base + k in unread]),
                    tuple([s - base for s in later]))
            plan = self._plan_cache.get(pkey)
            if plan is None:
                plan = self._plan_cache[pkey] = self._lean_plan(t, fuse, donate)
        outs = outs if plan is not None and donate else None
        key = (self.sigs[t], fuse,
               plan and (plan[0], tuple(sorted(plan[1].items())), plan[2]), outs)
        fn = self._fwd_cache.get(key)
        if fn is None:
            fn = self._fwd_cache[key] = self._make_forward(self.rel[t], fuse, plan, outs)
        return fn

    def output_offsets(self, output_slots, skip_none=True):
        """The block offset of each output (a tuple, one per output), when every step
        computes each output in its own block at one offset, the outputs are distinct
        and the steps compute them (not a time-batched node); else None."""
        offs = []
        for slots in output_slots:
            off = None
            for t, s in enumerate(slots):
                base, length = self.blocks[t]
                if not base <= s < base + length or (off is not None and s - base != off):
                    return None
                off = s - base
            offs.append(off)
        if not offs or len(set(offs)) != len(offs):
            return None
        for rel in self.rel:
            if not set(offs) <= {r[0] for r in rel}:
                return None
        return tuple(offs)

    def _lean_plan(self, t, fuse, donate):
        """``(free_after, donor, copies)`` for a lean step: block offsets to drop after each
        entry (a tuple of tuples; an entry whose own value is in its tuple is not computed at
        all), ``{entry: input position}`` for the entries that may compute in place in an
        input's array, and the slicing entries whose kept slice is copied out of a value
        the step drops."""
        base, length = self.blocks[t]
        rel = self.rel[t]
        fused = _sliced_elementwise(rel) if fuse else {}
        readers: dict = {}
        for k, (_out, refs, *_rest) in enumerate(rel):
            for r in ([fused[k][1]] if k in fused else refs):
                if r[0] == "b":
                    readers.setdefault(r[1], []).append(k)
        later = set(self.state_in[t + 1]) if t + 1 < len(self.state_in) else set()
        free = {off for off in readers
                if base + off in self.unread and base + off not in later}
        # values this step computes into a new array of their own, which no other value
        # views: only those may take a result in place (a fused slice is a view of an
        # array its sibling slices also view)
        fresh = set()
        donor: dict = {}
        for k, (out, refs, fwd, _v, _key, kw) in enumerate(rel):
            op = _OP_OF.get(fwd)
            if op in _INPLACE and not kw and donate:
                for m in _INPLACE[op]:
                    r = refs[m]
                    if r[0] == "b" and r[1] in fresh and r[1] in free \
                            and len(readers[r[1]]) == 1 \
                            and self.shapes[base + r[1]] == self.shapes[base + out] \
                            and self.shapes[base + out][1]:
                        donor[k] = m
                        break
            if k in fused:
                continue  # a slice of one array computed for several entries: a view
            if op in _INPLACE or (op == "matmul" and self._inline_forward(op, refs, kw)):
                fresh.add(out)
        free_after: list = [[] for _ in rel]
        for off in free:
            k = max(readers[off])
            donated = k in donor and rel[k][1][donor[k]] == ("b", off)
            if not donated:  # (a donated value's slot is cleared where it is taken)
                free_after[k].append(off)
        for k, (out, *_rest) in enumerate(rel):
            if out not in readers and base + out in self.unread:
                free_after[k].append(out)  # read by nothing at all (a fused gate's slice)
        # a kept slice of a value the step drops is copied: as a view it would keep the
        # whole value alive (a GRU keeps the n gate's third of h W_hh^T + b_hh, not all of it)
        copies = []
        for k, (out, refs, fwd, _v, _key, kw) in enumerate(rel):
            if k not in fused and _OP_OF.get(fwd) == "getitem" and refs[0][0] == "b" \
                    and refs[0][1] in free and base + out not in self.unread \
                    and _basic_index(kw.get("index", ())) \
                    and self.shapes[base + out] != self.shapes[base + refs[0][1]]:
                copies.append(k)
        return tuple(tuple(sorted(f)) for f in free_after), donor, tuple(copies)

    def fusable(self) -> int:
        """Largest per-sample size of a value whose slices a fused forward would share
        (0 when there is nothing to fuse)."""
        if not self.rel or self.shapes is None:
            return 0
        sizes = [0]  # every step has the same shape: step 0 tells
        for _first, src, _index in _sliced_elementwise(self.rel[0]).values():
            shape, _ = self.shapes[self._abs(src, 0)]
            sizes.append(int(np.prod(shape[1:])) if shape else 1)
        return max(sizes)

    def _make_forward(self, rel, fuse=False, plan=None, outs=None):
        ns = {}
        free_after, donor, copies = plan if plan is not None else (
            (() for _ in rel), {}, ())
        free_after = list(free_after)
        nstates = max(len(s) for s in self.state_in) if self.state_in else 0
        lean = ", fr" if plan is not None else ""  # fr[k]: stand-in for a dropped value
        # O: the output arrays (T, B, ...), i: the step (the row this step writes)
        rows = {off: j for j, off in enumerate(outs or ())}
        lean += ", O, i" if outs is not None else ""
        lines = [f"def step(v, b{lean}{''.join(f', s{j}' for j in range(nstates))}):"]
        fused = _sliced_elementwise(rel) if fuse else {}
        done: set = set()
        for k, (out, refs, fwd, _vjps, _key, kw) in enumerate(rel):
            if out in free_after[k]:
                lines.append(f"    v[{_expr(('b', out))}] = fr[{out}]")  # needed nowhere
                continue
            if k in fused:
                # op(x[i]) for several slices i of one x: op(x) once, then each slice of it
                first, src, index = fused[k]
                if first not in done:
                    done.add(first)
                    ns[f"F{first}"] = fwd
                    lines.append(f"    u{first} = F{first}(v[{_expr(src)}])")
                ns[f"I{k}"] = index
                lines.append(f"    v[{_expr(('b', out))}] = u{first}[I{k}]")
                lines.extend(_into_row(out, rows))
                lines.extend(_drops(free_after[k]))
                continue
            a = [f"v[{_expr(r)}]" for r in refs]
            op = _OP_OF.get(fwd)
            expr = self._inline_forward(op, refs, kw)
            if k in donor:
                # the input's array is used up here: compute into it
                m = donor[k]
                lines.append(f"    t = {a[m]}")
                lines.append(f"    {a[m]} = fr[{refs[m][1]}]  # its array now holds this value")
                if out in rows:
                    # an output: computed into its row instead (the same ufunc on the same
                    # operands; an add's or mul's swapped operands give the same bits)
                    other = "".join(f"{x}, " for x in a[1 - m:2 - m])
                    lines.append(f"    v[{_expr(('b', out))}] = "
                                 f"{_UFUNC_NAME[op]}(t, {other}O[{rows[out]}][i])")
                    lines.extend(_drops(free_after[k]))
                    continue
                lines.append("    " + _INPLACE_CODE[op].format(*(a[1 - m:2 - m] or [""])))
                lines.append(f"    v[{_expr(('b', out))}] = t")
                lines.extend(_drops(free_after[k]))
                continue
            if out in rows and op in _UFUNC_NAME and not kw and k not in copies:
                # an output: its ufunc writes straight into the output's row
                lines.append(f"    v[{_expr(('b', out))}] = "
                             f"{_UFUNC_NAME[op]}({', '.join(a)}, O[{rows[out]}][i])")
                lines.extend(_drops(free_after[k]))
                continue
            if expr is not None:
                # the op written out: the same numpy call, without the function-call layers
                if "I" in expr:
                    ns[f"I{k}"] = kw["index"]
                line = expr.format(*a).replace("{I}", f"I{k}")
                if k in copies:
                    line += ".copy()"
            else:
                ns[f"F{k}"] = functools.partial(fwd, **kw) if kw else fwd
                line = f"F{k}({', '.join(a)})"
            lines.append(f"    v[{_expr(('b', out))}] = {line}")
            lines.extend(_into_row(out, rows))
            lines.extend(_drops(free_after[k]))
        if len(lines) == 1:
            lines.append("    pass")
        ns.update(_INLINE_NS)
        fn = _compile("\n".join(lines), ns, "step")
        # block offsets this step leaves a stand-in at (the rest are the caller's to free)
        fn.freed = frozenset(off for offs in free_after for off in offs) | frozenset(
            rel[k][1][m][1] for k, m in donor.items())
        return fn

    def _inline_forward(self, op, refs, kw):
        """The forward of ``op`` as an expression in its inputs ``{0}``, ``{1}`` (``{I}`` for a
        getitem's index), where that is exactly the registry's forward: the elementwise
        ufuncs, a basic index, and ``@`` on two matrices (a stack goes through ``_matmul``)."""
        if op in _INLINE_FORWARD and not kw:
            return _INLINE_FORWARD[op]
        if op == "getitem" and _basic_index(kw.get("index", ())):
            return "{0}[{{I}}]"
        if op == "matmul" and self.shapes is not None:
            shapes = [self.shapes[self._abs(r, 0)][0] for r in refs]  # step 0 tells
            if all(s is not None and len(s) == 2 for s in shapes):
                return "{0} @ {1}"
        return None

    # -- backward ------------------------------------------------------------------------------
    def backward_fn(self, t, want, drop=False, keep=False):
        """Step ``t``'s backward function for the slots ``want``. ``drop``: each intermediate
        gradient is dropped once used (``keep="needed"``), except, with ``keep``, those of
        the states and outputs (``keep_grads``)."""
        base, _ = self.blocks[t]
        rel = self.rel[t]
        pattern = []
        st = self.state_in[t]
        for out, refs, *_ in rel:  # (_abs written out: this runs for every step)
            pattern.append(want[base + out])
            for kind, k in refs:
                pattern.append(want[base + k if kind == "b" else st[k] if kind == "s" else k])
        key = (self.sigs[t], tuple(pattern), drop, keep)
        fn = self._bwd_cache.get(key)
        if fn is None:
            kept = self.keep_grads if keep else frozenset()
            fn = self._bwd_cache[key] = self._make_backward(rel, t, want, drop, kept)
        return fn

    def _abs(self, ref, t):
        kind, k = ref
        if kind == "b":
            return self.blocks[t][0] + k
        if kind == "s":
            return self.state_in[t][k]
        return k

    def _make_backward(self, rel, t, want, drop=False, keep_offs=frozenset()):
        base = self.blocks[t][0]
        ns = {"nd": np.ndarray, "zeros": np.zeros, "tile": _tile, "subtract": np.subtract,
              "add_reduce": np.add.reduce}
        nstates = max(len(s) for s in self.state_in) if self.state_in else 0
        lines = [f"def back(v, g, o, d, b{''.join(f', s{j}' for j in range(nstates))}):"]
        piece_of = {}  # rel entry number of a tiling getitem -> (tiled offset, piece number)
        last_reader = {}  # tiled offset -> the reader processed last (the lowest entry)
        for off, (_axis, pieces) in self.tiled.items():
            if not want[base + off]:
                continue
            for j, (k, _start, _stop) in enumerate(pieces):
                piece_of[k] = (off, j)
            last_reader[min(p[0] for p in pieces)] = off
            names = " = ".join(f"P{off}_{j}" for j in range(len(pieces)))
            lines.append(f"    {names} = None")
        # producers whose fresh array is filed whole for a flush: they compute it into the
        # next row of a chunk's buffer (d.rows), so the flush reads the rows as one stack
        rowed = self._filed_producers(rel, t, want, piece_of, last_reader)
        if rowed:
            ns.update(row=_row, rows_of=_rows_of, multiply=np.multiply, Filed=Filed)
        for k in range(len(rel) - 1, -1, -1):
            if k in piece_of:
                # a piece of a tiled gradient: keep it; the last piece assembles them
                off, j = piece_of[k]
                if want[base + rel[k][0]]:
                    o_expr = _expr(("b", rel[k][0]))
                    lines.append(f"    P{off}_{j} = g[{o_expr}]")
                    if drop and rel[k][0] not in keep_offs:
                        lines.append(f"    g[{o_expr}] = None  # used up: keep='needed'")
                if k in last_reader:
                    axis, pieces = self.tiled[off]
                    ns[f"W{off}"] = tuple(stop - start for _k, start, stop in pieces)
                    args = ", ".join(f"P{off}_{j2}" for j2 in range(len(pieces)))
                    into = f", rows_of(d, {off})" if off in rowed else ""
                    lines.append(f"    g[{_expr(('b', off))}] = "
                                 f"tile(({args}), {axis}, W{off}{into})")
                continue
            out, refs, fwd, vjps, _key, kw = rel[k]
            if not want[base + out]:
                continue
            todo = [
                (m, r) for m, r in enumerate(refs)
                if vjps[m] is not None and want[self._abs(r, t)]
            ]
            if not todo:
                continue
            op = _OP_OF.get(fwd)
            o_expr = _expr(("b", out))
            lines.append(f"    x = g[{o_expr}]")
            lines.append("    if x is not None:")
            args = ", ".join(f"v[{_expr(r)}]" for r in refs)
            lines.append(f"        ans = v[{o_expr}]")
            read_ans = len(lines) - 1  # (dropped below if no statement reads ans)
            entry_start = len(lines)
            for m, r in todo:
                name = f"V{k}_{m}"
                vjp = functools.partial(vjps[m], **kw) if kw else vjps[m]
                ns[name] = vjp
                if r[0] == "c" and self.defer and _deferrable(op, m, refs):
                    # a gradient into a weight shared by all steps: collect this step's part
                    # and compute all steps' parts in one call after the loop (see flush)
                    key = (out, m)
                    other = refs[1 - m] if op in ("matmul", "mul") else None
                    self.deferred[key] = (vjp, m, r[1], other is not None)
                    kept = f"v[{_expr(other)}]" if other is not None else "None"
                    lines.append(f"        d[{key!r}].append((x, {kept}))")
                    continue
                index = kw.get("index") if op == "getitem" else None
                if index is not None and _basic_index(index):
                    # add the slice's gradient into an owned buffer: no zero-filled temporary
                    ns[f"I{k}"] = index
                    lines.append(f"        i = {_expr(r)}")
                    lines.append("        p = g[i]")
                    lines.append("        if p is None or not (o[i] and type(p) is nd):")
                    lines.append("            q = zeros(v[i].shape, dtype=x.dtype)")
                    lines.append("            if p is not None:")
                    lines.append("                q += p")
                    lines.append("            g[i] = p = q")
                    lines.append("            o[i] = True")
                    lines.append(f"        p[I{k}] += x")
                    continue
                expr = self._inline(op, m, refs, t, base + out)
                if expr is None and r[0] == "c" and not self.defer:
                    # a step's part of a shared weight's gradient, added in below
                    expr = self._shared_vjp(op, m, refs, t, base + out)
                # whether y is a new array that nothing else refers to (then y may take a
                # gradient that arrived before it in place: y + p is p + y, the same bits)
                fresh = expr is not None and expr != "x"
                if expr is not None and (op, m) in _INLINE_VJP_LINES:
                    # the same products, with fewer temporaries (computed in place)
                    vjp_lines = _INLINE_VJP_LINES[op, m]
                    if r[0] == "b" and r[1] in rowed:
                        vjp_lines = _row_take(*_ROW_OPERANDS[op, m]) + _ROW_VJP_LINES[op, m]
                        ns[f"RK{k}"] = r[1]
                        vjp_lines = [x.replace("{R}", f"RK{k}") for x in vjp_lines]
                        fresh = False
                    lines.extend("        " + x for x in vjp_lines)
                elif expr is not None:
                    # the VJP written out: same numpy calls, no function-call layers
                    a = [f"v[{_expr(r2)}]" for r2 in refs]
                    lines.append(f"        y = {expr.format(*a)}")
                else:
                    lines.append(f"        y = {name}(x, ans, {args})")
                if r[0] == "b" and r[1] in self.single:
                    # this VJP is the slot's only gradient: store it, nothing to add to
                    if lines[-1] == "        y = x":  # (passed on unchanged)
                        lines[-1] = f"        g[{_expr(r)}] = x"
                    else:
                        lines.append(f"        g[{_expr(r)}] = y")
                    continue
                lines.append("        if y is not None:")
                lines.append(f"            i = {_expr(r)}")
                lines.append("            p = g[i]")
                lines.append("            if p is None:")
                lines.append("                g[i] = y")
                lines.append("            elif o[i] and type(p) is nd:")
                lines.append("                p += y")
                if fresh:
                    lines.append("            elif type(p) is nd and p.shape == y.shape "
                                 "and p.dtype is y.dtype:")
                    lines.append("                y += p")
                    lines.append("                g[i] = y")
                    lines.append("                o[i] = True")
                lines.append("            else:")
                lines.append("                g[i] = p + y")
                lines.append("                o[i] = True")
            if drop and out not in keep_offs:
                lines.append(f"        g[{o_expr}] = None  # used up: keep='needed'")
            if not any(re.search(r"\bans\b", x) for x in lines[entry_start:]):
                del lines[read_ans]
        if len(lines) == 1:
            lines.append("    pass")
        fn = _compile("\n".join(lines), ns, "back")
        fn.rows = rowed  # the producers that take rows of d.rows (see GradRows)
        return fn

    def _filed_producers(self, rel, t, want, piece_of, last_reader) -> frozenset:
        """Block offsets whose gradient, made whole by one statement of step ``t``'s backward
        function as a new array (a tanh's or sigmoid's VJP, a tiled gradient), is filed for a
        flush as it is, possibly passed on unchanged through adds first (an RNN's
        pre-activation gradient, filed for ``W_hh``, ``b_hh`` and the time-batched input
        projection). The same walk as :meth:`_make_backward`, without emitting code."""
        if not self.defer:
            return frozenset()
        base = self.blocks[t][0]
        src: dict = {}  # offset -> the producer offset whose array is its whole gradient
        filed = set()
        for k in range(len(rel) - 1, -1, -1):
            if k in piece_of:
                if k in last_reader:
                    src[last_reader[k]] = last_reader[k]
                continue
            out, refs, fwd, vjps, _key, kw = rel[k]
            if not want[base + out]:
                continue
            op = _OP_OF.get(fwd)
            for m, r in enumerate(refs):
                if vjps[m] is None or not want[self._abs(r, t)]:
                    continue
                if r[0] == "c" and _deferrable(op, m, refs):
                    if out in src:
                        filed.add(src[out])
                    continue
                if r[0] != "b" or r[1] not in self.single:
                    continue
                if op == "getitem" and _basic_index(kw.get("index", ())):
                    continue
                expr = self._inline(op, m, refs, t, base + out)
                if expr is not None and (op, m) in _INLINE_VJP_LINES:
                    src[r[1]] = r[1]
                elif expr == "x" and out in src:
                    src[r[1]] = src[out]
        return frozenset(filed)

    def _inline(self, op, m, refs, t, out):
        """The VJP of input ``m`` as an expression, when it needs no un-broadcasting (the input
        has the output's batched shape) and the op is one of the common elementwise ones."""
        if self.shapes is None:
            return None
        shape, batched = self.shapes[self._abs(refs[m], t)]
        if shape is None or not batched:
            return None
        if op == "matmul":  # a batch of rows times one shared matrix
            other, other_batched = self.shapes[self._abs(refs[1], t)]
            if m == 0 and len(shape) == 2 and other is not None and len(other) == 2 \
                    and not other_batched:
                return "x @ {1}.T"
            return None
        if (shape, batched) != self.shapes[out]:
            return None
        return _INLINE_VJPS.get((op, m))

    def _shared_vjp(self, op, m, refs, t, out):
        """The VJP into a weight shared by all steps (input ``m``, no batch axis) as an
        expression, for the plain path's per-step parts: a batch of rows times the weight
        (``a.T @ x``), or a bias added to a batch (``x`` summed over the batch axis).
        Exactly the registry's products (``_matmul_vb``, ``unbroadcast``), without its
        function layers; None for any other case."""
        if self.shapes is None:
            return None
        shape, batched = self.shapes[self._abs(refs[m], t)]
        if shape is None or batched:
            return None
        if op == "matmul" and m == 1:
            left, left_batched = self.shapes[self._abs(refs[0], t)]
            if left is not None and left_batched and len(left) == 2 and len(shape) == 2:
                return "{0}.T @ x"
            return None
        oshape, obatched = self.shapes[out]
        if op in ("add", "sub") and (op, m) != ("sub", 1) and obatched \
                and oshape is not None and len(oshape) >= 1 and tuple(oshape[1:]) == shape:
            return "add_reduce(x, 0)"
        return None

    def flush(self, d, vals, grads, owned, acc, stacks=None, pool=None):
        """Compute the deferred gradients of shared weights: one call over all steps each.

        ``stacks`` caches stacked per-step arrays, so a gradient that several weights (and
        the time-batched nodes) need is stacked once."""
        stacks = {} if stacks is None else stacks
        rows = getattr(d, "rows", None)
        if rows:
            for src in rows.values():
                src.seed(stacks)
        for key, parts in d.items():
            if not parts:
                continue
            vjp, m, target, has_other = self.deferred[key]
            parts.reverse()  # filed from the last step back: put them in time order
            G = stack_once([p[0] for p in parts], stacks, pool)
            if has_other:
                other = stack_once([p[1] for p in parts], stacks, pool)
                args = (other, vals[target]) if m == 1 else (vals[target], other)
                acc(grads, owned, target, vjp(G, None, *args))
            else:  # an add's or sub's: it reads only G and the target's shape
                acc(grads, owned, target, _summed(vjp, m, G, vals[target], stacks))


def _summed(vjp, m, g, target, memo):
    """An add's or sub's VJP into input ``m`` (``target``, shared by all steps): ``g`` summed
    down to the target's shape. It reads nothing else, so a second bias fed the same stacked
    gradient (an RNN's ``b_ih`` and ``b_hh``) takes a copy of the first one's sum (``memo``)
    instead of summing the (T, B, ...) array again."""
    args = (None, target) if m == 1 else (target, None)
    if memo is None or type(g) is not np.ndarray:
        return vjp(g, None, *args)
    key = ("summed", id(vjp), m, id(g), target.shape)
    hit = memo.get(key)
    if hit is not None:
        return None if hit[0] is None else hit[0].copy()
    out = vjp(g, None, *args)
    memo[key] = (out, g)  # (g kept alive: its id stays its own while the memo lives)
    return out


# VJPs written out for the step templates; exactly the registry's formulas where no
# un-broadcasting is needed ({0}, {1} are the op's inputs; x the output gradient, ans the value)
_INLINE_VJPS = {
    ("add", 0): "x", ("add", 1): "x", ("sub", 0): "x", ("sub", 1): "-x", ("neg", 0): "-x",
    ("mul", 0): "x * {1}", ("mul", 1): "x * {0}", ("div", 0): "x / {1}",
    ("tanh", 0): "x * (1.0 - ans * ans)", ("sigmoid", 0): "x * ans * (1.0 - ans)",
    ("exp", 0): "x * ans", ("relu", 0): "x * ~({0} <= 0)",
}


# the two most common VJPs, as statements that make one array where the expressions above make
# three: x * (1 - ans**2) and (x * ans) * (1 - ans), the same roundings (a product of two
# numbers is the same either way round); in place only where the result keeps the array's type
_INLINE_VJP_LINES = {
    ("tanh", 0): ("y = ans * ans", "subtract(1.0, y, y)",
                  "if y.dtype is x.dtype:", "    y *= x", "else:", "    y = x * y"),
    ("sigmoid", 0): ("y = x * ans", "y *= 1.0 - ans"),
}


# the same statements computing into the next row ``_r`` of the chunk's buffer for the
# producer ``{R}`` (see _row_take; a new array if there is none: the same numbers either way)
_ROW_VJP_LINES = {
    ("tanh", 0): ("y = multiply(ans, ans, _r)", "subtract(1.0, y, y)",
                  "if y.dtype is x.dtype:", "    y *= x", "else:", "    y = x * y"),
    ("sigmoid", 0): ("y = multiply(x, ans, _r)", "y *= 1.0 - ans"),
}
# the operands of the product each of them computes into the row
_ROW_OPERANDS = {("tanh", 0): ("ans", "ans"), ("sigmoid", 0): ("x", "ans")}


def _row_take(a, b) -> tuple:
    """Statements setting ``_r`` to ``_row(d, {R}, a, b)``: the common case (a row of a
    buffer made already, operands of its shape and dtype) written out, the rest (the first
    row, which makes the buffer, and the checks that give None) through the call; the same
    row, or None, in every case. (A compiled backward step takes a row per producer and
    step: the call and its checks are about a third of the time of a small step's VJP.)"""
    same = "" if a == b else f" and {a}.dtype is {b}.dtype and {a}.shape == {b}.shape"
    return ("_r = None",
            "_s = d.rows.get({R}) if type(d) is Filed else rows_of(d, {R})",
            f"if _s is not None and _s.left and type({a}) is nd{same}:",
            "    _a = _s.base",
            f"    if _a is not None and _a.dtype is {a}.dtype and _a.shape[1:] == {a}.shape:",
            "        _s.left = _k = _s.left - 1",
            "        _r = _a[_k]",
            "        _s.handed.append(_r)",
            "    else:",
            f"        _r = row(d, {{R}}, {a}, {b})")


class Filed(dict):
    """The per-step parts of shared weights' gradients that a backward pass files for a flush,
    by ``(entry, input)`` (a missing key reads as a new list), and ``rows``: per producer
    offset, the :class:`GradRows` its steps compute their parts into."""

    __slots__ = ("rows",)

    def __init__(self):
        super().__init__()
        self.rows: dict = {}

    def __missing__(self, key):
        parts = self[key] = []
        return parts


class GradRows:
    """The rows of one ``(n, ...)`` array, handed out last first to the steps of a chunk
    ``t0 .. t0+n-1`` (the backward pass runs them from the last), so that the parts they
    compute into them are, in time order, consecutive rows: the flush reads them as one
    stacked array (``stack`` finds them so) instead of copying them.

    The array comes from ``pool`` at the first row asked for, with that row's shape and
    dtype; a row of another shape or dtype, or past the n-th, is None (the step then makes a
    new array). A step that skips its row only costs the flush a copy.

    The rows handed out are kept (``handed``), so that :meth:`seed` can tell a flush's stack
    cache that those very arrays, in time order, are the rows ``base[left:n]``: the flush
    then finds the stack by identity instead of checking each row's address."""

    __slots__ = ("n", "left", "base", "pool", "handed")

    def __init__(self, n, pool=None):
        self.n = self.left = n
        self.base = None
        self.pool = pool
        self.handed: list = []

    def take(self, shape, dtype):
        k = self.left - 1
        if k < 0:
            return None
        base = self.base
        if base is None:
            base = self.base = take(self.pool, (self.n,) + shape, dtype)
        elif base.shape[1:] != shape or base.dtype != dtype:
            return None
        self.left = k
        r = base[k]
        self.handed.append(r)
        return r

    def seed(self, cache) -> None:
        """Enter the rows handed out into ``cache`` (a :func:`stack_once` cache) as the
        read-only view of them that :func:`stack` would find (two rows or more)."""
        handed = self.handed
        if len(handed) < 2:
            return
        out = self.base[self.left:self.n]
        out.flags.writeable = False
        cache[tuple(map(id, reversed(handed)))] = out


def _row(d, off, a, b):
    """The next row for producer ``off`` of a backward pass's ``d`` (a :class:`Filed`) for
    the elementwise product of ``a`` and ``b``, or None: when there is no row source, or
    the operands' shapes or dtypes differ (a broadcast or a promotion: a new array).

    :meth:`GradRows.take` written out (a compiled backward step calls this once per
    producer and step: the method call and its second look at the shape cost about a third
    of the time at a small size); the same row, or None, in every case."""
    rows = d.rows if type(d) is Filed else getattr(d, "rows", None)
    src = rows.get(off) if rows else None
    if src is None or type(a) is not np.ndarray or a.dtype is not b.dtype:
        return None
    shape = a.shape
    if shape != b.shape:
        return None
    k = src.left - 1
    if k < 0:
        return None
    base = src.base
    if base is None:
        base = src.base = take(src.pool, (src.n,) + shape, a.dtype)
    elif base.dtype != a.dtype or base.shape[1:] != shape:
        return None
    src.left = k
    r = base[k]
    src.handed.append(r)
    return r


def _rows_of(d, off):
    """The :class:`GradRows` of producer ``off`` in a backward pass's ``d``, or None."""
    rows = getattr(d, "rows", None)
    return rows.get(off) if rows else None


def _compile(source, ns, name):
    """Define the generated function ``name``; its text stays on it as ``__source__`` (to read
    what a schedule runs)."""
    exec(source, ns)  # noqa: S102 - generated from the graph, no user text
    fn = ns[name]
    fn.__source__ = source
    return fn


# forwards written out (see StepTemplates._inline_forward): exactly the registry's ufuncs
_INLINE_FORWARD = {
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}",
    "neg": "-{0}", "tanh": "tanh({0})", "exp": "exp({0})",
}
_INLINE_NS = {"tanh": np.tanh, "exp": np.exp, "negative": np.negative, "add": np.add,
              "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide}
# the registry's forward of these ops is exactly this ufunc (for a result written with out=)
_UFUNC_NAME = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide",
               "neg": "negative", "tanh": "tanh", "exp": "exp"}
# ops a lean step may compute in place in an input's array ``t`` (input positions that may
# give it: both for the commutative ones, whose result is the same bits either way round)
_INPLACE = {"add": (0, 1), "mul": (0, 1), "sub": (0,), "div": (0,), "tanh": (0,),
            "exp": (0,), "neg": (0,)}
_INPLACE_CODE = {"add": "t += {0}", "mul": "t *= {0}", "sub": "t -= {0}", "div": "t /= {0}",
                 "tanh": "tanh(t, t)", "exp": "exp(t, t)", "neg": "negative(t, t)"}


class BufferPool:
    """Arrays for the (T, B, ...) values of a run, reused from one run to the next.

    A fresh array of a few hundred kB or more comes from the operating system as new pages,
    and touching each costs a page fault (several microseconds on a virtual machine), run
    after run. The pool hands out an array again only when nothing else refers to it (its
    reference count says only the pool holds it): a result the caller kept, or any view of
    it (a run's per-step values), keeps it out of the pool's hands.

    One pool may serve several threads at once (two threads calling the same net): a lock
    makes the check of an array's reference count and its handing out one step, so an array
    is never given to two callers. (A reference count only goes up outside the lock, by the
    pool handing an array out, so a free array cannot be taken in between.)

    Examples
    --------
    >>> pool = BufferPool()
    >>> a = pool.take((2, 3), np.float64)
    >>> pool.take((2, 3), np.float64) is a    # a is held: another array
    False
    >>> first = id(a)
    >>> del a                                  # now nothing holds it
    >>> id(pool.take((2, 3), np.float64)) == first
    True
    """

    __slots__ = ("_arrays", "_lock")
    per_shape = 4  # arrays kept per (shape, dtype); more are allocated but not pooled

    def __init__(self):
        self._arrays: dict = {}
        self._lock = threading.Lock()

    def take(self, shape, dtype) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype`` that nothing else refers to."""
        key = (shape, np.dtype(dtype))
        with self._lock:
            bucket = self._arrays.get(key)
            if bucket is None:
                bucket = self._arrays[key] = []
            for i in range(len(bucket)):
                a = bucket[i]
                if getrefcount(a) == 3:  # the bucket's, ``a``'s and the argument's
                    return a  # (held by the caller before the lock is released)
            out = np.empty(shape, dtype)
            if len(bucket) < self.per_shape:
                bucket.append(out)
            return out


def take(pool, shape, dtype) -> np.ndarray:
    """An uninitialised array: from ``pool`` if its size is one the pool keeps, else new.

    Examples
    --------
    >>> take(BufferPool(), (2, 3), np.float64).shape
    (2, 3)
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if pool is None or not _POOL_BYTES <= nbytes <= _POOL_MAX_BYTES:
        return np.empty(shape, dtype)
    return pool.take(shape, dtype)


def stack(arrays, pool=None):
    """``np.stack(arrays)`` for same-shaped arrays, as one ``np.concatenate`` into the result
    (np.stack's per-call checks cost more than the copy for the small per-step arrays of a
    short unroll); into an array from ``pool`` if given and large.

    Examples
    --------
    >>> stack([np.zeros((1, 2)), np.ones((1, 2))]).tolist()
    [[[0.0, 0.0]], [[1.0, 1.0]]]
    """
    first = arrays[0]
    shape = (len(arrays),) + first.shape
    last = arrays[-1]
    dtype = first.dtype if first.dtype is last.dtype else np.result_type(first, last)
    rows = _rows_of_one_array(arrays)
    if rows is not None:
        return rows
    if pool is None or not _POOL_BYTES <= len(arrays) * first.nbytes <= _POOL_MAX_BYTES:
        out = np.empty(shape, dtype)
    else:
        out = pool.take(shape, dtype)
    if first.ndim == 0:
        out[...] = arrays
    else:
        np.concatenate(arrays, axis=0, out=out.reshape((-1,) + first.shape[1:]))
    return out


def _rows_of_one_array(arrays):
    """A read-only (n, ...) view when ``arrays`` are consecutive rows ``base[k:k+n]`` of one
    C-contiguous array ``base`` (the states a run wrote into its output array, step after
    step), else None: stacking them would copy what is already laid out as the stack."""
    first = arrays[0]
    base = first.base
    if base is None or type(base) is not np.ndarray or len(arrays) < 2 \
            or base.shape[1:] != first.shape or not base.flags.c_contiguous:
        return None
    strides = base.strides[1:]  # (a row's: a strided view of the right shape is no row)
    if first.strides != strides:
        return None
    size = first.nbytes
    if not size:
        return None
    start = _address(first)
    k, rem = divmod(start - base.ctypes.data, size)
    if rem or not 0 <= k <= len(base) - len(arrays):
        return None
    for a in arrays:
        if a.base is not base or a.shape != first.shape or a.dtype != first.dtype \
                or a.strides != strides:
            return None
    # rows of one base, each with the row's shape and strides: consecutive if their
    # addresses are
    for n, a in enumerate(arrays):
        if _address(a) != start + n * size:
            return None
    out = base[k:k + len(arrays)]
    out.flags.writeable = False
    return out


def _address(a) -> int:
    """The address of the first byte of the C-contiguous array ``a`` (not empty): through
    the buffer protocol where ``a`` is writeable (a third of the time of ``a.ctypes.data``,
    which builds the array interface in Python: it adds up over the rows of a long stack),
    else ``a.ctypes.data``."""
    if a.flags.writeable:
        return addressof(c_char.from_buffer(a))
    return a.ctypes.data


def stack_once(arrays, cache, pool=None):
    """``stack(arrays)``, reusing the result for the very same arrays in the same order."""
    key = tuple(map(id, arrays))
    out = cache.get(key)
    if out is None:
        out = cache[key] = stack(arrays, pool)
    return out


def _sliced_elementwise(rel) -> dict:
    """Find ``op(x[i1]), op(x[i2]), ...``: one elementwise op on several basic slices of the
    same value (an LSTM's sigmoid gates). Returns ``{entry: (first entry of the group, ref of x,
    index)}`` for groups of two or more, so the forward pass computes ``op(x)`` in one call and
    each node's value is a slice of it (the same numbers; the graph is unchanged)."""
    slices = {}  # entry out offset -> (ref of x, index) for getitem entries
    for out, refs, fwd, _v, _key, kw in rel:
        if _OP_OF.get(fwd) == "getitem" and _basic_index(kw.get("index", ())):
            slices[out] = (refs[0], kw["index"])
    groups: dict = {}
    for k, (_out, refs, fwd, _v, _key, kw) in enumerate(rel):
        if _OP_OF.get(fwd) in _UNARY and not kw and refs[0][0] == "b" and refs[0][1] in slices:
            src, index = slices[refs[0][1]]
            groups.setdefault((fwd, src), []).append((k, index))
    fused = {}
    for (_fwd, src), members in groups.items():
        if len(members) > 1:
            first = members[0][0]
            for k, index in members:
                fused[k] = (first, src, index)
    return fused


def _into_row(out, rows):
    """Lines that copy the value at block offset ``out`` into its output row, if it is an
    output (``rows``: offset -> output number), and leave the row in its slot."""
    if out not in rows:
        return []
    v = f"v[{_expr(('b', out))}]"
    return [f"    r = O[{rows[out]}][i]", f"    r[...] = {v}", f"    {v} = r"]


def _drops(offsets):
    """Lines of a lean step that leave the stand-in ``fr[k]`` at block offsets ``offsets``."""
    return [f"    v[{_expr(('b', off))}] = fr[{off}]" for off in offsets]


def _axis_cut(index, shape):
    """``(axis, start, stop)`` if ``index`` keeps every axis whole but one, which it cuts to
    ``start:stop`` (step 1); else None."""
    if shape is None or not isinstance(index, tuple) or len(index) > len(shape):
        return None
    cut = None
    for axis, i in enumerate(index):
        if not isinstance(i, slice) or i.step not in (None, 1):
            return None
        start, stop, _ = i.indices(shape[axis])
        if (start, stop) == (0, shape[axis]):
            continue
        if cut is not None or axis == 0 or stop <= start:  # axis 0 is the batch
            return None
        cut = (axis, start, stop)
    return cut


def _tile(pieces, axis, widths, rows=None):
    """The gradient of a value cut into ``pieces`` along ``axis``: the pieces' gradients side
    by side (zeros of width ``widths[j]`` where piece j got none), or None if none got one;
    computed into the next row of ``rows`` (a :class:`GradRows`) when the pieces share one
    dtype."""
    given = next((p for p in pieces if p is not None), None)
    if given is None:
        return None
    if any(p is None for p in pieces):
        shape = list(given.shape)
        pieces = list(pieces)
        for j, p in enumerate(pieces):
            if p is None:
                shape[axis] = widths[j]
                pieces[j] = np.zeros(shape, dtype=given.dtype)
    if rows is not None:
        dtype = given.dtype
        if all(type(p) is np.ndarray and p.dtype is dtype for p in pieces):
            shape = list(given.shape)
            shape[axis] = sum(widths)
            out = rows.take(tuple(shape), dtype)
            if out is not None:
                return np.concatenate(pieces, axis=axis, out=out)
    return np.concatenate(pieces, axis=axis)


def _deferrable(op, m, refs) -> bool:
    """VJPs into a shared input that sum over a leading time axis unchanged."""
    if op in ("add", "sub"):
        return True
    if op == "mul":
        return refs[1 - m][0] != "c"
    if op == "matmul":
        return m == 1 and refs[0][0] != "c"
    return False


def _basic_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (slice, int)) or i is Ellipsis or i is None for i in items)


def _ops_by_forward():
    from .ops import registry

    return {op.forward: name for name, op in registry().items()}


_OP_OF: dict = {}


def _kw_key(kw):
    # clones of one cell node share their attribute objects, so identity is the right key
    return tuple(sorted((k, id(v)) for k, v in kw.items())) if kw else ()


# ---------------------------------------------------------------------------------------------
# Time batching: the non-recurrent part of a step (for an RNN, x_t W_ih^T + b_ih) depends on no
# state, so all T steps of it can run as one numpy call on the stacked inputs (T, B, ...), and
# its backward as one call too (one (T*B, D)^T @ (T*B, H) product instead of T small ones).
# The graph is unchanged: each step's node gets a view [t] of the batched value and gradient.

_UNARY = frozenset({"exp", "log", "tanh", "sigmoid", "relu", "sqrt", "abs", "neg", "powc", "clip"})
_BINARY = frozenset({"add", "sub", "mul", "div", "pow", "maximum", "minimum"})


class TimeBatch:
    """One cell node computed for all steps at once.

    ``refs`` says where each input comes from: ``("h", k)`` the k-th time-batched node,
    ``("x", name)`` the stacked input ``name``, ``("s", slot)`` a node shared by all steps.
    ``slots`` are the node's per-step slots. ``donor``: the input position of a time-batched
    node that this node alone reads, whose array may take this node's value in place (an
    elementwise op), or None.
    """

    __slots__ = ("op", "fwd", "vjps", "kw", "refs", "slots", "donor")

    def __init__(self, op, fwd, vjps, kw, refs, slots, donor=None):
        self.op, self.fwd, self.vjps, self.kw = op, fwd, vjps, kw
        self.refs, self.slots, self.donor = refs, slots, donor


def _time_batched_kw(op, kw):
    """The op's attributes for an extra leading time axis, or None if it cannot take one."""
    if op in _UNARY or op in _BINARY or op == "matmul":
        return kw
    if op == "getitem":
        index = kw.get("index")
        if (
            isinstance(index, tuple) and index and index[0] == slice(None)
            and all(isinstance(i, (slice, int)) for i in index)
        ):
            return dict(kw, index=(slice(None),) + index)
    return None


def plan_time_batching(body, batched, state_dependent, shapes, clones, input_names,
                       shared_slot, registry_get):
    """Choose the cell nodes that can run for all steps at once; return a list of TimeBatch.

    Parameters
    ----------
    body : list of Node
        The cell's nodes in topological order.
    batched, state_dependent : set of int
        ``id`` of nodes with a batch axis, and of nodes that depend on a state.
    shapes : dict
        ``id(node) -> shape`` (cell shapes, batch of one).
    clones : dict
        ``id(cell node) -> list of per-step slots``.
    input_names : dict
        ``id(input placeholder) -> input name``.
    shared_slot : dict
        ``id(cell node) -> slot`` of nodes shared by all steps.
    registry_get : callable
        ``op name -> OpDef``.
    """
    plan: list = []
    index: dict = {}
    for n in body:
        if n.is_leaf or id(n) not in batched or id(n) in state_dependent:
            continue
        kw = _time_batched_kw(n.op, dict(n.attrs))
        if kw is None:
            continue
        refs = []
        for k, i in enumerate(n.inputs):
            if id(i) in index:
                refs.append(("h", index[id(i)]))
            elif id(i) in input_names:
                refs.append(("x", input_names[id(i)]))
            elif id(i) in shared_slot and len(shapes[id(i)] or ()) <= len(shapes[id(n)] or ()):
                if n.op == "matmul" and (k != 1 or len(shapes[id(i)]) != 2):
                    refs = None
                    break
                refs.append(("s", shared_slot[id(i)]))
            else:
                refs = None
                break
        if refs is None or all(r[0] == "s" for r in refs):
            continue
        if n.op == "matmul" and refs[0][0] == "s":
            continue
        op = registry_get(n.op)
        vjps = tuple(op.input_vjp(k) for k in range(len(n.inputs)))
        index[id(n)] = len(plan)
        plan.append(TimeBatch(n.op, op.forward, vjps, kw, tuple(refs), clones[id(n)]))
    # a node read by one time-batched node alone (and by one of its inputs only) may give
    # its array to that reader's elementwise result: x W^T + b adds b in place. (Whether it
    # does depends on the run: only a lean run that keeps no per-step view of it.) Never a
    # slice: it is a view of its source's memory (an input's array, or a value that other
    # slices or nodes still read: in x[:, ::-1] + p, the sum would overwrite x itself).
    readers: dict = {}
    for tb in plan:
        for kind, key in tb.refs:
            if kind == "h":
                readers[key] = readers.get(key, 0) + 1
    for tb in plan:
        if tb.op in _POOLED_UFUNCS and not tb.kw:
            for m in ((0, 1) if tb.op in ("add", "mul") else (0,)):
                kind, key = tb.refs[m]
                if kind == "h" and readers[key] == 1 and plan[key].op != "getitem":
                    tb.donor = m
                    break
    return plan


def time_batched_forward(plan, vals, xs, stacked, pool=None, no_views=(), stand_in=None):
    """Run the time-batched nodes; store stacked values and per-step views (for the nodes in
    ``no_views``, which a lean run reads only stacked, one ``stand_in(shape, dtype)``)."""
    for k, tb in enumerate(plan):
        args = [_stacked(r, vals, xs, stacked) for r in tb.refs]
        v = _in_place(tb, args, no_views)
        if v is None and pool is not None:
            v = _into_pool(tb, args, pool)
        if v is None:
            v = tb.fwd(*args, **tb.kw)
        stacked[k] = v
        if k in no_views:
            one = stand_in(v.shape[1:], v.dtype)
            for s in tb.slots:
                vals[s] = one
        else:
            for t, s in enumerate(tb.slots):
                vals[s] = v[t]


def time_batched_chunk(plan, vals, xs, t0, t1, pool=None, full=None, no_views=(),
                       stand_in=None) -> dict:
    """Run the time-batched nodes for steps ``t0 .. t1-1`` only (a long sequence's input
    projection a chunk at a time, just before the steps that read it) and give those steps'
    slots views of the results (``stand_in``s for the nodes in ``no_views``).

    ``full``: ``{node: (T, ...) array}`` to copy each chunk into (made at the first chunk):
    a run that keeps the stacked values computes them chunk by chunk too, so that they are
    the same numbers as a lean run's. Returns ``{node: chunk value}``.
    """
    chunk: dict = {}
    for k, tb in enumerate(plan):
        args = []
        for kind, key in tb.refs:
            args.append(chunk[key] if kind == "h" else xs[key][t0:t1] if kind == "x"
                        else vals[key])
        v = _in_place(tb, args, no_views) if full is None else None
        if v is None and pool is not None:
            v = _into_pool(tb, args, pool)
        if v is None:
            v = tb.fwd(*args, **tb.kw)
        chunk[k] = v
        if full is not None:
            if tb.op == "getitem":  # a view of its (already full) source
                src = tb.refs[0]
                base = full[src[1]] if src[0] == "h" else xs[src[1]]
                if k not in full:
                    full[k] = tb.fwd(base, *args[1:], **tb.kw)
                v = full[k][t0:t1]
            else:
                if k not in full:
                    T = len(tb.slots)
                    full[k] = np.empty((T,) + v.shape[1:], v.dtype)
                dst = full[k][t0:t1]
                dst[...] = v
                v = chunk[k] = dst
        if k in no_views:
            one = stand_in(v.shape[1:], v.dtype)
            for s in tb.slots[t0:t1]:
                vals[s] = one
        else:
            slots = tb.slots
            for t in range(t0, t1):
                vals[slots[t]] = v[t - t0]
    return chunk


def chunk_of(plan, t0, t1):
    """The time-batched nodes restricted to steps ``t0 .. t1-1`` (for a chunk's backward)."""
    return [TimeBatch(tb.op, tb.fwd, tb.vjps, tb.kw, tb.refs, tb.slots[t0:t1], tb.donor)
            for tb in plan]


def _in_place(tb, args, no_views):
    """``tb``'s value computed in its donor input's array (see :class:`TimeBatch`) when the
    run keeps no view of that input (``no_views``), the array owns its memory (a view's
    memory is another value's: an input's, or one still read) and the result has the array's
    shape and type (the same ufunc on the same operands: the same bits), else None."""
    m = tb.donor
    if m is None or tb.refs[m][1] not in no_views:
        return None
    t = args[m]
    if type(t) is not np.ndarray or not t.flags.writeable or t.base is not None:
        return None
    shape, dtype = t.shape, t.dtype
    for a in args:  # arrays of t's type, of t's shape or of a trailing part of it (a bias)
        if type(a) is not np.ndarray or a.dtype is not dtype or (
                a.shape != shape and a.shape != shape[len(shape) - a.ndim:]):
            return None
    return _POOLED_UFUNCS[tb.op](*args, out=t)


def _into_pool(tb, args, pool):
    """``tb``'s value computed into an array from ``pool`` (elementwise ops and a stack of
    rows times a matrix), or None for other ops."""
    if tb.kw or args[0].nbytes * 8 < _POOL_BYTES or \
            not all(type(a) is np.ndarray for a in args):
        return None  # (a stack of rows times a matrix may be 8 times larger than its rows)
    if tb.op in _POOLED_UFUNCS:
        big = max(args, key=lambda a: a.size)
        if not _POOL_BYTES <= big.nbytes <= _POOL_MAX_BYTES:
            return None
        shape = big.shape if all(a.shape == big.shape for a in args) else \
            np.broadcast_shapes(*(a.shape for a in args))
        out = pool.take(shape, np.result_type(*args))
        return _POOLED_UFUNCS[tb.op](*args, out=out)
    if tb.op == "matmul":
        a, b = args
        if b.ndim == 2 and a.ndim > 2 and a.flags.c_contiguous and a.shape[-1] == b.shape[0]:
            rows = a.reshape(-1, a.shape[-1])
            dtype = np.result_type(a, b)
            if not _POOL_BYTES <= rows.shape[0] * b.shape[1] * dtype.itemsize <= _POOL_MAX_BYTES:
                return None
            # (taken in the result's own shape: the array a backward pass's rows of the
            # same shape take again, see GradRows, once the steps have let go of it)
            out = pool.take(a.shape[:-1] + (b.shape[1],), dtype)
            np.matmul(rows, b, out=out.reshape(rows.shape[0], b.shape[1]))
            return out
    return None


# arrays smaller than this come from the allocator's free lists, not new pages: no pool
_POOL_BYTES = 1 << 17
# and larger ones cost more to keep between runs (memory) than their page faults cost (time
# against the arithmetic on them; measured: no gain at the benchmark's medium and long sizes)
_POOL_MAX_BYTES = 1 << 23
_POOLED_UFUNCS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                  "tanh": np.tanh, "exp": np.exp}


def _stacked(ref, vals, xs, stacked):
    kind, k = ref
    if kind == "h":
        return stacked[k]
    if kind == "x":
        return xs[k]
    return vals[k]


def alone(a, g) -> bool:
    """True if ``a`` may take ``a + g`` in place (``g`` None: may be written in place): an
    array owning its memory, writeable, of ``g``'s shape and dtype, that only its container
    and the caller refer to (no other variable, no view: a view holds a reference to its
    base). Called as ``alone(prev, g)`` with ``prev = container[key]``."""
    return (type(a) is np.ndarray and a.base is None and a.flags.writeable
            and (g is None or type(g) is np.ndarray and a.shape == g.shape
                 and a.dtype == g.dtype)
            and getrefcount(a) <= 4)  # the container's, the caller's, ours, getrefcount's


def _tiling_slices(plan, stacked, grads) -> dict:
    """``{k: (source, dtype)}`` for the time-batched slices ``k`` whose gradients can be
    written straight into their source's gradient: the slices (``getitem`` cutting one axis)
    that no time-batched node reads, that together tile their source (a GRU's three gates of
    the input projection), that are its only time-batched readers, and whose every step has a
    gradient of one float type (the type of the source's gradient, as the VJP would make it);
    an empty dict if there are none."""
    readers: dict = {}
    for k, tb in enumerate(plan):
        for kind, key in tb.refs:
            if kind == "h":
                readers.setdefault(key, []).append(k)
    out = {}
    for src, ks in readers.items():
        cuts = []
        shape = tuple(stacked[src].shape)
        for k in ks:
            tb = plan[k]
            cut = _axis_cut(tb.kw.get("index"), shape) if tb.op == "getitem" else None
            if cut is None or k in readers:
                break
            cuts.append((cut, k))
        else:
            cuts.sort()
            axis = cuts[0][0][0]
            edge = 0
            for (ax, start, stop), _k in cuts:
                if ax != axis or start != edge:
                    break
                edge = stop
            else:
                if edge != shape[axis]:
                    continue
                first = grads[plan[ks[0]].slots[0]]
                if type(first) is not np.ndarray:
                    continue
                dtype = np.result_type(first.dtype, stacked[src].dtype)
                if all(type(p) is np.ndarray and p.dtype == dtype
                       for k in ks for p in (grads[s] for s in plan[k].slots)):
                    for k in ks:
                        out[k] = (src, dtype)
    return out


def time_batched_backward(plan, vals, xs, stacked, grads, owned, want, input_slots, acc,
                          keep_views=True, stacks=None, pool=None):
    """Backpropagate through the time-batched nodes in one call each (after the step loop).

    Per-step gradients that the steps left in ``grads`` are stacked; gradients to shared nodes
    are accumulated once; gradients to per-step inputs are split over their steps.
    ``keep_views`` is True (keep every node's per-step gradient, as a view) or the slots
    whose per-step gradients to keep.
    """
    from_batched: dict = {}
    tiles = _tiling_slices(plan, stacked, grads) if len(plan) > 2 else None
    for k in range(len(plan) - 1, -1, -1):
        tb = plan[k]
        per = [grads[s] for s in tb.slots]
        if tiles and k in tiles:
            # a slice of a projection that its slices tile: its per-step gradients are
            # stacked straight into the slice of the projection's gradient (one array for
            # all the slices, no zeros, no sum)
            src, dtype = tiles[k]
            buf = from_batched.get(src)
            if buf is None:
                buf = from_batched[src] = take(pool, tuple(stacked[src].shape), dtype)
            g = buf[tb.kw["index"]]
            np.stack(per, out=g)
            for t, s in enumerate(tb.slots):
                grads[s] = g[t] if keep_views is True or s in keep_views else None
            continue
        g = from_batched.pop(k, None)
        if any(p is not None for p in per):
            zero = None
            parts = []
            for p in per:
                if p is None:
                    if zero is None:
                        like = vals[tb.slots[0]]  # an array, or a lean run's stand-in
                        zero = np.zeros(like.shape, dtype=like.dtype)
                    p = zero
                parts.append(p)
            step_g = stack_once(parts, {} if stacks is None else stacks, pool)
            g = step_g if g is None else g + step_g
        if g is None:
            continue
        for t, s in enumerate(tb.slots):
            # per-step views, for inspection (a lean run keeps those of states and outputs)
            grads[s] = g[t] if keep_views is True or s in keep_views else None
        ans = stacked[k]
        args = [_stacked(r, vals, xs, stacked) for r in tb.refs]
        for m, (kind, key) in enumerate(tb.refs):
            f = tb.vjps[m]
            if f is None:
                continue
            if kind == "s" and not want[key]:
                continue
            if kind == "x" and not want[input_slots[key][0]]:
                continue
            if kind == "h" and tb.op == "getitem":
                prev = from_batched.get(key)
                if prev is not None and _basic_index(tb.kw["index"]) \
                        and alone(prev, None) and prev.dtype == g.dtype:
                    # a slice of a projection another slice already sent a gradient to: add
                    # into that gradient's slice (no zero-filled array per slice)
                    prev[tb.kw["index"]] += g
                    continue
            if tb.op in ("add", "sub") and kind == "s":
                gm = _summed(f, m, g, args[m], stacks)
            else:
                gm = f(g, ans, *args, **tb.kw)
            if gm is None:
                continue
            if kind == "h":
                prev = from_batched.get(key)
                if prev is None:
                    from_batched[key] = gm
                elif alone(prev, gm):
                    prev += gm  # (the slices of one projection: no third array)
                else:
                    from_batched[key] = prev + gm
            elif kind == "s":
                acc(grads, owned, key, gm)
            else:
                for t, s in enumerate(input_slots[key]):
                    acc(grads, owned, s, gm[t])


def flush_program(tpl, plan, order, input_slots, shared=()):
    """One straight-line function for what follows a backward pass's step loop when all steps
    are flushed at once: :meth:`StepTemplates.flush` of the parts filed under the keys
    ``order`` (in that order) and then :func:`time_batched_backward` over ``plan``; or None
    where the plan has a slice (``getitem``: the slices' own devices stay generic).

    The function makes the very calls of those two, on the same arrays in the same order
    (the same bits), with the loops over keys, time-batched nodes and their inputs written
    out, and each node's slots, attributes and VJPs bound as constants: at a small size the
    interpretation of the general loops costs more than the few products they lead to.
    Called as ``post(d, vals, grads, owned, acc, stacks, pool, xs, stacked, want,
    keep_views)``; ``d`` must hold exactly the keys ``order`` (the caller checks). Then the
    backward entries ``shared`` (of the nodes outside the steps: a weight's transpose),
    as the reference walk runs them. A node's per-step slots, evenly spaced, are read and
    cleared as one slice of the gradient list."""
    if any(tb.op == "getitem" for tb in plan):
        return None
    ns = {"stack_once": stack_once, "_summed": _summed, "_per_step": _per_step,
          "_views": _views, "_into_batched": _into_batched}

    def into(pad, slot, value):  # acc(grads, owned, slot, value), its first case written out
        add(f"{pad}if grads[{slot}] is None:")  # (no name for the old one: see alone)
        add(f"{pad}    grads[{slot}] = {value}")
        add(f"{pad}else:")
        add(f"{pad}    acc(grads, owned, {slot}, {value})")

    lines = ["def post(d, vals, grads, owned, acc, stacks, pool, xs, stacked, want, kv):",
             "    rows = d.rows",
             "    if rows:",
             "        for src in rows.values():",
             "            src.seed(stacks)"]
    add = lines.append
    for j, key in enumerate(order):
        vjp, m, target, has_other = tpl.deferred[key]
        ns[f"F{j}"] = vjp
        add(f"    parts = d[{key!r}]")
        add("    if parts:")
        add("        parts.reverse()")
        add("        G = stack_once([p[0] for p in parts], stacks, pool)")
        if has_other:
            add("        o = stack_once([p[1] for p in parts], stacks, pool)")
            args = f"o, vals[{target}]" if m == 1 else f"vals[{target}], o"
            add(f"        gm = F{j}(G, None, {args})")
        else:
            add(f"        gm = _summed(F{j}, {m}, G, vals[{target}], stacks)")
        into("        ", target, "gm")
    if plan:
        add("    fb = {}")
    for k in range(len(plan) - 1, -1, -1):
        tb = plan[k]
        ns[f"S{k}"] = tb.slots
        n = len(tb.slots)
        cut = _even(tb.slots)
        add(f"    g = fb.pop({k}, None)")
        add(f"    per = grads[{cut}]" if cut else f"    per = [grads[s] for s in S{k}]")
        add("    for p in per:")
        add("        if p is not None:")
        add(f"            step_g = _per_step(per, vals[{tb.slots[0]}], stacks, pool)")
        add("            g = step_g if g is None else g + step_g")
        add("            break")
        add("    if g is not None:")
        if cut:
            ns[f"N{k}"] = [None] * n
            add(f"        if kv is True or not kv.isdisjoint(S{k}):")
            add(f"            _views(grads, g, S{k}, kv)")
            add("        else:")
            add(f"            grads[{cut}] = N{k}")
        else:
            add(f"        _views(grads, g, S{k}, kv)")
        add(f"        ans = stacked[{k}]")
        args = []
        for m, (kind, key) in enumerate(tb.refs):
            if kind == "h":
                args.append(f"stacked[{key}]")
            elif kind == "x":
                ns[f"X{k}_{m}"] = key
                args.append(f"xs[X{k}_{m}]")
            else:
                args.append(f"vals[{key}]")
        if tb.kw:
            ns[f"KW{k}"] = tb.kw
        for m, (kind, key) in enumerate(tb.refs):
            f = tb.vjps[m]
            if f is None:
                continue
            ns[f"V{k}_{m}"] = f
            pad = "        "
            if kind == "s":
                add(f"{pad}if want[{key}]:")
                pad += "    "
            elif kind == "x":
                add(f"{pad}if want[{input_slots[key][0]}]:")
                ns[f"I{k}_{m}"] = tuple(input_slots[key])
                pad += "    "
            if tb.op in ("add", "sub") and kind == "s":
                add(f"{pad}gm = _summed(V{k}_{m}, {m}, g, {args[m]}, stacks)")
            else:
                kw = f", **KW{k}" if tb.kw else ""
                add(f"{pad}gm = V{k}_{m}(g, ans, {', '.join(args)}{kw})")
            add(f"{pad}if gm is not None:")
            if kind == "h":
                add(f"{pad}    _into_batched(fb, {key}, gm)")
            elif kind == "s":
                into(pad + "    ", key, "gm")
            else:
                add(f"{pad}    for t, s in enumerate(I{k}_{m}):")
                add(f"{pad}        acc(grads, owned, s, gm[t])")
    for j, (out, ins, fns, kw, _step) in enumerate(shared):
        add(f"    g = grads[{out}]")
        add("    if g is not None:")
        args = ", ".join(f"vals[{i}]" for i in ins)
        if kw:
            ns[f"SK{j}"] = kw
        for m, (i, f) in enumerate(fns):
            ns[f"SF{j}_{m}"] = f
            add(f"        gi = SF{j}_{m}(g, vals[{out}], {args}{f', **SK{j}' if kw else ''})")
            add("        if gi is not None:")
            into("            ", i, "gi")
    return _compile("\n".join(lines) + "\n", ns, "post")


def _even(slots) -> str:
    """``"a:b:c"`` if ``slots`` are ``range(a, b, c)`` (c > 0), else ``""``."""
    if len(slots) < 2:
        return ""
    step = slots[1] - slots[0]
    if step <= 0 or any(b - a != step for a, b in zip(slots, slots[1:])):
        return ""
    return f"{slots[0]}:{slots[-1] + 1}:{step}"


def _per_step(per, like, stacks, pool):
    """The stacked per-step gradients ``per`` of a time-batched node (zeros for a step with
    none, shaped as ``like``: its first step's value or stand-in), as in
    :func:`time_batched_backward`."""
    zero = None
    parts = []
    for p in per:
        if p is None:
            if zero is None:
                zero = np.zeros(like.shape, dtype=like.dtype)
            p = zero
        parts.append(p)
    return stack_once(parts, stacks, pool)


def _views(grads, g, slots, keep_views):
    """Each step's gradient of a time-batched node: a view of ``g`` where kept (see
    :func:`time_batched_backward`), else None."""
    if keep_views is True:
        for t, s in enumerate(slots):
            grads[s] = g[t]
    else:
        for t, s in enumerate(slots):
            grads[s] = g[t] if s in keep_views else None


def _into_batched(from_batched, key, gm):
    """Add ``gm`` into time-batched node ``key``'s gradient (as
    :func:`time_batched_backward` does)."""
    prev = from_batched.get(key)
    if prev is None:
        from_batched[key] = gm
    elif alone(prev, gm):
        prev += gm
    else:
        from_batched[key] = prev + gm

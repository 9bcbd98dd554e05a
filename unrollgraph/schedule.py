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
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["StepTemplates"]


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

    ``ok`` is False when the steps do not share a shape; callers then use the generic loop.
    """

    def __init__(self, entries, blocks, state_in):
        self.blocks = blocks
        self.state_in = state_in
        self.ok = True
        by_step: dict = {}
        for e in entries:
            if e[5] is not None:
                by_step.setdefault(e[5], []).append(e)
        self.step_entries = [by_step.get(t, []) for t in range(len(blocks))]
        self.sigs = []
        self._fwd_cache: dict = {}
        self._bwd_cache: dict = {}
        self.rel: list = []
        for t, es in enumerate(self.step_entries):
            base, length = blocks[t]
            rel = []
            for out, ins, fwd, vjps, kw, _ in es:
                refs = tuple(_ref(i, base, state_in[t], length) for i in ins)
                if None in refs or not (base <= out < base + length):
                    self.ok = False
                    return
                rel.append((out - base, refs, fwd, vjps, _kw_key(kw), kw))
            self.rel.append(rel)
            self.sigs.append(tuple((r[0], r[1], id(r[2]), r[4]) for r in rel))

    # -- forward -------------------------------------------------------------------------------
    def forward_fn(self, t):
        sig = self.sigs[t]
        fn = self._fwd_cache.get(sig)
        if fn is None:
            fn = self._fwd_cache[sig] = self._make_forward(self.rel[t])
        return fn

    def _make_forward(self, rel):
        ns = {}
        nstates = max(len(s) for s in self.state_in) if self.state_in else 0
        lines = [f"def step(v, b{''.join(f', s{j}' for j in range(nstates))}):"]
        for k, (out, refs, fwd, _vjps, _key, kw) in enumerate(rel):
            ns[f"F{k}"] = functools.partial(fwd, **kw) if kw else fwd
            args = ", ".join(f"v[{_expr(r)}]" for r in refs)
            lines.append(f"    v[{_expr(('b', out))}] = F{k}({args})")
        if len(lines) == 1:
            lines.append("    pass")
        exec("\n".join(lines), ns)  # noqa: S102 - generated from the graph, no user text
        return ns["step"]

    # -- backward ------------------------------------------------------------------------------
    def backward_fn(self, t, want):
        base, _ = self.blocks[t]
        rel = self.rel[t]
        pattern = []
        for out, refs, *_ in rel:
            pattern.append(want[base + out])
            pattern.extend(want[self._abs(r, t)] for r in refs)
        key = (self.sigs[t], tuple(pattern))
        fn = self._bwd_cache.get(key)
        if fn is None:
            fn = self._bwd_cache[key] = self._make_backward(rel, t, want)
        return fn

    def _abs(self, ref, t):
        kind, k = ref
        if kind == "b":
            return self.blocks[t][0] + k
        if kind == "s":
            return self.state_in[t][k]
        return k

    def _make_backward(self, rel, t, want):
        base = self.blocks[t][0]
        ns = {"nd": np.ndarray}
        nstates = max(len(s) for s in self.state_in) if self.state_in else 0
        lines = [f"def back(v, g, o, b{''.join(f', s{j}' for j in range(nstates))}):"]
        for k in range(len(rel) - 1, -1, -1):
            out, refs, _fwd, vjps, _key, kw = rel[k]
            if not want[base + out]:
                continue
            todo = [
                (m, r) for m, r in enumerate(refs)
                if vjps[m] is not None and want[self._abs(r, t)]
            ]
            if not todo:
                continue
            o_expr = _expr(("b", out))
            lines.append(f"    x = g[{o_expr}]")
            lines.append("    if x is not None:")
            args = ", ".join(f"v[{_expr(r)}]" for r in refs)
            lines.append(f"        ans = v[{o_expr}]")
            for m, r in todo:
                name = f"V{k}_{m}"
                ns[name] = functools.partial(vjps[m], **kw) if kw else vjps[m]
                lines.append(f"        y = {name}(x, ans, {args})")
                lines.append("        if y is not None:")
                lines.append(f"            i = {_expr(r)}")
                lines.append("            p = g[i]")
                lines.append("            if p is None:")
                lines.append("                g[i] = y")
                lines.append("            elif o[i] and type(p) is nd:")
                lines.append("                p += y")
                lines.append("            else:")
                lines.append("                g[i] = p + y")
                lines.append("                o[i] = True")
        if len(lines) == 1:
            lines.append("    pass")
        exec("\n".join(lines), ns)  # noqa: S102 - generated from the graph, no user text
        return ns["back"]


def _kw_key(kw):
    # clones of one cell node share their attribute objects, so identity is the right key
    return tuple(sorted((k, id(v)) for k, v in kw.items())) if kw else ()

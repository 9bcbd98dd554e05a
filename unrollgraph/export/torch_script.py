"""TorchScript for an exported cell: what ``torch.jit.script(ug.export.to_torch(cell))`` compiles.

A :class:`~unrollgraph.export.torch_export.CellModule` runs its ops through Python lowering
rules (``rule(torch, *inputs, **attrs)``), which TorchScript cannot compile. So the module
hands ``torch.jit.script`` a stand-in (``CellModule.__prepare_scriptable__``) made of two
parts:

* the cell's **step** (every op of the folded cell, once), captured with ``torch.jit.trace``
  on an example batch and then checked on a second batch of another size and other values:
  a rule that branches on values or bakes in a size would answer differently there, and
  :class:`~unrollgraph.errors.LoweringError` says so (with the ops the step uses) instead of
  returning a module that is silently wrong;
* the **loop over time**, written in TorchScript for this cell's signature (its numbers of
  inputs, states and outputs), with ``lengths=`` (masking and padded steps) and
  ``truncate=`` (the early steps run without gradient) as the eager module has them.

The scripted module shares the eager module's parameters (an optimizer step on one is seen
by the other) and gives its outputs bit for bit. It takes tensors only: ``xs`` a tensor (a
dict name -> tensor for several inputs; ``None`` and ``steps=T`` for a cell without inputs),
``state`` a tensor (a tuple in declaration order for several states), ``lengths`` an int64
tensor, ``truncate`` an int. The argument checks of the eager module (which name the shapes
and types expected) are not compiled: check a call on the eager module first.
"""

from __future__ import annotations

import itertools
import linecache
import warnings

import torch

from ..errors import LoweringError

__all__ = ["scriptable"]

_COUNTER = itertools.count()


class _Step(torch.nn.Module):
    """One step of the cell as a function of tensors: ``(inputs..., states...) ->
    (outputs..., next states...)``; traced, it is the body the scripted loop calls."""

    def __init__(self, cell_module):
        super().__init__()
        self.cell = cell_module

    def forward(self, *args):
        m = self.cell
        n_in = len(m._input_slots)
        ref = m._reference()
        dtype = args[0].dtype if args else (ref.dtype if ref is not None else torch.float64)
        v = m._shared_values(dtype)
        for (s, _j), x in zip(m._input_slots, args[:n_in]):
            v[s] = x
        states = args[n_in:]
        for s, j in m._state_slots:
            v[s] = states[j]
        m._eval(m._step_prog, v, "in the traced step")
        return tuple(v[s] for s in m._out_slots) + tuple(v[s] for s in m._fb_slots)


def _examples(m, batch: int, seed: int):
    """Example inputs (one step) and states for a batch of ``batch``, in the module's float
    type and device."""
    ref = m._reference()
    dtype = ref.dtype if ref is not None else torch.float64
    device = ref.device if ref is not None else None
    gen = torch.Generator().manual_seed(seed)

    def rand(shape):
        return (0.5 + torch.rand(shape, generator=gen, dtype=torch.float64)).to(dtype).to(
            device)

    xs = [rand((batch,) + m._input_shapes[k]) for k in m.input_names]
    hs = [rand((batch,) + m._state_shapes[k]) for k in m.state_names]
    # the body reads only the inputs with a slot
    read = {j for _s, j in m._input_slots}
    return [x for j, x in enumerate(xs) if j in read] + hs


def _ops_of(m) -> str:
    ops = sorted({e[4].op for e in m._prog.step} | {e[4].op for e in m._prog.shared})
    return ", ".join(ops)


def _trace_step(m):
    """The traced step, checked on a batch of another size and other values."""
    who = f"exported cell {m.cell_name!r}"
    step = _Step(m)
    example = tuple(_examples(m, 2, 0))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # (a TracerWarning flags a value the trace may have fixed: checked below instead)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # (trace: the means here)
            traced = torch.jit.trace(step, example, check_trace=False, strict=False)
    except Exception as exc:
        raise LoweringError(
            f"{who}: torch.jit.script cannot compile the cell's lowering rules, and tracing "
            f"its step (ops {_ops_of(m)}) failed: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}; use torch.jit.trace(module, example_xs) "
            "on a sequence of the length you will run, or the eager module",
            op=None, target="torch",
        ) from None
    other = tuple(_examples(m, 3, 1))
    with torch.no_grad():
        want = step(*other)
        try:
            got = traced(*other)
        except Exception:
            got = ()
    same = len(got) == len(want) and all(
        g.shape == w.shape and torch.equal(g, w) for g, w in zip(got, want))
    if not same:
        raise LoweringError(
            f"{who}: torch.jit.script cannot compile the cell's lowering rules, and its step "
            f"traced on a batch of 2 computes something else on a batch of 3 (a rule among "
            f"ops {_ops_of(m)} branches on values or fixes a size); use "
            "torch.jit.trace(module, example_xs) with the batch size you will run, or the "
            "eager module",
            op=None, target="torch",
        )
    return traced


def _source(m, name: str) -> str:
    """The TorchScript module running the traced step over time, for this cell's signature."""
    n_in, n_st, n_out = len(m.input_names), len(m.state_names), len(m.output_names)
    read = [j for _s, j in m._input_slots]
    x_type = ("Optional[Tensor] = None" if n_in == 0 else "Tensor" if n_in == 1
              else "Dict[str, Tensor]")
    s_type = "Tensor" if n_st == 1 else f"Tuple[{', '.join(['Tensor'] * n_st) or '()'}]"
    y_type = "Tensor" if n_out == 1 else "Dict[str, Tensor]"
    L = []
    a = L.append
    a("import torch")
    a("from torch import Tensor")
    a("from typing import Dict, List, Optional, Tuple")
    a("")
    a("")
    a(f"class {name}(torch.nn.Module):")
    a("    def __init__(self, step, inits: List[Tensor], shapes: List[List[int]],")
    a("                 in_names: List[str], out_names: List[str]):")
    a("        super().__init__()")
    a("        self.step = step")
    a("        self.in_names: List[str] = in_names")
    a("        self.out_names: List[str] = out_names")
    for j in range(n_st):
        a(f"        self.register_buffer('init{j}', inits[{j}], persistent=False)")
        a(f"        self.shape{j}: List[int] = shapes[{j}]")
    a("")
    a(f"    def forward(self, xs: {x_type}, state: Optional[{s_type}] = None,")
    a("                lengths: Optional[Tensor] = None, truncate: Optional[int] = None,")
    a(f"                steps: Optional[int] = None) -> Tuple[{y_type}, {s_type}]:")
    if n_in == 0:
        a("        if steps is None:")
        a("            raise ValueError('the cell has no inputs: pass steps=T')")
        a("        T = steps")
        a("        B = 1")
        if n_st:
            a("        if state is not None:")
            a(f"            B = {'state' if n_st == 1 else 'state[0]'}.size(0)")
    else:
        for j in range(n_in):
            a(f"        x{j} = xs" if n_in == 1 else f"        x{j} = xs[self.in_names[{j}]]")
        a("        T = x0.size(0)")
        a("        B = x0.size(1)")
    if n_st:
        a("        if state is None:")
        for j in range(n_st):
            a(f"            h{j} = self.init{j}.expand([B] + self.shape{j}).clone()")
        a("        else:")
        for j in range(n_st):
            a(f"            h{j} = state" if n_st == 1 else f"            h{j} = state[{j}]")
    a("        first = 0")
    a("        if truncate is not None:")
    a("            if truncate < 1:")
    a("                raise ValueError('truncate must be a positive int or None')")
    a("            if truncate < T:")
    a("                first = T - truncate")
    if n_in:
        # the padded steps compute on a copy of the sequence's last real input
        a("        if lengths is not None:")
        a("            idx = torch.arange(B, device=lengths.device)")
        a("            rows = torch.clamp(lengths - 1, min=0)")
        a("            cols = torch.where(lengths > 0, idx, torch.argmax(lengths))")
        for j in read:
            a(f"            fill{j} = x{j}.detach()[rows, cols]")
        a("        else:")
        a("            idx = torch.zeros(0, dtype=torch.int64)")
        for j in read:
            a(f"            fill{j} = x{j}[0]")
    for j in range(n_out):
        a(f"        ys{j}: List[Tensor] = []")
    args = [f"xt{j}" for j in read] + [f"h{j}" for j in range(n_st)]
    a("        for t in range(T):")
    for j in read:
        a(f"            xt{j} = x{j}[t]")
    a("            if lengths is not None:")
    a("                run = lengths > t")
    for j in read:
        a(f"                xt{j} = torch.where(run.view([B] + [1] * (xt{j}.dim() - 1)), "
          f"xt{j}, fill{j})")
    body = [f"r = self.step({', '.join(args)})"]
    body += [f"y{j} = r[{j}]" for j in range(n_out)]
    body += [f"n{j} = r[{n_out + j}]" for j in range(n_st)]
    body += ["if lengths is not None:", "    run = lengths > t"]
    body += [f"    y{j} = torch.where(run.view([B] + [1] * (y{j}.dim() - 1)), y{j}, "
             f"torch.zeros((), dtype=y{j}.dtype, device=y{j}.device))" for j in range(n_out)]
    body += [f"    n{j} = torch.where(run.view([B] + [1] * (n{j}.dim() - 1)), n{j}, h{j})"
             for j in range(n_st)]
    # the steps truncation cuts run without gradient, their masking included (as eager)
    a("            if t < first:")
    a("                with torch.no_grad():")
    for line in body:
        a("                    " + line)
    a("            else:")
    for line in body:
        a("                " + line)
    for j in range(n_out):
        a(f"            ys{j}.append(y{j})")
    for j in range(n_st):
        a(f"            h{j} = n{j}")
    if n_out == 1:
        a("        out = torch.stack(ys0)")
    else:
        a("        out: Dict[str, Tensor] = {}")
        for j in range(n_out):
            a(f"        out[self.out_names[{j}]] = torch.stack(ys{j})")
    fin = "h0" if n_st == 1 else "(" + "".join(f"h{j}, " for j in range(n_st)) + ")"
    a(f"        return out, {fin}")
    return "\n".join(L) + "\n"


def scriptable(m) -> torch.nn.Module:
    """The module ``torch.jit.script`` compiles for the exported cell ``m`` (see this
    module's docstring).

    Raises
    ------
    LoweringError
        The step cannot be traced, or its trace computes something else on another batch
        (the message names the cell's ops and suggests ``torch.jit.trace``).
    """
    traced = _trace_step(m)
    name = f"ScriptedCell{next(_COUNTER)}"
    text = _source(m, name)
    # a file name of its own, in linecache: TorchScript reads a class's source from there
    filename = f"<unrollgraph scripted cell {name}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    ns: dict = {"__name__": f"unrollgraph_scripted_{name}"}
    exec(compile(text, filename, "exec"), ns)  # (generated above: it holds no user text)
    ref = m._reference()
    dtype = ref.dtype if ref is not None else torch.float64
    inits, shapes = [], []
    for k in m.state_names:
        shape = list(m._state_shapes[k])
        if k in m._inits:
            init = m._buffers[m._inits[k]].to(dtype)
        else:
            init = torch.zeros((), dtype=dtype, device=ref.device if ref is not None else None)
        inits.append(init)
        shapes.append(shape)
    return ns[name](traced, inits, shapes, list(m.input_names), list(m.output_names))

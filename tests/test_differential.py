"""Random cells, every execution option, against a plain reference.

A cell of a few ops drawn from every op in the registry is built through the public functions
and operators, as a user builds one. The unrolled net then runs with each execution option
(``keep="needed"`` and ``"all"``, the compiled step templates with and without fused slices,
and the generic node-by-node loop used under ``detect_anomaly``), with truncation and with
``lengths=``, and everything it returns (outputs, final states, every parameter's ``.grad``,
``xs.grad``, the initial state's ``.grad``, and the ``Run`` accessors) is compared with the
reference: the same equations stepped by hand on eager tensors, T times (each sequence alone
at its own length when lengths are given, detached before the last ``truncate`` steps).
Small cases are also checked against central finite differences.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import unrollgraph as ug

# the random cells may declare a state their graph never reads (a legitimate cell: it carries
# a value out as the final state); unroll tells a user so with a CellWarning, which these
# tests of the arithmetic do not check (tests/test_user_trial_cells.py does)
pytestmark = pytest.mark.filterwarnings("ignore::unrollgraph.CellWarning")

run_module = importlib.import_module("unrollgraph.run")  # (the executor: its knobs)

# examples per test: about 5 s each in the suite; set UNROLLGRAPH_DIFFERENTIAL_EXAMPLES (and
# UNROLLGRAPH_HYPOTHESIS_PROFILE=thorough, for fresh random draws) for a longer search
FLUSH = (run_module._FLUSH_ALL_BYTES, run_module._FLUSH_CHUNK_BYTES)
OUTPUT_BUFFER = run_module._OUTPUT_BUFFER_BYTES
EXAMPLES = int(os.environ.get("UNROLLGRAPH_DIFFERENTIAL_EXAMPLES", "60"))

# -------------------------------------------------------------------------------------------
# a cell is a spec: plain data, interpreted either on the cell's placeholders or on eager
# tensors (one step at a time)

# value kinds: ("x", k) input k, ("h", k) state k, ("p", name) parameter, ("v", j) op result j

# ops that combine rows of the batch (a loss over the batch): not used with lengths=, where
# the reference runs each sequence alone
MIXING = {"mse_loss", "bce"}


def _interpret(spec, xs, hs, params):
    """Run ``spec``'s ops on tensors ``xs`` (inputs), ``hs`` (states), ``params``; return the
    op results in order."""
    vals: list = []

    def get(ref):
        kind, k = ref
        return {"x": xs, "h": hs, "p": params, "v": vals}[kind][k]

    for op, refs, extra in spec["ops"]:
        a = [get(r) for r in refs]
        vals.append(_apply(op, a, extra))
    return vals


def _apply(op, a, extra):  # noqa: C901 - one branch per op
    if op == "add":
        return a[0] + a[1]
    if op == "sub":
        return a[0] - a[1]
    if op == "mul":
        return a[0] * a[1]
    if op == "radd":
        return extra + a[0]
    if op == "rsub":
        return extra - a[0]
    if op == "smul":
        return a[0] * extra
    if op == "div":
        return a[0] / (a[1] * a[1] + 1.0)
    if op == "rdiv":
        return 1.0 / (a[0] * a[0] + 0.5)
    if op == "neg":
        return -a[0]
    if op == "exp":
        return ug.exp(a[0])
    if op == "log":
        return ug.log(a[0] * a[0] + 0.5)
    if op == "sqrt":
        return ug.sqrt(a[0] * a[0] + 0.25)
    if op in ("tanh", "sigmoid", "relu", "abs"):
        return getattr(ug, op)(a[0])
    if op == "clip":
        return ug.clip(a[0], -0.5, 0.4)
    if op == "powc":
        return a[0] ** extra
    if op == "pow":
        return (a[0] * a[0] + 0.5) ** ug.tanh(a[1])
    if op == "maximum":
        return ug.maximum(a[0], a[1])
    if op == "minimum":
        return ug.minimum(a[0], a[1])
    if op == "where":
        return ug.where(a[0], a[1], a[2])
    if op == "where_cmp":  # a condition computed at every step: a comparison node
        return ug.where(a[0] > 0.1, a[1], a[2])
    if op in ("gt", "ge", "lt", "le"):  # 0/1 values, no gradient; mixed with a value
        c = {"gt": a[0] > a[1], "ge": a[0] >= a[1], "lt": a[0] < a[1], "le": a[0] <= a[1]}[op]
        return c * a[1] + c
    if op == "matmul":
        return a[0] @ a[1]
    if op == "matmul_t":
        return a[0] @ a[1].T
    if op == "matmul_vec":
        return (a[0] @ a[1]).reshape(-1, 1)
    if op == "matmul_derived":
        return a[0] @ (a[1] * 0.5 + 0.1)  # a weight computed from a parameter alone
    if op in ("sum", "mean", "max"):
        return getattr(a[0], op)(axis=1, keepdims=True)
    if op == "sum_flat":
        return ug.sum(a[0], axis=1).reshape(-1, 1)
    if op == "slice":
        return a[0][:, extra[0]:extra[1]]
    if op == "slice_step":
        return a[0][:, ::-1]
    if op == "index_int":
        return a[0][:, extra].reshape(-1, 1)
    if op == "index_list":
        return a[0][:, list(extra)]
    if op == "concat":
        return ug.concat([a[0], a[1]], axis=1)
    if op == "stack":
        s = ug.stack([a[0], a[1]], axis=1)  # (B, 2, d)
        return s.transpose(0, 2, 1).max(axis=2) + s[:, 1]
    if op == "softmax":
        return ug.softmax(a[0], axis=-1)
    if op == "log_softmax":
        return ug.log_softmax(a[0], axis=-1)
    if op == "mse_loss":
        return a[1] + ug.mse_loss(a[0], a[1])
    if op == "bce":
        return a[0] * ug.binary_cross_entropy_with_logits(a[0], ug.sigmoid(a[1]))
    raise AssertionError(op)


# op -> (number of value operands, can the result grow past its inputs' size)
UNARY = ["neg", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs", "clip", "powc",
         "radd", "rsub", "smul", "rdiv", "sum", "mean", "max", "sum_flat", "slice",
         "slice_step", "index_int", "index_list", "softmax", "log_softmax"]
BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "concat", "stack",
          "mse_loss", "bce", "gt", "ge", "lt", "le"]
WEIGHTED = ["matmul", "matmul_t", "matmul_vec", "matmul_derived"]
ALL_OPS = UNARY + BINARY + WEIGHTED + ["where", "where_cmp"]


@st.composite
def cells(draw, mixing=True):
    """A random cell spec: inputs, states, params, 3-15 ops, feedback edges, outputs."""
    n_in = draw(st.integers(1, 3))
    n_st = draw(st.integers(1, 3))
    dims = st.integers(1, 4)
    in_dims = [draw(dims) for _ in range(n_in)]
    st_dims = [draw(dims) for _ in range(n_st)]
    # values: ref -> (width, size bound); every value has shape (B, width)
    shape: dict = {}
    for k, d in enumerate(in_dims):
        shape[("x", k)] = (d, 1.0)
    for k, d in enumerate(st_dims):
        shape[("h", k)] = (d, 4.0)  # (a next state is a value of size <= 4, see of_width)
    params: dict = {}
    ops: list = []

    def new_param(shp):
        name = f"p{len(params)}"
        params[name] = shp
        return ("p", name)

    def pick(pred=lambda w, m: True):
        refs = [r for r, (w, m) in shape.items() if pred(w, m)]
        return draw(st.sampled_from(refs)) if refs else None

    def add(op, refs, extra, width, bound):
        ref = ("v", len(ops))
        ops.append((op, tuple(refs), extra))
        shape[ref] = (width, bound)
        return ref

    n_ops = draw(st.integers(3, 15))
    # a loss over the batch inside a cell mixes its sequences: unroll refuses it (tested in
    # test_cell_batch), so it is never drawn here
    allowed = [o for o in ALL_OPS if o not in MIXING]
    for _ in range(n_ops):
        op = draw(st.sampled_from(allowed))
        a = pick()
        w, m = shape[a]
        if op in ("exp", "powc") and m > 2:
            op = "tanh"
        if op in UNARY:
            extra = None
            nw, nm = w, m
            if op == "exp":
                nm = float(np.exp(m))
            elif op == "log":
                nm = float(np.log(m * m + 0.5)) + 1.0
            elif op == "sqrt":
                nm = m + 0.5
            elif op in ("tanh", "sigmoid", "softmax"):
                nm = 1.0
            elif op == "log_softmax":
                nm = 2 * m + 2.0
            elif op == "clip":
                nm = 0.5
            elif op == "powc":
                extra = draw(st.sampled_from([2, 3, 0.5, -1.0]))
                if extra in (0.5, -1.0):  # on a positive value only
                    op, extra = "rdiv", None
                    nm = 2.0
                else:
                    nm = m ** extra
            elif op in ("radd", "rsub"):
                extra = draw(st.sampled_from([1.0, -0.5, 2.0]))
                nm = m + abs(extra)
            elif op == "smul":
                extra = draw(st.sampled_from([0.5, -1.5, 2.0]))
                nm = m * abs(extra)
            elif op == "rdiv":
                nm = 2.0
            elif op in ("sum", "sum_flat"):
                nw, nm = 1, m * w
            elif op in ("mean", "max"):
                nw = 1
            elif op == "slice":
                lo = draw(st.integers(0, w - 1))
                hi = draw(st.integers(lo + 1, w))
                extra, nw = (lo, hi), hi - lo
            elif op == "index_int":
                extra, nw = draw(st.integers(0, w - 1)), 1
            elif op == "index_list":
                extra = tuple(draw(st.lists(st.integers(0, w - 1), min_size=1, max_size=4)))
                nw = len(extra)
            add(op, [a], extra, nw, nm)
        elif op in BINARY:
            if op in ("concat", "stack"):
                b = pick(lambda w2, m2, w=w: w2 == w) if op == "stack" else pick()
            else:
                b = pick(lambda w2, m2, w=w: w2 == w or w2 == 1 or w == 1)
            w2, m2 = shape[b]
            if op == "pow" and m2 > 50:
                op = "add"
            nw = w + w2 if op == "concat" else max(w, w2)
            nm = {"add": m + m2, "sub": m + m2, "mul": m * m2, "div": m, "pow": m * m + 0.5,
                  "maximum": max(m, m2), "minimum": max(m, m2), "concat": max(m, m2),
                  "stack": 2 * max(m, m2), "mse_loss": m2 + (m + m2) ** 2,
                  "bce": m * (m + 1.0), "gt": m2 + 1.0, "ge": m2 + 1.0, "lt": m2 + 1.0,
                  "le": m2 + 1.0}[op]
            if op in ("mse_loss", "bce") and shape[b][0] != w:
                b, nw = a, w
            add(op, [a, b], None, nw, nm)
        elif op in ("where", "where_cmp"):
            b = pick(lambda w2, m2, w=w: w2 == w or w2 == 1 or w == 1)
            c = pick(lambda w2, m2, w=w, wb=shape[b][0]: w2 in (1, w, wb))
            nw = max(w, shape[b][0], shape[c][0])
            if shape[c][0] not in (1, nw):
                c = a
            add(op, [c, a, b], None, nw, max(m, shape[b][1]))
        else:  # a product with a parameter
            e = draw(st.integers(1, 4))
            if op == "matmul":
                p = new_param((w, e))
            elif op == "matmul_t":
                p = new_param((e, w))
            elif op == "matmul_vec":
                p, e = new_param((w,)), 1
            else:
                p = new_param((w, e))
            add(op, [a, p], None, e, 0.6 * w * m + 0.1 * w)
        # a value read by a vector parameter, broadcast (a shared weight times a batch)
        if draw(st.integers(0, 5)) == 0:
            last = ("v", len(ops) - 1)
            lw, lm = shape[last]
            add(draw(st.sampled_from(["add", "mul"])), [last, new_param((lw,))], None, lw,
                lm * 1.0 + 1.0)

    def of_width(width, state):
        """A value of shape (B, width) (its size bounded), made with a product if needed; not
        the state ``state`` itself (a state that never changes)."""
        ref = pick(lambda w2, m2: w2 == width and m2 <= 4)
        if ref == ("h", state):
            ref = None
        if ref is None or draw(st.booleans()):
            src = pick(lambda w2, m2: m2 <= 1e6)
            w2, m2 = shape[src]
            ref = add("matmul", [src, new_param((w2, width))], None, width,
                      0.6 * w2 * m2 + 0.1 * w2)
        if shape[ref][1] > 4:
            ref = add("tanh", [ref], None, width, 1.0)
        return ref

    feedback = [of_width(d, k) for k, d in enumerate(st_dims)]
    outputs = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "value", "state", "feedback"]))
        if kind == "state":  # an output equal to a state: prev = h
            outputs.append(("h", draw(st.integers(0, n_st - 1))))
        elif kind == "feedback":  # an output on the next-state node itself
            outputs.append(draw(st.sampled_from(feedback)))
        else:
            outputs.append(pick(lambda w2, m2: m2 <= 1e6))
    if draw(st.booleans()):  # two outputs on one node
        outputs.append(outputs[0])
    if draw(st.booleans()):
        params[f"p{len(params)}"] = (2,)  # declared, never used
    return {"in": in_dims, "st": st_dims, "params": params, "ops": ops, "feedback": feedback,
            "outputs": outputs}


def _param_values(spec, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-0.6, 0.6, shp) for k, shp in spec["params"].items()}


def build_cell(spec, values):
    cell = ug.Cell("random")
    xs = [cell.input(f"x{k}", (d,)) for k, d in enumerate(spec["in"])]
    hs = [cell.state(f"h{k}", (d,)) for k, d in enumerate(spec["st"])]
    params = {k: cell.param(k, v) for k, v in values.items()}
    vals = _interpret(spec, xs, hs, params)
    env = {"x": xs, "h": hs, "v": vals}
    for k, ref in enumerate(spec["feedback"]):
        cell.feedback(hs[k], env[ref[0]][ref[1]])
    for k, ref in enumerate(spec["outputs"]):
        cell.output(f"y{k}", env[ref[0]][ref[1]])
    return cell


# -------------------------------------------------------------------------------------------
# the reference: eager tensors, stepped by hand


def reference(spec, values, xs, h0s, seeds_out, seeds_fin, truncate=None):
    """Run the cell by hand on eager tensors for one batch of equal lengths. Returns outputs,
    finals, parameter grads, per-step parameter grads, xs grads, h0 grads, per-step state
    values and grads (the state after each step)."""
    T = len(seeds_out[0])
    first = 0 if truncate is None or truncate >= T else T - truncate
    h = [ug.tensor(v, requires_grad=True) for v in h0s]
    h_init = h
    x_leaves, p_leaves, outs, states = [], [], [], []
    for t in range(T):
        xt = [ug.tensor(x[t], requires_grad=True) for x in xs]
        pt = {k: ug.tensor(v, requires_grad=True) for k, v in values.items()}
        if t < first:
            with ug.no_grad():
                vals = _interpret(spec, xt, h, pt)
        else:  # (the states computed before ``first`` are constants: the cut)
            vals = _interpret(spec, xt, h, pt)
        env = {"x": xt, "h": h, "v": vals}
        outs.append([env[r[0]][r[1]] for r in spec["outputs"]])
        h = [env[r[0]][r[1]] for r in spec["feedback"]]
        states.append(h)
        x_leaves.append(xt)
        p_leaves.append(pt)
    loss = None
    for t in range(T):
        for k, o in enumerate(outs[t]):
            term = (o * seeds_out[k][t]).sum()
            loss = term if loss is None else loss + term
    for k, s in enumerate(h):
        term = (s * seeds_fin[k]).sum()
        loss = term if loss is None else loss + term
    if loss.requires_grad:
        loss.backward()

    def grad(t):
        return np.zeros_like(t.data) if t.grad is None else t.grad

    per_step = {k: np.stack([grad(p[k]) for p in p_leaves]) for k in values}
    return {
        "outs": [np.stack([o[k].data for o in outs]) for k in range(len(spec["outputs"]))],
        "finals": [s.data for s in h],
        "per_step": per_step,
        "params": {k: v.sum(axis=0) for k, v in per_step.items()},
        "xs": [np.stack([grad(x[k]) for x in x_leaves]) for k in range(len(xs))],
        "h0": [grad(v) for v in h_init],
        "states": [np.stack([s[k].data for s in states]) for k in range(len(h0s))],
        "state_grads": [np.stack([grad(s[k]) for s in states]) for k in range(len(h0s))],
        "final_requires_grad": [s.requires_grad for s in h],
    }


def reference_lengths(spec, values, xs, h0s, seeds_out, seeds_fin, lengths, truncate=None):
    """Each sequence alone at its own length; padded steps give zero outputs and keep the
    state; the result has the batched layout of a masked run."""
    T = xs[0].shape[0]
    res = {
        "outs": [np.zeros_like(s) for s in seeds_out],
        "finals": [np.array(h, copy=True) for h in h0s],
        "params": {k: np.zeros_like(v) for k, v in values.items()},
        "per_step": {k: np.zeros((T,) + v.shape) for k, v in values.items()},
        "xs": [np.zeros_like(x) for x in xs],
        "h0": [np.zeros_like(h) for h in h0s],
        "states": [np.repeat(h[None], T, axis=0) for h in h0s],
        "state_grads": [np.zeros((T,) + h.shape) for h in h0s],
    }
    first = 0 if truncate is None or truncate >= T else T - truncate
    for b, n in enumerate(lengths):
        n = int(n)
        row = slice(b, b + 1)
        # past its length the state is kept: its gradient is the final state's, all the way
        # back, if the kept value takes part in the backward pass at all (it does when it
        # requires grad, and it was computed after the cut; where the sequence ended before
        # the cut, that depends on what the masks read after it: not compared, NaN)
        one = None
        if n:
            cut = None if truncate is None or truncate >= T else max(n - first, 0)
            one = reference(spec, values, [x[:n, row] for x in xs], [h[row] for h in h0s],
                            [s[:n, row] for s in seeds_out], [s[row] for s in seeds_fin],
                            truncate=cut)
        for k in range(len(h0s)):
            if n > first and one["final_requires_grad"][k] or n == 0 and first == 0:
                kept = seeds_fin[k][row]
            elif n > first:
                kept = 0.0
            else:
                kept = np.nan
            for t in range(max(n, first), T):
                res["state_grads"][k][t, row] = kept
        if n == 0:
            for k in range(len(h0s)):
                res["h0"][k][row] = seeds_fin[k][row] if first == 0 else 0.0
            continue
        # (one: the sequence alone, cut where the batched run is cut, at T - truncate)
        for k in range(len(seeds_out)):
            res["outs"][k][:n, row] = one["outs"][k]
        for k in range(len(h0s)):
            res["finals"][k][row] = one["finals"][k]
            res["h0"][k][row] = one["h0"][k]
            res["states"][k][:n, row] = one["states"][k]
            res["states"][k][n:, row] = one["finals"][k]
            res["state_grads"][k][:n, row] = one["state_grads"][k]
        for k in values:
            res["params"][k] += one["params"][k]
            res["per_step"][k][:n] += one["per_step"][k]
        for k in range(len(xs)):
            res["xs"][k][:n, row] = one["xs"][k]
    return res


# -------------------------------------------------------------------------------------------
# the net, run with one execution option

# (keep, path, fuse): the compiled step templates with and without one call for an op on
# several slices (and with the shared weights' gradients flushed every two steps, as a long
# lean run does), and the generic node-by-node loop (what ``detect_anomaly`` runs)
OPTIONS = [("needed", "templates", True), ("needed", "templates", False),
           ("needed", "chunked", True),
           ("all", "templates", True), ("all", "templates", False),
           ("needed", "plain", True), ("all", "plain", False),
           ("needed", "generic", False), ("all", "generic", False)]


def _as_list(x, n):
    if isinstance(x, dict):
        return list(x.values())
    if isinstance(x, tuple):
        return list(x)
    assert n == 1
    return [x]


def run_net(cell, spec, T, xs, h0s, seeds_out, seeds_fin, option, truncate=None,
            lengths=None, monkeypatch=None, checkpoint=None):
    keep, path, fuse = option
    net = ug.unroll(cell, steps=T, truncate=truncate, keep=keep, checkpoint=checkpoint)
    cell.zero_grad()
    xts = {f"x{k}": ug.tensor(x, requires_grad=True) for k, x in enumerate(xs)}
    h0ts = tuple(ug.tensor(h, requires_grad=True) for h in h0s)
    monkeypatch.setattr(run_module, "_FUSE_ELEMENTS", 1 << 30 if fuse else 0)
    chunked = path == "chunked"
    monkeypatch.setattr(run_module, "_FLUSH_ALL_BYTES", 0 if chunked else FLUSH[0])
    monkeypatch.setattr(run_module, "_FLUSH_CHUNK_BYTES", 1 if chunked else FLUSH[1])
    # (and the outputs written step by step into their arrays, as on long sequences)
    monkeypatch.setattr(run_module, "_OUTPUT_BUFFER_BYTES", 0 if chunked else OUTPUT_BUFFER)
    # the plain path (each step's own input projection, shared-weight gradients added step
    # by step) or the batched one, whatever the number of steps
    monkeypatch.setattr(run_module, "_PLAIN_STEPS", 1 << 30 if path == "plain" else 0)
    for _call in range(2):  # a second call reuses the net's caches and buffer pool
        cell.zero_grad()
        for t in list(xts.values()) + list(h0ts):
            t.zero_grad()
        if path == "generic":
            with ug.detect_anomaly():
                outs, fins = net(xts, state=h0ts, lengths=lengths)
                loss = _loss(outs, fins, spec, seeds_out, seeds_fin)
                loss.backward()
        else:
            outs, fins = net(xts, state=h0ts, lengths=lengths)
            loss = _loss(outs, fins, spec, seeds_out, seeds_fin)
            loss.backward()
    run = net.last_run
    rnet = run.net
    params = cell.parameters()
    res = {
        "outs": [o.data for o in _as_list(outs, len(spec["outputs"]))],
        "finals": [f.data for f in _as_list(fins, len(spec["st"]))],
        "grads": {k: p.grad for k, p in params.items()},
        "xs": [x.grad for x in xts.values()],
        "h0": [h.grad for h in h0ts],
        "state_grads": [run.state_grads(f"h{k}") for k in range(len(spec["st"]))],
        "per_step": {k: run.step_contributions(k) for k in params},
        "states": [np.stack([run.value(n) for n in rnet.state_nodes[f"h{k}"]])
                   for k in range(len(spec["st"]))],
        "state_node_grads": [
            np.stack([_or_zeros(run.grad(n), run.value(n)) for n in rnet.state_nodes[f"h{k}"]])
            for k in range(len(spec["st"]))],
        "out_nodes": [np.stack([run.value(n) for n in rnet.output_nodes[f"y{k}"]])
                      for k in range(len(spec["outputs"]))],
        "values": [run.value(n) for n in rnet.nodes],
        "node_grads": [run.grad(n) for n in rnet.nodes],
    }
    return res


def _or_zeros(g, like):
    return np.zeros(np.shape(like)) if g is None else g


def _loss(outs, fins, spec, seeds_out, seeds_fin):
    loss = None
    for o, s in zip(_as_list(outs, len(spec["outputs"])), seeds_out):
        loss = (o * s).sum() if loss is None else loss + (o * s).sum()
    for f, s in zip(_as_list(fins, len(spec["st"])), seeds_fin):
        loss = loss + (f * s).sum()
    return loss


def close(got, want, what):
    want = np.asarray(want)
    got = np.zeros_like(want) if got is None else np.asarray(got)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if np.isnan(want).any():  # NaN: either answer is right (see reference_lengths)
        got = np.where(np.isnan(want), 0.0, got)
        want = np.where(np.isnan(want), 0.0, want)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10 * scale, err_msg=what)


def check_against(ref, res, spec, option, masked=False):
    tag = f"{option}"
    for k, (a, b) in enumerate(zip(res["outs"], ref["outs"])):
        close(a, b, f"{tag} output y{k}")
        close(res["out_nodes"][k], b, f"{tag} Run.value of output y{k}")
    for k, (a, b) in enumerate(zip(res["finals"], ref["finals"])):
        close(a, b, f"{tag} final state h{k}")
    for k, g in res["grads"].items():
        close(g, ref["params"][k], f"{tag} {k}.grad")
        close(res["per_step"][k], ref["per_step"][k], f"{tag} step_contributions({k!r})")
    for k, g in enumerate(res["xs"]):
        close(g, ref["xs"][k], f"{tag} x{k}.grad")
    for k, g in enumerate(res["h0"]):
        close(g, ref["h0"][k], f"{tag} h0 h{k}.grad")
    for k in range(len(spec["st"])):
        close(res["states"][k], ref["states"][k], f"{tag} Run.value of state h{k}")
        close(res["state_grads"][k], ref["state_grads"][k], f"{tag} state_grads('h{k}')")
        if not masked:  # (a masked state node is the kept value; its outputs read the other)
            close(res["state_node_grads"][k], ref["state_grads"][k], f"{tag} Run.grad of h{k}")


def _used_params(spec):
    return {r[1] for _op, refs, _e in spec["ops"] for r in refs if r[0] == "p"}


def differential(spec, T, B, seed, truncate, lengths, monkeypatch, gradcheck=False):
    rng = np.random.default_rng(seed)
    values = _param_values(spec, seed)
    xs = [rng.uniform(-1, 1, (T, B, d)) for d in spec["in"]]
    h0s = [rng.uniform(-1, 1, (B, d)) for d in spec["st"]]
    cell = build_cell(spec, values)
    widths = [cell.outputs[f"y{k}"].shape[1:] for k in range(len(spec["outputs"]))]
    seeds_out = [rng.standard_normal((T, B) + w) for w in widths]
    seeds_fin = [rng.standard_normal((B, d)) for d in spec["st"]]
    if lengths is None:
        ref = reference(spec, values, xs, h0s, seeds_out, seeds_fin, truncate)
    else:
        ref = reference_lengths(spec, values, xs, h0s, seeds_out, seeds_fin, lengths, truncate)
    results = []
    for option in OPTIONS:
        res = run_net(cell, spec, T, xs, h0s, seeds_out, seeds_fin, option, truncate, lengths,
                      monkeypatch)
        check_against(ref, res, spec, option, lengths is not None)
        results.append(res)
        for k in spec["params"]:
            if k not in _used_params(spec):
                assert res["grads"][k] is None, f"{option}: unused {k}.grad is not None"
    # every node's value and gradient (Run.value / Run.grad, recomputed by a lean run) agrees
    # with the generic loop keeping everything
    base = results[-1]
    for option, res in zip(OPTIONS, results):
        for s, (a, b) in enumerate(zip(res["values"], base["values"])):
            close(a, b, f"{option} Run.value of node {s}")
        for s, (a, b) in enumerate(zip(res["node_grads"], base["node_grads"])):
            if a is None or b is None:
                assert a is None or not np.any(a), (option, s)
                assert b is None or not np.any(b), (option, s)
            else:
                close(a, b, f"{option} Run.grad of node {s}")
    if gradcheck and (truncate is None or truncate >= T):  # (truncation is not the derivative)
        net = ug.unroll(cell, steps=T, truncate=truncate)
        # the parameters the unrolled graph reads (gradcheck refuses an input the result does
        # not depend on: a parameter used only by ops whose results nothing reads)
        used = [p for k, p in cell.parameters().items() if k in net._used_params]

        def fn(*args):
            xts = {f"x{k}": x for k, x in enumerate(args[len(used):])}
            outs, fins = net(xts, state=tuple(h0s), lengths=lengths)
            return _loss(outs, fins, spec, seeds_out, seeds_fin)

        assert ug.gradcheck(fn, used + [ug.tensor(x, name=f"x{k}") for k, x in enumerate(xs)])


@settings(max_examples=EXAMPLES)
@given(spec=cells(), data=st.data())
def test_random_cells_agree_with_the_reference_walk(spec, data, monkeypatch_session):
    T = data.draw(st.integers(1, 5), label="T")
    B = data.draw(st.integers(1, 3), label="B")
    truncate = data.draw(st.none() | st.integers(1, T + 1), label="truncate")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    small = T * B * sum(spec["in"]) + sum(int(np.prod(s)) for s in spec["params"].values())
    differential(spec, T, B, seed, truncate, None, monkeypatch_session, gradcheck=small <= 40)


@settings(max_examples=EXAMPLES)
@given(spec=cells(mixing=False), data=st.data())
def test_random_cells_with_lengths_agree_with_each_sequence_alone(spec, data,
                                                                  monkeypatch_session):
    T = data.draw(st.integers(1, 5), label="T")
    B = data.draw(st.integers(1, 3), label="B")
    lengths = data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B), label="lengths")
    truncate = data.draw(st.none() | st.integers(1, T + 1), label="truncate")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    # (an output or next state that is an input or the previous state itself is a leaf the
    # reference never cuts; a masked net's mask on it belongs to the step, and is cut)
    assume(truncate is None or truncate >= T
           or all(r[0] == "v" for r in spec["outputs"] + spec["feedback"]))
    differential(spec, T, B, seed, truncate, np.array(lengths), monkeypatch_session)


@pytest.fixture(scope="module")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@settings(max_examples=max(EXAMPLES // 4, 1))
@given(spec=cells(), data=st.data())
def test_random_cells_in_float32_stay_float32_and_agree(spec, data, monkeypatch_session):
    """Every array float32: the lean run computes in place (one dtype), and every path gives
    float32 results close to the float64 reference and equal to each other to rounding."""
    T = data.draw(st.integers(1, 4), label="T")
    B = data.draw(st.integers(1, 3), label="B")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    values = _param_values(spec, seed)
    xs = [rng.uniform(-1, 1, (T, B, d)) for d in spec["in"]]
    h0s = [rng.uniform(-1, 1, (B, d)) for d in spec["st"]]
    cell = build_cell(spec, {k: v.astype(np.float32) for k, v in values.items()})
    widths = [cell.outputs[f"y{k}"].shape[1:] for k in range(len(spec["outputs"]))]
    seeds_out = [rng.standard_normal((T, B) + w).astype(np.float32) for w in widths]
    seeds_fin = [rng.standard_normal((B, d)).astype(np.float32) for d in spec["st"]]
    f32 = [x.astype(np.float32) for x in xs], [h.astype(np.float32) for h in h0s]
    ref = reference(spec, values, [x.astype(np.float64) for x in f32[0]],
                    [h.astype(np.float64) for h in f32[1]],
                    [s.astype(np.float64) for s in seeds_out],
                    [s.astype(np.float64) for s in seeds_fin])
    runs = []
    for option in [("needed", "templates", True), ("all", "generic", False)]:
        res = run_net(cell, spec, T, *f32, seeds_out, seeds_fin, option, None, None,
                      monkeypatch_session)
        runs.append(res)
        for a in res["outs"] + res["finals"] + [g for g in res["grads"].values() if g is not None]:
            assert a.dtype == np.float32
        for got, want in zip(res["outs"] + res["finals"], ref["outs"] + ref["finals"]):
            scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * scale)
    for k, g in runs[0]["grads"].items():
        other = runs[1]["grads"][k]
        if g is None or other is None:
            assert g is None and other is None
            continue
        scale = max(1.0, float(np.max(np.abs(other), initial=0.0)))
        np.testing.assert_allclose(g, other, rtol=1e-4, atol=1e-5 * scale)

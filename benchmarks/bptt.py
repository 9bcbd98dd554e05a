"""One training step (forward + full backpropagation through time), side by side.

Times an Elman RNN and an LSTM step, float64, loss = sum(outputs * G) for a fixed array G
(the gradient every implementation receives for its outputs); every column computes the loss's
value, as a training step does (the numpy and autograd columns with ``reference.loss``):

* ``ours``          unrollgraph: ``ug.unroll(cell, T)`` built once, then ``net(xs)`` and
                    ``(outputs * G).sum().backward()`` through the tensor API (the default
                    ``keep="needed"``: values no VJP reads are dropped as it runs);
* ``ours all``      the same with ``keep="all"`` (every value kept as it is computed);
* ``numpy``         the hand-written numpy BPTT of ``benchmarks/reference.py`` (a step loop);
* ``numpy batched`` the hand-written numpy BPTT with the input projection and the weight
                    gradients of all steps in one product each (``reference.forward_batched``);
* ``torch loop``    PyTorch CPU eager, the cell written out and looped over steps;
* ``torch.nn``      ``torch.nn.RNN`` / ``torch.nn.LSTM``;
* ``jax jit``       JAX, the cell in ``jax.lax.scan`` under ``jax.jit`` (compile time excluded);
* ``autograd``      HIPS autograd, the cell written out and looped over steps.

The PyTorch, JAX and autograd columns appear when those are installed (``pip install -e
.[compare]``), each measured in a child process (PyTorch with as many threads as numpy's OpenBLAS;
``--threads 1`` times every column single-threaded).
Then the peak memory of one forward + backward (loss = sum of the outputs) of the Elman RNN,
LSTM and GRU for long sequences, each in a fresh subprocess, against what BPTT must keep.

Run ``python benchmarks/bptt.py`` (a few minutes), ``--quick`` (small sizes, few repeats) or
``--sizes tiny,small`` / ``--sizes 8,32,20,16`` (B,H,T,D). Figures depend on the machine; the
ratios are what to compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import tracemalloc


def _threads_from_argv(argv):
    """``--threads N``: every column's thread count, set before numpy loads OpenBLAS.

    OpenBLAS (numpy: ours and the hand-written columns), OpenMP (PyTorch) and XLA (JAX) each
    read their own setting, and the child processes inherit this environment, so one flag
    gives every column the same number of threads.
    """
    n = None
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    if n is None:
        return
    if not n.isdigit() or int(n) < 1:
        raise SystemExit(f"--threads wants a positive whole number, got {n!r}")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = n
    if n == "1":
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()


_threads_from_argv(sys.argv[1:])

import numpy as np  # noqa: E402  (after the thread settings above)

HERE = pathlib.Path(__file__).resolve().parent
try:  # the installed package (or PYTHONPATH); else the checkout this script lives in
    import unrollgraph as ug
except ImportError:
    sys.path.insert(0, str(HERE.parent))
    import unrollgraph as ug
sys.path.insert(0, str(HERE))  # (when imported from elsewhere)
from procmem import reset_peak, status_kb  # noqa: E402

_spec = importlib.util.spec_from_file_location("_bptt_reference", HERE / "reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

SIZES = {  # name: (B, H, T, D)
    "tiny": (1, 8, 10, 4),
    "small": (32, 64, 50, 32),
    "medium": (32, 256, 100, 128),
    "long": (16, 128, 1000, 64),
}
QUICK_SIZES = ("tiny", "small")
MEMORY_STEPS = (100, 1000, 10000)
MEMORY_SHAPE = (16, 128, 64)  # B, H, D
MEMORY_KINDS = ("rnn", "lstm", "gru")
# what BPTT must keep per step, in (B, H) arrays: the values the textbook backward pass reads
# (benchmarks/reference.py keeps exactly these): Elman h_t; LSTM h_t, c_t, the gates i, f, g,
# o and tanh(c_t); GRU h_t, r, z, n and W_hn h_{t-1} + b_hn (docs/benchmarks.md says why)
MUST_KEEP = {"rnn": 1, "lstm": 7, "gru": 5}
# cells of the time table: those benchmarks/reference.py's batched loop is written for
TIMED_KINDS = ("rnn", "lstm")
MEMORY_TARGET = 1.5  # ours / what BPTT must keep

# targets: ours / numpy at every size; ours under the other engines at every size; ours at or
# under the batched numpy at these sizes; ours within this factor of JAX at tiny
RATIO_TARGET = 1.15
BATCHED_TARGET_SIZES = ("medium", "long")
JAX_TARGET = 1.1
JAX_TARGET_SIZES = ("tiny",)

# the columns, in print order; each is made by a function of (kind, cell, xs, G) returning a
# zero-argument training step that returns (outputs, {parameter name: gradient})
PARENT_COLUMNS = ["ours", "ours all", "ours ckpt", "numpy", "numpy batched"]
CHILD_COLUMNS = {  # framework (the module that must be importable) -> its columns
    "torch": ["torch loop", "torch.nn"],
    "jax": ["jax jit"],
    "autograd": ["autograd"],
}


def _installed(module) -> str | None:
    """The version of ``module`` if it is installed (without importing it here), else None."""
    if importlib.util.find_spec(module) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "?"


def torch_threads() -> int:
    """PyTorch's thread count: as many as numpy's OpenBLAS uses (``--threads``, else
    OMP_NUM_THREADS, else OPENBLAS_NUM_THREADS, else the machine's 2 cores), so the columns
    compare like with like."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return max(1, int(os.environ[var]))
    return 2


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(torch_threads())
    return torch


# -- the implementations: each returns a zero-argument training step ------------------------------
CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}


def make_problem(kind, B, H, T, D, seed=0):
    """Weights (a ug cell, seeded), inputs and the outputs' gradient G shared by every
    implementation."""
    cell = CELLS[kind](D, H, seed=seed)
    xs = np.random.default_rng(seed + 1).normal(size=(T, B, D))
    G = np.random.default_rng(seed + 2).normal(size=(T, B, H))
    return cell, xs, G


def step_ours(kind, cell, xs, G, net=None, keep=None, checkpoint=None):
    """``net(xs)`` then ``(outputs * G).sum().backward()``; ``G=None``: ``outputs.sum()``.

    The inputs and G are made tensors once, outside the step, as the PyTorch columns make
    theirs (``net(array)`` would copy the array on every call; docs/engine.md)."""
    if net is None:
        kw = {} if keep is None else {"keep": keep}  # None: the library's default
        net = ug.unroll(cell, steps=xs.shape[0], checkpoint=checkpoint, **kw)
    xt = ug.tensor(xs)
    Gt = None if G is None else ug.tensor(G)

    def step():
        cell.zero_grad()
        out, _ = net(xt)
        (out.sum() if Gt is None else (out * Gt).sum()).backward()
        return out.data, {k: p.grad for k, p in cell.parameters().items()}

    return step


def step_numpy(kind, cell, xs, G):
    layers = [cell.state_dict()]

    def step():
        ys, _, cache = ref.forward(kind, xs, layers)
        ref.loss(ys, G)
        # d(loss)/d(ys): G, or for a plain sum ones without a (T, B, H) buffer
        seed = np.broadcast_to(1.0, ys.shape) if G is None else G
        _, grads, _ = ref.backward(cache, seed, need_dxs=False)
        return ys, grads[0]

    return step


def step_numpy_batched(kind, cell, xs, G):
    p = cell.state_dict()

    def step():
        ys, cache = ref.forward_batched(kind, xs, p)
        ref.loss(ys, G)
        return ys, ref.backward_batched(cache, np.broadcast_to(1.0, ys.shape) if G is None
                                        else G)

    return step


def step_torch_loop(torch, kind, cell, xs, G):
    params = {k: torch.tensor(v, requires_grad=True) for k, v in cell.state_dict().items()}
    xt = torch.tensor(xs)
    Gt = None if G is None else torch.tensor(G)
    T, B = xs.shape[:2]
    H = cell.hidden_size
    Wih, Whh, bih, bhh = (params[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def step():
        for p in params.values():
            p.grad = None
        h = torch.zeros(B, H, dtype=torch.float64)
        c = torch.zeros(B, H, dtype=torch.float64)
        outs = []
        for t in range(T):
            gi = xt[t] @ Wih.T + bih
            gh = h @ Whh.T + bhh
            if kind == "rnn":
                h = torch.tanh(gi + gh)
            elif kind == "lstm":
                i, f, g, o = (gi + gh).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                ir, iz, inn = gi.chunk(3, dim=1)
                hr, hz, hn = gh.chunk(3, dim=1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                h = (1 - z) * torch.tanh(inn + r * hn) + z * h
            outs.append(h)
        out = torch.stack(outs)
        (out.sum() if Gt is None else (out * Gt).sum()).backward()
        return out.detach().numpy(), {k: p.grad.numpy() for k, p in params.items()}

    return step


def step_torch_nn(torch, kind, cell, xs, G):
    mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        cell.input_size, cell.hidden_size).double()
    with torch.no_grad():
        for k, v in cell.state_dict().items():
            getattr(mod, k + "_l0").copy_(torch.tensor(v))
    xt = torch.tensor(xs)
    Gt = None if G is None else torch.tensor(G)

    def step():
        mod.zero_grad(set_to_none=True)
        out, _ = mod(xt)
        (out.sum() if Gt is None else (out * Gt).sum()).backward()
        return out.detach().numpy(), {
            k[:-3]: p.grad.numpy() for k, p in mod.named_parameters()
        }

    return step


def _cell_math(np_, kind, p, x, h, c, H):
    """One step of the cell's equations in an array module ``np_`` (jax.numpy,
    autograd.numpy): returns the new (h, c)."""
    gi = x @ p["weight_ih"].T + p["bias_ih"]
    gh = h @ p["weight_hh"].T + p["bias_hh"]
    sig = lambda v: 1.0 / (1.0 + np_.exp(-v))
    if kind == "rnn":
        return np_.tanh(gi + gh), c
    if kind == "lstm":
        a = gi + gh
        i, f, g, o = sig(a[:, :H]), sig(a[:, H:2 * H]), np_.tanh(a[:, 2 * H:3 * H]), \
            sig(a[:, 3 * H:])
        c = f * c + i * g
        return o * np_.tanh(c), c
    r, z = sig(gi[:, :H] + gh[:, :H]), sig(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np_.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1.0 - z) * n + z * h, c


def step_jax(kind, cell, xs, G):
    """JAX: the cell in ``lax.scan``, loss and gradient under one ``jax.jit``; the first call
    (which compiles) is made here, outside the timing."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    p = {k: jnp.asarray(v) for k, v in cell.state_dict().items()}
    xj = jnp.asarray(xs)
    Gj = None if G is None else jnp.asarray(G)
    B, H = xs.shape[1], cell.hidden_size

    def loss(p):
        def body(carry, x):
            h, c = _cell_math(jnp, kind, p, x, *carry, H)
            return (h, c), h

        zero = jnp.zeros((B, H))
        _, ys = jax.lax.scan(body, (zero, zero), xj)
        return (ys.sum() if Gj is None else (ys * Gj).sum()), ys

    fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
    jax.block_until_ready(fn(p))  # compile

    def step():
        (_, ys), grads = fn(p)
        grads = jax.block_until_ready(grads)
        return np.asarray(ys), {k: np.asarray(v) for k, v in grads.items()}

    return step


def step_autograd(kind, cell, xs, G):
    """HIPS autograd: the cell looped over steps, the VJP of the stacked outputs applied to G."""
    import autograd.numpy as anp
    from autograd import make_vjp

    p = cell.state_dict()
    B, H = xs.shape[1], cell.hidden_size
    seed = np.ones((xs.shape[0], B, H)) if G is None else G

    def forward(p):
        h = c = np.zeros((B, H))
        outs = []
        for x in xs:
            h, c = _cell_math(anp, kind, p, x, h, c, H)
            outs.append(h)
        return anp.stack(outs)

    def step():
        vjp, ys = make_vjp(forward)(p)
        ref.loss(ys, G)
        return ys, vjp(seed)

    return step


def column_step(column, kind, cell, xs, G, net=None):
    """The training step of one column (``net``: ours' unrolled net, if already built)."""
    if column == "ours":
        return step_ours(kind, cell, xs, G, net)
    if column == "ours all":
        return step_ours(kind, cell, xs, G, keep="all")
    if column == "ours ckpt":
        return step_ours(kind, cell, xs, G, checkpoint="sqrt")
    if column == "numpy":
        return step_numpy(kind, cell, xs, G)
    if column == "numpy batched":
        return step_numpy_batched(kind, cell, xs, G)
    if column == "torch loop":
        return step_torch_loop(_torch(), kind, cell, xs, G)
    if column == "torch.nn":
        return step_torch_nn(_torch(), kind, cell, xs, G)
    if column == "jax jit":
        return step_jax(kind, cell, xs, G)
    if column == "autograd":
        return step_autograd(kind, cell, xs, G)
    raise ValueError(f"unknown column {column!r}")


# -- timing ---------------------------------------------------------------------------------------
def median_ms(fns: dict, quick: bool) -> dict:
    """Median wall time in ms of each zero-argument function, after one warm-up call each.

    The functions run in interleaved rounds (each once per round, in rotating order), so load
    from other processes on the machine hits every implementation alike; the number of rounds
    fits a time budget.
    """
    for fn in fns.values():
        fn()
    budget, least, most = (0.5, 3, 30) if quick else (3.0, 5, 200)
    names = list(fns)
    times: dict = {k: [] for k in names}
    start = time.perf_counter()
    rounds = 0
    while True:
        order = names[rounds % len(names):] + names[:rounds % len(names)]
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
        rounds += 1
        spent = time.perf_counter() - start
        if rounds >= most or (spent >= budget and rounds >= least):
            break
        if spent > 4 * budget and rounds >= 3:  # slow sizes: three rounds are enough
            break
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def check_same(name, got, want):
    """The implementations must compute the same step: outputs and parameter gradients."""
    (out_a, g_a), (out_b, g_b) = got, want
    np.testing.assert_allclose(out_a, out_b, rtol=1e-8, atol=1e-10, err_msg=f"{name}: outputs")
    for k in g_b:
        np.testing.assert_allclose(g_a[k], g_b[k], rtol=1e-8, atol=1e-10, err_msg=f"{name}: {k}")


def time_sizes(sizes, kinds, quick, frameworks):
    """The parent's columns interleaved in this process; each framework's columns in a child
    process per size.

    PyTorch runs apart because its OpenMP threads keep spinning after each parallel region:
    in one process with numpy they would take the cores OpenBLAS's threads need and slow the
    numpy columns (ours and the hand-written ones), and telling them to sleep instead
    (OMP_WAIT_POLICY=PASSIVE) slows PyTorch several times at the long sizes. JAX (its own
    thread pool) and autograd run apart the same way, one process per framework.
    """
    rows = []
    for kind in kinds:
        for name, (B, H, T, D) in sizes:
            cell, xs, G = make_problem(kind, B, H, T, D)
            t0 = time.perf_counter()
            net = ug.unroll(cell, steps=T)
            build = 1e3 * (time.perf_counter() - t0)
            impls = {c: column_step(c, kind, cell, xs, G, net) for c in PARENT_COLUMNS}
            want = impls["numpy"]()
            for c, fn in impls.items():
                check_same(f"{kind} {name} {c}", fn(), want)
            ms = median_ms(impls, quick)
            for fw in frameworks:
                ms.update(_child("--_child", fw, kind, B, H, T, D, int(quick)))
            rows.append({"kind": kind, "size": name, "shape": (B, H, T, D), "build": build,
                         "ms": ms})
            print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return rows


def framework_child(fw, kind, B, H, T, D, quick) -> dict:
    """Runs in a subprocess: one framework's columns for one size, checked against numpy."""
    cell, xs, G = make_problem(kind, B, H, T, D)
    impls = {c: column_step(c, kind, cell, xs, G) for c in CHILD_COLUMNS[fw]}
    want = step_numpy(kind, cell, xs, G)()
    for k, fn in impls.items():
        check_same(f"{kind} {k}", fn(), want)
    return median_ms(impls, quick)


def _child(flag, *args) -> dict:
    flags = ["-S"] if sys.flags.no_site else []  # keep the parent's import setup
    out = subprocess.run([sys.executable, *flags, __file__, flag, *map(str, args)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{__file__} {flag} {' '.join(map(str, args))} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- memory (each in a fresh subprocess) -----------------------------------------------------------
def memory_columns(kind, frameworks) -> list:
    cols = ["ours"] + (["ours, keep=all"] if kind == "rnn" else []) + ["ours ckpt", "numpy"]
    if "torch" in frameworks:
        cols += (["torch loop"] if kind == "rnn" else []) + ["torch.nn"]
    return cols


def memory_child(impl: str, kind: str, T: int) -> dict:
    """Runs in a subprocess: peak memory of one forward + backward, loss = sum of the outputs
    (the inputs and weights exist before it, as they do for every column)."""
    B, H, D = MEMORY_SHAPE
    column = "ours all" if impl == "ours, keep=all" else impl
    # warm up the library on a tiny problem (thread pools, caches), not on the measured one
    c0, x0, _ = make_problem(kind, 1, 2, 2, 2)
    column_step(column, kind, c0, x0, None)()
    cell, xs, _ = make_problem(kind, B, H, T, D)
    t0 = time.perf_counter()
    fn = column_step(column, kind, cell, xs, None)  # for ours this builds the unrolled net
    build = time.perf_counter() - t0
    result = {"build_ms": 1e3 * build if impl.startswith("ours") else None}
    rss0 = status_kb("VmRSS")
    if reset_peak() and rss0 is not None:
        t0 = time.perf_counter()
        fn()
        result["step_ms"] = 1e3 * (time.perf_counter() - t0)
        result["rss_mb"] = (status_kb("VmHWM") - rss0) / 1024
    if not impl.startswith("torch"):  # numpy reports its buffers to tracemalloc
        fn = column_step(column, kind, cell, xs, None)  # a fresh net: its buffer pool counts
        tracemalloc.start()
        fn()
        result["traced_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return result


def measure_memory(kinds, steps, frameworks):
    rows = []
    for kind in kinds:
        for T in steps:
            B, H, _ = MEMORY_SHAPE
            row = {"kind": kind, "T": T, "must_mb": MUST_KEEP[kind] * T * B * H * 8 / 2**20}
            for impl in memory_columns(kind, frameworks):
                row[impl] = _child("--_memory-child", impl, kind, T)
                print(".", end="", file=sys.stderr, flush=True)
            rows.append(row)
    print(file=sys.stderr)
    return rows


# -- printing -------------------------------------------------------------------------------------
def _fmt(x, digits=None):
    if x is None:
        return "–"
    if digits is None:
        digits = 3 if x < 1 else 2 if x < 10 else 1 if x < 100 else 0
    return f"{x:.{digits}f}"


RATIO_NAMES = {"numpy": "np", "numpy batched": "npb", "torch loop": "loop", "torch.nn": "nn",
               "jax jit": "jax", "autograd": "ag"}


def print_times(rows, frameworks):
    others = [c for fw in frameworks for c in CHILD_COLUMNS[fw]]
    cols = PARENT_COLUMNS + others
    versus = ["numpy", "numpy batched"] + others
    head = ["cell", "size (B,H,T,D)", "build"] + cols
    head += [f"ours/{RATIO_NAMES[c]}" for c in versus] + ["targets"]
    print("times in ms; build: ug.unroll; ours: the default keep='needed', ours all: "
          "keep='all', ours ckpt: checkpoint='sqrt'; ours/x: ours over column x (np: numpy, "
          "npb: numpy batched, loop: "
          "the torch loop, nn: torch.nn, jax: jax jit, ag: autograd)\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        ms = r["ms"]
        cells = [r["kind"].upper(), f"{r['size']} {r['shape']}", _fmt(r["build"])]
        cells += [_fmt(ms.get(c)) for c in cols]
        missed = []
        for c in versus:
            ratio = ms["ours"] / ms[c]
            cells.append(f"{ratio:.2f}")
            if c == "numpy" and ratio > RATIO_TARGET:
                missed.append("np")
            elif c in ("torch loop", "torch.nn", "autograd") and ratio > 1.0:
                missed.append(RATIO_NAMES[c])
            elif c == "numpy batched" and r["size"] in BATCHED_TARGET_SIZES and ratio > 1.0:
                missed.append("npb")
            elif c == "jax jit" and r["size"] in JAX_TARGET_SIZES and ratio > JAX_TARGET:
                missed.append("jax")
        cells.append("met" if not missed else "MISSED " + ",".join(missed))
        print("| " + " | ".join(cells) + " |")
    print()
    print(f"targets: ours/numpy <= {RATIO_TARGET} at every size; ours under the numpy batched "
          f"at {', '.join(BATCHED_TARGET_SIZES)}"
          + ("; ours under PyTorch (both columns)" if "torch" in frameworks else "")
          + ("; ours under autograd" if "autograd" in frameworks else "")
          + (f"; ours <= {JAX_TARGET} x JAX at {', '.join(JAX_TARGET_SIZES)}"
             if "jax" in frameworks else "")
          + "; frameworks not installed are not checked")


def print_memory(rows, frameworks):
    B, H, D = MEMORY_SHAPE
    print(f"\nOne forward + backward (loss = sum of the outputs), B={B}, H={H}, D={D}: peak "
          "memory in MB (RSS growth of a fresh process; tracemalloc peak in brackets where "
          "numpy allocates). 'must keep': the activations BPTT reads "
          f"({', '.join(f'{k.upper()} {v}' for k, v in MUST_KEEP.items())} (B, H) arrays per "
          f"step); target: ours <= {MEMORY_TARGET} x that")
    for kind in dict.fromkeys(r["kind"] for r in rows):
        impls = memory_columns(kind, frameworks)
        head = ["cell", "T", "unroll build ms", "ours step ms"] + impls + [
            "must keep", "ours/must", "target"]
        print()
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            if r["kind"] != kind:
                continue
            ours = r["ours"]
            cells = [kind.upper(), str(r["T"]), _fmt(ours.get("build_ms")),
                     _fmt(ours.get("step_ms"))]
            for impl in impls:
                m = r[impl]
                text = _fmt(m.get("rss_mb"), 1)
                if "traced_mb" in m:
                    text += f" [{m['traced_mb']:.1f}]"
                cells.append(text)
            peak = max(v for v in (ours.get("rss_mb"), ours.get("traced_mb")) if v is not None)
            ratio = peak / r["must_mb"]
            cells += [f"{r['must_mb']:.1f}", f"{ratio:.2f}",
                      "met" if ratio <= MEMORY_TARGET else "MISSED"]
            print("| " + " | ".join(cells) + " |")
    print("\n(ours/must: the larger of ours' two measures over 'must keep')")


def parse_sizes(text, quick):
    """``tiny,small`` -> named sizes; ``8,32,20,16`` -> one (B, H, T, D); ``;`` separates."""
    if not text:
        names = QUICK_SIZES if quick else tuple(SIZES)
        return [(n, SIZES[n]) for n in names]
    out = []
    for chunk in text.split(";"):
        items = [v.strip() for v in chunk.split(",") if v.strip()]
        if len(items) == 4 and all(v.isdigit() for v in items):
            out.append(("custom", tuple(int(v) for v in items)))
            continue
        for item in items:
            if item not in SIZES:
                raise SystemExit(f"--sizes: unknown size {item!r}; use names {list(SIZES)} "
                                 "or B,H,T,D (several separated by ';')")
            out.append((item, SIZES[item]))
    return out


def _names(text, allowed, option):
    names = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in names if k not in allowed]
    if bad:
        raise SystemExit(f"{option}: unknown {bad}; choose from {list(allowed)}")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="few repeats; sizes tiny and small; memory for T=100 and 1000")
    parser.add_argument("--sizes", default="",
                        help="comma-separated names (tiny,small,medium,long) or B,H,T,D "
                             "shapes separated by ';'")
    parser.add_argument("--kinds", default="rnn,lstm",
                        help="cells to time: rnn,lstm (the GRU is in the memory table: the "
                             "time table's batched numpy column has no GRU)")
    parser.add_argument("--frameworks", default=",".join(CHILD_COLUMNS),
                        help="other engines to time where installed (torch,jax,autograd)")
    parser.add_argument("--memory-kinds", default=",".join(MEMORY_KINDS),
                        help="cells of the memory table: rnn,lstm,gru")
    parser.add_argument("--memory-steps", default="",
                        help="T of the memory table, comma-separated (default 100,1000,10000)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every column (numpy's OpenBLAS, PyTorch, JAX); "
                             "default: each library's own (2 on this machine)")
    parser.add_argument("--no-times", action="store_true", help="skip the time table")
    parser.add_argument("--_memory-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--_child", nargs=7, help=argparse.SUPPRESS)
    args, _unknown = parser.parse_known_args(argv)
    if args._memory_child:
        impl, kind, T = args._memory_child
        print(json.dumps(memory_child(impl, kind, int(T))))
        return
    if args._child:
        fw, kind, *dims = args._child
        print(json.dumps(framework_child(fw, kind, *map(int, dims[:4]), bool(int(dims[4])))))
        return
    kinds = _names(args.kinds, TIMED_KINDS, "--kinds")
    wanted = _names(args.frameworks, CHILD_COLUMNS, "--frameworks")
    versions = {fw: _installed(fw) for fw in wanted}
    frameworks = [fw for fw in wanted if versions[fw]]
    sizes = parse_sizes(args.sizes, args.quick)
    print(f"# BPTT training step, float64, median ms ({time.strftime('%Y-%m-%d')}; numpy "
          f"{np.__version__}; "
          + ", ".join(f"{fw} {versions[fw] or 'not installed'}" for fw in wanted)
          + f" (each in child processes; torch with {torch_threads()} threads)"
          + f"; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; "
          f"unrollgraph from {pathlib.Path(ug.__file__).parent})\n")
    if not args.no_times:
        rows = time_sizes(sizes, kinds, args.quick, frameworks)
        print_times(rows, frameworks)
    if not args.no_memory:
        if args.memory_steps:
            steps = [int(v) for v in args.memory_steps.split(",") if v.strip()]
        else:
            steps = MEMORY_STEPS[:2] if args.quick else MEMORY_STEPS
        mkinds = _names(args.memory_kinds, MEMORY_KINDS, "--memory-kinds")
        print_memory(measure_memory(mkinds, steps, frameworks), frameworks)


if __name__ == "__main__":
    main()

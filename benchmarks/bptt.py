"""One training step (forward + full backpropagation through time), side by side.

Times an Elman RNN and an LSTM step, loss = sum of the outputs, float64:

* ``ours``       unrollgraph: ``ug.unroll(cell, T)`` built once, then ``net(xs)`` + backward
                 (the default ``keep="needed"``: values no VJP reads are dropped as it runs);
* ``ours all``   the same with ``keep="all"`` (every value kept as it is computed);
                 the memory table adds ``checkpoint="sqrt"`` (every sqrt(T)-th state kept,
                 the rest recomputed in the backward pass; ``benchmarks/checkpoint.py``);
* ``numpy``      the hand-written numpy BPTT of ``benchmarks/reference.py`` (a step loop);
* ``torch loop`` PyTorch CPU eager, the cell written out and looped over steps;
* ``torch.nn``   ``torch.nn.RNN`` / ``torch.nn.LSTM``.

PyTorch columns appear when torch is importable (``pip install -e .[compare]``); it runs with
``torch.set_num_threads(2)``. Then the unroll build time and the peak memory of one forward +
backward of the Elman RNN for long sequences, each measured in a fresh subprocess.

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

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
try:  # the installed package (or PYTHONPATH); else the checkout this script lives in
    import unrollgraph as ug
except ImportError:
    sys.path.insert(0, str(HERE.parent))
    import unrollgraph as ug

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
RATIO_TARGET = 1.3  # ours / numpy, every size
TORCH_TARGET_SIZES = ("tiny", "small")  # ours no slower than PyTorch there


def _torch_version():
    """PyTorch's version if it is installed (without importing it here), else None."""
    if importlib.util.find_spec("torch") is None:
        return None
    from importlib.metadata import version

    return version("torch")


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)
    return torch


# -- the implementations: each returns a zero-argument training step ------------------------------
def make_problem(kind, B, H, T, D, seed=0):
    """Weights (a ug cell, seeded) and inputs shared by every implementation."""
    cls = ug.nn.RNNCell if kind == "rnn" else ug.nn.LSTMCell
    cell = cls(D, H, seed=seed)
    xs = np.random.default_rng(seed + 1).normal(size=(T, B, D))
    return cell, xs


def step_ours(cell, xs, net=None, keep=None, checkpoint=None):
    if net is None:
        kw = {} if keep is None else {"keep": keep}  # None: the library's default
        net = ug.unroll(cell, steps=xs.shape[0], checkpoint=checkpoint, **kw)

    def step():
        cell.zero_grad()
        out, _ = net(xs)
        out.sum().backward()
        return out.data, {k: p.grad for k, p in cell.parameters().items()}

    return step


def step_numpy(kind, cell, xs):
    layers = [cell.state_dict()]

    def step():
        ys, _, cache = ref.forward(kind, xs, layers)
        seed = np.broadcast_to(1.0, ys.shape)  # d(sum)/d(ys), without a (T, B, H) buffer
        _, grads, _ = ref.backward(cache, seed, need_dxs=False)
        return ys, grads[0]

    return step


def step_torch_loop(torch, kind, cell, xs):
    params = {k: torch.tensor(v, requires_grad=True) for k, v in cell.state_dict().items()}
    xt = torch.tensor(xs)
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
            a = xt[t] @ Wih.T + bih + h @ Whh.T + bhh
            if kind == "rnn":
                h = torch.tanh(a)
            else:
                i, f, g, o = a.chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        out = torch.stack(outs)
        out.sum().backward()
        return out.detach().numpy(), {k: p.grad.numpy() for k, p in params.items()}

    return step


def step_torch_nn(torch, kind, cell, xs):
    mod = (torch.nn.RNN if kind == "rnn" else torch.nn.LSTM)(cell.input_size, cell.hidden_size)
    mod = mod.double()
    with torch.no_grad():
        for k, v in cell.state_dict().items():
            getattr(mod, k + "_l0").copy_(torch.tensor(v))
    xt = torch.tensor(xs)

    def step():
        mod.zero_grad(set_to_none=True)
        out, _ = mod(xt)
        out.sum().backward()
        return out.detach().numpy(), {
            k[:-3]: p.grad.numpy() for k, p in mod.named_parameters()
        }

    return step


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


def time_sizes(sizes, kinds, quick, torch_ok):
    """Ours against numpy, interleaved in this process; PyTorch in a child process per size.

    PyTorch runs apart because its OpenMP threads keep spinning after each parallel region:
    in one process with numpy they would take the cores OpenBLAS's threads need and slow the
    numpy columns (ours and the hand-written one), and telling them to sleep instead
    (OMP_WAIT_POLICY=PASSIVE) slows PyTorch several times at the long sizes.
    """
    rows = []
    for kind in kinds:
        for name, (B, H, T, D) in sizes:
            cell, xs = make_problem(kind, B, H, T, D)
            t0 = time.perf_counter()
            net = ug.unroll(cell, steps=T)
            build = 1e3 * (time.perf_counter() - t0)
            impls = {"ours": step_ours(cell, xs, net), "numpy": step_numpy(kind, cell, xs),
                     "ours all": step_ours(cell, xs, keep="all")}
            check_same(f"{kind} {name} ours", impls["ours"](), impls["numpy"]())
            check_same(f"{kind} {name} ours all", impls["ours all"](), impls["numpy"]())
            ms = median_ms(impls, quick)
            if torch_ok:
                ms.update(_child("--_torch-child", kind, B, H, T, D, int(quick)))
            rows.append({"kind": kind, "size": name, "shape": (B, H, T, D), "build": build,
                         "ms": ms})
            print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return rows


def torch_child(kind, B, H, T, D, quick) -> dict:
    """Runs in a subprocess: PyTorch's two columns for one size, checked against numpy."""
    torch = _torch()
    cell, xs = make_problem(kind, B, H, T, D)
    impls = {"torch loop": step_torch_loop(torch, kind, cell, xs),
             "torch.nn": step_torch_nn(torch, kind, cell, xs)}
    want = step_numpy(kind, cell, xs)()
    for k, fn in impls.items():
        check_same(f"{kind} {k}", fn(), want)
    return median_ms(impls, quick)


def _child(flag, *args) -> dict:
    flags = ["-S"] if sys.flags.no_site else []  # keep the parent's import setup
    out = subprocess.run([sys.executable, *flags, __file__, flag, *map(str, args)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- memory (each in a fresh subprocess) -----------------------------------------------------------
def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(impl: str, T: int) -> dict:
    """Runs in a subprocess: peak memory of one forward + backward of the Elman RNN."""
    B, H, D = MEMORY_SHAPE
    torch = _torch() if impl.startswith("torch") else None
    # warm up the library on a tiny problem (thread pools, caches), not on the measured one
    c0, x0 = make_problem("rnn", 1, 2, 2, 2)
    makers = {
        "ours": lambda c, x: step_ours(c, x),
        "ours, keep=all": lambda c, x: step_ours(c, x, keep="all"),
        "ours, checkpoint=sqrt": lambda c, x: step_ours(c, x, checkpoint="sqrt"),
        "numpy": lambda c, x: step_numpy("rnn", c, x),
        "torch loop": lambda c, x: step_torch_loop(torch, "rnn", c, x),
        "torch.nn": lambda c, x: step_torch_nn(torch, "rnn", c, x),
    }
    makers[impl](c0, x0)()
    cell, xs = make_problem("rnn", B, H, T, D)
    t0 = time.perf_counter()
    fn = makers[impl](cell, xs)  # for ours this builds the unrolled net
    build = time.perf_counter() - t0
    result = {"build_ms": 1e3 * build if impl.startswith("ours") else None}
    rss0 = _status_kb("VmRSS")
    if _reset_peak() and rss0 is not None:
        t0 = time.perf_counter()
        fn()
        result["step_ms"] = 1e3 * (time.perf_counter() - t0)
        result["rss_mb"] = (_status_kb("VmHWM") - rss0) / 1024
    if not impl.startswith("torch"):  # numpy reports its buffers to tracemalloc
        fn = makers[impl](cell, xs)  # a fresh net: its buffer pool is counted too
        tracemalloc.start()
        fn()
        result["traced_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return result


def measure_memory(steps, torch_ok):
    impls = ["ours", "ours, keep=all", "ours, checkpoint=sqrt", "numpy"] + (
        ["torch loop", "torch.nn"] if torch_ok else [])
    rows = []
    for T in steps:
        row = {"T": T, "states_mb": T * MEMORY_SHAPE[0] * MEMORY_SHAPE[1] * 8 / 2**20}
        for impl in impls:
            row[impl] = _child("--_memory-child", impl, T)
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


def print_times(rows, torch_ok):
    cols = ["ours", "ours all", "numpy"] + (["torch loop", "torch.nn"] if torch_ok else [])
    head = ["cell", "size (B,H,T,D)", "build"] + cols
    head += ["ours/np"] + (["ours/loop", "ours/nn"] if torch_ok else [])
    head += ["targets"]
    print("times in ms; build: ug.unroll; ours: the default keep='needed', ours all: "
          "keep='all'; ours/np, ours/loop, ours/nn: ours over numpy, the torch loop, "
          "torch.nn\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        ms = r["ms"]
        cells = [r["kind"].upper(), f"{r['size']} {r['shape']}", _fmt(r["build"])]
        cells += [_fmt(ms[c]) for c in cols]
        ratio_np = ms["ours"] / ms["numpy"]
        cells.append(f"{ratio_np:.2f}")
        ok = ratio_np <= RATIO_TARGET
        if torch_ok:
            r_loop, r_nn = ms["ours"] / ms["torch loop"], ms["ours"] / ms["torch.nn"]
            cells += [f"{r_loop:.2f}", f"{r_nn:.2f}"]
            if r["size"] in TORCH_TARGET_SIZES:
                ok = ok and max(r_loop, r_nn) <= 1.0
        cells.append("met" if ok else "MISSED")
        print("| " + " | ".join(cells) + " |")
    print()
    print(f"targets: ours/numpy <= {RATIO_TARGET} at every size"
          + (f"; ours <= both PyTorch columns at {', '.join(TORCH_TARGET_SIZES)}"
             if torch_ok else " (PyTorch not installed: its target is not checked)"))


def print_memory(rows, torch_ok):
    impls = ["ours", "ours, keep=all", "ours, checkpoint=sqrt", "numpy"] + (
        ["torch loop", "torch.nn"] if torch_ok else [])
    B, H, D = MEMORY_SHAPE
    print(f"\nElman RNN, one forward + backward, B={B}, H={H}, D={D}: peak memory in MB "
          "(RSS growth of a fresh process; tracemalloc peak in brackets where numpy allocates)")
    head = ["T", "unroll build ms", "ours step ms"] + impls + ["hidden states alone"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [str(r["T"]), _fmt(r["ours"].get("build_ms")), _fmt(r["ours"].get("step_ms"))]
        for impl in impls:
            m = r[impl]
            text = _fmt(m.get("rss_mb"), 1)
            if "traced_mb" in m:
                text += f" [{m['traced_mb']:.1f}]"
            cells.append(text)
        cells.append(f"{r['states_mb']:.1f}")
        print("| " + " | ".join(cells) + " |")


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="few repeats; sizes tiny and small; memory for T=100 and 1000")
    parser.add_argument("--sizes", default="",
                        help="comma-separated names (tiny,small,medium,long) or B,H,T,D "
                             "shapes separated by ';'")
    parser.add_argument("--kinds", default="rnn,lstm", help="cells to time: rnn,lstm")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--_memory-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_torch-child", nargs=6, help=argparse.SUPPRESS)
    args, _unknown = parser.parse_known_args(argv)
    if args._memory_child:
        impl, T = args._memory_child
        print(json.dumps(memory_child(impl, int(T))))
        return
    if args._torch_child:
        kind, *dims = args._torch_child
        print(json.dumps(torch_child(kind, *map(int, dims[:4]), bool(int(dims[4])))))
        return
    torch_version = _torch_version()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if any(k not in ("rnn", "lstm") for k in kinds):
        raise SystemExit("--kinds takes rnn and/or lstm")
    sizes = parse_sizes(args.sizes, args.quick)
    print(f"# BPTT training step, float64, median ms ({time.strftime('%Y-%m-%d')}; numpy "
          f"{np.__version__}" + (f", torch {torch_version} with 2 threads, in child processes"
                                 if torch_version else ", torch not installed")
          + f"; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}; "
          f"unrollgraph from {pathlib.Path(ug.__file__).parent})\n")
    torch_ok = torch_version is not None
    rows = time_sizes(sizes, kinds, args.quick, torch_ok)
    print_times(rows, torch_ok)
    if not args.no_memory:
        steps = MEMORY_STEPS[:2] if args.quick else MEMORY_STEPS
        print_memory(measure_memory(steps, torch_ok), torch_ok)


if __name__ == "__main__":
    main()

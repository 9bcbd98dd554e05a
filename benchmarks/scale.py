"""How time and memory grow with the number of steps T, up to T = 100,000.

Three parts, one command (``python benchmarks/scale.py``):

1. **Long sequences.** An Elman RNN (B=1, H=32, D=16) unrolled over T = 10², 10³, 10⁴, 10⁵
   steps: the build time of ``ug.unroll``, the time of one training step (``net(xs)``, loss =
   sum of the outputs, full BPTT into every weight) and the peak memory of that step, each T
   in a fresh process. Then the memory case of ``benchmarks/bptt.py`` (B=16, H=128, D=64)
   over the same range of T (up to ``--memory-max``), against the hidden states alone.
   Targets: the T = 100,000 RNN built, run and backpropagated in under 30 s, and
   time(T=100,000) / time(T=1,000) <= 110.
2. **Nothing quadratic.** Everything that walks an unrolled graph, timed at T and 10·T (an
   Elman RNN, input 3, hidden 4, batch 2, after one backward pass; the LSTM build at
   T = 1,000 and 10,000): graph building, the topological sort, looking a node up by name,
   the diagram (its rendering decisions: the view, the elision, the colour scale, with and
   without the per-step contributions), ``Run.step_contributions``, ``Run.state_grads``,
   ``Run.full`` and the networkx export. A linear cost gives a ratio near 10, a quadratic one
   near 100; a ratio above 25 is flagged.
3. **A plot** (matplotlib, PNG) of time and memory against T, on log-log axes with a line of
   slope one for reference: ``--plot PATH`` (default ``scale.png`` in the current directory).

Options: ``--max-steps 10000`` (skip 10⁵), ``--memory-max 100000`` (the B=16 case at 10⁵:
about 1.6 GB of hidden states alone), ``--check-steps 1000`` (T of part 2), ``--only
long|checks``. Figures depend on the machine: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import gc
import json
import pathlib
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
sys.path.insert(0, str(HERE))  # (when imported from elsewhere)
from procmem import reset_peak, status_kb  # noqa: E402

LONG_STEPS = (100, 1_000, 10_000, 100_000)
LONG_SHAPE = (1, 32, 16)  # B, H, D of the long-sequence RNN
MEMORY_SHAPE = (16, 128, 64)  # B, H, D of the memory case (as in benchmarks/bptt.py)
TIME_LIMIT_S = 30.0  # build + run + backward at T = 100,000
RATIO_LIMIT = 110.0  # time(T=100,000) / time(T=1,000)
QUADRATIC_FLAG = 25.0  # ratio for 10x the steps above which a cost is flagged


# -- part 1: one T per fresh process ------------------------------------------------------------
def long_child(T: int, B: int, H: int, D: int) -> dict:
    """Runs in a subprocess: build, one step, its peak memory (RSS and tracemalloc)."""
    warm = ug.unroll(ug.nn.RNNCell(2, 2, seed=0), steps=2)  # imports, caches, thread pools
    out, _ = warm(np.ones((2, 1, 2)))
    out.sum().backward()
    del warm, out
    cell = ug.nn.RNNCell(D, H, seed=0)
    xs = ug.tensor(np.random.default_rng(1).normal(size=(T, B, D)))
    gc.collect()
    rss0 = status_kb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    net = ug.unroll(cell, steps=T)
    build, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    net_mb = (status_kb("VmRSS") - rss0) / 1024

    def step():
        cell.zero_grad()
        out, _ = net(xs)
        out.sum().backward()

    rss0 = status_kb("VmRSS")
    measured = reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    step()  # the first call: it compiles the step functions
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mb = (status_kb("VmHWM") - rss0) / 1024 if measured else None
    times = []
    for _ in range(3 if T <= 10_000 else 1):
        gc.collect()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    net.last_run = None
    gc.collect()
    tracemalloc.start()
    step()
    traced_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {"T": T, "build_s": build, "first_s": first, "build_cpu": build_cpu,
            "first_cpu": first_cpu, "step_s": float(np.median(times)),
            "net_mb": net_mb, "rss_mb": peak_mb, "traced_mb": traced_mb,
            "states_mb": T * B * H * 8 / 2**20}


def _child(*args) -> dict:
    flags = ["-S"] if sys.flags.no_site else []
    out = subprocess.run([sys.executable, *flags, __file__, "--_child", *map(str, args)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"scale.py child {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def long_sequences(steps, shape) -> list:
    rows = []
    for T in steps:
        rows.append(_child(T, *shape))
        print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return rows


def print_long(rows, shape, title):
    B, H, D = shape
    print(f"\n{title}: Elman RNN B={B}, H={H}, D={D}; one training step (net(xs), "
          "out.sum().backward()), each T in a fresh process")
    head = ["T", "build s", "first step s", "[CPU s]", "step s", "step s / T (µs)", "net MB",
            "step peak MB (RSS)", "[tracemalloc]", "hidden states MB", "peak / states"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        peak = max(v for v in (r["rss_mb"], r["traced_mb"]) if v is not None)
        print("| " + " | ".join([
            f"{r['T']:,}", f"{r['build_s']:.3f}", f"{r['first_s']:.3f}",
            f"{r['build_cpu'] + r['first_cpu']:.3f}", f"{r['step_s']:.3f}",
            f"{1e6 * r['step_s'] / r['T']:.1f}", f"{r['net_mb']:.1f}",
            "–" if r["rss_mb"] is None else f"{r['rss_mb']:.1f}", f"{r['traced_mb']:.1f}",
            f"{r['states_mb']:.2f}", f"{peak / r['states_mb']:.2f}"]) + " |")


def check_long(rows) -> list:
    """The scale targets, as lines of text (``met`` / ``MISSED``)."""
    by_t = {r["T"]: r for r in rows}
    out = []
    if 100_000 in by_t:
        r = by_t[100_000]
        total = r["build_s"] + r["first_s"]
        cpu = r["build_cpu"] + r["first_cpu"]
        out.append(f"T=100,000: build + first run and backward {total:.1f} s wall, {cpu:.1f} s "
                   f"CPU (target < {TIME_LIMIT_S:.0f} s): "
                   f"{'met' if total < TIME_LIMIT_S else 'MISSED'} (wall), "
                   f"{'met' if cpu < TIME_LIMIT_S else 'MISSED'} (CPU)")
        if 1_000 in by_t:
            a = by_t[1_000]
            for what, x, y in (("step", r["step_s"], a["step_s"]),
                               ("build + step", r["build_s"] + r["step_s"],
                                a["build_s"] + a["step_s"]),
                               ("build + first step", r["build_s"] + r["first_s"],
                                a["build_s"] + a["first_s"])):
                ratio = x / y
                out.append(f"time(T=100,000) / time(T=1,000), {what}: {ratio:.0f} (target <= "
                           f"{RATIO_LIMIT:.0f}): {'met' if ratio <= RATIO_LIMIT else 'MISSED'}")
    return out


# -- part 2: every walk over the unrolled graph at T and 10 T -----------------------------------
def _rnn_after_backward(T: int):
    net = ug.unroll(ug.nn.RNNCell(3, 4, seed=0), steps=T)
    out, _ = net(np.random.default_rng(0).standard_normal((T, 2, 3)))
    loss = (out * out).mean()
    loss.backward()
    return net, loss


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def linearity(T: int, repeats: int) -> dict:
    """Seconds of each case at T and 10 T: {name: (t_T, t_10T)}."""
    cases = {
        "unroll, Elman RNN": lambda n: lambda: ug.unroll(ug.nn.RNNCell(3, 4, seed=0),
                                                        steps=n),
        "unroll, LSTM": lambda n: lambda: ug.unroll(ug.nn.LSTMCell(3, 4, seed=0), steps=n),
    }
    after = {
        "topological sort (Graph)": lambda net, loss: lambda: ug.Graph(net.graph.outputs),
        "Run.value by name (first)": lambda net, loss: _first_lookup(net),
        "Run.full": lambda net, loss: _full(net),
        "Run.state_grads": lambda net, loss: lambda: net.last_run.state_grads(),
        "Run.step_contributions": lambda net, loss: lambda: [
            net.last_run.step_contributions(p) for p in net.cell.parameters()],
        "to_dot()": lambda net, loss: lambda: ug.to_dot(net, loss=loss),
        "to_dot(contributions=True)": lambda net, loss: lambda: ug.to_dot(
            net, loss=loss, contributions=True),
        "to_networkx()": lambda net, loss: lambda: ug.to_networkx(net, loss=loss),
    }
    times: dict = {name: [] for name in list(cases) + list(after)}
    for n in (T, 10 * T):
        for name, make in cases.items():
            times[name].append(_best(make(n), repeats))
        net, loss = _rnn_after_backward(n)
        ug.to_dot(net, loss=loss)  # warm-up: the first view of a run recomputes its values
        for name, make in after.items():
            times[name].append(_best(make(net, loss), repeats))
        del net, loss
        print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return times


def _first_lookup(net):
    """A name lookup on a fresh run's first use (the name table is built once per net: forget
    it, then look up the last step's state, and 1,000 names more)."""
    run = net.last_run
    names = [f"h_next@{t}" for t in range(0, net.steps, max(1, net.steps // 1000))]

    def go():
        net.__dict__.pop("_display_slots", None)
        run.value(f"h_next@{net.steps - 1}")
        for name in names:
            run.value(name)

    return go


def _full(net):
    run = net.last_run

    def go():
        run._full = None
        run.full()

    return go


def print_linearity(times, T):
    print(f"\nNothing quadratic: seconds at T = {T:,} and {10 * T:,} (Elman RNN 3 -> 4, batch "
          "2, after one backward pass; the LSTM build 3 -> 4); linear: ratio ~10, quadratic: "
          f"~100, flagged above {QUADRATIC_FLAG:.0f}")
    print("| case | T | 10 T | ratio | |")
    print("|---|---|---|---|---|")
    for name, (a, b) in times.items():
        ratio = b / a if a > 0 else float("nan")
        print(f"| {name} | {a:.4f} | {b:.4f} | {ratio:.1f} | "
              f"{'linear' if ratio <= QUADRATIC_FLAG else 'QUADRATIC?'} |")


# -- part 3: the plot ---------------------------------------------------------------------------
def plot(long_rows, memory_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    B, H, D = LONG_SHAPE
    Ts = np.array([r["T"] for r in long_rows], dtype=float)
    if len(Ts):
        ax_t.loglog(Ts, [r["step_s"] for r in long_rows], "o-", label="training step")
        ax_t.loglog(Ts, [r["build_s"] for r in long_rows], "s--", label="ug.unroll (build)")
        ref_t = long_rows[0]["step_s"] * Ts / Ts[0]
        ax_t.loglog(Ts, ref_t, ":", color="grey", label="slope 1 (linear in T)")
    ax_t.set_xlabel("steps T")
    ax_t.set_ylabel("seconds")
    ax_t.set_title(f"Time, Elman RNN B={B}, H={H}, D={D}")
    ax_t.legend(frameon=False)
    ax_t.grid(True, which="major", alpha=0.3)
    for rows, shape, marker in ((long_rows, LONG_SHAPE, "o"), (memory_rows, MEMORY_SHAPE, "s")):
        if not rows:
            continue
        b, h, d = shape
        Tm = np.array([r["T"] for r in rows], dtype=float)
        peak = [max(v for v in (r["rss_mb"], r["traced_mb"]) if v is not None) for r in rows]
        line, = ax_m.loglog(Tm, peak, marker + "-", label=f"step peak, B={b}, H={h}")
        ax_m.loglog(Tm, [r["states_mb"] for r in rows], ":", color=line.get_color(),
                    label=f"hidden states alone, B={b}, H={h}")
    ax_m.set_xlabel("steps T")
    ax_m.set_ylabel("MB")
    ax_m.set_title("Peak memory of one forward + backward")
    ax_m.legend(frameon=False, fontsize="small")
    ax_m.grid(True, which="major", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=100_000,
                        help="largest T of the long-sequence RNN (default 100,000)")
    parser.add_argument("--memory-max", type=int, default=10_000,
                        help="largest T of the B=16, H=128 memory case (default 10,000)")
    parser.add_argument("--check-steps", type=int, default=1_000,
                        help="T of the linearity checks (they also run 10 T)")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many (checks)")
    parser.add_argument("--only", choices=("long", "checks"), help="run one part only")
    parser.add_argument("--plot", default="scale.png", help="PNG to write (empty: none)")
    parser.add_argument("--_child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(long_child(*args._child)))
        return
    if args.check_steps < 1 or args.repeats < 1:
        parser.error("--check-steps and --repeats must be positive")
    print(f"# scale ({time.strftime('%Y-%m-%d')}; numpy {np.__version__}; unrollgraph from "
          f"{pathlib.Path(ug.__file__).parent})")
    long_rows: list = []
    memory_rows: list = []
    if args.only != "checks":
        long_rows = long_sequences([T for T in LONG_STEPS if T <= args.max_steps], LONG_SHAPE)
        print_long(long_rows, LONG_SHAPE, "Long sequences")
        memory_rows = long_sequences([T for T in LONG_STEPS if T <= args.memory_max],
                                     MEMORY_SHAPE)
        print_long(memory_rows, MEMORY_SHAPE, "Memory case")
        lines = check_long(long_rows)
        if lines:
            print("\n" + "\n".join(lines))
    if args.only != "long":
        print_linearity(linearity(args.check_steps, args.repeats), args.check_steps)
    if args.plot and long_rows:
        plot(long_rows, memory_rows, args.plot)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()

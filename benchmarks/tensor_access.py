"""The cost of reading a tensor's value (``t.data``) and shape, and of the ways to change a
parameter in place, in nanoseconds (reads) and microseconds (steps).

``t.data`` checks that the tensor is not a cell's placeholder (whose value is a stand-in)
before it hands out the array; ``t.shape`` checks that axis 0 is not a stand-in's batch of
one, with one comparison on a tensor whose axis 0 is not 1 and a recorded ancestor walk on one
whose axis 0 is 1 (the batch-of-one rows); the engine itself reads ``t._data``. The steps
compare the doors that change a (64, 64) parameter: ``p -= g`` under ``ug.no_grad()``,
``with p.edit() as a: a -= g``, ``p.data = p.data - g`` and an SGD optimizer's step.

With ``--before CHECKOUT`` the reads are timed for that checkout's package too, in interleaved
rounds (the least thread CPU time of each: the figure for a before/after comparison on a
machine doing other work).

Run: ``python benchmarks/tensor_access.py [--n 20000] [--before /path/to/checkout]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import time
import timeit

import numpy as np

import unrollgraph as ug


def reads(ug) -> dict:
    """The reads to time, with package ``ug``."""
    leaf = ug.tensor(np.ones((4, 8)), requires_grad=True)
    computed = leaf * 2.0
    single = ug.tensor(np.ones((1, 8)), requires_grad=True) * 2.0  # a batch of one, eager
    return {"leaf.data": lambda: leaf.data, "computed.data": lambda: computed.data,
            "leaf._data (the engine's read)": lambda: leaf._data,
            "leaf.shape": lambda: leaf.shape, "computed.shape": lambda: computed.shape,
            "computed.size": lambda: computed.size,
            "batch-of-one computed.shape": lambda: single.shape,
            "batch-of-one computed.data": lambda: single.data}


def best_ns(fns: dict, n: int, seconds: float) -> dict:
    """The least thread CPU time of ``n`` calls of each function over interleaved rounds, in
    nanoseconds a call."""
    best = {k: float("inf") for k in fns}
    names = list(fns)
    loop = range(n)
    end = time.perf_counter() + seconds
    r = 0
    while time.perf_counter() < end or r < 5:
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[k]
            t0 = time.thread_time()
            for _ in loop:
                fn()
            best[k] = min(best[k], time.thread_time() - t0)
        r += 1
    return {k: 1e9 * v / n for k, v in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="reads per timing")
    parser.add_argument("--seconds", type=float, default=10.0, help="time for the reads")
    parser.add_argument("--before", help="another checkout, timed side by side")
    args = parser.parse_args()
    fns = {("after" if args.before else "now", k): f for k, f in reads(ug).items()}
    if args.before:
        spec = importlib.util.spec_from_file_location(
            "_tensor_access_versions", pathlib.Path(__file__).with_name("versions.py"))
        versions = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(versions)
        before = versions.load_before(args.before)
        fns.update({("before", k): f for k, f in reads(before).items()})
    best = best_ns(fns, args.n, args.seconds)
    cols = ["before", "after"] if args.before else ["now"]
    print(f"{'read':40s}" + "".join(f" {c + ' ns':>10s}" for c in cols))
    for name in reads(ug):
        print(f"{name:40s}" + "".join(f" {best[(c, name)]:10.1f}" for c in cols))

    p = ug.tensor(np.zeros((64, 64)), requires_grad=True)
    g = np.full((64, 64), 1e-9)
    p.grad = g
    opt = ug.optim.SGD([p], lr=1e-9)

    def no_grad_step():
        with ug.no_grad():
            q = p
            q -= g

    def method_step():
        with ug.no_grad():
            p.sub_(g)

    def edit_step():
        with p.edit() as a:
            a -= g

    def assign_step():
        p.data = p.data - g

    steps = {"with ug.no_grad(): p -= g": no_grad_step,
             "with ug.no_grad(): p.sub_(g)": method_step,
             "with p.edit() as a: a -= g": edit_step,
             "p.data = p.data - g": assign_step, "ug.optim.SGD(...).step()": opt.step}
    n = max(args.n // 50, 100)
    print(f"\n{'step on a (64, 64) parameter':40s} {'us/step':>8s}")
    for name, fn in steps.items():
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
        print(f"{name:40s} {best:8.2f}")


if __name__ == "__main__":
    main()

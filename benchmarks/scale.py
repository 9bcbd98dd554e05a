"""How diagram work grows with the number of steps: times at T and 10·T, and their ratio.

A linear cost gives a ratio near 10; a quadratic one near 100. Measured, for an Elman RNN
(input 3, hidden 4, batch 2) unrolled over T steps after one backward pass:

* ``to_dot(contributions=True)``: the diagram with the per-step parts of every shared weight's
  gradient (``Run.step_contributions`` for each parameter, then one norm per step);
* ``Run.step_contributions``: those per-step parts alone, for every parameter (what the
  first line spends outside the drawing);
* ``to_dot()``: the same diagram without them (the drawing's own work: the view of the run,
  the elided drawing, the colour scale);
* ``to_networkx()``: the export of every node with its value and gradient.

Run ``python benchmarks/scale.py [--steps 1000] [--repeats 1]``; ``--steps 10000`` measures
10,000 against 100,000 (minutes). The default sizes run in well under two minutes.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np

import unrollgraph as ug


def _net(T: int):
    net = ug.unroll(ug.nn.RNNCell(3, 4, seed=0), steps=T)
    out, _ = net(np.random.default_rng(0).standard_normal((T, 2, 3)))
    loss = (out * out).mean()
    loss.backward()
    return net, loss


def _time(fn, args, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="T (the second size is 10·T)")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be positive")
    sizes = (args.steps, 10 * args.steps)
    cases = {
        "to_dot(contributions=True)": lambda net, loss: ug.to_dot(net, loss=loss,
                                                                  contributions=True),
        "Run.step_contributions": lambda net, loss: [
            net.last_run.step_contributions(p) for p in net.cell.parameters()],
        "to_dot()": lambda net, loss: ug.to_dot(net, loss=loss),
        "to_networkx()": lambda net, loss: ug.to_networkx(net, loss=loss),
    }
    times: dict = {name: [] for name in cases}
    for T in sizes:
        net, loss = _net(T)
        ug.to_dot(net, loss=loss)  # warm-up: the first view of a run recomputes its values
        for name, fn in cases.items():
            times[name].append(_time(fn, (net, loss), args.repeats))
        del net, loss
    print(f"RNN (3 -> 4, batch 2); times in seconds at T = {sizes[0]:,} and {sizes[1]:,}")
    print(f"{'':28s} {'T':>10s} {'10T':>10s} {'ratio':>7s}   (linear: ~10, quadratic: ~100)")
    for name, (a, b) in times.items():
        print(f"{name:28s} {a:10.3f} {b:10.3f} {b / a:7.1f}")


if __name__ == "__main__":
    main()

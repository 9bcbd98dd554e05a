"""How ``Run.step_contributions`` scales with the number of steps T.

It records what each step sends to the shared nodes in one backward pass over the unrolled
graph, then pushes each step's part through the shared nodes alone: linear in T. This script
times it on an Elman RNN (batch 4, hidden 16) at T and 10 T and prints both times and their
ratio, which stays near 10 (it would be near 100 for a cost quadratic in T).

Run ``python benchmarks/scale_contributions.py [--steps 3000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

# the checkout this script lives in (not another installed copy): it measures this code
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import unrollgraph as ug  # noqa: E402


def time_contributions(T: int, repeats: int) -> float:
    """Best wall time (s) of ``step_contributions("weight_hh")`` after one BPTT step."""
    cell = ug.nn.RNNCell(8, 16, seed=0)
    net = ug.unroll(cell, steps=T)
    xs = np.random.default_rng(0).standard_normal((T, 4, 8))
    out, _ = net(xs)
    out.sum().backward()
    run = net.last_run
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        parts = run.step_contributions("weight_hh")
        best = min(best, time.perf_counter() - start)
    assert parts.shape == (T, 16, 16)
    np.testing.assert_allclose(parts.sum(axis=0), cell.weight_hh.grad, rtol=1e-9, atol=1e-12)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000, help="the smaller T (default 3000)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many (default 3)")
    args = ap.parse_args(argv)
    small, large = args.steps, 10 * args.steps
    t1 = time_contributions(small, args.repeats)
    t2 = time_contributions(large, args.repeats)
    print(f"step_contributions, Elman RNN B=4 H=16 (unrollgraph from "
          f"{pathlib.Path(ug.__file__).parent}):")
    print(f"  T={small:>7,}: {t1:8.3f} s")
    print(f"  T={large:>7,}: {t2:8.3f} s")
    print(f"  ratio for 10x the steps: {t2 / t1:.1f} (linear: about 10)")


if __name__ == "__main__":
    main()

"""The cost of reading a tensor's value (``t.data``), its shape, and of the ways to change a parameter in
place, in nanoseconds (reads) and microseconds (steps).

``t.data`` checks that the tensor is not a cell's placeholder (whose value is a stand-in)
before it hands out the array; the engine itself reads ``t._data``. The steps compare the
doors that change a (64, 64) parameter: ``p -= g`` under ``ug.no_grad()``, ``with p.edit()
as a: a -= g``, ``p.data = p.data - g`` and an SGD optimizer's step.

Run: ``python benchmarks/tensor_access.py [--n 200000]``.
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np

import unrollgraph as ug


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="reads per timing")
    args = parser.parse_args()
    leaf = ug.tensor(np.ones((4, 8)), requires_grad=True)
    computed = leaf * 2.0
    single = ug.tensor(np.ones((1, 8)), requires_grad=True) * 2.0  # a batch of one, eager
    reads = {"leaf.data": lambda: leaf.data, "computed.data": lambda: computed.data,
             "leaf._data (the engine's read)": lambda: leaf._data,
             "leaf.shape": lambda: leaf.shape, "computed.shape": lambda: computed.shape,
             "computed.size": lambda: computed.size,
             "leaf._data.shape (the engine's read)": lambda: leaf._data.shape,
             "batch-of-one computed.shape": lambda: single.shape,
             "batch-of-one computed.data": lambda: single.data}
    print(f"{'read':40s} {'ns/read':>8s}")
    for name, fn in reads.items():
        best = min(timeit.repeat(fn, number=args.n, repeat=7)) / args.n * 1e9
        print(f"{name:40s} {best:8.0f}")

    p = ug.tensor(np.zeros((64, 64)), requires_grad=True)
    g = np.full((64, 64), 1e-9)
    p.grad = g
    opt = ug.optim.SGD([p], lr=1e-9)

    def no_grad_step():
        with ug.no_grad():
            q = p
            q -= g

    def edit_step():
        with p.edit() as a:
            a -= g

    def assign_step():
        p.data = p.data - g

    steps = {"with ug.no_grad(): p -= g": no_grad_step, "with p.edit() as a: a -= g": edit_step,
             "p.data = p.data - g": assign_step, "ug.optim.SGD(...).step()": opt.step}
    n = max(args.n // 50, 100)
    print(f"\n{'step on a (64, 64) parameter':40s} {'us/step':>8s}")
    for name, fn in steps.items():
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
        print(f"{name:40s} {best:8.2f}")


if __name__ == "__main__":
    main()

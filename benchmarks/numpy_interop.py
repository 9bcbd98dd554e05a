"""The cost of numpy's dispatch to a Tensor: ``ndarray <op> tensor`` against ``tensor <op>
ndarray`` (which never enters numpy's dispatch), per operation, in microseconds.

``ndarray * t`` goes through ``Tensor.__array_ufunc__`` (numpy calls it, it calls the
tensor's reflected operator); ``t * ndarray`` is the tensor's own operator. The difference is
the price of the dispatch, paid only by the array-first spelling.

Run: ``python benchmarks/numpy_interop.py [--n 20000]``.
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np

import unrollgraph as ug


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="operations per timing")
    args = parser.parse_args()
    a = np.ones((4, 8))
    t = ug.tensor(np.ones((4, 8)), requires_grad=True)
    cases = {
        "t * a (tensor first)": lambda: t * a,
        "a * t (array first)": lambda: a * t,
        "t + a (tensor first)": lambda: t + a,
        "a + t (array first)": lambda: a + t,
        "(t * a).sum() (the loss's hot path)": lambda: (t * a).sum(),
    }
    print(f"{'operation':40s} {'us/op':>8s}")
    for name, fn in cases.items():
        best = min(timeit.repeat(fn, number=args.n, repeat=5)) / args.n * 1e6
        print(f"{name:40s} {best:8.2f}")


if __name__ == "__main__":
    main()

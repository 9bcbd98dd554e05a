"""Per-node overhead of the engine: microseconds per op on a chain of small ops.

The chain alternates ``tanh``, a multiplication by a scalar tensor and the addition of a small
array (both weights require grad, so each receives thousands of accumulated contributions). On
arrays this small numpy's own work is well under a microsecond, so the figures measure the
engine: recording one node per op in the forward pass, and one VJP step per node backward.

Run ``python benchmarks/overhead.py [--ops 10000] [--size 8] [--repeats 7]``. PyTorch (CPU) is
measured on the same chain when it is installed, and the ratio printed.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import numpy as np

import unrollgraph as ug


def _chain(x, c, b, ops, tanh):
    y = x
    for i in range(ops):
        k = i % 3
        if k == 0:
            y = tanh(y)
        elif k == 1:
            y = y * c
        else:
            y = y + b
    return y


def _median_times(fns: dict, repeats: int) -> dict:
    """Median wall time of each ``fns[key]()`` over ``repeats`` runs, after one warm-up run.

    The runs are interleaved (a, b, a, b, ...) so that drifting machine load affects every
    engine alike, and a full garbage collection precedes each timed run.
    """
    for fn in fns.values():
        fn()
    times: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def unrollgraph_chains(ops, size):
    """The forward-only and forward+backward runs of the chain on unrollgraph."""
    rng = np.random.default_rng(0)
    x = ug.tensor(rng.normal(size=size), requires_grad=True, name="x")
    c = ug.tensor(0.9, requires_grad=True, name="c")
    b = ug.tensor(rng.normal(scale=0.1, size=size), requires_grad=True, name="b")

    def fwd():
        return _chain(x, c, b, ops, ug.tanh)

    def fwd_bwd():
        _chain(x, c, b, ops, ug.tanh).sum().backward()

    return fwd, fwd_bwd


def torch_chains(ops, size):
    """The same runs on PyTorch (CPU, float64), or ``None`` when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=size), requires_grad=True)
    c = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(rng.normal(scale=0.1, size=size), requires_grad=True)

    def fwd():
        return _chain(x, c, b, ops, torch.tanh)

    def fwd_bwd():
        _chain(x, c, b, ops, torch.tanh).sum().backward()

    return fwd, fwd_bwd, torch.__version__


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=10_000, help="ops in the chain")
    p.add_argument("--size", type=int, default=8, help="elements of each array")
    p.add_argument("--repeats", type=int, default=11, help="timed runs (the median is shown)")
    a = p.parse_args(argv)
    us = 1e6 / a.ops
    fns = dict(zip(("ug_f", "ug_fb"), unrollgraph_chains(a.ops, a.size)))
    th = torch_chains(a.ops, a.size)
    if th is not None:
        fns["t_f"], fns["t_fb"] = th[0], th[1]
    m = _median_times(fns, a.repeats)
    print(f"chain of {a.ops} ops (tanh / mul by a scalar / add) on float64 arrays of "
          f"{a.size} elements; median of {a.repeats} runs; microseconds per op")
    print(f"{'engine':<22}{'forward':>10}{'fwd + bwd':>12}")
    print(f"{'unrollgraph':<22}{m['ug_f'] * us:>10.2f}{m['ug_fb'] * us:>12.2f}")
    if th is None:
        print("PyTorch is not installed: no comparison (pip install torch)")
        return
    print(f"{'PyTorch ' + th[2]:<22}{m['t_f'] * us:>10.2f}{m['t_fb'] * us:>12.2f}")
    print(f"{'ratio (ug / torch)':<22}{m['ug_f'] / m['t_f']:>10.2f}"
          f"{m['ug_fb'] / m['t_fb']:>12.2f}")


if __name__ == "__main__":
    main()

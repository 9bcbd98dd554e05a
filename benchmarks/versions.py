"""One training step of two versions of unrollgraph side by side, in one process.

``python benchmarks/versions.py --before /path/to/other/checkout`` imports the other checkout's
package under another name next to this one, builds the same Elman RNN / LSTM step with each
(``net(xs)`` then ``(outputs * G).sum().backward()``, as ``benchmarks/bptt.py``'s ``ours``),
checks that both give the same outputs and gradients bit for bit, and times them with the
hand-written numpy loops of ``benchmarks/reference.py``: thread CPU time (the machine's other
jobs do not count), the best of interleaved rounds (each column once per round, in rotating
order) for ``--seconds`` per row. Set ``OPENBLAS_NUM_THREADS=1`` for one BLAS thread.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import unrollgraph as after  # noqa: E402  (this checkout)

_spec = importlib.util.spec_from_file_location("_versions_reference", HERE / "reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

SIZES = {"tiny": (1, 8, 10, 4), "small": (32, 64, 50, 32), "medium": (32, 256, 100, 128),
         "long": (16, 128, 1000, 64)}
CELLS = {"rnn": "RNNCell", "lstm": "LSTMCell"}


def load_before(checkout: str):
    """The package of another checkout, imported as ``unrollgraph_before``."""
    pkg = pathlib.Path(checkout).resolve() / "unrollgraph"
    if not (pkg / "__init__.py").is_file():
        raise SystemExit(f"--before: {checkout} has no unrollgraph/ package")
    tmp = tempfile.mkdtemp(prefix="ug_before_")
    os.symlink(pkg, os.path.join(tmp, "unrollgraph_before"))
    sys.path.insert(0, tmp)
    import unrollgraph_before

    return unrollgraph_before


def step(ug, kind, B, H, T, D):
    """The training step of ``benchmarks/bptt.py``'s ``ours`` column, with package ``ug``."""
    cell = getattr(ug.nn, CELLS[kind])(D, H, seed=0)
    net = ug.unroll(cell, steps=T)
    xt = ug.tensor(np.random.default_rng(1).normal(size=(T, B, D)))
    Gt = ug.tensor(np.random.default_rng(2).normal(size=(T, B, H)))

    def run():
        cell.zero_grad()
        out, _ = net(xt)
        (out * Gt).sum().backward()
        return out.data, {k: p.grad for k, p in cell.parameters().items()}

    return run, cell


def best_us(fns: dict, seconds: float) -> dict:
    """The least thread CPU time of each function over interleaved rounds, in µs."""
    best = {k: float("inf") for k in fns}
    names = list(fns)
    end = time.perf_counter() + seconds
    r = 0
    while time.perf_counter() < end or r < 5:
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.thread_time()
            fns[k]()
            best[k] = min(best[k], time.thread_time() - t0)
        r += 1
    return {k: 1e6 * v for k, v in best.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="another checkout of unrollgraph")
    ap.add_argument("--sizes", default="tiny,small,medium,long")
    ap.add_argument("--kinds", default="rnn,lstm")
    ap.add_argument("--seconds", type=float, default=3.0, help="per row")
    args = ap.parse_args(argv)
    before = load_before(args.before)
    print("| cell | size | before ms | after ms | numpy ms | numpy batched ms | before/np | "
          "after/np | before/npb | after/npb |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        for size in args.sizes.split(","):
            B, H, T, D = SIZES[size]
            old, cell = step(before, kind, B, H, T, D)
            new, _ = step(after, kind, B, H, T, D)
            a, b = old(), new()
            if not (np.array_equal(a[0], b[0]) and all(np.array_equal(a[1][k], b[1][k])
                                                         for k in a[1])):
                raise SystemExit(f"{kind} {size}: the two versions' steps differ")
            xs = np.random.default_rng(1).normal(size=(T, B, D))
            G = np.random.default_rng(2).normal(size=(T, B, H))
            layers = [cell.state_dict()]
            p = cell.state_dict()

            # (each numpy column computes its loss's value, as bptt.py's do)
            def numpy_loop(kind=kind, xs=xs, layers=layers, G=G):
                ys, _, cache = ref.forward(kind, xs, layers)
                ref.loss(ys, G)
                return ref.backward(cache, G, need_dxs=False)

            def numpy_batched(kind=kind, xs=xs, p=p, G=G):
                ys, cache = ref.forward_batched(kind, xs, p)
                ref.loss(ys, G)
                return ref.backward_batched(cache, G)

            us = best_us({"before": old, "after": new, "np": numpy_loop, "npb": numpy_batched},
                         args.seconds)
            ms = {k: v / 1e3 for k, v in us.items()}
            print(f"| {kind.upper()} | {size} | {ms['before']:.3g} | {ms['after']:.3g} | "
                  f"{ms['np']:.3g} | {ms['npb']:.3g} | {us['before'] / us['np']:.2f} | "
                  f"{us['after'] / us['np']:.2f} | {us['before'] / us['npb']:.2f} | "
                  f"{us['after'] / us['npb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()

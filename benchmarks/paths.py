"""The plain path against the time-batched one: which costs less for a cell at a size.

A run takes one of two compiled paths (``unrollgraph.run._plain_path`` chooses): the plain
path, whose steps compute their own input projection and add their parts of the shared
weights' gradients into them in place, or the time-batched path (the input projection of all
steps in one product, the per-step parts filed and flushed in stacked products, a chunk of
steps at a time on long runs). This script times one training step
(``cell.zero_grad(); out, _ = net(xs); (out * G).sum().backward()``) of the same cell on each
path, in one process: thread CPU time, the best of ``--rounds`` interleaved rounds of
``--number`` steps, after checking that both paths give the same gradients (to 1e-10
relative: they sum the steps' parts in another order). It prints, per cell and size, the
plain step over the batched one, the steps a flush covers (``run._chunk_steps``, 0: one
flush) and the path a run takes now.

Run ``OPENBLAS_NUM_THREADS=1 python benchmarks/paths.py [--kinds lstm,gru,rnn]
[--sizes "1,8,10,4;32,64,50,32"] [--rounds 9]`` (sizes are B,H,T,D).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
try:  # the installed package (or PYTHONPATH); else the checkout this script lives in
    import unrollgraph as ug
except ImportError:
    sys.path.insert(0, str(HERE.parent))
    import unrollgraph as ug

from unrollgraph import run as run_module  # noqa: E402

CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}
SIZES = "1,8,10,4;1,8,12,4;32,64,50,32;16,128,100,64"


def step_on(kind: str, B: int, H: int, T: int, D: int, plain: bool):
    """A zero-argument training step whose runs take the plain path (``plain``) or the
    time-batched one, and its cell."""
    cell = CELLS[kind](D, H, seed=0)
    net = ug.unroll(cell, steps=T)
    xt = ug.tensor(np.random.default_rng(1).normal(size=(T, B, D)))
    Gt = ug.tensor(np.random.default_rng(2).normal(size=(T, B, H)))
    forced = 1 << 30 if plain else 0  # (what _plain_path compares the steps with)

    def step():
        saved = run_module._PLAIN_STEPS
        run_module._PLAIN_STEPS = forced
        try:
            cell.zero_grad()
            out, _ = net(xt)
            (out * Gt).sum().backward()
        finally:
            run_module._PLAIN_STEPS = saved
        return net.last_run.plain

    return step, cell


def compare(kind: str, B: int, H: int, T: int, D: int, rounds: int, number: int) -> dict:
    """Best µs per step of each path, the chunk and the path a run takes by default."""
    steps = {}
    for name, plain in (("batched", False), ("plain", True)):
        step, cell = step_on(kind, B, H, T, D, plain)
        if step() is not plain:
            raise SystemExit(f"{kind} {B},{H},{T},{D}: could not force the {name} path")
        steps[name] = (step, cell)
    grads = {k: {n: p.grad.copy() for n, p in c.parameters().items()}
             for k, (_s, c) in steps.items()}
    for n, want in grads["batched"].items():
        np.testing.assert_allclose(grads["plain"][n], want, rtol=1e-10, atol=1e-12, err_msg=n)
    for step, _c in steps.values():
        for _ in range(max(3, number // 4)):
            step()
    best = {k: float("inf") for k in steps}
    for _ in range(rounds):
        for k, (step, _c) in steps.items():
            t = time.thread_time_ns()
            for _ in range(number):
                step()
            best[k] = min(best[k], (time.thread_time_ns() - t) / number / 1e3)
    net = ug.unroll(CELLS[kind](D, H, seed=0), steps=T)
    chunk = run_module._chunk_steps(net, B, 8)
    best["chunk"] = chunk
    best["now"] = "plain" if run_module._plain_path(net, B, chunk, 8) else "batched"
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="lstm,gru,rnn")
    ap.add_argument("--sizes", default=SIZES, help="B,H,T,D shapes separated by ';'")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--number", type=int, default=None,
                    help="steps per round (default: fewer for larger sizes)")
    args = ap.parse_args(argv)
    print("| cell | B, H, T, D | batched µs | plain µs | plain / batched | chunk | path now |")
    print("|---|---|---|---|---|---|---|")
    for item in args.sizes.split(";"):
        B, H, T, D = (int(n) for n in item.split(","))
        number = args.number or max(2, int(4e5 // (B * H * T + 2000)))
        for kind in args.kinds.split(","):
            r = compare(kind, B, H, T, D, args.rounds, number)
            print(f"| {kind.upper()} | {B}, {H}, {T}, {D} | {r['batched']:.0f} | "
                  f"{r['plain']:.0f} | {r['plain'] / r['batched']:.3f} | {r['chunk']} | "
                  f"{r['now']} |", flush=True)


if __name__ == "__main__":
    main()

"""Train an Elman RNN and an LSTM on the adding problem, a task that needs memory.

Each input step carries two numbers: a value drawn from U(0, 1) and a marker that is 1 at
exactly two steps (one in each half of the sequence) and 0 elsewhere. The target, read out
after the last step, is the sum of the two marked values. Predicting the mean (1.0) gives a
mean squared error of 1/6 ~ 0.167; getting below that needs the net to remember the marked
values over the steps in between.

    python examples/train_rnn.py                 # a few seconds
    python examples/train_rnn.py --steps 20 --epochs 80 --hidden 32 --progress
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import unrollgraph as ug

BASELINE = 1.0 / 6.0  # MSE of always predicting the mean of the sum of two U(0, 1) values


def adding_problem(n: int, steps: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences of the adding problem: inputs (steps, n, 2), targets (n, 1)."""
    values = rng.uniform(0.0, 1.0, size=(steps, n))
    markers = np.zeros((steps, n))
    half = max(steps // 2, 1)
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, steps, size=n)
    cols = np.arange(n)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    xs = np.stack([values, markers], axis=-1)
    ys = (values[first, cols] + values[second, cols])[:, None]
    return xs, ys


def train(kind: str, args, out=print) -> dict:
    """Train one model (``kind`` is "rnn" or "lstm"); return its losses."""
    make = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell}[kind]
    cell = make(2, args.hidden, seed=args.seed)
    model = ug.train.SequenceModel(ug.unroll(cell, steps=args.steps),
                                   ug.train.Linear(args.hidden, 1, seed=args.seed), last=True)
    opt = ug.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    train_set = [adding_problem(args.batch, args.steps, rng) for _ in range(args.batches)]
    test_set = [adding_problem(256, args.steps, rng)]

    def batches(epoch):  # a fresh order every epoch
        order = np.random.default_rng(args.seed + epoch).permutation(len(train_set))
        return [train_set[i] for i in order]

    start = time.perf_counter()
    before = ug.train.evaluate(model, test_set)
    hist = ug.train.fit(model, opt, batches, ug.mse_loss, epochs=args.epochs, clip=args.clip,
                        progress=args.progress)
    after = ug.train.evaluate(model, test_set)
    seconds = time.perf_counter() - start
    out(f"{kind.upper()} (hidden {args.hidden}, T={args.steps}): test MSE {before:.4f} before, "
        f"mean-prediction baseline {BASELINE:.4f}")
    shown = sorted({0, *range(0, args.epochs, max(1, args.epochs // 6)), args.epochs - 1})
    for e in shown:
        out(f"  epoch {e + 1:3d}  train loss {hist.epoch_loss[e]:.4f}")
    out(f"  test MSE after training {after:.4f} ({seconds:.1f}s)")
    return {"before": before, "after": after, "epoch_loss": hist.epoch_loss}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="sequence length T (default 10)")
    p.add_argument("--epochs", type=int, default=40, help="passes over the data (default 40)")
    p.add_argument("--hidden", type=int, default=16, help="hidden units (default 16)")
    p.add_argument("--batch", type=int, default=32, help="sequences per batch (default 32)")
    p.add_argument("--batches", type=int, default=16, help="batches per epoch (default 16)")
    p.add_argument("--lr", type=float, default=0.02, help="Adam learning rate (default 0.02)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default="rnn,lstm", help="comma-separated: rnn, lstm")
    p.add_argument("--progress", action="store_true", help="draw a progress bar on stderr")
    return p.parse_args(argv)


def main(argv=None, out=print) -> dict:
    """Run the example; returns ``{kind: {"before", "after", "epoch_loss"}}``."""
    args = parse_args(argv)
    args.progress = True if args.progress else "auto"
    return {kind: train(kind, args, out) for kind in args.models.split(",")}


if __name__ == "__main__":
    main()

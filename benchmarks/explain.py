"""Time of the narrated backward walk and of its HTML stepper on long unrolled nets.

``ug.explain(loss)`` replays the backward walk in Python; ``ex.to_html(path)`` lays the
opened-up graph out with Graphviz's ``dot`` once (every frame restyles that one picture), so
its cost is one ``dot`` run, not one per frame. This script times both for an Elman RNN and
an LSTM unrolled over T = 20 steps (the ready cells as ``unrollgraph explain`` builds them:
one input, one unit, a batch of one; and a wider LSTM), and prints the number of frames.

Run ``python benchmarks/explain.py [--steps 20] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import sys
import tempfile
import time

import numpy as np

# the checkout this script lives in (not another installed copy): it measures this code
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import unrollgraph as ug  # noqa: E402


def _loss(kind: str, T: int, inputs: int, hidden: int):
    cls = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell}[kind]
    cell = cls(inputs, hidden, seed=0)
    net = ug.unroll(cell, steps=T)
    xs = np.random.default_rng(0).standard_normal((T, 1, inputs))
    out, *_ = net(xs)
    loss = (out * out).sum()
    loss.backward()
    return loss


def _cpu() -> float:
    """CPU time (s) used so far by this process and the ``dot`` processes it waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(kind: str, T: int, inputs: int, hidden: int, repeats: int) -> tuple:
    """Best wall times (s) of explain() and of to_html(), the CPU time of the best to_html
    (``dot`` included: on a shared machine the wall time also counts waiting for a core), the
    number of frames and the page's size."""
    loss = _loss(kind, T, inputs, hidden)
    t_explain = t_html = c_html = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        page = pathlib.Path(tmp) / "walk.html"
        for _ in range(repeats):
            start = time.perf_counter()
            ex = ug.explain(loss)
            t_explain = min(t_explain, time.perf_counter() - start)
            start, cpu = time.perf_counter(), _cpu()
            ex.to_html(page)
            wall = time.perf_counter() - start
            if wall < t_html:
                t_html, c_html = wall, _cpu() - cpu
        size = page.stat().st_size
    return t_explain, t_html, c_html, len(ex), size


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    T = args.steps
    print(f"explain + to_html, T = {T}, best of {args.repeats}")
    print(f"{'net':<22} {'frames':>7} {'explain (s)':>12} {'to_html (s)':>12} "
          f"{'to_html CPU (s)':>16} {'page (kB)':>10}")
    for kind, inputs, hidden in (("rnn", 1, 1), ("lstm", 1, 1), ("lstm", 3, 4)):
        t_e, t_h, c_h, frames, size = measure(kind, T, inputs, hidden, args.repeats)
        name = f"{kind} ({inputs} in, {hidden} units)"
        print(f"{name:<22} {frames:>7} {t_e:>12.3f} {t_h:>12.3f} {c_h:>16.3f} "
              f"{size / 1000:>10.0f}")


if __name__ == "__main__":
    main()

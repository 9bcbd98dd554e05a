"""Where the time of one small training step goes: the fixed cost of a call, part by part.

At a small size (by default B=1, H=8, T=10, D=4) a step does little arithmetic, and the
figures measure Python. One training step of ours is
``cell.zero_grad(); out, _ = net(xt); (out * Gt).sum().backward()`` with the tensors ``xt`` and
``Gt`` made once; it is split into

* ``net(xt)``: the call, of which ``run forward`` is the run's own forward pass (a fresh
  :class:`~unrollgraph.run.Run` and its ``forward()``) and the rest the call around it
  (checking the inputs, the output tensors, dropping the previous call's run);
* ``loss``: the eager ``(out * Gt).sum()``;
* ``backward()``: the whole reverse walk, of which ``run backward`` is the run's backward
  pass (backpropagation through time) and the rest the eager walk around it (counting uses,
  the VJPs of ``sum`` and ``mul``, seeding the run, copying each parameter's gradient into
  its ``.grad``);
* ``the run alone``: a fresh run's forward and backward passes one after the other, with no
  tensor or eager node around them: the floor of a step (the parts timed apart each run
  with their code and data warm, and add up to less than they cost in turn);

next to the hand-written numpy loop of ``benchmarks/reference.py`` on the same problem (its
forward and backward timed apart too, to set against the run's own passes).
Every figure is the CPU time of this thread (``time.thread_time_ns``, which a loaded machine
disturbs less than wall time), the best of ``--repeats`` rounds, the parts interleaved.

Run ``python benchmarks/percall.py [--kinds rnn,lstm] [--size 1,8,10,4] [--repeats 15]``.
"""

from __future__ import annotations

import argparse
import importlib.util
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

from unrollgraph.run import Run  # noqa: E402

_spec = importlib.util.spec_from_file_location("_percall_reference", HERE / "reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

CELLS = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}


def parts(kind: str, B: int, H: int, T: int, D: int) -> dict:
    """Zero-argument functions, one per measured part, on one problem."""
    cell = CELLS[kind](D, H, seed=0)
    xs = np.random.default_rng(1).normal(size=(T, B, D))
    G = np.random.default_rng(2).normal(size=(T, B, H))
    net = ug.unroll(cell, steps=T)
    xt, Gt = ug.tensor(xs), ug.tensor(G)
    layers = [cell.state_dict()]
    out, _ = net(xt)
    loss = (out * Gt).sum()
    loss.backward()
    run = net.last_run
    seeds = [G, None]

    def step():
        cell.zero_grad()
        out, _ = net(xt)
        (out * Gt).sum().backward()

    def numpy_step():
        _ys, _, cache = ref.forward(kind, xs, layers)
        ref.backward(cache, G, need_dxs=False)

    np_cache = ref.forward(kind, xs, layers)[2]

    def run_forward():
        Run(net, run.xs, run.states, None, B, run.keep).forward()

    held = Run(net, run.xs, run.states, None, B, run.keep)
    held.forward()

    def run_alone():  # a fresh run's forward and backward, with no tensor or eager node
        r = Run(net, run.xs, run.states, None, B, run.keep)
        r.forward()
        r.backward(seeds)

    def backward():  # a fresh graph each time, its forward not counted
        out, _ = net(xt)
        loss = (out * Gt).sum()
        t = time.thread_time_ns()
        loss.backward()
        return time.thread_time_ns() - t

    return {
        "numpy": numpy_step,
        "numpy forward": lambda: ref.forward(kind, xs, layers),
        "numpy backward": lambda: ref.backward(np_cache, G, need_dxs=False),
        "step": step,
        "net(xt)": lambda: net(xt),
        "run forward": run_forward,
        "loss": lambda: (out * Gt).sum(),
        "backward()": backward,
        "run backward": lambda: held.backward(seeds),
        "run alone": run_alone,
    }


def measure(fns: dict, repeats: int, number: int) -> dict:
    """Best CPU time per call (µs) of each function, over ``repeats`` interleaved rounds."""
    for f in fns.values():
        for _ in range(50):
            f()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            total = 0
            t0 = time.thread_time_ns()
            for _ in range(number):
                inner = f()
                if type(inner) is int:  # the function timed its own part
                    total += inner
            if not total:
                total = time.thread_time_ns() - t0
            best[k] = min(best[k], total / number / 1e3)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="rnn,lstm", help="cells: rnn,lstm,gru")
    ap.add_argument("--size", default="1,8,10,4", help="B,H,T,D")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--number", type=int, default=200, help="calls per round")
    args = ap.parse_args(argv)
    B, H, T, D = (int(v) for v in args.size.split(","))
    print(f"# one training step, float64, B={B} H={H} T={T} D={D}: best CPU µs per call "
          f"over {args.repeats} rounds of {args.number}")
    for kind in args.kinds.split(","):
        m = measure(parts(kind, B, H, T, D), args.repeats, args.number)
        wrapper = m["net(xt)"] - m["run forward"]
        eager = m["backward()"] - m["run backward"]
        print(f"\n{kind.upper()}: step {m['step']:.0f} µs, numpy {m['numpy']:.0f} µs, "
              f"ratio {m['step'] / m['numpy']:.2f}")
        print(f"  numpy loop     {m['numpy']:6.0f}   (forward {m['numpy forward']:.0f}, "
              f"backward {m['numpy backward']:.0f})")
        print(f"  net(xt)        {m['net(xt)']:6.0f}   (run forward {m['run forward']:.0f}, "
              f"the call around it {wrapper:.0f})")
        print(f"  loss           {m['loss']:6.0f}")
        print(f"  backward()     {m['backward()']:6.0f}   (run backward {m['run backward']:.0f}, "
              f"the eager walk around it {eager:.0f})")
        print(f"  the run alone  {m['run alone']:6.0f}   (a fresh run's forward and backward "
              f"in turn: {m['run alone'] / m['numpy']:.2f} of the numpy loop)")


if __name__ == "__main__":
    main()

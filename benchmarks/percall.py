"""Where the time of one training step goes: the fixed cost of a call, part by part.

At a small size (by default B=1, H=8, T=10, D=4) a step does little arithmetic, and the
figures measure Python. One training step of ours is
``cell.zero_grad(); out, _ = net(xt); (out * Gt).sum().backward()`` with the tensors ``xt`` and
``Gt`` made once. Its parts are timed inside that very step (the run's own passes by a
subclass of :class:`~unrollgraph.run.Run` that reads the clock around them), so they add
up to the step:

* ``net(xt)``: the call, of which ``run forward`` is the run's own forward pass and the rest
  the call around it (checking the inputs, making the run, the output tensors);
* ``loss``: the eager ``(out * Gt).sum()``;
* ``backward()``: the whole reverse walk, of which ``run backward`` is the run's backward
  pass (backpropagation through time) and the rest the eager walk around it (for this loss
  the short walk of docs/engine.md: the VJPs of ``sum`` and ``mul``, seeding the run,
  storing each parameter's ``.grad``);
* ``machinery``: everything but the run's two passes (the call around the run, the loss, the
  eager walk, ``zero_grad``): what a step costs beyond the run;

next to the hand-written numpy loop of ``benchmarks/reference.py`` on the same problem (its
forward and backward timed apart too, to set against the run's own passes).
With ``--machinery`` the step's run computes nothing: its two passes put back what a real
run of the same net left (values, then gradients), so the step times the machinery alone,
warm and with far less noise than the difference of two large figures (the passes' own
bookkeeping, a dict update and two list copies, about 3 µs, is counted in ``net(xt)``).
Every figure is the CPU time of this thread (``time.thread_time_ns``, which a loaded machine
disturbs less than wall time): the whole step and the numpy loop the best of ``--repeats``
rounds of ``--number`` calls, interleaved; a part the median over the calls of the step's
best round (see :func:`measure`).

Run ``python benchmarks/percall.py [--kinds rnn,lstm] [--sizes tiny,small] [--repeats 15]
[--machinery]``.
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


SIZES = {"tiny": (1, 8, 10, 4), "small": (32, 64, 50, 32)}  # (B, H, T, D), as bptt.py


class TimedRun(Run):
    """A run that adds the thread CPU time of its forward and backward passes to ``clock``."""

    clock = [0, 0]

    def forward(self):
        t = time.thread_time_ns()
        super().forward()
        self.clock[0] += time.thread_time_ns() - t

    def backward(self, seeds):
        t = time.thread_time_ns()
        super().backward(seeds)
        self.clock[1] += time.thread_time_ns() - t


def parts(kind: str, B: int, H: int, T: int, D: int) -> dict:
    """Zero-argument functions: ``step`` (returns the step's parts in ns), the numpy loop and
    its two passes."""
    cell = CELLS[kind](D, H, seed=0)
    xs = np.random.default_rng(1).normal(size=(T, B, D))
    G = np.random.default_rng(2).normal(size=(T, B, H))
    net = ug.unroll(cell, steps=T)
    net._run_type = TimedRun  # (the net's runs read the clock around their passes)
    xt, Gt = ug.tensor(xs), ug.tensor(G)
    layers = [cell.state_dict()]
    clock = TimedRun.clock
    now = time.thread_time_ns

    def step():
        clock[0] = clock[1] = 0
        t0 = now()
        cell.zero_grad()
        t1 = now()
        out, _ = net(xt)
        t2 = now()
        loss = (out * Gt).sum()
        t3 = now()
        loss.backward()
        t4 = now()
        return (t4 - t0, t1 - t0, t2 - t1, clock[0], t3 - t2, t4 - t3, clock[1])

    def numpy_step():
        _ys, _, cache = ref.forward(kind, xs, layers)
        ref.backward(cache, G, need_dxs=False)

    np_cache = ref.forward(kind, xs, layers)[2]
    return {
        "step": step,
        "numpy": numpy_step,
        "numpy forward": lambda: ref.forward(kind, xs, layers),
        "numpy backward": lambda: ref.backward(np_cache, G, need_dxs=False),
    }


class HeldRun(Run):
    """A run whose two passes compute nothing: they put back what a real run of the same net
    left (its values after the forward pass, its gradients after the backward pass), so a
    step with it costs the machinery alone (see :func:`machinery_parts`)."""

    held: dict = {}

    def forward(self):
        held = self.held
        for k, v in held["after forward"].items():
            self.__dict__[k] = v
        self.values = list(held["values"])

    def backward(self, seeds):
        self.seeds = seeds
        self._full = None
        self._state_grads = None
        self.grads = list(self.held["grads"])


_OWN = ("net", "keep", "xs", "xs_data", "states", "lengths", "batch", "_born")


def machinery_parts(kind: str, B: int, H: int, T: int, D: int) -> dict:
    """``step``: a training step whose run passes are held (:class:`HeldRun`), returning its
    parts in ns as :func:`parts`' step does (the run's passes read 0)."""
    cell = CELLS[kind](D, H, seed=0)
    xs = np.random.default_rng(1).normal(size=(T, B, D))
    G = np.random.default_rng(2).normal(size=(T, B, H))
    net = ug.unroll(cell, steps=T)
    xt, Gt = ug.tensor(xs), ug.tensor(G)
    out, _ = net(xt)
    (out * Gt).sum().backward()
    real = net.last_run
    after = {k: v for k, v in real.__dict__.items() if k not in _OWN and k != "grads"}
    held = {"after forward": after, "values": list(real.values), "grads": list(real.grads)}
    net._run_type = type("Held", (HeldRun,), {"held": held})
    now = time.thread_time_ns

    def step():
        t0 = now()
        cell.zero_grad()
        t1 = now()
        out, _ = net(xt)
        t2 = now()
        loss = (out * Gt).sum()
        t3 = now()
        loss.backward()
        t4 = now()
        return (t4 - t0, t1 - t0, t2 - t1, 0, t3 - t2, t4 - t3, 0)

    return {"step": step}


def report_machinery(kind: str, m: dict) -> str:
    """The line printed for one cell with ``--machinery``."""
    return (f"{kind.upper()}: machinery {m['step']:.1f} µs (zero_grad {m['zero_grad']:.1f}, "
            f"net(xt) {m['net(xt)']:.1f}, loss {m['loss']:.1f}, backward() "
            f"{m['backward()']:.1f})")


_PARTS = ("step", "zero_grad", "net(xt)", "run forward", "loss", "backward()", "run backward")


def measure(fns: dict, repeats: int, number: int) -> dict:
    """Best CPU time per call (µs) of each function over ``repeats`` interleaved rounds of
    ``number`` calls; for the step, its parts in its best round (their means over that
    round's calls, so that they add up to the step)."""
    for f in fns.values():
        for _ in range(max(5, number // 4)):
            f()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            if k == "step":
                sums = [0] * len(_PARTS)
                for _ in range(number):
                    for j, v in enumerate(f()):
                        sums[j] += v
                if sums[0] / number / 1e3 < best["step"]:
                    for name, v in zip(_PARTS, sums):
                        best[name] = v / number / 1e3
                continue
            t0 = time.thread_time_ns()
            for _ in range(number):
                f()
            best[k] = min(best[k], (time.thread_time_ns() - t0) / number / 1e3)
    return best


def report(kind: str, m: dict) -> str:
    """The lines printed for one cell."""
    wrapper = m["net(xt)"] - m["run forward"]
    eager = m["backward()"] - m["run backward"]
    run = m["run forward"] + m["run backward"]
    machinery = m["step"] - run
    return "\n".join([
        f"{kind.upper()}: step {m['step']:.0f} µs, numpy {m['numpy']:.0f} µs, "
        f"ratio {m['step'] / m['numpy']:.2f}",
        f"  numpy loop     {m['numpy']:7.0f}   (forward {m['numpy forward']:.0f}, "
        f"backward {m['numpy backward']:.0f})",
        f"  zero_grad      {m['zero_grad']:7.1f}",
        f"  net(xt)        {m['net(xt)']:7.0f}   (run forward {m['run forward']:.0f}, "
        f"the call around it {wrapper:.0f})",
        f"  loss           {m['loss']:7.0f}",
        f"  backward()     {m['backward()']:7.0f}   (run backward {m['run backward']:.0f}, "
        f"the eager walk around it {eager:.0f})",
        f"  the run        {run:7.0f}   (its two passes: {run / m['numpy']:.2f} of the numpy "
        "loop)",
        f"  machinery      {machinery:7.0f}   (the rest of the step: "
        f"{machinery / m['numpy']:.2f} of the numpy loop)",
    ])


def _sizes(spec: str) -> list:
    """``tiny,small`` (names) or ``1,8,10,4;32,64,50,32`` (shapes) -> [(B, H, T, D), ...]."""
    items = spec.split(";") if ";" in spec or spec.replace(",", "").isdigit() else \
        spec.split(",")
    out = []
    for item in items:
        if item in SIZES:
            out.append(SIZES[item])
        else:
            shape = tuple(int(n) for n in item.split(","))
            if len(shape) != 4:
                raise SystemExit(f"--sizes: {item!r} is neither a name ({', '.join(SIZES)}) "
                                 "nor a B,H,T,D shape")
            out.append(shape)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="rnn,lstm", help="cells: rnn,lstm,gru")
    ap.add_argument("--sizes", default=None,
                    help="names (tiny,small) or B,H,T,D shapes separated by ';' "
                         "(default: tiny)")
    ap.add_argument("--size", default=None, help="one B,H,T,D shape (as --sizes)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--number", type=int, default=None,
                    help="calls per round (default: 200 at tiny, fewer for larger sizes)")
    ap.add_argument("--machinery", action="store_true",
                    help="time the machinery alone: the run's passes put back a real run's "
                         "values and gradients instead of computing them")
    args = ap.parse_args(argv)
    sizes = _sizes(args.size or args.sizes or "tiny")
    for B, H, T, D in sizes:
        number = args.number or max(5, int(2e5 // (B * H * T + 1000)))
        if args.machinery:
            number *= 10  # (a step of machinery alone: a tenth of the time)
        print(f"# one training step, float64, B={B} H={H} T={T} D={D}: CPU µs per call, "
              f"best of {args.repeats} rounds of {number}")
        for kind in args.kinds.split(","):
            if args.machinery:
                print(report_machinery(kind, measure(machinery_parts(kind, B, H, T, D),
                                                     args.repeats, number)))
                continue
            print()
            print(report(kind, measure(parts(kind, B, H, T, D), args.repeats, number)))
        print()


if __name__ == "__main__":
    main()

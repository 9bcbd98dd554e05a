"""Gradient checkpointing through time: peak memory and time, full BPTT against
``checkpoint="sqrt"``.

One training step (forward, loss = sum of the outputs, backward), Elman RNN, LSTM and GRU,
B=16, H=128, D=64, float64, T = 1,000 and 10,000, each measured in a fresh subprocess:

* ``peak MB``: tracemalloc's peak during a step (numpy reports its buffers to it), the
  second step of the net, as in a training loop: the first builds and compiles what the
  net keeps for every call (a checkpointed net's segment nets and their compiled steps,
  the backward programs), Python objects that are not activations (about 1.2 MB, 15 of
  the GRU's steps' worth at T = 1,000). The inputs (a tensor, read without a copy) and
  weights are excluded (they exist before the step);
* ``outputs MB``: the (T, B, H) outputs the step returns, which any method holds;
* ``activations``: the peak less the outputs, in steps' worth: divided by what BPTT must
  keep per step (``MUST_KEEP`` (B, H) arrays: the Elman RNN 1 (its state), the LSTM 7 (its
  four gates, the cell state, its tanh and the hidden state), the GRU 5 (its gates r and z,
  the candidate n, ``W_hn h + b_hn`` that r scales, and the hidden state), as in
  ``benchmarks/bptt.py``),
  for full BPTT and for checkpointing alike. Checkpointing with k = sqrt(T) should keep at
  most ``3 sqrt(T)`` steps' worth. A cell whose state is its returned output (the Elman RNN)
  keeps that state in the outputs, which are not counted: its full run keeps little beyond
  them (the chunks of stacked per-step gradients), and checkpointing saves less. The
  weights' gradients, made during the step, are counted with the activations;
* ``ms``: the CPU time of a step (without tracemalloc; both modes in one process, in
  interleaved rounds, the least of the rounds; with one BLAS thread the CPU time is the
  time, and the machine's other work does not count), and
  ``extra / forward``: the time checkpointing adds over full BPTT, in forward passes of
  full BPTT (it recomputes each segment once: at most one more forward pass; none for a
  segment whose backward pass reads only what the run kept, as the Elman RNN's);
* where it goes, in the round with the least step time: the step's forward and backward
  pass, and within a checkpointed backward pass the recomputation (the segments run again,
  thread CPU time) and the segments' own backward passes; the rest of it is seeding and
  handing each segment's state gradient to the one before. Full BPTT's forward pass keeps
  every step's activations in fresh memory (the page faults count); the checkpointed one
  runs each segment compiled for the forward pass alone (it keeps only the outputs and the
  state handed on, computing in place) and keeps the last segment's activations (a full k
  steps: the segments are aligned to the end), which its backward pass reads instead of a
  recomputation. The LSTM's and the GRU's segments are recomputed teacher-forced (their h
  is kept for every step, as the outputs: what depends on it alone is computed for the
  whole segment at once), the LSTM's c step by step.

The measuring processes run with one BLAS thread (``--blas-threads 0`` for the library's
default): on a machine whose cores are busy with other work, a multithreaded BLAS call of
a few hundred kB waits for a core to free up (measured on the benchmark machine, a
(512, 64) @ (64, 128) product: 0.15 ms on one thread, 20 to 40 ms on two), and
checkpointing makes a few such calls per segment (the time-batched input projection and
weight gradients of k steps), so the comparison would measure the machine's load.

Run ``python benchmarks/checkpoint.py`` (a few minutes) or ``--quick`` (T = 1,000 only).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import time
import tracemalloc

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
try:  # the installed package (or PYTHONPATH); else the checkout this script lives in
    import unrollgraph as ug
except ImportError:
    sys.path.insert(0, str(HERE.parent))
    import unrollgraph as ug

B, H, D = 16, 128, 64
STEPS = (1000, 10000)
MUST_KEEP = {"rnn": 1, "lstm": 7, "gru": 5}  # (B, H) arrays BPTT must keep per step
MODES = ("full", "sqrt")


def make(kind: str, T: int, mode: str):
    cls = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}[kind]
    cell = cls(D, H, seed=0)
    # a tensor: the call reads it as it is (an array would be copied, as the call's own
    # input, and that copy counted in the peak)
    xs = ug.tensor(np.random.default_rng(1).normal(size=(T, B, D)))
    net = ug.unroll(cell, steps=T, checkpoint=None if mode == "full" else "sqrt")

    def step():
        cell.zero_grad()
        out, _ = net(xs)
        out.sum().backward()
        return out.data, {k: p.grad for k, p in cell.parameters().items()}

    return net, xs, step


def memory_child(kind: str, T: int, mode: str) -> dict:
    """In a fresh process: the peak memory of one training step, the net's second (the
    first builds what the net keeps for every call: a checkpointed net's segment nets and
    their compiled steps, a net's backward programs, which are not activations)."""
    net, xs, step = make(kind, T, mode)
    step()  # the first call: builds and compiles (and warms up the library)
    tracemalloc.start()
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"peak_mb": peak / 2**20, "k": net.checkpoint}


class _Parts:
    """Where a checkpointed step's time goes, by thread CPU time: the segments run again
    during the backward pass (the recomputation) and the segments' own backward passes
    (the rest of the backward pass: seeding, handing the state gradients from segment to
    segment, filing the inputs' gradients)."""

    def __init__(self):
        self.recompute = self.segments = 0.0
        self._in_backward = False
        seg_run, ck_run = ug.checkpoint._SegmentRun, ug.checkpoint.CheckpointedRun
        forward, backward, ck_backward = seg_run.forward, seg_run.backward, ck_run.backward
        clock = time.thread_time
        parts = self

        def seg_forward(run):
            t0 = clock()
            forward(run)
            if parts._in_backward:
                parts.recompute += clock() - t0

        def seg_backward(run, seeds):
            t0 = clock()
            backward(run, seeds)
            parts.segments += clock() - t0

        def checkpointed_backward(run, seeds):
            parts._in_backward = True
            try:
                ck_backward(run, seeds)
            finally:
                parts._in_backward = False

        seg_run.forward, seg_run.backward = seg_forward, seg_backward
        ck_run.backward = checkpointed_backward

    def take(self) -> tuple:
        out = (self.recompute, self.segments)
        self.recompute = self.segments = 0.0
        return out


def time_child(kind: str, T: int, repeats: int) -> dict:
    """In one process, both modes in interleaved rounds (so that the machine's state hits
    them alike): the CPU time of a step and of a forward pass, the least over the rounds,
    and the parts of the round with the least step time (its forward and backward pass;
    for checkpointing the recomputation and the segments' backward passes within the
    backward pass)."""
    runs = {}
    for m in MODES:
        net, xs, _step = make(kind, T, m)
        runs[m] = (net, xs, net.cell)
    parts = _Parts()
    times = {m: ([], []) for m in MODES}
    clock = time.process_time  # this process's CPU time: what other processes do adds none
    for _ in range(repeats):
        for m, (net, xs, cell) in runs.items():
            cell.zero_grad()
            t0 = clock()
            out, _ = net(xs)
            t1 = clock()
            out.sum().backward()
            t2 = clock()
            times[m][0].append((t2 - t0, t1 - t0, t2 - t1) + parts.take())
            del out
            t0 = clock()
            net(xs)
            times[m][1].append(clock() - t0)
    res = {}
    for m, (steps, forwards) in times.items():
        best = min(steps)
        res[m] = {"ms": 1e3 * best[0], "forward_ms": 1e3 * min(forwards),
                  "step_forward_ms": 1e3 * best[1], "backward_ms": 1e3 * best[2],
                  "recompute_ms": 1e3 * best[3], "segments_ms": 1e3 * best[4]}
    return res


def run_child(threads, *args) -> dict:
    env = dict(os.environ)
    if threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    out = subprocess.run([sys.executable, __file__, "--_child", *map(str, args)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 1,000 only, two rounds")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads in the measuring processes (0: the library's "
                             "default); 1 by default, see the module docstring")
    parser.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        what, kind, T, arg = args._child
        res = (memory_child(kind, int(T), arg) if what == "memory"
               else time_child(kind, int(T), int(arg)))
        print(json.dumps(res))
        return 0
    steps = STEPS[:1] if args.quick else STEPS
    repeats = 2 if args.quick else 5
    threads = args.blas_threads or "default"
    print(f"one training step, B={B}, H={H}, D={D}, float64, BLAS threads: {threads}; peak "
          "memory by tracemalloc, the net's second step, each in a fresh process; a step's "
          "worth: what BPTT must keep "
          f"per step ({', '.join(f'{k.upper()} {v}' for k, v in MUST_KEEP.items())} (B, H) "
          "arrays)\n")
    head = ["cell", "T", "k", "peak MB", "outputs MB", "activations MB",
            "activations (steps' worth)", "3 sqrt(T)", "ms", "forward ms", "extra / forward",
            "step: forward ms", "step: backward ms", "of which recompute ms",
            "of which segments' backward ms"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    ok = True
    for kind in MUST_KEEP:
        for T in steps:
            res = {m: run_child(args.blas_threads, "memory", kind, T, m) for m in MODES}
            timed = run_child(args.blas_threads, "time", kind, T, repeats)
            for m in MODES:
                res[m].update(timed[m])
            outputs = T * B * H * 8 / 2**20
            per_step = MUST_KEEP[kind] * B * H * 8 / 2**20
            for m in MODES:
                r = res[m]
                act = r["peak_mb"] - outputs
                worth = act / per_step
                bound = 3 * math.sqrt(T)
                extra = (r["ms"] - res["full"]["ms"]) / res["full"]["forward_ms"]
                if m == "sqrt":
                    ok = ok and worth <= bound and extra <= 1.0
                print("| " + " | ".join([
                    kind.upper(), str(T), str(r["k"] or "–"), f"{r['peak_mb']:.1f}",
                    f"{outputs:.1f}", f"{act:.1f}", f"{worth:.0f}",
                    f"{bound:.0f}" if m == "sqrt" else "", f"{r['ms']:.0f}",
                    f"{r['forward_ms']:.0f}", f"{extra:.2f}" if m == "sqrt" else "",
                    f"{r['step_forward_ms']:.0f}", f"{r['backward_ms']:.0f}",
                    f"{r['recompute_ms']:.0f}" if m == "sqrt" else "",
                    f"{r['segments_ms']:.0f}" if m == "sqrt" else ""]) + " |")
    print("\ntargets (checkpoint='sqrt'): activations <= 3 sqrt(T) steps' worth; extra time <= "
          "one forward pass of full BPTT: " + ("met" if ok else "MISSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inference of an exported cell: unrollgraph against onnxruntime running the ONNX model.

For an LSTM (one layer) at a few sizes, in float32 and float64, times one forward pass over T
steps (no gradient) of:

* ``ours``          ``ug.unroll(cell, T)`` built once, then ``net(xs)`` under ``ug.no_grad()``;
* ``ort scan``      onnxruntime (CPU, 2 threads) on ``to_onnx(cell, path)``: the recurrence is
                    one ``Scan``;
* ``ort unrolled``  onnxruntime on ``to_onnx(cell, path, steps=T)``: the body copied T times.

It also gives the time ``to_onnx`` takes (export, checker, shape inference) and the size of
each model file. Before timing, every engine's outputs are checked against ours. Run
``python benchmarks/onnx_inference.py`` (about a minute) or ``--quick``. Figures depend on the
machine; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
try:  # the installed package (or PYTHONPATH); else the checkout this script lives in
    import unrollgraph as ug
except ImportError:
    sys.path.insert(0, str(HERE.parent))
    import unrollgraph as ug

SIZES = {  # name: (batch, hidden, steps, input features)
    "small": (8, 32, 20, 8),
    "medium": (32, 128, 100, 32),
    "long": (16, 64, 500, 16),
}


def timed(fn, rounds):
    fn()  # warm up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small size, few rounds")
    args = parser.parse_args()
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    rounds = 3 if args.quick else 7
    sizes = {"small": SIZES["small"]} if args.quick else SIZES
    print(f"onnxruntime {ort.__version__}, median of {rounds} rounds, times in ms\n")
    header = (f"{'size':8} {'dtype':8} {'ours':>9} {'ort scan':>9} {'ort unrolled':>13} "
              f"{'export scan':>12} {'export unr.':>12} {'scan file':>10} {'unr. file':>10}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in sizes.items():
            for dtype in (np.float32, np.float64):
                print(measure(ort, options, rounds, tmp, name, size, dtype))
        print("\n(B, H, T, D: " + ", ".join(f"{k} {v}" for k, v in sizes.items()) + ")")


def once(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(ort, options, rounds, tmp, name, size, dtype) -> str:
    B, H, T, D = size
    cell = ug.nn.LSTMCell(D, H, seed=0, dtype=dtype)
    xs = np.random.default_rng(0).normal(size=(T, B, D)).astype(dtype)
    net = ug.unroll(cell, steps=T)

    def ours():
        with ug.no_grad():
            return net(xs)

    paths = {k: os.path.join(tmp, f"{name}-{k}.onnx") for k in ("scan", "unr")}
    export = {"scan": once(lambda: ug.export.to_onnx(cell, paths["scan"])),
              "unr": once(lambda: ug.export.to_onnx(cell, paths["unr"], steps=T))}
    sessions = {k: ort.InferenceSession(p, options, providers=["CPUExecutionProvider"])
                for k, p in paths.items()}
    want = ours()[0].data
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    for k, s in sessions.items():
        got = s.run(None, {"x": xs})[0]
        scale = float(np.max(np.abs(want)))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=k)
    t_ours = timed(ours, rounds)
    t_ort = {k: timed(lambda s=s: s.run(None, {"x": xs}), rounds) for k, s in sessions.items()}
    kb = {k: os.path.getsize(p) / 1024 for k, p in paths.items()}
    return (f"{name:8} {np.dtype(dtype).name:8} {t_ours * 1e3:9.2f} "
            f"{t_ort['scan'] * 1e3:9.2f} {t_ort['unr'] * 1e3:13.2f} "
            f"{export['scan'] * 1e3:12.1f} {export['unr'] * 1e3:12.1f} {kb['scan']:8.0f}kB "
            f"{kb['unr']:8.0f}kB")


if __name__ == "__main__":
    main()

"""One training step of a cell in unrollgraph and exported to PyTorch, side by side.

Forward + full BPTT of an LSTM, loss = sum of the outputs, float64, one thread for each
engine (``OPENBLAS_NUM_THREADS=1`` unless set, ``torch.set_num_threads(1)``):

* ``ours``        unrollgraph: ``ug.unroll(cell, T)`` built once, then ``net(xs)`` + backward;
* ``exported``    ``ug.export.to_torch(cell)``: the cell's graph run op by op in PyTorch;
* ``torch loop``  the same LSTM written out by hand in PyTorch (``benchmarks/bptt.py``);
* ``torch.nn``    ``torch.nn.LSTM`` (fused kernels).

The exported module should cost about what the hand-written loop costs: it runs the same ops
eagerly, plus a small Python interpreter over the cell's graph. The round trip's time per
epoch (``examples/roundtrip_torch.py``) is 40 of these steps plus Adam.

Run ``python benchmarks/export_torch.py`` (about a minute) or ``--quick``. Figures depend on
the machine; compare the ratios.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one thread each (before numpy loads)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
try:
    import unrollgraph as ug
except ImportError:
    sys.path.insert(0, str(HERE.parent))
    import unrollgraph as ug

_spec = importlib.util.spec_from_file_location("_bptt_bench", HERE / "bptt.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

SIZES = {  # name: (B, H, T, D)
    "adding": (64, 32, 200, 2),  # the round trip example's size
    "small": (32, 64, 50, 32),
}


def step_exported(torch, cell, xs):
    module = ug.export.to_torch(cell)
    xt = torch.tensor(xs)

    def step():
        module.zero_grad(set_to_none=True)
        out, _ = module(xt)
        out.sum().backward()
        return out.detach().numpy(), {k: module.get_parameter(k).grad.numpy()
                                      for k in cell.parameters()}

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small time budget")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print(f"one LSTM training step (forward + BPTT), float64, ms (median); torch "
          f"{torch.__version__} on 1 thread, OPENBLAS_NUM_THREADS="
          f"{os.environ['OPENBLAS_NUM_THREADS']}")
    print(f"{'size':>8} {'B,H,T,D':>14} {'ours':>9} {'exported':>9} {'torch loop':>11} "
          f"{'torch.nn':>9} {'exp/loop':>9} {'ours/exp':>9}")
    for name, (B, H, T, D) in SIZES.items():
        cell, xs = bench.make_problem("lstm", B, H, T, D)
        fns = {"ours": bench.step_ours(cell, xs),
               "exported": step_exported(torch, cell, xs),
               "torch loop": bench.step_torch_loop(torch, "lstm", cell, xs),
               "torch.nn": bench.step_torch_nn(torch, "lstm", cell, xs)}
        want = fns["ours"]()
        for k in ("exported", "torch loop", "torch.nn"):
            bench.check_same(k, fns[k](), want)
        ms = bench.median_ms(fns, args.quick)
        print(f"{name:>8} {f'{B},{H},{T},{D}':>14} {ms['ours']:9.1f} {ms['exported']:9.1f} "
              f"{ms['torch loop']:11.1f} {ms['torch.nn']:9.1f} "
              f"{ms['exported'] / ms['torch loop']:9.2f} {ms['ours'] / ms['exported']:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The memory of an unrolled graph's own Python objects (nodes, schedule), per step.

``ug.unroll(cell, T)`` builds T copies of the cell's nodes and a compiled schedule; they
live as long as the net, whatever a run keeps (``keep=``, ``checkpoint=``). This measures
them with tracemalloc around ``ug.unroll`` (Elman RNN and LSTM, D=64, H=128; the
parameters exist before and are not counted), in kB per step::

    python benchmarks/graph_memory.py
"""

from __future__ import annotations

import tracemalloc

import unrollgraph as ug


def main() -> None:
    print("| cell | T | checkpoint | kB per step |")
    print("|---|---|---|---|")
    for make in (ug.nn.RNNCell, ug.nn.LSTMCell):
        cell = make(64, 128, seed=0)
        for T in (1000, 4000):
            for ck in (None, "sqrt"):
                tracemalloc.start()
                net = ug.unroll(cell, T, checkpoint=ck)
                cur, _peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                print(f"| {make.__name__} | {T} | {net.checkpoint or '–'} | {cur / T / 1e3:.1f} |")
                del net


if __name__ == "__main__":
    main()

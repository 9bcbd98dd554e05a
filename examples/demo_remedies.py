"""Demonstration: tanh RNN, residual RNN, LSTM and GRU on one scale: how much gradient reaches the
first step.

Run it as ``python examples/demo_remedies.py [folder]`` or ``unrollgraph demo remedies [-o
folder]``; it prints what it measured and writes its pictures (PNG) into the folder (default
demo_out/remedies). The code is ``unrollgraph.demos.remedies``: read it there.
"""

import sys

from unrollgraph.demos import remedies

if __name__ == "__main__":
    remedies(sys.argv[1] if len(sys.argv) > 1 else "demo_out/remedies")

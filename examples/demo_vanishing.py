"""Demonstration: a tanh RNN with sigma_1(W_hh) < 1: the gradient of a loss at the last step
shrinks geometrically going back in time.

Run it as ``python examples/demo_vanishing.py [folder]`` or ``unrollgraph demo vanishing [-o
folder]``; it prints what it measured and writes its pictures (PNG) into the folder (default
demo_out/vanishing). The code is ``unrollgraph.demos.vanishing``: read it there.
"""

import sys

from unrollgraph.demos import vanishing

if __name__ == "__main__":
    vanishing(sys.argv[1] if len(sys.argv) > 1 else "demo_out/vanishing")

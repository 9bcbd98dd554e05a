"""Demonstration: a relu RNN with sigma_1(W_hh) > 1: the gradient grows going back; SGD diverges
without clipping and converges with clipping or gradient normalisation.

Run it as ``python examples/demo_exploding.py [folder]`` or ``unrollgraph demo exploding [-o
folder]``; it prints what it measured and writes its pictures (PNG) into the folder (default
demo_out/exploding). The code is ``unrollgraph.demos.exploding``: read it there.
"""

import sys

from unrollgraph.demos import exploding

if __name__ == "__main__":
    exploding(sys.argv[1] if len(sys.argv) > 1 else "demo_out/exploding")

"""Demonstration: what truncated BPTT leaves out, in the graph (per step) and streaming TBPTT(k1,
k2).

Run it as ``python examples/demo_truncation.py [folder]`` or ``unrollgraph demo truncation [-o
folder]``; it prints what it measured and writes its pictures (PNG) into the folder (default
demo_out/truncation). The code is ``unrollgraph.demos.truncation``: read it there.
"""

import sys

from unrollgraph.demos import truncation

if __name__ == "__main__":
    truncation(sys.argv[1] if len(sys.argv) > 1 else "demo_out/truncation")

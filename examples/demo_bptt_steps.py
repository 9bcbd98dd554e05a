"""Demonstration: the six steps of BPTT (unroll, forward, loss per step, backward, accumulate,
update), one call each.

Run it as ``python examples/demo_bptt_steps.py [folder]`` or ``unrollgraph demo bptt-steps [-o
folder]``; it prints what it measured and writes its pictures (PNG) into the folder (default
demo_out/bptt-steps). The code is ``unrollgraph.demos.bptt_steps``: read it there.
"""

import sys

from unrollgraph.demos import bptt_steps

if __name__ == "__main__":
    bptt_steps(sys.argv[1] if len(sys.argv) > 1 else "demo_out/bptt-steps")

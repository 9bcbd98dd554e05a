"""Demonstration: peak memory and CPU time of one training step against T: both grow linearly, O(T)
and not O(T^2).

Run it as ``python examples/demo_memory.py [folder]`` or ``unrollgraph demo memory [-o
folder]``; it prints what it measured and writes its pictures (PNG) into the folder (default
demo_out/memory). The code is ``unrollgraph.demos.memory``: read it there.
"""

import sys

from unrollgraph.demos import memory

if __name__ == "__main__":
    memory(sys.argv[1] if len(sys.argv) > 1 else "demo_out/memory")

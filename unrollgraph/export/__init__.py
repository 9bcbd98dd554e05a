"""Take a cell to the engines people train on, and its trained weights back.

The lowering works from the folded cell graph (ops, parameters, states, delay edges); each
registered op carries one rule per target beside its numpy forward (see
:func:`unrollgraph.ops.deflower`). ``import unrollgraph`` never imports torch or onnx: each
target's module is imported on first use.
"""

from __future__ import annotations

__all__ = ["to_torch", "from_torch", "to_onnx"]

_WHERE = {"to_torch": "torch_export", "from_torch": "torch_export", "to_onnx": "onnx_export"}


def __getattr__(name):
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'unrollgraph.export' has no attribute {name!r}")

"""Take a cell to the engines people train on, and its trained weights back.

The lowering works from the folded cell graph (ops, parameters, states, delay edges); each
registered op carries one rule per target beside its numpy forward (see
:func:`unrollgraph.ops.deflower`). ``import unrollgraph`` never imports torch or onnx: each
target's module is imported on first use (``ug.export.to_torch`` imports torch then).

* PyTorch (``pip install 'unrollgraph[torch]'``): :func:`to_torch` (a :class:`CellModule`),
  :func:`from_torch`, :func:`torch_tbptt` (in :mod:`unrollgraph.export.torch_export`).
  :func:`from_torch` of a state dict of numpy arrays needs no torch.
* ONNX (``pip install 'unrollgraph[onnx]'``): :func:`to_onnx` and the rules' builder
  :class:`OnnxBuilder` (in :mod:`unrollgraph.export.onnx_export`).
* :func:`check_lowering`: runs one op's rule for a target on example arrays and compares it
  with the op's numpy forward (and, for torch, its VJPs).
* :func:`lowering_table`: which op lowers to which target.

A missing torch or onnx raises :class:`~unrollgraph.errors.MissingDependencyError`, both a
``LoweringError`` and an ``ImportError``, naming the extra to install.
"""

from __future__ import annotations

__all__ = ["to_torch", "from_torch", "torch_tbptt", "CellModule", "to_onnx", "OnnxBuilder",
           "check_lowering", "lowering_table"]

# the names this package imports on first use, and the module each lives in
_WHERE = {"to_torch": "torch_export", "torch_tbptt": "torch_export",
          "CellModule": "torch_export", "from_torch": "weights",
          "to_onnx": "onnx_export", "OnnxBuilder": "onnx_export", "check_lowering": "check"}
_EXTRA = {"torch": "torch", "onnx": "onnx", "onnxruntime": "onnx"}


def _missing_dependency(package: str, who: str):
    """The error for ``who`` (``"ug.export.to_torch"``) needing ``package``, not installed: one
    wording for every target, naming the extra to install."""
    from ..errors import MissingDependencyError

    extra = _EXTRA.get(package, package)
    return MissingDependencyError(
        f"{who} needs the {package} package, which is not installed; install it with "
        f"pip install 'unrollgraph[{extra}]'", package=package, target=extra)


def __getattr__(name):
    if name in _WHERE:
        from importlib import import_module

        try:
            module = import_module(f".{_WHERE[name]}", __name__)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing not in _EXTRA:
                raise
            raise _missing_dependency(missing, f"ug.export.{name}") from None
        return getattr(module, name)
    raise AttributeError(f"module 'unrollgraph.export' has no attribute {name!r}")


def __dir__():
    # the names imported on first use are listed too (listing imports nothing)
    return sorted(set(globals()) | set(__all__))


# what the table says of an op that is plumbing, not maths: it never appears inside a cell
_PLUMBING = {
    "item": "picks one output of a multi-output node",
    "unrolled": "a call of an unrolled net in the eager graph; never inside a cell",
}


def lowering_table() -> str:
    """The Markdown table of which registered op lowers to which export target.

    One row per op of the registry (sorted by name), one column per target: ``yes`` where the
    op has a rule for that target, ``no`` where a cell using it cannot be exported there.
    ``docs/export.md`` holds this table; ``python -m unrollgraph.export`` prints it.

    Returns
    -------
    str

    Examples
    --------
    >>> import unrollgraph as ug
    >>> print(ug.export.lowering_table().splitlines()[0])
    | op | torch | onnx | note |
    """
    from ..ops import TARGETS, registry

    lines = ["| op | " + " | ".join(TARGETS) + " | note |",
             "|---|" + "---|" * len(TARGETS) + "---|"]
    for name, op in sorted(registry().items()):
        marks = " | ".join("yes" if t in op.lower else "no" for t in TARGETS)
        lines.append(f"| `{name}` | {marks} | {_PLUMBING.get(name, '')} |")
    return "\n".join(lines)

"""A cell's parameter names in PyTorch, and weights back into the cell.

PyTorch forbids a ``.`` in a parameter name, and a name that is already an attribute of the
module (``forward``, ``step``, ``training``...). :func:`unrollgraph.export.to_torch` maps such
names reversibly: ``%`` becomes ``%25``, ``.`` becomes ``%2E``, and a name that would collide
with an attribute gets the prefix ``%_``. Since an escaped name never starts with ``%_``, every
module name maps back to exactly one cell name (:func:`cell_name`).

This module imports no torch: :func:`from_torch` of a dict of numpy arrays works without it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping

import numpy as np

from ..cell import Cell
from ..errors import CellError

__all__ = ["from_torch"]

_ESCAPED = re.compile(r"(?:[^%]|%25|%2E)*\Z")


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace(".", "%2E")


def cell_name(torch_name: str) -> str | None:
    """The cell name a module parameter name stands for (``None`` if ``torch_name`` is not
    one :func:`to_torch` can make: a ``%`` not followed by ``25``, ``2E`` or, first, ``_``)."""
    if not isinstance(torch_name, str):
        return None
    body = torch_name[2:] if torch_name.startswith("%_") else torch_name
    if not _ESCAPED.match(body):
        return None
    return re.sub(r"%(25|2E)", lambda m: "%" if m.group(1) == "25" else ".", body)


def _by_cell_name(sd: Mapping, cell: Cell) -> dict:
    """``sd`` keyed by the cell's parameter names, whether it holds the cell's own names or
    the module's (or, name by name, both where that is unambiguous)."""
    params = list(cell.parameters())
    wanted = set(params)
    keys = list(sd)
    if set(keys) == wanted and len(keys) == len(wanted):
        return dict(sd)  # the cell's own names
    back = {k: cell_name(k) for k in keys}
    if len(keys) == len(wanted) and set(back.values()) == wanted:
        return {back[k]: sd[k] for k in keys}  # the module's names
    out, source, unknown, ambiguous, twice, unsure = {}, {}, [], [], [], set()
    for k in keys:
        own = k if isinstance(k, str) and k in wanted else None
        other = back[k] if back[k] in wanted and back[k] != k else None
        if own is not None and other is not None:
            ambiguous.append(f"{k!r} (the cell's {own!r}, or the module's name of {other!r})")
            unsure |= {own, other}
            continue
        name = own if own is not None else other
        if name is None:
            unknown.append(k)
        elif name in out:
            twice.append(f"{source[name]!r} and {k!r} both give {name!r}")
        else:
            out[name], source[name] = sd[k], k
    missing = [k for k in params if k not in out and k not in unsure]
    if unknown or missing or ambiguous or twice:
        parts = ([f"unknown names {sorted(map(str, unknown))}"] if unknown else []) + (
            [f"missing {missing}"] if missing else []) + (
            [f"ambiguous names {', '.join(ambiguous)}"] if ambiguous else []) + (
            [f"names that clash: {'; '.join(twice)}"] if twice else [])
        example = next((f", e.g. {k!r} to {_escape(k)!r}" for k in params
                        if _escape(k) != k), "")
        raise CellError(
            f"from_torch: the state dict does not fit cell {cell.name!r}: {'; '.join(parts)}. "
            f"The cell's parameters are {params}; pass a state dict named all by them "
            f"(cell.state_dict()) or all by the module's names (module.state_dict() of the "
            f"module to_torch made: module.torch_names maps each cell name to its name in "
            f"the module{example})")
    return out


def from_torch(module, cell: Cell) -> Cell:
    """Load the weights of ``module`` into ``cell``, exactly (bit for bit at equal float types).

    Parameters
    ----------
    module : CellModule, torch.nn.Module or dict
        A module from :func:`to_torch`, any module whose ``state_dict()`` uses the cell's
        names (``torch.nn.LSTMCell`` for ``ug.nn.LSTMCell``), or a state dict (what
        ``torch.load`` gives back from ``torch.save(module.state_dict(), path)``), of torch
        tensors or numpy arrays. Its names are the cell's own or the module's (``%2E`` for
        ``.``..., see ``module.torch_names``), which are mapped back; when a name could be
        read both ways, a dict named all one way decides.
    cell : Cell
        The cell to load into (all or nothing: see :meth:`Cell.load_state_dict`).

    Returns
    -------
    Cell
        ``cell`` itself, its parameters changed in place (values converted to each
        parameter's float type).

    Raises
    ------
    CellError
        Names that do not match the cell's parameters (unknown, missing, ambiguous or giving
        one parameter twice: listed), or ``cell`` not a Cell.
    ShapeError
        A value whose shape differs from its parameter's.

    Notes
    -----
    Needs torch only for a torch module or torch tensors: a dict of numpy arrays loads
    without it.

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> cell = ug.Cell("c")
    >>> x, h = cell.input("x", (2,)), cell.state("h", (2,))
    >>> w = cell.param("layer.0.w", np.ones(2))
    >>> cell.feedback(h, ug.tanh(x * w + h))
    >>> cell.output("y", h)
    >>> _ = ug.export.from_torch({"layer%2E0%2Ew": np.array([0.5, 2.0])}, cell)
    >>> cell.parameters()["layer.0.w"].data
    array([0.5, 2. ])
    """
    if not isinstance(cell, Cell):
        raise CellError(f"from_torch(module, cell): cell must be a ug.Cell, got "
                        f"{type(cell).__name__}")
    torch = sys.modules.get("torch")  # not imported: no torch object can be here
    if torch is not None and isinstance(module, torch.nn.Module):
        from .torch_export import CellModule

        sd = module.cell_state_dict() if isinstance(module, CellModule) else \
            module.state_dict()
    elif isinstance(module, Mapping):
        sd = module
    else:
        raise CellError(f"from_torch(module, cell): module must be a torch.nn.Module or a "
                        f"state dict, got {type(module).__name__}")
    arrays = {}
    for k, v in _by_cell_name(sd, cell).items():
        if torch is not None and isinstance(v, torch.Tensor):
            v = v.detach()
            if v.dtype not in (torch.float16, torch.float32, torch.float64) and \
                    v.is_floating_point():
                v = v.to(torch.float32)  # bfloat16 and the like: no numpy type of their own
            v = np.asarray(v.cpu().numpy())
        arrays[k] = v
    cell.load_state_dict(arrays)
    return cell

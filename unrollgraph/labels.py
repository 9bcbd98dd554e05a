"""The names printed for nodes the user did not name, shared by every output.

A named node prints its name. An unnamed op prints what stands for it in a formula: its
symbol (``+``, ``×``, ``ᵀ``...), the transpose of a named value as ``Wᵀ``, and a slice as the
user wrote it, the value sliced then the index in numpy's own notation (``gates[:, 0:8]``,
``x[..., ::-1]``, ``h[[3, 3]]``). :func:`unrollgraph.graph.Graph.display_name` (printouts,
networkx, the textbook view), :func:`unrollgraph.explain.display_names` (the narrated walk)
and the diagrams all take their labels from here.

Numbers are written by :func:`number`, the one number format of every output: pictures
(diagrams, the stepper's picture, TikZ) write a negative number with the typographic minus
sign U+2212 (``−0.241``, ``1e−05``), text meant to be read back or copied (printed walks,
Markdown tables, error messages, networkx attributes) with the ASCII hyphen-minus that
``float()`` and Python parse (``-0.241``). Code keeps ASCII ``-`` everywhere: a slice as
:func:`index_text` writes it (``x[..., ::-1]``), a node's equation in a tooltip.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MINUS", "OP_SYMBOLS", "index_text", "number", "op_label"]

#: the minus sign pictures print (U+2212: as wide as ``+``, set on the same axis)
MINUS = "\u2212"

#: the symbols printed for unnamed ops; other ops print their name (``tanh``, ``matmul``)
OP_SYMBOLS = {
    "add": "+", "sub": "−", "mul": "×", "div": "÷", "neg": "−x", "pow": "xⁿ",
    "transpose": "ᵀ", "getitem": "[ ]",
}


def number(x, digits: int = 3, picture: bool = True, signed: bool = False) -> str:
    """``x`` as every output writes a number: ``digits`` significant digits, ``0`` for zero,
    a negative number's sign U+2212 in a picture and ASCII ``-`` in text.

    A number that rounding changed keeps its trailing zeros, so that it never reads as
    exact: ``2.0027`` is ``2.00`` (a loss whose parts add up to 2.0027 is never "2"),
    ``-0.04001`` is ``-0.0400``, while ``2``, ``0.5`` and ``1e-05`` are written as they are.
    A number is exact when it equals its text at single precision (``0.1 + 0.2`` is
    ``0.3``; so is a ``float32`` 0.1). Where the digits kept end at the decimal point
    (``100.4``), one more is written (``100.4``, never ``100`` or ``100.``).

    Parameters
    ----------
    x : float
        The number (anything ``float()`` takes).
    digits : int
        Significant digits (the diagrams print 3, the narrated walk 4).
    picture : bool
        ``True``: for a picture (the typographic minus U+2212, in the mantissa and the
        exponent); ``False``: for text read back or copied (ASCII ``-``, which ``float()``
        parses).
    signed : bool
        Write a positive number's ``+`` as well (the parts of a sum: ``+0.0386``).

    Returns
    -------
    str

    Examples
    --------
    >>> number(-0.24137), number(-0.24137, picture=False), number(0.0386, signed=True)
    ('−0.241', '-0.241', '+0.0386')
    >>> number(-1.5e-05, digits=4, picture=False), number(0.0), number(float("-inf"))
    ('-1.5e-05', '0', '−inf')
    >>> float(number(-2.5e-07, picture=False))
    -2.5e-07
    >>> number(2.0027), number(-0.0400012, picture=False), number(100.4), number(0.1 + 0.2)
    ('2.00', '-0.0400', '100.4', '0.3')
    >>> number(123456.7), number(3e5), number(1.000004e-05, 4)
    ('1.23e+05', '3e+05', '1.000e−05')
    """
    x = float(x)
    if x == 0:
        return "0"
    text = _digits(x, digits) if math.isfinite(x) else str(x)
    if signed and x > 0:
        text = "+" + text
    return text.replace("-", MINUS) if picture else text


def _exact(x: float, text: str) -> bool:
    """Whether ``text`` is ``x`` itself, at single precision (within half a unit of
    ``float32``'s last place, relative: not a rounding of it)."""
    return abs(float(text) - x) <= abs(x) * 2.0 ** -24


def _digits(x: float, digits: int) -> str:
    """``x`` (finite, not 0) to ``digits`` significant digits; a rounded one with its
    trailing zeros (``2.00``) and never ending at its decimal point (``100.`` gets one more
    digit: ``100.4``)."""
    text = f"{x:.{digits}g}"
    if _exact(x, text):
        return text
    while True:
        text = f"{x:#.{digits}g}"
        mantissa = text.split("e")[0]
        if not mantissa.endswith("."):
            return text
        digits += 1


def _bound(v) -> str:
    return "" if v is None else str(int(v)) if isinstance(v, (int, np.integer)) else repr(v)


def _item(i) -> str:
    if i is Ellipsis:
        return "..."
    if i is None:
        return "None"
    if isinstance(i, slice):
        text = f"{_bound(i.start)}:{_bound(i.stop)}"
        return text if i.step is None else f"{text}:{_bound(i.step)}"
    if isinstance(i, (bool, np.bool_)):
        return str(bool(i))
    if isinstance(i, (int, np.integer)):
        return str(int(i))
    if isinstance(i, (list, tuple, np.ndarray)):
        return str(np.asarray(i).tolist()).replace("'", "")
    return repr(i)


def index_text(index) -> str:
    """``index`` as it is written between brackets in numpy: ``[:, 0:8]``.

    Parameters
    ----------
    index : int, slice, list, array, None, Ellipsis, or a tuple of them
        The ``index`` attribute of a ``getitem`` node.

    Returns
    -------
    str
        The index in brackets; a tuple's items separated by ``", "``.

    Examples
    --------
    >>> index_text((slice(None), slice(0, 8)))
    '[:, 0:8]'
    >>> index_text((Ellipsis, slice(None, None, -1))), index_text([3, 3]), index_text(2)
    ('[..., ::-1]', '[[3, 3]]', '[2]')
    """
    items = index if isinstance(index, tuple) else (index,)
    return "[" + ", ".join(_item(i) for i in items) + "]"


def op_label(node, operand: str | None = None) -> str:
    """The printed name of an unnamed op node, without its step: its symbol, ``Wᵀ`` for the
    transpose of a named value, ``operand[index]`` for a slice (``operand`` the printed name
    of the value sliced, by default its user name, or ``Wᵀ``; a slice of another unnamed
    value prints its index alone).

    Examples
    --------
    >>> import unrollgraph as ug
    >>> gates = ug.tensor([[1.0, 2.0, 3.0, 4.0]], name="gates")
    >>> op_label(gates[:, 0:2].node), op_label((gates * 2.0).node)
    ('gates[:, 0:2]', '×')
    >>> op_label((gates * 2.0)[:, ::-1].node), op_label(gates.T[1:].node)
    ('[:, ::-1]', 'gatesᵀ[1:]')
    """
    if node.op == "getitem" and "index" in node.attrs:
        if operand is None:
            src = node.inputs[0] if node.inputs else None
            operand = "" if src is None else src.name if src.name else (
                op_label(src) if src.op == "transpose" and src.inputs and src.inputs[0].name
                else "")
        return operand + index_text(node.attrs["index"])
    if node.op == "transpose" and node.inputs and node.inputs[0].name:
        return node.inputs[0].name + "ᵀ"
    return OP_SYMBOLS.get(node.op, node.op)

"""The ``unrollgraph`` command line.

``unrollgraph render rnn|lstm|gru [--steps T] [--hidden H] [--input I] [--seed S] [--grad]
[--folded] -o file.svg`` draws a ready cell, folded or unrolled (with ``--grad``: after a forward
pass on random inputs and the backward pass of a mean-square loss).
``unrollgraph render path/to/script.py:name`` draws your own cell: ``name`` is a variable of the
script holding a :class:`~unrollgraph.Cell`, or a function without arguments returning one.

The output format comes from the file's suffix: ``.svg``, ``.png``, ``.pdf`` (these need
Graphviz's ``dot``) or ``.dot`` (the DOT text, no ``dot`` needed).
"""

from __future__ import annotations

import argparse
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser"]

_CELLS = ("rnn", "lstm", "gru")
_FORMATS = ("svg", "png", "pdf", "dot")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``unrollgraph`` command.

    Examples
    --------
    >>> args = build_parser().parse_args(["render", "rnn", "--steps", "3", "-o", "a.dot"])
    >>> args.cell, args.steps, args.output
    ('rnn', 3, 'a.dot')
    """
    parser = argparse.ArgumentParser(
        prog="unrollgraph",
        description="Draw computational graphs and backpropagation through time.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "render",
        help="draw a cell, folded or unrolled, with its gradients",
        description="Draw a ready cell (rnn, lstm, gru) or script.py:name, your own cell.",
    )
    r.add_argument("cell", help="rnn, lstm, gru, or path/to/script.py:name")
    r.add_argument("-o", "--output", required=True,
                   help="output file; its suffix picks the format (.svg .png .pdf .dot)")
    r.add_argument("--steps", type=int, default=4, help="time steps T (default 4)")
    r.add_argument("--hidden", type=int, default=3, help="hidden size of a ready cell")
    r.add_argument("--input", type=int, default=2, help="input size of a ready cell")
    r.add_argument("--batch", type=int, default=1, help="batch size of the random inputs")
    r.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    r.add_argument("--grad", action="store_true",
                   help="run forward and backward (mean-square loss) and show gradients")
    r.add_argument("--folded", action="store_true", help="draw the folded cell (with z⁻¹)")
    r.add_argument("--truncate", type=int, default=None, help="truncated BPTT window")
    r.add_argument("--detail", choices=("auto", "ops", "steps", "elide"), default="auto")
    r.add_argument("--theme", choices=("light", "dark"), default="light")
    r.add_argument("--contributions", action="store_true",
                   help="list each step's part of a shared weight's gradient")
    return parser


def main(argv=None) -> int:
    """Run the ``unrollgraph`` command; returns the exit status.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "rnn.dot")
    >>> main(["render", "rnn", "--steps", "2", "-o", path])
    wrote ...rnn.dot
    0
    >>> with open(path) as f:
    ...     f.read().count("subgraph cluster_step")
    2
    """
    args = build_parser().parse_args(argv)
    try:
        return _render(args)
    except _UsageError as exc:
        print(f"unrollgraph: error: {exc}", file=sys.stderr)
        return 2


class _UsageError(Exception):
    pass


def _render(args) -> int:
    import unrollgraph as ug

    out = Path(args.output)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in _FORMATS:
        raise _UsageError(
            f"cannot tell the format of {args.output!r}: end the file name with one of "
            + ", ".join("." + f for f in _FORMATS)
        )
    if args.steps < 1:
        raise _UsageError(f"--steps must be at least 1, got {args.steps}")
    cell = _load_cell(args)
    if args.grad:
        cell.zero_grad()
    options = {"theme": args.theme}
    if args.folded:
        if args.grad:
            _forward_backward(ug, cell, args)
        obj = cell
    else:
        obj = ug.unroll(cell, steps=args.steps, truncate=args.truncate)
        options.update(detail=args.detail, contributions=args.contributions and args.grad)
        if args.grad:
            options["loss"] = _forward_backward(ug, cell, args, obj)
    try:
        text = ug.to_dot(obj, **options)
    except ug.UnrollGraphError as exc:
        raise _UsageError(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        out.write_text(text, encoding="utf-8")
    else:
        try:
            done = subprocess.run(["dot", f"-T{fmt}", "-o", str(out)], input=text.encode(),
                                  capture_output=True)
        except FileNotFoundError:
            raise _UsageError(
                "Graphviz's dot program is not installed; install it (apt-get install "
                "graphviz) or write the DOT text with -o file.dot"
            ) from None
        if done.returncode != 0:
            raise _UsageError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
    print(f"wrote {out}")
    return 0


def _load_cell(args):
    import unrollgraph as ug

    name = args.cell
    if name in _CELLS:
        for what, v in (("--hidden", args.hidden), ("--input", args.input)):
            if v < 1:
                raise _UsageError(f"{what} must be at least 1, got {v}")
        maker = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}[name]
        return maker(args.input, args.hidden, seed=args.seed)
    path, sep, var = name.rpartition(":")
    if not sep or not path.endswith(".py"):
        raise _UsageError(
            f"unknown cell {name!r}: use rnn, lstm, gru, or path/to/script.py:name where name "
            "is a Cell (or a function returning one) defined in the script"
        )
    if not Path(path).is_file():
        raise _UsageError(f"no such script: {path!r}")
    namespace = runpy.run_path(path, run_name="__unrollgraph__")
    if var not in namespace:
        found = sorted(k for k, v in namespace.items() if isinstance(v, ug.Cell))
        raise _UsageError(
            f"{path} defines no {var!r}; cells it defines: {', '.join(found) or 'none'}"
        )
    obj = namespace[var]
    if callable(obj) and not isinstance(obj, ug.Cell):
        obj = obj()
    if not isinstance(obj, ug.Cell):
        raise _UsageError(
            f"{path}:{var} is a {type(obj).__name__}, not a ug.Cell (or a function returning one)"
        )
    return obj


def _forward_backward(ug, cell, args, net=None):
    """Random inputs, forward, mean-square loss, backward; returns the loss."""
    if net is None:
        net = ug.unroll(cell, steps=args.steps, truncate=args.truncate)
    rng = np.random.default_rng(args.seed)
    xs = {
        k: rng.standard_normal((args.steps, args.batch) + tuple(t.shape[1:]))
        for k, t in cell.inputs.items()
    }
    outputs, state = net(xs if len(xs) != 1 else next(iter(xs.values())))
    if isinstance(outputs, dict):
        terms = [(o * o).mean() for o in outputs.values()]
        loss = terms[0]
        for t in terms[1:]:
            loss = loss + t
    elif outputs is not None:
        loss = (outputs * outputs).mean()
    else:  # a cell without outputs: a loss on its final state
        last = state[0] if isinstance(state, tuple) else state
        loss = (last * last).mean()
    loss.name = "loss"
    loss.backward()
    return loss


if __name__ == "__main__":
    sys.exit(main())

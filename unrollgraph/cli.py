"""The ``unrollgraph`` command line.

``unrollgraph render rnn|lstm|gru [--steps T] [--hidden H] [--input I] [--seed S] [--grad]
[--folded] [--detail textbook] [--theme print] [-f svg|png|pdf] -o file.svg`` draws a ready
cell, folded or unrolled (with ``--grad``: after a forward
pass on random inputs and the backward pass of a mean-square loss).
``unrollgraph render path/to/script.py:name`` draws your own cell. **This runs the script** (as
``python script.py`` would, except that ``__name__`` is ``"__unrollgraph__"``, so a ``if
__name__ == "__main__":`` block is skipped): ``name`` is then a variable of the script holding
a :class:`~unrollgraph.Cell`, or a function without arguments returning one. Only render
scripts you trust.

The output format comes from the file's suffix: ``.svg``, ``.png``, ``.pdf`` (these need
Graphviz's ``dot``) or ``.dot`` (the DOT text, no ``dot`` needed). Missing folders of the output
path are created; an output path that is a folder is refused.

Every mistake in the command line, the script or the sizes exits with status 2 and one line on
stderr (``unrollgraph: error: ...``), never a Python traceback. (An unexpected failure inside
unrollgraph itself exits with status 1 and one line too; set ``UNROLLGRAPH_TRACEBACK=1`` to see
its traceback.)
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import runpy
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser"]

_CELLS = ("rnn", "lstm", "gru")
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_FORMATS = ("svg", "png", "pdf", "dot")
# Rough cost of one node of an unrolled graph in memory (the node, its tensor, its schedule
# entry and its line in the DOT text), used to refuse sizes before they exhaust memory.
_BYTES_PER_NODE = 2048


class _UsageError(Exception):
    """A user mistake: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors raised (one line, printed by :func:`main`) instead of
    printing the usage block and exiting."""

    def error(self, message):
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = what
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``unrollgraph`` command.

    Returns
    -------
    argparse.ArgumentParser
        Its ``error`` raises instead of exiting; :func:`main` prints the message as one line.

    Examples
    --------
    >>> args = build_parser().parse_args(["render", "rnn", "--steps", "3", "-o", "a.dot"])
    >>> args.cell, args.steps, args.output
    ('rnn', 3, 'a.dot')
    """
    parser = _Parser(
        prog="unrollgraph",
        description="Draw computational graphs and backpropagation through time.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo_parser(sub)
    r = sub.add_parser(
        "render",
        help="draw a cell, folded or unrolled, with its gradients",
        description="Draw a ready cell (rnn, lstm, gru) or your own cell from a Python script "
                    "(script.py:name runs the script).",
        epilog="script.py:name RUNS script.py (with __name__ set to '__unrollgraph__', so an "
               "'if __name__ == \"__main__\":' block is skipped), then draws its variable "
               "'name': a ug.Cell, or a function without arguments returning one. Only render "
               "scripts you trust. Missing folders of -o's path are created. Mistakes exit "
               "with status 2 and one line on stderr.",
    )
    r.add_argument("cell", help="rnn, lstm, gru, or path/to/script.py:name (runs the script)")
    r.add_argument("-o", "--output", required=True,
                   help="output file; its suffix picks the format (.svg .png .pdf .dot); "
                        "missing folders are created")
    r.add_argument("--steps", type=_int_at_least(1, "--steps"), default=4,
                   help="time steps T (default 4)")
    _add_run_options(r, hidden=3, inputs=2)
    r.add_argument("--grad", action="store_true",
                   help="run forward and backward (mean-square loss) and show gradients")
    r.add_argument("--folded", action="store_true", help="draw the folded cell (with z⁻¹)")
    r.add_argument("-f", "--format", choices=("svg", "png", "pdf", "dot"), default=None,
                   help="output format (default: from -o's suffix); -o without a suffix gets "
                        "this one")
    r.add_argument("--detail", choices=("auto", "textbook", "ops", "steps", "elide"),
                   default="auto",
                   help="textbook: rows of x_t, states and outputs with the weights on the "
                        "edges (with --folded: the folded cell, a black square on each delay "
                        "edge); ops: every op, one cluster per step; steps: one box per step; "
                        "elide: first and last steps op by op; auto (default): ops for small "
                        "nets, then steps, then elide")
    r.add_argument("--beside", action="store_true",
                   help="with --detail textbook: draw the folded cell beside the unrolled one")
    r.add_argument("--theme", choices=("light", "dark", "print"), default="light",
                   help="light (default) or dark colours for screens; print: black on white, "
                        "larger type and thicker lines for slides and papers (colour only on "
                        "the gradient scale)")
    r.add_argument("--contributions", action="store_true",
                   help="list each step's part of a shared weight's gradient (needs --grad)")
    r.add_argument("--compact", action="store_true",
                   help="with --detail textbook: names only in the nodes, gradients as colour "
                        "(a 16-step figure fits a slide)")
    r.add_argument("--max-nodes", type=_int_at_least(1, "--max-nodes"), default=None,
                   help="refuse drawings of more nodes than this (default 1500: Graphviz "
                        "takes minutes on larger ones)")
    _add_explain_parser(sub)
    return parser


def _add_explain_parser(sub) -> None:
    e = sub.add_parser(
        "explain",
        help="narrate the backward walk through an unrolled cell, node by node",
        description="Run a ready cell (rnn, lstm, gru; one unit and one input by default) or "
                    "your own (script.py:name runs the script) on random inputs with a "
                    "mean-square loss, and narrate the backward walk: at every node the "
                    "gradient arriving, the local derivative and what is sent to each input.",
        epilog="Without -o, text and md are printed; html needs -o. Mistakes exit with status "
               "2 and one line on stderr.",
    )
    e.add_argument("cell", help="rnn, lstm, gru, or path/to/script.py:name (runs the script)")
    e.add_argument("--steps", type=_int_at_least(1, "--steps"), default=3,
                   help="time steps T (default 3)")
    e.add_argument("--format", choices=("text", "md", "html"), default=None,
                   help="text (default), md (a Markdown table) or html (a page stepping "
                        "through the walk; default when -o ends in .html)")
    e.add_argument("-o", "--output", default=None, help="output file (missing folders are "
                                                        "created)")
    _add_run_options(e, hidden=1, inputs=1)


def _add_run_options(p, hidden: int, inputs: int) -> None:
    """The options that size and seed the random run of a ready cell, shared by render and
    explain (``hidden``, ``inputs``: the sizes a ready cell gets when they are not given)."""
    p.add_argument("--hidden", type=_int_at_least(1, "--hidden"), default=None,
                   help=f"hidden size of a ready cell (default {hidden})")
    p.add_argument("--input", type=_int_at_least(1, "--input"), default=None,
                   help=f"input size of a ready cell (default {inputs})")
    p.add_argument("--batch", type=_int_at_least(1, "--batch"), default=1,
                   help="batch size of the random inputs (default 1)")
    p.add_argument("--seed", type=_int_at_least(0, "--seed"), default=0,
                   help="seed of weights and inputs, >= 0 (default 0)")
    p.add_argument("--truncate", type=_int_at_least(1, "--truncate"), default=None,
                   help="truncated BPTT window, >= 1 (default: full BPTT)")


def _explain(args) -> int:
    import unrollgraph as ug

    fmt = args.format
    out = None if args.output is None else Path(args.output)
    if fmt is None:
        fmt = {".md": "md", ".html": "html", ".htm": "html"}.get(
            out.suffix.lower() if out is not None else "", "text")
    if fmt == "html" and out is None:
        raise _UsageError("--format html writes a page: give it a file with -o walk.html")
    if out is not None and out.is_dir():
        raise _UsageError(f"-o {args.output!r} is a folder; give a file name")
    if args.cell in _CELLS:
        args.input = 1 if args.input is None else args.input
        args.hidden = 1 if args.hidden is None else args.hidden
    args.grad = True
    try:
        cell = _load_cell(ug, args)
        _check_sizes(cell, args)
        loss = _forward_backward(ug, cell, args)
        ex = ug.explain(loss)
        if fmt == "html":
            text = ex.to_html(title=f"Backward walk through {cell.name}, T = {args.steps}")
        else:
            text = ex.table() + "\n" if fmt == "text" else ex.to_markdown()
    except ug.UnrollGraphError as exc:
        raise _UsageError(_one_line(exc)) from None
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _UsageError(f"cannot write {str(out)!r}: {exc.strerror or _one_line(exc)}") \
            from None
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    """Run the ``unrollgraph`` command; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (``sys.argv[1:]`` when omitted).

    Returns
    -------
    int
        0 on success; 2 for a mistake in the command line, the script or the sizes (one line
        ``unrollgraph: error: ...`` on stderr); 1 for an unexpected failure (one line too);
        130 when interrupted.

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
    >>> main(["render", "rnn", "--steps", "0", "-o", path])
    2
    """
    try:
        args = build_parser().parse_args(argv)
        if args.command == "demo":
            return _demo(args)
        if args.command == "explain":
            return _explain(args)
        return _render(args)
    except _UsageError as exc:
        _say(f"error: {exc}")
        return 2
    except SystemExit as exc:  # --help, --version: argparse has printed what was asked
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as exc:  # a failure inside unrollgraph itself
        if os.environ.get("UNROLLGRAPH_TRACEBACK"):
            raise
        _say(f"internal error: {type(exc).__name__}: {_one_line(exc)} (this is a bug in "
             "unrollgraph; set UNROLLGRAPH_TRACEBACK=1 to see where, and report it)")
        return 1


def _say(text: str) -> None:
    print(f"unrollgraph: {text}", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


def _render(args) -> int:
    import unrollgraph as ug

    out = Path(args.output)
    if out.is_dir() or args.output.endswith(("/", "\\")):
        # a folder is refused whatever -f says (it is never taken as a stem for a name)
        sfx = args.format or "svg"
        raise _UsageError(f"-o {args.output!r} is a folder; give a file name such as "
                          f"{str(out / ('graph.' + sfx))!r}")
    fmt = out.suffix.lstrip(".").lower()
    if args.format is not None:
        if not out.suffix:
            out = out.with_name(out.name + "." + args.format)
        elif fmt != args.format:
            raise _UsageError(f"-f {args.format} but -o {args.output!r} ends in .{fmt}; give "
                              f"-o a .{args.format} name, or leave out -f")
        fmt = args.format
    if args.beside and (args.detail != "textbook" or args.folded):
        raise _UsageError("--beside draws the folded cell beside the unrolled one in the "
                          "textbook view: use it with --detail textbook and without --folded")
    if fmt not in _FORMATS:
        raise _UsageError(
            f"cannot tell the format of {args.output!r}: end the file name with one of "
            + ", ".join("." + f for f in _FORMATS)
        )
    if out.is_dir():
        raise _UsageError(f"-o {str(out)!r} is a folder; give a file name such as "
                          f"{str(out / ('graph.' + fmt))!r}")
    if args.compact and (args.detail != "textbook" or args.folded):
        raise _UsageError("--compact shortens the labels of the unrolled textbook view: use it "
                          "with --detail textbook and without --folded")
    if args.folded and args.truncate is not None:
        raise _UsageError("--truncate sets how far an unrolled net's gradient reaches back; "
                          "the folded cell (--folded) is not unrolled: leave out one of them")
    if args.contributions and (not args.grad or args.folded):
        raise _UsageError("--contributions lists the parts of a gradient over the unrolled "
                          "steps: it needs --grad and cannot be used with --folded")
    names: list = []  # the cell's own names: its messages' option words are rewritten, never them
    try:
        text = _dot_text(ug, args, names)
    except ug.UnrollGraphError as exc:
        raise _UsageError(_cli_words(_one_line(exc), names)) from None
    except MemoryError as exc:
        raise _UsageError(f"not enough memory for these sizes ({_one_line(exc)}); use smaller "
                          "--steps, --batch, --hidden or --input") from None
    _write(out, fmt, text)
    print(f"wrote {out}")
    return 0


def _dot_text(ug, args, names: list) -> str:
    cell = _load_cell(ug, args)
    names += _user_names(cell)
    _check_sizes(cell, args)
    if args.grad:
        cell.zero_grad()
    options = {"theme": args.theme}
    if args.max_nodes is not None:
        options["max_nodes"] = args.max_nodes
    if args.folded:
        if args.grad:
            _forward_backward(ug, cell, args)
        obj = cell
        if args.detail == "textbook":
            options["detail"] = "textbook"
    else:
        obj = ug.unroll(cell, steps=args.steps, truncate=args.truncate)
        options.update(detail=args.detail, contributions=args.contributions)
        if args.compact:
            options["compact"] = True
        if args.beside:
            options["folded"] = True
        if args.grad:
            options["loss"] = _forward_backward(ug, cell, args, obj)
    return ug.to_dot(obj, **options)


def _write(out: Path, fmt: str, text: str) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _UsageError(f"cannot create the folder {str(out.parent)!r} for -o: "
                          f"{exc.strerror or _one_line(exc)}") from None
    if fmt == "dot":
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _UsageError(f"cannot write {str(out)!r}: {exc.strerror or _one_line(exc)}") \
                from None
        return
    try:
        done = subprocess.run(["dot", f"-T{fmt}", "-o", str(out)], input=text.encode(),
                              capture_output=True)
    except FileNotFoundError:
        raise _UsageError(
            "Graphviz's dot program is not installed; install it (apt-get install "
            "graphviz) or write the DOT text with -o file.dot"
        ) from None
    if done.returncode != 0:  # the DOT text is ours: its refusal is a bug, not a mistake
        message = " ".join(done.stderr.decode(errors="replace").split())
        raise RuntimeError(f"dot failed: {message or f'exit status {done.returncode}'}")


_OPTION_WORDS = (
    (re.compile(r"\bmax_nodes=(\d+)"), r"--max-nodes \1"),
    (re.compile(r"\braise max_nodes\b"), "raise --max-nodes"),
    (re.compile(r"\bdetail='(\w+)'"), r"--detail \1"),
    (re.compile(r"\bmax_nodes\b"), "--max-nodes"),
)


def _user_names(cell) -> list:
    """Every name the user gave in ``cell``: the cell's, its members' and its nodes'."""
    names = [cell.name, *cell.inputs, *cell.states, *cell.outputs, *cell.parameters()]
    return names + [n.name for n in cell.graph().nodes if n.name]


def _cli_words(message: str, keep=()) -> str:
    """A library message with its option hints in command-line words (``max_nodes=6013``
    becomes ``--max-nodes 6013``), so every fix it suggests can be typed. The names in
    ``keep`` (the user's, as written, printed with ``repr`` or on one line) stay as they are.

    Examples
    --------
    >>> _cli_words("node 'max_nodes=3' draws 9 nodes, more than max_nodes=6",
    ...            keep=["max_nodes=3", "o"])
    "node 'max_nodes=3' draws 9 nodes, more than --max-nodes 6"
    """
    forms = {f for k in keep for f in (k, " ".join(k.split()), repr(k)[1:-1]) if f}
    for pattern, words in _OPTION_WORDS:
        # where the user's names stand in the message: a hint found inside one is theirs
        spans = [(m.start(), m.start() + len(f)) for f in forms if f in message
                 for m in re.finditer(f"(?={re.escape(f)})", message)]

        def put(m, words=words, spans=spans):
            inside = any(a <= m.start() and m.end() <= b for a, b in spans)
            return m.group(0) if inside else m.expand(words)

        message = pattern.sub(put, message)
    return message


def _load_cell(ug, args):
    name = args.cell
    if name in _CELLS:
        maker = {"rnn": ug.nn.RNNCell, "lstm": ug.nn.LSTMCell, "gru": ug.nn.GRUCell}[name]
        inp = 2 if args.input is None else args.input
        hidden = 3 if args.hidden is None else args.hidden
        _check_budget(_GATES[name] * hidden * (inp + hidden + 2) * 8 * (2 if args.grad else 1),
                      f"the weights of an {name.upper()} cell with --hidden {hidden} --input {inp}")
        return maker(inp, hidden, seed=args.seed)
    path, sep, var = name.rpartition(":")
    if not sep or not path.endswith(".py") or not var:
        raise _UsageError(
            f"unknown cell {name!r}: use rnn, lstm, gru, or path/to/script.py:name where name "
            "is a Cell (or a function returning one) defined in the script (which is run)"
        )
    for what, v in (("--hidden", args.hidden), ("--input", args.input)):
        if v is not None:
            raise _UsageError(f"{what} sets the size of a ready cell (rnn, lstm, gru); "
                              f"{path}:{var} declares its own sizes")
    if not Path(path).is_file():
        raise _UsageError(f"no such script: {path!r}")
    namespace = _run_script(path)
    if var not in namespace:
        found = sorted(k for k, v in namespace.items() if isinstance(v, ug.Cell))
        raise _UsageError(
            f"{path} defines no {var!r}; cells it defines: {', '.join(found) or 'none'}"
        )
    obj = namespace[var]
    if callable(obj) and not isinstance(obj, ug.Cell):
        obj = _call_maker(obj, path, var)
    if not isinstance(obj, ug.Cell):
        raise _UsageError(
            f"{path}:{var} is a {type(obj).__name__}, not a ug.Cell (or a function without "
            "arguments returning one)"
        )
    return obj


def _run_script(path: str) -> dict:
    """Run the user's script; any failure in it becomes one line naming the script's line."""
    try:
        return runpy.run_path(path, run_name="__unrollgraph__")
    except SystemExit as exc:
        raise _UsageError(f"{path} exited (SystemExit: {exc.code!r}) while it was run to find "
                          "the cell; keep command-line handling under "
                          "'if __name__ == \"__main__\":'") from None
    except KeyboardInterrupt:
        raise
    except SyntaxError as exc:
        raise _UsageError(f"{path}, line {exc.lineno}: SyntaxError: {exc.msg}") from None
    except Exception as exc:
        raise _UsageError(_script_failure(exc, path, f"running {path}")) from None


def _call_maker(fn, path: str, var: str):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        try:
            sig.bind()
        except TypeError:
            raise _UsageError(
                f"{path}:{var} takes arguments {sig}; name a Cell, or a function that "
                "can be called without arguments and returns one"
            ) from None
    try:
        return fn()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        raise _UsageError(_script_failure(exc, path, f"calling {path}:{var}()")) from None


def _script_failure(exc: BaseException, path: str, doing: str) -> str:
    """One line: what failed, where in the user's script, and the exception's message."""
    where = ""
    try:
        target = os.path.realpath(path)
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if os.path.realpath(f.filename) == target]
        if frames:
            where = f" (line {frames[-1].lineno})"
    except Exception:  # pragma: no cover - locating the line is a courtesy
        pass
    return f"{doing} failed{where}: {type(exc).__name__}: {_one_line(exc)}"


def _memory_budget() -> int:
    """Half the machine's physical memory (4 GiB when it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 4 << 30


def _check_budget(nbytes: int, what: str) -> None:
    budget = _memory_budget()
    if nbytes > budget:
        raise _UsageError(
            f"{what} would need about {_size(nbytes)}, more than half this machine's memory "
            f"({_size(budget)}); use smaller --steps, --batch, --hidden or --input"
        )


def _size(nbytes: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if nbytes < 1024 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""  # pragma: no cover


def _check_sizes(cell, args) -> None:
    """Refuse sizes whose graph or run would not fit in memory, before building them."""
    graph = cell.graph()
    per_step = sum(1 for n in graph.nodes if not n.is_leaf or n.op in ("input", "state"))
    nbytes = args.steps * per_step * _BYTES_PER_NODE
    if args.grad:
        # every per-step value of the run and its gradient (a diagram shows them all)
        numbers = sum(int(np.prod(n.shape[1:] or (1,))) for n in graph.nodes
                      if id(n) in graph._batched)
        nbytes += 2 * args.steps * args.batch * numbers * 8
    _check_budget(nbytes, f"--steps {args.steps}" + (f" --batch {args.batch}" if args.grad
                                                     else ""))


def _forward_backward(ug, cell, args, net=None):
    """Random inputs, forward, mean-square loss, backward; returns the loss."""
    if net is None:
        net = ug.unroll(cell, steps=args.steps, truncate=args.truncate)
    rng = np.random.default_rng(args.seed)
    xs = {
        k: rng.standard_normal((args.steps, args.batch) + tuple(t.shape[1:]))
        for k, t in cell.inputs.items()
    }
    state = None
    if not xs:  # a cell driven by its states alone: the batch comes from the initial state
        state = tuple(
            np.zeros((args.batch,) + tuple(t.shape[1:])) if cell.init_value(k) is None
            else np.broadcast_to(cell.init_value(k), (args.batch,) + tuple(t.shape[1:])).copy()
            for k, t in cell.states.items()
        )
        state = state[0] if len(state) == 1 else state
    outputs, final = net(xs if len(xs) != 1 else next(iter(xs.values())), state=state)
    if isinstance(outputs, dict) and outputs:
        terms = [(o * o).mean() for o in outputs.values()]
        loss = terms[0]
        for t in terms[1:]:
            loss = loss + t
    elif isinstance(outputs, ug.Tensor):
        loss = (outputs * outputs).mean()
    else:  # a cell without outputs: a loss on its final state
        last = final[0] if isinstance(final, tuple) else final
        loss = (last * last).mean()
    loss.name = "L"
    if not loss.requires_grad:
        raise _UsageError(f"--grad: nothing in cell {cell.name!r} requires a gradient (it has "
                          "no parameters); leave out --grad")
    loss.backward()
    return loss



# -- unrollgraph demo NAME ----------------------------------------------------------------------

_DEMO_NAMES = ("vanishing", "exploding", "remedies", "truncation", "memory", "bptt-steps")


def _add_demo_parser(sub) -> None:
    d = sub.add_parser(
        "demo",
        help="run a demonstration of BPTT, writing its pictures to a folder",
        description="Run one demonstration: vanishing, exploding (with clipping and "
                    "normalisation), remedies (RNN, residual, LSTM, GRU), truncation, memory "
                    "(cost of a training step against T), bptt-steps (the six steps of BPTT). "
                    "Each prints what it measured and writes PNG pictures.",
    )
    d.add_argument("name", choices=_DEMO_NAMES, help="which demonstration")
    d.add_argument("-o", "--output", default=None,
                   help="folder for the pictures (default demo_out/NAME; created if missing)")
    d.add_argument("--steps", type=_int_at_least(2, "--steps"), default=None,
                   help="time steps T (each demo has its own default; not for memory)")
    d.add_argument("--max-steps", type=_int_at_least(10, "--max-steps"), default=3000,
                   help="memory: the longest T measured, of 10, 30, 100, ... (default 3000; "
                        "10000 takes about 40 s)")
    d.add_argument("--seed", type=_int_at_least(0, "--seed"), default=0,
                   help="seed of weights and inputs (default 0)")


def _demo(args) -> int:
    from . import demos

    out = Path(args.output or f"demo_out/{args.name}")
    if out.exists() and not out.is_dir():
        raise _UsageError(f"-o {out}: exists and is not a folder")
    options = {"seed": args.seed}
    if args.name == "memory":
        if args.steps is not None:
            raise _UsageError("--steps is not an option of the memory demo; use --max-steps")
        grid = [10, 30, 100, 300, 1000, 3000, 10000, 30000]
        options["lengths"] = tuple(t for t in grid if t <= args.max_steps) or (10,)
    else:
        if args.max_steps != 3000:
            raise _UsageError("--max-steps belongs to the memory demo; use --steps")
        if args.steps is not None:
            options["steps"] = args.steps
    if args.name == "truncation" and args.steps is not None and args.steps < 4:
        raise _UsageError("the truncation demo needs --steps of at least 4")
    try:
        demos.run_demo(args.name, out, **options)
    except OSError as exc:
        raise _UsageError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Functions the user hands the library (``gradcheck``'s ``fn``, a training loss, a model, a
readout...), checked before they are called: one that cannot take the arguments it will be
given raises the caller's own error, naming the function, how many arguments it takes and how
many it would get, with the fix, instead of Python's ``TypeError`` from inside the library.
"""

from __future__ import annotations

import inspect
import os

__all__ = ["check_arity"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def check_arity(fn, n: int, error, who: str, role: str, call: str, fix: str) -> None:
    """Raise ``error`` unless ``fn`` can be called with ``n`` positional arguments.

    A function whose signature Python cannot read (some builtins and numpy ufuncs) passes:
    the call itself then says what is wrong.

    Parameters
    ----------
    fn : callable
        The user's function.
    n : int
        How many positional arguments the library will pass.
    error : type
        The exception class to raise (the caller's own: ``GradcheckError``, ``TrainingError``).
    who : str
        The public function doing the call, as the message starts (``"gradcheck"``).
    role : str
        The argument ``fn`` was given as (``"fn"``, ``"loss_fn"``).
    call : str
        How it is called, as the message says it (``"fn(*inputs), one argument per input"``).
    fix : str
        What to do instead.

    Raises
    ------
    error
        When ``fn`` does not take ``n`` positional arguments, or needs a keyword-only one.

    Examples
    --------
    >>> check_arity(lambda a, b: a, 2, TypeError, "fit", "loss_fn", "loss_fn(prediction, y)",
    ...             "take two arguments")
    >>> def model():
    ...     return 0
    >>> check_arity(model, 1, TypeError, "fit", "model", "model(x)", "take one argument x")
    Traceback (most recent call last):
    ...
    TypeError: fit: model takes no arguments, but fit calls it with 1 argument, as model(x);
    take one argument x
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # (no signature to read: the call will tell)
        return
    try:
        sig.bind(*range(n))
        return
    except TypeError:
        pass
    params = list(sig.parameters.values())
    pos = [p for p in params if p.kind in _POSITIONAL]
    low = sum(1 for p in pos if p.default is p.empty)
    var = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    keyword = [p.name for p in params
               if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty]
    shown = str(sig.replace(return_annotation=inspect.Signature.empty))
    name = _name(fn)
    label = role if name == role else f"{role} ({name})"
    if low <= n and (var or n <= len(pos)) and keyword:
        raise error(f"{who}: {label} needs the keyword-only argument"
                    f"{'s' if len(keyword) > 1 else ''} {', '.join(keyword)} {shown}, but "
                    f"{who} passes no keywords: it calls it with {_arguments(n)}, as {call}; "
                    f"{fix}")
    if var:
        count = f"at least {_arguments(low)}"
    elif low == len(pos):
        count = _arguments(low) if low else "no arguments"
    else:
        count = f"{low} to {_arguments(len(pos))}"
    takes = f"takes {count}" + (f" {shown}" if params else "")
    raise error(f"{who}: {label} {takes}, but {who} calls it with {_arguments(n)}, as "
                f"{call}; {fix}")


def _arguments(n: int) -> str:
    return f"{n} argument" + ("" if n == 1 else "s")


def _name(fn) -> str:
    """``fn`` as a message names it: its qualified name, where a lambda was written, or the
    class of a callable object."""
    name = getattr(fn, "__qualname__", None)
    if not isinstance(name, str):
        return f"an object of class {type(fn).__name__}"
    name = name.rpartition("<locals>.")[2]  # (a function defined in a function: its own name)
    code = getattr(fn, "__code__", None)
    if name.endswith("<lambda>") and code is not None:
        return (f"the lambda on line {code.co_firstlineno} of "
                f"{os.path.basename(code.co_filename)}")
    return name

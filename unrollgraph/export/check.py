"""Check one op's lowering rule against the op itself: :func:`check_lowering`.

A rule is code written apart from the op's numpy forward and VJPs; nothing else ties them, and
a wrong rule exports and runs without a word. :func:`check_lowering` runs the rule on example
arrays, in float64, and compares what it computes with the forward (and, for PyTorch, the
gradients autograd computes through the rule with the op's VJPs).
"""

from __future__ import annotations

import numpy as np

from ..errors import LoweringError
from ..ops import TARGETS, get_op

__all__ = ["check_lowering"]

RTOL = 1e-10  # of the largest magnitude of the array compared with (float64)


def check_lowering(op_name: str, target: str, *example_arrays, **attrs) -> dict:
    """Run op ``op_name``'s ``target`` rule on ``example_arrays`` and compare with the op.

    The arrays' floats are taken as float64 (integers and bools stay as they are: labels,
    conditions). The rule's result must have the shape and float type of the op's numpy
    ``forward(*example_arrays, **attrs)`` and equal it to 1e-10 of its largest magnitude
    (NaN where it has NaN, the same infinities). For ``"torch"``, the gradients
    ``torch.autograd`` computes through the rule, for a random output gradient ``g``, must
    equal the op's VJPs of ``g`` likewise, for every float input the op differentiates. For
    ``"onnx"``, the rule's nodes make a one-op model that must pass ``onnx.checker``; it is
    run by the ``onnx`` package's reference evaluator and, when installed, by onnxruntime.

    Parameters
    ----------
    op_name : str
        A registered op (:func:`unrollgraph.ops.defop`).
    target : {"torch", "onnx"}
        The export target whose rule is checked.
    *example_arrays : array_like
        The op's inputs, in order. Pick values where the op is smooth and away from the
        points where its branches meet (0 for ``relu``), so that the comparison is fair.
    **attrs
        The op's attributes (``axis=``, ``index=``...), as a node of a cell holds them.

    Returns
    -------
    dict
        The worst difference found, relative to the largest magnitude compared with, by what
        was compared: ``"forward"``, then ``"gradient of input k"`` (torch only).

    Raises
    ------
    LoweringError
        The rule disagrees with the op: the message names the op, the target, what was
        compared, the worst element (its index, the rule's value and the op's) and the
        tolerance; ``.op`` and ``.target`` name them. Also for an op without a rule for
        ``target``, a rule that raises or returns no tensor, an unknown target.
    GraphError
        No op ``op_name`` is registered.
    MissingDependencyError
        The target's package (torch, onnx) is not installed.

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> report = ug.export.check_lowering("tanh", "torch", np.array([0.3, -1.2, 2.0]))
    >>> sorted(report), report["forward"] < 1e-15
    (['forward', 'gradient of input 0'], True)
    >>> _ = ug.ops.defop("badop", lambda a: a * 2, [lambda g, ans, a: 2 * g],
    ...                  torch=lambda torch, a: a * 3)
    >>> ug.export.check_lowering("badop", "torch", np.array([0.8, -0.5]))
    Traceback (most recent call last):
    ...
    unrollgraph.errors.LoweringError: check_lowering: the torch rule of op 'badop' disagrees
    with its numpy forward: worst at index (0,): the rule gives 2.4, the op 1.6 (off by 0.8, ...)
    >>> _ = ug.ops.undefop("badop")
    """
    op = get_op(op_name)
    if target not in TARGETS:
        raise LoweringError(f"check_lowering: unknown export target {target!r}; the targets "
                            f"are {', '.join(TARGETS)}", op=op.name)
    rule = op.lowering(target)
    args = [_float64(a) for a in example_arrays]
    try:
        ans = np.asarray(op.forward(*args, **attrs))
    except Exception as exc:
        raise LoweringError(
            f"check_lowering: op {op.name!r}'s numpy forward fails on examples of shapes "
            f"{[a.shape for a in args]}: {type(exc).__name__}: {exc}; pick examples the op "
            "takes", op=op.name, target=target) from None
    who = f"check_lowering: the {target} rule of op {op.name!r}"
    if target == "torch":
        return _check_torch(op, rule, args, attrs, ans, who)
    return _check_onnx(op, rule, args, attrs, ans, who)


def _float64(a) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        return arr.astype(np.float64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    return arr


def _compare(got, want, who: str, what: str) -> float:
    """The worst difference of ``got`` from ``want`` relative to ``want``'s largest magnitude;
    a LoweringError naming the worst element when it is above :data:`RTOL`."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise LoweringError(f"{who} gives shape {got.shape} where its {what} has "
                            f"{want.shape}")
    if want.dtype.kind == "f" and got.dtype != want.dtype:
        raise LoweringError(f"{who} gives {got.dtype} where its {what} gives {want.dtype}")
    got, want = got.astype(np.float64), want.astype(np.float64)
    finite = np.isfinite(got) & np.isfinite(want)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    diff = np.subtract(got, want, out=np.zeros(want.shape), where=finite)
    np.abs(diff, out=diff)
    diff[~finite & ~same] = np.inf
    scale = float(np.max(np.abs(want), where=np.isfinite(want), initial=0.0))
    worst = float(np.max(diff, initial=0.0))
    if worst > RTOL * scale:
        at = np.unravel_index(int(np.argmax(diff)), diff.shape)
        raise LoweringError(
            f"{who} disagrees with its {what}: worst at index {tuple(int(i) for i in at)}: "
            f"the rule gives {got[at]:.6g}, the op {want[at]:.6g} (off by {worst:.3g}, more "
            f"than {RTOL:g} of the largest magnitude {scale:.3g})")
    return 0.0 if worst == 0.0 else worst / scale


def _named(fn, op, target):
    """Run ``fn``, turning a LoweringError's missing ``.op``/``.target`` into this check's."""
    try:
        return fn()
    except LoweringError as exc:
        if exc.op is None:
            exc.op, exc.target = op.name, target
        raise


def _check_torch(op, rule, args, attrs, ans, who) -> dict:
    try:
        import torch
    except ImportError:
        from . import _missing_dependency

        raise _missing_dependency("torch", "ug.export.check_lowering(..., 'torch')") from None

    def run():
        diff = [k for k, a in enumerate(args) if a.dtype.kind == "f" and k not in op.nondiff
                and op.input_vjp(k) is not None]
        targs = [torch.tensor(a, requires_grad=True) if k in diff
                 else torch.from_numpy(np.array(a, copy=True)) for k, a in enumerate(args)]
        try:
            out = rule(torch, *targs, **attrs)
        except Exception as exc:
            raise LoweringError(f"{who} fails on inputs of shapes "
                                f"{[a.shape for a in args]}: {type(exc).__name__}: {exc}"
                                ) from None
        if not isinstance(out, torch.Tensor):
            raise LoweringError(f"{who} must return a torch.Tensor, got "
                                f"{type(out).__name__}")
        report = {"forward": _compare(out.detach().cpu().numpy(), ans, who, "numpy forward")}
        if not diff:
            return report
        g = np.random.default_rng(0).standard_normal(ans.shape)
        if out.requires_grad:
            got = torch.autograd.grad(out, [targs[k] for k in diff], torch.from_numpy(g),
                                      allow_unused=True)
        else:  # cut from autograd: every gradient is 0
            got = [None] * len(diff)
        want = op.vjp(g, ans, *args, **attrs)
        for k, gk in zip(diff, got):
            w = np.zeros(args[k].shape) if want[k] is None else np.asarray(want[k])
            gk = np.zeros(args[k].shape) if gk is None else gk.cpu().numpy()
            report[f"gradient of input {k}"] = _compare(
                gk, w, f"{who} (through torch.autograd)", f"VJP of input {k}")
        return report

    return _named(run, op, "torch")


def _check_onnx(op, rule, args, attrs, ans, who) -> dict:
    from .onnx_export import _IR_VERSION, OPSET, OnnxBuilder, _onnx, _Parts

    onnx = _onnx("ug.export.check_lowering(..., 'onnx')")
    from onnx.reference import ReferenceEvaluator

    def run():
        parts = _Parts(onnx)
        names = [parts.fresh(f"input {k}") for k in range(len(args))]
        nodes: list = []
        dtype = ans.dtype if ans.dtype.kind == "f" else np.dtype(np.float64)
        b = OnnxBuilder(parts, nodes, op.name, dtype, names, [a.dtype for a in args],
                        [a.shape for a in args], ans.shape)
        try:
            out = rule(b, *names, **attrs)
        except Exception as exc:
            raise LoweringError(f"{who} fails on inputs of shapes "
                                f"{[a.shape for a in args]}: {type(exc).__name__}: {exc}"
                                ) from None
        if not isinstance(out, str):
            raise LoweringError(f"{who} must return the name of its result (a str), got "
                                f"{type(out).__name__}")
        result = parts.fresh("result")
        nodes.append(parts.helper.make_node("Identity", [out], [result], name=result))
        graph = parts.helper.make_graph(
            nodes, op.name, [parts.value_info(n, a.dtype, a.shape) for n, a in zip(names, args)],
            [parts.value_info(result, ans.dtype, ans.shape)], initializer=parts.inits)
        model = parts.helper.make_model(
            graph, opset_imports=[parts.helper.make_opsetid("", OPSET)],
            ir_version=_IR_VERSION)
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:
            raise LoweringError(f"{who} makes a model onnx.checker refuses: {exc}") from None
        feeds = dict(zip(names, args))
        # numpy's formulas may overflow on purpose (exp(-x) in sigmoid: 1 / inf is the right 0);
        # the reference evaluator runs them in numpy, as the op's forward does
        with np.errstate(over="ignore"):
            runs = {"reference evaluator": ReferenceEvaluator(model).run(None, feeds)[0]}
        try:
            import onnxruntime as ort
        except ImportError:
            ort = None
        if ort is not None:
            sess = ort.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"])
            runs["onnxruntime"] = sess.run(None, feeds)[0]
        worst = 0.0
        for engine, got in runs.items():
            worst = max(worst, _compare(got, ans, f"{who} (run by the {engine})",
                                        "numpy forward"))
        return {"forward": worst}

    return _named(run, op, "onnx")

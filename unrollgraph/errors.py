"""One exception hierarchy for unrollgraph.

Every error the library raises on purpose is an :class:`UnrollGraphError`, so callers can catch
the whole family with one ``except`` clause. Each message names the node, op, shapes or step
involved and suggests a fix.
"""

from __future__ import annotations

__all__ = [
    "UnrollGraphError",
    "ShapeError",
    "OpError",
    "DTypeError",
    "GraphError",
    "CycleError",
    "CellError",
    "GradientError",
    "AnomalyError",
    "RenderError",
    "GradcheckError",
    "TrainingError",
    "InvalidNameError",
    "LoweringError",
    "MissingDependencyError",
    "NumpyFunctionError",
    "TorchFunctionError",
    "CellWarning",
]


class UnrollGraphError(Exception):
    """Base class of every error unrollgraph raises on purpose."""


class ShapeError(UnrollGraphError, ValueError):
    """Operands whose shapes do not fit the op (names the op, the nodes and both shapes)."""


class OpError(ShapeError):
    """An op's forward raised (a user op refusing its input, numpy failing on operands that
    do not fit): the message names the op, the node, its inputs as the printouts name them and
    their shapes (and the step, in an unrolled net); the op's own exception is chained as
    ``__cause__``, so the traceback shows the line that raised, and ``.op`` names the op. A
    :class:`ShapeError` because most such failures are operands whose shapes do not fit."""

    def __init__(self, message: str, op: str | None = None):
        super().__init__(message)
        self.op = op


class DTypeError(UnrollGraphError, TypeError):
    """A value of a type tensors cannot hold (integers with an explicit dtype, strings...)."""


class GraphError(UnrollGraphError):
    """A graph that is malformed: unknown op, wrong number of inputs, bad export data."""


class CycleError(GraphError):
    """A cycle that does not pass through a one-step delay; ``.cycle`` lists the loop's nodes."""

    def __init__(self, message: str, cycle=()):
        super().__init__(message)
        self.cycle = list(cycle)


class CellError(UnrollGraphError):
    """A recurrent cell that cannot be unrolled as declared (missing feedback, wrong shape...)."""


class GradientError(UnrollGraphError, RuntimeError):
    """``backward()`` called in a way that has no well-defined answer."""


class AnomalyError(UnrollGraphError, FloatingPointError):
    """Raised under :func:`unrollgraph.detect_anomaly` at the first NaN or Inf."""


class RenderError(UnrollGraphError):
    """A diagram that cannot be drawn as asked (too large, unknown option, no ``dot``)."""


class GradcheckError(UnrollGraphError, AssertionError):
    """Analytic and numerical gradients disagree (the message gives the worst element), or
    ``gradcheck`` was given something it cannot check (a function not returning a Tensor)."""


class TrainingError(UnrollGraphError, ValueError):
    """An optimizer, clipping or training call configured in a way that cannot work
    (negative learning rate, no parameters, a batch source that yields nothing...)."""


class InvalidNameError(UnrollGraphError, TypeError, ValueError):
    """A name (of a tensor, op, cell, input, state, parameter or output) that is not a
    non-empty string of characters every output (text, DOT, SVG, networkx) can carry as
    written."""


class LoweringError(GraphError):
    """A cell that cannot be exported to another engine: an op with no lowering rule for the
    target (``.op`` and ``.target`` name them), or an unknown target."""

    def __init__(self, message: str, op: str | None = None, target: str | None = None):
        super().__init__(message)
        self.op = op
        self.target = target


class MissingDependencyError(LoweringError, ImportError):
    """An export target's package (torch, onnx) is not installed: the message names the extra
    to install (``pip install 'unrollgraph[torch]'``). Both a :class:`LoweringError` (``.target``
    names the target) and an ``ImportError`` (``.name`` is the missing package), so
    ``except ImportError`` catches it as it catches a missing module."""

    def __init__(self, message: str, package: str, target: str | None = None):
        super().__init__(message, target=target)
        self.name = package


class NumpyFunctionError(UnrollGraphError, TypeError):
    """A numpy function or ufunc given a tensor it would compute on outside the graph
    (``np.tanh(t)``, ``np.dot(W, t)`` for a tensor that requires grad or is computed by an op,
    ``array += t``): the message names the numpy function (``.function``) and the unrollgraph
    function to use instead. A ``TypeError``, as numpy's own refusal of an operand is."""

    def __init__(self, message: str, function: str | None = None):
        super().__init__(message)
        self.function = function


class TorchFunctionError(UnrollGraphError, TypeError):
    """A PyTorch function, module or constructor given an unrollgraph tensor
    (``torch.tanh(t)``, ``torch.stack([t, u])``, ``F.mse_loss(t, y)``, ``torch.tensor(t)``),
    which PyTorch cannot compute on: the message names PyTorch's function (``.function``), the
    unrollgraph function to use instead, and how to hand PyTorch the value
    (``torch.tensor(t.numpy())``). A ``TypeError``, as PyTorch's own refusal of an argument is
    (so ``torch_tensor + t`` still reaches the tensor's reflected operator)."""

    def __init__(self, message: str, function: str | None = None):
        super().__init__(message)
        self.function = function


class CellWarning(UserWarning):
    """A cell that unrolls but probably not as meant: an input or state that nothing the cell
    computes reads, a parameter that nothing reads, or a constant that holds a placeholder's
    stand-in value (made from ``np.asarray(h)``) or a parameter's value (``U.data``). Not an
    error: filter it with ``warnings.filterwarnings("ignore", category=ug.CellWarning)``."""

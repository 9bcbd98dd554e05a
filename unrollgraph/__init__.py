"""unrollgraph: reverse-mode autodiff with explicit graph nodes, recurrent cells unrolled
through time, and diagrams of backpropagation.

Examples
--------
>>> import unrollgraph as ug
>>> x = ug.tensor(2.0, requires_grad=True, name="x")
>>> y = ug.tanh(x * x)
>>> y.backward()
>>> round(float(x.grad), 6)
0.005364
"""

from . import export, nn, ops, optim, symbolic, train
from .cell import Cell
from .errors import (
    AnomalyError,
    CellError,
    CellWarning,
    CycleError,
    DTypeError,
    GradcheckError,
    GradientError,
    GraphError,
    InvalidNameError,
    LoweringError,
    MissingDependencyError,
    NumpyFunctionError,
    OpError,
    RenderError,
    ShapeError,
    TorchFunctionError,
    TrainingError,
    UnrollGraphError,
)
from .explain import Explanation, explain
from .flow import (
    GradientFlow,
    TruncationError,
    compare_flows,
    gradient_flow,
    tbptt_truncation_error,
    truncation_error,
)
from .functional import (
    abs,
    binary_cross_entropy_with_logits,
    clip,
    concat,
    cross_entropy,
    exp,
    log,
    log_softmax,
    matmul,
    max,
    maximum,
    mean,
    minimum,
    mse_loss,
    relu,
    reshape,
    sigmoid,
    softmax,
    sqrt,
    stack,
    sum,
    tanh,
    transpose,
    where,
)
from .graph import Graph, Node, toposort
from .nx import from_networkx, to_networkx
from .optim import clip_grad_norm, clip_grad_value, normalize_grad_norm
from .render import render, render_side_by_side, to_dot
from .symbolic import to_sympy
from .tensor import Tensor, detect_anomaly, enable_grad, is_grad_enabled, no_grad, tensor
from .tensor import _ug_getattr as __getattr__  # noqa: F401 (PyTorch names: what to write)
from .testing import gradcheck
from .tikz import to_tikz
from .unroll import Run, Unrolled, unroll

# every op registered so far is the library's own: those cannot be redefined or removed
ops._seal_library()

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "no_grad", "enable_grad", "is_grad_enabled", "detect_anomaly",
    "Cell", "unroll", "Unrolled", "Run", "nn",
    "Graph", "Node", "toposort", "gradcheck", "to_networkx", "from_networkx", "ops",
    "render", "to_dot", "render_side_by_side", "to_tikz",
    "exp", "log", "tanh", "sigmoid", "relu", "sqrt", "abs", "maximum", "minimum", "where",
    "clip", "matmul", "sum", "mean", "max", "reshape", "transpose", "concat", "stack",
    "softmax", "log_softmax", "mse_loss", "cross_entropy", "binary_cross_entropy_with_logits",
    "UnrollGraphError", "ShapeError", "GraphError", "CycleError", "CellError", "GradientError",
    "AnomalyError", "RenderError", "GradcheckError", "TrainingError", "DTypeError",
    "InvalidNameError", "OpError",
    "LoweringError", "MissingDependencyError", "NumpyFunctionError", "TorchFunctionError",
    "CellWarning",
    "optim", "train", "export", "clip_grad_norm", "clip_grad_value",
    "normalize_grad_norm", "gradient_flow", "compare_flows", "GradientFlow",
    "truncation_error", "tbptt_truncation_error", "TruncationError",
    "explain", "Explanation", "symbolic", "to_sympy", "export",
]

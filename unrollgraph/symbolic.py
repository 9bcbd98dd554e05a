"""Symbolic derivations with sympy: a tensor as an expression of its leaves, sympy's own
derivative of it, the engine's chain rule written out path by path, and the BPTT decomposition
of a shared weight's gradient into one term per time step.

Every op's sympy form comes from the op registry (:mod:`unrollgraph.ops`), the same table the
engine's forward and VJPs are declared in.
"""

from __future__ import annotations

import re

import numpy as np

from .errors import CellError, GradientError, UnrollGraphError
from .graph import Graph
from .ops import get_op

__all__ = ["to_sympy", "grad", "chain_rule", "bptt", "ChainRule", "BPTT"]

#: most scalar leaves (symbols and numbers) a symbolic derivation takes
MAX_LEAVES = 300
#: most scalar elements computed over the whole graph
MAX_ELEMENTS = 20000

#: most nodes of the expression tree (a subexpression counted once per use) a derivation
#: builds: sympy's time grows with it (an LSTM of 2 units over 3 steps, about 90 000, takes
#: sympy 20 s to differentiate)
MAX_TREE = 50000


def _sp():
    import sympy

    return sympy


def _exact(x):
    """A float as sympy number: integers and short decimals exactly, the rest as Float."""
    sp = _sp()
    x = float(x)
    if x.is_integer() and abs(x) < 1e15:
        return sp.Integer(int(x))
    text = repr(x)
    if len(text) <= 8 and "e" not in text:
        return sp.Rational(text)
    return sp.Float(x)


def _numbers(arr) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    out = np.empty(arr.shape, dtype=object)
    for i, v in np.ndenumerate(arr):
        out[i] = _exact(v)
    return out


def _symbols(name: str, shape) -> np.ndarray:
    sp = _sp()
    out = np.empty(shape, dtype=object)
    if out.ndim == 0:
        out[()] = sp.Symbol(name, real=True)
        return out
    for i in np.ndindex(*shape):
        out[i] = sp.Symbol(f"{name}_{''.join(str(j) for j in i)}"
                           if max(shape) < 10 else f"{name}_{'_'.join(map(str, i))}", real=True)
    return out


def _apply(node, ins) -> np.ndarray:
    """The sympy form of ``node``'s op on the object arrays ``ins``."""
    sym = get_op(node.op).sym
    if sym is None:
        raise UnrollGraphError(f"op {node.op!r} ({node.label()}) has no sympy form")
    attrs = {k: v for k, v in node.attrs.items() if not k.startswith("_")}
    if node.op == "powc":
        attrs["p"] = _exact(attrs["p"])
    return np.asarray(sym(*ins, **attrs), dtype=object)



#: ops whose every output element reads one element of each input
_ELEMENTWISE = {
    "add", "sub", "mul", "div", "pow", "powc", "neg", "exp", "log", "tanh", "sigmoid", "relu",
    "sqrt", "abs", "maximum", "minimum", "where", "clip", "gt", "ge", "lt", "le", "reshape",
    "transpose", "getitem", "concat", "stack", "const", "cast",
}
#: a cap on the estimates (they only need to be compared with the limits)
_CAP = 10 ** 15


def _reads(op, shape_in, k, shapes):
    """How many elements of input ``k`` (shape ``shape_in``) one output element reads."""
    if op in _ELEMENTWISE:
        return 1
    if op == "matmul":
        a = shapes[0]
        return a[-1] if len(a) else 1
    return max(int(np.prod(shape_in)), 1)


def _estimate(t):
    """(scalar leaves, scalar values, expression tree size) of ``to_sympy(t)``, counted
    with integers over the graph (an unrolled call opened), without building anything."""
    size: dict = {}
    leaves = elements = 0
    counted = set()

    def leaf(n, shape):
        nonlocal leaves, elements
        if id(n) not in counted:
            counted.add(id(n))
            m = max(int(np.prod(shape)), 1)
            leaves += m
            elements += m
        size[id(n)] = 1

    def op(n, shape, ins):
        nonlocal elements
        elements += max(int(np.prod(shape)), 1)
        shapes = [s for _, s in ins]
        total = 1
        for k, (i, s) in enumerate(ins):
            total += _reads(n.op, s, k, shapes) * size[id(i)]
        size[id(n)] = min(total, _CAP)

    shape_of = {}
    tensors, stack = {}, [t]
    while stack:
        u = stack.pop()
        if id(u.node) not in tensors:
            tensors[id(u.node)] = u
            stack.extend(u._parents)
    for n in Graph([t.node]).nodes:
        u = tensors[id(n)]
        if n.op == "unrolled":
            run = n.attrs["_run"]
            net = run.net
            row_of = {id(m): (k, s) for k, ms in net.input_nodes.items()
                      for s, m in enumerate(ms)}
            init_of = {id(m): k for k, m in net.init_nodes.items()}
            for m in net.nodes:
                sh = tuple(m.shape or ())
                shape_of[id(m)] = sh
                if id(m) in row_of:
                    k, _ = row_of[id(m)]
                    size[id(m)] = size.get(id(run.xs[k].node), 1)
                    if id(run.xs[k].node) not in size:
                        leaf(m, sh)
                elif m.is_leaf:
                    src = None
                    if m.op == "init":
                        s0 = run.states.get(init_of.get(id(m)))
                        src = getattr(s0, "node", None)
                    if src is not None and id(src) in size:
                        size[id(m)] = size[id(src)]
                    else:
                        leaf(m, sh)
                else:
                    op(m, sh, [(i, shape_of[id(i)]) for i in m.inputs])
            continue
        sh = np.shape(u._data)
        shape_of[id(n)] = sh
        if n.op == "item":
            run = n.inputs[0].attrs["_run"]
            net = run.net
            outs = list(net.output_nodes.values())
            k = n.attrs["index"]
            picked = (outs[k] if k < len(outs)
                      else [list(net.state_nodes.values())[k - len(outs)][-1]])
            size[id(n)] = max(size[id(m)] for m in picked)
        elif not u._parents:
            leaf(n, sh)
        else:
            op(n, sh, [(i, shape_of[id(i)]) for i in n.inputs])
    root = max(int(np.prod(shape_of[id(t.node)])), 1) * size[id(t.node)]
    return leaves, elements, min(root, _CAP)


def _check_size(t, what: str) -> None:
    """Refuse, before any sympy expression is built, a graph whose expression would be too
    large to be useful (counted by :func:`_estimate`)."""
    leaves, elements, tree = _estimate(t)
    if leaves <= MAX_LEAVES and elements <= MAX_ELEMENTS and tree <= MAX_TREE:
        return
    if tree > MAX_TREE:
        size = (f"its expression would have about {tree:.2g} terms (more than {MAX_TREE}: "
                "sympy would take minutes or hours over it)")
    else:
        size = (f"{leaves} scalar leaves and {elements} scalar values (more than "
                f"{MAX_LEAVES} leaves or {MAX_ELEMENTS} values)")
    raise UnrollGraphError(
        f"{what}: the graph is too large to be useful symbolically: {size}; for a weight of "
        "an unrolled net use ug.symbolic.bptt(net, param) (one term per step, each a short "
        "product of step Jacobians), ug.explain(loss) for the numbers, or derive a smaller "
        "one (fewer steps, fewer hidden units, a batch of one)")


class _Builder:
    """Object arrays of sympy expressions for the nodes of a tensor's graph."""

    def __init__(self):
        self.env: dict = {}  # Symbol -> float value
        self.sym_of: dict = {}  # id(leaf node) -> object array of symbols
        self.exprs: dict = {}  # id(node) -> object array (an unrolled call's nodes too)
        self.leaves = 0
        self.elements = 0
        self.call = None  # run -> the values of an unrolled call, in place of its expressions

    def _count(self, shape, leaf):
        n = int(np.prod(shape)) if shape else 1
        self.elements += n
        if leaf:
            self.leaves += n
        if self.leaves > MAX_LEAVES or self.elements > MAX_ELEMENTS:
            raise UnrollGraphError(
                f"the graph is too large to be useful symbolically: more than {MAX_LEAVES} "
                f"scalar leaves or {MAX_ELEMENTS} scalar values; derive a smaller one "
                "(fewer units, fewer steps, a batch of one), or use ug.explain for the numbers")

    def leaf(self, node, value, requires_grad, name):
        if id(node) in self.sym_of:
            return self.sym_of[id(node)]
        self._count(np.shape(value), True)
        if requires_grad:
            arr = _symbols(name, np.shape(value))
            for i, s in np.ndenumerate(arr):
                self.env[s] = float(np.asarray(value)[i])
        else:
            arr = _numbers(value)
        self.sym_of[id(node)] = arr
        return arr

    def op(self, node, ins):
        self._count(node.shape or (), False)
        return _apply(node, ins)

    def tensor(self, t) -> np.ndarray:
        graph = Graph([t.node])
        tensors = {}
        stack = [t]
        while stack:
            u = stack.pop()
            if id(u.node) in tensors:
                continue
            tensors[id(u.node)] = u
            stack.extend(u._parents)
        out = self.exprs
        for n in graph.nodes:
            u = tensors[id(n)]
            if not u._parents:
                out[id(n)] = self.leaf(n, u.data, u.requires_grad, graph.display_name(n))
            elif n.op == "unrolled":
                run = n.attrs["_run"]
                out[id(n)] = self.call(run) if self.call else self.unrolled(run)
            elif n.op == "item":
                out[id(n)] = out[id(n.inputs[0])][n.attrs["index"]]
            else:
                out[id(n)] = self.op(n, [out[id(i)] for i in n.inputs])
        return out[id(t.node)]

    def unrolled(self, run) -> tuple:
        """The values of an unrolled call: every node of its graph (recorded in
        ``self.exprs``) from the parameters' symbols, and the input rows and initial states
        from the leaves that feed the call (symbols when they require grad)."""
        from .tensor import Tensor

        net = run.net
        params = {id(n): k for k, n in net.param_nodes.items()}
        leaves = {id(p.node): p for p in run.leaves}
        row_of = {id(n): (k, t) for k, ns in net.input_nodes.items() for t, n in enumerate(ns)}
        init_of = {id(n): k for k, n in net.init_nodes.items()}
        ex = self.exprs
        for n in net.nodes:
            if id(n) in params:
                p = leaves.get(id(n))
                p = net.cell._params[params[id(n)]] if p is None else p
                ex[id(n)] = self.leaf(n, p.data, p.requires_grad, params[id(n)])
            elif id(n) in row_of:
                k, t = row_of[id(n)]
                arr = self.sym_of.get(id(run.xs[k].node))
                ex[id(n)] = arr[t] if arr is not None else _numbers(run.value(n))
            elif id(n) in init_of:
                s = run.states.get(init_of[id(n)])
                arr = self.sym_of.get(id(s.node)) if isinstance(s, Tensor) else None
                ex[id(n)] = arr if arr is not None else _numbers(run.value(n))
            elif n.is_leaf:
                ex[id(n)] = _numbers(run.value(n))
            else:
                ex[id(n)] = self.op(n, [ex[id(i)] for i in n.inputs])
        outs = [np.stack([ex[id(n)] for n in ns]) for ns in net.output_nodes.values()]
        finals = [ex[id(ns[-1])] for ns in net.state_nodes.values()]
        return tuple(outs + finals)


#: symbol names sympy writes as LaTeX safely: words with ``_`` subscripts
_TEX_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*")
_TEX_ESCAPES = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "#": r"\#", "$": r"\$",
                "%": r"\%", "&": r"\&", "_": r"\_", "^": r"\^{}", "~": r"\~{}",
                "<": r"\textless{}", ">": r"\textgreater{}", "\n": " "}


def _tex_name(name: str) -> str:
    """A plain name as LaTeX: a word of several letters upright (``\\mathrm{weight}``), a
    single letter in italic as a variable, the parts after ``_`` as one subscript
    (``weight_hh_00`` is ``\\mathrm{weight}_{\\mathrm{hh},00}``)."""
    def word(w):
        return w if len(w) == 1 or w.isdigit() else rf"\mathrm{{{w}}}"

    head, *rest = name.split("_")
    return word(head) + ("_{" + ",".join(word(w) for w in rest) + "}" if rest else "")


def _latex(expr) -> str:
    """``sympy.latex(expr)`` with every symbol named after a user's name: a plain word as
    :func:`_tex_name` writes it, any other name as text, its LaTeX characters escaped (a
    name cannot inject LaTeX)."""
    sp = _sp()
    names = {}
    for sym in getattr(expr, "free_symbols", ()):
        if _TEX_PLAIN.fullmatch(sym.name):
            names[sym] = _tex_name(sym.name)
        else:
            text = "".join(_TEX_ESCAPES.get(ch, ch) for ch in sym.name)
            names[sym] = r"\text{" + text + "}"
    return sp.latex(expr, symbol_names=names)


def _is_unit(f) -> bool:
    """A factor of 1, or an identity matrix: left out of a displayed product."""
    sp = _sp()
    if isinstance(f, sp.MatrixBase):
        return f.rows == f.cols and f == sp.eye(f.rows)
    return f == 1


def _product_latex(factors) -> str:
    """A product of factors as LaTeX, ``\\cdot`` between them, the factors of 1 (and
    identity matrices) left out: the value is the same."""
    sp = _sp()
    shown = [f for f in factors if not _is_unit(f)]
    if not shown:
        return "1"
    parts = []
    for f in shown:
        text = _latex(f)
        if len(shown) > 1 and (isinstance(f, sp.Add) or text.startswith("-")):
            text = rf"\left({text}\right)"
        parts.append(text)
    return r" \cdot ".join(parts)


def _as_sympy(arr):
    sp = _sp()
    arr = np.asarray(arr, dtype=object)
    if arr.ndim == 0:
        return arr[()]
    if arr.ndim <= 2:
        return sp.Matrix(arr.tolist() if arr.ndim == 2 else [[x] for x in arr])
    return sp.Array(arr.tolist())


def to_sympy(t):
    """The sympy expression of tensor ``t`` in terms of symbols named after its leaves.

    Leaves that require grad become symbols (an array leaf ``W`` of shape (2, 2) becomes
    ``W_00, W_01, W_10, W_11``); other leaves and constants become numbers, integers and
    short decimals exactly (``x**2``, not ``x**2.0``). An unrolled net's call is computed step
    by step from its parameters, its input rows and its initial state, each a symbol when
    the tensor given to the call requires grad.

    Parameters
    ----------
    t : Tensor

    Returns
    -------
    sympy.Expr for a scalar, sympy.Matrix for 1-D (a column) and 2-D tensors, else
    sympy.Array.

    Raises
    ------
    UnrollGraphError
        For a graph too large to be useful symbolically (more than ``MAX_LEAVES`` scalar
        leaves), or an op without a sympy form.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor(3.0, requires_grad=True, name="x")
    >>> ug.to_sympy(x * x + 1)
    x**2 + 1
    """
    _tensor_arg(t, "to_sympy", "t")
    _check_size(t, "to_sympy")
    return _as_sympy(_Builder().tensor(t))


def _describe(x) -> str:
    """What was passed, in a few words, for an error message."""
    from .cell import Cell
    from .unroll import Unrolled

    if isinstance(x, Unrolled):
        return f"the unrolled net {x.cell.name!r} itself"
    if isinstance(x, Cell):
        return f"the cell {x.name!r} itself"
    return f"a {type(x).__name__}"


def _tensor_arg(x, what: str, arg: str) -> None:
    """Refuse an argument that is not a Tensor, saying what to pass."""
    from .cell import Cell
    from .tensor import Tensor
    from .unroll import Unrolled

    if isinstance(x, Tensor):
        return
    hint = ""
    if isinstance(x, (Unrolled, Cell)):
        hint = ("; call the net (out, h = net(xs)) and pass a tensor computed from its "
                "outputs, or use ug.symbolic.bptt(net, param) for a parameter's BPTT terms")
    raise GradientError(f"{what}: {arg} must be a Tensor, got {_describe(x)}{hint}")


def _net_arg(net, what: str) -> None:
    """Refuse a ``net`` that is not an unrolled net, saying what to pass."""
    from .cell import Cell
    from .unroll import Unrolled

    if isinstance(net, Unrolled):
        return
    hint = ""
    if isinstance(net, Cell):
        hint = (f"; unroll it and run it first: net = ug.unroll(cell, steps=T); "
                f"out, h = net(xs); loss.backward(); {what}(net, ...)")
    raise CellError(f"{what}: net must be an unrolled net (ug.unroll(cell, steps)), got "
                    f"{_describe(net)}{hint}")


def _scalar(loss, what):
    if int(np.prod(loss.shape)) != 1:
        raise GradientError(f"{what}: the loss must be a scalar, got shape {loss.shape}; "
                            "reduce it first (loss.sum() or loss.mean())")


def grad(loss, wrt):
    """sympy's derivative of ``to_sympy(loss)`` with respect to the leaf ``wrt``.

    Parameters
    ----------
    loss : Tensor
        A scalar.
    wrt : Tensor
        A leaf of ``loss``'s graph that requires grad.

    Returns
    -------
    sympy.Expr, or a sympy.Matrix / Array of ``wrt``'s shape.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor(3.0, requires_grad=True, name="x")
    >>> grad(ug.tanh(x * x), x)
    2*x*(1 - tanh(x**2)**2)
    """
    _tensor_arg(loss, "symbolic.grad", "loss")
    _tensor_arg(wrt, "symbolic.grad", "wrt")
    _scalar(loss, "symbolic.grad")
    _check_size(loss, "symbolic.grad")
    b = _Builder()
    e = np.asarray(b.tensor(loss), dtype=object).reshape(())[()]
    syms = b.sym_of.get(id(wrt.node))
    if syms is None:
        raise GradientError(f"symbolic.grad: {wrt.node.label()} is not a leaf of the loss's "
                            "graph that requires grad")
    if syms.ndim == 0:
        return _sp().diff(e, syms[()])
    out = np.empty(syms.shape, dtype=object)
    for i, s in np.ndenumerate(syms):
        out[i] = _sp().diff(e, s)
    return _as_sympy(out)


class ChainRule:
    """The chain rule written out: a sum over paths from a leaf to the loss of products of
    local derivatives.

    On a graph of scalars each local derivative is a sympy expression and each product a
    ``sympy.Mul`` (unevaluated). Where a path passes through tensors (an unrolled net's
    steps, a stack of its outputs, an elementwise op on a vector) each local derivative is
    the Jacobian of the op (``out.size × input.size``, elements in row-major order) and
    each product a ``sympy.MatMul`` of them, the one nearest the loss first, kept
    unevaluated; a product is then a ``1 × wrt.size`` row.

    Attributes
    ----------
    paths : list of list of str
        Each path's node names, leaf first (the names the diagrams and ``ug.explain`` use).
    products : list of sympy.Expr or sympy.MatMul
        Each path's product of local derivatives, unevaluated.
    expr : sympy.Expr
        Their sum, unevaluated; ``doit()`` multiplies it out, which equals :func:`grad`.
    shape : tuple
        The shape of ``wrt``.
    """

    def __init__(self, paths, products, env, shape=(), factors=None):
        self.paths = paths
        self.products = products
        # each product's factors, in the product's order (for the displayed form)
        self._factors = factors if factors is not None else [[p] for p in products]
        self.shape = tuple(shape)
        matrices = any(isinstance(p, _sp().MatrixExpr) for p in products)
        if len(products) == 1:
            self.expr = products[0]
        elif matrices:
            self.expr = _sp().MatAdd(*products, evaluate=False)
        else:
            self.expr = _sp().Add(*products, evaluate=False)
        self.env = env

    def _shaped(self, m):
        """A ``1 × wrt.size`` row as ``wrt``'s shape (a scalar, a column, a matrix)."""
        sp = _sp()
        if not isinstance(m, sp.MatrixBase):
            return m
        flat = list(m)
        if len(self.shape) == 0:
            return flat[0]
        if len(self.shape) == 1:
            return sp.Matrix(flat)
        if len(self.shape) == 2:
            return sp.Matrix(self.shape[0], self.shape[1], flat)
        return sp.Array(flat, self.shape)

    def doit(self):
        """The sum evaluated: simplified on a graph of scalars; on tensors multiplied out and
        given ``wrt``'s shape (not simplified: nested expressions of unrolled steps take
        sympy a long time to simplify)."""
        sp = _sp()
        if isinstance(self.expr, sp.MatrixExpr):
            return self._shaped(sp.ImmutableMatrix(self.expr.doit()))
        return sp.simplify(self.expr.doit())

    def values(self) -> list:
        """Each path's product at the leaves' values: floats for a scalar ``wrt``, else
        arrays of ``wrt``'s shape."""
        sp = _sp()
        env = {k: sp.Float(v) for k, v in self.env.items()}
        out = []
        for p in self.products:
            if isinstance(p, sp.MatrixExpr):
                mats = [np.array(a.xreplace(env).evalf(), dtype=np.float64) for a in p.args]
                v = mats[0]
                for m in mats[1:]:
                    v = v @ m
                out.append(float(v.reshape(-1)[0]) if self.shape == () else
                           v.reshape(self.shape))
            else:
                out.append(float(p.doit().xreplace(env).evalf()))
        return out

    def latex(self) -> str:
        """The sum of the paths' products as LaTeX: ``\\cdot`` between the factors, the
        factors of 1 left out (``expr`` keeps them; the value is the same)."""
        return " + ".join(_product_latex(fs) for fs in self._factors)

    def __str__(self) -> str:
        return str(self.expr)

    def _repr_latex_(self) -> str:
        return f"$${self.latex()}$$"


#: most paths chain_rule writes out
MAX_PATHS = 1000


def chain_rule(loss, wrt) -> ChainRule:
    """The engine's chain rule for ``d loss / d wrt``, written out as a sum over the paths
    from ``wrt`` to ``loss`` of products of local derivatives (unevaluated).

    On a graph of scalars the local derivatives are scalars (``d tanh(z)/dz``...). Elsewhere
    they are Jacobians, and an unrolled net's call is opened into its unrolled graph, so
    the paths run through the steps (a recurrent weight has one path per step it is read
    at and per route from that step to the loss): BPTT as the chain rule. For one term per
    step instead of one per path, see :func:`bptt`.

    Parameters
    ----------
    loss : Tensor
        A scalar.
    wrt : Tensor
        A leaf of the loss's graph that requires grad (a parameter of an unrolled net, or
        an input or initial state given with ``requires_grad=True``).

    Returns
    -------
    ChainRule

    Raises
    ------
    GradientError
        For a non-scalar loss, or a ``wrt`` that is not a leaf of the graph requiring grad.
    UnrollGraphError
        For more than ``MAX_PATHS`` paths (use :func:`bptt` for an unrolled net, or
        :func:`grad`), a graph too large to derive symbolically, or a loss reading two
        calls of one net.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor(3.0, requires_grad=True, name="x")
    >>> c = chain_rule(x * x, x)
    >>> len(c.paths), c.doit()
    (2, 2*x)
    """
    from .tensor import Tensor

    _tensor_arg(loss, "symbolic.chain_rule", "loss")
    _scalar(loss, "symbolic.chain_rule")
    if not isinstance(wrt, Tensor):
        raise GradientError(f"symbolic.chain_rule: wrt must be a Tensor (a leaf of the loss's "
                            f"graph), got {type(wrt).__name__}")
    sp = _sp()
    b = _Builder()
    ex = b.exprs  # filled once the paths are counted and the size checked
    eager = Graph([loss.node])
    in_eager = {id(n) for n in eager.nodes}
    nodes: list = []
    seen: set = set()
    sources: dict = {}  # id(node) -> [(source node, how)]
    runs: dict = {}

    def add(n, srcs):
        if id(n) not in seen:
            seen.add(id(n))
            nodes.append(n)
            sources[id(n)] = srcs

    def op_how(n, k):
        return lambda v: _apply(n, [v if j == k else ex[id(i)]
                                    for j, i in enumerate(n.inputs)])

    for n in eager.nodes:
        if n.op == "unrolled":
            run = n.attrs["_run"]
            net = run.net
            if id(net) in runs:
                raise UnrollGraphError(
                    f"symbolic.chain_rule: the loss reads two calls of net {net.cell.name!r}, "
                    "whose unrolled graphs share their nodes; derive it with "
                    "symbolic.grad(loss, wrt)")
            runs[id(net)] = run
            row_of = {id(m): (k, t) for k, ms in net.input_nodes.items()
                      for t, m in enumerate(ms)}
            init_of = {id(m): k for k, m in net.init_nodes.items()}
            for m in net.nodes:
                if id(m) in row_of:
                    k, t = row_of[id(m)]
                    x = run.xs[k]
                    srcs = ([(x.node, lambda v, t=t: v[t])]
                            if x.requires_grad and id(x.node) in in_eager else [])
                elif id(m) in init_of:
                    s0 = run.states.get(init_of[id(m)])
                    srcs = ([(s0.node, lambda v: v)] if isinstance(s0, Tensor)
                            and s0.requires_grad and id(s0.node) in in_eager else [])
                elif m.is_leaf:
                    srcs = []
                else:
                    srcs = [(i, op_how(m, k)) for k, i in enumerate(m.inputs)]
                add(m, srcs)
            continue
        if n.op == "item":
            run = n.inputs[0].attrs["_run"]
            net = run.net
            outs = list(net.output_nodes.values())
            k = n.attrs["index"]
            if k < len(outs):
                srcs = []
                for t, m in enumerate(outs[k]):
                    def how(v, t=t, ms=outs[k]):
                        return np.stack([v if j == t else ex[id(q)] for j, q in enumerate(ms)])
                    srcs.append((m, how))
            else:
                srcs = [(list(net.state_nodes.values())[k - len(outs)][-1], lambda v: v)]
            add(n, srcs)
            continue
        add(n, [] if n.is_leaf else [(i, op_how(n, k)) for k, i in enumerate(n.inputs)])
    if id(wrt.node) not in seen or not wrt.requires_grad or not wrt.node.is_leaf:
        raise GradientError(f"symbolic.chain_rule: {wrt.node.label()} is not a leaf of the "
                            "loss's graph that requires grad")
    # the names the diagrams and ug.explain print
    from .explain import graph_names

    names = graph_names(eager, nodes)
    # only nodes from which the loss can be reached take part
    reach = {id(loss.node)}
    for n in reversed(nodes):
        if id(n) in reach:
            for src, _ in sources[id(n)]:
                reach.add(id(src))
    consumers: dict = {}
    for n in nodes:
        if id(n) not in reach:
            continue
        for src, how in sources[id(n)]:
            consumers.setdefault(id(src), []).append((n, src, how))
    cache: dict = {}

    def local(src, how):
        key = id(how)  # one function per (node, input slot), kept alive in ``sources``
        if key in cache:
            return cache[key]
        v = np.asarray(ex[id(src)], dtype=object)
        dummies = np.empty(v.shape, dtype=object)
        for i in np.ndindex(*v.shape):
            dummies[i] = sp.Dummy(f"u{len(cache)}")
        out = np.asarray(how(dummies), dtype=object)
        back = {d: e for d, e in zip(dummies.reshape(-1), v.reshape(-1))}
        if out.size == 1 and v.size == 1:
            d = sp.diff(out.reshape(-1)[0], dummies.reshape(-1)[0]).xreplace(back)
        else:
            d = sp.ImmutableMatrix(list(out.reshape(-1))).jacobian(
                list(dummies.reshape(-1))).xreplace(back)
        cache[key] = d
        return d

    # count the paths first (each node: the sum of its consumers' counts), to refuse early
    count = {id(loss.node): 1}
    for n in reversed(nodes):
        if id(n) != id(loss.node):
            count[id(n)] = sum(count.get(id(c), 0) for c, _, _ in consumers.get(id(n), ()))
    if count.get(id(wrt.node), 0) > MAX_PATHS:
        raise UnrollGraphError(
            f"symbolic.chain_rule: {count[id(wrt.node)]} paths from {names[id(wrt.node)]} to "
            f"the loss, more than the {MAX_PATHS} worth writing out; for a weight of an "
            "unrolled net use symbolic.bptt(net, param) (one term per step), ug.explain(loss) "
            "for the numbers, or fewer steps or hidden units; else symbolic.grad(loss, wrt)")
    _check_size(loss, "symbolic.chain_rule")
    b.tensor(loss)
    if id(wrt.node) not in b.sym_of:
        raise GradientError(f"symbolic.chain_rule: {wrt.node.label()} is not a leaf of the "
                            "loss's graph that requires grad")
    paths, chains = [], []
    walk = [(wrt.node, [names[id(wrt.node)]], [])]
    while walk:
        n, path, factors = walk.pop()
        if n is loss.node:
            paths.append(path)
            chains.append(factors)
            continue
        for c, src, how in consumers.get(id(n), ()):
            walk.append((c, path + [names[id(c)]], factors + [local(src, how)]))
    matrices = any(isinstance(f, sp.MatrixBase) for fs in chains for f in fs)
    products = [_product(fs, matrices) for fs in chains]
    shown = [list(p.args) if isinstance(p, sp.MatMul) else list(fs)
             for p, fs in zip(products, chains)]
    return ChainRule(paths[::-1], products[::-1], b.env, wrt.shape, shown[::-1])


def _product(factors, matrices: bool):
    """The unevaluated product of local derivatives, leaf first in ``factors``: a Mul of
    scalars, or (``matrices``: some path has Jacobians) a MatMul of Jacobians with the one
    nearest the loss first, a scalar taken as a 1 × 1 matrix."""
    sp = _sp()
    if not factors:
        return sp.ImmutableMatrix([[1]]) if matrices else sp.Integer(1)
    if not matrices:
        return sp.Mul(*factors, evaluate=False) if len(factors) > 1 else factors[0]
    mats = [f if isinstance(f, sp.MatrixBase) else sp.ImmutableMatrix([[f]])
            for f in reversed(factors)]
    return sp.MatMul(*mats, evaluate=False)


class BPTT:
    """The BPTT decomposition of a shared parameter's gradient, one term per step.

    With ``r_t`` the values step t hands on (its next states, and its outputs that are not
    states), ``W`` the parameter and ``W^(t)`` the copy of it that step t reads::

        dL/dW = sum_t dL/dW^(t),    dL/dW^(t) = dL/dr_t · dr_t/dW^(t)
        dL/dr_t = sum_{k >= t} (dL/dr_k)_direct · dr_k/dr_(k-1) ··· dr_(t+1)/dr_t

    ``dr_t/dW^(t)`` is the direct dependence at step t (the state read by the step held
    fixed), ``dr_(j+1)/dr_j`` the Jacobian of one step, and ``(dL/dr_k)_direct`` what the
    loss reads from step k itself: the later losses are carried back by the product of the
    later steps' Jacobians. Each term is kept as that product, unevaluated.

    Attributes
    ----------
    param : str
    terms : list of sympy expressions
        ``terms[t]`` = dL/dW^(t), a sum over k of unevaluated matrix products
        ``(dL/dr_k) (dr_k/dr_(k-1)) ··· (dr_(t+1)/dr_t) (dr_t/dW)`` (``sympy.MatMul``; one
        product per later step whose loss reaches step t). Each is a 1 × W.size row over
        W's elements in row-major order; ``expr.doit()`` multiplies it out. A step with
        nothing to send (cut by truncation, or W unused) has a zero row.
    factors : list of list of list of (str, sympy.ImmutableMatrix)
        ``factors[t]``: the products of ``terms[t]``, each as its named factors
        (``("dL/dh_3", ...)``, ``("dh_3/dh_2", ...)``, ``("dh_2/dweight_hh", ...)``).
    symbols : dict
        Each state, output and parameter symbol -> its value in the run.
    values : numpy.ndarray
        ``(T,) + W.shape``: the terms at the run's numbers; they equal
        ``run.step_contributions(param)`` and sum to ``W.grad``.
    """

    def __init__(self, param, terms, values, total, factors=None, symbols=None, tex=None):
        self.param, self.terms, self.values, self.total = param, terms, values, total
        self.factors = factors if factors is not None else [[] for _ in terms]
        self.symbols = symbols or {}
        self._tex = tex or {}  # a factor's name -> its LaTeX fraction

    def structure(self, t: int, latex: bool = False) -> str:
        """Step ``t``'s term as the names of its factors: ``dL/dh_3 · dh_3/dh_2 ·
        dh_2/dW + ...`` (as LaTeX fractions with ``latex=True``).

        Raises
        ------
        UnrollGraphError
            For a ``t`` that is not a step of the run (0 to T-1).
        """
        T = len(self.terms)
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < T:
            raise UnrollGraphError(f"BPTT.structure: t must be a step of the run, an int "
                                   f"from 0 to {T - 1}, got {t!r}")
        products = []
        for product in self.factors[t]:
            if latex:
                products.append(r" \cdot ".join(self._tex.get(name, name) for name, _ in product))
            else:
                products.append(" · ".join(name for name, _ in product))
        return " + ".join(products) if products else "0"

    def latex(self) -> str:
        """Every term as LaTeX, in an ``aligned`` environment: the sum over the steps, then
        for each step its structure and its products, one per line (``\\cdot`` between
        the matrices)."""
        sp = _sp()
        w = _latex(sp.Symbol(self.param))
        lines = [rf"\frac{{\partial L}}{{\partial {w}}} &= \sum_{{t=0}}^{{"
                 rf"{len(self.terms) - 1}}} \frac{{\partial L}}{{\partial {w}^{{(t)}}}}"]
        for t, term in enumerate(self.terms):
            structure = self.structure(t, latex=True)
            lines.append(rf"\frac{{\partial L}}{{\partial {w}^{{({t})}}}} &= "
                         + structure.replace(" + ", r" \\" + "\n" + r"&\quad + "))
            if not self.factors[t]:
                lines.append("&= " + _latex(term))
                continue
            for k, product in enumerate(self.factors[t]):
                lines.append(("&= " if k == 0 else r"&\quad + ")
                             + _product_latex([m for _, m in product]))
        return ("\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}")

    def __str__(self) -> str:
        return "\n".join(f"dL/d{self.param}^({t}) = {self.structure(t)}\n    = {term}\n"
                         f"    = {np.round(v, 6).tolist()}"
                         for t, (term, v) in enumerate(zip(self.terms, self.values)))

    def _repr_latex_(self) -> str:
        return "$$" + self.latex().replace("\n", " ") + "$$"


def _frac_latex(top: list, bottom: list) -> str:
    """``d top / d bottom`` as a LaTeX fraction (each a list of symbol names; several are
    written as a tuple)."""
    sp = _sp()

    def part(names):
        inner = ", ".join(_latex(sp.Symbol(x)) for x in names)
        return inner if len(names) == 1 else rf"\left({inner}\right)"

    return rf"\frac{{\partial {part(top)}}}{{\partial {part(bottom)}}}"


def _param_name(net, param, what: str) -> str:
    """The name of cell parameter ``param`` (a name or the parameter tensor itself)."""
    from .tensor import Tensor

    params = net.cell.parameters()
    if isinstance(param, str):
        if param not in params:
            raise CellError(f"{what}: cell {net.cell.name!r} has no parameter {param!r}; "
                            f"parameters are {list(params)}")
        return param
    if isinstance(param, Tensor):
        for k, p in params.items():
            if p is param or p.node is param.node:
                return k
        raise CellError(
            f"{what}: {param.node.label()} (shape {param.shape}) is not a parameter of cell "
            f"{net.cell.name!r}; pass one of its parameters {list(params)} (the tensor, "
            f"e.g. cell.{next(iter(params), 'W')}, or its name)")
    raise CellError(f"{what}: param must be a parameter tensor of cell {net.cell.name!r} or "
                    f"its name, got {type(param).__name__}")


def _state_symbols(b, name: str, value) -> np.ndarray:
    """Symbols for a state or output value of the run (batch axis left out of the names
    for a batch of one), their values noted."""
    shape = np.shape(value)
    if int(np.prod(shape)) == 1:
        arr = _symbols(name, ()).reshape(shape)
    elif len(shape) >= 1 and shape[0] == 1:
        arr = _symbols(name, shape[1:]).reshape(shape)
    else:
        arr = _symbols(name, shape)
    b._count(shape, True)
    value = np.asarray(value, dtype=np.float64)
    for i, s in np.ndenumerate(arr):
        b.env[s] = float(value[i])
    return arr


def _num_matrix(m, fenv) -> np.ndarray:
    return np.array(m.xreplace(fenv).evalf(), dtype=np.float64)


def bptt(net, param, loss=None) -> BPTT:
    """The BPTT decomposition of ``dL/d param`` for the last run of ``net`` (after
    ``loss.backward()``): ``dL/dW = sum_t dL/dW^(t)``, one term per time step, each written
    as the product of Jacobians that carries the later losses back to step t (see
    :class:`BPTT`).

    Each step is derived on its own: the state it reads is a symbol (``h_2``: the state step
    2 reads, which step 1 computed), so a Jacobian ``dh_3/dh_2`` is a short expression of
    ``h_2``, the step's input and the parameters, as in the textbook form
    ``dL/dW = sum_t dL/dh_(t+1) · dh_(t+1)/dW``. (This is the textbooks' numbering, ``h_0``
    the initial state; the diagrams and :meth:`Run.value` number a state by the step that
    computes it, so their ``h_init`` is ``h_0`` here and their ``h_t`` is ``h_(t+1)``.)

    Parameters
    ----------
    net : Unrolled
    param : Tensor or str
        A parameter of the cell (``cell.weight_hh``) or its name.
    loss : Tensor, optional
        The loss computed from the run's outputs: ``dL/dr_k`` is then its derivative, an
        expression of the outputs (``2*h_3`` for a sum of squares). Without it, the loss is
        replaced by its first-order form ``sum(seed * output)`` with the run's output
        gradients as seeds (the same gradients, numbers in place of those expressions).

    Returns
    -------
    BPTT

    Raises
    ------
    UnrollGraphError
        Before a backward pass, for a graph too large to derive symbolically, for a loss not
        computed from the net's last run, or a cell whose output at step t is a value of an
        earlier step.
    CellError
        For a name or tensor that is not a parameter of the net's cell.

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> cell = ug.nn.RNNCell(1, 1, seed=0)
    >>> net = ug.unroll(cell, steps=2)
    >>> out, h = net(np.ones((2, 1, 1)))
    >>> out.sum().backward()
    >>> b = bptt(net, cell.weight_hh)
    >>> bool(np.allclose(b.values.sum(axis=0), cell.weight_hh.grad))
    True
    >>> b.structure(0)
    'dL/dh_1 · dh_1/dweight_hh + dL/dh_2 · dh_2/dh_1 · dh_1/dweight_hh'
    """
    _net_arg(net, "symbolic.bptt")
    param = _param_name(net, param, "symbolic.bptt")
    run = net.last_run
    if loss is not None:
        _tensor_arg(loss, "symbolic.bptt", "loss")
        _scalar(loss, "symbolic.bptt")
        calls = [n.attrs["_run"] for n in Graph([loss.node]).nodes
                 if n.op == "unrolled" and n.attrs["_run"].net is net]
        if not calls:
            raise UnrollGraphError(
                f"symbolic.bptt: the loss given ({loss.node.label()}) is not computed from "
                f"the net's last run: it reads no call of net {net.cell.name!r}; call the "
                "net, compute the loss from its outputs, call loss.backward(), then bptt")
        if calls[-1] is not run:
            raise UnrollGraphError(
                f"symbolic.bptt: the loss given ({loss.node.label()}) is not from the net's "
                "last run: the net has been called again since that loss was computed; "
                "compute the loss from the last call (or call bptt before calling the net "
                "again)")
    if run is None:
        raise UnrollGraphError(
            f"symbolic.bptt: net {net.cell.name!r} has not been run; call it "
            "(out, h = net(xs)), compute a loss and call loss.backward() first")
    if run.seeds is None:
        raise UnrollGraphError(
            f"symbolic.bptt: the last run of net {net.cell.name!r} has had no backward pass; "
            "call loss.backward() on a loss computed from that run first")
    sp = _sp()
    b = _Builder()
    T = net.steps
    params = {id(n): k for k, n in net.param_nodes.items()}
    leaves = {id(p.node): p for p in run.leaves}
    psyms: dict = {}
    for k, n in net.param_nodes.items():
        p = leaves.get(id(n))
        p = net.cell._params[k] if p is None else p
        psyms[id(n)] = b.leaf(n, p.data, p.requires_grad or k == param, k)
    wsyms = list(psyms[id(net.param_nodes[param])].reshape(-1))
    # the state symbols: S[s][t] is the state step t reads (S[s][T] the final state)
    S = {}
    for s, ns in net.state_nodes.items():
        S[s] = [_state_symbols(b, f"{s}_{t}",
                               run.value(net.init_nodes[s] if t == 0 else ns[t - 1]))
                for t in range(T + 1)]
    # what each step hands on: its next states, then its outputs that are not states
    hands: list = []  # per step: [(node, symbols, name)]
    for t in range(T):
        items, seen = [], set()
        for s, ns in net.state_nodes.items():
            items.append((ns[t], S[s][t + 1], f"{s}_{t + 1}"))
            seen.add(id(ns[t]))
        for k, ns in net.output_nodes.items():
            n = ns[t]
            if id(n) in seen:
                continue
            if n.step != t:
                raise UnrollGraphError(
                    f"symbolic.bptt: output {k!r} at step {t} is {n.label()}, not a value "
                    "computed by step t; derive this cell's gradient with "
                    "symbolic.grad(loss, param) instead")
            seen.add(id(n))
            items.append((n, _state_symbols(b, f"{k}_{t}", run.value(n)), f"{k}_{t}"))
        hands.append(items)
    # the loss as an expression of what the steps hand on
    outs_syms = {}
    for t in range(T):
        for n, arr, _ in hands[t]:
            outs_syms[id(n)] = arr

    def call_values(r):
        outs = [np.stack([outs_syms[id(n)] for n in ns]) for ns in net.output_nodes.values()]
        return tuple(outs + [S[s][T] for s in net.state_nodes])

    if loss is not None:
        b.call = call_values
        L = np.asarray(b.tensor(loss), dtype=object).reshape(())[()]
    else:
        # the loss as the run saw it, to first order: sum of seed * output over every output
        # and final state (its gradients are the run's)
        parts = []
        for arr, seed in zip(call_values(run), run.seeds):
            if seed is None:
                continue
            s = np.asarray(seed, dtype=np.float64)
            for i, e in np.ndenumerate(np.asarray(arr, dtype=object)):
                if s[i] != 0:
                    parts.append(_exact(s[i]) * e)
        L = sp.Add(*parts)
    # each step on its own, from the symbols of the state it reads
    shared: dict = {}
    for n in net.nodes:
        if n.step is None and n.op != "init" and id(n) not in params:
            shared[id(n)] = (_numbers(run.value(n)) if n.is_leaf else
                             b.op(n, [shared.get(id(i), psyms.get(id(i))) for i in n.inputs]))
    by_step: list = [[] for _ in range(T)]
    for n in net.nodes:
        if n.step is not None:
            by_step[n.step].append(n)
    D, J, E, names, tparts = [], [], [], [], []
    for t in range(T):
        known = dict(shared)
        known.update(psyms)
        for s in net.state_nodes:
            known[id(net.init_nodes[s] if t == 0 else net.state_nodes[s][t - 1])] = S[s][t]
        for n in by_step[t]:
            if n.is_leaf:
                known[id(n)] = _numbers(run.value(n))
                continue
            args = []
            for i in n.inputs:
                if id(i) not in known:
                    raise UnrollGraphError(
                        f"symbolic.bptt: {n.label()} reads {i.label()}, a value of another "
                        "step that is not a state; derive it with symbolic.grad(loss, param)")
                args.append(known[id(i)])
            known[id(n)] = b.op(n, args)
        exprs = [e for n, _, _ in hands[t] for e in np.asarray(known[id(n)]).reshape(-1)]
        syms = [e for _, arr, _ in hands[t] for e in arr.reshape(-1)]
        col = sp.ImmutableMatrix(exprs)
        D.append(sp.ImmutableMatrix(col.jacobian(wsyms)))
        if t > 0:
            prev = [e for _, arr, _ in hands[t - 1] for e in arr.reshape(-1)]
            J.append(sp.ImmutableMatrix(col.jacobian(prev)))
        else:
            J.append(None)
        E.append(sp.ImmutableMatrix([[sp.diff(L, x) for x in syms]]))
        parts = [nm for _, _, nm in hands[t]]
        names.append(parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")")
        tparts.append(parts)
    fenv = {k: sp.Float(v) for k, v in b.env.items()}
    p = net.cell._params[param]
    values = np.zeros((T,) + p.shape)
    terms, factors = [], []
    first = 0 if net.truncate is None else max(0, T - net.truncate)
    Dn = [_num_matrix(m, fenv) for m in D]
    Jn = [None] + [_num_matrix(m, fenv) for m in J[1:]]
    En = [_num_matrix(m, fenv) for m in E]
    g = None  # dL/dr_t at the run's numbers, carried back step by step
    for t in range(T - 1, -1, -1):
        g = En[t] if g is None else En[t] + g @ Jn[t + 1]
        if t < first:
            continue
        values[t] = (g @ Dn[t]).reshape(p.shape)
    w = param
    tex: dict = {}
    for t in range(T):
        products = []
        if t >= first:
            for k in range(t, T):
                if not any(x != 0 for x in E[k]):
                    continue
                named = [(f"dL/d{names[k]}", E[k])]
                tex[named[-1][0]] = _frac_latex(["L"], tparts[k])
                for j in range(k, t, -1):
                    named.append((f"d{names[j]}/d{names[j - 1]}", J[j]))
                    tex[named[-1][0]] = _frac_latex(tparts[j], tparts[j - 1])
                named.append((f"d{names[t]}/d{w}", D[t]))
                tex[named[-1][0]] = _frac_latex(tparts[t], [w])
                products.append(named)
        factors.append(products)
        mats = [sp.MatMul(*[m for _, m in pr], evaluate=False) for pr in products]
        if not mats:
            terms.append(sp.ZeroMatrix(1, len(wsyms)))
        elif len(mats) == 1:
            terms.append(mats[0])
        else:
            terms.append(sp.MatAdd(*mats, evaluate=False))
    return BPTT(param, terms, values, values.sum(axis=0), factors, dict(b.env), tex)

"""Symbolic derivations with sympy: a tensor as an expression of its leaves, sympy's own
derivative of it, the engine's chain rule written out path by path, and the BPTT decomposition
of a shared weight's gradient into one term per time step.

Every op's sympy form comes from the op registry (:mod:`unrollgraph.ops`), the same table the
engine's forward and VJPs are declared in.
"""

from __future__ import annotations

import numpy as np

from .errors import GradientError, UnrollGraphError
from .graph import Graph
from .ops import get_op

__all__ = ["to_sympy", "grad", "chain_rule", "bptt", "ChainRule", "BPTT"]

#: most scalar leaves (symbols and numbers) a symbolic derivation takes
MAX_LEAVES = 300
#: most scalar elements computed over the whole graph
MAX_ELEMENTS = 20000


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


class _Builder:
    """Object arrays of sympy expressions for the nodes of a tensor's graph."""

    def __init__(self, split=None):
        self.split = split  # (param Node, name): one copy of the parameter per step
        self.env: dict = {}  # Symbol -> float value
        self.sym_of: dict = {}  # id(leaf node) -> object array of symbols
        self.leaves = 0
        self.elements = 0
        self.step_symbols: dict = {}  # step -> object array of the parameter's copy

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
        sym = get_op(node.op).sym
        if sym is None:
            raise UnrollGraphError(f"op {node.op!r} ({node.label()}) has no sympy form")
        attrs = {k: v for k, v in node.attrs.items() if not k.startswith("_")}
        if node.op == "powc":
            attrs["p"] = _exact(attrs["p"])
        return np.asarray(sym(*ins, **attrs), dtype=object)

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
        out: dict = {}
        for n in graph.nodes:
            u = tensors[id(n)]
            if not u._parents:
                out[id(n)] = self.leaf(n, u.data, u.requires_grad, graph.display_name(n))
            elif n.op == "unrolled":
                out[id(n)] = self.unrolled(n.attrs["_run"])
            elif n.op == "item":
                out[id(n)] = out[id(n.inputs[0])][n.attrs["index"]]
            else:
                out[id(n)] = self.op(n, [out[id(i)] for i in n.inputs])
        return out[id(t.node)]

    def unrolled(self, run) -> tuple:
        net = run.net
        params = {id(n): k for k, n in net.param_nodes.items()}
        leaves = {id(p.node): p for p in run.leaves}
        vals: dict = {}
        shared_cache: dict = {}

        def value(n, step):
            if n.step is None and not n.is_leaf or id(n) in params:
                key = (id(n), step if self._split_here(n, params) else None)
            else:
                key = (id(n), None)
            if key in shared_cache:
                return shared_cache[key]
            if id(n) in params:
                p = leaves.get(id(n))
                if p is None:
                    p = net.cell._params[params[id(n)]]
                name = params[id(n)]
                if self.split is not None and self.split == name:
                    if step not in self.step_symbols:
                        arr = _symbols(f"{name}^({step})", p.shape)
                        self._count(p.shape, True)
                        for i, s in np.ndenumerate(arr):
                            self.env[s] = float(np.asarray(p.data)[i])
                        self.step_symbols[step] = arr
                    res = self.step_symbols[step]
                else:
                    res = self.leaf(n, p.data, p.requires_grad, name)
            elif n.is_leaf:
                res = self.leaf(n, run.value(n), False, n.label())
            elif n.step is None:
                res = self.op(n, [value(i, step) for i in n.inputs])
            else:
                res = vals[id(n)]
            shared_cache[key] = res
            return res

        for n in net.nodes:
            if n.step is not None and not n.is_leaf:
                vals[id(n)] = self.op(n, [value(i, n.step) for i in n.inputs])
            elif n.step is not None:
                vals[id(n)] = _numbers(run.value(n))
        for n in net.init_nodes.values():
            vals[id(n)] = value(n, None)

        def get(n):
            return vals[id(n)] if id(n) in vals else value(n, None)

        outs = [np.stack([get(n) for n in ns]) for ns in net.output_nodes.values()]
        finals = [get(ns[-1]) for ns in net.state_nodes.values()]
        return tuple(outs + finals)

    def _split_here(self, n, params) -> bool:
        """Whether shared node ``n`` depends on the split parameter (computed per step)."""
        if self.split is None:
            return False
        stack, seen = [n], set()
        while stack:
            m = stack.pop()
            if id(m) in params and params[id(m)] == self.split:
                return True
            for i in m.inputs:
                if id(i) not in seen:
                    seen.add(id(i))
                    stack.append(i)
        return False


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
    ``W_00, W_01, W_10, W_11``); other leaves, constants and an unrolled net's inputs become
    numbers, integers and short decimals exactly (``x**2``, not ``x**2.0``).

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
    return _as_sympy(_Builder().tensor(t))


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
    _scalar(loss, "symbolic.grad")
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

    Attributes
    ----------
    paths : list of list of str
        Each path's node names, leaf first.
    products : list of sympy.Expr
        Each path's product of local derivatives, unevaluated.
    expr : sympy.Expr
        Their sum, unevaluated; ``expr.doit()`` simplifies to :func:`grad`.
    """

    def __init__(self, paths, products, env):
        self.paths = paths
        self.products = products
        self.expr = _sp().Add(*products, evaluate=False) if len(products) != 1 else products[0]
        self.env = env

    def doit(self):
        """The sum evaluated."""
        return _sp().simplify(self.expr.doit())

    def values(self) -> list[float]:
        """Each path's product at the leaves' values."""
        env = {k: _sp().Float(v) for k, v in self.env.items()}
        return [float(p.doit().xreplace(env).evalf()) for p in self.products]

    def latex(self) -> str:
        return _sp().latex(self.expr)

    def __str__(self) -> str:
        return str(self.expr)

    def _repr_latex_(self) -> str:
        return f"$${self.latex()}$$"


def chain_rule(loss, wrt) -> ChainRule:
    """The engine's chain rule for ``d loss / d wrt`` on a graph of scalars, written out as a
    sum over the paths from ``wrt`` to ``loss`` of products of local derivatives (unevaluated).

    Raises
    ------
    GradientError
        For a graph with non-scalar nodes (use :func:`grad` there) or a ``wrt`` not in it.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor(3.0, requires_grad=True, name="x")
    >>> c = chain_rule(x * x, x)
    >>> len(c.paths), c.doit()
    (2, 2*x)
    """
    _scalar(loss, "symbolic.chain_rule")
    sp = _sp()
    b = _Builder()
    b.tensor(loss)
    graph = Graph([loss.node])
    if wrt.node not in graph:
        raise GradientError(f"symbolic.chain_rule: {wrt.node.label()} is not in the graph")
    exprs = {}
    stack = [loss]
    tensors = {}
    while stack:
        u = stack.pop()
        if id(u.node) not in tensors:
            tensors[id(u.node)] = u
            stack.extend(u._parents)
    for n in graph.nodes:
        if n.op in ("unrolled", "item") or (n.shape not in ((), None) and np.prod(n.shape) != 1):
            raise GradientError("symbolic.chain_rule works on graphs of scalars; "
                                f"{n.label()} has shape {n.shape}: use symbolic.grad")
    sub = _Builder()
    sub.sym_of = b.sym_of
    for n in graph.nodes:
        u = tensors[id(n)]
        if not u._parents:
            exprs[id(n)] = np.asarray(b.sym_of[id(n)]).reshape(())[()]
        else:
            exprs[id(n)] = np.asarray(
                sub.op(n, [np.asarray(exprs[id(i)], dtype=object).reshape(n.inputs[k].shape
                                                                             or ())
                           for k, i in enumerate(n.inputs)])).reshape(())[()]
    names = {id(n): graph.display_name(n) for n in graph.nodes}

    def local(n, k):
        us = [sp.Dummy(f"u{j}") for j in range(len(n.inputs))]
        arr = [np.asarray(u, dtype=object).reshape(n.inputs[j].shape or ())
               for j, u in enumerate(us)]
        f = np.asarray(sub.op(n, arr)).reshape(())[()]
        d = sp.diff(f, us[k])
        return d.subs({us[j]: exprs[id(i)] for j, i in enumerate(n.inputs)})

    paths, products = [], []
    consumers: dict = {}
    for n in graph.nodes:
        for k, i in enumerate(n.inputs):
            consumers.setdefault(id(i), []).append((n, k))
    walk = [(wrt.node, [names[id(wrt.node)]], [])]
    while walk:
        n, path, factors = walk.pop()
        if n is loss.node:
            paths.append(path)
            products.append(sp.Mul(*factors, evaluate=False) if len(factors) > 1
                            else (factors[0] if factors else sp.Integer(1)))
            if len(paths) > 1000:
                raise UnrollGraphError("symbolic.chain_rule: more than 1000 paths; use grad")
            continue
        for c, k in consumers.get(id(n), ()):
            walk.append((c, path + [names[id(c)]], factors + [local(c, k)]))
    return ChainRule(paths[::-1], products[::-1], b.env)


class BPTT:
    """The BPTT decomposition of a shared parameter's gradient, one term per step.

    Attributes
    ----------
    param : str
    terms : list of sympy expressions
        ``terms[t]`` = dL/dW^(t): the derivative of the loss with respect to the copy of
        ``W`` that step t reads (its direct use at step t, carried back from every later
        loss through the Jacobians of the later steps).
    values : numpy.ndarray
        ``(T,) + W.shape``: the terms at the run's numbers; they sum to ``W.grad``.
    """

    def __init__(self, param, terms, values, total):
        self.param, self.terms, self.values, self.total = param, terms, values, total

    def latex(self) -> str:
        sp = _sp()
        w = sp.latex(sp.Symbol(self.param))
        lines = [rf"\frac{{\partial L}}{{\partial {w}}} = \sum_{{t=0}}^{{"
                 rf"{len(self.terms) - 1}}} \frac{{\partial L}}{{\partial {w}^{{(t)}}}}"]
        for t, term in enumerate(self.terms):
            lines.append(rf"\frac{{\partial L}}{{\partial {w}^{{({t})}}}} = "
                         + sp.latex(term))
        return " \\\\\n".join(lines)

    def __str__(self) -> str:
        return "\n".join(f"dL/d{self.param}^({t}) = {term}  = {np.round(v, 6).tolist()}"
                         for t, (term, v) in enumerate(zip(self.terms, self.values)))

    def _repr_latex_(self) -> str:
        return "$$" + self.latex().replace("\\\\\n", "\\\\ ") + "$$"


def bptt(net, param: str, loss=None) -> BPTT:
    """The BPTT decomposition of ``dL/d param`` for the last run of ``net`` (after
    ``loss.backward()``): ``dL/dW = sum_t dL/dW^(t)``, one term per time step.

    Parameters
    ----------
    net : Unrolled
    param : str
        A parameter name of the cell.
    loss : Tensor, optional
        The loss computed from the run's outputs: the terms are then derivatives of it.
        Without it, the loss is replaced by its first-order form ``sum(seed * output)``
        with the run's output gradients as seeds (the same gradients, shorter terms).

    Returns
    -------
    BPTT

    Raises
    ------
    UnrollGraphError
        Before a backward pass, or for a graph too large to derive symbolically.
    CellError
        For an unknown parameter.

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> cell = ug.nn.RNNCell(1, 1, seed=0)
    >>> net = ug.unroll(cell, steps=2)
    >>> out, h = net(np.ones((2, 1, 1)))
    >>> out.sum().backward()
    >>> b = bptt(net, "weight_hh")
    >>> bool(np.allclose(b.values.sum(axis=0), cell.weight_hh.grad))
    True
    """
    from .errors import CellError

    run = net.last_run
    if run is None or run.seeds is None:
        raise UnrollGraphError("symbolic.bptt: call the net and loss.backward() first")
    if param not in net.cell._params:
        raise CellError(f"cell {net.cell.name!r} has no parameter {param!r}; parameters are "
                        f"{list(net.cell._params)}")
    sp = _sp()
    b = _Builder(split=param)
    if loss is not None:
        _scalar(loss, "symbolic.bptt")
        calls = [n for n in Graph([loss.node]).nodes if n.op == "unrolled"]
        if not calls or calls[-1].attrs["_run"] is not run:
            raise UnrollGraphError("symbolic.bptt: the loss given is not computed from the "
                                   "net's last run; call the net, compute the loss, then bptt")
        L = np.asarray(b.tensor(loss), dtype=object).reshape(())[()]
    else:
        # the loss as the run saw it, to first order: sum of seed * output over every output
        # and final state (its gradients are the run's)
        outs = b.unrolled(run)
        parts = []
        for arr, seed in zip(outs, run.seeds):
            if seed is None:
                continue
            s = np.asarray(seed, dtype=np.float64)
            for i, e in np.ndenumerate(np.asarray(arr, dtype=object)):
                if s[i] != 0:
                    parts.append(_exact(s[i]) * e)
        L = sp.Add(*parts)
    p = net.cell._params[param]
    terms, values = [], np.zeros((net.steps,) + p.shape)
    fenv = {k: sp.Float(v) for k, v in b.env.items()}
    for t in range(net.steps):
        syms = b.step_symbols.get(t)
        if syms is None:
            terms.append(sp.Integer(0) if p.ndim == 0 else _as_sympy(
                np.full(p.shape, sp.Integer(0), dtype=object)))
            continue
        d = np.empty(syms.shape, dtype=object)
        for i, s in np.ndenumerate(syms):
            d[i] = sp.diff(L, s)
            values[(t,) + i] = float(d[i].xreplace(fenv).evalf())
        terms.append(_as_sympy(d))
    return BPTT(param, terms, values, values.sum(axis=0))

"""``Cell``: a recurrent cell, the one place in unrollgraph where a cycle lives.

A cell is an ordinary graph of tensor ops plus feedback edges. Each feedback edge
``state <- next_value`` is a one-step delay (z^-1): the value computed at step t becomes the
state at step t+1. :func:`unrollgraph.unroll` copies the cell into an acyclic graph.

Inside the cell, inputs and states are placeholders whose value has a batch of one (the real
batch axis is added at run time); parameters are shared weights.
"""

from __future__ import annotations

import numpy as np

from .errors import CellError, ShapeError
from .graph import Graph, Node, check_name, toposort
from .tensor import Tensor

__all__ = ["Cell"]

_PROBE = 0.5  # placeholder value used to infer shapes while the cell is built


class Cell:
    """A recurrent cell: inputs, states, shared parameters, feedback edges and outputs.

    Parameters
    ----------
    name : str
        The cell's name, used in diagrams.

    Examples
    --------
    An Elman cell h_t = tanh(x_t W^T + h_{t-1} U^T + b):

    >>> import numpy as np, unrollgraph as ug
    >>> cell = ug.Cell("elman")
    >>> x = cell.input("x", (2,))
    >>> h = cell.state("h", (3,))
    >>> W = cell.param("W", np.zeros((3, 2)))
    >>> U = cell.param("U", np.zeros((3, 3)))
    >>> b = cell.param("b", np.zeros(3))
    >>> h_next = ug.tanh(x @ W.T + h @ U.T + b, name="h_next")
    >>> cell.feedback(h, h_next)
    >>> cell.output("y", h_next)
    >>> print(cell)  # doctest: +NORMALIZE_WHITESPACE
    cell elman
    x = input()  # shape (B, 2)
    W = param()  # shape (3, 2)
    n2 = transpose(W)  # shape (2, 3)
    n3 = matmul(x, n2)  # shape (B, 3)
    h = state()  # shape (B, 3)
    U = param()  # shape (3, 3)
    n6 = transpose(U)  # shape (3, 3)
    n7 = matmul(h, n6)  # shape (B, 3)
    n8 = add(n3, n7)  # shape (B, 3)
    b = param()  # shape (3,)
    n10 = add(n8, b)  # shape (B, 3)
    h_next = tanh(n10)  # shape (B, 3)
    h <- h_next  (delay z^-1)
    y = h_next
    """

    def __init__(self, name: str = "cell"):
        self.name = check_name(name, "cell name", optional=False)
        self._inputs: dict[str, Tensor] = {}
        self._states: dict[str, Tensor] = {}
        self._inits: dict[str, np.ndarray | None] = {}
        self._params: dict[str, Tensor] = {}
        self._feedback: dict[str, Tensor] = {}
        self._outputs: dict[str, Tensor] = {}

    # -- declaration ---------------------------------------------------------------------------
    def _claim(self, name: str, kind: str) -> None:
        check_name(name, f"cell {self.name!r}: {kind} name", optional=False)
        for other, table in (("input", self._inputs), ("state", self._states),
                             ("param", self._params), ("output", self._outputs)):
            if name in table:
                raise CellError(
                    f"cell {self.name!r}: the name {name!r} is already used by a {other}; "
                    f"give this {kind} another name"
                )

    def input(self, name: str, shape) -> Tensor:
        """Declare a per-step input of shape ``shape`` (without the batch axis).

        Returns a placeholder tensor to build the cell's equations with.
        """
        self._claim(name, "input")
        shape = _shape_tuple(shape, f"input {name!r}")
        data = np.full((1,) + shape, _PROBE)
        t = Tensor(data, Node("input", name=name, shape=data.shape, dtype="float64",
                              role="input"))
        self._inputs[name] = t
        return t

    def state(self, name: str, shape, init=None) -> Tensor:
        """Declare a recurrent state of shape ``shape`` (without the batch axis).

        The returned placeholder stands for the state's value at step t-1. ``init`` is the
        initial value (broadcast over the batch); zeros when ``None``. Close the loop with
        :meth:`feedback`.
        """
        self._claim(name, "state")
        shape = _shape_tuple(shape, f"state {name!r}")
        if init is not None:
            init = np.asarray(init, dtype=np.float64)
            try:
                np.broadcast_to(init, (1,) + shape)
            except ValueError:
                raise ShapeError(
                    f"cell {self.name!r}: init of state {name!r} has shape {init.shape}, which "
                    f"does not broadcast to the state's shape {shape}"
                ) from None
        data = np.full((1,) + shape, _PROBE)
        t = Tensor(data, Node("state", name=name, shape=data.shape, dtype="float64",
                              role="state"))
        self._states[name] = t
        self._inits[name] = init
        return t

    def param(self, name: str, value) -> Tensor:
        """Declare a shared weight (requires grad). ``value`` is an array or a leaf Tensor.

        A leaf Tensor becomes the parameter itself (its ``.grad`` receives the gradient), so
        one tensor can be shared by several cells.

        The same parameter feeds every step of an unrolled cell; its gradient is the sum of
        the steps' contributions.
        """
        self._claim(name, "param")
        if isinstance(value, Tensor):
            if value._parents:
                raise CellError(
                    f"cell {self.name!r}: param {name!r} must be a leaf tensor or an array, not "
                    f"the result of an op ({value.node.op}); pass its value with .detach()"
                )
            # the user's own tensor becomes the parameter: its .grad receives the gradient
            if value.node.op != "param":  # already a parameter elsewhere: keep its node
                value.node = Node("param", name=name, shape=value.shape,
                                  dtype=value.dtype.name, role="param")
            value.requires_grad = True
            self._params[name] = value
            return value
        else:
            data = np.asarray(value)
            if data.dtype.kind not in "f":
                data = data.astype(np.float64)
        t = Tensor(data, Node("param", name=name, shape=data.shape, dtype=data.dtype.name,
                              role="param"), (), True)
        self._params[name] = t
        return t

    def feedback(self, state: Tensor, next_value: Tensor) -> None:
        """Close a recurrent loop: ``next_value`` computed at step t is ``state`` at step t+1.

        This edge is a one-step delay (z^-1); it is the only way to make a cycle.
        """
        sname = self._state_name(state)
        if sname in self._feedback:
            raise CellError(
                f"cell {self.name!r}: state {sname!r} already has a feedback edge; each state "
                "takes exactly one next value"
            )
        if not isinstance(next_value, Tensor):
            raise CellError(
                f"cell {self.name!r}: feedback for state {sname!r} must be a Tensor built from "
                f"the cell's inputs and states, got {type(next_value).__name__}"
            )
        if next_value.shape != state.shape:
            raise ShapeError(
                f"cell {self.name!r}: feedback {next_value.node.label()} has shape "
                f"{_batched(next_value.shape)} but state {sname!r} has shape "
                f"{_batched(state.shape)}; the next value must have the state's shape"
            )
        self._check_body(next_value, f"feedback for state {sname!r}")
        self._feedback[sname] = next_value

    def output(self, name: str, value: Tensor) -> None:
        """Declare a per-step output; the unrolled net stacks it over steps."""
        self._claim(name, "output")
        if not isinstance(value, Tensor):
            raise CellError(
                f"cell {self.name!r}: output {name!r} must be a Tensor, got {type(value).__name__}"
            )
        self._check_body(value, f"output {name!r}")
        self._outputs[name] = value

    # -- inspection ----------------------------------------------------------------------------
    @property
    def inputs(self) -> dict[str, Tensor]:
        """Input placeholders, by name, in declaration order."""
        return dict(self._inputs)

    @property
    def states(self) -> dict[str, Tensor]:
        """State placeholders, by name, in declaration order."""
        return dict(self._states)

    @property
    def outputs(self) -> dict[str, Tensor]:
        """Output tensors, by name, in declaration order."""
        return dict(self._outputs)

    @property
    def feedbacks(self) -> dict[str, Tensor]:
        """Next-value tensor of each state, by state name."""
        return dict(self._feedback)

    def init_value(self, name: str):
        """The declared initial value of state ``name`` (``None`` means zeros)."""
        return self._inits[name]

    def parameters(self) -> dict[str, Tensor]:
        """The shared weights, by name (each a Tensor with ``.grad``)."""
        return dict(self._params)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameter values, by name."""
        return {k: v.data.copy() for k, v in self._params.items()}

    def load_state_dict(self, state: dict) -> None:
        """Load parameter values (numpy arrays, or anything with ``.numpy()``) by name.

        Shapes must match; unknown or missing names are errors that list what was expected.
        """
        missing = set(self._params) - set(state)
        unknown = set(state) - set(self._params)
        if missing or unknown:
            raise CellError(
                f"cell {self.name!r}: load_state_dict got unknown names {sorted(unknown)} and "
                f"is missing {sorted(missing)}; expected {list(self._params)}"
            )
        for k, v in state.items():
            arr = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            p = self._params[k]
            if arr.shape != p.data.shape:
                raise ShapeError(
                    f"cell {self.name!r}: parameter {k!r} has shape {p.data.shape}, "
                    f"the state dict gives {arr.shape}"
                )
            p.data[...] = arr

    def zero_grad(self) -> None:
        """Reset every parameter's ``.grad`` to ``None``."""
        for p in self._params.values():
            p.grad = None

    def validate(self) -> None:
        """Check the cell can be unrolled: every state has a feedback edge, there is something
        to compute, and every cycle passes through a delay. Raises :class:`CellError`."""
        missing = [s for s in self._states if s not in self._feedback]
        if missing:
            raise CellError(
                f"cell {self.name!r}: state {missing[0]!r} has no feedback edge; close the loop "
                f"with cell.feedback({missing[0]}, next_value)"
            )
        if not self._outputs and not self._feedback:
            raise CellError(
                f"cell {self.name!r} has no outputs and no states; declare cell.output(...)"
            )
        toposort(self.roots())  # raises CycleError on a loop without a delay

    def roots(self) -> list[Node]:
        """The nodes the cell computes: outputs, then next states."""
        return [t.node for t in self._outputs.values()] + [
            t.node for t in self._feedback.values()
        ]

    def graph(self) -> Graph:
        """The cell's (acyclic) body as a :class:`Graph`; feedback edges are listed apart.

        Shapes of nodes that carry the batch axis print as ``(B, ...)``."""
        g = Graph(self.roots())
        batched: set[int] = set()
        for n in g.nodes:
            if n.op in ("input", "state") or any(id(i) in batched for i in n.inputs):
                batched.add(id(n))
        g._batched = batched
        return g

    def leaf_tensors(self) -> dict[int, Tensor]:
        """Every leaf tensor of the body (params, constants, placeholders), by ``id`` of node."""
        roots = list(self._outputs.values()) + list(self._feedback.values())
        return {id(t.node): t for t in toposort(roots, lambda t: t._parents) if not t._parents}

    def batched(self) -> set[int]:
        """``id`` of every body node that depends on an input or a state (has a batch axis)."""
        return set(self.graph()._batched)

    def __str__(self) -> str:
        g = self.graph()
        lines = [f"cell {self.name}"]
        lines += [g.equation(n) for n in g.nodes]
        for s, nxt in self._feedback.items():
            lines.append(f"{s} <- {g.display_name(nxt.node)}  (delay z^-1)")
        for o, t in self._outputs.items():
            lines.append(f"{o} = {g.display_name(t.node)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<Cell {self.name!r}: inputs {list(self._inputs)}, states {list(self._states)}, "
            f"params {list(self._params)}, outputs {list(self._outputs)}>"
        )

    # -- helpers -------------------------------------------------------------------------------
    def _state_name(self, state) -> str:
        for k, v in self._states.items():
            if v is state or (isinstance(state, Tensor) and v.node is state.node):
                return k
        if isinstance(state, str) and state in self._states:
            return state
        label = state.node.label() if isinstance(state, Tensor) else repr(state)
        raise CellError(
            f"cell {self.name!r}: {label} is not a state of this cell; declare it with "
            "cell.state(name, shape) and pass the tensor it returns"
        )

    def _check_body(self, value: Tensor, what: str) -> None:
        own = {id(t.node) for t in self._inputs.values()} | {
            id(t.node) for t in self._states.values()
        }
        params = {id(t.node) for t in self._params.values()}
        depends = False
        for t in toposort([value], lambda t: t._parents):
            if t._parents:
                continue
            nid = id(t.node)
            if nid in own:
                depends = True
            elif t.node.op in ("input", "state"):
                raise CellError(
                    f"cell {self.name!r}: {what} uses {t.node.label()}, a placeholder of "
                    "another cell; build each cell from its own inputs and states"
                )
            elif nid not in params and t.requires_grad:
                raise CellError(
                    f"cell {self.name!r}: {what} uses the leaf tensor {t.node.label()}, which "
                    "requires grad but is not a parameter of this cell; declare it with "
                    "cell.param(name, array) so the unroller shares it over steps"
                )
        if not depends:
            raise CellError(
                f"cell {self.name!r}: {what} does not depend on any input or state of the "
                "cell, so it would be the same at every step; build it from the cell's inputs "
                "or states"
            )


def _shape_tuple(shape, what) -> tuple:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise CellError(f"{what}: shape must be an int or a tuple of ints, got {shape!r}") from None
    if any(s <= 0 for s in out):
        raise CellError(f"{what}: shape {out} must have positive sizes")
    return out


def _batched(shape) -> str:
    inner = ", ".join(str(s) for s in ("B",) + tuple(shape[1:]))
    return f"({inner},)" if len(shape) == 1 else f"({inner})"

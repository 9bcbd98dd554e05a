"""``Cell``: a recurrent cell, the one place in unrollgraph where a cycle lives.

A cell is an ordinary graph of tensor ops plus feedback edges. Each feedback edge
``state <- next_value`` is a one-step delay (z^-1): the value computed at step t becomes the
state at step t+1. :func:`unrollgraph.unroll` copies the cell into an acyclic graph.

Inside the cell, inputs and states are placeholders whose value has a batch of one (the real
batch axis is added at run time); parameters are shared weights.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping

import numpy as np

from .errors import CellError, CellWarning, InvalidNameError, ShapeError
from .graph import Graph, Node, check_name, toposort
from .ops import get_op
from .tensor import Tensor, _editing, _locked, as_real_array

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
        self._version = 0  # counts declarations: an unrolled net checks it on every call

    # -- parameters reached as attributes are not rebound ----------------------------------------
    _params_as_attributes = False  # ug.nn's cells read parameters as attributes (cell.weight_hh)

    def _attribute_param(self, item: str):
        """The parameter that ``cell.<item>`` reads, if it reads one, else ``None``: a name of
        a parameter where the cell reads parameters as attributes (``ug.nn``), or an attribute
        of a subclass that holds one of the cell's parameters (``self.W = self.param(...)``)."""
        d = self.__dict__
        params = d.get("_params")
        if not params:
            return None
        if item in params and type(self)._params_as_attributes and item not in d:
            return params[item]
        old = d.get(item)
        if isinstance(old, Tensor) and any(old is p for p in params.values()):
            return old
        return None

    def __setattr__(self, item, value):
        """``cell.weight_hh = new`` binds a new object to the name while the unrolled nets,
        the optimizers and ``cell.parameters()`` keep the parameter, so a training step
        written that way would silently do nothing: refused with a :class:`CellError` that
        gives the doors which change the parameter itself. Binding the parameter itself
        (what ``cell.weight_hh -= g`` under ``ug.no_grad()`` hands back) is accepted."""
        param = self._attribute_param(item) if item[:1] != "_" else None
        if param is not None and value is not param and not (
                isinstance(value, Tensor) and not type(self)._params_as_attributes
                and any(value is p for p in self._params.values())):
            # (an attribute of a subclass may move to another of the cell's parameters, as
            # self.W = self.param(f"W{layer}", ...) in a loop does)
            raise CellError(_rebind_message(self, item, value))
        if (param is value and type(self)._params_as_attributes
                and item not in self.__dict__):
            return  # (the attribute already reads the parameter: nothing to bind)
        object.__setattr__(self, item, value)

    def __delattr__(self, item):
        if (type(self)._params_as_attributes and item in self.__dict__.get("_params", {})
                and item not in self.__dict__):
            raise CellError(
                f"cell {self.name!r}: del cell.{item}: {item!r} is the cell's parameter, and "
                "a cell keeps its parameters (the unrolled nets read them)"
            )
        object.__delattr__(self, item)

    # -- declaration ---------------------------------------------------------------------------
    def _claim(self, name: str, kind: str) -> None:
        self._version += 1
        check_name(name, f"cell {self.name!r}: {kind} name", optional=False)
        for other, table in (("input", self._inputs), ("state", self._states),
                             ("param", self._params), ("output", self._outputs)):
            if name in table:
                raise CellError(
                    f"cell {self.name!r}: the name {name!r} is already used by "
                    f"{'an' if other[0] in 'aeiou' else 'a'} {other}; "
                    f"give this {kind} another name"
                )

    def input(self, name: str, shape) -> Tensor:
        """Declare a per-step input of shape ``shape`` (without the batch axis).

        Returns a placeholder tensor to build the cell's equations with.
        """
        self._claim(name, "input")
        shape = _shape_tuple(shape, f"cell {self.name!r}: cell.input({name!r}, shape)")
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
        shape = _shape_tuple(shape, f"cell {self.name!r}: cell.state({name!r}, shape)")
        if init is not None:
            # a copy of its own: editing the caller's array later changes nothing here
            init = _locked(as_real_array(
                init, f"cell {self.name!r}: cell.state({name!r}, shape, init=...)"))
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

        An array is copied (as ``torch.tensor`` does): the caller's array and the parameter
        never share memory, so an optimizer step on one cell moves neither the caller's array
        nor another cell built from it. The parameter's value is read-only; change it with
        ``p.data = new``, an optimizer or :meth:`load_state_dict`.

        The same parameter feeds every step of an unrolled cell; its gradient is the sum of
        the steps' contributions.

        Raises
        ------
        DTypeError
            For ``None``, strings, complex numbers or other non-real data.
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
        data = _locked(as_real_array(value, f"cell {self.name!r}: cell.param({name!r}, value)"))
        t = Tensor(data, Node("param", name=name, shape=data.shape, dtype=data.dtype.name,
                              role="param"), (), True)
        self._params[name] = t
        return t

    def feedback(self, state: Tensor, next_value: Tensor) -> None:
        """Close a recurrent loop: ``next_value`` computed at step t is ``state`` at step t+1.

        This edge is a one-step delay (z^-1); it is the only way to make a cycle.
        """
        self._version += 1
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
        nshape, sshape = next_value._data.shape, state._data.shape  # (the stand-ins' own)
        if nshape != sshape and nshape[:1] != (1,):
            raise ShapeError(
                f"cell {self.name!r}: feedback {next_value.node.label()} has shape "
                f"{nshape} while the cell is built on a batch of one, where state "
                f"{sname!r} has {sshape} = {_batched(sshape)}: an op moved or mixed "
                "the batch axis (axis 0), e.g. a transpose, reshape, stack or reduction over "
                "axis 0; work on the other axes (axis=1 or axis=-1)"
            )
        if nshape != sshape:
            raise ShapeError(
                f"cell {self.name!r}: feedback {next_value.node.label()} has shape "
                f"{_batched(nshape)} but state {sname!r} has shape "
                f"{_batched(sshape)}; the next value must have the state's shape"
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
        """The shared weights, by name (each a Tensor with ``.grad``), in a new dict: the
        tensors are the parameters themselves (change them in place: ``p.data = new``,
        ``with p.edit() as a: ...``, ``with ug.no_grad(): p -= lr * p.grad``, an optimizer),
        while putting another tensor in the dict changes only the dict."""
        return dict(self._params)

    def named_parameters(self, prefix: str = ""):
        """The parameters as ``(name, tensor)`` pairs, as PyTorch's ``named_parameters()``.

        The order is the order of declaration, which for the cells of :mod:`unrollgraph.nn` is
        PyTorch's (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``, layer by layer);
        the tensors are the parameters themselves, as :meth:`parameters` gives them.

        Parameters
        ----------
        prefix : str, optional
            Put before every name with a dot (``prefix="rnn"`` gives ``rnn.weight_ih``).

        Yields
        ------
        tuple of (str, Tensor)

        Raises
        ------
        InvalidNameError
            For a prefix that is not a string.

        Examples
        --------
        >>> import unrollgraph as ug
        >>> cell = ug.nn.RNNCell(2, 3, seed=0)
        >>> [(name, p.shape) for name, p in cell.named_parameters()]
        [('weight_ih', (3, 2)), ('weight_hh', (3, 3)), ('bias_ih', (3,)), ('bias_hh', (3,))]
        """
        return named(self._params, prefix, f"cell {self.name!r}")

    @property
    def dtype(self) -> np.dtype:
        """The float type the cell computes in: numpy's promotion of its parameters' and its
        array constants' types (float64 for a cell without either; a number written in the
        cell takes the run's type).

        An unrolled net of a float32 cell takes float32 inputs and initial states and returns
        float32 values; float64 ones raise :class:`~unrollgraph.DTypeError` (they would make the
        whole run float64), and numbers, lists and integer arrays become float32.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> ug.nn.GRUCell(2, 3, dtype=np.float32).dtype
        dtype('float32')
        """
        kinds = [p.dtype for p in self._params.values()]
        if self._outputs or self._feedback:
            kinds += [t.dtype for t in self.leaf_tensors().values()  # (constants: the leaves
                      if t.node.op not in ("input", "state", "param")  # that are none of these)
                      and t.ndim and t.dtype.kind == "f"]
        return np.result_type(*kinds) if kinds else np.dtype(np.float64)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameter values, by name: a snapshot (unlike PyTorch's state dict,
        whose tensors share the parameters' memory), so a later training step does not change
        it and an edit of it does not change the cell until it is loaded back with
        :meth:`load_state_dict`."""
        return {k: v._data.copy() for k, v in self._params.items()}

    def load_state_dict(self, state_dict) -> None:
        """Load parameter values (numpy arrays, or anything with ``.numpy()``) by name.

        All or nothing: every name, shape and value is checked first, and the parameters are
        assigned only if all of them pass, so a failure leaves the cell as it was. Each value
        is copied and converted to its parameter's float type (a PyTorch float32 or bfloat16
        state dict loads into a float64 cell, as PyTorch's ``load_state_dict`` converts); the
        parameters keep their dtype and shape. A graph
        computed before the load can no longer be differentiated (see ``Tensor.data``).

        Raises
        ------
        CellError
            For unknown or missing names (the message lists what was expected).
        ShapeError
            For a value whose shape differs from its parameter's.
        DTypeError
            For a value that is not made of real numbers (strings, ``None``, complex...).

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> cell = ug.nn.RNNCell(2, 3, seed=0)
        >>> sd = cell.state_dict()
        >>> sd["bias_hh"] = np.ones(3)
        >>> cell.load_state_dict(sd)
        >>> cell.bias_hh.data
        array([1., 1., 1.])
        """
        if not isinstance(state_dict, Mapping):
            raise CellError(
                f"cell {self.name!r}: load_state_dict(state_dict) needs a dict name -> array "
                f"(such as cell.state_dict()), got {type(state_dict).__name__}"
            )
        missing = [k for k in self._params if k not in state_dict]
        unknown = [k for k in state_dict if k not in self._params]
        if missing or unknown:
            hint = ""
            layered = {str(k).rsplit("_l", 1)[0] for k in unknown
                       if str(k).rsplit("_l", 1)[-1].isdigit()}
            if layered and set(missing) <= layered:
                hint = (
                    "; these are the names of PyTorch's multi-layer nn.RNN/LSTM/GRU (a layer "
                    "suffix _l0): load such a state_dict into ug.nn.RNN/LSTM/GRU, which take "
                    "it as it is, or take one layer's: {k[:-len('_l0')]: v for k, v in "
                    "sd.items() if k.endswith('_l0')}")
            raise CellError(
                f"cell {self.name!r}: load_state_dict got unknown names "
                f"{sorted(map(str, unknown))} and is missing {sorted(missing)}; expected "
                f"{list(self._params)}{hint}"
            )
        new = {}
        for k, p in self._params.items():
            v = state_dict[k]
            if not isinstance(v, Tensor) and hasattr(v, "detach") and hasattr(v, "cpu"):
                v = v.detach().cpu()  # a PyTorch tensor (its values, off its graph)
                if str(getattr(v, "dtype", "")) == "torch.bfloat16":
                    v = v.float()  # exact (numpy has no bfloat16); converted to p's type below
                v = v.numpy()
            arr = as_real_array(v, f"cell {self.name!r}: load_state_dict: state_dict[{k!r}]",
                                dtype=p.dtype)
            if arr.shape != p.shape:
                raise ShapeError(
                    f"cell {self.name!r}: load_state_dict: parameter {k!r} has shape {p.shape}, "
                    f"the state dict gives {arr.shape}; nothing was loaded"
                )
            new[k] = arr
        for k, arr in new.items():  # in place, as an optimizer step: tensors sharing the
            with _editing(self._params[k], "load_state_dict") as data:  # memory see it too
                data[...] = arr

    def zero_grad(self) -> None:
        """Reset every parameter's ``.grad`` to ``None``."""
        for p in self._params.values():
            p._grad = None  # (what the .grad setter does for None, without the property)

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
        self._check_read()
        self._check_batch_axis()

    def _check_read(self) -> None:
        """Refuse an input or state that nothing the cell computes reads, and warn of a
        constant that holds a placeholder's stand-in value.

        A placeholder's value is a stand-in, a batch of one of 0.5, used only to check
        shapes. ``h.data`` refuses to hand it out, but ``np.asarray(h)`` reads it, and
        ``ug.tensor(np.asarray(h))`` makes a constant, fixed once, that the unrolled
        net would use at every step instead of the state. A state (or input) that the
        outputs and next states do not read is the visible sign of it, or of a member
        declared by mistake. When a constant shaped as the placeholder (batch of one) holds
        its stand-in, the unread placeholder is certainly such a copy: :class:`CellError`.
        Otherwise a :class:`CellWarning`: a state that is only written is legitimate (it
        carries its last value out as the net's final state), and a constant of 0.5 may be
        meant.
        """
        read = {id(n) for n in toposort(self.roots())}
        copies = self._stand_in_copies()
        members = [(kind, k, t) for kind, table in (("state", self._states),
                                                   ("input", self._inputs))
                   for k, t in table.items()]

        def stand_in(k):
            return (f"{k}'s value is a stand-in (a batch of one, every number 0.5) that exists "
                    "only to check shapes while the cell is built; compute with the tensor "
                    f"{k} itself (e.g. {k} * 2, {k} @ W.T), which the unrolled net replaces by "
                    "each step's value")

        def unread(kind, k):
            return (f"cell {self.name!r}: {kind} {k!r} is declared but nothing the cell "
                    "computes (its outputs and next states) reads it")

        for kind, k, t in members:  # the stand-in stood in for the placeholder: wrong
            if id(t.node) not in read and id(t.node) in copies:
                raise CellError(
                    f"{unread(kind, k)}, while the constant {copies[id(t.node)]} holds its "
                    f"stand-in value: it was made from np.asarray({k}), {k}.detach() or a copy "
                    "of one. "
                    f"{stand_in(k)}")
        self._check_params_read(read)
        warned = set()
        for kind, k, t in members:
            if id(t.node) not in read:  # (a state only written carries its last value out)
                warnings.warn(
                    f"{unread(kind, k)}: each step ignores its value. If a value was made "
                    f"from np.asarray({k}): {stand_in(k)}. If the cell does not need {kind} {k!r}, "
                    "do not declare it", CellWarning, stacklevel=_user_level())
            elif id(t.node) in copies and copies[id(t.node)] not in warned:
                warned.add(copies[id(t.node)])
                warnings.warn(
                    f"cell {self.name!r}: the constant {copies[id(t.node)]} holds exactly the "
                    f"stand-in value of {kind} {k!r} (its shape, every number 0.5): if it was "
                    f"made from np.asarray({k}), the unrolled net uses that stand-in at every "
                    "step. "
                    f"{stand_in(k)}", CellWarning, stacklevel=_user_level())

    def _check_params_read(self, read: set) -> None:
        """Refuse a parameter that nothing the cell computes reads while a constant of the
        body holds its value (``h @ U.data.T``), and warn of any other unread parameter.

        ``U.data`` is the parameter's value as a plain array: an op given it (or a view of
        it, ``U.data.T``, ``U.data[:4]``) makes a constant, a copy fixed when the cell is
        built, so the gradient meant for ``U`` is lost and a training step of ``U`` leaves
        the net unchanged. An unread parameter beside a constant that equals its value or a
        view of it (the value itself, its transpose, a reshape, a block of rows or columns,
        a row or a column) is certainly that: :class:`CellError` naming both. An unread
        parameter alone, and such a constant beside a parameter that is read, are a
        :class:`CellWarning` (the parameter would get no gradient; the constant may be
        meant). Constants of one repeated number (zeros, ones) are not compared: they are
        too often meant.
        """
        params = [(k, t) for k, t in self._params.items()]
        if not params:
            return
        consts = []
        for t in self.leaf_tensors().values():
            data = t._data
            if (t.node.op in ("input", "state", "param") or t.node.role == "condition"
                    or type(data) is not np.ndarray or data.dtype.kind != "f" or data.size < 2
                    or np.all(data == data.flat[0])):
                continue
            consts.append(t)
        g = None
        for k, p in params:
            unread = id(p.node) not in read
            found = None
            for c in consts:
                how = _view_of(c._data, p._data, k)
                if how is not None:
                    if g is None:
                        g = self.graph()
                    found = (g.display_name(c.node), how)
                    break
            fix = (f"compute with the tensor {k} itself (e.g. h @ {k}.T, {k}[:4]), which the "
                   f"graph differentiates; {k}.data is its value as a plain array, and an op "
                   "given it makes a constant")
            if unread and found:
                raise CellError(
                    f"cell {self.name!r}: parameter {k!r} is declared but nothing the cell "
                    f"computes (its outputs and next states) reads it, while the constant "
                    f"{found[0]} holds exactly {found[1]}: it was made from {k}.data, a copy "
                    f"fixed when the cell was built, so {k}'s gradient would be lost and a "
                    f"training step of {k} would not change the net. {fix[0].upper()}{fix[1:]}")
            if unread:
                warnings.warn(
                    f"cell {self.name!r}: parameter {k!r} is declared but nothing the cell "
                    "computes (its outputs and next states) reads it: it gets no gradient, "
                    f"and training leaves it as it is. If a value was made from {k}.data, "
                    f"{fix}. If the cell does not need parameter {k!r}, do not declare it",
                    CellWarning, stacklevel=_user_level())
            elif found:
                warnings.warn(
                    f"cell {self.name!r}: the constant {found[0]} holds exactly {found[1]}, "
                    f"the value parameter {k!r} has now: if it was made from {k}.data, it is "
                    f"a copy fixed when the cell was built, which gets no gradient and no "
                    f"training step; {fix}", CellWarning, stacklevel=_user_level())

    def _stand_in_copies(self) -> dict:
        """``id`` of a placeholder's node -> the label of a constant of the body that holds
        exactly its stand-in value (its shape, batch of one, every number ``_PROBE``)."""
        found: dict = {}
        g = None
        holders = list(self._states.values()) + list(self._inputs.values())
        for t in self.leaf_tensors().values():
            if t.node.op in ("input", "state", "param") or t.node.role == "condition":
                continue
            data = t._data
            if type(data) is not np.ndarray or data.ndim < 2 or data.shape[0] != 1:
                continue
            for ph in holders:
                if data.shape == ph._data.shape and np.all(data == _PROBE):
                    if g is None:
                        g = self.graph()
                    found.setdefault(id(ph.node), g.display_name(t.node))
        return found

    def _check_batch_axis(self) -> None:
        """Refuse an op that mixes the sequences of a batch.

        Inside a cell, axis 0 of every value computed from an input or a state is the batch
        axis, and each sequence must be computed on its own: a reduction over axis 0 (or over
        every axis), a stack, transpose or reshape that moves it, or a softmax along it would
        silently mix the sequences of a batch (the cell is built on a batch of one, where
        nothing shows). The body is evaluated on a batch of three distinct rows and on the
        middle row alone; the first batched value whose leading size is not the batch, or
        whose middle row differs from the row computed alone, is named.
        """
        g = self.graph()
        batched = g._batched
        leaves = self.leaf_tensors()
        rng = np.random.default_rng(0)
        big: dict[int, object] = {}
        alone: dict[int, object] = {}
        with np.errstate(all="ignore"):
            for n in g.nodes:
                i = id(n)
                if n.is_leaf:
                    if i in batched:
                        rows = rng.uniform(0.1, 0.9, (3,) + tuple(n.shape[1:])).astype(n.dtype)
                        big[i], alone[i] = rows, rows[1:2]
                    else:
                        big[i] = alone[i] = leaves[i]._data
                    continue
                forward = get_op(n.op).forward
                try:
                    a = forward(*[alone[id(k)] for k in n.inputs], **n.attrs)
                except Exception:
                    return  # fails on a batch of one too: not a question of the batch axis
                alone[i] = a
                try:
                    b = forward(*[big[id(k)] for k in n.inputs], **n.attrs)
                except Exception:
                    b = None
                big[i] = b
                if i not in batched:
                    continue
                sa, sb = np.shape(a), np.shape(b)
                if (b is not None and sa[:1] == (1,) and sb == (3,) + sa[1:]
                        and np.allclose(b[1:2], a, rtol=1e-9, atol=1e-12, equal_nan=True)):
                    continue
                if n.op in _LOSSES:
                    raise CellError(self._loss_in_cell(g, n))
                attrs = ", ".join(f"{k}={v!r}" for k, v in n.attrs.items())
                fixed = [k for k in n.inputs if id(k) not in batched and len(k.shape) >= 2
                         and k.shape[0] == 1]
                if b is None and fixed:  # (a constant with a batch of one of its own)
                    k = fixed[0]
                    raise CellError(
                        f"cell {self.name!r}: {g.display_name(n)} (op {n.op}"
                        f"{', ' + attrs if attrs else ''}) fails for a batch of more than one "
                        f"sequence: it reads {g.display_name(k)}, a constant of shape "
                        f"{tuple(k.shape)}, whose leading 1 is a batch of one of its own (the "
                        "cell is built on a batch of one, where nothing shows). Make the "
                        "constant from a value of the cell, which carries the batch axis "
                        "(e.g. zeros as h[:, :2] * 0), or give it the feature axes only, "
                        f"shape {tuple(k.shape[1:])}, where it broadcasts"
                    )
                loss_hint = (
                    "; if it computes a loss, apply the loss outside the cell, to the net's "
                    "outputs (cell.output(...) what it reads; outputs, state = net(xs); "
                    "loss = ...(outputs ...))"
                    if n.op in ("sum", "mean") and n.attrs.get("axis") is None else "")
                raise CellError(
                    f"cell {self.name!r}: {g.display_name(n)} (op {n.op}"
                    f"{', ' + attrs if attrs else ''}) mixes the sequences of a batch: inside a "
                    "cell, axis 0 of every value computed from an input or a state is the batch "
                    "axis (printed B), and each sequence must be computed on its own. Reduce, "
                    "stack, transpose, reshape or normalise over the other axes (for a (B, n) "
                    "value: axis=1 or axis=-1"
                    + ("; a reshape gives the batch axis as -1, e.g. (-1, n))"
                       if n.op == "reshape" else ")") + loss_hint
                )

    def _loss_in_cell(self, g: Graph, n: Node) -> str:
        """The message for a loss computed inside the cell: where it belongs, and how."""
        fn, target, shape = _LOSSES[n.op]
        read = n.inputs[0]
        outputs = {id(t.node): k for k, t in self._outputs.items()}
        name = outputs.get(id(read)) or read.name or "y"
        declare = ("" if id(read) in outputs else
                   f"cell.output({name!r}, {g.display_name(read)}); ")
        # the outputs the cell will have: its own but the loss, and the one to declare
        kept = [t for t in self._outputs.values() if t.node is not n]
        picked = "outputs" if len(kept) + bool(declare) == 1 else f"outputs[{name!r}]"
        return (
            f"cell {self.name!r}: {g.display_name(n)} (op {n.op}) is a loss, and a loss "
            "averages over the sequences of a batch, while inside a cell each sequence must "
            "be computed on its own (axis 0 of every value computed from an input or a state "
            "is the batch axis, printed B). A loss belongs outside the cell: make what it "
            f"compares an output of the cell and apply the loss to the net's outputs, which "
            f"hold every step: {declare}net = ug.unroll(cell, steps=T); outputs, state = "
            f"net(xs); loss = ug.{fn}({picked}, {target}) with {target} shaped {shape}"
        )

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

    def __call__(self, *args, **kwargs):
        """A cell is the graph of one step, not a function: calling it (PyTorch's
        ``cell(x, h)``) raises :class:`~unrollgraph.CellError` saying to unroll it.

        Raises
        ------
        CellError
            Always; the message names the cell and shows ``ug.unroll(cell, steps=T)``.

        Examples
        --------
        >>> import numpy as np, unrollgraph as ug
        >>> cell = ug.nn.RNNCell(2, 3, seed=0)
        >>> cell(np.ones((1, 2)))
        Traceback (most recent call last):
        ...
        unrollgraph.errors.CellError: cell 'RNNCell' is called ...
        """
        raise CellError(
            f"cell {self.name!r} is called like a function (PyTorch's cell(x, h)), but a cell "
            "here is the graph of one step: unroll it and call the net, net = "
            "ug.unroll(cell, steps=T); out, h = net(xs, state=h0) with xs of shape "
            "(T, B, input) (steps=1 for a single step); the outputs hold every step")

    def __repr__(self) -> str:
        return (
            f"<Cell {self.name!r}: inputs {list(self._inputs)}, states {list(self._states)}, "
            f"params {list(self._params)}, outputs {list(self._outputs)}>"
        )

    # -- structure checks (an unrolled net is built for the cell as it was) -------------------
    def _structure(self) -> tuple:
        """``(version, names)``: the declaration count and the names of each kind of member."""
        return self._version, tuple(
            (kind, tuple(table)) for kind, table in (
                ("input", self._inputs), ("state", self._states), ("param", self._params),
                ("feedback", self._feedback), ("output", self._outputs)))

    def _check_structure(self, recorded: tuple) -> tuple:
        """Raise :class:`CellError` if members were declared since ``recorded`` (from
        :meth:`_structure`) was taken; else return the current structure to record instead
        (a declaration that failed counts but changes nothing)."""
        now = self._structure()
        changes = []
        for (kind, before), (_kind, after) in zip(recorded[1], now[1]):
            added = [k for k in after if k not in before]
            if added:
                what = "feedback for state" if kind == "feedback" else kind
                changes.append(", ".join(f"{what} {k!r}" for k in added))
        if changes:
            raise CellError(
                f"cell {self.name!r} has changed since it was unrolled: {'; '.join(changes)} "
                "added. An unrolled net is built for the cell as it was; call ug.unroll(cell, "
                "steps) again for a net of the cell as it is now"
            )
        return now

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


# the losses: each averages over every row it is given; the function, the name of what it
# compares with and that argument's shape for outputs shaped (T, B, ...)
_LOSSES = {
    "cross_entropy": ("cross_entropy", "labels", "(T, B) (integer classes)"),
    "mse_loss": ("mse_loss", "targets", "(T, B, ...) like the outputs"),
    "binary_cross_entropy_with_logits": ("binary_cross_entropy_with_logits", "targets",
                                         "(T, B, ...) like the outputs"),
}


def named(params: Mapping, prefix, who: str):
    """``(prefix.name, tensor)`` for each item of ``params`` (a dict name -> tensor, in its
    order): what every ``named_parameters()`` yields. The prefix is checked at the call, not
    at the first ``next()``."""
    if not isinstance(prefix, str):
        raise InvalidNameError(
            f"{who}: named_parameters(prefix=...) takes a string put before each name with a "
            f"dot (as PyTorch's), got {type(prefix).__name__} {prefix!r}"
        )
    lead = prefix + "." if prefix else ""
    return ((lead + k, p) for k, p in params.items())


def _shape_tuple(shape, what) -> tuple:
    """A shape given by the user as a tuple of positive Python ints (an int alone is a 1-d
    shape). Floats, bools, strings and sizes below 1 are refused, never rounded."""
    items = (shape,) if isinstance(shape, (int, np.integer)) else shape
    if isinstance(items, (str, bytes, Mapping)) or not hasattr(items, "__iter__"):
        raise ShapeError(
            f"{what}: shape must be a positive int or a tuple of positive ints such as (3,), "
            f"got {shape!r}"
        )
    items = tuple(items)
    for s in items:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)):
            raise ShapeError(
                f"{what}: shape {shape!r} has the size {s!r} ({type(s).__name__}); each size "
                "must be a positive int, e.g. (3,) or (2, 4)"
            )
        if s < 1:
            raise ShapeError(
                f"{what}: shape {shape!r} has the size {s}; each size must be a positive int "
                "(a size of 0 holds nothing)"
            )
    return tuple(int(s) for s in items)


def _user_level() -> int:
    """The ``stacklevel`` that points a warning at the caller's line: the first frame outside
    the package (the caller of ``ug.unroll``, an export...)."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
        frame, level = frame.f_back, level + 1
    return level


def _batched(shape) -> str:
    inner = ", ".join(str(s) for s in ("B",) + tuple(shape[1:]))
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def _rebind_message(cell: Cell, item: str, value) -> str:
    """Why ``cell.<item> = value`` is refused, and the doors that change a parameter."""
    what = type(value).__name__
    if isinstance(value, Tensor):
        what = (f"a tensor computed by op {value.node.op!r}" if value._parents else
                "a new tensor" + (f" ({value.name!r})" if value.name else ""))
    elif isinstance(value, np.ndarray):
        what = f"an array of shape {value.shape}"
    return (
        f"cell {cell.name!r}: cell.{item} = {what}: cell.{item} is the cell's parameter, and "
        "rebinding the attribute would leave the parameter that the unrolled nets, the "
        "optimizers and cell.parameters() read unchanged (a training step written so would "
        f"silently do nothing). Change the parameter's value instead: cell.{item}.data = new "
        f"(same shape), with cell.{item}.edit() as a: a -= lr * g, with ug.no_grad(): "
        f"cell.{item} -= lr * cell.{item}.grad, cell.load_state_dict({{...}}), or an "
        "optimizer (ug.optim.SGD(cell.parameters(), lr=...))"
    )


def _view_of(c: np.ndarray, p: np.ndarray, k: str) -> str | None:
    """How the constant value ``c`` reads parameter ``k``'s value ``p``, as the user would
    have written it (``U.data.T``, ``U.data[0:4]``...), or ``None``: ``c`` equals ``p``, its
    transpose, a reshape of it, a block of whole rows or columns of ``p`` or of ``p.T``, or one
    row or column of a 2-d ``p``. A constant made from ``p`` keeps ``p``'s float type."""
    if c.dtype != p.dtype:
        return None
    if c.shape == p.shape and np.array_equal(c, p):
        return f"{k}.data"
    if p.ndim >= 2 and c.shape == p.shape[::-1] and np.array_equal(c, p.T):
        return f"{k}.data.T"
    if c.size == p.size:
        return f"a reshape of {k}.data" if np.array_equal(c.ravel(), p.ravel()) else None
    if c.size > p.size or p.ndim > 2:
        return None
    first = c.flat[0]
    if p.ndim == 1:
        if c.ndim == 1:
            for i in np.flatnonzero(p == first):
                if i + c.size <= p.size and np.array_equal(p[i:i + c.size], c):
                    return f"{k}.data[{i}:{i + c.size}]"
        return None
    for src, name in ((p, f"{k}.data"), (p.T, f"{k}.data.T")):
        rows, cols = src.shape
        if c.ndim == 2 and c.shape[1] == cols and c.shape[0] < rows:
            n = c.shape[0]
            for i in np.flatnonzero(src[:rows - n + 1, 0] == first):
                if np.array_equal(src[i:i + n], c):
                    return f"{name}[{i}:{i + n}]"
        if c.ndim == 2 and c.shape[0] == rows and c.shape[1] < cols:
            n = c.shape[1]
            for j in np.flatnonzero(src[0, :cols - n + 1] == first):
                if np.array_equal(src[:, j:j + n], c):
                    return f"{name}[:, {j}:{j + n}]"
        if c.ndim == 1 and c.size == cols and name.endswith("data"):
            for i in np.flatnonzero(src[:, 0] == first):
                if np.array_equal(src[i], c):
                    return f"{name}[{i}]"
        if c.ndim == 1 and c.size == rows and name.endswith("data"):
            for j in np.flatnonzero(src[0, :] == first):
                if np.array_equal(src[:, j], c):
                    return f"{name}[:, {j}]"
    return None

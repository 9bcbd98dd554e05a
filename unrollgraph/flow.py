"""Gradient flow through time: how the gradient of a loss travels back through an unrolled net.

:func:`gradient_flow` reads a run after ``loss.backward()`` (``net.last_run``) and measures, for
every step t and every state (h, and c for an LSTM):

* ``‖∂L/∂h_t‖``, the norm of the state's gradient (what :meth:`Run.state_grads` gives), split
  into the part that comes from the loss at step t itself (*direct*) and the part carried back
  from the losses of later steps (*carried*);
* ``‖∂h_T/∂h_t‖₂``, the spectral norm of the Jacobian of the last state with respect to the
  state after step t: the product of the one-step Jacobians from t to T, each computed exactly
  by backpropagating one unit vector per state element through a one-step copy of the cell;
* per-step contributions of each shared weight (the terms of the sum that makes its gradient),
  as norms and as shares of their sum;
* for an Elman-type cell ``h_t = act(... + h_{t-1} W^T)``: the largest singular value σ₁ of the
  recurrent weight and the bound of Pascanu, Mikolov and Bengio (2013), "On the difficulty of
  training recurrent neural networks": with γ bounding the activation's derivative (1 for tanh
  and relu, 1/4 for sigmoid), ``σ₁ < 1/γ`` is *sufficient* for the gradient to vanish and
  ``σ₁ > 1/γ`` is *necessary* for it to explode.

:func:`compare_flows` draws several runs on one scale. Plots need matplotlib (a dependency of
the package); ``to_dataframe`` needs pandas, which is optional.
"""

from __future__ import annotations

import math
import textwrap
import weakref

import numpy as np

from .errors import UnrollGraphError
from .tensor import no_grad, tensor

__all__ = ["GradientFlow", "gradient_flow", "compare_flows", "TruncationError",
           "truncation_error", "tbptt_truncation_error"]

# the largest derivative of an activation that ends a recurrence (Pascanu et al.'s gamma)
_GAMMA = {"tanh": 1.0, "relu": 1.0, "sigmoid": 0.25}
# bytes of kept values a Jacobian pass may use at once (rows of seeds are chunked to fit)
_JACOBIAN_BUDGET = 1 << 28
# helper nets (same cell, no truncation), built once per user net
_HELPERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class GradientFlow:
    """How the gradient flowed through one run of an unrolled net (see :func:`gradient_flow`).

    For a cell with one state the per-step quantities are arrays of shape (T,); for a cell with
    several states (an LSTM's h and c) they are dicts state name -> array (T,).

    Attributes
    ----------
    steps : int
        T, the number of steps.
    states : list of str
        The cell's state names.
    state_grad_norms : ndarray (T,) or dict
        ``‖∂L/∂h_t‖``: the 2-norm of the gradient of the loss with respect to the state after
        step t, over the whole batch (zero where truncation stops the gradient).
    direct_grad_norms, carried_grad_norms : ndarray (T,) or dict
        Norms of the two parts of ``∂L/∂h_t``: the part from the loss at step t (its outputs at
        step t, and at the last step the final state), and the part carried back from later
        steps (``∂L/∂h_t = direct + carried`` as vectors).
    jacobian_norms : ndarray (T,) or dict
        ``‖∂h_T/∂h_t‖₂``: the spectral norm (largest singular value) of the Jacobian of the
        state after the last step with respect to the state after step t, both states of the
        same name (the other states at step t held fixed). Samples of a batch do not interact,
        so the Jacobian of the whole batch is block-diagonal and its spectral norm is the
        largest over the samples; the per-sample values are in
        ``jacobian_norms_per_sample``. It is the derivative of the forward map, which
        truncation does not change. ``1`` at ``t = T - 1``. With ``lengths=``, each sample is
        measured to its own last real step (past it its state is only carried, an identity
        that would hide any decay), and this is the largest over the longest measured
        samples (``measured_samples``); NaN at steps past their length.
    joint_jacobian_norms : ndarray (T,)
        The same for all states together (for one state, equal to ``jacobian_norms``).
    jacobian_norms_per_sample : ndarray (T, B) or dict
        NaN for samples not measured (``samples=``) and for steps past a sample's length.
    lengths : list of int or None
        The run's sequence lengths (``net(xs, lengths=...)``), else None.
    measured_samples : list of int
        The samples the aggregate ``jacobian_norms`` is taken over.
    weight_contribution_norms : dict
        Parameter name -> (T,): the Frobenius norm of step t's term of its gradient
        (:meth:`Run.step_contributions`).
    weight_contribution_shares : dict
        Parameter name -> (T,): those norms divided by their sum (they sum to 1; all zero for
        a parameter that received no gradient, NaN when the norms are not finite). The terms
        can cancel in the gradient, so this compares the terms' sizes; it is not a share of
        the gradient's norm.
    share_weight : str or None
        The parameter whose shares the table shows: the recurrent weight (the parameter met
        in a product on the path from a state to its next value; the first of several, as in
        a stacked cell), else the first parameter (``share_identified`` is then False).
    recurrent_params : list of str
        Every parameter found on such a path.
    recurrent_weight : str or None
        The recurrent weight matrix of an Elman-type cell (``weight_hh``), or the one named.
    bound_applies : bool
        Whether the cell's next state has the form ``act(h_{t-1} W^T + ...)`` the σ₁ bound
        is stated for, with this weight. For a weight named on another cell (residual,
        gated), σ₁ is reported but no regime is claimed.
    sigma_max : float or None
        Its largest singular value σ₁.
    gamma : float or None
        The bound on the derivative of the activation that ends the recurrence.
    regime : {"vanishing", "may explode", "borderline"} or None
        ``"vanishing"`` when σ₁ < 1/γ (sufficient for vanishing gradients), ``"may explode"``
        when σ₁ > 1/γ (necessary, not sufficient, for exploding ones), ``None`` when the bound
        does not apply (no recurrent weight found, gated or residual cells).
        :meth:`regime_text` also says when the measured Jacobian norms contradict the
        regime (a γ that does not bound the activation's derivative).
    truncate : int or None
        The run's in-graph truncation window.
    """

    def __init__(self, steps, states, grad, direct, carried, jac, joint, jac_samples,
                 contrib, recurrent_weight, sigma_max, gamma, truncate, cell_name,
                 bound_applies=True, lengths=None, measured_samples=None, share_weight=None,
                 recurrent_params=()):
        self.steps = steps
        self.states = list(states)
        self._grad, self._direct, self._carried = grad, direct, carried
        self._jac, self._jac_samples = jac, jac_samples
        self.joint_jacobian_norms = joint
        self.weight_contribution_norms = contrib
        self.weight_contribution_shares = {k: _shares(v) for k, v in contrib.items()}
        self.recurrent_weight = recurrent_weight
        self.sigma_max = sigma_max
        self.gamma = gamma
        self.truncate = truncate
        self.cell_name = cell_name
        self.bound_applies = bool(bound_applies) and recurrent_weight is not None
        self.lengths = lengths
        self.measured_samples = measured_samples
        # the weight whose step shares the table shows: the recurrent one when it is known
        self.recurrent_params = list(recurrent_params)
        if share_weight is None and self.recurrent_params:
            share_weight = self.recurrent_params[0]
        self.share_identified = share_weight is not None
        self.share_weight = share_weight if share_weight is not None else next(iter(contrib),
                                                                               None)
        if sigma_max is None or gamma is None or not self.bound_applies:
            self.regime = None
        elif sigma_max * gamma < 1.0:
            self.regime = "vanishing"
        elif sigma_max * gamma > 1.0:
            self.regime = "may explode"
        else:
            self.regime = "borderline"

    def _form(self, d: dict):
        return d[self.states[0]] if len(self.states) == 1 else dict(d)

    @property
    def state_grad_norms(self):
        return self._form(self._grad)

    @property
    def direct_grad_norms(self):
        return self._form(self._direct)

    @property
    def carried_grad_norms(self):
        return self._form(self._carried)

    @property
    def jacobian_norms(self):
        return self._form(self._jac)

    @property
    def jacobian_norms_per_sample(self):
        return self._form(self._jac_samples)

    # -- text ----------------------------------------------------------------------------------
    def measured_decay(self) -> float:
        """The largest measured ``‖∂h_T/∂h_t‖₂`` over the steps before the last (NaN if
        none was measured): above 1, the state's influence grew going back at some step."""
        a = np.asarray(self._jac[self.states[0]], dtype=float)
        end = self.steps
        if self.lengths is not None and self.measured_samples:
            end = min(end, max(self.lengths[b] for b in self.measured_samples))
        a = a[:end - 1]
        a = a[np.isfinite(a)]
        return float(a.max()) if a.size else float("nan")

    def regime_text(self) -> str:
        """One sentence on the Pascanu et al. (2013) bound for these weights, checked
        against the measured Jacobian norms."""
        if self.sigma_max is None:
            return ("no recurrent weight matrix of the form h_t = act(... + h_{t-1} W^T) was "
                    "found, so the sigma_1 bound does not apply")
        w, s, g = self.recurrent_weight, self.sigma_max, self.gamma
        head = f"sigma_1({w}) = {s:.4g}, gamma = {g:g}, 1/gamma = {1 / g:g}: "
        m = self.measured_decay()
        seen = (f"; measured max_t |d{self.states[0]}_T/d{self.states[0]}_t|_2 = {m:.3g}"
                if math.isfinite(m) else "")
        if not self.bound_applies:
            return head + (f"the bound holds for h_t = act(h_{{t-1}} W^T + ...) only, and the "
                           f"next state of {self.cell_name!r} is not of that form (a residual "
                           f"or gated path), so it states no regime here" + seen)
        if self.regime == "vanishing":
            text = head + "sigma_1 < 1/gamma, sufficient for vanishing gradients"
            if math.isfinite(m) and m > 1.0 + 1e-9:
                text += (seen + " > 1, which contradicts it: is gamma a bound on the "
                         "activation's derivative?")
            return text
        if self.regime == "may explode":
            return head + ("sigma_1 > 1/gamma, necessary (not sufficient) for exploding "
                           "gradients")
        return head + "sigma_1 = 1/gamma, on the border"

    def _columns(self):
        cols = []
        many = len(self.states) > 1
        for s in self.states:
            tag = f"[{s}]" if many else ""
            cols += [(f"|dL/d{s}_t|", self._grad[s]), (f"direct{tag}", self._direct[s]),
                     (f"carried{tag}", self._carried[s]),
                     (f"|d{s}_T/d{s}_t|_2", self._jac[s])]
        w = self.share_weight
        if w is not None:
            cols.append((f"|term_t({w})|/sum", self.weight_contribution_shares[w]))
        return cols

    def _notes(self) -> list:
        """Lines saying how lengths were treated and what the share column is."""
        out = []
        if self.lengths is not None and len(set(self.lengths)) > 1:
            longest = max(self.lengths[b] for b in self.measured_samples)
            out.append(
                f"lengths {self.lengths}: each sample's |d{self.states[0]}_T/d"
                f"{self.states[0]}_t|_2 is taken to its own last real step (nan past it, "
                f"in jacobian_norms_per_sample); the column is the max over the longest "
                f"measured samples {self.measured_samples} (length {longest})")
        w = self.share_weight
        if w is not None:
            out.append(f"|term_t({w})|/sum: the norm of step t's term of dL/d{w} over the sum "
                       "of those norms (terms can cancel: not a share of |dL/d" + w + "|)")
            if not self.share_identified:
                out.append(f"({w} is the first parameter: no recurrent weight was identified; "
                           "weight_contribution_shares has every parameter)")
            elif len(self.recurrent_params) > 1 and w == self.recurrent_params[0]:
                out.append(f"({w} is the first of the recurrent weights "
                           f"{self.recurrent_params}; weight_contribution_shares has every "
                           "parameter)")
        return out

    def _rows(self, max_rows):
        T = self.steps
        if max_rows is None or T <= max_rows:
            return list(range(T))
        return sorted(set(np.linspace(0, T - 1, max_rows).round().astype(int).tolist()))

    def table(self, max_rows: int | None = 20) -> str:
        """The per-step numbers as aligned text, with a line on the σ₁ bound.

        Parameters
        ----------
        max_rows : int or None
            Show at most this many steps, evenly spaced, first and last included (``None``:
            every step).

        Returns
        -------
        str
        """
        if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(
                max_rows, (int, np.integer)) or max_rows < 1):
            raise UnrollGraphError(
                f"table(max_rows=...): pass a positive int (rows to show) or None (every "
                f"step), got {max_rows!r}"
            )
        cols = self._columns()
        lines = [f"gradient flow of {self.cell_name!r} over T={self.steps} steps"
                 + (f", truncated to the last {self.truncate}" if self.truncate else "")]
        for text in [self.regime_text()] + self._notes():
            lines += textwrap.wrap(text, 99, subsequent_indent="  ")
        # one block per state (5 columns each), so a table stays within 100 columns
        n = len(self.states) * 4
        blocks = [cols[i:i + 4] for i in range(0, n, 4)]
        blocks[-1] = blocks[-1] + cols[n:]
        rows = self._rows(max_rows)
        for k, block in enumerate(blocks):
            head = ["t"] + [c[0] for c in block]
            body = [[str(t)] + [_num(c[1][t]) for c in block] for t in rows]
            widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
            lines.append("")
            if len(blocks) > 1:
                lines.append(f"state {self.states[k]}:")
            lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
            lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in body]
        return "\n".join(lines)

    def to_markdown(self, max_rows: int | None = 20) -> str:
        """The per-step numbers as a Markdown table, after a line on the σ₁ bound."""
        if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(
                max_rows, (int, np.integer)) or max_rows < 1):
            raise UnrollGraphError(
                f"to_markdown(max_rows=...): pass a positive int (rows to show) or None (every "
                f"step), got {max_rows!r}"
            )
        cols = self._columns()
        head = ["t"] + [c[0].replace("|", "‖") for c in cols]
        lines = [self.regime_text()] + self._notes() + ["", "| " + " | ".join(head) + " |",
                 "|" + "---:|" * len(head)]
        for t in self._rows(max_rows):
            lines.append("| " + " | ".join([str(t)] + [_num(c[1][t]) for c in cols]) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (f"<GradientFlow {self.cell_name!r}: T={self.steps}, states {self.states}, "
                f"sigma_max={self.sigma_max}, regime={self.regime!r}>")

    def to_dataframe(self):
        """The per-step numbers as a pandas DataFrame, one row per step (needs pandas).

        Raises
        ------
        UnrollGraphError
            pandas is not installed (it is optional: ``pip install pandas``).
        """
        try:
            import pandas as pd
        except ImportError:
            raise UnrollGraphError(
                "GradientFlow.to_dataframe() needs pandas, which unrollgraph does not require: "
                "pip install pandas, or use .table() / .to_markdown()"
            ) from None
        data = {"t": np.arange(self.steps)}
        for s in self.states:
            data[f"grad_norm_{s}"] = self._grad[s]
            data[f"direct_{s}"] = self._direct[s]
            data[f"carried_{s}"] = self._carried[s]
            data[f"jacobian_norm_{s}"] = self._jac[s]
        for k in self.weight_contribution_norms:
            data[f"contribution_{k}"] = self.weight_contribution_norms[k]
            data[f"share_{k}"] = self.weight_contribution_shares[k]
        return pd.DataFrame(data).set_index("t")

    # -- pictures ------------------------------------------------------------------------------
    def plot(self, ax=None, parts: bool | None = None, title: str | None = None):
        """Draw the norms against t on a log scale, annotated with σ₁ and γ.

        Line style says the quantity: ``‖∂L/∂h_t‖`` (solid, thick), its part carried back from
        later steps (dashed) and its direct part from the loss at step t (dots),
        ``‖∂h_T/∂h_t‖₂`` (dash-dot) and the norm of the recurrent weight's step-t term
        (dotted, grey). For one state the Jacobian has its own colour; for several, colour
        says the state. A carried line equal to ``‖∂L/∂h_t‖`` (a loss at the last step only)
        is not drawn twice: the legend says so. Zeros cannot sit on a log scale: they are
        marked with a triangle on the bottom axis, and steps truncation cuts off are shaded.
        With ``lengths=``, the Jacobian norms of the longest samples are drawn (see
        :func:`gradient_flow`) and the title says so.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Draw into this axes (legend and σ₁ box then stay inside it); a new figure
            otherwise (legend and box to the right of the plot).
        parts : bool, optional
            Also draw the direct and carried parts of ``∂L/∂h_t`` (default: for cells with
            one or two states; a stacked cell's picture would hold too many lines).
        title : str, optional
            Wrapped to the width of the axes.

        Returns
        -------
        matplotlib.figure.Figure
            Save it with ``fig.savefig("flow.png")`` (``.svg``, ``.pdf`` work too).
        """
        from matplotlib.lines import Line2D

        plt = _pyplot()
        given = ax is not None
        fig, ax = _axes(plt, ax, (10, 5.2))
        colours = _colours(plt)
        t = np.arange(self.steps)
        many = len(self.states) > 1
        if parts is None:
            parts = len(self.states) <= 2
        handles = []
        styles = {"grad": {"lw": 2.6, "ls": "-"}, "carried": {"lw": 1.3, "ls": (0, (5, 2))},
                  "direct": {"lw": 0, "marker": "o", "ms": 4},
                  "jac": {"lw": 2.0, "ls": (0, (7, 2, 1.5, 2))}}
        same_carried = []
        for k, s in enumerate(self.states):
            c = colours[k % len(colours)]
            cj = c if many else colours[1]
            g = np.asarray(self._grad[s], dtype=float)
            name = f"‖∂L/∂{s}_t‖"
            carried_is_all = parts and self.steps > 1 and np.allclose(
                self._carried[s][:-1], g[:-1], rtol=1e-9, atol=0.0)
            if carried_is_all:
                same_carried.append(s)
            ax.plot(t, _positive(g), color=c, **styles["grad"],
                    label=name + ("\n(before T−1 all of it is carried\nfrom later steps)"
                                  if carried_is_all and not many else ""))
            _mark_zeros(ax, t, g, c, self.steps, self.truncate)
            if parts and not carried_is_all:
                ax.plot(t, _positive(self._carried[s]), color=c, alpha=0.85,
                        **styles["carried"],
                        label=None if many else "carried from later steps")
            if parts:
                ax.plot(t, _positive(self._direct[s]), color=c, alpha=0.75, **styles["direct"],
                        label=None if many else "direct: loss at step t")
            ax.plot(t, _positive(self._jac[s]), color=cj, **styles["jac"],
                    label=None if many else f"‖∂{s}_T/∂{s}_t‖₂")
        w = self.share_weight
        if w is not None:
            v = self.weight_contribution_norms[w]
            ax.plot(t, _positive(v), color="0.35", lw=1.8, ls=":",
                    label=f"‖step-t term of ∂L/∂{w}‖")
            _mark_zeros(ax, t, v, "0.35", self.steps, self.truncate)
        if many:  # colour = state, style = quantity
            handles = [Line2D([], [], color=colours[k % len(colours)], lw=6,
                              label=f"state {s}") for k, s in enumerate(self.states)]
            what = [("grad", "‖∂L/∂state_t‖"), ("carried", "carried from later steps"),
                    ("direct", "direct: loss at step t"), ("jac", "‖∂state_T/∂state_t‖₂")]
            for key, lab in what:
                if key in ("carried", "direct") and not parts:
                    continue
                if key == "carried" and len(same_carried) == len(self.states):
                    lab = "(carried = ‖∂L/∂state_t‖ before T−1: not drawn)"
                handles.append(Line2D([], [], color="0.2", **styles[key], label=lab))
            if parts and same_carried and len(same_carried) < len(self.states):
                handles.append(Line2D([], [], color="none", label="(no carried line for "
                                      + ", ".join(same_carried) + ": = ‖∂L/∂state_t‖)"))
            handles += [h for h in ax.get_legend_handles_labels()[0]
                        if h.get_label().startswith("‖step-t")]
        else:
            handles = ax.get_legend_handles_labels()[0]
        if ax.collections:  # zero markers
            handles.append(Line2D([], [], color="0.3", lw=0, marker="v", ms=7,
                                  label="zero (off the log scale)"))
        _shade_cut(ax, self.steps, self.truncate, handles)
        _decorate(ax, self.steps)
        head = title or (f"Gradient flow through time: {self.cell_name}, T = {self.steps}"
                         + (f", lengths {self.lengths}: ‖∂h_T/∂h_t‖₂ of the longest"
                            if self.lengths is not None and len(set(self.lengths)) > 1
                            else ""))
        _set_title(ax, head, 14)
        box = {"boxstyle": "round", "fc": "white", "ec": "0.6", "alpha": 0.9}
        if given:  # inside the axes, so a grid of panels does not overlap
            ax.text(0.02, 0.03, _bound_label(self), transform=ax.transAxes, ha="left",
                    va="bottom", fontsize=8, bbox=box)
            ax.legend(handles=handles, fontsize=8, loc="upper left", framealpha=0.85)
        else:
            ax.text(1.02, 0.0, _bound_label(self), transform=ax.transAxes, ha="left",
                    va="bottom", fontsize=11, bbox=box)
            ax.legend(handles=handles, fontsize=11, loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), frameon=False)
            fig.tight_layout()
        return fig


def _shares(v):
    """Each step's part of the sum of the per-step norms: NaN where the norms are not finite
    (NaN gradients), zeros for a weight that received no gradient."""
    total = float(v.sum())
    if not math.isfinite(total):
        return np.full_like(v, np.nan, dtype=float)
    return v / total if total > 0 else np.zeros_like(v, dtype=float)


def _recurrent_params(cell, among):
    """The parameters on the path from a state to its own next value: each one that meets
    that state (or a value computed from it) in a product, as U in ``h_{t-1} @ U``, on the
    way to the state's next value (an LSTM's and GRU's ``weight_hh``; one per layer of a
    stacked cell). In the cell's order of parameters."""
    params = {id(t.node): k for k, t in cell.parameters().items() if k in among}
    found = set()
    for name, state in cell.states.items():
        order, stack, seen = [], [(cell.feedbacks[name].node, False)], set()
        while stack:  # post-order over the next value's ancestors: inputs first
            n, done = stack.pop()
            if done:
                order.append(n)
                continue
            if id(n) in seen:
                continue
            seen.add(id(n))
            stack.append((n, True))
            stack.extend((i, False) for i in n.inputs)
        reads = set()
        for n in order:
            if n is state.node or any(id(i) in reads for i in n.inputs):
                reads.add(id(n))
        for n in order:
            if n.op in ("matmul", "mul", "einsum", "tensordot", "dot"):
                ins = [i.inputs[0] if i.op == "transpose" and i.inputs else i
                       for i in n.inputs]
                ws = [params[id(i)] for i in ins if id(i) in params]
                if ws and any(id(i) in reads for i in ins if id(i) not in params):
                    found.update(ws)
    return [k for k in cell.parameters() if k in found]


def _num(v) -> str:
    v = float(v)
    return "0" if v == 0 else f"{v:.3e}"


def _positive(a):
    a = np.asarray(a, dtype=float)
    return np.where(a > 0, a, np.nan)


def _bound_label(flow) -> str:
    if flow.sigma_max is None:
        return "σ₁ bound: not applicable\n(no Elman-type recurrent weight)"
    s, g = flow.sigma_max, flow.gamma
    if not flow.bound_applies:
        return (f"σ₁({flow.recurrent_weight}) = {s:.3g},  γ = {g:g}\nbound not applicable:\n"
                f"next state is not\nact(W h + …)\nmeasured max ‖∂h_T/∂h_t‖₂\n"
                f"= {flow.measured_decay():.3g}")
    verdict = {"vanishing": "σ₁ < 1/γ: vanishing (sufficient)",
               "may explode": "σ₁ > 1/γ: exploding possible (necessary)",
               "borderline": "σ₁ = 1/γ: border"}[flow.regime]
    text = f"σ₁({flow.recurrent_weight}) = {s:.3g},  γ = {g:g}\n{verdict}\n(Pascanu et al. 2013)"
    m = flow.measured_decay()
    if flow.regime == "vanishing" and math.isfinite(m) and m > 1.0 + 1e-9:
        text += f"\nbut measured max ‖∂h_T/∂h_t‖₂\n= {m:.3g} > 1: check γ"
    return text


def _pyplot():
    """matplotlib's Figure class; figures are made without pyplot, so no window opens, no
    backend is chosen, and nothing stays registered after the figure is dropped."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # a dependency of the package; only a broken install lacks it
        raise UnrollGraphError(
            "plotting needs matplotlib, a dependency of unrollgraph: pip install matplotlib"
        ) from None
    return Figure


def _axes(plt, ax, size):
    if ax is not None:
        return ax.figure, ax
    fig = plt(figsize=size, dpi=110)  # not registered with pyplot: no window, no leak
    return fig, fig.add_subplot()


def _colours(plt):
    return ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf",
            "#e377c2"]


def _shade_cut(ax, steps, truncate, handles=None):
    """Shade the steps truncation cuts off; the legend (not a label on the lines) says so."""
    if truncate and steps - truncate > 0:
        from matplotlib.patches import Patch

        cut = steps - truncate
        ax.axvspan(-0.5, cut - 0.5, color="0.9", zorder=0)
        if handles is not None:
            handles.append(Patch(color="0.9", label=f"steps 0–{cut - 1} truncated: no "
                                 "gradient"))


def _mark_zeros(ax, x, y, colour, steps=None, truncate=None):
    """A triangle on the bottom axis at each zero of ``y`` (a log scale drops them), except
    in the shaded steps truncation cuts off."""
    y = np.asarray(y, dtype=float)
    zero = y == 0
    if truncate and steps:
        zero &= np.asarray(x) >= steps - truncate
    if zero.any():
        ax.scatter(np.asarray(x)[zero], np.zeros(int(zero.sum())), marker="v", s=55,
                   color=colour, transform=ax.get_xaxis_transform(), clip_on=False,
                   zorder=5)


def _set_title(ax, text, size):
    """The title, wrapped to the width of the axes (a long one is not cut off)."""
    fig = ax.figure
    width_in = ax.get_position().width * fig.get_figwidth()
    chars = max(20, int(width_in * 72 / (0.56 * size)))
    ax.set_title("\n".join(textwrap.fill(p, chars) for p in text.split("\n")), fontsize=size)


def _decorate(ax, steps, xlabel="step t"):
    from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, LogLocator, MaxNLocator

    ax.set_yscale("log")
    ax.set_xlabel(xlabel, fontsize=13)
    ax.set_ylabel("norm (log scale)", fontsize=13)
    ax.tick_params(labelsize=11)
    ax.set_xlim(-0.5, steps - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=12))
    lo, hi = ax.get_ylim()
    decades = math.log10(hi / lo) if lo > 0 else math.inf
    if decades < 1.3:  # about one decade: plain numbers, several between powers of ten
        plain = FuncFormatter(lambda v, _: f"{v:.2g}")
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(1.5, 2, 3, 4, 5, 6, 7, 8, 9),
                                              numticks=12))
        ax.yaxis.set_minor_formatter(plain)
        ax.yaxis.set_major_formatter(plain)
    elif decades < 3.5:  # a few decades: label 2 and 5 too
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0), numticks=12))
        ax.yaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False,
                                                             minor_thresholds=(10, 10)))
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.1)


# -- measuring -------------------------------------------------------------------------------

def gradient_flow(run, weights=None, recurrent_weight: str | None = None,
                  gamma: float | None = None, samples=None) -> GradientFlow:
    """Measure how the gradient flowed back through time in one run of an unrolled net.

    Parameters
    ----------
    run : Run
        ``net.last_run`` after ``loss.backward()`` on a loss computed from the net's outputs
        (or final state).
    weights : list of str, optional
        The parameters whose per-step contributions to measure (default: every parameter that
        requires grad). Each costs one more backward pass.
    recurrent_weight : str, optional
        The recurrent weight matrix for the σ₁ bound. Found by itself for a cell whose next
        state is ``tanh``, ``sigmoid`` or ``relu`` of a sum with ``h_{t-1} @ W.T`` (or
        ``h_{t-1} @ W``), as :class:`~unrollgraph.nn.RNNCell`. Named (with ``gamma``) for a
        cell of another form (residual, gated), σ₁ is reported but no regime is claimed: the
        bound does not hold there, and the report gives the measured Jacobian norm instead.
    gamma : float, optional
        Bound on the activation's derivative (1 for tanh and relu, 1/4 for sigmoid); found with
        the recurrent weight.
    samples : int, sequence of int or None
        The batch samples whose Jacobians to compute (default: all). Each sample costs one
        forward and backward pass of a batch of S rows, S the total state size. The others
        are NaN in ``jacobian_norms_per_sample``.

    Returns
    -------
    GradientFlow

    Raises
    ------
    UnrollGraphError
        ``run`` is not a run, or has no gradients yet (call ``loss.backward()`` first).
    CellError
        ``weights`` or ``recurrent_weight`` names no parameter of the cell.

    Notes
    -----
    The Jacobians are exact: each one-step Jacobian ``∂h_t/∂h_{t-1}`` is computed on a
    one-step copy of the cell (one unit vector per state element pushed back to its input
    state, every step of a sample in one batch, chunked to keep memory under about 256 MB),
    and ``∂h_T/∂h_t`` is their product. The cost per sample is one such batch of
    ``(T - 1) * S`` rows plus T products of S x S matrices, S the total state size. The run,
    the net and the parameters' ``.grad`` are not changed.

    With ``lengths=`` (sequences of different lengths in one batch), sample b's Jacobian
    norms are those of ``∂h_{L_b-1}/∂h_t``, to its own last real step, as running it alone
    gives; ``jacobian_norms`` is the largest over the longest samples, and the table and plot
    say so.

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> cell = ug.nn.RNNCell(2, 4, seed=0)
    >>> cell.weight_hh.data = 0.5 * np.eye(4)
    >>> net = ug.unroll(cell, steps=6)
    >>> out, h = net(np.random.default_rng(0).normal(size=(6, 3, 2)))
    >>> out.sum().backward()
    >>> flow = ug.gradient_flow(net.last_run)
    >>> flow.state_grad_norms.shape, round(flow.sigma_max, 3), flow.regime
    ((6,), 0.5, 'vanishing')
    >>> bool(np.all(np.diff(flow.jacobian_norms) > 0))      # shrinks going back in time
    True
    """
    from .unroll import Run

    if not isinstance(run, Run):
        raise UnrollGraphError(
            f"gradient_flow() needs a run of an unrolled net (net.last_run after "
            f"loss.backward()), got {type(run).__name__}"
        )
    run._need_backward()
    net = run.net
    cell = net.cell
    names = list(cell.states)
    if not names:
        raise UnrollGraphError(
            f"gradient_flow(): cell {cell.name!r} has no state, so nothing flows through time"
        )
    T = net.steps
    grads = {s: run.state_grads(s) for s in names}
    grad_norms = {s: _step_norms(g) for s, g in grads.items()}
    direct = _direct_parts(run, names)
    direct_norms = {s: _step_norms(direct[s]) for s in names}
    carried = {s: grads[s] - direct[s] for s in names}
    for s in names:  # nothing comes after the last step (exactly, not to rounding)
        carried[s][-1] = 0.0
    carried_norms = {s: _step_norms(carried[s]) for s in names}
    jac, joint, per_sample, measured = _jacobian_norms(run, names, samples)
    params = cell.parameters()
    weights = _weights(cell, weights, "gradient_flow")
    contrib = {}
    for k in weights:
        if not params[k].requires_grad:
            contrib[k] = np.zeros(T)
            continue
        parts = run.step_contributions(k)
        contrib[k] = _step_norms(parts)
    rw, g = _recurrence(cell, recurrent_weight, gamma)
    sigma = None
    if rw is not None:
        sigma = float(np.linalg.svd(np.asarray(params[rw].data, dtype=float),
                                    compute_uv=False)[0])
    elman = rw is not None and _recurrence(cell, None, None)[0] == rw
    lengths = None
    if net.masked and run.lengths is not None:
        lengths = [int(v) for v in np.asarray(run.lengths)]
    flow = GradientFlow(T, names, grad_norms, direct_norms, carried_norms, jac, joint,
                        per_sample, contrib, rw, sigma, g, net.truncate, cell.name,
                        bound_applies=elman, lengths=lengths, measured_samples=measured,
                        share_weight=rw if rw in contrib else None,
                        recurrent_params=_recurrent_params(cell, contrib))
    return flow


def _step_norms(a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return np.sqrt((a.reshape(a.shape[0], -1) ** 2).sum(axis=1))


def _weights(cell, weights, who):
    """The parameter names to measure: all that require grad, or those given (one name or a
    list), each checked."""
    params = cell.parameters()
    if weights is None:
        return [k for k, p in params.items() if p.requires_grad]
    if isinstance(weights, str):
        weights = [weights]
    try:
        weights = list(weights)
    except TypeError:
        raise UnrollGraphError(
            f"{who}(): weights must be a parameter name or a list of them, got "
            f"{type(weights).__name__}"
        ) from None
    for k in weights:
        if not isinstance(k, str):
            raise UnrollGraphError(
                f"{who}(): weights must hold parameter names (str), got {k!r}; the cell's "
                f"parameters are {list(params)}"
            )
        _check_param(cell, k, "weights")
    return weights


def _check_param(cell, name, what):
    from .errors import CellError

    if name not in cell.parameters():
        raise CellError(
            f"gradient_flow(): {what} names {name!r}, which is not a parameter of cell "
            f"{cell.name!r}; its parameters are {list(cell.parameters())}"
        )


def _helper(net, steps):
    """An unrolled copy of ``net``'s cell over ``steps`` steps, without truncation (cached)."""
    from .unroll import Unrolled

    nets = _HELPERS.setdefault(net, {})
    if steps not in nets:
        nets[steps] = Unrolled(net.cell, steps, masked=net.masked)
    return nets[steps]


def _states_before(run, names):
    """The state before each step: (T, B, ...) per state (the initial state, then h_0...)."""
    net = run.net
    out = {}
    for s in names:
        before = [run.value(net.init_nodes[s])] + [
            run.value(n) for n in net.state_nodes[s][:-1]
        ]
        out[s] = np.stack([np.asarray(b) for b in before])
    return out


def _inputs(run):
    net = run.net
    return {k: np.stack([np.asarray(run.value(n)) for n in nodes])
            for k, nodes in net.input_nodes.items()}


def _call_helper(helper, xs, states, lengths, need_inputs):
    """Call ``helper`` without recording a graph, with gradients wanted at the initial state
    (and the inputs); returns its run."""
    with no_grad():
        x_in = {k: tensor(v, requires_grad=need_inputs) for k, v in xs.items()}
        s_in = tuple(tensor(v, requires_grad=True) for v in states)
        helper(x_in if x_in else None, state=s_in,
               lengths=None if lengths is None else lengths)
    return helper.last_run


def _same_run(again, kept, net, who):
    """Raise if recomputing the run's states from its inputs gives other numbers: the
    parameters (or inputs) have changed since, and the run's gradients belong to old ones."""
    tol = 1e-4 if kept.dtype == np.float32 else 1e-9
    if not np.allclose(again, kept, rtol=tol, atol=tol, equal_nan=True):
        raise UnrollGraphError(
            f"{who}(): the states of this run of {net.cell.name!r} no longer follow from its "
            "inputs: the parameters have changed since the run (an optimizer step?). Call the "
            "net and loss.backward() again, then measure, before updating the weights"
        )


def _direct_parts(run, names):
    """∂ℓ_t/∂h_t for every t: the gradient the state after step t gets from the loss at step t
    alone, by one pass of a one-step copy of the cell over all T steps as one batch."""
    net = run.net
    T, B = net.steps, run.batch
    xs = _inputs(run)
    before = _states_before(run, names)
    n_out = len(net.output_nodes)
    seeds = run.seeds
    flat = {k: v.reshape((1, T * B) + v.shape[2:]) for k, v in xs.items()}
    start = [before[s].reshape((T * B,) + before[s].shape[2:]) for s in names]
    lengths = None
    if net.masked:
        lengths = (np.arange(T)[:, None] < np.asarray(run.lengths)[None, :]).astype(int).ravel()
    one = _helper(net, 1)
    r1 = _call_helper(one, flat, start, lengths, True)
    for s in names:  # the one-step copy must reproduce the run's states
        again = np.asarray(r1.value(one.state_nodes[s][0])).reshape(before[s].shape)
        kept = np.stack([np.asarray(run.value(n)) for n in net.state_nodes[s]])
        _same_run(again, kept, net, "gradient_flow")
    s1 = []
    for g in seeds[:n_out]:
        s1.append(None if g is None else np.asarray(g).reshape((1, T * B) + g.shape[2:]))
    for j in range(len(names)):
        g = seeds[n_out + j] if n_out + j < len(seeds) else None
        if g is None:
            s1.append(None)
            continue
        full = np.zeros((T,) + np.shape(g), dtype=np.asarray(g).dtype)
        full[-1] = g
        s1.append(full.reshape((T * B,) + full.shape[2:]))
    r1.backward(s1)
    out = {}
    for s in names:
        d = r1.state_grads(s)[0].reshape((T, B) + before[s].shape[2:])
        if net.truncate is not None:
            d[: T - net.truncate] = 0.0  # cut steps send no gradient
        out[s] = d
    return out


def _jacobian_norms(run, names, samples):
    """Spectral norms of ∂s_T/∂s_t per state block (and for all states together), per sample.

    The one-step Jacobians A_t = ∂s_t/∂s_{t-1} come from a one-step copy of the cell: one
    unit vector per element of s_t pushed back to its initial state (the initial state is the
    independent variable, so a state that reads another state of the same step, as an LSTM's
    h reads c, is differentiated through it). Then ∂s_T/∂s_t = A_{T-1} ... A_{t+1}."""
    net = run.net
    T, B = net.steps, run.batch
    if samples is None:
        samples = list(range(B))
    elif isinstance(samples, (int, np.integer)) and not isinstance(samples, bool):
        samples = [samples]
    elif not isinstance(samples, (list, tuple, range, np.ndarray)):
        raise UnrollGraphError(
            f"gradient_flow(): samples must be None, an int or a list of ints, got "
            f"{type(samples).__name__}"
        )
    samples = list(samples)
    if not samples:
        raise UnrollGraphError("gradient_flow(): samples is empty; give at least one index")
    for b in samples:
        if isinstance(b, (bool, np.bool_)) or not isinstance(b, (int, np.integer)):
            raise UnrollGraphError(
                f"gradient_flow(): samples must hold batch indices (int), got {b!r}"
            )
        if not 0 <= b < B:
            raise UnrollGraphError(
                f"gradient_flow(): samples has {b}, outside the batch of {B}; pass indices "
                f"from 0 to {B - 1}"
            )
    xs = _inputs(run)
    before = _states_before(run, names)
    sizes = [int(np.prod(before[s].shape[2:])) for s in names]
    S = sum(sizes)
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    one = _helper(net, 1)
    per_row = 8 * sum(int(np.prod(n.shape[1:])) for n in one.nodes
                      if n.shape is not None and len(n.shape) >= 1)
    budget = max(S, _JACOBIAN_BUDGET // max(1, per_row))
    lengths_all = None if not net.masked or run.lengths is None else np.asarray(run.lengths)
    # a sample not measured has no value (NaN, not 0); steps past a sample's length too
    per_sample = {s: np.full((T, B), np.nan) for s in names}
    joint = np.full((T, B), np.nan)
    for b in samples:
        # each sample is measured to its own last real step: past it the state is only
        # carried (an identity Jacobian), which would hide how the gradient vanishes
        end = T if lengths_all is None else max(1, min(T, int(lengths_all[b])))
        pairs = [(t, i) for t in range(1, end) for i in range(S)]  # rows: step t, element i
        A = np.zeros((end, S, S))
        for a in range(0, len(pairs), budget):
            chunk = pairs[a:a + budget]
            ts = np.array([p[0] for p in chunk])
            ii = np.array([p[1] for p in chunk])
            n = len(chunk)
            x_b = {k: v[ts, b][None] for k, v in xs.items()}
            s_b = [before[s][ts, b] for s in names]
            lengths = None if lengths_all is None else (ts < lengths_all[b]).astype(int)
            r = _call_helper(one, x_b, s_b, lengths, False)
            e = np.zeros((n, S))
            e[np.arange(n), ii] = 1.0
            seeds = [None] * len(net.output_nodes)
            for j in range(len(names)):
                seeds.append(e[:, offs[j]:offs[j + 1]].reshape(s_b[j].shape)
                             .astype(s_b[j].dtype))
            r.backward(seeds)
            for j, s in enumerate(names):
                g = r.grad(one.init_nodes[s])
                g = np.zeros((n, sizes[j])) if g is None else np.asarray(g).reshape(n, -1)
                A[ts, ii, offs[j]:offs[j + 1]] = g
        # P = ∂s_T/∂s_t is kept as scale * Q with max |Q| = 1: products that vanish would
        # otherwise reach subnormal numbers, on which matrix routines crawl
        Q, log_scale = np.eye(S), 0.0
        block = 64  # steps whose products are kept at once, to take their norms together
        for hi in range(end - 1, -1, -block):
            ts = list(range(hi, max(hi - block, -1), -1))
            Qs = np.empty((len(ts), S, S))
            logs = np.empty(len(ts))
            for k, t in enumerate(ts):
                if t < end - 1:
                    Q = Q @ A[t + 1]
                    m = float(np.abs(Q).max())
                    if m > 0 and math.isfinite(m):
                        Q /= m
                        log_scale += math.log(m)
                Qs[k], logs[k] = Q, log_scale
            scale = np.exp(logs)
            for j, s in enumerate(names):
                per_sample[s][ts, b] = scale * _spectral(Qs[:, offs[j]:offs[j + 1],
                                                            offs[j]:offs[j + 1]])
            joint[ts, b] = (per_sample[names[0]][ts, b] if len(names) == 1
                            else scale * _spectral(Qs))
    take = np.array(samples)
    if lengths_all is not None:  # the aggregate is over the longest of the measured samples
        longest = lengths_all[take].max()
        take = take[lengths_all[take] == longest]
    jac = {s: per_sample[s][:, take].max(axis=1) for s in names}
    return jac, joint[:, take].max(axis=1), per_sample, [int(b) for b in take]


def _spectral(M) -> np.ndarray:
    """Largest singular value of each matrix of a stack (n, a, b): the square root of the
    largest eigenvalue of its Gram matrix (accurate to rounding for the largest one, and
    several times faster than a full SVD)."""
    ok = np.isfinite(M).all(axis=(1, 2))  # NaN or inf (from NaN or inf states): no norm
    out = np.full(M.shape[0], np.nan)
    M = M[ok]
    G = M.transpose(0, 2, 1) @ M if M.shape[2] <= M.shape[1] else M @ M.transpose(0, 2, 1)
    if len(G):
        out[ok] = np.sqrt(np.maximum(np.linalg.eigvalsh(G)[:, -1], 0.0))
    return out


def _recurrence(cell, name, gamma):
    """The recurrent weight and gamma: given, or found for an Elman-type cell."""
    if name is not None:
        _check_param(cell, name, "recurrent_weight")
        if gamma is None:
            found_w, found_g = _recurrence(cell, None, None)
            gamma = found_g if found_w == name else None
        if gamma is None:
            raise UnrollGraphError(
                f"gradient_flow(): recurrent_weight={name!r} needs gamma=, the bound on the "
                "derivative of the activation (1 for tanh and relu, 0.25 for sigmoid)"
            )
        g = float(gamma)
        if not (math.isfinite(g) and g > 0):
            raise UnrollGraphError(f"gradient_flow(): gamma must be a number > 0, got {gamma!r}")
        return name, g
    if gamma is not None:
        raise UnrollGraphError(
            "gradient_flow(): gamma= goes with recurrent_weight=, the weight it bounds"
        )
    if len(cell.states) != 1:
        return None, None
    (state_name, state), = cell.states.items()
    nxt = cell.feedbacks[state_name].node
    if nxt.op not in _GAMMA:
        return None, None
    params = {id(t.node): k for k, t in cell.parameters().items()}
    found = []
    stack, seen = [nxt], set()
    while stack:  # matmuls upstream of the activation that read the state directly
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.op == "matmul" and any(i is state.node for i in n.inputs):
            other = [i for i in n.inputs if i is not state.node]
            if len(other) == 1:
                w = other[0]
                if w.op == "transpose" and w.inputs:
                    w = w.inputs[0]
                if id(w) in params:
                    found.append(params[id(w)])
        stack.extend(n.inputs)
    if len(set(found)) != 1:
        return None, None
    return found[0], _GAMMA[nxt.op]


# -- comparing -------------------------------------------------------------------------------

def compare_flows(runs, labels=None, state=None, quantities=("grad", "jacobian"),
                  title: str | None = None, align: str | None = None, colors=None):
    """Draw the gradient flow of several runs on one log scale, side by side.

    Parameters
    ----------
    runs : sequence of Run or GradientFlow
        Runs after ``loss.backward()`` (measured with :func:`gradient_flow`), or flows already
        measured.
    labels : sequence of str, optional
        One label per run (default ``"run 0"``, ``"run 1"``...).
    state : str or sequence of str, optional
        Which state to draw for each run (one name for all, or one per run); default each
        run's first state. Compare an RNN's ``h`` with an LSTM's ``c``: ``["h", "c"]``.
    quantities : sequence of {"grad", "jacobian"}
        One panel each: ``‖∂L/∂h_t‖`` and ``‖∂h_T/∂h_t‖₂``. The panels share their y axis.
    title : str, optional
    align : {"start", "end"}, optional
        ``"start"``: x is the step t. ``"end"``: x is the number of steps before each run's
        last step, ``T - 1 - t`` (the last step at the right, at 0), so runs of different
        lengths are compared at the same distance from their loss. Default: ``"end"`` when
        the runs' T differ, else ``"start"``. The x axis says which.
    colors : sequence or dict, optional
        One colour per run, or a dict label -> colour (the same run label gets the same
        colour in every picture); default a fixed palette in run order.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    UnrollGraphError
        No runs, labels or states not one per run, an unknown quantity, state or ``align``,
        or ``colors`` without a colour for every run.

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> runs = []
    >>> for scale in (0.5, 1.5):
    ...     cell = ug.nn.RNNCell(1, 3, seed=0)
    ...     cell.weight_hh.data = scale * np.eye(3)
    ...     net = ug.unroll(cell, steps=5)
    ...     out, h = net(np.ones((5, 1, 1)))
    ...     out.sum().backward()
    ...     runs.append(net.last_run)
    >>> fig = ug.compare_flows(runs, ["W = 0.5 I", "W = 1.5 I"])
    >>> len(fig.axes)
    2
    """
    if isinstance(runs, GradientFlow) or type(runs).__name__ == "Run":
        runs = [runs]
    if runs is None or isinstance(runs, (str, bytes)) or not hasattr(runs, "__iter__"):
        raise UnrollGraphError(
            f"compare_flows(): runs must be a list of runs (net.last_run after "
            f"loss.backward()) or GradientFlow objects, got {type(runs).__name__}"
        )
    runs = list(runs)
    if not runs:
        raise UnrollGraphError("compare_flows(): give at least one run")
    for k, r in enumerate(runs):
        if not (isinstance(r, GradientFlow) or type(r).__name__ == "Run"):
            raise UnrollGraphError(
                f"compare_flows(): runs[{k}] is a {type(r).__name__}; pass net.last_run (after "
                "loss.backward()) or ug.gradient_flow(run) for each run"
            )
    if isinstance(labels, str):
        raise UnrollGraphError(
            f"compare_flows(): labels must be a list of str, one per run, got the string "
            f"{labels!r}"
        )
    labels = [f"run {k}" for k in range(len(runs))] if labels is None else list(labels)
    if len(labels) != len(runs):
        raise UnrollGraphError(
            f"compare_flows(): {len(runs)} runs but {len(labels)} labels; give one label per run"
        )
    flows = [r if isinstance(r, GradientFlow) else gradient_flow(r) for r in runs]
    if state is None or isinstance(state, str):
        states = [state or f.states[0] for f in flows]
    else:
        states = list(state)
        if len(states) != len(flows):
            raise UnrollGraphError(
                f"compare_flows(): {len(flows)} runs but {len(states)} states; give one state "
                "name, or one per run"
            )
    for f, s, lab in zip(flows, states, labels):
        if s not in f.states:
            raise UnrollGraphError(
                f"compare_flows(): run {lab!r} has no state {s!r}; its states are {f.states}"
            )
    what = {"grad": ("‖∂L/∂{s}_t‖", "_grad"), "jacobian": ("‖∂{s}_T/∂{s}_t‖₂", "_jac")}
    quantities = [quantities] if isinstance(quantities, str) else list(quantities)
    for q in quantities:
        if q not in what:
            raise UnrollGraphError(
                f"compare_flows(): unknown quantity {q!r}; use 'grad' and/or 'jacobian'"
            )
    if align is None:
        align = "end" if len({f.steps for f in flows}) > 1 else "start"
    if align not in ("start", "end"):
        raise UnrollGraphError(f"compare_flows(): align must be 'start' or 'end', got {align!r}")
    palette = _colours(None)
    if colors is None:
        colors = [palette[k % len(palette)] for k in range(len(flows))]
    elif isinstance(colors, dict):
        missing = [lab for lab in labels if lab not in colors]
        if missing:
            raise UnrollGraphError(f"compare_flows(): colors has no colour for {missing}; give "
                                   "one per run label")
        colors = [colors[lab] for lab in labels]
    else:
        colors = list(colors)
        if len(colors) != len(flows):
            raise UnrollGraphError(f"compare_flows(): {len(flows)} runs but {len(colors)} "
                                   "colors; give one per run (or a dict label -> colour)")
    Figure = _pyplot()
    fig = Figure(figsize=(6.5 * len(quantities) + 3.2, 5.2), dpi=110)
    axes = fig.subplots(1, len(quantities), sharey=True, squeeze=False)[0]
    steps = max(f.steps for f in flows)
    several = len(set(states)) > 1
    for ax, q in zip(axes, quantities):
        head, attr = what[q]
        for f, s, lab, col in zip(flows, states, labels, colors):
            y = np.asarray(getattr(f, attr)[s], dtype=float)
            t = np.arange(f.steps)
            x = t if align == "start" else f.steps - 1 - t
            extra = f", state {s}" if several else ""
            ax.plot(x, _positive(y), color=col, lw=2.4, label=lab + extra)
            _mark_zeros(ax, x, y, col, None, None)
            if f.truncate:
                cut = f.steps - f.truncate - 0.5
                ax.axvline(cut if align == "start" else f.steps - 1 - cut, color=col, lw=1,
                           ls=":")
        if align == "start":
            _decorate(ax, steps)
        else:
            _decorate(ax, steps, xlabel="steps before the last step (T − 1 − t)")
            ax.invert_xaxis()  # time still runs left to right; the last step is at 0
        names = sorted(set(states), key=states.index)
        ax.set_title(" or ".join(head.format(s=n) for n in names) + " against "
                     + ("t" if align == "start" else "steps back")
                     + ("\n(each run's state in the legend)" if several else ""), fontsize=13)
    axes[0].set_ylabel("norm (log scale, shared)", fontsize=13)
    for ax in axes[1:]:
        ax.set_ylabel("")
    handles, _ = axes[-1].get_legend_handles_labels()
    if any(ax.collections for ax in axes):
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="0.3", lw=0, marker="v", ms=7,
                              label="zero (off the log scale)"))
    axes[-1].legend(handles=handles, fontsize=11, loc="upper left",
                    bbox_to_anchor=(1.02, 1.0), frameon=False)
    if title:
        fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 72 / (0.56 * 14))),
                     fontsize=14)
    fig.tight_layout()
    return fig


# -- what truncation leaves out ---------------------------------------------------------------

class TruncationError:
    """What full BPTT would have added to each shared weight's gradient, step by step, that
    a run truncated in the graph (``ug.unroll(cell, T, truncate=k)``) left out
    (see :func:`truncation_error`).

    Attributes
    ----------
    steps : int
    truncate : int or None
        The in-graph window k (``None`` for streaming TBPTT).
    windows : tuple (k1, k2) or None
        Streaming TBPTT's parameters (``None`` for in-graph truncation).
    full_norms, kept_norms, missing_norms : dict
        Parameter name -> (T,): the norm of step t's term of the gradient under full BPTT,
        under truncation, and of their difference (what truncation left out at step t).
    relative_error : dict
        Parameter name -> ``‖G_full − G_truncated‖ / ‖G_full‖`` for the whole gradient.
    """

    def __init__(self, steps, truncate, full, kept, cell_name, windows=None):
        self.steps, self.truncate, self.cell_name = steps, truncate, cell_name
        self.windows = windows
        self.full_norms = {k: _step_norms(v) for k, v in full.items()}
        self.kept_norms = {k: _step_norms(v) for k, v in kept.items()}
        self.missing_norms = {k: _step_norms(full[k] - kept[k]) for k in full}
        self.relative_error = {}
        for k in full:
            g = full[k].sum(axis=0)
            d = (full[k] - kept[k]).sum(axis=0)
            n = float(np.linalg.norm(g))
            self.relative_error[k] = float(np.linalg.norm(d)) / n if n > 0 else 0.0

    def table(self, weight: str | None = None, max_rows: int | None = 20) -> str:
        """Per-step norms for one weight (default ``weight_hh`` or the first) as text."""
        if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(
                max_rows, (int, np.integer)) or max_rows < 1):
            raise UnrollGraphError(
                f"table(max_rows=...): pass a positive int (rows to show) or None (every "
                f"step), got {max_rows!r}"
            )
        w = weight or next((k for k in self.full_norms if "weight_hh" in k),
                           next(iter(self.full_norms)))
        rows = GradientFlow._rows(self, max_rows)
        head = ["t", "full BPTT", "truncated", "left out"]
        body = [[str(t), _num(self.full_norms[w][t]), _num(self.kept_norms[w][t]),
                 _num(self.missing_norms[w][t])] for t in rows]
        widths = [max(len(r[i]) for r in [head] + body) for i in range(4)]
        lines = [f"truncation error of {w} ({self.cell_name!r}, T={self.steps}, "
                 f"{self._form()}): relative error of the whole gradient "
                 f"{self.relative_error[w]:.3g}", ""]
        lines.append("  ".join(h.rjust(n) for h, n in zip(head, widths)))
        lines += ["  ".join(c.rjust(n) for c, n in zip(r, widths)) for r in body]
        return "\n".join(lines)

    def _form(self) -> str:
        if self.windows is not None:
            return f"TBPTT(k1={self.windows[0]}, k2={self.windows[1]})"
        return f"truncate={self.truncate}"

    def __str__(self) -> str:
        return self.table()

    def plot(self, weight: str | None = None, ax=None):
        """Per-step norms of the weight's gradient terms: full, truncated, left out (log
        scale); returns a matplotlib Figure."""
        w = weight or next((k for k in self.full_norms if "weight_hh" in k),
                           next(iter(self.full_norms)))
        plt = _pyplot()
        given = ax is not None
        fig, ax = _axes(plt, ax, (10, 5))
        t = np.arange(self.steps)
        ax.plot(t, _positive(self.full_norms[w]), color="#1f77b4", lw=2.6,
                label="full BPTT")
        kept = (f"truncated (last {self.truncate} steps)" if self.windows is None
                else f"TBPTT(k1={self.windows[0]}, k2={self.windows[1]})")
        ax.plot(t, _positive(self.kept_norms[w]), color="#2ca02c", lw=2.0, ls=(0, (6, 2)),
                label=kept)
        ax.plot(t, _positive(self.missing_norms[w]), color="#d62728", lw=0, marker="o",
                ms=5, label="left out by truncation")
        full = self.full_norms[w]
        _mark_zeros(ax, t, full, "#1f77b4")
        handles = ax.get_legend_handles_labels()[0]
        if (full == 0).any():
            from matplotlib.lines import Line2D

            handles.append(Line2D([], [], color="#1f77b4", lw=0, marker="v", ms=7,
                                  label="zero term (off the log scale)"))
        _shade_cut(ax, self.steps, self.truncate, handles)
        if self.windows is not None:  # where each window's losses end
            from matplotlib.lines import Line2D

            for e in range(self.windows[0], self.steps, self.windows[0]):
                ax.axvline(e - 0.5, color="0.6", ls=":", lw=1.2, zorder=0)
            handles.append(Line2D([], [], color="0.6", ls=":", lw=1.2,
                                  label="end of a window"))
        _decorate(ax, self.steps)
        ax.set_ylabel(f"‖step-t term of ∂L/∂{w}‖", fontsize=13)
        _set_title(ax, f"What truncation leaves out: {self.cell_name}, T = {self.steps}, "
                   f"{self._form()}\nrelative error of the whole gradient "
                   f"{self.relative_error[w]:.2g}", 13)
        if given:
            ax.legend(handles=handles, fontsize=8, loc="best", framealpha=0.85)
        else:
            ax.legend(handles=handles, fontsize=11, loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), frameon=False)
            fig.tight_layout()
        return fig


def truncation_error(run, weights=None) -> TruncationError:
    """Per step, what full BPTT would add to each shared weight's gradient that the run's
    in-graph truncation left out.

    The net is run once more without truncation (a separate copy: the run, the net and the
    parameters' ``.grad`` do not change), on the same inputs and initial state, and
    backpropagated with the same output gradients; the per-step terms of each weight's
    gradient (:meth:`Run.step_contributions`) are compared with the truncated run's.

    Parameters
    ----------
    run : Run
        ``net.last_run`` after ``loss.backward()``, from ``ug.unroll(cell, T, truncate=k)``
        (a run without truncation has no error: all zeros).
    weights : list of str, optional
        Parameters to compare (default: every parameter that requires grad).

    Returns
    -------
    TruncationError

    Raises
    ------
    UnrollGraphError
        Not a run, or no backward pass yet.
    CellError
        A name in ``weights`` is not a parameter of the cell.

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> cell = ug.nn.RNNCell(2, 3, seed=0)
    >>> net = ug.unroll(cell, steps=8, truncate=3)
    >>> out, h = net(np.ones((8, 1, 2)))
    >>> out.sum().backward()
    >>> err = ug.truncation_error(net.last_run)
    >>> left_out = err.missing_norms["weight_hh"]    # steps 0..4 are cut off (h_-1 = 0)
    >>> bool(left_out[1:5].min() > 0), bool(left_out[5:].max() < 1e-12)
    (True, True)
    """
    from .unroll import Run

    if not isinstance(run, Run):
        raise UnrollGraphError(
            f"truncation_error() needs a run of an unrolled net (net.last_run after "
            f"loss.backward()), got {type(run).__name__}"
        )
    run._need_backward()
    net = run.net
    cell = net.cell
    params = cell.parameters()
    weights = _weights(cell, weights, "truncation_error")
    names = list(cell.states)
    full_net = _helper(net, net.steps)
    xs = _inputs(run)
    init = [np.asarray(run.value(net.init_nodes[s])) for s in names]
    lengths = None if not net.masked else np.asarray(run.lengths)
    r = _call_helper(full_net, xs, init, lengths, False)
    for s in names:
        again = np.stack([np.asarray(r.value(n)) for n in full_net.state_nodes[s]])
        kept = np.stack([np.asarray(run.value(n)) for n in net.state_nodes[s]])
        _same_run(again, kept, net, "truncation_error")
    r.backward(list(run.seeds))
    full, kept = {}, {}
    for k in weights:
        if not params[k].requires_grad:
            full[k] = kept[k] = np.zeros((net.steps,) + params[k].shape)
            continue
        full[k] = r.step_contributions(k)
        kept[k] = run.step_contributions(k)
    return TruncationError(net.steps, net.truncate, full, kept, cell.name)


def tbptt_truncation_error(cell, xs, targets, loss_fn, k1: int, k2: int, readout=None,
                           state=None, weights=None) -> TruncationError:
    """Per step, what full BPTT would add to each weight's gradient that streaming
    TBPTT(k1, k2) leaves out, with the weights held fixed (no optimizer).

    The windows are those of :func:`unrollgraph.train.tbptt`: the window ending at ``e``
    puts the losses of its last ``n`` steps into ``loss_e`` and backpropagates them through
    at most ``k2`` steps. Full BPTT is taken of the same total, the sum of the windows'
    losses, over one unrolled net of all T steps. Nothing of the user's changes: the windows
    and the full net are private copies, and the readout's ``.grad`` is restored.

    Parameters
    ----------
    cell, xs, targets, loss_fn, k1, k2, readout, state
        As for :func:`unrollgraph.train.tbptt`.
    weights : list of str, optional
        The cell's parameters to compare (default: all that require grad).

    Returns
    -------
    TruncationError
        With ``windows = (k1, k2)`` and ``truncate = None``.

    Raises
    ------
    TrainingError
        Bad ``k1``, ``k2`` (``k2 >= k1 >= 1``), targets of another length than xs, or a
        ``loss_fn`` (``readout``) that is not a function of two arguments (of one).

    Examples
    --------
    >>> import numpy as np, unrollgraph as ug
    >>> cell = ug.nn.RNNCell(1, 3, seed=0)
    >>> xs, ys = np.ones((12, 2, 1)), np.zeros((12, 2, 3))
    >>> err = ug.tbptt_truncation_error(cell, xs, ys, ug.mse_loss, k1=4, k2=4)
    >>> bool(err.relative_error["weight_hh"] > 0), err.missing_norms["weight_hh"].shape
    (True, (12,))
    >>> one = ug.tbptt_truncation_error(cell, xs, ys, ug.mse_loss, k1=12, k2=12)
    >>> bool(one.relative_error["weight_hh"] < 1e-12)      # one window: full BPTT
    True
    """
    from .errors import TrainingError
    from .train import _loss_fn, _readout_arg, _steps_of, _window
    from .unroll import Unrolled

    _loss_fn("tbptt_truncation_error", loss_fn)
    _readout_arg("tbptt_truncation_error", readout)

    for name, v in (("k1", k1), ("k2", k2)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise TrainingError(f"tbptt_truncation_error: {name} must be a positive int, "
                                f"got {v!r}")
    if k2 < k1:
        raise TrainingError(f"tbptt_truncation_error: k2={k2} < k1={k1}; use k2 >= k1")
    T = _steps_of(xs)
    if _steps_of(targets) != T:
        raise TrainingError(
            f"tbptt_truncation_error: xs has {T} steps but targets has {_steps_of(targets)}"
        )
    if len(cell.outputs) != 1:
        raise TrainingError(
            f"tbptt_truncation_error: cell {cell.name!r} has outputs {list(cell.outputs)}; "
            "use a cell with one output, as tbptt does"
        )
    params = cell.parameters()
    weights = _weights(cell, weights, "tbptt_truncation_error")
    names = list(cell.states)
    saved = {}
    if readout is not None and hasattr(readout, "parameters"):
        saved = {k: p.grad for k, p in readout.parameters().items()}
    full_net = Unrolled(cell, T)
    xs_all = xs if isinstance(xs, dict) else {next(iter(cell.inputs)): xs}
    xs_all = {k: np.asarray(v.data if hasattr(v, "data") else v) for k, v in xs_all.items()}
    init = None
    if state is not None:
        init = state if isinstance(state, (tuple, list)) else (state,)
        init = [np.asarray(getattr(v, "data", v)) for v in init]
    with no_grad():
        full_net(xs_all, state=None if init is None else tuple(init))
    fr = full_net.last_run
    states = {s: [np.asarray(fr.value(n)) for n in full_net.state_nodes[s]] for s in names}
    first = {s: np.asarray(fr.value(full_net.init_nodes[s])) for s in names}
    kept = {k: np.zeros((T,) + params[k].shape) for k in weights}
    out_name = next(iter(cell.outputs))
    seeds_all = np.zeros((T,) + tuple(np.shape(fr.value(full_net.output_nodes[out_name][0]))))
    nets: dict = {}
    try:
        prev = 0
        while prev < T:
            end = min(prev + k1, T)
            n = end - prev
            begin = max(0, end - k2)
            length = end - begin
            net = nets.get(length) or nets.setdefault(length, Unrolled(cell, length))
            start = [first[s] if begin == 0 else states[s][begin - 1] for s in names]
            with no_grad():
                outs, _ = net({k: v[begin:end] for k, v in xs_all.items()},
                              state=tuple(start))
            o = tensor(np.asarray(outs.data)[length - n:], requires_grad=True)
            pred = o if readout is None else readout(o)
            loss = loss_fn(pred, _window(targets, end - n, end))
            loss.backward()
            g = np.zeros(np.shape(outs.data))
            g[length - n:] = o.grad
            seeds_all[end - n:end] = o.grad
            r = net.last_run
            r.backward([g] + [None] * len(names))
            for k in weights:
                kept[k][begin:end] += r.step_contributions(k)
            prev = end
    finally:
        if readout is not None and hasattr(readout, "parameters"):
            for k, p in readout.parameters().items():
                p.grad = saved[k]
    fr.backward([seeds_all] + [None] * len(names))
    full = {k: fr.step_contributions(k) for k in weights}
    return TruncationError(T, None, full, kept, cell.name, windows=(int(k1), int(k2)))

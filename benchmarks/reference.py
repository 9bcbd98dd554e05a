"""Hand-written numpy forward and backward-through-time for Elman RNN, LSTM and GRU layers.

This module is an *independent* derivation of the equations PyTorch documents for
``torch.nn.RNNCell``, ``LSTMCell`` and ``GRUCell`` (gate orders i, f, g, o and r, z, n), written
without unrollgraph: every gradient below is derived by hand, step by step, the way a textbook
writes backpropagation through time. It serves two purposes:

* the test suite (``tests/test_nn.py``) checks unrollgraph's unrolled cells against it;
* the benchmark (``benchmarks/bptt.py``) times it as the "hand-written numpy, step loop" floor.

:func:`forward_batched` and :func:`backward_batched` are the same equations for one Elman or
LSTM layer with the work that does not depend on the recurrence taken out of the step loop:
the input projection ``x_t W_ih^T + b_ih`` of all steps in one product before the loop, and the
weight and bias gradients of all steps in one product each after it (the loop only stores
each step's pre-activation gradient). That is the faster of the two hand-written baselines
at the larger sizes; the benchmark times both.

Layers are dicts with the keys ``weight_ih`` (G*H, D), ``weight_hh`` (G*H, H) and optionally
``bias_ih``, ``bias_hh`` (G*H,), G being 1, 4 or 3 gates. A stack is a list of such dicts; layer
``l`` reads the hidden states of layer ``l - 1``.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> layer = {"weight_ih": rng.normal(size=(4, 3)), "weight_hh": rng.normal(size=(4, 4))}
>>> xs = rng.normal(size=(5, 2, 3))
>>> ys, finals, cache = forward("rnn", xs, [layer])
>>> ys.shape, finals[0].shape
((5, 2, 4), (2, 4))
>>> dxs, grads, dinit = backward(cache, np.ones_like(ys))
>>> dxs.shape, grads[0]["weight_hh"].shape, "bias_ih" in grads[0]
((5, 2, 3), (4, 4), False)
"""

from __future__ import annotations

import numpy as np

__all__ = ["forward", "backward", "forward_batched", "backward_batched", "loss",
           "layers_from_state_dict", "GATES"]

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def layers_from_state_dict(state: dict, num_layers: int | None = None) -> list[dict]:
    """Split a (PyTorch-named) state dict into per-layer dicts with suffix-free keys.

    ``num_layers=None`` reads a single cell's names (``weight_ih``...); otherwise the stacked
    names ``weight_ih_l0``... of ``num_layers`` layers.

    Examples
    --------
    >>> sd = {"weight_ih_l0": 1, "weight_hh_l0": 2, "weight_ih_l1": 3, "weight_hh_l1": 4}
    >>> [{k: int(v) for k, v in layer.items()} for layer in layers_from_state_dict(sd, 2)]
    [{'weight_ih': 1, 'weight_hh': 2}, {'weight_ih': 3, 'weight_hh': 4}]
    """
    keys = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    if num_layers is None:
        return [{k: np.asarray(state[k]) for k in keys if k in state}]
    return [
        {k: np.asarray(state[f"{k}_l{i}"]) for k in keys if f"{k}_l{i}" in state}
        for i in range(num_layers)
    ]


def _layer_forward(kind, xs, p, h0, c0, nonlinearity):
    """One layer over the whole sequence; returns ys (T, B, H), final (h or (h, c)), cache."""
    T, B, _ = xs.shape
    H = p["weight_hh"].shape[1]
    Wih_T, Whh_T = p["weight_ih"].T, p["weight_hh"].T
    bih, bhh = p.get("bias_ih"), p.get("bias_hh")
    h = np.zeros((B, H)) if h0 is None else h0
    c = np.zeros((B, H)) if (c0 is None and kind == "lstm") else c0
    ys = np.empty((T, B, H))
    steps = []  # per-step values the backward pass needs
    for t in range(T):
        x = xs[t]
        gi = x @ Wih_T
        gh = h @ Whh_T
        if bih is not None:
            gi += bih
            gh += bhh
        if kind == "rnn":
            z = gi + gh
            h_new = np.tanh(z) if nonlinearity == "tanh" else np.maximum(z, 0.0)
            steps.append((x, h))  # h_new is read back from ys
        elif kind == "lstm":
            a = gi + gh
            i = _sigmoid(a[:, :H])
            f = _sigmoid(a[:, H:2 * H])
            g = np.tanh(a[:, 2 * H:3 * H])
            o = _sigmoid(a[:, 3 * H:])
            c_new = f * c + i * g
            tc = np.tanh(c_new)
            h_new = o * tc
            steps.append((x, h, c, i, f, g, o, tc))
            c = c_new
        else:  # gru
            r = _sigmoid(gi[:, :H] + gh[:, :H])
            z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
            ghn = gh[:, 2 * H:]
            n = np.tanh(gi[:, 2 * H:] + r * ghn)
            h_new = (1.0 - z) * n + z * h
            steps.append((x, h, r, z, n, ghn))
        ys[t] = h_new
        h = ys[t]  # a view: the hidden states are stored once, in ys
    final = (h, c) if kind == "lstm" else h
    return ys, final, (kind, p, steps, nonlinearity, ys)


def _layer_backward(cache, dys, dfinal, need_dxs=True):
    """Backpropagation through time of one layer.

    ``dys`` (T, B, H) is dL/dy_t from outside the recurrence (the loss, or the layer above);
    ``dfinal`` is dL/d(final state), ``None``, or a pair ``(dh, dc)`` for an LSTM.
    Returns dxs (T, B, D) (``None`` unless ``need_dxs``), parameter gradients (dict) and
    dL/d(initial state).
    """
    kind, p, steps, nonlinearity, ys = cache
    T, B, H = dys.shape
    Wih, Whh = p["weight_ih"], p["weight_hh"]
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dWih, dWhh = grads["weight_ih"], grads["weight_hh"]
    has_bias = "bias_ih" in p
    dxs = np.empty((T, B, Wih.shape[1])) if need_dxs else None
    dh_next = np.zeros((B, H))  # dL/dh_t through step t+1 (zero after the last step)
    dc_next = np.zeros((B, H))
    if dfinal is not None:
        if kind == "lstm":
            dh_f, dc_f = dfinal
            if dh_f is not None:
                dh_next = dh_next + dh_f
            if dc_f is not None:
                dc_next = dc_next + dc_f
        else:
            dh_next = dh_next + dfinal
    for t in range(T - 1, -1, -1):
        dh = dys[t] + dh_next
        if kind == "rnn":
            x, h_prev = steps[t]
            h_new = ys[t]
            if nonlinearity == "tanh":
                dz = dh * (1.0 - h_new * h_new)
            else:
                dz = dh * (h_new > 0.0)
            dgi = dgh = dz
        elif kind == "lstm":
            x, h_prev, c_prev, i, f, g, o, tc = steps[t]
            do = dh * tc
            dc = dc_next + dh * o * (1.0 - tc * tc)
            di, df, dg = dc * g, dc * c_prev, dc * i
            dc_next = dc * f
            dz = np.concatenate(
                [di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g * g), do * o * (1.0 - o)],
                axis=1,
            )
            dgi = dgh = dz
        else:  # gru: h' = (1 - z) n + z h
            x, h_prev, r, z, n, ghn = steps[t]
            dn = dh * (1.0 - z)
            dzg = dh * (h_prev - n)
            dan = dn * (1.0 - n * n)  # through tanh
            dr = dan * ghn
            dar = dr * r * (1.0 - r)
            daz = dzg * z * (1.0 - z)
            dgi = np.concatenate([dar, daz, dan], axis=1)
            dgh = np.concatenate([dar, daz, dan * r], axis=1)
        dWih += dgi.T @ x
        dWhh += dgh.T @ h_prev
        if has_bias:
            grads["bias_ih"] += dgi.sum(axis=0)
            grads["bias_hh"] += dgh.sum(axis=0)
        if need_dxs:
            dxs[t] = dgi @ Wih
        dh_next = dgh @ Whh
        if kind == "gru":
            dh_next += dh * z
    dinit = (dh_next, dc_next) if kind == "lstm" else dh_next
    return dxs, grads, dinit


def forward(kind: str, xs, layers: list, init=None, nonlinearity: str = "tanh"):
    """Run a stack of ``kind`` layers ("rnn", "lstm" or "gru") over ``xs`` (T, B, D).

    Parameters
    ----------
    kind : {"rnn", "lstm", "gru"}
    xs : ndarray (T, B, D)
    layers : list of dict
        Per-layer weights (see the module docstring).
    init : list, optional
        Per-layer initial state: h (B, H), or (h, c) for an LSTM; zeros when ``None``.
    nonlinearity : {"tanh", "relu"}
        Elman only.

    Returns
    -------
    ys : ndarray (T, B, H)
        Hidden states of the top layer.
    finals : list
        Per-layer final state: h, or (h, c) for an LSTM.
    cache : object
        What :func:`backward` needs.
    """
    if kind not in GATES:
        raise ValueError(f"kind must be one of {sorted(GATES)}, got {kind!r}")
    caches, finals = [], []
    inp = np.asarray(xs, dtype=np.float64)
    for li, p in enumerate(layers):
        s = None if init is None else init[li]
        h0, c0 = (s if s is not None else (None, None)) if kind == "lstm" else (s, None)
        inp, final, cache = _layer_forward(kind, inp, p, h0, c0, nonlinearity)
        caches.append(cache)
        finals.append(final)
    return inp, finals, caches


def backward(cache, dys, dfinals=None, need_dxs=True):
    """Backpropagation through time of a stack run by :func:`forward`.

    Parameters
    ----------
    cache : object
        The third value :func:`forward` returned.
    dys : ndarray (T, B, H)
        dL/d(outputs of the top layer).
    dfinals : list, optional
        Per-layer dL/d(final state): dh, or (dh, dc) for an LSTM; ``None`` entries for none.
    need_dxs : bool
        Compute dL/dxs (skip it when the inputs are data, as in training).

    Returns
    -------
    dxs : ndarray (T, B, D) or None
    grads : list of dict
        Per-layer parameter gradients (summed over steps).
    dinit : list
        Per-layer dL/d(initial state).
    """
    L = len(cache)
    grads, dinit = [None] * L, [None] * L
    d = np.asarray(dys, dtype=np.float64)
    for li in range(L - 1, -1, -1):
        df = None if dfinals is None else dfinals[li]
        d, grads[li], dinit[li] = _layer_backward(cache[li], d, df, need_dxs or li > 0)
    return d, grads, dinit


def forward_batched(kind: str, xs, p: dict):
    """One Elman (tanh) or LSTM layer over ``xs`` (T, B, D), with the input projection of all
    steps computed in one product before the step loop; zero initial state.

    Returns ``ys`` (T, B, H) and a cache for :func:`backward_batched`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> layer = {"weight_ih": rng.normal(size=(8, 3)), "weight_hh": rng.normal(size=(8, 2)),
    ...          "bias_ih": rng.normal(size=8), "bias_hh": rng.normal(size=8)}
    >>> xs = rng.normal(size=(5, 4, 3))
    >>> ys, cache = forward_batched("lstm", xs, layer)
    >>> bool(np.allclose(ys, forward("lstm", xs, [layer])[0]))
    True
    """
    if kind not in ("rnn", "lstm"):
        raise ValueError(f"forward_batched: kind must be 'rnn' or 'lstm', got {kind!r}")
    T, B, D = xs.shape
    H = p["weight_hh"].shape[1]
    Whh_T = p["weight_hh"].T
    gi = (xs.reshape(T * B, D) @ p["weight_ih"].T).reshape(T, B, -1)
    gi += p["bias_ih"] + p["bias_hh"]
    ys = np.empty((T, B, H))
    h = np.zeros((B, H))
    if kind == "rnn":
        for t in range(T):
            a = gi[t]
            a += h @ Whh_T
            h = ys[t]
            np.tanh(a, out=h)
        return ys, (kind, p, xs, ys, None, None)
    acts = gi  # the gate activations overwrite the pre-activations, step by step
    cs = np.empty((T, B, H))
    for t in range(T):
        a = acts[t]
        a += h @ Whh_T
        a[:, :2 * H] = _sigmoid(a[:, :2 * H])
        np.tanh(a[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])
        a[:, 3 * H:] = _sigmoid(a[:, 3 * H:])
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c = cs[t]
        np.multiply(i, g, out=c)
        if t:
            c += f * cs[t - 1]
        h = ys[t]
        np.multiply(o, np.tanh(c), out=h)
    return ys, (kind, p, xs, ys, acts, cs)


def loss(ys, G=None) -> float:
    """The loss a hand-written numpy training step reports, ``sum(ys * G)`` (``sum(ys)`` for
    ``G=None``): the benchmarks' numpy columns compute it, as the other engines' columns
    compute theirs.

    Examples
    --------
    >>> loss(np.ones((2, 1, 3)), np.full((2, 1, 3), 0.5))
    3.0
    """
    return float(ys.sum() if G is None else (ys * G).sum())


def backward_batched(cache, dys):
    """Backpropagation through time of :func:`forward_batched`: the step loop computes each
    step's pre-activation gradient into one (T, B, G*H) array, then one product per weight
    and one sum per bias give the parameter gradients of all steps.

    Returns a dict of parameter gradients (dL/dxs is not computed: the inputs are data).
    """
    kind, p, xs, ys, acts, cs = cache
    T, B, D = xs.shape
    H = ys.shape[2]
    Whh = p["weight_hh"]
    dz = np.empty((T, B, Whh.shape[0]))
    dh_next = np.zeros((B, H))
    dc_next = np.zeros((B, H))
    for t in range(T - 1, -1, -1):
        dh = dys[t] + dh_next
        if kind == "rnn":
            h = ys[t]
            np.multiply(dh, 1.0 - h * h, out=dz[t])
        else:
            a = acts[t]
            i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            tc = np.tanh(cs[t])
            c_prev = cs[t - 1] if t else 0.0
            dc = dc_next + dh * o * (1.0 - tc * tc)
            d = dz[t]
            np.multiply(dc * g, i * (1.0 - i), out=d[:, :H])
            np.multiply(dc * c_prev, f * (1.0 - f), out=d[:, H:2 * H])
            np.multiply(dc * i, 1.0 - g * g, out=d[:, 2 * H:3 * H])
            np.multiply(dh * tc, o * (1.0 - o), out=d[:, 3 * H:])
            dc_next = dc * f
        dh_next = dz[t] @ Whh
    flat = dz.reshape(T * B, -1)
    grads = {"weight_ih": flat.T @ xs.reshape(T * B, D)}
    # h_{t-1} for t >= 1 is ys[t-1]; the initial state is zero and adds nothing
    grads["weight_hh"] = dz[1:].reshape((T - 1) * B, dz.shape[2]).T @ ys[:-1].reshape(
        (T - 1) * B, H)
    bias = flat.sum(axis=0)
    grads["bias_ih"], grads["bias_hh"] = bias, bias.copy()
    return grads

"""Hand-written numpy BPTT for an Elman RNN: the independent derivation the unroller's
gradients are checked against. Forward and backward loops are written out step by step."""

import numpy as np


def elman_forward(xs, Wih, Whh, bih, bhh, h0=None, lengths=None):
    """h_t = tanh(x_t Wih^T + bih + h_{t-1} Whh^T + bhh).

    With ``lengths``, a sequence past its length keeps its state and outputs zeros.
    Returns (hs, raws, ys): hs[0] is the initial state, hs[t+1] the state after step t,
    raws[t] the tanh value of step t before masking, ys[t] the output of step t.
    """
    T, B, _ = xs.shape
    H = Whh.shape[0]
    hs = [np.zeros((B, H)) if h0 is None else h0.copy()]
    raws, ys = [], []
    for t in range(T):
        raw = np.tanh(xs[t] @ Wih.T + bih + hs[-1] @ Whh.T + bhh)
        keep = np.ones((B, 1)) if lengths is None else (t < lengths)[:, None] * 1.0
        raws.append(raw)
        ys.append(raw * keep)
        hs.append(keep * raw + (1 - keep) * hs[-1])
    return hs, raws, np.stack(ys)


def elman_backward(xs, hs, raws, dys, Wih, Whh, first=0, lengths=None):
    """Backprop dL/dy_t = dys[t] through the steps t >= ``first``.

    ``first > 0`` is the in-graph truncation: steps before ``first`` get no gradient and their
    outputs contribute nothing. Returns dWih, dWhh, dbih, dbhh, dxs, dh0 and dh, where dh[t] is
    dL/dh_t for the state after step t (unmasked runs: the output and the state are one node).
    """
    T, B, _ = xs.shape
    H = Whh.shape[0]
    dWih, dWhh = np.zeros_like(Wih), np.zeros_like(Whh)
    dbih, dbhh = np.zeros(H), np.zeros(H)
    dxs = np.zeros_like(xs)
    dh = np.zeros((T, B, H))
    carry = np.zeros((B, H))  # gradient reaching the state after step t from later steps
    for t in range(T - 1, first - 1, -1):
        keep = np.ones((B, 1)) if lengths is None else (t < lengths)[:, None] * 1.0
        dh[t] = dys[t] + carry
        d_raw = keep * (dys[t] + carry)
        dz = d_raw * (1.0 - raws[t] ** 2)
        dWih += dz.T @ xs[t]
        dWhh += dz.T @ hs[t]
        dbih += dz.sum(axis=0)
        dbhh += dz.sum(axis=0)
        dxs[t] = dz @ Wih
        carry = dz @ Whh + (1 - keep) * carry
    dh0 = carry if first == 0 else np.zeros((B, H))
    return dWih, dWhh, dbih, dbhh, dxs, dh0, dh

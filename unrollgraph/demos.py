"""Demonstrations of backpropagation through time, one function each, also run by
``unrollgraph demo NAME`` and by the scripts ``examples/demo_NAME.py``.

Each demonstration writes its pictures (PNG) into a folder, prints what it measured, and
returns the key numbers as a dict:

``vanishing``   a tanh RNN with σ₁(W_hh) < 1: ‖∂L/∂h_t‖ shrinks geometrically going back.
``exploding``   a relu RNN with σ₁(W_hh) > 1: it grows; training diverges without clipping and
                converges with clipping or gradient normalisation.
``remedies``    tanh RNN vs residual RNN vs LSTM vs GRU on one scale.
``truncation``  what truncated BPTT leaves out, in the graph and streaming TBPTT(k1, k2).
``memory``      peak memory and time of one training step against T: both grow linearly.
``bptt-steps``  the six steps of BPTT, one call each, printed as they happen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["DEMOS", "run_demo", "vanishing", "exploding", "remedies", "truncation", "memory",
           "bptt_steps", "REMEDY_COLOURS"]

#: one colour per run label in every picture of the remedies (the demo's and tutorial 5's)
REMEDY_COLOURS = {
    "tanh RNN": "#d62728",
    "residual RNN": "#2ca02c",
    "LSTM (default init)": "#8c564b",
    "LSTM (forget bias +3)": "#9467bd",
    "GRU": "#1f77b4",
    "GRU (update bias +3)": "#1f77b4",
}


def _ug():
    import unrollgraph as ug

    return ug


def _folder(out) -> Path:
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _save(fig, folder: Path, name: str, say) -> Path:
    path = folder / name
    fig.savefig(path)
    say(f"  wrote {path}")
    return path


def _scaled_recurrent(cell, sigma: float, seed: int):
    """Give ``cell.weight_hh`` a random orthogonal direction and largest singular value
    ``sigma`` (all singular values equal)."""
    H = cell.weight_hh.shape[1]
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(H, H)))
    cell.weight_hh.data = sigma * q


def _last_step_run(ug, cell, T, B, seed, scale_inputs=1.0):
    """Run ``cell`` over T steps and backpropagate a loss on the last output only, so every
    ‖∂L/∂h_t‖ for t < T-1 is carried back from the end."""
    rng = np.random.default_rng(seed)
    net = ug.unroll(cell, T)
    xs = scale_inputs * rng.normal(size=(T, B, cell.inputs["x"].shape[1]))
    out, _ = net(xs)
    target = rng.normal(size=out.shape[1:])
    ug.mse_loss(out[T - 1], target).backward()
    return net.last_run


def vanishing(out="demo_out/vanishing", steps: int = 60, hidden: int = 32, sigma: float = 0.8,
              seed: int = 0, say=print) -> dict:
    """A tanh RNN whose recurrent weight has σ₁ = ``sigma`` < 1 (= 1/γ): the gradient of a loss
    at the last step shrinks by a factor of at least σ₁ per step going back in time."""
    ug = _ug()
    folder = _folder(out)
    cell = ug.nn.RNNCell(4, hidden, seed=seed)
    _scaled_recurrent(cell, sigma, seed)
    run = _last_step_run(ug, cell, steps, 8, seed)
    flow = ug.gradient_flow(run)
    g = flow.state_grad_norms
    rate = float(np.exp(np.mean(np.diff(np.log(g)))))  # mean factor per step forward in t
    say(f"vanishing gradients: tanh RNN, H={hidden}, T={steps}, loss at the last step only")
    say(f"  {flow.regime_text()}")
    say(f"  ‖∂L/∂h_t‖ at t={steps - 1}: {g[-1]:.3e}   t={steps // 2}: {g[steps // 2]:.3e}   "
        f"t=0: {g[0]:.3e}")
    say(f"  it shrinks by a factor {1 / rate:.3f} per step back (the bound σ₁γ = "
        f"{flow.sigma_max * flow.gamma:.3f}); ‖∂h_T/∂h_0‖₂ = {flow.jacobian_norms[0]:.3e}")
    say(f"  the first half of the steps' part of the sum of per-step term norms of ∂L/∂W_hh: "
        f"{flow.weight_contribution_shares['weight_hh'][: steps // 2].sum():.2e}")
    fig = flow.plot(title=f"Vanishing gradients: tanh RNN, σ₁(W_hh) = {sigma}, T = {steps}")
    png = _save(fig, folder, "vanishing.png", say)
    return {"flow": flow, "grad_norms": g, "factor_per_step": 1 / rate, "files": [png]}


def _train_exploding(ug, remedy, steps, hidden, epochs, seed, lr):
    """SGD on a relu RNN (W_hh = 1.05 I, as the IRNN initialisation but above 1) predicting
    the sum of the inputs at the last step; returns losses, and gradient norms before/after
    the remedy."""
    rng = np.random.default_rng(seed)
    cell = ug.nn.RNNCell(1, hidden, nonlinearity="relu", seed=seed)
    cell.weight_hh.data = 1.05 * np.eye(hidden)
    head = ug.train.Linear(hidden, 1, seed=seed)
    model = ug.train.SequenceModel(ug.unroll(cell, steps), head, last=True)
    params = model.parameters()
    opt = ug.optim.SGD(params, lr=lr)
    xs = rng.uniform(0, 0.1, size=(steps, 16, 1))
    ys = xs.sum(axis=0)
    losses, before, after = [], [], []
    for _ in range(epochs):
        opt.zero_grad()
        pred = model(xs)
        if not np.all(np.abs(pred.data) < 1e6):  # diverged (stop before the square overflows)
            losses.append(np.inf)
            break
        loss = ug.mse_loss(pred, ys)
        value = float(loss.data)
        loss.backward()
        if remedy == "clip":
            total = ug.clip_grad_norm(params, max_norm=1.0)
        elif remedy == "normalise":
            total = ug.normalize_grad_norm(params, norm=0.5)
        else:
            total = ug.clip_grad_norm(params, max_norm=float("inf"))  # measure only
        now = float(np.sqrt(sum(float((p.grad ** 2).sum()) for p in params.values())))
        losses.append(value)
        before.append(total)
        after.append(now)
        opt.step()
    return np.array(losses), np.array(before), np.array(after)


def exploding(out="demo_out/exploding", steps: int = 50, hidden: int = 16, epochs: int = 40,
              seed: int = 0, say=print) -> dict:
    """A relu RNN with W_hh = 1.05 I (σ₁ = 1.05 > 1/γ = 1): ‖∂L/∂h_t‖ grows going back in
    time; SGD diverges without clipping and converges with it (or with normalisation)."""
    ug = _ug()
    folder = _folder(out)
    cell = ug.nn.RNNCell(1, hidden, nonlinearity="relu", seed=seed)
    cell.weight_hh.data = 1.05 * np.eye(hidden)
    run = _last_step_run(ug, cell, steps, 4, seed, scale_inputs=0.0)
    flow = ug.gradient_flow(run)
    g = flow.state_grad_norms
    say(f"exploding gradients: relu RNN, W_hh = 1.05 I, H={hidden}, T={steps}, loss at the "
        "last step only")
    say(f"  {flow.regime_text()}")
    say(f"  ‖∂L/∂h_t‖ at t={steps - 1}: {g[-1]:.3e}   t=0: {g[0]:.3e}   "
        f"(x{g[0] / g[-1]:.3g}); ‖∂h_T/∂h_0‖₂ = {flow.jacobian_norms[0]:.3e}")
    fig = flow.plot(title=f"Exploding gradients: relu RNN, W_hh = 1.05 I, T = {steps}")
    term = flow.weight_contribution_norms["weight_hh"]
    hs = np.stack([np.asarray(run.value(n)) for n in run.net.state_nodes["h"]])
    grow = float(np.linalg.norm(hs[-1]) / np.linalg.norm(hs[0]))
    at = int(0.75 * (steps - 1))
    fig.axes[0].annotate(
        "the step-t term is (∂L/∂z_t) h_(t−1)ᵀ: it rises with t\nbecause the state grows "
        f"(‖h_T‖/‖h_0‖ = {grow:.3g})\nfaster than ∂L/∂h_t falls", xy=(at, term[at]),
        xytext=(0.30, 0.60), textcoords="axes fraction", fontsize=10.5, color="0.2",
        arrowprops={"arrowstyle": "->", "color": "0.35"})
    say(f"  the step-t term of ∂L/∂W_hh rises with t ({term[1]:.3g} at t=1, {term[-1]:.3g} at "
        f"t={steps - 1}): it is ∂L/∂z_t h_(t-1)^T, and the state grows by x{grow:.3g}")
    files = [_save(fig, folder, "exploding_flow.png", say)]
    lr = 0.001
    runs = {}
    for remedy in ("none", "clip", "normalise"):
        runs[remedy] = _train_exploding(ug, remedy, steps, hidden, epochs, seed, lr)
        losses = runs[remedy][0]
        end = "diverged (outputs beyond 1e6)" if not np.isfinite(losses[-1]) else \
            (f"loss {losses[0]:.4g} -> {losses[-1]:.4g} (lowest {losses.min():.3g}, "
             f"median of the last 10 {np.median(losses[-10:]):.3g})")
        say(f"  SGD lr={lr}, remedy {remedy:9s}: {len(losses)} steps, {end}; gradient norm "
            f"before the remedy: first {runs[remedy][1][0]:.3g}, largest "
            f"{runs[remedy][1].max():.3g}, after it at most {runs[remedy][2].max():.3g}")
    files.append(_save(_training_figure(runs, lr), folder, "exploding_training.png", say))
    return {"flow": flow, "grad_norms": g, "training": runs, "files": files}


def _training_figure(runs, lr):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5), dpi=110)
    a, b = fig.subplots(1, 2)
    colours = {"none": "#d62728", "clip": "#1f77b4", "normalise": "#2ca02c"}
    names = {"none": "no remedy", "clip": "clip_grad_norm(1.0)",
             "normalise": "normalize_grad_norm(0.5)"}
    for k, (losses, before, after) in runs.items():
        finite = np.where(np.isfinite(losses), losses, np.nan)
        a.plot(np.arange(len(losses)), finite, color=colours[k], lw=2.4, label=names[k])
        if not np.isfinite(losses[-1]):  # an arrow off the top where it diverged
            k0 = len(losses) - 2
            a.annotate("diverged", xy=(k0 + 1, 1e4), xytext=(k0 + 7, 2.5e3), fontsize=12,
                       color=colours[k], arrowprops={"arrowstyle": "->", "color": colours[k],
                                                     "lw": 2})
            a.plot([k0, k0 + 1], [finite[k0], 1e4], color=colours[k], lw=2.4)
        b.plot(np.arange(len(before)), before, color=colours[k], lw=1.4, ls="--")
        b.plot(np.arange(len(after)), after, color=colours[k], lw=2.4, label=names[k])
    a.set_yscale("log")
    a.set_ylim(top=1e4)
    b.set_yscale("log")
    a.set_title(f"Training loss (SGD, lr = {lr})", fontsize=13)
    b.set_title("Gradient norm: before the remedy (dashed), after (solid)", fontsize=13)
    for ax in (a, b):
        ax.set_xlabel("training step", fontsize=13)
        ax.grid(True, alpha=0.35)
        ax.tick_params(labelsize=11)
    from matplotlib.ticker import MaxNLocator

    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    a.set_ylabel("loss (log scale)", fontsize=13)
    b.set_ylabel("global gradient norm (log scale)", fontsize=13)
    a.legend(fontsize=11)
    fig.tight_layout()
    return fig


def _gate_bias(cell, gate, gates, value):
    """Add ``value`` to one gate's slice of ``bias_hh`` (gate order of the cell)."""
    b = np.array(cell.bias_hh.data)
    H = b.shape[0] // gates
    b[gate * H:(gate + 1) * H] += value
    cell.bias_hh.data = b


def remedies(out="demo_out/remedies", steps: int = 60, hidden: int = 32, seed: int = 0,
             say=print) -> dict:
    """tanh RNN, residual RNN, LSTM and GRU of the same size on the same inputs, loss at the
    last step: how much of ∂L/∂h_T survives back to t = 0 (for the LSTM: its cell state c)."""
    ug = _ug()
    folder = _folder(out)
    lstm_fb = ug.nn.LSTMCell(4, hidden, seed=seed)
    _gate_bias(lstm_fb, 1, 4, 3.0)  # forget gate f = sigmoid(... + 3) starts near 0.95
    gru_zb = ug.nn.GRUCell(4, hidden, seed=seed)
    _gate_bias(gru_zb, 1, 3, 3.0)  # update gate z near 0.95: h_t mostly keeps h_{t-1}
    cells = {
        "tanh RNN": (ug.nn.RNNCell(4, hidden, seed=seed), "h"),
        "residual RNN": (ug.nn.ResidualRNNCell(4, hidden, hh_scale=0.1, seed=seed), "h"),
        "LSTM (default init)": (ug.nn.LSTMCell(4, hidden, seed=seed), "c"),
        "LSTM (forget bias +3)": (lstm_fb, "c"),
        "GRU (update bias +3)": (gru_zb, "h"),
    }
    flows, states, result = [], [], {}
    say(f"remedies: T={steps}, H={hidden}, loss at the last step only; how much of the "
        "gradient reaches t = 0")
    for label, (cell, state) in cells.items():
        flow = ug.gradient_flow(_last_step_run(ug, cell, steps, 8, seed))
        g = flow._grad[state]
        j = flow._jac[state]
        result[label] = {"grad_ratio": float(g[0] / g[-1]), "jacobian_0": float(j[0])}
        say(f"  {label:25s} ‖∂L/∂{state}_0‖ / ‖∂L/∂{state}_T‖ = {g[0] / g[-1]:.3e}   "
            f"‖∂{state}_T/∂{state}_0‖₂ = {j[0]:.3e}")
        flows.append(flow)
        states.append(state)
    fig = ug.compare_flows(flows, list(cells), state=states, colors=REMEDY_COLOURS,
                           title=f"Remedies for vanishing gradients (T = {steps}, H = {hidden})")
    png = _save(fig, folder, "remedies.png", say)
    return {"cells": result, "flows": flows, "files": [png]}


def truncation(out="demo_out/truncation", steps: int = 40, k: int = 10, hidden: int = 16,
               seed: int = 0, say=print) -> dict:
    """What truncated BPTT leaves out: in the graph (``truncate=k``), per step, and streaming
    TBPTT(k1, k2), as the relative error of the whole gradient against full BPTT of the same
    loss."""
    ug = _ug()
    folder = _folder(out)
    k = max(1, min(k, steps // 2))  # a cut inside the sequence
    rng = np.random.default_rng(seed)
    cell = ug.nn.RNNCell(2, hidden, seed=seed)
    _scaled_recurrent(cell, 0.95, seed)
    xs = rng.normal(size=(steps, 4, 2))
    ys = rng.normal(size=(steps, 4, hidden))
    net = ug.unroll(cell, steps, truncate=k)
    out_, _ = net(xs)
    ug.mse_loss(out_, ys).backward()
    err = ug.truncation_error(net.last_run)
    say(f"truncated BPTT: tanh RNN, H={hidden}, T={steps}, σ₁(W_hh) = 0.95, loss at every step")
    cut = err.full_norms["weight_hh"][:steps - k].sum() / err.full_norms["weight_hh"].sum()
    say(f"  in the graph, truncate={k}: relative error of ∂L/∂W_hh "
        f"{err.relative_error['weight_hh']:.3f}; steps 0..{steps - k - 1} get no gradient "
        f"(under full BPTT their terms are {100 * cut:.0f}% of the sum of term norms); "
        f"steps {steps - k}..{steps - 1} lose "
        f"{err.missing_norms['weight_hh'][steps - k:].max():.1e}")
    files = [_save(err.plot(), folder, "truncation_in_graph.png", say)]
    # streaming TBPTT(k1, k2): compared with full BPTT of the same sum of window losses
    stream = {}
    for k1, k2 in ((k, k), (max(1, k // 2), 2 * k), (steps, steps)):
        e2 = ug.tbptt_truncation_error(cell, xs, ys, ug.mse_loss, k1=k1, k2=k2)
        stream[(k1, k2)] = e2.relative_error["weight_hh"]
        say(f"  streaming TBPTT(k1={k1}, k2={k2}): relative error of ∂L/∂W_hh "
            f"{stream[(k1, k2)]:.3f}")
        if (k1, k2) == (k, k):
            files.append(_save(e2.plot(), folder, "truncation_streaming.png", say))
    return {"in_graph": err, "streaming": stream, "files": files}


_MEASURE = """
import json, sys, time, tracemalloc
import numpy as np
import unrollgraph as ug
T, hidden, batch, seed = (int(a) for a in sys.argv[1:5])
rng = np.random.default_rng(seed)
cell = ug.nn.LSTMCell(4, hidden, seed=seed)
net = ug.unroll(cell, T)
opt = ug.optim.SGD(cell.parameters(), lr=0.01)
xs = rng.normal(size=(T, batch, 4))
target = np.zeros((T, batch, hidden))

def step():
    opt.zero_grad()
    outs, _ = net(xs)
    ug.mse_loss(outs, target).backward()
    opt.step()

step()  # compiles the net's step functions
best, spent, reps = float("inf"), 0.0, 0
while reps < 3 or (spent < 0.3 and reps < 20):
    t0 = time.process_time()
    step()
    took = time.process_time() - t0
    best, spent, reps = min(best, took), spent + took, reps + 1
tracemalloc.start()
step()
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps([best, peak]))
"""


def _measure_step(T, hidden, batch, seed):
    """CPU time (best of several) and peak traced memory of one training step, measured in
    a fresh Python with one BLAS thread: spinning BLAS threads on a busy machine make
    timings of the same step vary several-fold."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(T), str(hidden), str(batch),
                           str(seed)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        from .errors import UnrollGraphError

        raise UnrollGraphError(f"memory demo: measuring T={T} failed: "
                               f"{done.stderr.strip().splitlines()[-1:]}")
    best, peak = json.loads(done.stdout.strip().splitlines()[-1])
    return best, peak


def memory(out="demo_out/memory", lengths=(10, 30, 100, 300, 1000, 3000), hidden: int = 32,
           batch: int = 8, seed: int = 0, say=print) -> dict:
    """Peak memory and time of one training step (forward, backward, SGD step) of an LSTM
    against T. Both grow linearly in T: BPTT keeps one step's values per step and walks each
    step once each way, so it costs O(T), not O(T²)."""
    folder = _folder(out)
    rows = []
    say(f"memory and time of one training step: LSTM, H={hidden}, batch {batch}")
    say(f"  {'T':>6s}  {'CPU (ms)':>10s}  {'peak memory (MB)':>17s}  {'per step (kB)':>14s}")
    from tqdm.auto import tqdm

    bar = tqdm(lengths, desc="memory demo", unit="T", disable=None, delay=1.0, leave=False)
    line = bar.write if say is print else say  # lines printed above the bar, not through it
    for T in bar:
        best, peak = _measure_step(T, hidden, batch, seed)
        rows.append((T, best, peak))
        line(f"  {T:6d}  {1e3 * best:10.2f}  {peak / 2**20:17.2f}  {peak / T / 1024:14.1f}")
    T = np.array([r[0] for r in rows], dtype=float)
    secs = np.array([r[1] for r in rows])
    peak = np.array([r[2] for r in rows], dtype=float)
    big = T >= 100  # slopes on the longer runs, where fixed costs no longer dominate
    slope_t = float(np.polyfit(np.log(T[big]), np.log(secs[big]), 1)[0]) if big.sum() > 1 \
        else float("nan")
    slope_m = float(np.polyfit(np.log(T[big]), np.log(peak[big]), 1)[0]) if big.sum() > 1 \
        else float("nan")
    say(f"  log-log slope from T=100 on: time {slope_t:.2f}, memory {slope_m:.2f} "
        "(1 = linear, 2 would be quadratic)")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), dpi=110)
    axes = fig.subplots(1, 2)
    for ax, y, what, unit in ((axes[0], secs * 1e3, "CPU time of one training step", "ms"),
                              (axes[1], peak / 2**20, "peak memory of one training step",
                               "MB")):
        ax.loglog(T, y, "o-", color="#1f77b4", lw=2.4, ms=7, label="measured")
        ref = y[-1] * T / T[-1]
        ax.loglog(T, ref, color="0.5", ls="--", lw=1.4, label="∝ T (linear)")
        ax.loglog(T, y[-1] * (T / T[-1]) ** 2, color="#d62728", ls=":", lw=1.4,
                  label="∝ T² (quadratic)")
        ax.set_ylim(y.min() / 3, y.max() * 3)
        ax.set_xlabel("sequence length T", fontsize=13)
        ax.set_ylabel(unit + " (log scale)", fontsize=13)
        ax.set_title(what, fontsize=13)
        ax.grid(True, which="both", alpha=0.3)
        ax.tick_params(labelsize=11)
        ax.legend(fontsize=11)
    fig.suptitle(f"BPTT costs O(T): LSTM, H = {hidden}, batch {batch}", fontsize=14)
    fig.tight_layout()
    png = _save(fig, folder, "memory.png", say)
    return {"lengths": T, "seconds": secs, "peak_bytes": peak, "slope_time": slope_t,
            "slope_memory": slope_m, "files": [png]}


def bptt_steps(out="demo_out/bptt-steps", steps: int = 5, hidden: int = 3, seed: int = 0,
               say=print) -> dict:
    """The six steps of BPTT, each one call: unroll, forward, loss per step, backward,
    accumulate (a shared weight's gradient is the sum of its per-step parts), update."""
    ug = _ug()
    folder = _folder(out)
    rng = np.random.default_rng(seed)
    cell = ug.nn.RNNCell(2, hidden, seed=seed)
    xs = rng.normal(size=(steps, 1, 2))
    ys = rng.normal(size=(steps, 1, hidden))

    say("1. unroll:   net = ug.unroll(cell, steps=T)")
    net = ug.unroll(cell, steps=steps)
    say(f"   {net!r}: every op copied per step, each weight once")
    say("2. forward:  outputs, h = net(xs)")
    outputs, h = net(xs)
    say(f"   outputs {outputs.shape}, final state {h.shape}")
    say("3. loss per step:  losses = [ug.mse_loss(outputs[t], ys[t]) for t in range(T)]")
    losses = [ug.mse_loss(outputs[t], ys[t]) for t in range(steps)]
    loss = losses[0]
    for part in losses[1:]:
        loss = loss + part
    say("   " + " + ".join(f"{float(p.data):.3f}" for p in losses) + f" = {float(loss.data):.3f}")
    say("4. backward: loss.backward()")
    loss.backward()
    g = net.last_run.state_grads()
    say("   ‖∂L/∂h_t‖ = " + ", ".join(f"{np.linalg.norm(g[t]):.3f}" for t in range(steps)))
    say("5. accumulate: weight_hh.grad is the sum of its per-step parts")
    parts = net.last_run.step_contributions("weight_hh")
    for t in range(steps):
        say(f"   step {t}: ‖part‖ = {np.linalg.norm(parts[t]):.4f}")
    gap = float(np.abs(parts.sum(axis=0) - cell.weight_hh.grad).max())
    say(f"   max |sum of parts - weight_hh.grad| = {gap:.1e}")
    files = []
    try:  # this run, drawn with its gradients before the update changes the weights
        path = ug.render(net, loss=loss).render(str(folder / "unrolled"), format="png",
                                                cleanup=True)
        files.append(Path(path))
        say(f"   the unrolled net with these values and gradients: {path}")
    except ug.RenderError as exc:  # Graphviz's dot is missing: the rest still stands
        say(f"   (no diagram: {exc})")
    say("6. update:   ug.optim.SGD(cell.parameters(), lr=0.1).step()")
    before = float(loss.data)
    ug.optim.SGD(cell.parameters(), lr=0.1).step()
    outputs2, _ = net(xs)
    after = float(sum(float(ug.mse_loss(outputs2[t], ys[t]).data) for t in range(steps)))
    say(f"   loss {before:.4f} -> {after:.4f}")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 4.5), dpi=110)
    ax = fig.add_subplot()
    norms = [np.linalg.norm(parts[t]) for t in range(steps)]
    ax.bar(np.arange(steps), norms, color="#1f77b4")
    ax.set_xlabel("step t", fontsize=13)
    ax.set_ylabel("‖step-t part of ∂L/∂W_hh‖", fontsize=13)
    ax.set_title("Step 5, accumulate: the shared W_hh gets one part per step", fontsize=13)
    ax.tick_params(labelsize=11)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, axis="y", alpha=0.35)
    fig.tight_layout()
    files.append(_save(fig, folder, "contributions.png", say))
    return {"losses": (before, after), "sum_gap": gap, "files": files}


DEMOS = {
    "vanishing": vanishing,
    "exploding": exploding,
    "remedies": remedies,
    "truncation": truncation,
    "memory": memory,
    "bptt-steps": bptt_steps,
}


def run_demo(name: str, out=None, **options) -> dict:
    """Run the demonstration ``name`` (a key of :data:`DEMOS`), writing into ``out``
    (default ``demo_out/NAME``).

    Examples
    --------
    >>> import tempfile, unrollgraph.demos as d
    >>> r = d.run_demo("vanishing", tempfile.mkdtemp(), steps=8, hidden=4, say=lambda s: None)
    >>> bool(r["files"][0].exists())
    True
    """
    if name not in DEMOS:
        from .errors import UnrollGraphError

        raise UnrollGraphError(f"no demo {name!r}; the demos are {', '.join(DEMOS)}")
    return DEMOS[name](out or f"demo_out/{name}", **options)

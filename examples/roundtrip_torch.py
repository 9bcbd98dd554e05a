"""Design a cell in unrollgraph, train it in PyTorch, bring the weights back and look again.

1. design: an LSTM written out gate by gate, with its readout inside the cell and the chrono
   initialisation of its gate biases, and draw it;
2. export: ``ug.export.to_torch(cell)`` gives a ``torch.nn.Module`` with the cell's
   parameter names, checked against unrollgraph on one batch (outputs and gradients);
3. train it there on the adding problem (T = 200, batch 64: a task that needs memory over
   the whole sequence), timing the epochs, and time one epoch of unrollgraph's own training
   of the same cell (``ug.train.fit``) for comparison;
4. bring the trained weights back (``ug.export.from_torch``), check them bit for bit, and
   draw the gradient flow of the trained cell beside the untrained one (``ug.compare_flows``).

    python examples/roundtrip_torch.py            # a few minutes on a laptop CPU
    python examples/roundtrip_torch.py --tiny     # seconds: the test suite runs this
    python examples/roundtrip_torch.py --device cuda --epochs 60   # where there is a GPU

Pictures go to ``--out`` (default ``out/roundtrip``): ``cell.svg`` / ``cell.png`` (the cell)
and ``flow.png`` (the two gradient flows).
"""

from __future__ import annotations

import os

# one thread for each engine, so that the epoch times compare like with like (and numpy's
# BLAS threads do not fight PyTorch's for the cores): set before numpy is first imported
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import unrollgraph as ug  # noqa: E402

BASELINE = 1.0 / 6.0  # MSE of always predicting 1, the mean of the sum of two U(0, 1) values


def adding_problem(n: int, steps: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences: inputs (steps, n, 2) of a value in U(0, 1) and a marker, 1 at one step
    in each half; the target (n, 1) is the sum of the two marked values."""
    values = rng.uniform(0.0, 1.0, size=(steps, n))
    markers = np.zeros((steps, n))
    half = max(steps // 2, 1)
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, steps, size=n)
    cols = np.arange(n)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    return np.stack([values, markers], axis=-1), (values[first, cols] + values[second, cols])[
        :, None]


def design(hidden: int, seed: int, horizon: int) -> ug.Cell:
    """An LSTM (PyTorch's gate order i, f, g, o) whose readout y = h V^T + d is part of the
    cell, so that the whole model is one cell: exported, trained and brought back at once.

    The gate biases get the chrono initialisation of Tallec and Ollivier (2018), "Can
    recurrent neural networks warp time?": the forget gate's bias is log(u) with u drawn from
    U(1, horizon - 1), and the input gate's is its negative, so that unit j starts out
    keeping its memory for about u_j steps. The memory time scales then span the sequence,
    and the gradient of the last step's loss reaches its first steps from the start."""
    rng = np.random.default_rng(seed)
    H, k = hidden, 1.0 / np.sqrt(hidden)
    cell = ug.Cell("adding_lstm")
    x = cell.input("x", (2,))
    h = cell.state("h", (H,))
    c = cell.state("c", (H,))
    W = cell.param("W", rng.uniform(-k, k, (4 * H, 2)))
    U = cell.param("U", rng.uniform(-k, k, (4 * H, H)))
    bias = np.zeros(4 * H)
    bias[H:2 * H] = np.log(rng.uniform(1.0, max(horizon - 1, 2), H))  # forget gate
    bias[0:H] = -bias[H:2 * H]  # input gate
    b = cell.param("b", bias)
    V = cell.param("V", rng.uniform(-k, k, (1, H)))
    d = cell.param("d", np.array([1.0]))  # starts at the mean of the target
    gates = x @ W.T + h @ U.T + b
    gates.name = "gates"
    i = ug.sigmoid(gates[:, 0:H], name="i")
    f = ug.sigmoid(gates[:, H:2 * H], name="f")
    g = ug.tanh(gates[:, 2 * H:3 * H], name="g")
    o = ug.sigmoid(gates[:, 3 * H:4 * H], name="o")
    c_next = f * c + i * g
    c_next.name = "c_next"
    h_next = o * ug.tanh(c_next)
    h_next.name = "h_next"
    y = h_next @ V.T + d
    y.name = "y"
    cell.feedback(h, h_next)
    cell.feedback(c, c_next)
    cell.output("y", y)
    return cell


def check_export(cell, module, xs, ys) -> float:
    """Largest relative difference between unrollgraph and the module on one batch: the
    prediction and every parameter's gradient of the loss."""
    net = ug.unroll(cell, steps=xs.shape[0])
    cell.zero_grad()
    out, _ = net(xs)
    ug.mse_loss(out[-1], ys).backward()
    module.zero_grad()
    tout, _ = module(torch.from_numpy(xs))
    torch.nn.functional.mse_loss(tout[-1], torch.from_numpy(ys)).backward()
    worst = np.max(np.abs(tout.detach().numpy() - out.data)) / np.max(np.abs(out.data))
    for k, p in cell.parameters().items():
        got = module.get_parameter(module.torch_names[k]).grad.numpy()
        worst = max(worst, np.max(np.abs(got - p.grad)) / max(np.max(np.abs(p.grad)), 1e-300))
    return float(worst)


def train_torch(module, train_set, test_set, args, out):
    opt = torch.optim.Adam(module.parameters(), lr=args.lr)
    data = [(torch.from_numpy(x).to(args.device), torch.from_numpy(y).to(args.device))
            for x, y in train_set]
    mse = torch.nn.functional.mse_loss
    seconds, losses = [], []
    for epoch in range(args.epochs):
        order = np.random.default_rng(args.seed + epoch).permutation(len(data))
        start = time.perf_counter()
        total = 0.0
        for j in order:
            x, y = data[j]
            opt.zero_grad()
            pred, _ = module(x)
            loss = mse(pred[-1], y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), args.clip)
            opt.step()
            total += loss.item()
        seconds.append(time.perf_counter() - start)
        losses.append(total / len(data))
        if epoch % max(1, args.epochs // 8) == 0 or epoch == args.epochs - 1:
            out(f"  epoch {epoch + 1:3d}  train MSE {losses[-1]:.4f}  ({seconds[-1]:.2f} s)")
    with torch.no_grad():
        x, y = test_set
        pred, _ = module(torch.from_numpy(x).to(args.device))
        test = float(mse(pred[-1].cpu(), torch.from_numpy(y)))
    return seconds, losses, test


def time_ug_epoch(args, train_set) -> float:
    """One epoch of unrollgraph's own training (ug.train.fit, Adam, the same clipping) of a
    fresh copy of the cell, on the same batches."""
    cell = design(args.hidden, args.seed, args.steps)
    net = ug.unroll(cell, steps=args.steps)
    opt = ug.optim.Adam(cell.parameters(), lr=args.lr)
    start = time.perf_counter()
    ug.train.fit(lambda xs: net(xs)[0][-1], opt, train_set, ug.mse_loss, epochs=1,
                 clip=args.clip, progress=False)
    return time.perf_counter() - start


def flow_of(cell, xs, ys, samples):
    """The gradient flow of the last step's loss back through the whole sequence."""
    net = ug.unroll(cell, steps=xs.shape[0])
    out, _ = net(xs)
    ug.mse_loss(out[-1], ys).backward()
    return ug.gradient_flow(net.last_run, weights=["U"], samples=samples)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="sequence length T (default 200)")
    p.add_argument("--batch", type=int, default=64, help="sequences per batch (default 64)")
    p.add_argument("--batches", type=int, default=40, help="batches per epoch (default 40)")
    p.add_argument("--epochs", type=int, default=20, help="epochs in PyTorch (default 20)")
    p.add_argument("--hidden", type=int, default=32, help="hidden units (default 32)")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="where PyTorch trains (cpu, cuda...)")
    p.add_argument("--out", default="out/roundtrip", help="where the pictures go")
    p.add_argument("--tiny", action="store_true",
                   help="a few seconds: T=20, 2 epochs of 2 batches of 8, hidden 4")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.batch, args.batches, args.epochs, args.hidden = 20, 8, 2, 2, 4
    return args


def main(argv=None, out=print) -> dict:
    """Run the round trip; returns the figures it printed, as numbers."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as numpy (above)
    try:
        return _run(args, out)
    finally:
        torch.set_num_threads(threads)


def _run(args, out) -> dict:
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    train_set = [adding_problem(args.batch, args.steps, rng) for _ in range(args.batches)]
    test_set = adding_problem(256 if not args.tiny else 16, args.steps, rng)

    # 1. design and draw
    cell = design(args.hidden, args.seed, args.steps)
    untrained = design(args.hidden, args.seed, args.steps)  # the same weights, kept
    print_cell = "\n".join("  " + line for line in str(cell).splitlines())
    out(f"1. the cell, as unrollgraph prints it:\n{print_cell}")
    diagram = ug.render(cell)
    for fmt in ("svg", "png"):
        diagram.render(str(folder / "cell"), format=fmt, cleanup=True)
    out(f"   drawn: {folder / 'cell.svg'}")

    # 2. export, and check the module against unrollgraph on one batch
    module = ug.export.to_torch(cell)
    names = ", ".join(n for n, _ in module.named_parameters())
    worst = check_export(cell, module, *train_set[0])
    out(f"2. exported: {type(module).__name__} with parameters {names}; on one batch its "
        f"prediction and gradients differ from unrollgraph's by {worst:.1e} (relative)")
    module.to(args.device)

    # 3. train in PyTorch, and time one epoch of unrollgraph's own training
    out(f"3. training in PyTorch on {args.device} (adding problem, T={args.steps}, batch "
        f"{args.batch}, {args.batches} batches per epoch; baseline MSE {BASELINE:.4f})")
    seconds, losses, test = train_torch(module, train_set, test_set, args, out)
    per_epoch_torch = float(np.median(seconds))
    per_epoch_ug = time_ug_epoch(args, train_set)
    out(f"   test MSE after {args.epochs} epochs: {test:.4f} (baseline {BASELINE:.4f})")
    out(f"   time per epoch ({args.batches} batches of {args.batch}, T={args.steps}, float64, "
        f"one thread each): PyTorch {per_epoch_torch:.2f} s per epoch, unrollgraph "
        f"{per_epoch_ug:.2f} s per epoch")

    # 4. bring the weights back, check them, and look at the gradient flow again
    module.cpu()
    ug.export.from_torch(module, cell)
    diff = max(float(np.max(np.abs(p.data - module.get_parameter(module.torch_names[k])
                                   .detach().numpy()))) for k, p in cell.parameters().items())
    x, y = test_set
    with ug.no_grad():
        ug_pred = ug.unroll(cell, steps=args.steps)(x)[0].data[-1]
    with torch.no_grad():
        torch_pred = module(torch.from_numpy(x))[0][-1].numpy()
    pred_diff = float(np.max(np.abs(ug_pred - torch_pred)) / np.max(np.abs(torch_pred)))
    out(f"4. weights back in the cell: largest difference {diff:g} (bit for bit); the cell "
        f"predicts what the module predicts to {pred_diff:.1e}")
    flows = [flow_of(c, x[:, :8], y[:8], samples=range(2)) for c in (untrained, cell)]
    labels = ["untrained", f"trained in PyTorch ({args.epochs} epochs)"]
    fig = ug.compare_flows(flows, labels, state="c",
                           title=f"gradient flow of the last step's loss through c, "
                                 f"T = {args.steps}")
    fig.savefig(folder / "flow.png", dpi=110, bbox_inches="tight")
    out(f"   gradient flow, untrained beside trained: {folder / 'flow.png'}")
    return {"seconds_per_epoch_torch": per_epoch_torch, "seconds_per_epoch_ug": per_epoch_ug,
            "test_mse": test, "epoch_loss": losses, "max_weight_difference": diff,
            "max_output_difference": pred_diff, "export_check": worst}


if __name__ == "__main__":
    main()

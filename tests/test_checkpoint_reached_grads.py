"""``Run.grad`` says None exactly where the reference walk puts no gradient, on every run kind.

A step that truncation cuts off, or a node no seeded gradient reaches, has no gradient in the
reference executor (the generic node-by-node walk keeping every value): ``Run.grad`` answers
None there. The fast paths file gradients differently (the time-batched input projection's
backward computes a row for every step, zeros where nothing arrived; a checkpointed run
leaves out the segments the cut skips), and ``Run.grad`` must not show that: the plain
batched path, the plain per-step path, a lean (``keep="needed"``) and a full (``"all"``)
run, a checkpointed run for every k, with and without ``lengths=``, answer as the reference
does, by every name of a node (display name, ``x@t``, ``x_t``, the Node itself), through
``Run.full()`` and in what the diagrams draw (``ug.view``). Values that are arrays for every
step (``xs.grad``, ``state_grads()``) hold zeros there in every kind alike.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unrollgraph as ug
from unrollgraph.view import view as view_of

pytestmark = pytest.mark.filterwarnings("ignore::unrollgraph.CellWarning")

diff = importlib.import_module("test_differential")
run_module = importlib.import_module("unrollgraph.run")

# (keep, the plain per-step path?, checkpoint?) of each run kind; the first is the reference
KINDS = {
    "reference": ("all", None, False),
    "all": ("all", False, False),
    "lean": ("needed", False, False),
    "lean, plain path": ("needed", True, False),
    "all, plain path": ("all", True, False),
    "checkpointed": ("needed", False, True),
    "checkpointed, plain path": ("needed", True, True),
}


def _run(cell, T, k, truncate, lengths, kind, xs, h0s, loss_of, monkeypatch):
    keep, plain, ckpt = KINDS[kind]
    monkeypatch.setattr(run_module, "_PLAIN_STEPS", 1 << 30 if plain else 0)
    net = ug.unroll(cell, steps=T, truncate=truncate, keep=keep,
                    checkpoint=k if ckpt else None)
    cell.zero_grad()
    xts = {name: ug.tensor(x, requires_grad=True) for name, x in xs.items()}
    h0ts = tuple(ug.tensor(h, requires_grad=True) for h in h0s)
    if kind == "reference":  # the generic walk (detect_anomaly takes it)
        with ug.detect_anomaly():
            outs, fins = net(xts, state=h0ts, lengths=lengths)
            loss_of(outs, fins).backward()
    else:
        outs, fins = net(xts, state=h0ts, lengths=lengths)
        loss_of(outs, fins).backward()
    return net, net.last_run, xts, h0ts


def _answers(net, run, xts, h0ts):
    """Every gradient the run answers, by name: None or the array."""
    names = run._names()[0]
    got = {}
    for name in names:
        if "@" in name or "_" in name:
            got[name] = run.grad(name)
    full = run.full()  # the same answers through the recomputed whole run
    x, h = next(iter(net.cell.inputs)), next(iter(net.cell.states))
    for name in (f"{x}@0", f"{x}_0", f"{h}@0", f"{h}@{net.steps - 1}"):
        if name in names:
            got["full " + name] = full.grad(name)
    for j, n in enumerate(run.net.input_nodes[x]):  # by the Node itself (of the net run)
        got[f"node {x}@{j}"] = run.grad(n)
    view = view_of(run)  # what the diagrams draw: the same answers
    for n in run.net.nodes:
        if n.step is not None:
            got[f"view {run.net.graph.display_name(n)}"] = view.grad(n)
    got["xs.grad"] = [x.grad for x in xts.values()]
    got["h0.grad"] = [h.grad for h in h0ts]
    got["state_grads"] = [run.state_grads(k) for k in net.cell.states]
    return got


def _same(got, want, what):
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), what
        for j, (a, b) in enumerate(zip(got, want)):
            _same(a, b, f"{what}[{j}]")
        return
    if want is None:
        assert got is None, f"{what}: the reference has no gradient, got {got!r}"
        return
    assert got is not None, f"{what}: None, the reference has {want!r}"
    np.testing.assert_allclose(got, want, rtol=1e-12,
                               atol=1e-12 * max(1e-300, float(np.max(np.abs(want)))),
                               err_msg=what)


def _check_kinds(cell, T, k, truncate, lengths, xs, h0s, loss_of, monkeypatch,
                 kinds=tuple(KINDS)):
    answers = {}
    for kind in kinds:
        args = _run(cell, T, k, truncate, lengths, kind, xs, h0s, loss_of, monkeypatch)
        answers[kind] = _answers(*args)
    want = answers["reference"]
    for kind, got in answers.items():
        assert got.keys() == want.keys()
        for name in want:
            _same(got[name], want[name], f"{kind} (T={T}, checkpoint={k}, truncate="
                                         f"{truncate}, lengths={lengths}): Run.grad({name!r})")
    return want


@settings(max_examples=15, deadline=None)
@given(spec=diff.cells(mixing=False), data=st.data())
def test_every_run_kind_answers_grad_as_the_reference_walk(spec, data, monkeypatch_module):
    T = data.draw(st.integers(2, 6), label="T")
    k = data.draw(st.integers(1, T - 1) | st.just("sqrt"), label="k")
    B = data.draw(st.integers(1, 2), label="B")
    truncate = data.draw(st.none() | st.integers(1, T), label="truncate")
    lengths = data.draw(st.none() | st.lists(st.integers(0, T), min_size=B, max_size=B),
                        label="lengths")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    values = diff._param_values(spec, 0)
    cell = diff.build_cell(spec, values)
    xs = {f"x{j}": rng.uniform(-1, 1, (T, B, d)) for j, d in enumerate(spec["in"])}
    h0s = [rng.uniform(-1, 1, (B, d)) for d in spec["st"]]
    widths = [cell.outputs[f"y{j}"].shape[1:] for j in range(len(spec["outputs"]))]
    seeds_out = [rng.standard_normal((T, B) + w) for w in widths]
    seeds_fin = [rng.standard_normal((B, d)) for d in spec["st"]]
    _check_kinds(cell, T, k, truncate, None if lengths is None else np.array(lengths), xs,
                 h0s, lambda o, f: diff._loss(o, f, spec, seeds_out, seeds_fin),
                 monkeypatch_module)


@pytest.mark.parametrize("make", [ug.nn.RNNCell, ug.nn.LSTMCell, ug.nn.GRUCell])
@pytest.mark.parametrize("lengths", [None, [7, 4]])
def test_a_cut_step_has_no_input_or_state_gradient_on_any_run_kind(make, lengths,
                                                                   monkeypatch_module):
    """The library's cells (the time-batched input projection): every input's and state's
    gradient at a cut step is None on every kind, and xs.grad holds zeros there."""
    T, truncate = 7, 3
    cell = make(2, 3, seed=0)
    rng = np.random.default_rng(0)
    xs = {"x": rng.standard_normal((T, 2, 2))}
    h0s = [rng.standard_normal((2, 3)) for _ in cell.states]

    def loss_of(outs, fins):
        return (outs * outs).sum()

    want = _check_kinds(cell, T, 2, truncate, None if lengths is None else np.array(lengths),
                        xs, h0s, loss_of, monkeypatch_module,
                        kinds=("reference", "all", "lean", "lean, plain path",
                               "checkpointed"))
    for t in range(T - truncate):
        for name in [f"x@{t}", f"x_{t}"] + [f"{s}@{t}" for s in cell.states]:
            assert want[name] is None, name
        assert not np.any(want["xs.grad"][0][t])
    assert want[f"x@{T - 1}"] is not None


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()

"""Code written as for PyTorch, run on unrollgraph: PyTorch tensors keep their dtype (a float64
tensor into a float32 net is refused as a float64 array is), a tensor that requires grad is
refused saying ``t.detach()``, in-place edits of a net's outputs name the net's call, PyTorch's
names missing here say what to write, ``ug.nn`` stacks take PyTorch's keywords at their
defaults, and the training loops refuse a PyTorch loss by name."""

from __future__ import annotations

import numpy as np
import pytest

import unrollgraph as ug

torch = pytest.importorskip("torch")


def _net32(cell=ug.nn.GRUCell, steps=3):
    return ug.unroll(cell(2, 4, seed=0, dtype=np.float32), steps=steps)


# -- 1. a PyTorch tensor keeps its dtype, and is checked as a numpy array is -----------------

def test_float64_torch_input_into_float32_net_is_refused_as_numpys():
    net = _net32()
    with pytest.raises(ug.DTypeError, match="input 'x' is float64 .* computes in float32") as e:
        net(torch.randn(3, 2, 2, dtype=torch.double))
    assert "xs.float()" in str(e.value)  # the PyTorch way to say xs.astype(np.float32)
    with pytest.raises(ug.DTypeError, match="input 'x' is float64"):
        net(np.random.default_rng(0).standard_normal((3, 2, 2)))
    out, h = net(torch.randn(3, 2, 2))  # float32: the same values as its numpy array
    ref, _ = net(torch.randn(3, 2, 2).numpy())
    assert out.dtype == np.float32 and h.dtype == np.float32 and ref.dtype == np.float32


def test_float64_torch_state_into_float32_net_is_refused():
    net = _net32()
    with pytest.raises(ug.DTypeError, match="initial state 'h' is float64"):
        net(torch.randn(3, 2, 2), state=torch.zeros(2, 4, dtype=torch.double))
    with pytest.raises(ug.DTypeError, match="initial state 'h' is float64"):
        net(torch.randn(3, 2, 2), state={"h": torch.zeros(2, 4, dtype=torch.double)})
    out, _ = net(torch.randn(3, 2, 2), state=torch.zeros(2, 4))
    assert out.dtype == np.float32


def test_torch_float64_input_of_float64_net_gives_the_same_values_and_gradients():
    cell = ug.nn.LSTMCell(2, 4, seed=1)
    net = ug.unroll(cell, steps=3)
    x = torch.randn(3, 2, 2, dtype=torch.double, generator=torch.Generator().manual_seed(0))
    out_t, _ = net(x)
    out_t.sum().backward()
    g_t = cell.weight_hh.grad.copy()
    cell.zero_grad()
    out_n, _ = net(x.numpy().copy())
    out_n.sum().backward()
    assert out_t.dtype == np.float64
    np.testing.assert_array_equal(out_t.data, out_n.data)
    np.testing.assert_array_equal(g_t, cell.weight_hh.grad)


def test_the_input_is_copied_from_the_torch_tensor():
    net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=2)
    x = torch.ones(2, 1, 2, dtype=torch.double)
    out, _ = net(x)
    before = out.data.copy()
    x.add_(100.0)  # an edit of the caller's tensor reaches nothing here
    out.sum().backward()
    np.testing.assert_array_equal(net.last_run.value("x@0"), np.ones((1, 2)))
    np.testing.assert_array_equal(out.data, before)


def test_torch_operand_in_arithmetic_is_copied_and_keeps_its_type():
    w = ug.tensor(np.ones(3, np.float32), requires_grad=True)
    c = torch.full((3,), 2.0, dtype=torch.double)
    y = (w * c).sum()
    assert y.dtype == np.float64  # numpy's promotion, as for a float64 array
    c.fill_(5.0)  # the constant holds a copy of its own
    y.backward()
    np.testing.assert_array_equal(w.grad, np.full(3, 2.0, np.float32))


def test_linear_and_tbptt_keep_a_torch_tensors_dtype():
    lin = ug.train.Linear(2, 3, seed=0, dtype=np.float32)
    with pytest.raises(ug.DTypeError, match="the input is float64"):
        lin(torch.ones(4, 2, dtype=torch.double))
    assert lin(torch.ones(4, 2)).dtype == np.float32
    cell = ug.nn.GRUCell(2, 4, seed=0, dtype=np.float32)
    ys = np.zeros((6, 2, 4), np.float32)
    with pytest.raises(ug.DTypeError, match="input 'x' is float64"):
        ug.train.tbptt(cell, torch.randn(6, 2, 2, dtype=torch.double), ys, ug.mse_loss, 3, 3)
    with pytest.raises(ug.DTypeError, match="initial state 'h' is float64"):
        ug.train.tbptt(cell, torch.randn(6, 2, 2), ys, ug.mse_loss, 3, 3,
                       state=torch.zeros(2, 4, dtype=torch.double))
    losses, _ = ug.train.tbptt(cell, torch.randn(6, 2, 2), torch.zeros(6, 2, 4),
                               ug.mse_loss, 3, 3)
    assert len(losses) == 2


def test_ug_tensor_of_a_torch_tensor_keeps_its_type():
    assert ug.tensor(torch.ones(2, dtype=torch.double)).dtype == np.float64
    assert ug.tensor(torch.ones(2)).dtype == np.float32
    assert ug.tensor(torch.ones(2, dtype=torch.half)).dtype == np.float32
    assert ug.tensor(torch.arange(3)).dtype == np.float64


# -- 2. a tensor that requires grad, on another device, bfloat16 --------------------------------

@pytest.mark.parametrize("call", [
    lambda t: ug.unroll(ug.nn.GRUCell(2, 4, seed=0), steps=3)(t),
    lambda t: ug.tensor(t),
    lambda t: ug.tensor(np.ones((3, 2, 2))) + t,
    lambda t: ug.train.Linear(2, 3, seed=0)(t),
    lambda t: ug.gradcheck(lambda a: (a * a).sum(), [t]),
])
def test_torch_tensor_that_requires_grad_says_detach(call):
    t = torch.randn(3, 2, 2, dtype=torch.double, requires_grad=True)
    with pytest.raises(ug.DTypeError) as err:
        call(t)
    text = str(err.value)
    assert "requires grad" in text and "t.detach()" in text
    assert "no gradient computed here flows back into torch" in text
    assert "Can't call numpy()" not in text


def test_torch_initial_state_that_requires_grad_says_detach():
    net = ug.unroll(ug.nn.GRUCell(2, 4, seed=0), steps=3)
    with pytest.raises(ug.DTypeError, match=r"initial state= 'h': .*requires grad.*t\.detach"):
        net(np.zeros((3, 2, 2)), state=torch.zeros(2, 4, dtype=torch.double,
                                                  requires_grad=True))
    out, _ = net(np.zeros((3, 2, 2)), state=torch.zeros(2, 4, dtype=torch.double,
                                                      requires_grad=True).detach())
    assert out.shape == (3, 2, 4)


def test_other_device_and_bfloat16_say_what_to_call():
    with pytest.raises(ug.DTypeError, match=r"device 'meta'.*t\.cpu\(\)"):
        ug.tensor(torch.empty(3, device="meta"))
    with pytest.raises(ug.DTypeError, match=r"bfloat16.*t\.float\(\)"):
        ug.tensor(torch.ones(3, dtype=torch.bfloat16))


# -- 3. in-place edits of a net's outputs name the net's call ----------------------------------

@pytest.mark.parametrize("edit, kind, error", [
    (lambda out, h: out.__setitem__(0, 1.0), "output 'y'", ug.GraphError),
    (lambda out, h: out.add_(1), "output 'y'", ug.GradientError),
    (lambda out, h: out.zero_(), "output 'y'", ug.GradientError),
    (lambda out, h: h.mul_(2), "final state 'h'", ug.GradientError),
    (lambda out, h: out.requires_grad_(False), "output 'y'", ug.GradientError),
    (lambda out, h: out.edit(), "output 'y'", ug.GraphError),
])
def test_inplace_edit_of_a_net_output_names_the_call(edit, kind, error):
    net = ug.unroll(ug.nn.GRUCell(2, 4, seed=0, name="enc"), steps=3)
    out, h = net(np.zeros((3, 2, 2)))
    with pytest.raises(error) as err:
        edit(out, h)
    text = str(err.value)
    assert f"is the {kind} of a call of the unrolled net of cell 'enc'" in text
    assert "op 'item'" not in text
    assert "would not be part of the graph" in text or "only a leaf" in text


# -- 4. PyTorch's names that are not here ------------------------------------------------------

@pytest.mark.parametrize("get, said", [
    (lambda: ug.cat, r"ug\.cat: PyTorch's torch\.cat .* ug\.concat\(tensors, axis=d\)"),
    (lambda: ug.clip_grad_norm_, r"ug\.clip_grad_norm\(params, max_norm\)"),
    (lambda: ug.nn.Linear, r"ug\.train\.Linear\(in_features, out_features\)"),
    (lambda: ug.nn.MSELoss, r"ug\.mse_loss\(prediction, target\)"),
    (lambda: ug.tensor(np.ones((2, 4))).chunk, r"chunk\(\.\.\.\).*\[\.\.\., j \* m"),
    (lambda: ug.tensor(np.ones((2, 4))).split, r"split\(\.\.\.\).*\[\.\.\., j:j \+ m\]"),
    (lambda: ug.tensor(np.ones((2, 4))).flip, r"flip\(\.\.\.\).*\[::-1\]"),
])
def test_pytorch_only_names_say_what_to_write(get, said):
    with pytest.raises(AttributeError, match=said):
        get()


def test_pytorch_only_names_are_not_attributes():
    for mod, names in ((ug, ("cat", "clip_grad_norm_", "flip")),
                       (ug.nn, ("Linear", "MSELoss", "functional"))):
        for name in names:
            assert not hasattr(mod, name) and name not in dir(mod)
    t = ug.tensor(np.ones(3))
    assert not any(hasattr(t, n) for n in ("chunk", "split", "flip"))
    with pytest.raises(AttributeError, match=r"^module 'unrollgraph' has no attribute 'nope'$"):
        ug.nope  # noqa: B018
    with pytest.raises(AttributeError, match=r"^module 'unrollgraph.nn' has no attribute 'x'$"):
        ug.nn.x  # noqa: B018
    with pytest.raises(ImportError):
        from unrollgraph import cat  # noqa: F401


def test_the_written_alternatives_do_what_pytorch_does():
    x = np.arange(24.0).reshape(2, 3, 4)
    t = ug.tensor(x, requires_grad=True)
    tt = torch.tensor(x)
    n, m = 2, x.shape[-1] // 2
    for ours, theirs in zip([t[..., j * m:(j + 1) * m] for j in range(n)], tt.chunk(n, -1)):
        np.testing.assert_array_equal(ours.data, theirs.numpy())
    for ours, theirs in zip([t[..., j:j + 3] for j in range(0, 4, 3)], tt.split(3, -1)):
        np.testing.assert_array_equal(ours.data, theirs.numpy())
    np.testing.assert_array_equal(t[:, ::-1].data, tt.flip(1).numpy())
    np.testing.assert_array_equal(ug.concat([t, t], axis=1).data, torch.cat([tt, tt], 1))


# -- 5. ug.nn stacks take PyTorch's keywords at their defaults --------------------------------

@pytest.mark.parametrize("cls", [ug.nn.RNN, ug.nn.LSTM, ug.nn.GRU])
def test_stacks_accept_pytorchs_defaults(cls):
    extra = {"proj_size": 0} if cls is ug.nn.LSTM else {}
    a = cls(2, 5, num_layers=2, seed=0, batch_first=False, dropout=0.0,
            bidirectional=False, **extra)
    b = cls(2, 5, num_layers=2, seed=0)
    for k, p in a.parameters().items():
        np.testing.assert_array_equal(p.data, b.parameters()[k].data)


@pytest.mark.parametrize("cls", [ug.nn.RNN, ug.nn.LSTM, ug.nn.GRU])
@pytest.mark.parametrize("kw, said", [
    ({"batch_first": True}, r"batch_first=True\): .*np\.swapaxes\(x, 0, 1\)"),
    ({"dropout": 0.2}, r"dropout=0\.2\): there is no dropout .*keep dropout=0"),
    ({"bidirectional": True}, r"bidirectional=True\): .*xs\[::-1\].*ug\.concat"),
])
def test_stacks_refuse_other_values_saying_what_to_do(cls, kw, said):
    with pytest.raises(ug.CellError, match=rf"ug\.nn\.{cls.__name__}\({said}"):
        cls(2, 5, **kw)


def test_lstm_refuses_a_projection():
    with pytest.raises(ug.CellError, match=r"ug\.nn\.LSTM\(proj_size=3\): .*keep proj_size=0"):
        ug.nn.LSTM(2, 5, proj_size=3)


def test_the_bidirectional_recipe_gives_pytorchs_outputs():
    fwd, bwd = ug.nn.GRU(2, 3, seed=0), ug.nn.GRU(2, 3, seed=1)
    ref = torch.nn.GRU(2, 3, bidirectional=True, dtype=torch.double)
    with torch.no_grad():
        for k, p in fwd.parameters().items():
            getattr(ref, k).copy_(torch.tensor(p.data))
            getattr(ref, k + "_reverse").copy_(torch.tensor(bwd.parameters()[k].data))
    xs = np.random.default_rng(0).standard_normal((4, 2, 2))
    out, _ = ug.unroll(fwd, steps=4)(xs)
    out_b, _ = ug.unroll(bwd, steps=4)(xs[::-1])
    both = ug.concat([out, out_b[::-1]], axis=-1)
    np.testing.assert_allclose(both.data, ref(torch.tensor(xs))[0].detach().numpy(), atol=1e-12)


# -- 7. a PyTorch loss handed to the training loops -----------------------------------------

@pytest.mark.parametrize("loss, said", [
    (lambda: torch.nn.MSELoss(), r"PyTorch's torch\.nn\.MSELoss\(\), .* pass ug\.mse_loss"),
    (lambda: torch.nn.functional.mse_loss, r"torch\.nn\.functional\.mse_loss, .*ug\.mse_loss"),
    (lambda: torch.nn.CrossEntropyLoss(), r"CrossEntropyLoss\(\), .* pass ug\.cross_entropy"),
    (lambda: torch.nn.L1Loss(), r"L1Loss\(\), .*\(ug\.mse_loss, ug\.cross_entropy"),
])
def test_fit_refuses_a_pytorch_loss_up_front(loss, said):
    net = ug.unroll(ug.nn.GRUCell(2, 4, seed=0), steps=3)
    opt = ug.optim.SGD(net.cell.parameters(), lr=0.1)
    before = net.cell.weight_hh.data.copy()
    with pytest.raises(ug.TrainingError, match=r"^fit: loss_fn is .*" + said):
        ug.train.fit(net, opt, [(np.zeros((3, 2, 2)), np.zeros((3, 2, 4)))], loss(),
                     progress=False)
    np.testing.assert_array_equal(net.cell.weight_hh.data, before)
    with pytest.raises(ug.TrainingError, match=r"^evaluate: loss_fn is "):
        ug.train.evaluate(net, [(np.zeros((3, 2, 2)), np.zeros((3, 2, 4)))], loss())
    with pytest.raises(ug.TrainingError, match=r"^tbptt: loss_fn is "):
        ug.train.tbptt(net.cell, np.zeros((3, 2, 2)), np.zeros((3, 2, 4)), loss(), 3, 3)


def test_fit_refuses_a_users_torch_module_as_loss():
    class Loss(torch.nn.Module):
        def forward(self, a, b):
            return ((a - b) ** 2).mean()

    net = ug.unroll(ug.nn.GRUCell(2, 4, seed=0), steps=3)
    with pytest.raises(ug.TrainingError, match=r"loss_fn is Loss\(\), a PyTorch module,"):
        ug.train.fit(net, ug.optim.SGD(net.cell.parameters(), lr=0.1),
                     [(np.zeros((3, 2, 2)), np.zeros((3, 2, 4)))], Loss(), progress=False)


def test_load_state_dict_converts_a_bfloat16_state_dict_as_pytorch_does():
    ref = torch.nn.GRUCell(2, 3).to(torch.bfloat16)
    cell = ug.nn.GRUCell(2, 3, seed=0)
    cell.load_state_dict(ref.state_dict())
    assert cell.weight_hh.dtype == np.float64
    np.testing.assert_array_equal(cell.weight_hh.data,
                                  ref.weight_hh.detach().double().numpy())

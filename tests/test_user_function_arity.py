"""A function handed to the library that cannot take the arguments it will be given
(``gradcheck``'s ``fn``, a training loss, a model, a readout, a batch source) is refused before
it is called, with the library's own error naming the function, how many arguments it takes,
how many it would get and the fix, instead of Python's TypeError from inside the library."""

import numpy as np
import pytest

import unrollgraph as ug


def test_gradcheck_refuses_a_function_of_no_arguments_by_name():
    x = ug.tensor([0.5, -1.0], name="x")
    with pytest.raises(ug.GradcheckError) as err:
        ug.gradcheck(lambda: (x * x).sum(), [x])
    msg = str(err.value)
    assert "fn (the lambda on line" in msg and "test_user_function_arity.py" in msg
    assert "takes no arguments" in msg and "with 1 argument" in msg
    assert "lambda x: ..." in msg


def test_gradcheck_names_a_def_and_counts_both_ways():
    def f(a, b):
        return a * b

    x = ug.tensor([0.5, -1.0], name="x")
    with pytest.raises(ug.GradcheckError, match=r"fn \(f\) takes 2 arguments \(a, b\), but "
                                                r"gradcheck calls it with 1 argument"):
        ug.gradcheck(f, [x])
    with pytest.raises(ug.GradcheckError, match=r"takes 2 arguments .* with 3 arguments, .*"
                                                r"lambda x, w, input2: \.\.\."):
        ug.gradcheck(f, [x, ug.tensor([1.0, 2.0], name="w"), np.ones(2)])


def test_gradcheck_names_a_keyword_only_argument_it_cannot_pass():
    x = ug.tensor([0.5, -1.0], name="x")
    with pytest.raises(ug.GradcheckError, match=r"keyword-only argument scale \(a, \*, scale\)"):
        ug.gradcheck(lambda a, *, scale: a * scale, [x])


def test_gradcheck_still_takes_defaults_varargs_and_callable_objects():
    x = ug.tensor([0.5, -1.0], name="x")
    assert ug.gradcheck(lambda a, k=2.0: a * k, [x])
    assert ug.gradcheck(lambda *ts: ts[0] * ts[0], [x])

    class Square:
        def __call__(self, a):
            return a * a

    assert ug.gradcheck(Square(), [x])


def test_a_type_error_inside_fn_is_fn_s_own_not_an_arity_error():
    def fn(a):
        raise TypeError("raised by fn itself")

    with pytest.raises(TypeError, match="raised by fn itself") as err:
        ug.gradcheck(fn, [ug.tensor([1.0])])
    assert not isinstance(err.value, ug.GradcheckError)


W = ug.tensor([0.0], requires_grad=True, name="w")
DATA = [(np.array([1.0]), np.array([2.0]))]


def _fit(**kw):
    args = dict(model=lambda x: W * x, optimizer=ug.optim.SGD([W], lr=0.1), batches=DATA,
                progress=False)
    args.update(kw)
    return ug.train.fit(**args)


def test_fit_refuses_a_model_loss_or_batch_source_of_the_wrong_arity():
    before = W.data.copy()
    with pytest.raises(ug.TrainingError, match=r"fit: model \(the lambda .*\) takes no "
                                               r"arguments, but fit calls it with 1 argument"):
        _fit(model=lambda: W)
    with pytest.raises(ug.TrainingError, match=r"fit: loss_fn \(the lambda .*\) takes 1 "
                                               r"argument \(p\), .* with 2 arguments"):
        _fit(loss_fn=lambda p: p.sum())
    with pytest.raises(ug.TrainingError, match=r"fit: batches .* takes no arguments.*"
                                               r"batches\(epoch\)"):
        _fit(batches=lambda: DATA)
    np.testing.assert_array_equal(W.data, before)  # refused before any step


def test_evaluate_refuses_a_callable_object_of_the_wrong_arity_by_its_class():
    class Model:
        def __call__(self):
            return W

    with pytest.raises(ug.TrainingError, match=r"evaluate: model \(an object of class Model\) "
                                               r"takes no arguments"):
        ug.train.evaluate(Model(), DATA)
    with pytest.raises(ug.TrainingError, match=r"evaluate: loss_fn .* takes 3 arguments"):
        ug.train.evaluate(lambda x: W * x, DATA, loss_fn=lambda a, b, c: a)


def _rnn():
    return ug.nn.RNNCell(1, 3, seed=0), np.ones((6, 2, 1)), np.zeros((6, 2, 3))


def test_tbptt_refuses_a_loss_or_readout_of_the_wrong_arity():
    cell, xs, ys = _rnn()
    with pytest.raises(ug.TrainingError, match=r"tbptt: loss_fn .* takes 1 argument"):
        ug.train.tbptt(cell, xs, ys, lambda p: p.sum(), k1=2, k2=2, progress=False)
    with pytest.raises(ug.TrainingError, match=r"tbptt: readout .* takes 2 arguments \(a, b\), "
                                               r"but tbptt calls it with 1 argument"):
        ug.train.tbptt(cell, xs, ys, ug.mse_loss, k1=2, k2=2, readout=lambda a, b: a,
                       progress=False)


def test_tbptt_truncation_error_refuses_a_loss_or_readout_of_the_wrong_arity():
    cell, xs, ys = _rnn()
    with pytest.raises(ug.TrainingError, match=r"tbptt_truncation_error: loss_fn .* takes no "
                                               r"arguments"):
        ug.tbptt_truncation_error(cell, xs, ys, lambda: 0, k1=2, k2=2)
    with pytest.raises(ug.TrainingError, match=r"tbptt_truncation_error: loss_fn must be "
                                               r"callable"):
        ug.tbptt_truncation_error(cell, xs, ys, "mse", k1=2, k2=2)
    with pytest.raises(ug.TrainingError, match=r"tbptt_truncation_error: readout .* takes no "
                                               r"arguments"):
        ug.tbptt_truncation_error(cell, xs, ys, ug.mse_loss, k1=2, k2=2, readout=lambda: 0)


def test_sequence_model_refuses_a_readout_of_the_wrong_arity():
    cell, _, _ = _rnn()
    with pytest.raises(ug.TrainingError, match=r"SequenceModel: readout .* takes no arguments"
                                               r".*readout\(outputs\[-1\]\)"):
        ug.train.SequenceModel(ug.unroll(cell, 6), readout=lambda: 0, last=True)

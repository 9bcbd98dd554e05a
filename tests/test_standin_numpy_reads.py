"""numpy's shape readers on a cell's stand-in (``np.shape(h)``, ``np.size(h)``) refuse the
batch axis as ``h.shape`` and ``h.size`` do, and the CellError quotes the read as written:
``np.shape(h)[0]``, not ``h.shape[0]``."""

import numpy as np
import pytest

import unrollgraph as ug


def _state():
    cell = ug.Cell("c")
    return cell.state("h", (3,))


def _unpack(h):
    B, H = np.shape(h)
    return B


@pytest.mark.parametrize("read, written", [
    (lambda h: np.shape(h)[0], "np.shape(h)[0]: h is a placeholder of its cell"),
    (lambda h: np.shape(h)[-2], "np.shape(h)[-2]: h is a placeholder"),
    (lambda h: np.shape(h)[:1], "np.shape(h)[:1]: h is a placeholder"),
    (lambda h: np.size(h), "np.size(h): h is a placeholder"),
    (_unpack, "np.shape(h) unpacked or iterated (B, H = np.shape(h)): h is a placeholder"),
    (lambda h: h.shape[0], "h.shape[0]: h is a placeholder"),
    (lambda h: h.size, "h.size: h is a placeholder"),
], ids=["np.shape[0]", "np.shape[-2]", "np.shape[:1]", "np.size", "unpacked", "shape[0]",
        "size"])
def test_a_batch_read_is_quoted_as_written(read, written):
    h = _state()
    with pytest.raises(ug.CellError) as err:
        read(h)
    assert str(err.value).startswith(written)
    assert "h.shape[1:]" in str(err.value)  # (the fix)


def test_a_value_computed_from_a_placeholder_is_quoted_by_its_name():
    h = _state()
    z = ug.tanh(h * 2.0, name="z")
    with pytest.raises(ug.CellError, match=r"^np\.shape\(z\)\[0\]: z is computed from state h"):
        np.shape(z)[0]


def test_the_declared_shape_and_plain_tensors_read_as_before():
    h = _state()
    assert np.shape(h)[1:] == (3,) and np.shape(h)[-1] == 3 and np.ndim(h) == 2
    assert np.shape(h) == (1, 3)
    t = ug.tensor([[1.0, 2.0]])
    assert np.shape(t)[0] == 1 and np.size(t) == 2
    assert type(np.shape(t)) is tuple

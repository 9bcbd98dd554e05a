"""Threads: grad mode and anomaly mode belong to each thread, a net's buffer pool never hands
one array to two callers, and one net can be called from several threads at once."""

import sys
import threading

import numpy as np
import pytest

import unrollgraph as ug
from unrollgraph.schedule import BufferPool

TIMEOUT = 20  # seconds: a deadlock fails the test instead of hanging the suite


def _run_threads(*targets):
    """Run each target in its own thread; re-raise the first exception any of them raised."""
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported in the main thread
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive(), "a thread did not finish"
    if errors:
        raise errors[0]


def test_no_grad_in_one_thread_does_not_stop_another_recording():
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def quiet():
        with ug.no_grad():
            inside.set()
            seen["quiet"] = ug.is_grad_enabled()
            assert done.wait(TIMEOUT)
            w = ug.tensor(1.0, requires_grad=True)
            seen["quiet_records"] = (w * 2.0).requires_grad
        seen["quiet_after"] = ug.is_grad_enabled()

    def busy():
        assert inside.wait(TIMEOUT)
        w = ug.tensor(1.0, requires_grad=True)
        seen["busy"] = ug.is_grad_enabled()
        seen["busy_records"] = (w * 2.0).requires_grad
        done.set()

    _run_threads(quiet, busy)
    assert seen == {"quiet": False, "quiet_records": False, "quiet_after": True,
                    "busy": True, "busy_records": True}
    assert ug.is_grad_enabled()


def test_no_grad_blocks_ending_in_crossed_order_leave_every_thread_recording():
    """Thread 1 enters, thread 2 enters, thread 1 leaves, thread 2 leaves: with one global
    flag, thread 2 restored the 'off' it saw and recording stayed off for the process."""
    steps = [threading.Event() for _ in range(4)]
    after = {}

    def first():
        with ug.no_grad():
            steps[0].set()
            assert steps[1].wait(TIMEOUT)
        after["first"] = ug.is_grad_enabled()
        steps[2].set()

    def second():
        assert steps[0].wait(TIMEOUT)
        with ug.no_grad():
            steps[1].set()
            assert steps[2].wait(TIMEOUT)
        after["second"] = ug.is_grad_enabled()

    _run_threads(first, second)
    assert after == {"first": True, "second": True}
    assert ug.is_grad_enabled()
    assert (ug.tensor(1.0, requires_grad=True) * 2.0).requires_grad


def test_a_new_thread_starts_recording_even_when_started_inside_no_grad():
    seen = []
    with ug.no_grad():
        t = threading.Thread(target=lambda: seen.append(ug.is_grad_enabled()))
        t.start()
        t.join(TIMEOUT)
    assert seen == [True]


def test_anomaly_mode_in_one_thread_does_not_make_another_raise():
    inside, done = threading.Event(), threading.Event()
    caught = []

    def watched():
        with ug.detect_anomaly():
            inside.set()
            assert done.wait(TIMEOUT)
            with pytest.raises(ug.AnomalyError):
                ug.log(ug.tensor([0.0], requires_grad=True))
            caught.append("watched")

    def free():
        assert inside.wait(TIMEOUT)
        with np.errstate(divide="ignore"):
            y = ug.log(ug.tensor([0.0], requires_grad=True))  # no AnomalyError here
        assert np.isneginf(y.data[0])
        caught.append("free")
        done.set()

    _run_threads(watched, free)
    assert sorted(caught) == ["free", "watched"]


def test_enable_grad_and_decorated_functions_are_per_thread_too():
    @ug.no_grad()
    def frozen(w):
        return w * 2.0

    results = {k: [] for k in range(4)}

    def worker(k):
        def run():
            w = ug.tensor(1.0, requires_grad=True)
            for _ in range(200):
                results[k].append((frozen(w).requires_grad, (w * 2.0).requires_grad))
                with ug.no_grad(), ug.enable_grad():
                    results[k].append(((w * 1.0).requires_grad, ug.is_grad_enabled()))
        return run

    _run_threads(*[worker(k) for k in range(4)])
    for k in range(4):
        assert results[k] == [(False, True), (True, True)] * 200


def test_buffer_pool_never_hands_one_array_to_two_threads(monkeypatch):
    """Each thread registers the array it took as held, checks no other thread holds it, and
    marks it with its number. The pool's reference count check is slowed down (comparing
    the count gives up the interpreter) to widen the window between counting and handing the
    array out: without the pool's lock, clashes then come within a few takes."""
    import time

    import unrollgraph.schedule as schedule

    class SlowCount(int):
        __hash__ = int.__hash__

        def __eq__(self, other):
            time.sleep(0)  # another thread may run here, between the count and its use
            return int(self) == other

    def slow_count(a):
        return SlowCount(sys.getrefcount(a) - 1)  # less this function's own reference

    monkeypatch.setattr(schedule, "getrefcount", slow_count)
    pool = BufferPool()
    held: set = set()
    lock = threading.Lock()
    clashes = []

    def worker(k):
        def run():
            for _ in range(200):
                a = pool.take((8,), np.float64)
                with lock:
                    if id(a) in held:
                        clashes.append(k)
                    held.add(id(a))
                a.fill(k)
                time.sleep(0)
                if not (a == k).all():
                    clashes.append(k)
                with lock:
                    held.discard(id(a))
                del a
        return run

    _run_threads(*[worker(k) for k in range(4)])
    assert clashes == []


def _model(seed=0):
    cell = ug.nn.RNNCell(4, 32, seed=seed)
    # T * B * H * 8 bytes = 256 kB: the run's stacked arrays come from the net's buffer pool
    net = ug.unroll(cell, steps=16)
    head = ug.train.Linear(32, 1, seed=seed)
    return cell, ug.train.SequenceModel(net, head, last=True)


def _data(seed, batches=3):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(16, 64, 4)), rng.normal(size=(64, 1))) for _ in range(batches)]


def test_fit_in_one_thread_while_evaluate_runs_in_another():
    """evaluate() (under no_grad) calls the same net while fit() trains it: fit's losses must
    come out exactly as without the other thread."""
    data, held_out = _data(1), _data(2, batches=1)
    cell, model = _model()
    alone = ug.train.fit(model, ug.optim.SGD(model.parameters(), lr=0.05), data, epochs=4,
                         progress=False).batch_loss

    cell, model = _model()
    stop = threading.Event()
    scores, history = [], []

    def train():
        try:
            opt = ug.optim.SGD(model.parameters(), lr=0.05)
            history.extend(ug.train.fit(model, opt, data, epochs=4, progress=False).batch_loss)
        finally:
            stop.set()

    def watch():
        while not stop.is_set() and len(scores) < 500:
            scores.append(ug.train.evaluate(model, held_out))

    _run_threads(train, watch)
    assert history == alone
    assert scores and all(np.isfinite(scores))


def test_one_net_called_from_several_threads_gives_each_its_own_results():
    """Values, input gradients and each thread's last_run are those of a call made alone."""
    cell = ug.nn.LSTMCell(4, 32, seed=3)
    for p in cell.parameters().values():
        p.requires_grad_(False)  # leaves shared by the threads get no gradient: see docs
    net = ug.unroll(cell, steps=16)
    inputs = [np.random.default_rng(k).normal(size=(16, 64, 4)) for k in range(4)]

    def once(xs):
        x = ug.tensor(xs, requires_grad=True)
        out, (h, c) = net(x)
        ((out * out).mean() + h.sum()).backward()
        return out.data.copy(), x.grad.copy(), net.last_run

    expected = [once(xs)[:2] for xs in inputs]
    got = {k: [] for k in range(4)}

    def worker(k):
        def run():
            for _ in range(5):
                out, grad, run_ = once(inputs[k])
                assert net.last_run is run_  # this thread's own last run
                got[k].append((out, grad))
        return run

    _run_threads(*[worker(k) for k in range(4)])
    for k in range(4):
        for out, grad in got[k]:
            np.testing.assert_array_equal(out, expected[k][0])
            np.testing.assert_array_equal(grad, expected[k][1])


def test_last_run_in_a_thread_that_never_called_is_the_latest_call():
    cell = ug.nn.RNNCell(2, 3, seed=0)
    net = ug.unroll(cell, steps=2)
    assert net.last_run is None
    seen = []

    def worker():
        net(np.ones((2, 1, 2)))
        seen.append(net.last_run)

    _run_threads(worker)
    assert net.last_run is seen[0]  # the main thread never called: the latest run
    net(np.zeros((2, 1, 2)))
    mine = net.last_run
    _run_threads(worker)
    assert net.last_run is mine and seen[1] is not mine


def test_two_threads_backward_into_one_leaf_lose_nothing():
    # large enough that numpy lets go of the interpreter lock while it adds
    w = ug.tensor(np.ones(100_000), requires_grad=True, name="w")
    rounds = 200
    go = threading.Barrier(2)

    def work():
        go.wait()
        for _ in range(rounds):
            (w * 2.0).sum().backward()

    threads = [threading.Thread(target=work) for _ in range(2)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unlocked add would be caught
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(interval)
    np.testing.assert_array_equal(w.grad, np.full(100_000, 2.0 * 2 * rounds))


def test_threads_calling_one_net_with_other_batch_sizes_and_dtypes_get_their_own_results():
    """A net keeps its last lean forward plan and initial-state shapes (for one batch size and
    dtype): threads that call it with other ones, interleaved, each get a call made alone."""
    cell = ug.nn.GRUCell(3, 5, seed=1)
    for p in cell.parameters().values():
        p.requires_grad_(False)
    net = ug.unroll(cell, steps=6)
    shapes = [(1, np.float64), (2, np.float64), (3, np.float32), (1, np.float32)]
    inputs = [np.random.default_rng(k).normal(size=(6, b, 3)).astype(dt)
              for k, (b, dt) in enumerate(shapes)]

    def once(xs):
        x = ug.tensor(xs, requires_grad=True)
        out, h = net(x)
        ((out * out).sum() + h.sum()).backward()
        return out.data.copy(), x.grad.copy()

    expected = [once(xs) for xs in inputs]

    def worker(k):
        def run():
            for _ in range(60):
                out, grad = once(inputs[k])
                np.testing.assert_array_equal(out, expected[k][0])
                np.testing.assert_array_equal(grad, expected[k][1])
        return run

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        _run_threads(*[worker(k) for k in range(4)])
    finally:
        sys.setswitchinterval(switch)


def test_gru_nets_called_from_several_threads_with_a_product_loss_get_their_own_results():
    """The gates' gradients written into one pooled array per call (the tiled projection)
    and the loss's product handing over its other operand: each thread's are its own."""
    T, B, H = 16, 64, 32  # the projection's gradient (T, B, 3H) comes from the pool
    cell = ug.nn.GRUCell(4, H, seed=3)
    for p in cell.parameters().values():
        p.requires_grad_(False)  # leaves shared by the threads get no gradient: see docs
    net = ug.unroll(cell, steps=T)
    inputs = [np.random.default_rng(k).normal(size=(T, B, 4)) for k in range(4)]
    weights = [ug.tensor(np.random.default_rng(10 + k).normal(size=(T, B, H)))
               for k in range(4)]

    def once(k):
        x = ug.tensor(inputs[k], requires_grad=True)
        out, _ = net(x)
        (out * weights[k]).sum().backward()
        return out.data.copy(), x.grad.copy(), out.grad.copy()

    expected = [once(k) for k in range(4)]
    got = {k: [] for k in range(4)}

    def worker(k):
        def run():
            for _ in range(5):
                got[k].append(once(k))
        return run

    _run_threads(*[worker(k) for k in range(4)])
    for k in range(4):
        for result in got[k]:
            for a, b in zip(result, expected[k]):
                np.testing.assert_array_equal(a, b)

"""Thread settings, and training in several Python threads at once."""

import queue
import re
import threading

import numpy as np
import pytest

import backprop as bp


def digits_net(seed=0, **kwargs):
    return bp.Sequential(
        bp.Dense(64, 24, activation="relu"),
        bp.Dense(24, 10, activation="softmax"),
        loss="cross_entropy",
        dtype="float32",
        seed=seed,
        **kwargs,
    )


def test_thread_count_can_be_set_and_restored():
    before = bp.get_num_threads()
    assert before >= 1
    with bp.num_threads(1):
        assert bp.get_num_threads() == 1
    assert bp.get_num_threads() == before
    with pytest.raises(ValueError, match="n"):
        bp.set_num_threads(0)
    info = bp.blas_info()
    assert set(info) == {"library", "config", "threads"}


def test_training_leaves_the_pool_as_it_was():
    X, y = bp.datasets.load_digits()
    with bp.num_threads(2):
        digits_net().fit(X, y, epochs=1)  # small: runs on one thread inside
        assert bp.get_num_threads() == 2
    with bp.num_threads(1):
        digits_net(n_threads=2).fit(X, y, epochs=1)  # never more than the pool allows
        assert bp.get_num_threads() == 1


def test_n_threads_is_checked():
    with pytest.raises(ValueError, match="n_threads"):
        digits_net(n_threads=0)
    with pytest.raises(TypeError, match="n_threads"):
        digits_net(n_threads="2")
    with pytest.raises(TypeError, match="n_threads"):
        digits_net(n_threads=True)
    for huge in (2**15 + 1, 2**31, 2**32 + 1, 2**64, np.int64(2**40)):
        with pytest.raises(ValueError, match="n_threads must be at most 32768"):
            digits_net(n_threads=huge)
    net = digits_net(n_threads=2)
    with pytest.raises(ValueError, match="n_threads"):
        net.n_threads = 2**31
    assert net.n_threads == 2
    assert digits_net(n_threads=np.int32(2**15)).n_threads == 2**15  # runs on ≤ the pool


def test_thread_counts_beyond_an_int_are_refused_not_wrapped():
    """OpenBLAS takes a C int: 2**32 + 1 would wrap to 1 thread, 2**31 and
    2**64 to counts it ignores.  Every count above 2**15 is refused, and the
    pool keeps its size."""
    with bp.num_threads(2):
        before = bp.get_num_threads()
        for huge in (2**15 + 1, 2**31, 2**32 + 1, 2**64, -(2**32) + 1):
            with pytest.raises(ValueError, match=r"\bn must be"):
                bp.set_num_threads(huge)
            assert bp.get_num_threads() == before
        with pytest.raises(TypeError, match=r"\bn must be an integer"):
            bp.set_num_threads(True)
        with pytest.raises(ValueError, match=r"\bn must be at most"):
            with bp.num_threads(2**32 + 1):
                pass
        assert bp.get_num_threads() == before


def test_a_count_beyond_the_pools_largest_size_is_capped_by_openblas():
    cap = re.search(r"MAX_THREADS=(\d+)", bp.blas_info()["config"])
    if cap is None:
        pytest.skip("this BLAS does not say how large its pool can grow")
    with bp.num_threads(2**15):
        assert bp.get_num_threads() == min(int(cap.group(1)), 2**15)


def test_networks_trained_in_threads_match_sequential_training():
    """The GIL is released during fit; each network has its own workspace, so
    training four at once gives what training them one by one gives, bit for
    bit: every product here is below 4 MFLOP and runs on one BLAS thread
    either way, so the same kernel sums the same shapes in the same order."""
    X, y = bp.datasets.load_digits()
    alone = [digits_net(seed) for seed in range(4)]
    for net in alone:
        net.fit(X, y, epochs=3, batch_size=16, lr=0.05)
    together = [digits_net(seed) for seed in range(4)]
    threads = [
        threading.Thread(target=net.fit, args=(X, y), kwargs=dict(epochs=3, batch_size=16, lr=0.05))
        for net in together
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a.params, b.params)


def test_networks_trained_in_threads_give_the_pool_back_its_size():
    """The first engine call to begin reads the pool's size, the last to end
    restores it, and calls in between shrink it (to one thread each while
    several run, or for small products).  A call beginning just as the last
    one ended could read the shrunken size and take it for the user's: four
    threads taking short steps on networks of their own make calls begin and
    end against each other thousands of times per repetition."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(4, 4)), rng.normal(size=(4, 1))

    def train(net):
        for _ in range(1000):
            net.train_step(X, y, lr=0.01)

    with bp.num_threads(2):
        if bp.get_num_threads() != 2:
            pytest.skip("the BLAS pool's size cannot be set here")
        for repetition in range(80):
            nets = [
                bp.Sequential(
                    bp.Dense(4, 3, activation="tanh"),
                    bp.Dense(3, 1),
                    seed=i,
                    n_threads=1 if i % 2 else None,
                )
                for i in range(4)
            ]
            threads = [threading.Thread(target=train, args=(net,)) for net in nets]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert bp.get_num_threads() == 2, f"pool shrunk in repetition {repetition}"


def test_ctrl_c_stops_training_after_the_current_batch(tmp_path):
    """fit hands each epoch to the core in stretches of whole batches (tens
    of milliseconds), so a KeyboardInterrupt (Ctrl-C) lands within one
    stretch, not at the end of a long epoch; the network stays usable and
    training can go on.  The child says when its long epoch is under way
    (its main thread in the core) and Ctrl-C is sent then; how far it got is
    counted in batches (its optimizer steps), which a busy machine does not
    change, not in seconds."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(
        "import sys, threading, time, numpy as np, backprop as bp\n"
        "X, y = bp.datasets.load_digits(dtype='float32')\n"
        "X, y = np.tile(X, (30, 1)), np.tile(y, 30)\n"
        "net = bp.Sequential(bp.Dense(64, 1024, activation='relu'),\n"
        "                    bp.Dense(1024, 1024, activation='relu'),\n"
        "                    bp.Dense(1024, 10, activation='softmax'), loss='cross_entropy',\n"
        "                    dtype='float32', seed=0)\n"
        "net.fit(X[:3200], y[:3200], epochs=1)\n"
        "class Began(bp.callbacks.Callback):\n"
        "    def on_epoch_begin(self, net, epoch, logs):\n"
        "        steps, main = net.optimizer_steps, threading.main_thread().ident\n"
        "        def watch():  # once fit's thread is in train_stretch, its call of the core\n"
        "            while sys._current_frames()[main].f_code.co_name != 'train_stretch':\n"
        "                time.sleep(0.001)\n"
        "            print('began', steps, len(X) // 32, flush=True)\n"
        "        threading.Thread(target=watch, daemon=True).start()\n"
        "try:\n"
        "    net.fit(X, y, epochs=1, batch_size=32, lr=0.01, callbacks=[Began()])\n"
        "except KeyboardInterrupt:\n"
        "    print('stopped', np.isfinite(net.params).all(), net.optimizer_steps, flush=True)\n"
        "    net.partial_fit(X[:64], y[:64])\n"
        "    print('continued', net.evaluate(X[:500], y[:500])['accuracy'] > 0.3, flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    lines: queue.Queue = queue.Queue()

    def read():  # the child's lines, then None when its output ends
        for text in proc.stdout:
            lines.put(text)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()

    def line():  # the child's next line; a generous wait, for a busy machine
        text = lines.get(timeout=300)
        assert text is not None, f"the child ended early, exit code {proc.wait()}"
        return text.split()

    try:
        began = line()  # (the long epoch under way)
        assert began[:1] == ["began"], began
        proc.send_signal(signal.SIGINT)
        stopped = line()
        assert stopped[:2] == ["stopped", "True"], stopped
        assert line() == ["continued", "True"]
        assert proc.wait(timeout=300) == 0
    finally:
        proc.kill()
        proc.wait()
    first, batches = int(began[1]), int(began[2])
    assert batches > 1000  # a long epoch …
    assert int(stopped[2]) - first < batches / 2  # … interrupted well before its end


def test_one_network_from_two_threads_at_once_is_refused_not_corrupted():
    """Two threads on the same network: each call either runs alone or
    raises a clear error (the engine admits one call at a time and never
    reallocates under a running one); the network stays finite and works."""
    X, y = bp.datasets.load_digits()
    X = np.ascontiguousarray(np.tile(X, (20, 1)))  # epochs long enough to overlap
    y = np.tile(y, 20)
    net = digits_net()
    errors, done = [], []

    def train(batch):
        try:
            net.fit(X, y, epochs=2, batch_size=batch, lr=0.01)
            done.append(batch)
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=train, args=(b,)) for b in (16, 64, 16, 256)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors, "the calls should have overlapped"
    assert all("in use by another thread" in e for e in errors)
    assert done and np.isfinite(net.params).all()
    assert net.evaluate(X[:500], y[:500])["accuracy"] > 0.8  # still a working network

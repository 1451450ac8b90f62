"""The `onnx` section: the digits network exported to ONNX and run in ONNX
Runtime, against backprop's own predict.

    python -m bench --sections onnx [--quick] [--json out.json]

The network is the digits section's (64 → 32 relu → 10 softmax, float32,
20 epochs of SGD on the embedded digits, batch 32, lr 0.1), exported by
backprop.onnx.export with labels=True and run by onnxruntime.InferenceSession
on the CPU: one row on a session of one intra-op thread (as backprop's
products below 4 MFLOP run on one), batches on a session of the run's
threads.  Timed, the systems interleaved (timing.interleave):

- one row: backprop net.predict(x) and net.predict_proba(x) with x 1-D;
  ONNX Runtime's session.run on x as (1, 64), for the probabilities alone
  and for the probabilities with the labels; each sample the mean of as many
  back-to-back calls as take `min_sample` seconds (per call);
- 10,000 rows (throughput_rows): the same calls on a batch of test digits
  repeated to that many rows (per row, and rows per second).

Also the agreement on the test set: the largest |Δp| between the two
runtimes' probabilities, the share of equal labels, and a few digits side
by side (true digit, each runtime's label and probability of it).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from .timing import calls, interleave, per_unit

__all__ = ["run", "SHOWN"]

SHOWN = 8  # test digits printed side by side


def _model(cfg):
    """The trained digits network and its test rows."""
    import backprop as bp

    X_train, X_test, y_train, y_test = bp.datasets.load_digits(return_split=True, dtype="float32")
    net = bp.Sequential(
        bp.Dense(64, 32, "relu"),
        bp.Dense(32, 10, "softmax"),
        loss="cross_entropy",
        dtype="float32",
        seed=0,
    )
    net.fit(X_train, y_train, epochs=cfg.digits_epochs, batch_size=32, lr=0.1)
    return net, X_test, y_test


def _sessions(net, *threads):
    """The exported file's size, and an ONNX Runtime session of it for each
    count of intra-op threads."""
    import onnxruntime

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "digits.onnx")
        net.to_onnx(path, labels=True)
        sessions = []
        for n in threads:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = n
            options.inter_op_num_threads = 1
            sessions.append(
                onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            )
        return os.path.getsize(path), sessions


def _samplers(net, sess, x, per):
    """What is timed: each system's call on x, as a sampler made by per(fn)."""
    feed = {"input": x if x.ndim == 2 else x[None]}
    return {
        "backprop predict": per(lambda: net.predict(x)),
        "backprop predict_proba": per(lambda: net.predict_proba(x)),
        "onnxruntime probabilities": per(lambda: sess.run(["probabilities"], feed)),
        "onnxruntime probabilities + label": per(lambda: sess.run(None, feed)),
    }


def run(cfg, notes, progress) -> dict:
    """The section's results (an empty dict, and a note, without onnx and
    onnxruntime)."""
    from .machine import optional

    missing = [name for name in ("onnx", "onnxruntime") if optional(name) is None]
    if missing:
        notes.append(f"onnx: {' and '.join(missing)} not installed, skipped")
        return {}
    import onnxruntime

    net, X_test, y_test = _model(cfg)
    size, (one, sess) = _sessions(net, 1, cfg.threads)
    proba, labels = sess.run(None, {"input": X_test})
    ours = net.predict_proba(X_test)
    ours_labels = net.predict(X_test)
    rows = X_test[np.arange(cfg.throughput_rows) % len(X_test)]
    errors: dict[str, str] = {}
    single = interleave(
        _samplers(net, one, X_test[0], lambda fn: calls(fn, cfg.min_sample)),
        cfg.reps,
        cfg.warmup,
        errors,
        cfg.settle,
    )
    progress("onnx single row: done")
    batch = interleave(
        _samplers(net, sess, rows, lambda fn: per_unit(fn, len(rows))),
        cfg.reps,
        cfg.warmup,
        errors,
        cfg.settle,
    )
    progress("onnx batch: done")
    notes.extend(f"onnx {name}: failed: {err}" for name, err in errors.items())
    shown = [
        {
            "digit": int(y_test[i]),
            "backprop": int(ours_labels[i]),
            "onnxruntime": int(labels[i]),
            "p_backprop": float(ours[i, ours_labels[i]]),
            "p_onnxruntime": float(proba[i, labels[i]]),
        }
        for i in range(min(SHOWN, len(y_test)))
    ]
    return {
        "onnxruntime": onnxruntime.__version__,
        "file_bytes": size,
        "test_rows": len(X_test),
        "max_abs_dp": float(np.abs(proba - ours).max()),
        "labels_agree": float(np.mean(labels == ours_labels)),
        "accuracy_backprop": float(np.mean(ours_labels == y_test)),
        "accuracy_onnxruntime": float(np.mean(labels == y_test)),
        "shown": shown,
        "threads": cfg.threads,
        "single_row": {name: st.to_dict() for name, st in single.items()},
        "rows": len(rows),
        "batch": {name: st.to_dict() for name, st in batch.items()},
    }

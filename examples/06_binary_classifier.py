"""A binary classifier: one sigmoid unit with binary cross-entropy, deciding
"like" or "dislike" from four features (height, weight, eye size and nose
height, in centimetres and kilograms, standardised before training).

For one sample the unit gives p = σ(w·x + b), the probability of "like";
its loss is −[y log p + (1 − y) log(1 − p)]: small when p is close to the
label, large when the unit is confidently wrong.

    python examples/06_binary_classifier.py [OUTPUT_DIR]       → binary_classifier.png
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import backprop as bp
from backprop import plot

#                 height  weight  eye size  nose height   like?
TABLE = np.array(
    [
        [170.0, 65.0, 3.1, 5.0, 1],
        [182.0, 80.0, 2.9, 5.6, 1],
        [160.0, 52.0, 3.3, 4.6, 1],
        [175.0, 90.0, 2.2, 6.4, 0],
        [168.0, 95.0, 2.0, 6.9, 0],
        [190.0, 110.0, 2.4, 7.1, 0],
        [158.0, 50.0, 3.4, 4.4, 1],
        [172.0, 100.0, 2.1, 6.6, 0],
        [165.0, 58.0, 3.0, 4.9, 1],
        [185.0, 105.0, 2.3, 7.0, 0],
    ]
)


def main(out: str = ".") -> dict:
    X, y = TABLE[:, :4], TABLE[:, 4].astype(int)
    mean, std = X.mean(0), X.std(0)
    Xs = (X - mean) / std
    net = bp.Sequential(bp.Dense(4, 1, activation="sigmoid"), loss="binary_cross_entropy", seed=0)
    history = net.fit(Xs, y, epochs=300, batch_size=10, lr=0.5)
    p = net.predict_proba(Xs)[:, 0]
    single = [bp.losses.binary_cross_entropy([pi], [yi]) for pi, yi in zip(p, y)]
    for row, pi, yi, loss in zip(X, p, y, single):
        print(f"{row} like={yi}: p(like) = {pi:.3f}, loss {loss:.4f}")
    newcomer = (np.array([[176.0, 70.0, 3.0, 5.2]]) - mean) / std
    print(
        f"a newcomer (176 cm, 70 kg, eyes 3.0, nose 5.2): p(like) = "
        f"{net.predict_proba(newcomer)[0, 0]:.3f}"
    )
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    plot.loss_curves({"binary cross-entropy": history}, ax=left, log=True)
    right.bar(np.arange(len(p)), p, color=["tab:green" if yi else "tab:red" for yi in y])
    right.axhline(0.5, color="k", linewidth=0.8)
    right.set(
        xlabel="sample (green: like, red: dislike)",
        ylabel="p(like)",
        title="predicted probability per sample",
        ylim=(0, 1),
    )
    plot.save(fig, f"{out}/binary_classifier.png")
    return {"p": p, "y": y, "losses": single, "history": history}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")

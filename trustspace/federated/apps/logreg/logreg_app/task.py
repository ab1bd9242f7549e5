"""The model: binary logistic regression by full-batch gradient descent, in plain NumPy.

The same functions train the federated model (on each provider's rows) and the central
baseline (on all rows), so a comparison of the two measures federation, not two codes.
Weights are one vector: one coefficient per feature, then the bias.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float64]
LABEL = "label"


def load_csv(path: str | Path) -> tuple[Matrix, Matrix]:
    """Features and 0/1 labels of a CSV file with a header row and a `label` column."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().strip().split(",")
    if LABEL not in header:
        raise ValueError(f"{path}: no {LABEL!r} column")
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    col = header.index(LABEL)
    y = table[:, col]
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{path}: labels must be 0 or 1")
    return np.delete(table, col, axis=1), y


def moments(x: Matrix) -> tuple[int, Matrix, Matrix]:
    """Row count, column sums and column sums of squares: what standardisation needs."""
    return x.shape[0], x.sum(axis=0), (x * x).sum(axis=0)


def pooled_scale(parts: list[tuple[int, Matrix, Matrix]]) -> tuple[Matrix, Matrix]:
    """Mean and standard deviation over all rows, from each part's `moments`."""
    n = sum(p[0] for p in parts)
    total = np.sum([p[1] for p in parts], axis=0)
    squares = np.sum([p[2] for p in parts], axis=0)
    mean = total / n
    var = np.maximum(squares / n - mean * mean, 0.0)
    std = np.sqrt(var)
    return mean, np.where(std > 0, std, 1.0)


def standardise(x: Matrix, mean: Matrix, std: Matrix) -> Matrix:
    return (x - mean) / std


def initial_weights(n_features: int) -> Matrix:
    return np.zeros(n_features + 1, dtype=np.float64)


def _sigmoid(z: Matrix) -> Matrix:
    out: Matrix = 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + e^-z), without overflow
    return out


def predict_proba(w: Matrix, x: Matrix) -> Matrix:
    return _sigmoid(x @ w[:-1] + w[-1])


def train(w: Matrix, x: Matrix, y: Matrix, epochs: int, lr: float, l2: float) -> Matrix:
    """`epochs` steps of full-batch gradient descent on the mean log loss + l2/2 |coef|^2."""
    w = w.copy()
    n = x.shape[0]
    for _ in range(epochs):
        err = predict_proba(w, x) - y
        grad = np.empty_like(w)
        grad[:-1] = x.T @ err / n + l2 * w[:-1]
        grad[-1] = err.mean()
        w -= lr * grad
    return w


def evaluate(w: Matrix, x: Matrix, y: Matrix) -> tuple[float, float]:
    """Mean log loss and accuracy."""
    p = np.clip(predict_proba(w, x), 1e-12, 1 - 1e-12)
    loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    accuracy = float(np.mean((p >= 0.5) == (y == 1.0)))
    return loss, accuracy

"""The components of the input-conditional score, each a measurement of one way an output can be unusual.

The k-th-nearest-neighbour cosine distance, the residual of a ridge regression of the output's
embedding on its input's, a Mahalanobis distance with a shrinkage covariance, and the bank of
approved inputs that makes relevance relative to what is usual for an input. Combined into one
score by :mod:`conformance.stats.combined`.
"""

from __future__ import annotations

import numpy as np


def unit_rows(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norms == 0, 1.0, norms)


def oas_precision(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision matrix of ``x`` under the Oracle Approximating Shrinkage covariance.

    Chen, Wiesel, Eldar, Hero, "Shrinkage algorithms for MMSE covariance
    estimation", IEEE TSP 2010 -- well conditioned when the dimension is close
    to, or above, the number of rows (as for ~100 approved outputs in 384
    dimensions).
    """
    n, d = x.shape
    mean = x.mean(axis=0)
    centred = x - mean
    emp = centred.T @ centred / n
    mu = np.trace(emp) / d
    alpha = np.mean(emp**2)
    num = alpha + mu**2
    den = (n + 1.0) * (alpha - mu**2 / d)
    shrink = 1.0 if den == 0 else min(1.0, num / den)
    cov = (1.0 - shrink) * emp + shrink * mu * np.eye(d)
    if mu == 0:
        cov = cov + 1e-12 * np.eye(d)
    return mean, np.linalg.inv(cov)


def mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    c = x - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", c, precision, c), 0.0))


def kth_cosine_distance(q: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    sims = unit_rows(q) @ unit_rows(ref).T
    k = min(k, ref.shape[0])
    return 1.0 - np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k]


def ridge_coef(xc: np.ndarray, yc: np.ndarray, ridge: float) -> np.ndarray:
    """The ridge coefficients of centred ``yc`` on centred ``xc``, solved through the smaller system: the primal
    ``(X'X + rI)^-1 X'Y`` with more rows than dimensions, the dual ``X'(XX' + rI)^-1 Y`` with fewer."""
    if xc.shape[0] > xc.shape[1]:
        return np.linalg.solve(xc.T @ xc + ridge * np.eye(xc.shape[1]), xc.T @ yc)
    return xc.T @ np.linalg.solve(xc @ xc.T + ridge * np.eye(xc.shape[0]), yc)


class Components:
    """The embedding components, fitted on one set of fit rows."""

    def __init__(self, y: np.ndarray, x: np.ndarray, *, k: int, ridge: float) -> None:
        self.k = k
        self.reference = y
        self.x_mean, self.y_mean = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - self.x_mean, y - self.y_mean
        self.coef = ridge_coef(xc, yc, ridge)
        self.mean, self.precision = oas_precision(y)
        self.res_mean = np.zeros(y.shape[1])
        self.res_precision = np.eye(y.shape[1])

    def residuals(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (y - self.y_mean) - (x - self.x_mean) @ self.coef

    def __call__(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.column_stack([
            kth_cosine_distance(y, self.reference, self.k),
            mahalanobis(self.residuals(y, x), self.res_mean, self.res_precision),
            1.0 - np.einsum("ij,ij->i", unit_rows(x), unit_rows(y)),
            mahalanobis(y, self.mean, self.precision),
        ])


def smooth_max(z: np.ndarray) -> np.ndarray:
    """``log(sum(exp(asinh(z))))`` per row. asinh first: log-like growth keeps one huge value (say 40
    refusal markers) from swamping the others below float resolution, which would bring back ties."""
    z = np.arcsinh(z)
    top = z.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(z - top).sum(axis=1))


class InputBank:
    """Values of the fit part's outputs by distinct input, to say what is usual for an input like a new one."""

    def __init__(self, x: np.ndarray, values: np.ndarray) -> None:
        unique, inverse = np.unique(x, axis=0, return_inverse=True)
        inverse = np.asarray(inverse).reshape(-1)
        total = np.zeros((unique.shape[0], values.shape[1]))
        np.add.at(total, inverse, values)
        self.inputs = unit_rows(unique)
        self.values = total / np.bincount(inverse, minlength=unique.shape[0])[:, None]

    def expected(self, x: np.ndarray, k: int) -> np.ndarray:
        """Mean value over the outputs of the ``k`` fit inputs nearest each row of ``x`` (cosine)."""
        sims = unit_rows(x) @ self.inputs.T
        k = min(k, self.inputs.shape[0])
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        return self.values[nearest].mean(axis=1)

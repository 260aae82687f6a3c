"""Embedding quality: a linear probe (standardized features -> logistic regression) trained
on train-split features and scored on test-split features; and the 2-D views for scatter plots.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

MAX_ITER = 200
# sklearn's OpenMP/BLAS threads fight TensorFlow's (spin-waiting) thread pools for the same
# cores: on 2 cores a 2000-point t-SNE took 69 s with default threading and 12 s with one
# thread, the logistic regression 3.9 s vs 1.5 s. So sklearn gets a quarter of the cores.
SKLEARN_THREADS = max(1, (os.cpu_count() or 1) // 4)


def side_by_side(*calls):
    """The results of independent sklearn calls (zero-argument callables), run at once in
    threads: each keeps SKLEARN_THREADS threads and sklearn's kernels (BLAS, its Cython
    loss and t-SNE gradients) release the GIL, so two calls use the cores one leaves idle.
    Each call computes exactly what it computes alone."""
    with threadpool_limits(SKLEARN_THREADS), ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


def linear_probe(train_x, train_y, test_x, test_y, seed: int = 0) -> float:
    """Test accuracy of logistic regression on standardized features."""
    clf = fit(train_x, train_y, seed)
    return correct(clf, test_x, test_y) / len(test_y)


def correct(clf, x, y) -> int:
    """How many of (x, y) a fitted probe classifies right (test features a batch at a
    time: the accuracy is the sum over batches / the count)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    with threadpool_limits(SKLEARN_THREADS):
        return int(np.sum(clf.predict(x) == np.asarray(y)))


def fit(train_x, train_y, seed: int = 0):
    """Logistic regression on standardized features, fitted (a sklearn pipeline)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x = np.asarray(train_x, np.float64).reshape(len(train_x), -1)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER, random_state=seed))
    with warnings.catch_warnings(), threadpool_limits(SKLEARN_THREADS):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(train_x, train_y)


def tsne_2d(features, seed: int = 0) -> np.ndarray:
    """t-SNE to 2-D (PCA init, perplexity capped for small samples)."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, np.float32).reshape(len(features), -1)
    if x.shape[1] > 50 and len(x) > 50:  # PCA to 50 dims first, the usual t-SNE recipe
        from sklearn.decomposition import PCA

        with threadpool_limits(SKLEARN_THREADS):
            x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    with threadpool_limits(SKLEARN_THREADS):
        return TSNE(
            n_components=2,
            perplexity=perplexity,
            init="pca",
            learning_rate="auto",
            max_iter=500,
            random_state=seed,
        ).fit_transform(x)

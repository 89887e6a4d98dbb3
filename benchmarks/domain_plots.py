"""Small PNGs for the domain-shift benchmark: confusion matrices and feature embeddings.

A handful of figures only (one seed, a few methods): they are for reading, the numbers
live in the JSON. Style (150 dpi, >= 9 pt text) comes from ``cryoshift.training.plots``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cryoshift.training.plots import FONT, pyplot, save


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], title: str, path: Path) -> Path:
    """Row-normalised confusion matrix (true class down, predicted across)."""
    cm = np.asarray(cm, dtype=float)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 0.6 * k, 1.4 + 0.6 * k))
    ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    f"{rows[i, j]:.2f}"[1:] if rows[i, j] < 1 else "1",
                    ha="center",
                    va="center",
                    fontsize=FONT - 1,
                    color="white" if rows[i, j] > 0.6 else "black",
                )
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)


def pca_2d(features: np.ndarray) -> np.ndarray:
    """Project features on their first two principal axes (SVD of the centred matrix)."""
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def plot_embedding(
    source_features: np.ndarray,
    source_labels: np.ndarray,
    target_features: np.ndarray,
    target_labels: np.ndarray,
    class_names: Sequence[str],
    title: str,
    path: Path,
) -> Path:
    """PCA of source (circles) and target (crosses) features coloured by class.

    A joint projection shows both what adaptation is meant to do (the two domains overlap)
    and what it must not do (classes merge).
    """
    both = pca_2d(np.concatenate([source_features, target_features]))
    src, tgt = both[: len(source_features)], both[len(source_features) :]
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.0, 4.8))
    for k, name in enumerate(class_names):
        colour = cmap(k % 10)
        s = source_labels == k
        t = target_labels == k
        ax.scatter(src[s, 0], src[s, 1], s=6, marker="o", color=colour, alpha=0.5, label=name)
        ax.scatter(tgt[t, 0], tgt[t, 1], s=10, marker="x", color=colour, alpha=0.8)
    ax.set_title(title + "\n(o source, x target)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return save(fig, path)

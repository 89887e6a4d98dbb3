"""Figures of a run: loss curves, confusion matrices, source-vs-target feature embeddings.

Drawn on ``matplotlib.figure.Figure`` with an Agg canvas (no display on cluster nodes), the
house style applied by :func:`styled` around the drawing only. Why: ``train()`` is called from
notebooks, and it switched the whole process to the Agg backend and rewrote ``rcParams``
(mathtext off, 150 dpi, font sizes), so the notebook's own inline figures stopped showing.
The embedding is a PCA fitted on source and target features together, so the two domains share
axes in each panel.

Every figure the project writes to disk takes its style from here (``STYLE``, ``DPI``, ``FONT``;
the benchmarks import them too): PNGs at 150 dpi with >= 9 pt text everywhere, including the
numbers in confusion-matrix cells, and a legend wherever there are several series.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryoshift.runtime.outfiles import replacing

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 150
FONT = 10  # pt; nothing smaller than FONT - 1 (= 9 pt) is drawn
STYLE = {
    "font.size": FONT,
    "axes.titlesize": FONT + 1,
    "axes.labelsize": FONT,
    "figure.titlesize": FONT + 2,
    "legend.fontsize": FONT - 1,
    "xtick.labelsize": FONT - 1,
    "ytick.labelsize": FONT - 1,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "text.parse_math": False,  # class names are text, not TeX ("$x$" in italics, "$\\foo$" an error)
}


def pyplot():
    """matplotlib.pyplot on the Agg backend with the house style, for command-line scripts only
    (the benchmarks): it changes the process's backend and ``rcParams`` for good. The package's
    own figures use :func:`figure` and :func:`styled`, which leave both alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


@contextlib.contextmanager
def styled() -> Iterator[None]:
    """The house style (``STYLE``) within the block only; the caller's ``rcParams`` come back after.
    matplotlib reads most of these settings when an artist is made and tick labels only when the
    figure is drawn, so a figure is made, drawn and saved inside one such block."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        yield


def figure(**kwargs: Any) -> Figure:
    """A new figure on its own Agg canvas: not registered with pyplot (nothing to close, no
    backend chosen), so making it changes nothing in the process. Call it inside :func:`styled`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``DPI`` (tight box, so long tick labels are not cut) and close it.

    Drawn into a new temporary file that is then put in place (runtime/outfiles.py): a link planted
    at the name in a received run folder (``plots/embedding.png -> victim``) is replaced, never
    written through, and a reader never sees half an image. The format is the name's suffix.
    A figure of :func:`figure` needs no closing; one made with pyplot (the benchmarks) is closed."""
    try:
        with styled(), replacing(path, "wb") as fh:
            fig.savefig(fh, format=path.suffix.lstrip(".").lower() or "png", dpi=DPI, bbox_inches="tight")
    finally:
        if getattr(fig.canvas, "manager", None) is not None:  # pyplot's: it keeps a reference
            import matplotlib.pyplot as plt

            plt.close(fig)
    return path


def plot_history(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Loss components per epoch (left) and label-free selection scores (right)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with styled():
        return _draw_history(history, path)


def _draw_history(history: Sequence[dict[str, Any]], path: Path) -> Path:
    epochs = [int(r["epoch"]) for r in history]
    fig = figure(figsize=(10, 4))
    ax_loss, ax_sel = fig.subplots(1, 2)
    keys = [k for k in history[0] if k.startswith("loss_")] if history else []
    for key in keys:
        ax_loss.plot(epochs, [float(r.get(key, np.nan)) for r in history], marker="o", label=key[5:])
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("mean loss")
    if keys:
        ax_loss.legend()
    for key, label in (
        ("src_val_acc", "source val accuracy"),
        ("tgt_im", "target IM"),
        ("snd", "target SND"),
        ("tgt_entropy", "target entropy"),
    ):
        if history and key in history[0]:
            ax_sel.plot(epochs, [float(r.get(key, np.nan)) for r in history], marker="o", label=label)
    ax_sel.set_xlabel("epoch")
    ax_sel.set_ylim(0, 1.05)
    if ax_sel.get_legend_handles_labels()[0]:
        ax_sel.legend()
    ax_sel.set_title("label-free selection scores")
    fig.tight_layout()
    return save(fig, path)


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with counts in the cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with styled():
        return _draw_confusion(cm, class_names, path, title)


def _draw_confusion(cm: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> Path:
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    k = len(class_names)
    fig = figure(figsize=(1.2 + 0.6 * k, 1.0 + 0.6 * k))
    ax = fig.subplots()
    ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                color="white" if frac[i, j] > 0.5 else "black",
                fontsize=FONT - 1,
            )
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project onto the two leading principal components (SVD of the centred data)."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:2]
    out = centred @ comps.T
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def plot_embedding(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    path: Path,
    target_classes: tuple[np.ndarray, Sequence[str]] | None = None,
) -> Path:
    """One PCA panel per (title, source features, target features); with ``target_classes``
    (predicted class per target sample of the last panel, class names) one more panel shows the
    last panel's target alone, coloured by predicted class: where a collapse is seen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with styled():
        return _draw_embedding(panels, path, target_classes)


def _draw_embedding(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    path: Path,
    target_classes: tuple[np.ndarray, Sequence[str]] | None,
) -> Path:
    extra = target_classes is not None
    fig = figure(figsize=(4.5 * (len(panels) + extra), 4))
    axes = fig.subplots(1, len(panels) + extra, squeeze=False)
    for ax, (title, fs, ft) in zip(axes[0], panels, strict=False):
        z = pca_2d(np.concatenate([fs, ft]))
        ax.scatter(z[: len(fs), 0], z[: len(fs), 1], s=6, alpha=0.6, label="source")
        ax.scatter(z[len(fs) :, 0], z[len(fs) :, 1], s=6, alpha=0.6, label="target")
        ax.set_title(title)
        ax.legend()
    if target_classes is not None:
        pred, names = target_classes
        title, fs, ft = panels[-1]
        z = pca_2d(np.concatenate([fs, ft]))[len(fs) :]
        ax = axes[0][-1]
        for k, name in enumerate(names):
            sel = np.asarray(pred) == k
            ax.scatter(z[sel, 0], z[sel, 1], s=6, alpha=0.7, label=f"{name} ({int(sel.sum())})")
        ax.set_title(f"{title}: target by predicted class")
        ax.legend(markerscale=2)
    fig.suptitle("features, PCA of source + target")
    fig.tight_layout()
    return save(fig, path)

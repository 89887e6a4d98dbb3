"""``cryoshift report``: one self-contained HTML page a person can look at after a run.

For a classify output folder (or a predictions CSV/STAR): per-tomogram class counts, the
unknown fraction, confidence and shift-score histograms, throughput and timings from
manifest.json, a confusion matrix when the input carried labels (a ``class``, ``label``,
``class_name`` or ``true_class`` column travels into predictions.star; labels that are not the
model's class names get no accuracy, as evaluate refuses them), and the target embedding
coloured by predicted class when ``features.npy`` (``classify --features``: one row per
prediction, same order) sits next to the predictions; without it the summary says how to get
it. Results of a run that did not finish (a classify run or a merge killed before its manifest)
are said to be partial, first.
For a training run folder: losses, source validation accuracy and target scores per epoch,
with the epoch that label-free selection chose marked, and the selection rule.

Figures are PNGs at 150 dpi with >= 9 pt text and legends, inlined as base64, so the page is
one file that can be mailed or opened offline. Needs matplotlib (the ``train`` extra).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoshift.runtime.contract import REJECT_LABEL
from cryoshift.runtime.errors import InputError, blocked_folder, missing_reason, not_a_file
from cryoshift.runtime.jsonfile import is_nonnegative_number, read_json_object
from cryoshift.runtime.labelled_picks import LABEL_COLUMNS as PICK_LABEL_COLUMNS
from cryoshift.runtime.labelled_picks import labels_not_classes
from cryoshift.runtime.outfiles import NotRegularFileError, open_regular_fd, special_kind, write_text
from cryoshift.runtime.results import (
    NUMERIC_COLUMNS,
    PredictionTable,
    is_number,
    read_prediction_table,
    repeated_columns,
)
from cryoshift.runtime.summary import REPORT_HTML
from cryoshift.runtime.tables import NA_TEXT
from cryoshift.runtime.terminal import visible

DPI = 150
FONT = 10  # pt
# the label columns evaluate reads from picks, class_name included: the true classes are found among
# predictions.star's labels, where classify's own class is csClassName, so an input class_name is
# the picks' column (it was left out, and a table labelled in it got no accuracy, without a word)
LABEL_COLUMNS = PICK_LABEL_COLUMNS


STYLE = {
    "font.size": FONT,
    "axes.titlesize": FONT + 1,
    "legend.fontsize": FONT - 1,
    "xtick.labelsize": FONT - 1,
    "ytick.labelsize": FONT - 1,
    # class and tomogram names are text, not TeX: "$x$" was set in italics, "$\\foo$" broke the page
    "text.parse_math": False,
}


class _Figures:
    """What the figure functions draw with (pyplot's ``subplots`` and ``setp``), without pyplot.

    Why: the report switched the whole process to the Agg backend (``matplotlib.use``) and
    changed its rcParams, so a notebook that called :func:`build_report` lost its interactive
    backend and kept the report's fonts. Each figure here is a ``Figure`` on its own Agg canvas
    (no backend needed, nothing left in pyplot's list of figures), drawn in :data:`STYLE` from
    :meth:`subplots` until :func:`_png` renders it (``matplotlib.rc_context``: text and ticks read
    the style when made, some only when drawn), after which the rcParams are as they were."""

    def subplots(self, figsize: tuple[float, float]) -> tuple[Any, Any]:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        style = matplotlib.rc_context(STYLE)
        style.__enter__()  # left in _png, once the figure is drawn
        try:
            fig = Figure(figsize=figsize)
            FigureCanvasAgg(fig)
            fig.cryoshift_style = style
            return fig, fig.subplots()
        except BaseException:
            style.__exit__(None, None, None)
            raise

    @staticmethod
    def setp(*args: Any, **kwargs: Any) -> Any:
        from matplotlib.artist import setp

        return setp(*args, **kwargs)


def _plt() -> _Figures:
    from cryoshift.runtime.errors import require_extra

    require_extra("plots", "cryoshift report", "matplotlib")
    return _Figures()


def _legend(ax: Any, entries: list[tuple[Any, str]], **kwargs: Any) -> None:
    """A legend of exactly these (artist, label) pairs. Explicit, because matplotlib leaves out
    every label that starts with "_", and a class or a tomogram may well be named so."""
    if entries:
        ax.legend([artist for artist, _ in entries], [label for _, label in entries], **kwargs)


def _png(fig: Any) -> str:
    """The figure as base64 PNG; the style its :meth:`_Figures.subplots` set is undone here."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        style = getattr(fig, "cryoshift_style", None)
        if style is not None:
            del fig.cryoshift_style
            style.__exit__(None, None, None)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _colours(names: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    out = {n: cmap(i % cmap.N) for i, n in enumerate(n for n in names if n != REJECT_LABEL)}
    out[REJECT_LABEL] = (0.6, 0.6, 0.6, 1.0)
    return out


# --------------------------------------------------------------------------- classify results


REPORTED_COLUMNS = ("id", "class_name", "confidence", "shift_score")  # what every page shows


def _json_dict(path: Path) -> dict[str, Any]:
    """A JSON object file (manifest, selection, config), {} when absent; one line when it is not.

    A folder or a dangling link under the name is refused, not taken for an absent file: the page
    would otherwise leave out the run's facts (throughput, the selected epoch) without a word."""
    if path.is_file():
        return read_json_object(path)
    _refuse_not_a_file(path, "a JSON file")
    return {}


def _refuse_not_a_file(path: Path, what: str) -> None:
    """Refuse ``path`` when something other than a regular file is there (a folder, a dangling or
    looping link, a pipe); nothing there at all is left to the caller."""
    problem = not_a_file(path)
    if problem:
        raise InputError(path, f"{problem}, not {what}")


# manifest.json's summary fields the page prints as numbers (_results_facts)
_SUMMARY_NUMBERS = (
    "total_errors",
    "rate",
    "pipeline_s",
    "wall_s",
    "read_s",
    "compute_s",
    "write_s",
    "wait_s",
)


def _check_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Refuse a manifest.json whose fields the page reads have another type (an edited or foreign
    file): a list as ``summary``, text as a time or a number as ``class_names`` were tracebacks. A
    count, time or rate of the summary that is NaN, infinite or negative (classify writes none) is
    refused too: the page printed "nan subtomograms/s" without a word."""

    def wrong(field: str, want: str) -> InputError:
        return InputError(path, f"not a cryoshift classify manifest: {field} is not {want}")

    for key in ("model", "summary", "tomograms", "settings"):
        if not isinstance(manifest.get(key, {}), dict):
            raise wrong(key, "a JSON object")
    model, summary = manifest.get("model", {}), manifest.get("summary", {})
    names = model.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise wrong("model.class_names", "a list of names")
    numbers = {
        "model.unknown_threshold": model.get("unknown_threshold"),
        "settings.unknown_threshold": manifest.get("settings", {}).get("unknown_threshold"),
    }
    numbers.update({f"summary.{k}": summary.get(k) for k in _SUMMARY_NUMBERS})
    for field, value in numbers.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise wrong(field, "a number")
    if not isinstance(summary.get("notes", []), list):
        raise wrong("summary.notes", "a list")
    for field in ("model.unknown_threshold", "settings.unknown_threshold"):
        threshold = numbers[field]
        if threshold is not None and not 0 <= threshold <= 1:  # NaN too: drawn as a line "below nan"
            raise wrong(field, "a confidence in 0..1")
    for name, counts in manifest.get("tomograms", {}).items():
        if not isinstance(counts, dict) or not all(type(k) is int and k >= 0 for k in counts.values()):
            raise wrong(f"tomograms.{name}", "an object of class counts")
    for key in _SUMMARY_NUMBERS:  # NaN, infinite or negative: printed as "nan subtomograms/s"
        value = summary.get(key)
        if value is not None and not is_nonnegative_number(value):
            raise wrong(f"summary.{key}", "a finite number >= 0")


def run_threshold(manifest: dict[str, Any]) -> tuple[float | None, str]:
    """The confidence under which the run said ``unknown``, and where that value came from.

    ``classify --unknown-threshold`` (the manifest's ``settings.unknown_threshold``) overrides the
    model's calibrated threshold; the page drew the model's (0.42) on the histogram of a run made
    with 0.6, so the line did not separate the unknowns of the table. The model's is used where the
    setting is absent or None (the default), as merge reads it. (None, "") without a manifest."""
    given = manifest.get("settings", {}).get("unknown_threshold")
    if given is not None:
        return float(given), "classify --unknown-threshold"
    calibrated = manifest.get("model", {}).get("unknown_threshold")
    if calibrated is not None:
        return float(calibrated), "the model's calibration"
    return None, ""


def _load_results(path: Path) -> tuple[pd.DataFrame, dict[str, Any], Path, Path]:
    """The predictions (checked row by row), the run's manifest, its folder and the table read.

    The table is read once: a STAR file gives its label column (the true classes, for the confusion
    matrix) from that read; a text table (CSV, TSV, any suffix or case) gets it from the STAR file
    of its name next to it (predictions.csv -> predictions.star). Only ``.csv`` looked there, so a
    predictions.tsv lost its confusion matrix without a word."""
    folder = path if path.is_dir() else path.parent
    table = _results_table(path)
    if not table.is_file():
        _refuse_folder(path)
    found = read_prediction_table(table, REPORTED_COLUMNS)
    df = found.rows
    manifest_path = _own_files(table)["manifest"]
    manifest = _json_dict(manifest_path)
    _check_manifest(manifest_path, manifest)
    if found.star_labels is not None:
        truth = _true_classes(table, found)
        df = _own_columns(df, found.star_labels)
        if truth is not None:
            df["true_class"] = truth.to_numpy()
    else:
        truth = _star_true_classes(table.with_suffix(".star"))
        if truth is not None:
            df["true_class"] = df["id"].astype(str).map(truth)
    return df, manifest, folder, table


def _own_columns(df: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """``df`` (read from a STAR file whose labels are ``labels``) without the input columns that
    share a name with one of classify's columns: an input ``class_name`` (the picks' labels) beside
    classify's ``csClassName`` (read as ``class_name``) made ``df["class_name"]`` two columns, and
    the page a traceback. An input column keeps its STAR label as its name; classify's are renamed.
    """
    names = [str(c) for c in df.columns]
    clash = pd.Index(names).duplicated(keep=False)
    keep = [not (clash[i] and names[i] == str(labels[i])) for i in range(len(names))]
    return df.loc[:, keep] if not all(keep) else df


_OWN_TABLE = re.compile(r"^predictions(\.shard-(\d+)-of-(\d+))?\.(csv|star)$")


def _own_files(table: Path) -> dict[str, Path]:
    """The files of the run that wrote ``table`` (summary.output_names): a shard's table has its own
    manifest (``manifest.shard-i-of-n.json``); any other table the folder's ``manifest.json``."""
    from cryoshift.runtime.summary import output_names

    m = _OWN_TABLE.match(table.name)
    shard = (int(m.group(2)), int(m.group(3))) if m and m.group(1) else None
    return output_names(table.parent, shard)


def unfinished_note(table: Path, rows: int) -> str | None:
    """Why the results in ``table`` are not a whole run (None: nothing says so): a classify run
    killed before its manifest (its run record is there, its manifest not), or a merge killed
    before its manifest (merge's marker, :func:`~cryoshift.runtime.merge.pending_merge`).

    Why: a killed run's folder was reported as the whole run ("subtomograms classified 104" of 950
    planned), without a word; the page and stderr now say it, and how to go on."""
    from cryoshift.runtime.merge import pending_merge

    if not _OWN_TABLE.match(table.name):
        return None  # a table of the user's: nothing tells whether its run finished
    files = _own_files(table)
    manifest = files["manifest"].name
    if files["manifest"].name == "manifest.json" and pending_merge(files["manifest"]).is_file():
        return (
            f"the merge writing these results did not finish (no up-to-date {manifest}; rows so far "
            f"{rows:,}): rerun cryoshift merge with the same shards to finish it"
        )
    if files["run"].is_file() and not files["manifest"].exists():
        m = _OWN_TABLE.match(table.name)
        shard = f" --shard {m.group(2)}/{m.group(3)}" if m and m.group(1) else ""
        return (
            f"the classify run did not finish (no {manifest}; rows so far {rows:,}): these are partial "
            f"results; rerun classify with --resume{shard} to finish it"
        )
    return None


def _true_classes(star: Path, found: PredictionTable) -> pd.Series | None:
    """The true class of each row of classify's predictions.star ``star`` (read into ``found``) as
    text, from its input label column; None without one. Only classify's STAR (a csId column)
    carries the picks' columns."""
    labels = found.star_labels or []
    label = _label_column(star, labels) if "csId" in labels else None
    return found.column(label).astype(str) if label else None


def _star_true_classes(star: Path) -> dict[str, str] | None:
    """Id -> true class from the predictions.star written beside a predictions CSV or TSV (input
    columns travel in the STAR only); None without the file or a label column. A STAR file that
    cannot be read leaves the page without a confusion matrix: the text table is the one reported."""
    if not star.is_file():
        return None
    try:
        found = read_prediction_table(star, check=False)
    except (InputError, OSError):
        return None
    truth = _true_classes(star, found)
    return None if truth is None else dict(zip(found.rows["id"].astype(str), truth, strict=True))


def _label_column(star: Path, columns: list[Any]) -> str | None:
    """The input column holding the true classes (for the confusion matrix), or None.

    Two of them (``class`` beside ``label``) are refused: the first one found was drawn as the
    truth, and which column holds it is the user's call, as evaluate refuses it."""
    found = [str(c) for c in columns if str(c).lower() in LABEL_COLUMNS]
    if len(found) > 1:
        raise InputError(
            star,
            f"several label columns ({', '.join(found)}) for the confusion matrix; keep only the one "
            "holding the true classes (in the picks table before classify, or in this file)",
        )
    return found[0] if found else None


RUN_FILES = ("config.json", "selection.json", "model.pt", "checkpoints")  # what cryoshift train leaves


def _results_table(path: Path) -> Path:
    """The predictions table ``path`` names: the file itself, or in a folder predictions.csv, else
    predictions.star (a folder keeping only the STAR for RELION was "no predictions.csv")."""
    if path.is_file():
        return path
    csv = path / "predictions.csv"
    return csv if csv.is_file() or not (path / "predictions.star").is_file() else path / "predictions.star"


def _refuse_folder(path: Path) -> None:
    """Say what is missing from a folder that has neither predictions nor metrics: a training run
    without its metrics.csv is told so, not sent looking for a predictions.csv it never had. A
    table that is there but not a file (a folder, a dangling link) is named, not called missing."""
    if path.is_dir():
        for name in ("predictions.csv", "predictions.star", "metrics.csv"):
            _refuse_not_a_file(path / name, "a table")
    if path.is_dir() and any((path / name).exists() for name in RUN_FILES):
        raise InputError(
            path / "metrics.csv",
            "missing: this training run folder has no metrics table (cryoshift train writes it each "
            "epoch; the run may have stopped before its first epoch ended)",
        )
    shards = sorted(path.glob("predictions.shard-*-of-*.csv")) if path.is_dir() else []
    if shards:  # classify --shard output, not merged yet: the tables are there, under their names
        raise InputError(
            path,
            f"no predictions.csv, but shard tables ({shards[0].name}, ...): merge them first "
            f"(cryoshift merge), or report one shard's table ({shards[0]})",
        )
    raise InputError(
        path,
        "no predictions.csv (classify output) or metrics.csv (training run) here; give a classify "
        "output folder, a predictions file or a training run folder",
    )


def _value_warnings(path: Path, df: pd.DataFrame) -> list[str]:
    """One warning per number column with NaN or infinite values (left out of its histogram), and
    one for confidences outside 0-1: classify writes probabilities, so a 7.5 is an edited or
    foreign table, and its histogram was drawn on a stretched axis without a word."""
    notes = []
    for name in NUMERIC_COLUMNS:
        values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = int((~np.isfinite(values)).sum())
        if bad:
            notes.append(
                f"{path}: {bad:,} of {len(values):,} rows have a NaN or infinite {name}; "
                "left out of its histogram"
            )
        if name == "confidence":
            finite = values[np.isfinite(values)]
            outside = int(((finite < 0) | (finite > 1)).sum())
            if outside:
                notes.append(
                    f"{path}: {outside:,} of {len(values):,} rows have a confidence outside 0-1 "
                    f"(from {finite.min():g} to {finite.max():g}): not classify's probabilities; "
                    "an edited table?"
                )
    return notes


def _class_order(df: pd.DataFrame, manifest: dict[str, Any]) -> list[str]:
    """The model's class names, then other predicted names, then "unknown": each once (a name twice
    in the manifest made every figure's table have two columns of it: a traceback)."""
    names = list(dict.fromkeys(manifest.get("model", {}).get("class_names") or []))
    names += sorted(set(df["class_name"]) - set(names) - {REJECT_LABEL})
    return [n for n in names if n != REJECT_LABEL] + [REJECT_LABEL]


def _fig_counts(plt: Any, df: pd.DataFrame, classes: list[str], colours: dict[str, Any]) -> str:
    tomo = (
        df["tomo_name"].where(df["tomo_name"].astype(str) != "", "(no tomogram)")
        if "tomo_name" in df
        else pd.Series("(all)", index=df.index)
    )
    table = pd.crosstab(tomo, df["class_name"]).reindex(
        columns=[c for c in classes if c in set(df["class_name"])], fill_value=0
    )
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(table) + 3), 3.6))
    bottom = np.zeros(len(table))
    shown = []
    for name in table.columns:
        bars = ax.bar(table.index.astype(str), table[name], bottom=bottom, color=colours[name])
        shown.append((bars, str(name)))
        bottom += table[name].to_numpy()
    ax.set_ylabel("subtomograms")
    ax.set_title("Predicted classes per tomogram")
    _legend(ax, shown, title="class", bbox_to_anchor=(1.01, 1), loc="upper left")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    return _png(fig)


def _fig_hist(
    plt: Any,
    df: pd.DataFrame,
    column: str,
    classes: list[str],
    colours: dict[str, Any],
    title: str,
    xlabel: str,
    threshold: float | None = None,
    threshold_source: str = "",
) -> str:
    """Histogram of ``column`` by best class; ``threshold`` is the run's unknown threshold, drawn as
    a dashed line whose legend names ``threshold_source`` (the run's setting or the model's).

    The classes are stacked, and the legend sits outside the axes: overlaid half-transparent bars
    hid a small class under a larger one (``alpha (n=5)`` showed 2 bars) and the legend covered
    the tallest bar, so the picture said other counts than the table."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    values = pd.to_numeric(df[column], errors="coerce")
    finite = values[np.isfinite(values)]
    bins = np.linspace(float(finite.min()), float(finite.max()) + 1e-9, 31) if len(finite) else 10
    by = df["best_class"] if "best_class" in df else df["class_name"]
    drawn = [(name, values[(by == name) & np.isfinite(values)]) for name in classes]
    drawn = [(name, sel) for name, sel in drawn if len(sel)]
    shown = []
    if drawn:
        _, _, bars = ax.hist(
            [sel.to_numpy() for _, sel in drawn],
            bins=bins,
            stacked=True,
            color=[colours[name] for name, _ in drawn],
            edgecolor="white",
            linewidth=0.4,
        )
        bars = bars if len(drawn) > 1 else [bars]  # one data set: one container, not a list of them
        shown = [(b, f"{name} (n={len(sel)})") for b, (name, sel) in zip(bars, drawn, strict=True)]
    if threshold:  # 0 (a model calibrated to reject nothing): no confidence is under it, no line
        line = ax.axvline(threshold, color="k", linestyle="--")
        source = f" ({threshold_source})" if threshold_source else ""
        shown.append((line, f"unknown below {threshold:.2f}{source}"))
    if not len(finite):  # every value NaN or infinite: an empty plot that says so
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("subtomograms")
    ax.set_title(title)
    _legend(ax, shown, title="best class", bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


EMBEDDING_POINTS = 20_000  # rows drawn (and used for the PCA) at most, a fixed random choice


def _fig_embedding(
    plt: Any,
    features: np.ndarray,
    predicted: np.ndarray,
    classes: list[str],
    colours: dict[str, Any],
    counts: dict[str, int],
) -> str:
    """PCA (numpy SVD) of ``features`` to 2-D, one colour per predicted class; a PNG (base64)."""
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    if xy.shape[1] < 2:  # a single feature: its values against zero
        xy = np.column_stack([xy[:, 0], np.zeros(len(xy))])
    share = sv**2 / max(float((sv**2).sum()), 1e-30)
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    shown = []
    for name in classes:
        sel = predicted == name
        if sel.any():
            dots = ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.7, color=colours[name], linewidths=0)
            shown.append((dots, f"{name} ({counts.get(name, 0):,})"))
    ax.set_xlabel(f"PC 1 ({share[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({share[1]:.0%} of variance)" if len(share) > 1 else "PC 2")
    ax.set_title("Target embedding (features), coloured by predicted class")
    _legend(ax, shown, title="predicted", markerscale=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


def _embedding(
    plt: Any, path: Path, df: pd.DataFrame, classes: list[str], colours: dict[str, Any]
) -> tuple[str, str, str] | str:
    """The embedding figure (title, caption, png) from a features file, or why there is none."""
    from cryoshift.runtime.features import read_features

    rerun = "rerun classify with --features"
    if not path.is_file():
        return f"not written: {rerun} (it writes {path.name}, one row per prediction)"
    try:
        features = read_features(path)
    except (ValueError, OSError) as exc:
        return f"{path.name} is not readable ({exc}): {rerun}"
    n = len(df)
    if features.ndim != 2 or len(features) != n:
        return f"{path.name} has {len(features):,} rows for {n:,} predictions (from another run?): {rerun}"
    finite = np.flatnonzero(np.isfinite(features).all(axis=1))
    if len(finite) < 3 or features.shape[1] < 1:
        return f"{path.name} has {len(finite)} rows with features, too few to draw: {rerun}"
    shown = finite
    if len(shown) > EMBEDDING_POINTS:
        shown = np.sort(np.random.default_rng(0).choice(finite, EMBEDDING_POINTS, replace=False))
    predicted = df["class_name"].astype(str).to_numpy()
    counts = pd.Series(predicted[finite]).value_counts().to_dict()
    png = _fig_embedding(plt, features[shown], predicted[shown], classes, colours, counts)
    caption = (
        "PCA of the model's features for the classified subtomograms, coloured by predicted "
        "class (legend: how many). Classes that overlap here are hard to tell apart; one "
        "class that swallows the others (one colour everywhere) is a collapse."
    )
    if len(shown) < len(finite):
        caption += f" {len(shown):,} of {len(finite):,} rows drawn (a fixed random choice)."
    if len(finite) < n:
        caption += f" {n - len(finite):,} rows without features (NaN) left out."
    return "Target embedding", caption, png


def _fig_confusion(plt: Any, truth: pd.Series, pred: pd.Series, classes: list[str]) -> tuple[str, float]:
    rows = [c for c in classes if c in set(truth)] + sorted(set(truth) - set(classes))
    cols = [c for c in classes if c in set(pred) or c != REJECT_LABEL]
    cm = pd.crosstab(truth, pred).reindex(index=rows, columns=cols, fill_value=0)
    fig, ax = plt.subplots(figsize=(1.0 * len(cols) + 2.5, 0.8 * len(rows) + 2))
    im = ax.imshow(cm.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = int(cm.iloc[i, j])
            ax.text(
                j, i, str(v), ha="center", va="center", color="white" if v > cm.values.max() / 2 else "black"
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("label")
    ax.set_title("Confusion matrix (labelled picks)")
    fig.colorbar(im, ax=ax, label="subtomograms")
    return _png(fig), float((truth == pred).mean())


def _results_sections(
    path: Path, plt: Any, notes: list[str]
) -> tuple[str, list[tuple[str, str]], list[tuple[str, str, str]]]:
    """The classify output's table, facts and figures; warnings about its values go to ``notes``."""
    df, manifest, _folder, table = _load_results(path)
    unfinished = unfinished_note(table, len(df))
    if df.empty:  # the table is named: a folder's may be its predictions.star
        said = f" ({unfinished})" if unfinished else " (the run classified nothing)"
        raise InputError(table, f"no predictions to report{said}")
    if unfinished:  # first, on the page and on stderr: every figure below is of part of the run
        notes.append(unfinished)
    notes.extend(_value_warnings(table, df))
    lab = _labelled_rows(df)
    model_classes = _model_classes(df, manifest)
    not_classes = None
    if not lab.empty and model_classes is not None:
        not_classes = label_problem(lab, model_classes, _labels_file(table))
    if not_classes:  # on the page and on stderr: the accuracy is left out, not scored as wrong
        notes.append(not_classes)
    classes = _class_order(df, manifest)
    colours = _colours(classes)
    threshold, source = run_threshold(manifest)
    facts = [("warning", unfinished)] if unfinished else []
    facts += _results_facts(df, manifest, classes, _threshold_text(threshold, source))
    facts += [("warning", note) for note in notes if note != unfinished]
    line = f"; dashed: the run's unknown threshold ({source})" if threshold else ""
    figures = [
        ("Classes per tomogram", "", _fig_counts(plt, df, classes, colours)),
        (
            "Confidence",
            f"Calibrated max probability per subtomogram, by its best class{line}.",
            _fig_hist(plt, df, "confidence", classes, colours, "Confidence", "confidence", threshold, source),
        ),
        (
            "Shift score",
            "Distance from the adapted target domain: ~1 is typical, larger is further "
            "from what the model was adapted to.",
            _fig_hist(plt, df, "shift_score", classes, colours, "Shift score", "shift score"),
        ),
    ]
    from cryoshift.runtime.features import features_path

    embedding = _embedding(plt, features_path(table), df, classes, colours)
    if isinstance(embedding, str):
        facts.append(("target embedding", embedding))
    else:
        figures.append(embedding)
    if not lab.empty:
        png, _ = _fig_confusion(plt, lab["true_class"], lab["class_name"], classes)
        if model_classes is None:
            unchecked = "not checked against the model's classes (no manifest.json, no prob_ columns)"
            facts.append(("labels", unchecked))
        if not not_classes:
            facts += labelled_accuracy(lab, _threshold_text(threshold, source))
        figures.append(
            (
                "Confusion matrix",
                "Rows: the labels in the input table; columns: the class classify gave each pick, "
                f"after unknown rejection (the {REJECT_LABEL} column)."
                + (" Some labels are not classes of the model: no accuracy is given." if not_classes else ""),
                png,
            )
        )
    return _tomogram_table(manifest.get("tomograms") or {}, classes), facts, figures


def _labelled_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with a true class: an empty or missing label (``nan``, ``<NA>``) is no label, as
    evaluate skips it (runtime/labelled_picks.py), so both score the same picks."""
    if "true_class" not in df:
        return df.iloc[:0]
    truth = df["true_class"]
    return df[truth.notna() & ~truth.astype(str).str.strip().isin(("", *NA_TEXT))]


def _labels_file(table: Path) -> Path:
    """The file the true classes of ``table`` are read from: a STAR table itself, a text table the
    STAR file of its name beside it (:func:`_load_results`)."""
    return table if table.suffix.lower() == ".star" else table.with_suffix(".star")


def _model_classes(df: pd.DataFrame, manifest: dict[str, Any]) -> list[str] | None:
    """The model's class names: the manifest's, else those of the table's ``prob_<class>`` columns
    (classify writes one per class of the model); None when neither says."""
    names = manifest.get("model", {}).get("class_names")
    if names:
        return [str(n) for n in names]
    probs = [str(c)[len("prob_") :] for c in df.columns if str(c).startswith("prob_") and len(str(c)) > 5]
    return probs or None


def label_problem(lab: pd.DataFrame, model_classes: list[str], table: Path) -> str | None:
    """Why the labels of ``lab`` cannot be scored against a model of ``model_classes``, or None.

    evaluate's rule (:func:`~cryoshift.runtime.labelled_picks.labels_not_classes`): a label is a
    class name of the model, exactly as written, and a table with any other label is refused. The
    page scored such a label as a wrong answer without a word: labels written as class numbers
    (``1``, ``2``) gave "accuracy 0.000 (as cryoshift evaluate scores it)", ``Zeta`` for ``zeta``
    0.133 where it is 0.467. The page keeps its other figures, so the accuracy is left out and this
    note says why."""
    truth = lab["true_class"].astype(str)
    missing = labels_not_classes(truth, model_classes)
    if not missing:
        return None
    carry = int(truth.isin(missing).sum())
    return (
        f"{table}: classes {missing} are not classes of the model ({model_classes}); "
        f"{carry:,} of {len(truth):,} labelled picks carry them: no accuracy given (cryoshift "
        "evaluate refuses these labels too); write the labels as the model's class names"
    )


def _threshold_text(threshold: float | None, source: str) -> str:
    """``confidence under 0.60, classify --unknown-threshold`` ("" when the run's is not known)."""
    return "" if threshold is None else f"confidence under {threshold:.2f}, {source}"


def labelled_accuracy(lab: pd.DataFrame, threshold: str = "") -> list[tuple[str, str]]:
    """The accuracy facts of labelled picks (``lab``: rows with a ``true_class``), each saying what
    it scores. ``threshold``: the run's unknown threshold in words (:func:`_threshold_text`).

    Two numbers, because they differ and were read as one: the page scored the class given
    (``class_name``, a pick rejected as unknown counting as wrong: 0.500) where ``cryoshift
    evaluate`` scores the best class of every pick (its argmax, no rejection: 0.522). The best class
    is the ``best_class`` column (the class given, for a pick not rejected); a table without it for
    a rejected pick (an older or edited one) is said to lack it, not guessed. Without rejected picks
    the two are one number, given once."""
    truth = lab["true_class"].astype(str)
    given = lab["class_name"].astype(str)
    rejected = given == REJECT_LABEL
    n, k = len(lab), int(rejected.sum())
    best_name = "accuracy on labelled picks, best class (as cryoshift evaluate scores it)"
    if not k:
        acc = float((given == truth).mean())
        return [
            (
                "accuracy on labelled picks",
                f"{acc:.3f} (n={n}): the best class of each pick, as cryoshift evaluate scores it; "
                "no pick was rejected as unknown",
            )
        ]
    best = lab["best_class"].astype(str) if "best_class" in lab else pd.Series("", index=lab.index)
    best = best.where(best != "", given.where(~rejected, ""))  # a kept pick's best class is its class
    lacking = int((best == "").sum())
    if lacking:
        best_value = (
            f"not recoverable: the table has no best class (best_class column) for {lacking} of the "
            f"{k} picks rejected as unknown"
        )
    else:
        best_value = (
            f"{float((best == truth).mean()):.3f} (n={n}): the model's best class of every pick, "
            "unknown rejection not applied"
        )
    right = (given == truth) & ~rejected
    under = f" ({threshold})" if threshold else ""
    kept = f"; {float(right.sum()) / (n - k):.3f} of the {n - k:,} kept are right" if n > k else ""
    return [
        (best_name, best_value),
        (
            "accuracy on labelled picks after unknown rejection",
            f"{float(right.mean()):.3f} (n={n}): the class classify gave; the {k:,} of {n:,} picks "
            f"rejected as unknown{under} count as wrong{kept}",
        ),
    ]


def _results_facts(
    df: pd.DataFrame, manifest: dict[str, Any], classes: list[str], threshold: str = ""
) -> list[tuple[str, str]]:
    """The report's fact list: counts per class, errors, throughput and time split, the model, notes.
    ``threshold``: the run's unknown threshold in words (:func:`_threshold_text`)."""
    summary = manifest.get("summary", {})
    n = len(df)
    unknown = int((df["class_name"] == REJECT_LABEL).sum())
    facts = [
        ("subtomograms classified", f"{n:,}"),
        (f"unknown ({threshold or 'under the confidence threshold'})", f"{unknown:,} ({unknown / n:.1%})"),
    ]
    for name in classes:
        k = int((df["class_name"] == name).sum())
        if k and name != REJECT_LABEL:
            facts.append((f"class {name}", f"{k:,} ({k / n:.1%})"))
    if summary:
        facts += [
            ("errors", f"{summary.get('total_errors', 0):,} (errors.csv)"),
            (
                "throughput",
                f"{summary.get('rate', 0):,.1f} subtomograms/s over {summary.get('pipeline_s', 0):.1f} s "
                f"(wall {summary.get('wall_s', 0):.1f} s incl. model loading)",
            ),
            (
                "time split",
                f"reading {summary.get('read_s', 0):.1f} s, computing {summary.get('compute_s', 0):.1f} s, "
                f"writing {summary.get('write_s', 0):.1f} s, model waiting {summary.get('wait_s', 0):.1f} s",
            ),
            ("backend", str(summary.get("backend", ""))),
        ]
    model = manifest.get("model", {})
    if model:
        facts.append(
            (
                "model",
                f"{Path(str(model.get('path', ''))).name} ({model.get('method')}, "
                f"{model.get('backbone')}, {model.get('precision')}), sha256 "
                f"{str(model.get('sha256', ''))[:12]}",
            )
        )
    facts += [("note", str(note)) for note in summary.get("notes", [])]
    return facts


def _tomogram_table(tomos: dict[str, dict[str, int]], classes: list[str]) -> str:
    """HTML table of predicted classes per tomogram ('' without tomograms)."""
    if not tomos:
        return ""
    cols = [c for c in classes if any(c in v for v in tomos.values())]
    head = "".join(f"<th>{_shown(c)}</th>" for c in cols)
    body = "".join(
        f"<tr><td>{_shown(t)}</td>"
        + "".join(f"<td>{v.get(c, 0)}</td>" for c in cols)
        + f"<td>{sum(v.values())}</td></tr>"
        for t, v in tomos.items()
    )
    return f"<table><tr><th>tomogram</th>{head}<th>total</th></tr>{body}</table>"


# --------------------------------------------------------------------------- training runs


SCORE_COLUMNS = ("src_val_acc", "tgt_im", "snd", "tgt_entropy", "tgt_top_share")  # the selection plot
ACCURACY_SUFFIX = "_acc"  # metrics columns holding an accuracy: a share, from 0 to 1


def _plotted(columns: list[str]) -> list[str]:
    """The metrics columns the page draws against the epoch."""
    return [c for c in columns if c.startswith("loss")] + [c for c in SCORE_COLUMNS if c in columns]


def _read_metrics(path: Path, notes: list[str]) -> pd.DataFrame:
    """metrics.csv, every row checked: a cut-off or damaged row, a repeated column, a missing or
    fractional epoch, text in a drawn column or an accuracy outside 0..1 is refused naming the
    line. pandas filled a short row with NaN, renamed a repeated column ("loss.1") and drew a
    column holding text as categories, so the page showed other numbers than the file without a
    word. A NaN or infinite loss is a diverged run, not damage: said in ``notes``."""
    from cryoshift.runtime.ledger import checked_rows

    rows = checked_rows(path, encoding="utf-8-sig")
    _, header = next(rows, (0, None))
    if not header:
        blank = "the file is empty" if header is None else "its first line is blank, not column names"
        raise InputError(path, f"not a readable metrics table: {blank}")
    repeated = repeated_columns(header)
    if repeated:
        raise InputError(path, f"not a readable metrics table: column {repeated} appears twice")
    if "epoch" not in header:
        raise InputError(path, "not a cryoshift training metrics table: no epoch column")
    drawn = [(header.index(c), c) for c in _plotted(header)]
    epoch = header.index("epoch")
    body: list[list[str]] = []
    diverged: dict[str, list[int]] = {}  # loss column -> epochs whose cell says NaN or inf
    for line, row in rows:
        if not _is_epoch(row[epoch]):
            raise InputError(path, f"line {line}: epoch {row[epoch]!r} is not a whole number")
        row[epoch] = str(int(float(row[epoch])))
        for i, name in drawn:
            if not is_number(row[i]):
                raise InputError(path, f"line {line}: {name} {row[i]!r} is not a number")
            if name.endswith(ACCURACY_SUFFIX) and not _accuracy_or_missing(row[i]):
                raise InputError(
                    path,
                    f"line {line}: {name} {row[i].strip()!r} is not an accuracy (a number from 0 to 1): "
                    "a damaged table",
                )
            value = _cell_number(row[i])
            if name.startswith("loss") and value is not None and not math.isfinite(value):
                diverged.setdefault(name, []).append(int(row[epoch]))
        body.append(row)
    if not body:
        raise InputError(path, "no epochs: the table has column names but no rows (the run stopped early?)")
    note = _diverged_note(path, diverged)
    if note:
        notes.append(note)
    metrics = pd.DataFrame(body, columns=header)
    metrics["epoch"] = metrics["epoch"].astype(np.int64)
    for _, name in drawn:
        metrics[name] = pd.to_numeric(metrics[name].str.strip().replace("", "nan"), errors="coerce")
    return metrics


def _accuracy_or_missing(text: str) -> bool:
    """Whether a metrics cell holds an accuracy (0 to 1) or nothing (a run without validation data
    writes an empty cell). Why: ``inf`` or ``nan`` there was drawn (or left out) without a word,
    though the trainer never writes one: the table was damaged."""
    value = _cell_number(text)  # "nan" is refused: the trainer writes a missing accuracy as ""
    return value is None or 0.0 <= value <= 1.0


def _cell_number(text: str) -> float | None:
    """A metrics cell's number (NaN and inf too), or None for an empty or ``<NA>`` one."""
    try:
        return float(text)
    except ValueError:
        return None


def _diverged_note(path: Path, diverged: dict[str, list[int]]) -> str | None:
    """A note naming the epochs whose loss cell says NaN or inf (``diverged``: column -> epochs),
    or None. Why: a loss that is not finite is a real training signal (the run diverged), not a
    damaged table, but the loss plot left those epochs out without a word."""
    if not diverged:
        return None
    first = min(min(epochs) for epochs in diverged.values())
    named = ", ".join(
        f"{name} at {len(epochs)} epoch{'s' if len(epochs) > 1 else ''}" for name, epochs in diverged.items()
    )
    return (
        f"{path}: the loss is NaN or infinite from epoch {first} ({named}): training diverged "
        "there (a lower --lr may help); the loss plot leaves those epochs out"
    )


def _is_epoch(text: str) -> bool:
    """Whether a metrics cell holds an epoch number (``3`` or ``3.0``; not empty, NaN or ``3.5``)."""
    try:
        value = float(text)
    except ValueError:
        return False
    return bool(np.isfinite(value)) and abs(value) < 2**31 and value == int(value)


def _check_selection(path: Path, selection: dict[str, Any]) -> None:
    """Refuse a selection.json whose fields the page reads have another type: text or a list as the
    epoch was drawn as a category, a dict or a number as ``warnings`` was a traceback, and text
    was listed one character per warning."""
    chosen = selection.get("selected_epoch")
    if chosen is not None and (isinstance(chosen, bool) or not isinstance(chosen, int)):
        raise InputError(path, f"not a cryoshift selection file: selected_epoch {chosen!r} is not an epoch")
    if not isinstance(selection.get("warnings", []), list):
        raise InputError(path, "not a cryoshift selection file: warnings is not a list")


def _hparams_text(selection: dict[str, Any], config: dict[str, Any]) -> str:
    """The method's hyper-parameters as the page shows them: selection.json's (the values trained
    with, defaults included), else config.json's ``--hparam`` values, said to be those alone.

    Why: the page showed method and backbone only, so two runs of one method with other
    hyper-parameters looked alike."""
    hparams = selection.get("method_hparams")
    if isinstance(hparams, dict):
        return ", ".join(f"{k}={v}" for k, v in hparams.items()) or "none"
    given = config.get("method_kwargs")
    if isinstance(given, dict) and given:
        shown = ", ".join(f"{k}={v}" for k, v in given.items())
        return f"{shown} (given with --hparam; selection.json does not record the others)"
    return "not recorded (selection.json has no method_hparams)"


def _run_sections(
    run: Path, plt: Any, notes: list[str]
) -> tuple[str, list[tuple[str, str]], list[tuple[str, str, str]]]:
    """A training run's facts and figures; warnings about its files go to ``notes``."""
    metrics = _read_metrics(run / "metrics.csv", notes)
    selection = _json_dict(run / "selection.json")
    _check_selection(run / "selection.json", selection)
    config = _json_dict(run / "config.json")
    chosen = selection.get("selected_epoch")
    if chosen is not None and chosen not in set(metrics["epoch"]):
        notes.append(
            f"{run / 'selection.json'}: selected epoch {chosen} is not in metrics.csv (epochs "
            f"{metrics['epoch'].min()}..{metrics['epoch'].max()}): the two files are from different runs?"
        )
    facts = [
        ("method", str(config.get("method", "?"))),
        ("backbone", str(config.get("backbone", "?"))),
        ("hyper-parameters", _hparams_text(selection, config)),
        ("epochs run", str(len(metrics))),
    ]
    if chosen is not None:
        facts.append(("selected epoch", f"{chosen} ({selection.get('rule', '')})"))
    for w in selection.get("warnings", []):
        facts.append(("warning", str(w)))
    facts += [("warning", note) for note in notes]
    figures = []
    losses = [c for c in _plotted(list(metrics.columns)) if c.startswith("loss")]
    if losses:
        figures.append(("Losses", "", _epoch_plot(plt, metrics, losses, chosen, "loss", "Training losses")))
    scores = [c for c in SCORE_COLUMNS if c in metrics]
    if scores:
        figures.append(
            (
                "Model selection",
                "The selected epoch maximises the target criterion among epochs "
                "close to the best source validation accuracy.",
                _epoch_plot(
                    plt,
                    metrics,
                    scores,
                    chosen,
                    "score",
                    "Selection: source validation and label-free target scores",
                ),
            )
        )
    embedding = run / "plots" / "embedding.png"
    png, refused = _run_file_bytes(run, Path("plots", "embedding.png"))
    if refused:
        facts.append(("feature embedding", refused))
        notes.append(refused)
    elif png and not png.startswith(b"\x89PNG\r\n\x1a\n"):  # inlined, it was a broken image on the page
        facts.append(("feature embedding", f"{embedding} is not a PNG image (damaged?); left out"))
    elif png:  # written by the trainer: source vs target, and the target by predicted class
        figures.append(
            (
                "Feature embedding",
                "PCA of source and target features at the first epoch and for the selected model; the last "
                "panel colours the target by predicted class, where a collapse onto one class shows.",
                base64.b64encode(png).decode("ascii"),
            )
        )
    return "", facts, figures


def _run_file_bytes(run: Path, name: Path) -> tuple[bytes, str | None]:
    """The bytes of the file ``name`` (relative) of the run folder ``run`` to inline in the page
    (``b""`` when there is none), or why it is not shown.

    Why: the page is mailed and shared, and the figure was inlined by following links: a run
    folder received from someone, with ``plots/embedding.png -> ~/.ssh/id_ed25519`` (or ``plots``
    a link to another folder), put a file of the reader's into the page they then sent on. Only a
    regular file reached without a link, inside the run folder, is read (opened as a file written in
    place is, by :func:`~cryoshift.runtime.outfiles.open_regular_fd`, and non-blocking: a pipe there
    never hangs the report)."""
    where = run
    for part in name.parts:
        where = where / part
        if where.is_symlink():
            return b"", f"not shown: {where} is a link; the report inlines only files inside the run folder"
    if not os.path.lexists(where):
        return b"", None
    try:
        fd = open_regular_fd(where, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except NotRegularFileError:
        return b"", f"not shown: {where} is not a regular file"
    except OSError as exc:
        return b"", f"not shown: {where} cannot be read ({' '.join(str(exc.strerror or exc).split())})"
    with os.fdopen(fd, "rb") as fh:
        return fh.read(), None


def _epoch_plot(plt: Any, metrics: Any, columns: list[str], chosen: Any, ylabel: str, title: str) -> str:
    """One line per metrics column against the epoch, the selected epoch marked; a PNG data URI."""
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for c in columns:
        ax.plot(metrics["epoch"], metrics[c], marker="o", ms=3, label=c)
    if chosen is not None:
        ax.axvline(chosen, color="k", linestyle="--", label=f"selected epoch {chosen}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return _png(fig)


# --------------------------------------------------------------------------- page


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.figs{display:flex;flex-wrap:wrap;gap:1.2em}figure{margin:0;max-width:100%}
figure img{width:520px;max-width:100%;height:auto}figcaption{font-size:.9em;color:#555;max-width:34em}"""


def _shown(text: str) -> str:
    """Text from the files (a manifest's notes, selection warnings, names) as the page shows it:
    HTML-escaped, on one line, every control or line-separator character written as its escape.

    Why: a note in a received manifest held newlines, so the page carried a line of the sender's
    choosing (an ssh key, which reached ``authorized_keys`` through a link at report.html); a
    fact is one line of text, and a line break in it is shown, not obeyed."""
    return html.escape(visible(text))


# how a page's title starts, by whether it is about a training run (True) or classify results
_TITLES = {True: "cryoshift training run", False: "cryoshift results"}
_WHAT = {True: "a training run", False: "classify results"}


def _is_run(path: Path) -> bool:
    """Whether the page for ``path`` is a training run's (a run folder has metrics.csv)."""
    return path.is_dir() and (path / "metrics.csv").is_file()


def _other_report(target: Path, is_run: bool) -> None:
    """Refuse to write the default ``report.html`` over the page of the other kind.

    Why: a folder may hold a training run and classify results (``classify -o RUN``): ``report
    RUN`` and ``report RUN/predictions.csv`` both wrote RUN/report.html, each replacing the other's
    page without a word."""
    try:
        with open(target, "rb") as fh:  # a regular file: _check_target refused anything else
            head = fh.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return
    found = re.search(r"<title>([^<]*)</title>", head)
    if found and found.group(1).startswith(_TITLES[not is_run] + " "):
        raise InputError(
            target,
            f"holds the report of {_WHAT[not is_run]} in this folder; write this report of "
            f"{_WHAT[is_run]} elsewhere with --out (or remove that page)",
        )


def build_report(path: str | Path, notes: list[str] | None = None) -> str:
    """The HTML page for a classify output (folder or predictions file) or a training run folder.

    ``notes`` (a list) receives one-line warnings about the data (they are on the page too), such as
    rows with a NaN confidence left out of the histograms."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, missing_reason(path, "no such file or folder"))
    notes = [] if notes is None else notes
    plt = _plt()
    is_run = _is_run(path)
    import matplotlib

    # Drawing warnings (matplotlib's, pandas') are about the library, not the data, which the notes
    # cover: they would reach the user as raw source lines. rc_context: a figure left undrawn by an
    # error leaves no style behind (_Figures)
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")
        if is_run:
            table, facts, figures = _run_sections(path, plt, notes)
            title = f"{_TITLES[True]} {path.name}"
        else:
            table, facts, figures = _results_sections(path, plt, notes)
            title = f"{_TITLES[False]} {path.name}"
    rows = "".join(f"<tr><th>{_shown(k)}</th><td>{_shown(v)}</td></tr>" for k, v in facts)
    figs = "".join(
        f'<figure><h2>{html.escape(t)}</h2><img alt="{html.escape(t)}" '
        f'src="data:image/png;base64,{png}"><figcaption>{html.escape(cap)}</figcaption></figure>'
        for t, cap, png in figures
    )
    tomo = f"<h2>Class counts per tomogram</h2>{table}" if table else ""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_shown(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{_shown(title)}</h1>"
        f"<p>{_shown(str(path.resolve()))}</p><h2>Summary</h2><table>{rows}</table>{tomo}"
        f'<div class="figs">{figs}</div></body></html>\n'
    )


def write_report(path: str | Path, out: str | Path | None = None, notes: list[str] | None = None) -> Path:
    """Write the page to ``out`` (default: ``report.html`` in the folder) and return its path;
    ``notes`` receives the page's warnings (see :func:`build_report`)."""
    path = Path(path)
    target = Path(out) if out else (path if path.is_dir() else path.parent) / REPORT_HTML
    _check_target(target)
    if not out and not target.is_symlink() and target.is_file():
        _other_report(target, _is_run(path))
    page = build_report(path, notes)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # the whole page under a new name, renamed onto report.html: a link planted there is
        # replaced, never written through (runtime/outfiles.py)
        write_text(target, page)
    except OSError as exc:
        raise InputError(target, f"cannot write the report: {_write_failure(target, exc)}") from exc
    return target


def _check_target(target: Path) -> None:
    """Refuse, before drawing anything, a page name that is a folder or an existing file other than
    an HTML page (an earlier report): ``--out`` naming the run's metrics.csv or predictions.csv
    overwrote it with the page. A folder for it that cannot be made (a file or a dangling link on
    the way) is refused here too, in the words of :func:`_write_failure`.

    A device, a named pipe or a socket at the name, or a link to one (``/dev/stdout``), is refused
    too: the page is written whole and renamed into place, which replaced ``/dev/full`` and the
    ``/dev/stdout`` link with a regular file. A link to anything else is replaced by the page, its
    target left alone, as for every file cryoshift writes (runtime/outfiles.py)."""
    if target.is_dir():
        raise InputError(target, "is a folder; --out takes the name of the HTML file to write")
    kind = special_kind(target, follow=True)
    if kind:
        link = "a symbolic link to " if target.is_symlink() else ""
        raise InputError(
            target, f"is {link}{kind}, not a regular file; --out takes the name of the HTML file to write"
        )
    # a link at the name is replaced by the page, its target left alone: only a file there counts
    if not target.is_symlink() and target.is_file() and target.stat().st_size:
        with open(target, "rb") as fh:
            head = fh.read(64).lstrip().lower()
        if not head.startswith((b"<!doctype html", b"<html")):
            raise InputError(
                target, "exists and is not an HTML page; --out would overwrite it (choose another name)"
            )
    blocked = _blocked_folder(target)
    if blocked:
        raise InputError(target, f"cannot write the report: {blocked}")


def _blocked_folder(target: Path) -> str | None:
    """Why the folder of the page cannot be made (errors.blocked_folder), in words; None if it can."""
    blocked = blocked_folder(target.parent)
    if blocked is None:
        return None
    if blocked.link:
        return f"{blocked.path} is a {missing_reason(blocked.path)}"
    return f"{blocked.path} is a file, not a folder"


def _write_failure(target: Path, exc: OSError) -> str:
    """Why the page could not be written, in words: a dangling link or a file where a folder must
    be is named ("No such file or directory" and "File exists" said neither)."""
    if target.is_symlink() and not target.exists():
        return missing_reason(target)
    said = " ".join(str(exc.strerror or exc).split())
    return _blocked_folder(target) or said.removeprefix("cannot write: ")  # outfiles' words say it too

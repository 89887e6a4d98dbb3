"""Labelled picks: a pick table (STAR or CSV) with a class column, cropped from its tomograms.

``cryoshift evaluate MODEL picks.star -t tomograms.star`` scores a model on hand-labelled
picks. The label column is the one of ``class``, ``label``, ``class_name``, ``true_class``
(any case) the table has, or the one named (a table with several must name one). Classify's
own ``csClassName`` is a prediction, never a label, and is refused. Picks that cannot be
cropped (outside the tomogram, unreadable) are skipped and counted, as are rows with bad
coordinates, crops holding NaN/Inf or a blank box, and rows with an empty label.

Picks are planned by classify's planner, so its refusals hold here too: coordinates that look
normalised (WarpTools' ``--normalized_coords``), and RELION 4 pixel picks whose data_optics
pixel size is not the tomogram's voxel size (these commands have no ``--binning`` or
``--coordinate-pixel-size``: the reason says to rescale the table, ``scale_options=False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoshift.runtime.errors import InputError

LABEL_COLUMNS = ("class", "label", "class_name", "true_class")
PICK_SUFFIXES = (".star", ".csv", ".tsv", ".txt")
BAD_CROP = "crop holds NaN/Inf or one value throughout"


def labels_not_classes(labels: Any, model_classes: Any) -> list[str]:
    """The labels (sorted, as text) that are not class names of the model exactly as written.

    The one rule for scoring labels: ``evaluate`` refuses a table with any, ``report`` gives its
    page no accuracy (labels written as class numbers, ``1`` for the first class, or ``Zeta`` for
    ``zeta``, were scored as wrong answers)."""
    known = set(model_classes)
    return sorted({str(n) for n in labels if n not in known})


def is_pick_table(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and path.suffix.lower() in PICK_SUFFIXES


def _label_column(columns: list[str], path: Path, name: str | None) -> str:
    lower = {str(c).lower(): str(c) for c in columns}
    if name:
        if name not in columns and name.lower() not in lower:
            raise InputError(path, f"no label column {name!r}")
        return name if name in columns else lower[name.lower()]
    present = [lower[c] for c in LABEL_COLUMNS if c in lower]
    if len(present) > 1:  # taking the first is a guess that may score against the wrong labels
        raise InputError(
            path, f"several label columns ({', '.join(present)}); name the one to score with --label-column"
        )
    if present:
        return present[0]
    hint = " (csClassName holds cryoshift's predictions, not labels)" if "csclassname" in lower else ""
    raise InputError(path, f"no label column: need one of {', '.join(LABEL_COLUMNS)}{hint}")


def read_labelled_picks(
    path: str | Path,
    tomograms: list[str],
    box_size: int,
    label_column: str | None = None,
    model_voxel_size: float = 0.0,
    model_contrast: str = "dark",
    ignore_voxel_size: bool = False,
    **plan_options: object,
) -> tuple[np.ndarray, list[str], dict[str, int], list[str]]:
    """(volumes (N, D, D, D) float32, label names, counts of skipped picks by reason, notes).

    Tomograms are checked against ``model_voxel_size`` as classify checks them (0: unknown, not
    checked): picks of a tomogram of another voxel size are skipped with that reason, and when
    no pick is left the error line says why. The notes are the planner's (a tomogram without a
    voxel size, scored unchecked): the report must carry them, as classify's manifest does."""
    from cryoshift.runtime.dataset import unusable_volumes
    from cryoshift.runtime.sources import VolumeCache, load_item, plan_inputs
    from cryoshift.runtime.tables import NA_TEXT, pick_layout, read_pick_table

    path = Path(path)
    # Labels are read by the reader the planner reads the picks with: the same block and rows,
    # and its checks (too many fields, coordinates that are not numbers), whose rows become
    # skipped picks (the planner fails them) instead of refusing the table or shifting labels.
    layout = pick_layout(path)
    column = _label_column(layout.columns, path, label_column)
    table = read_pick_table(path, convert=False, skip_bad_rows=True, extra=(column,), layout=layout)
    raw = pd.Series(table.extra[column], dtype=object)
    labels = raw.where(raw.notna(), "").astype(str).str.strip().tolist()
    cache = VolumeCache()
    plan = plan_inputs(
        [str(path)],
        box_size,
        model_voxel_size,
        model_contrast=model_contrast,
        tomograms=list(tomograms),
        cache=cache,
        ignore_voxel_size=ignore_voxel_size,
        **{"scale_options": False, **plan_options},  # evaluate has no --binning / --coordinate-pixel-size
    )  # type: ignore[arg-type]
    if len(plan.items) != len(labels):
        raise InputError(path, f"{len(plan.items)} picks planned for {len(labels)} rows")
    volumes, names = [], []
    skipped: dict[str, int] = {}
    out = np.empty((box_size,) * 3, dtype=np.float32)
    for item, label in zip(plan.items, labels, strict=True):
        if not label or label in NA_TEXT:
            skipped["no label"] = skipped.get("no label", 0) + 1
            continue
        try:
            load_item(item, out, cache)
        except InputError as exc:
            skipped[exc.reason] = skipped.get(exc.reason, 0) + 1
            continue
        if len(unusable_volumes(out[None])):  # a NaN crop would make every score NaN
            skipped[BAD_CROP] = skipped.get(BAD_CROP, 0) + 1
            continue
        volumes.append(out.copy())
        names.append(label)
    if not volumes:
        raise InputError(path, "no labelled pick could be cropped" + (f" ({skipped})" if skipped else ""))
    return np.stack(volumes), names, skipped, list(plan.notes)


def crop_picks(
    path: str | Path, tomograms: list[str], box_size: int, limit: int = 64, seed: int = 0
) -> np.ndarray:
    """Up to ``limit`` subtomograms (a random subset) cropped at the picks of a STAR/CSV table
    from ``tomograms`` (int8 calibration and parity data when the training target was picks)."""
    from cryoshift.runtime.sources import VolumeCache, load_item

    cache = VolumeCache()
    plan = _plan_unchecked(Path(path), tomograms, box_size, cache)
    items = [it for it in plan.items if it.kind == "tomogram"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    out = np.empty((box_size,) * 3, dtype=np.float32)
    volumes = []
    for i in order:
        if len(volumes) >= limit:
            break
        try:
            load_item(items[i], out, cache)
        except InputError:
            continue  # outside the tomogram, unreadable: calibrate on the others
        volumes.append(out.copy())
    if not volumes:
        raise InputError(path, "no pick could be cropped from the tomograms")
    return np.stack(volumes)


def pick_tomogram_voxels(path: str | Path, tomograms: list[str], box_size: int) -> dict[str, float]:
    """Voxel size (A) of each tomogram the picks of ``path`` are cropped from, by file (headers
    without one are left out). :func:`crop_picks` crops whatever the voxel size (it knows no
    model), so int8 export checks these against the model, as it checks MRC calibration data:
    ranges taken at another scale fit data the model never meets."""
    return dict(_plan_unchecked(Path(path), tomograms, box_size, None).voxel_sizes)


def _plan_unchecked(path: Path, tomograms: list[str], box_size: int, cache: Any) -> Any:
    """The planner's items for a picks table, every tomogram voxel size accepted (and recorded)."""
    from cryoshift.runtime.sources import VolumeCache, plan_inputs

    if not tomograms:
        raise InputError(
            path,
            "picks need tomograms to crop from (the run's config names none; give "
            "--calibration a dataset or MRC stack instead)",
        )
    return plan_inputs(
        [str(path)],
        box_size,
        0.0,
        tomograms=list(tomograms),
        cache=VolumeCache() if cache is None else cache,
        ignore_voxel_size=True,
        scale_options=False,  # export has no --binning / --coordinate-pixel-size
    )

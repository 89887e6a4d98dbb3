"""``predictions.star``: the classified particles as RELION 5, Warp and ArtiaX read them.

Rows that came from a STAR table (RELION 5 picks, a particles.star, an rlnImageName listing)
are written back as that table's own rows: every input column with its input value (angles,
optics group, rlnTomoName, ``rlnCenteredCoordinateX/Y/ZAngst`` or ``rlnCoordinateX/Y/Z``, as
the input had them; ``rlnImageName`` only if the input had one), plus the classification
columns, and the file keeps the input's other blocks (``data_general``, ``data_optics``).
So the file can go straight into RELION 5 *Extract subtomos* or ArtiaX.

Classification columns (STAR label <- results CSV column):

``rlnClassNumber``   class_index + 1 (RELION counts from 1; 0 = unknown). An input
                     ``rlnClassNumber`` is kept as ``csInputClassNumber``.
``csClassName``      class_name (``unknown`` under the confidence threshold)
``csBestClass``      best_class (the argmax even when unknown)
``csUnknown``        1 when under the threshold
``csConfidence``     calibrated max probability
``csShiftScore``     distance from the adapted domain (~1 = typical)
``csProb_<class>``   calibrated probabilities
``csId``             the results id (traces a row back to the CSV and the errors table)

Rows from other inputs (MRC files, stacks, CSV picks) get ``rlnImageName`` (files and stack
slices, ``000003@stack.mrcs``) or ``rlnTomoName`` + ``rlnCoordinateX/Y/Z`` in reconstruction
voxels (CSV picks), plus the same classification columns. Rows that failed are in errors.csv.
RELION ignores labels it does not know (the ``cs`` ones).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

FLOAT_FORMAT = "%.9g"
CLASS_COLUMNS = ("class_index", "class_name", "best_class", "unknown", "confidence", "shift_score")


def _classification(pred: pd.DataFrame) -> pd.DataFrame:
    """The classification columns of results rows, with STAR labels and values."""
    from cryoshift.runtime.results import star_name

    cols = [c for c in pred.columns if c in CLASS_COLUMNS or c.startswith("prob_")]
    out = pd.DataFrame(index=pred.index)
    for c in cols:
        values = pred[c]
        if c == "class_index":
            idx = pd.to_numeric(values, errors="coerce").fillna(-1).astype(np.int64)
            out["rlnClassNumber"] = np.where(idx >= 0, idx + 1, 0)
        elif c in ("class_name", "best_class"):
            out[star_name(c)] = values.astype(str)
        else:
            out[star_name(c)] = pd.to_numeric(values, errors="coerce")
    out["csId"] = pred["id"].astype(str)
    return out


def _plain_rows(pred: pd.DataFrame) -> pd.DataFrame:
    """Rows with no input STAR row: image name or tomogram + voxel coordinates."""
    tomo = pred["tomo_name"].astype(str) if "tomo_name" in pred else pd.Series("", index=pred.index)
    x = pd.to_numeric(pred.get("x", pd.Series(np.nan, index=pred.index)), errors="coerce")
    is_pick = (tomo != "") & x.notna()
    front = pd.DataFrame(index=pred.index)
    if (~is_pick).any():
        front["rlnImageName"] = np.where(is_pick, "", pred["id"].astype(str))
    if is_pick.any():
        front["rlnTomoName"] = np.where(is_pick, tomo, "")
        for axis in "xyz":
            front[f"rlnCoordinate{axis.upper()}"] = pd.to_numeric(pred[axis], errors="coerce")
    return pd.concat([front, _classification(pred)], axis=1)


def _particles_block(blocks: dict) -> str:
    tables = [n for n, b in blocks.items() if isinstance(b, pd.DataFrame)]
    return "particles" if "particles" in tables else max(tables, key=lambda n: len(blocks[n]))


def _fill(df: pd.DataFrame) -> pd.DataFrame:
    """Missing cells after joining tables of different columns: "" for text, NaN for numbers."""
    for c in df.columns:
        if not pd.api.types.is_numeric_dtype(df[c]):
            df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    return df


def build_star(pred: pd.DataFrame, origins: Sequence[tuple[str, Sequence[str | None]]]) -> dict:
    """The blocks of predictions.star: the input's other blocks, then ``particles``."""
    import starfile

    pred = pred.reset_index(drop=True)
    row_of = {ident: i for i, ident in enumerate(pred["id"].astype(str))}
    used = np.zeros(len(pred), dtype=bool)
    parts: list[pd.DataFrame] = []
    extra_blocks: dict[str, object] = {}
    for path, ids in origins:
        try:
            blocks = starfile.read(path, always_dict=True)
        except Exception:  # the input changed or vanished since planning: fall back to plain rows
            continue
        name = _particles_block(blocks)
        table = blocks[name].reset_index(drop=True)
        if len(table) != len(ids):
            continue
        keep, where = [], []
        for r, ident in enumerate(ids):
            i = row_of.get(ident) if ident is not None else None
            if i is not None and not used[i]:
                used[i] = True
                keep.append(r)
                where.append(i)
        for block_name, block in blocks.items():
            if block_name == name:
                continue
            if block_name not in extra_blocks:
                extra_blocks[block_name] = block
            elif isinstance(block, pd.DataFrame) and isinstance(extra_blocks[block_name], pd.DataFrame):
                joined = pd.concat([extra_blocks[block_name], block], ignore_index=True)
                extra_blocks[block_name] = joined.drop_duplicates().reset_index(drop=True)
        if not keep:
            continue
        rows = table.iloc[keep].reset_index(drop=True)
        if "rlnClassNumber" in rows.columns:
            rows = rows.rename(columns={"rlnClassNumber": "csInputClassNumber"})
        cls = _classification(pred.iloc[where].reset_index(drop=True))
        rows = rows.drop(columns=[c for c in cls.columns if c in rows.columns])
        parts.append(pd.concat([rows, cls], axis=1))
    if (~used).any():
        parts.append(_plain_rows(pred[~used]).reset_index(drop=True))
    particles = _fill(pd.concat(parts, ignore_index=True)) if parts else _plain_rows(pred)
    return {**extra_blocks, "particles": particles}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "class"


def write_predictions_star(csv_path: str | Path, star_path: str | Path,
                           origins: Sequence[tuple[str, Sequence[str | None]]] = (),
                           split_by_class: bool = False) -> list[Path]:
    """Write ``star_path`` from the results CSV (and, with ``split_by_class``, one
    ``<stem>_<class>.star`` per class name next to it, each with the same other blocks).
    Returns the per-class files. Files are written under a temporary name and renamed."""
    pred = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    blocks = build_star(pred, origins)
    star_path = Path(star_path)
    _atomic_star(blocks, star_path)
    written = []
    if split_by_class:
        particles = blocks["particles"]
        names = particles["csClassName"] if "csClassName" in particles else pd.Series(dtype=str)
        for old in star_path.parent.glob(f"{star_path.stem}_*.star"):
            old.unlink()  # a rerun must not leave classes that no longer exist
        for name in sorted(set(names)):
            part = particles[names == name].reset_index(drop=True)
            path = star_path.with_name(f"{star_path.stem}_{_safe(name)}.star")
            _atomic_star({**blocks, "particles": part}, path)
            written.append(path)
    return written


def _atomic_star(blocks: dict, path: Path) -> None:
    import starfile

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.star")
    try:
        starfile.write(blocks, tmp, float_format=FLOAT_FORMAT, overwrite=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()

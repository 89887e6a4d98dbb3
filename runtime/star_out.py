"""``predictions.star``: the classified particles as RELION 5, Warp and ArtiaX read them.

Rows that came from a STAR table (RELION 5 picks, a particles.star, an rlnImageName listing)
are written back as that table's own rows: every input column with its input text, exactly
as written (``0007`` stays ``0007``, ``32.458010866358`` keeps its digits: columns are read as
text, never re-printed as numbers, whatever the table's size), angles, optics group,
rlnTomoName, ``rlnCenteredCoordinateX/Y/ZAngst`` or ``rlnCoordinateX/Y/Z`` as the input had them
(``rlnImageName`` only if the input had one), plus the classification columns, and the file
keeps the input's other blocks (``data_general``, ``data_optics``). So the file can go straight
into RELION 5 *Extract subtomos* or ArtiaX.

Tomogram picks always carry RELION 5's ``rlnCenteredCoordinateX/Y/ZAngst``: where the input had
none (CSV picks, RELION 4 pixel picks), they are computed from the voxels cropped
(:func:`centred_angst`, the inverse of the reader's conversion), so classifying
predictions.star again with the same ``-t`` crops the same places. No ``data_optics`` is
invented: one is written only when the input had it.

Classification columns (STAR label <- results CSV column):

``rlnClassNumber``   class_index + 1 (RELION counts from 1; 0 = unknown). An input
                     ``rlnClassNumber`` is kept as ``csInputClassNumber`` (re-classified
                     output: :func:`kept_class_label`).
``csClassName``      class_name (``unknown`` under the confidence threshold)
``csBestClass``      best_class (the argmax even when unknown)
``csUnknown``        1 when under the threshold
``csConfidence``     calibrated max probability
``csShiftScore``     distance from the adapted domain (~1 = typical)
``csProb_<class>``   calibrated probabilities
``csId``             the results id (traces a row back to the CSV and the errors table)

Rows from other inputs (MRC files, stacks, CSV picks) get ``rlnImageName`` (files and stack
slices, ``000003@stack.mrcs``) or ``rlnTomoName`` + ``rlnCoordinateX/Y/Z`` in reconstruction
voxels and ``rlnCenteredCoordinateX/Y/ZAngst`` (CSV picks), plus the same classification
columns. Rows that failed are in errors.csv. RELION ignores labels it does not know (the ``cs``
ones). A row holding a name no STAR value carries back as written (a line break, two spaces in a
row, a quote in a value that must be quoted: results.star_problem) is left out, with a note naming
it (:func:`leave_out_unwritable`); predictions.csv keeps it.

Inputs of different kinds in one run (a pick STAR and MRC files) make one table whose rows lack
the other kind's columns: those cells are written ``<NA>`` (numbers) or ``""`` (names), and a
note says so (:func:`mixed_rows_note`). Why not a number: RELION's STAR has no missing value,
and 0 would be a coordinate or an angle, silently wrong; ``<NA>`` reads back as missing through
starfile and makes RELION stop rather than use a made-up value.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cryoshift.runtime.contract import REJECT_LABEL
from cryoshift.runtime.errors import InputError
from cryoshift.runtime.ledger import escape_text
from cryoshift.runtime.literal_paths import for_pandas
from cryoshift.runtime.picks import CENTERED_COLUMNS, NAME_LABELS
from cryoshift.runtime.results import STAR_NA, StarWriter, star_name, star_problems, write_star
from cryoshift.runtime.sources.items import stack_id

# Over this many rows, a table is never read whole: results are written to predictions.star in
# chunks without the input's own columns. An input table is always read in chunks, as text,
# keeping only the rows with results (:func:`_read_input`).
STREAM_ROWS = 1_000_000
INPUT_CLASS_LABEL = "csInputClassNumber"  # where an input's own rlnClassNumber is kept
NAMED_LEFT_OUT = 10  # rows left out of predictions.star named one by one in the notes; the rest counted
# A tomogram's placement: (A per voxel, (X, Y, Z) voxels RELION's centred coordinates count from)
Placement = tuple[float, Sequence[float]]


def _data_rows(path: Path) -> int:
    with open(path, "rb") as fh:
        return max(0, sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 22), b"")) - 1)


CLASS_COLUMNS = ("class_index", "class_name", "best_class", "unknown", "confidence", "shift_score")


def _classification(pred: pd.DataFrame) -> pd.DataFrame:
    """The classification columns of results rows, with STAR labels and values."""
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


def _is_pick(pred: pd.DataFrame) -> pd.Series:
    """Which results rows are tomogram picks (a tomogram name and coordinates)."""
    tomo = pred["tomo_name"].astype(str) if "tomo_name" in pred else pd.Series("", index=pred.index)
    x = pd.to_numeric(pred.get("x", pd.Series(np.nan, index=pred.index)), errors="coerce")
    return (tomo != "") & x.notna()


def _plain_rows(pred: pd.DataFrame, centred: np.ndarray | None = None) -> pd.DataFrame:
    """Rows with no input STAR row: image name or tomogram + voxel coordinates, and ``centred``
    (:func:`_centred_of`: rlnCenteredCoordinate*Angst of the pick rows) when given."""
    is_pick = _is_pick(pred)
    front = pd.DataFrame(index=pred.index)
    if (~is_pick).any():
        front["rlnImageName"] = np.where(is_pick, "", _image_names(pred))
    if is_pick.any():
        front["rlnTomoName"] = np.where(is_pick, pred["tomo_name"].astype(str), "")
        for axis in "xyz":
            front[f"rlnCoordinate{axis.upper()}"] = pd.to_numeric(pred[axis], errors="coerce")
        if centred is not None:
            for k, label in enumerate(CENTERED_COLUMNS):
                front[label] = np.where(is_pick, centred[:, k], np.nan)
    return pd.concat([front, _classification(pred)], axis=1)


def centred_angst(xyz: np.ndarray, voxel: float, centre: Sequence[float]) -> np.ndarray:
    """RELION 5 ``rlnCenteredCoordinateX/Y/ZAngst`` of reconstruction voxels ``xyz`` ((n, 3),
    X Y Z): the exact inverse of how picks are read (tables._centred_to_pixels:
    ``voxel = angst / pixel_size + centre``), so a written pick is read back at the same voxel.
    ``voxel``: A per reconstruction voxel; ``centre``: the (X, Y, Z) voxels RELION measures from
    (tomograms.star's rlnTomoSizeX/Y/Z / 2 / binning, else the reconstruction's middle)."""
    return (np.asarray(xyz, dtype=np.float64) - np.asarray(centre, dtype=np.float64)) * float(voxel)


def _header_placement(tomo_path: str) -> Placement | None:
    """A tomogram's placement from its MRC header: its voxel size and middle (the reader's own
    fallback, tables._centred_to_pixels, where no tomograms.star row gives RELION's centre);
    None when the header cannot be read or states no voxel size."""
    from cryoshift.runtime.mrc import read_header

    try:
        header = read_header(tomo_path)
    except (InputError, OSError):
        return None
    if not header.get("voxel_size_known") or not float(header.get("voxel_size") or 0) > 0:
        return None
    return float(header["voxel_size"]), np.array(tuple(header["shape"])[::-1], dtype=np.float64) / 2.0


def _centred_of(pred: pd.DataFrame, placement: Mapping[str, Placement] | None) -> np.ndarray | None:
    """rlnCenteredCoordinate*Angst of the pick rows of ``pred`` (NaN for other rows), each
    tomogram placed by ``placement`` (its MRC path as ``pred``'s ``path`` gives it -> voxel size
    and centre, as the run's planning used them: Plan.placement) or, when no placement is given at
    all (a caller outside a run), by its MRC header (:func:`_header_placement`). None when there
    are no pick rows or one cannot be placed (planning could not tell its voxel size, or its MRC
    is gone): no column is better than a made-up position. Why not the header within a run: with
    a tomograms.star, planning places picks by its pixel size x binning and rlnTomoSize / 2, which
    a header may differ from by up to 5 % and a voxel."""
    is_pick = _is_pick(pred).to_numpy()
    if not is_pick.any() or "path" not in pred:
        return None
    paths = pred["path"].astype(str).to_numpy()
    xyz = np.column_stack([pd.to_numeric(pred[a], errors="coerce").to_numpy(dtype=np.float64) for a in "xyz"])
    out = np.full((len(pred), 3), np.nan)
    for tomo_path in pd.unique(paths[is_pick]):
        place = _header_placement(tomo_path) if placement is None else placement.get(tomo_path)
        if place is None:
            return None
        rows = is_pick & (paths == tomo_path)
        out[rows] = centred_angst(xyz[rows], *place)
    return out


def kept_class_label(columns: Iterable[str]) -> str:
    """The label under which an input's ``rlnClassNumber`` is kept: ``csInputClassNumber``, or,
    when the input already has one (cryoshift's own output classified again), the first free of
    ``csInputClassNumber2``, ``csInputClassNumber3`` ...

    Why: the rename wrote a second ``csInputClassNumber`` column, a STAR that RELION reads one
    column of and cryoshift refuses. ``csInputClassNumber`` stays the class the picks had before
    cryoshift first saw them (the user's own labels); each re-classification keeps the class it
    was given under the next number (the highest is the previous run's), so no class is lost and
    every label is unique. The previous run's other ``cs`` columns (csClassName, csConfidence ...)
    are replaced by this run's."""
    taken = set(columns)
    label, k = INPUT_CLASS_LABEL, 1
    while label in taken:
        k += 1
        label = f"{INPUT_CLASS_LABEL}{k}"
    return label


def mixed_rows_note(particles: pd.DataFrame, star_name_: str = "predictions.star") -> str | None:
    """The note on rows that lack RELION columns other rows have (inputs of different kinds in one
    run: a pick STAR and MRC files), None when there are none (see the module docstring). Only
    number columns count: every row lacks a name of the other kind (a pick's rlnImageName, an
    MRC row's rlnTomoName), and an empty name is what such a row has, not a missing value."""
    rln = [c for c in particles.columns if str(c).startswith("rln") and c not in NAME_LABELS]
    if not rln or particles.empty:
        return None
    cells = particles[rln].astype(object)
    missing = cells.isna() | cells.isin([STAR_NA, ""])
    rows = int(missing.any(axis=1).sum())
    if not rows or rows == len(particles):
        return None
    return (
        f"{star_name_}: {rows} of {len(particles)} rows come from inputs of another kind and lack "
        'RELION columns the others have (<NA> or "" there), which RELION cannot read; '
        "classify each kind of input in its own run for a STAR that RELION takes"
    )


def leave_out_unwritable(
    particles: pd.DataFrame, star_name_: str, notes: list[str] | None, named: int = 0
) -> tuple[pd.DataFrame, int]:
    """``particles`` without the rows holding a name no STAR value carries back as written
    (results.star_problem: a line break, two spaces in a row, a quote in a value that must be
    quoted), each named in a note (the first ``NAMED_LEFT_OUT - named`` of them; ``named``: how
    many earlier chunks named), and how many rows were left out.

    Why: such a name was written as another (``a\\rb.mrc`` as the text ``a\\rb.mrc``, ``a  b`` read
    by RELION as ``a b``), so RELION looked for a file or tomogram that is not there, or read
    the row into the wrong columns. The row stays in predictions.csv, which carries any name."""
    bad = star_problems(particles, "csId")
    if not bad:
        return particles, 0
    if notes is not None:
        for _, line in bad[: max(0, NAMED_LEFT_OUT - named)]:
            notes.append(f"{star_name_}: left out {line}; the item is in predictions.csv")
    keep = np.ones(len(particles), dtype=bool)
    keep[[i for i, _ in bad]] = False
    return particles[keep].reset_index(drop=True), len(bad)


def _left_out_note(star_name_: str, count: int, notes: list[str] | None) -> None:
    """The note counting the rows left out beyond the ones named (:func:`leave_out_unwritable`)."""
    if notes is not None and count > NAMED_LEFT_OUT:
        notes.append(
            f"{star_name_}: {count} rows left out in all ({count - NAMED_LEFT_OUT} not named above) "
            "for names no STAR value carries back as written; they are in predictions.csv"
        )


def _image_names(pred: pd.DataFrame) -> np.ndarray:
    """RELION image names of volume rows, from their file and slice (``000003@v.mrc``, ``a.mrc``).

    Why not the id: an id may carry a ``~2`` suffix (a file named ``000003@v.mrc`` beside the
    stack ``v.mrc``: sources.items.UniqueIds), which names no image RELION can read. A row without
    a path (none is written so today) keeps its id."""
    ids = pred["id"].astype(str).to_numpy()
    if "path" not in pred or "index" not in pred:
        return ids
    path = pred["path"].astype(object).where(pred["path"].notna(), "").astype(str).to_numpy()
    index = pd.to_numeric(pred["index"], errors="coerce").fillna(-1).astype(np.int64).to_numpy()
    names = np.array(
        [stack_id(p, i) if i >= 0 else p for p, i in zip(path, index, strict=True)], dtype=object
    )
    return np.where(path != "", names, ids)


def _input_block(path: Path) -> str:
    """The block of an input STAR whose rows classify read (tables.pick_layout's block of picks,
    or the listing's), so that predictions join those rows.

    Why: the largest table (or the first loop, for a large file) was taken instead, so a picks
    block not named data_particles after a data_optics loop of as many rows had its predictions
    written onto the optics rows, without a word."""
    from cryoshift.runtime.tables import rows_block

    return rows_block(path).name


def _fill(df: pd.DataFrame) -> pd.DataFrame:
    """Missing cells after joining tables of different columns: "" for names and other text,
    ``<NA>`` for numbers (a column of input text whose every value is a number counts as numbers:
    input columns are carried as text)."""
    for c in df.columns:
        if pd.api.types.is_numeric_dtype(df[c]):
            continue
        col = df[c].astype(object)
        present = col[col.notna()]
        numbers = (
            c not in NAME_LABELS and len(present) and pd.to_numeric(present, errors="coerce").notna().all()
        )
        df[c] = col.where(col.notna(), STAR_NA if numbers else "").astype(str)
    return df


def build_star(
    pred: pd.DataFrame,
    origins: Sequence[tuple[str, Sequence[str | None]]],
    placement: Mapping[str, Placement] | None = None,
) -> dict:
    """The blocks of predictions.star: the input's other blocks, then ``particles``, whose rows are
    those of ``pred`` in its order (row i of the STAR is row i of the CSV), whichever input each
    came from. An input STAR is read by cryoshift's reader (:func:`_read_input`), every column as
    its text: names such as ``nan`` or ``it's``, and values such as ``0007`` or
    ``1.23456789012345e+05``, are carried over as written (they were re-printed with 9 digits,
    so IDs lost their zeros and long numbers collapsed, but only in tables under 100,000 rows).
    ``placement``: per tomogram MRC, its voxel size and centre as planning used them
    (:func:`_centred_of`), for the rlnCenteredCoordinate*Angst of picks that had none."""
    pred = pred.reset_index(drop=True)
    row_of = {ident: i for i, ident in enumerate(pred["id"].astype(str))}
    used = np.zeros(len(pred), dtype=bool)
    parts: list[pd.DataFrame] = []
    rows_in_csv: list[np.ndarray] = []  # the results row of each part's rows
    extra_blocks: dict[str, object] = {}
    for path, ids in origins:
        try:
            name = _input_block(Path(path))
            blocks = _read_input(Path(path), ids, row_of, name)
        except Exception:  # the input changed or vanished since planning: fall back to plain rows
            continue
        if not isinstance(blocks.get(name), pd.DataFrame):  # read differently than planned: plain rows
            continue
        table = blocks[name].reset_index(drop=True)
        rows_of = blocks.pop("\0rows")  # input row -> its place in ``table``: rows with results only
        if len(table) != len(rows_of):  # the input shrank since planning: plain rows
            continue
        keep, where = [], []
        for r, ident in enumerate(ids):
            if r not in rows_of:
                continue
            i = row_of.get(escape_text(ident)) if ident is not None else None  # ids as the CSV holds them
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
        rows = table.iloc[[rows_of[r] for r in keep]].reset_index(drop=True)
        if "rlnClassNumber" in rows.columns:
            rows = rows.rename(columns={"rlnClassNumber": kept_class_label(rows.columns)})
        mine = pred.iloc[where].reset_index(drop=True)
        cls = _classification(mine)
        rows = rows.drop(columns=[c for c in cls.columns if c in rows.columns])
        if not set(CENTERED_COLUMNS) & set(rows.columns):  # RELION 4 pixel picks: add RELION 5's
            centred = _centred_of(mine, placement)
            if centred is not None and np.isfinite(centred).all():
                for k, label in enumerate(CENTERED_COLUMNS):
                    rows[label] = centred[:, k]
        parts.append(pd.concat([rows, cls], axis=1))
        rows_in_csv.append(np.asarray(where, dtype=np.int64))
    if (~used).any():
        rest = pred[~used].reset_index(drop=True)
        parts.append(_plain_rows(rest, _centred_of(rest, placement)))
        rows_in_csv.append(np.flatnonzero(~used))
    if not parts:
        return {**extra_blocks, "particles": _plain_rows(pred, _centred_of(pred, placement))}
    # In the results' order, not table by table: row i of the STAR is row i of the CSV (a stack
    # given before a picks STAR had its rows after the picks' in the STAR, first in the CSV).
    particles = pd.concat(parts, ignore_index=True)
    particles = particles.iloc[np.argsort(np.concatenate(rows_in_csv), kind="stable")]
    particles = _fill(particles.reset_index(drop=True))
    return {**extra_blocks, "particles": particles}


def _read_input(path: Path, ids: Sequence[str | None], row_of: dict[str, int], name: str) -> dict:
    """The blocks of an input STAR, of any size, without reading it whole: the other blocks as
    they are (loops as text), the block ``name`` (:func:`_input_block`) with only the rows that
    have results (every cell's text kept as written), and under the key ``"\0rows"`` the map
    from input row number to position in that block."""
    from cryoshift.runtime.tables import scan_star, star_chunks

    blocks = scan_star(path)
    out: dict = {}
    for block in blocks:
        if not block.loop:
            out[block.name] = dict(block.values)
            continue
        wanted = (
            {r for r, ident in enumerate(ids) if ident is not None and escape_text(ident) in row_of}
            if block.name == name
            else None
        )
        parts, n = [], 0
        for chunk in star_chunks(path, block, list(block.labels), text=tuple(block.labels)):
            if wanted is None:
                parts.append(chunk)
            else:
                idx = [r - n for r in range(n, n + len(chunk)) if r in wanted]
                parts.append(chunk.iloc[idx])
            n += len(chunk)
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=block.labels)
        out[block.name] = table
        if wanted is not None:
            out["\0rows"] = {r: i for i, r in enumerate(sorted(wanted))}
    # the particles block last, as starfile gives it
    return out


def _stream_plain_star(
    csv_path: Path,
    star_path: Path,
    split_by_class: bool,
    placement: Mapping[str, Placement] | None = None,
    notes: list[str] | None = None,
) -> dict[Path, str]:
    """predictions.star for a results table over ``STREAM_ROWS`` rows, written in chunks:
    ``rlnImageName`` or ``rlnTomoName`` + ``rlnCoordinateX/Y/Z``, the pick rows'
    rlnCenteredCoordinate*Angst as :func:`build_star` writes them (``placement``: see there), and
    the classification columns (the input's other columns are not written; see the README's
    limits). The first pass over the table finds which columns every chunk must carry: the
    centred ones only when every pick's tomogram can be placed (one that cannot: none, as in
    :func:`_centred_of`). Rows whose names no STAR value carries are left out, each named in
    ``notes`` (:func:`leave_out_unwritable`)."""
    opts = {"dtype": str, "keep_default_na": False}
    columns = list(pd.read_csv(for_pandas(csv_path), nrows=0, **opts).columns)
    wanted = ["tomo_name", "x"] + (["class_name"] if split_by_class and "class_name" in columns else [])
    wanted += ["path"] if "path" in columns else []
    has_pick = has_image = False
    found: set[str] = set()
    tomo_paths: set[str] = set()
    for chunk in pd.read_csv(for_pandas(csv_path), usecols=wanted, chunksize=1 << 20, **opts):
        pick = (chunk["tomo_name"] != "") & (pd.to_numeric(chunk["x"], errors="coerce").notna())
        has_pick |= bool(pick.any())
        has_image |= bool((~pick).any())
        if "path" in chunk:
            tomo_paths.update(chunk["path"][pick].astype(str))
        if "class_name" in chunk:
            found.update(chunk["class_name"].astype(str))
    places = _placed(tomo_paths, placement) if has_pick and "path" in columns else None
    files = class_star_names(star_path, _model_classes(columns), found) if split_by_class else {}
    writers: dict[str, StarWriter] = {}  # "" -> star_path, class name -> its own file

    def writer(key: str, labels: list[str]) -> StarWriter:
        if key not in writers:
            target = star_path.with_name(files[key]) if key else star_path
            writers[key] = StarWriter(target, "particles", labels)
        return writers[key]

    left_out = 0
    try:
        for chunk in pd.read_csv(for_pandas(csv_path), chunksize=1 << 18, **opts):
            rows = _plain_rows(chunk, None if places is None else _centred_of(chunk, places))
            rows, dropped = leave_out_unwritable(rows, star_path.name, notes, left_out)
            left_out += dropped
            if has_image and "rlnImageName" not in rows:
                rows.insert(0, "rlnImageName", "")
            if has_pick and "rlnTomoName" not in rows:
                at = 1 if has_image else 0
                rows.insert(at, "rlnTomoName", "")
                for i, axis in enumerate("XYZ"):
                    rows.insert(at + 1 + i, f"rlnCoordinate{axis}", np.nan)
                if places is not None:  # a chunk without picks: no centred coordinates either
                    for i, label in enumerate(CENTERED_COLUMNS):
                        rows.insert(at + 4 + i, label, np.nan)
            labels = list(rows.columns)
            writer("", labels).write(rows)
            if split_by_class:
                for name, part in rows.groupby("csClassName", sort=True):
                    writer(str(name), labels).write(part)
        for star in writers.values():
            star.commit()
        _left_out_note(star_path.name, left_out, notes)
    finally:
        for star in writers.values():
            star.discard()
    return {writers[k].path: k for k in sorted(writers) if k}


def _placed(
    tomo_paths: Iterable[str], placement: Mapping[str, Placement] | None
) -> dict[str, Placement] | None:
    """Each tomogram MRC's placement, as :func:`_centred_of` finds it (``placement``, else its
    header), read once for a whole streamed table; None when one cannot be placed."""
    out: dict[str, Placement] = {}
    for tomo_path in sorted(tomo_paths):
        place = _header_placement(tomo_path) if placement is None else placement.get(tomo_path)
        if place is None:
            return None
        out[tomo_path] = place
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "class"


def _model_classes(columns: Sequence[str]) -> list[str]:
    """The model's class names, in order, from a results table's ``prob_<class>`` columns."""
    return [str(c)[len("prob_") :] for c in columns if str(c).startswith("prob_")]


def class_star_names(star_path: Path, classes: Sequence[str], found: Iterable[str] = ()) -> dict[str, str]:
    """Each class name -> the file name of its own STAR next to ``star_path``:
    ``<stem>_<class>.star``, the name made file-safe (:func:`_safe`), and where two classes give
    the same file name (``TRiC-α`` and ``TRiC-β`` both ``TRiC-_``; ``Ribo`` and ``ribo`` on a file
    system that ignores case) each of them with its RELION class number added
    (``<stem>_TRiC-__1.star``, ``<stem>_TRiC-__2.star``).

    Why: the second class's file replaced the first's, whose particles were lost without a word.
    ``classes`` are the model's class names in order (class k is RELION class k + 1; ``unknown``
    is 0), so a class keeps its file name whichever classes a run happened to find; ``found``:
    names the rows hold besides (numbered after the model's)."""
    number: dict[str, int] = {REJECT_LABEL: 0}
    for name in [*classes, *sorted(set(found) - set(classes))]:
        number.setdefault(name, len(number))
    base = {name: _safe(name) for name in number}
    clashes = Counter(part.casefold() for part in base.values())
    taken = {part.casefold() for part in base.values() if clashes[part.casefold()] == 1}
    parts = {name: part for name, part in base.items() if clashes[part.casefold()] == 1}
    for name in sorted(set(number) - set(parts), key=number.__getitem__):
        part = f"{base[name].rstrip('_') or base[name]}_{number[name]}"
        while part.casefold() in taken:  # a class named like another's numbered name
            part = f"{part}_{number[name]}"
        taken.add(part.casefold())
        parts[name] = part
    return {name: f"{star_path.stem}_{part}.star" for name, part in parts.items()}


def remove_earlier_class_stars(
    star_path: Path, recorded: Iterable[object], keep: Iterable[Path] = ()
) -> list[Path]:
    """Remove the per-class STARs an earlier run recorded (``recorded``: the file names in its
    manifest's ``class_stars``) that this run did not write again (``keep``); returns those removed.

    Why: every ``<stem>_*.star`` in the folder was deleted, a user's own
    ``predictions_curated_by_hand.star`` with them. Only a name cryoshift recorded is removed, and
    only if it is a plain file name of the form ``<stem>_<class>.star`` in ``star_path``'s folder
    (a manifest is data: a recorded ``../x.star`` or ``predictions.csv`` is ignored). A link is
    removed as a link (its target stays); a folder is left."""
    kept = {Path(p).name for p in keep}
    removed = []
    for name in recorded:
        if not isinstance(name, str) or name in kept or name == star_path.name:
            continue
        if Path(name).name != name or not (name.startswith(f"{star_path.stem}_") and name.endswith(".star")):
            continue
        path = star_path.with_name(name)
        if path.is_dir() and not path.is_symlink():
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def write_predictions_star(
    csv_path: str | Path,
    star_path: str | Path,
    origins: Sequence[tuple[str, Sequence[str | None]]] = (),
    split_by_class: bool = False,
    placement: Mapping[str, Placement] | None = None,
    notes: list[str] | None = None,
) -> dict[Path, str]:
    """Write ``star_path`` from the results CSV (and, with ``split_by_class``, one STAR per class
    name next to it, each with the same other blocks, named by :func:`class_star_names`).
    Returns the per-class files, each with its class name (sorted by class name), for the
    manifest to record: a rerun removes those it does not write again
    (:func:`remove_earlier_class_stars`), and no other file. Files are written under a temporary
    name and renamed. ``placement``: see :func:`build_star`; ``notes``: the run's notes, to which
    :func:`mixed_rows_note` is added."""
    star_path = Path(star_path)
    if _data_rows(Path(csv_path)) > STREAM_ROWS:
        return _stream_plain_star(Path(csv_path), star_path, split_by_class, placement, notes)
    pred = pd.read_csv(for_pandas(csv_path), dtype=str, keep_default_na=False)
    blocks = build_star(pred, origins, placement)
    blocks["particles"], left_out = leave_out_unwritable(blocks["particles"], star_path.name, notes)
    _left_out_note(star_path.name, left_out, notes)
    note = mixed_rows_note(blocks["particles"], star_path.name)
    if note and notes is not None and note not in notes:
        notes.append(note)
    write_star(blocks, star_path)
    written: dict[Path, str] = {}
    if split_by_class:
        particles = blocks["particles"]
        names = particles["csClassName"] if "csClassName" in particles else pd.Series(dtype=str)
        files = class_star_names(star_path, _model_classes(pred.columns), set(names))
        for name in sorted(set(names)):
            part = particles[names == name].reset_index(drop=True)
            path = star_path.with_name(files[name])
            write_star({**blocks, "particles": part}, path)
            written[path] = name
    return written

"""``describe(path)``: what a file is and what is in it, for ``cryoshift info``.

Kinds: an MRC volume/stack/tomogram (shape, mode, voxel size, min/max/mean), a STAR or
CSV/TSV table of picks (rows, tomograms) or of subtomogram files (rlnImageName), a RELION 5
tomograms.star (tomograms, voxel sizes, reconstructions found, damaged rows), a
labelled dataset directory (classes and counts), an ONNX model (its cryoshift
metadata), a TensorRT engine or its ``.engine.json`` sidecar (the model's metadata and what the
engine was built for) and an atomic model (PDB/mmCIF, gzip ok: atoms, models, extent; needs the 'train'
extra's gemmi). Cheap by default: MRC statistics are computed from the data only when the file
is small enough (or ``full=True``); otherwise the header's values are shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryoshift.runtime.engine_sidecar import EngineSidecar, is_sidecar_name
from cryoshift.runtime.errors import InputError, missing_reason
from cryoshift.runtime.hostmem import format_bytes
from cryoshift.runtime.metadata import (
    CALIBRATION_VIEWS,
    CHECKPOINT_SUFFIXES,
    ModelMetadata,
    is_onnx,
    read_onnx_metadata,
)

FULL_STATS_BYTES = 256 * 1024 * 1024


@dataclass
class Description:
    """A titled list of (key, value) rows; ``kind`` is mrc | picks | listing | tomograms | results |
    dataset | onnx | engine | model."""

    kind: str
    path: str
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, key: str, value: object) -> None:
        self.rows.append((key, value if isinstance(value, str) else _fmt(value)))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value):
        return " x ".join(str(v) for v in value)
    return str(value)


def _counts(values: object, limit: int = 10) -> str:
    import pandas as pd

    counts = pd.Series(values).value_counts(sort=False)
    parts = [f"{k}: {v}" for k, v in counts.items()]
    return ", ".join(parts[:limit]) + (f" ... ({len(parts)} in all)" if len(parts) > limit else "")


def _describe_mrc(path: Path, full: bool) -> Description:
    from cryoshift.runtime.mrc import open_volume, volume_stats

    d = Description("mrc", str(path))
    with open_volume(path, allow_2d=True) as vol:
        h = vol.header
        shape = h["shape"]
        if len(shape) == 2:
            kind = "2-D image (not usable as a volume)"
        elif h.get("images"):  # was called a "volume" of as many sections as images
            kind = f"stack of {h['images']} 2-D images (not usable as a map or volume)"
        elif vol.is_stack:
            kind = f"volume stack of {shape[0]}"
        else:
            kind = "volume"
        d.add("type", kind)
        dims = tuple(int(s) for s in shape)
        if h.get("images"):  # the sections are images: no Z axis
            d.add("shape (N, Y, X)", dims)
            d.add("image size (X x Y)", f"{shape[2]} x {shape[1]}")
        elif len(shape) == 3:
            d.add("shape (Z, Y, X)", dims)
            d.add("size (X x Y x Z)", f"{shape[2]} x {shape[1]} x {shape[0]}")
        else:
            d.add("shape", dims)
        d.add("mode", f"{h['mode']} ({h['dtype']})")
        if vol.anisotropic:
            sx, sy, sz = vol.voxel_sizes
            d.add(
                "voxel size (A)",
                f"{sx:.4g} x {sy:.4g} x {sz:.4g} (X, Y, Z): anisotropic, classify and train refuse it",
            )
        elif not vol.voxel_size_known:  # the reader's stand-in of 1 was shown as if it were a size
            d.add("voxel size (A)", _unset_voxel(len(shape), vol.is_stack))
        else:
            d.add("voxel size (A)", f"{vol.voxel_size:.4g}")
        if kind == "volume":
            _add_axes_note(d, dims)
        order = h["axis_order"]
        if order != (1, 2, 3):
            shown = "-".join(str(o) for o in order)
            d.add("axis order", f"{shown} (mapc-mapr-maps; shown and read as Z, Y, X)")
        d.add(
            "file size", format_bytes(h["file_bytes"]) + (f", {h['compressed']}" if h["compressed"] else "")
        )
        if full or h["data_bytes"] <= FULL_STATS_BYTES or h["compressed"]:
            s = volume_stats(vol.data)
            d.add("min / max", f"{s.min:.6g} / {s.max:.6g}")
            d.add("mean / std", f"{s.mean:.6g} / {s.std:.6g}")
            if s.nonfinite:
                d.add("non-finite voxels", f"{s.nonfinite} (NaN/Inf: unusable until fixed)")
        elif not h["dmax"] >= h["dmin"]:  # MRC2014: dmax < dmin says "not computed" (NaN: not either)
            d.add("min / max / mean", "not in header (--full computes them)")
        else:
            d.add(
                "min / max / mean",
                f"{h['dmin']:.6g} / {h['dmax']:.6g} / {h['dmean']:.6g} (from header; --full computes them)",
            )
    return d


def _add_axes_note(d: Description, dims: tuple[int, ...]) -> None:
    """Say when a volume looks like an un-rotated IMOD reconstruction (stored XZY), by classify's
    own rule (tomograms.unrotated_reason): classify refuses its picks, so info, which describes and
    refuses nothing, shows the reason and the fix (``trimvol -rx``) as one row before the user runs
    classify. Why: info showed such a file as an ordinary volume."""
    from cryoshift.runtime.tomograms import unrotated_reason

    reason = unrotated_reason(dims)
    if reason:
        d.add("axes", f"classify refuses its picks: {reason}")


def _unset_voxel(ndim: int, stack: bool) -> str:
    """What the runtime does with a file whose header has no voxel size (cella/mx 0, NaN ...):
    classify crops it as if its voxels were the model's, without the check (a note says so), and
    picks in Angstrom (or --coordinate-pixel-size) in a tomogram fail unless a tomograms.star row
    gives its pixel size (runtime/sources/planner.py check_voxel, picktables.tomogram_pixel)."""
    if ndim == 2:
        return "not set in header"
    text = "not set in header: classify takes it to be the model's, unchecked"
    return text if stack else text + "; picks in Angstrom need tomograms.star's pixel size"


def _describe_table(path: Path) -> Description:
    """A pick table or listing, streamed (runtime/tables.py): memory stays ~28 bytes per pick."""
    from cryoshift.runtime.picks import STAR_SUFFIXES, STATED_PIXEL, read_particle_listing
    from cryoshift.runtime.tables import csv_columns, read_pick_table, scan_star

    star = path.suffix.lower() in STAR_SUFFIXES
    columns = {c for b in scan_star(path) for c in b.labels} if star else set(csv_columns(path))
    if {"csConfidence", "csClassName"} <= columns or {"confidence", "class_name"} <= columns:
        return _describe_results(path)
    if star and _is_tomogram_table(columns):  # described, not refused with classify's advice
        return _describe_tomograms(path)
    from cryoshift.runtime.sources.planner import is_listing

    if is_listing(path):  # classify's test: a CSV of paths was "no coordinate columns" here
        listing = read_particle_listing(path)
        d = Description("listing", str(path))
        d.add("type", "subtomogram listing (rlnImageName)")
        if star:
            d.add(
                "blocks",
                ", ".join(f"{b.name or '(unnamed)'} ({b.count_rows(path)} rows)" for b in scan_star(path)),
            )
        d.add("rows", len(listing))
        stated = sorted(set(listing[STATED_PIXEL].dropna()))
        if stated:  # classify checks it against each file's header (and the model)
            d.add("pixel size", f"{', '.join(f'{v:g}' for v in stated)} A (data_optics rlnImagePixelSize)")
        d.add("files", listing["path"].nunique())
        missing = sum(not Path(p).exists() for p in listing["path"].unique())
        if missing:
            d.add("missing files", missing)
        return d
    picks = read_pick_table(path, convert=False)  # centred Angstrom stays as it is: no tomograms here
    centered = picks.centred
    d = Description("picks", str(path))
    d.add("type", "picks")
    if picks.blocks:
        d.add("blocks", ", ".join(f"{name or '(unnamed)'} ({rows} rows)" for name, rows in picks.blocks))
    d.add("rows", len(picks))
    d.add(
        "coordinates",
        "rlnCenteredCoordinateX/Y/ZAngst (Angstrom from the tomogram centre)" if centered else "pixels",
    )
    stated = _stated_pick_pixels(path) if star and not centered else None
    if stated:
        d.add("pixel size", stated)
    counts = picks.counts()
    if any(counts):
        parts = [f"{k}: {v}" for k, v in counts.items()]
        shown = ", ".join(parts[:10]) + (f" ... ({len(parts)} in all)" if len(parts) > 10 else "")
        d.add("tomograms", f"{len(counts)}: {shown}")
    else:
        d.add("tomograms", "not named (one tomogram)")
    if not centered:
        for i, axis in enumerate("xyz"):
            d.add(f"{axis} range", f"{picks.xyz[:, i].min():.6g} .. {picks.xyz[:, i].max():.6g}")
        replaced = {"x", "y", "z", "tomo_name", "tomo", "tomogram"}
        extra = [c for c in picks.columns if c.lower() not in replaced]
    else:
        extra = [c for c in picks.columns if c not in ("tomo_name", "x", "y", "z")]
    if extra:
        d.add("other columns", ", ".join(map(str, extra[:12])) + (" ..." if len(extra) > 12 else ""))
    for note in picks.notes:  # what the reader decided (mixed decimal marks): classify says it too
        d.add("note", note)
    return d


def _stated_pick_pixels(path: Path) -> str | None:
    """What a pick STAR's ``data_optics`` says the pixel coordinates' pixel size is, per optics
    group (None: it states none): classify compares it with each tomogram's voxel size."""
    from cryoshift.runtime.sources.picktables import TILT_SERIES_PIXEL, optics_pixel_sizes

    optics = optics_pixel_sizes(path)
    if optics is None:
        return None
    groups = [f"group {g}: {v:g} A" for g, v in optics.sizes.items()]
    groups += [f"group {g}: {raw!r} (not a pixel size)" for g, raw in optics.damaged.items()]
    return f"{', '.join(groups[:10])}{' ...' if len(groups) > 10 else ''} (data_optics {TILT_SERIES_PIXEL})"


def _is_tomogram_table(columns: set[str]) -> bool:
    """A RELION 5 ``tomograms.star``: tomogram names and reconstruction files (the test classify
    uses to refuse one given as picks)."""
    from cryoshift.runtime.tomograms import RECONSTRUCTION_COLUMNS

    return "rlnTomoName" in columns and bool(columns & set(RECONSTRUCTION_COLUMNS))


NO_TOMOGRAMS = "the table lists no tomograms (no data rows)"


def _tomogram_table_problems(path: Path) -> list[str]:
    """What makes tomograms of a tomograms.star unusable (their picks fail in classify): damaged
    rows (pixel size or binning 0, negative, NaN or text) and reconstructions not found; a table
    without rows is one problem (it was "ok"). A row that gives no reconstruction says so in its
    own problem (its stand-in path, the table's folder, was "reconstruction  not found")."""
    from cryoshift.runtime.tomograms import read_tomogram_table

    entries = read_tomogram_table(path, keep_damaged=True)
    if not entries:
        return [NO_TOMOGRAMS]
    problems = [_row_problem(path, e) for e in entries if e.problem]
    for e in entries:
        if e.written and not e.path.is_file():
            problems.append(
                f"tomogram {_entry_name(path, e)}: reconstruction {e.written} not found ({e.path})"
            )
    return problems


def _entry_name(path: Path, entry: object) -> str:
    """A tomogram's name as info shows it: quoted, or ``(no name, line 15)`` for a row whose
    rlnTomoName is empty (shown as a blank in the list, and as '' in a problem line)."""
    name = str(getattr(entry, "name", ""))
    if name:
        return repr(name)
    problem = _row_problem(path, entry)  # "line 15: empty rlnTomoName ...", tomograms.py
    where = problem.split(": ", 1)[0] if ": " in problem else ""
    return f"(no name, {where})" if where else "(no name)"


def _row_problem(path: Path, entry: object) -> str:
    """A damaged row's problem without the table's path (info names the table already)."""
    problem = str(getattr(entry, "problem", ""))
    prefix = f"{path}: "
    return problem[len(prefix) :] if problem.startswith(prefix) else problem


def _describe_tomograms(path: Path) -> Description:
    """A RELION 5 ``tomograms.star`` (what ``--tomograms`` reads): its tomograms, their voxel
    sizes (tilt-series pixel x binning), whether each reconstruction is found, and damaged rows
    (whose picks classify fails); read as classify reads it (tomograms.read_tomogram_table)."""
    from collections import Counter

    from cryoshift.runtime.tomograms import read_tomogram_table

    entries = read_tomogram_table(path, keep_damaged=True)
    d = Description("tomograms", str(path))
    d.add("type", "tomogram table (RELION 5 tomograms.star): give it to classify with --tomograms")
    if not entries:  # "0: " and "0 found, 0 missing" said nothing of why
        d.add("tomograms", f"none: {NO_TOMOGRAMS}")
        return d
    names = [e.name or _entry_name(path, e) for e in entries[:10]]
    d.add("tomograms", f"{len(entries)}: " + ", ".join(names) + (" ..." if len(entries) > 10 else ""))
    voxels: Counter[str] = Counter()
    for e in entries:
        if e.problem:
            continue
        if e.pixel_size:
            text = f"{e.tilt_series_pixel_size:.4g} A x binning {e.binning:g} = {e.pixel_size:.4g} A"
        else:
            text = "not given (the reconstruction's header is used)"
        voxels[text] += 1
    if voxels:
        d.add("voxel size", "; ".join(f"{text}: {n}" for text, n in voxels.items()))
    # A row without a reconstruction has the table's folder as a stand-in path: no file to find
    listed = [e for e in entries if e.written]
    found = [e for e in listed if e.path.is_file()]
    missing = [e for e in listed if not e.path.is_file()]
    text = f"{len(found)} found, {len(missing)} missing"
    if missing:
        gone = missing[0]
        text += f" (first: {gone.name or _entry_name(path, gone)} {gone.written}, looked for as {gone.path})"
    if len(listed) < len(entries):
        unlisted = len(entries) - len(listed)
        text += f"; {unlisted} {'row gives' if unlisted == 1 else 'rows give'} none"
    d.add("reconstructions", text)
    damaged = [e for e in entries if e.problem]
    if damaged:
        first = _row_problem(path, damaged[0])
        d.add("damaged rows", f"{len(damaged)} (their picks fail in classify; first: {first})")
    return d


def _describe_results(path: Path) -> Description:
    """A predictions table written by ``cryoshift classify`` (CSV or STAR: the same rows), checked
    as ``cryoshift report`` checks it: a cut-off row or text as a confidence was a traceback here
    (the median of text), and predictions in several STAR blocks were described from the first."""
    from cryoshift.runtime.results import read_predictions

    rows = read_predictions(path)
    d = Description("results", str(path))
    d.add("type", "classification results")
    d.add("rows", len(rows))
    if len(rows):
        d.add("classes", _counts(rows["class_name"]))
        d.add("confidence", f"median {rows['confidence'].median():.3g}, min {rows['confidence'].min():.3g}")
        if "shift_score" in rows:
            d.add(
                "shift score",
                f"median {rows['shift_score'].median():.3g}, "
                f"max {rows['shift_score'].max():.3g} (~1 = the adapted domain)",
            )
    return d


# What a PDB/mmCIF file holds comes from training's reader (training/simulate/atomic.py), which the
# runtime may not import (the import rule, docs/design.md): the info command passes it in.
AtomicRows = Callable[[Path], list[tuple[str, str]]]


def _is_atomic_model(path: Path) -> bool:
    from cryoshift.runtime.contract import ATOMIC_MODEL_SUFFIXES

    return path.name.lower().endswith(ATOMIC_MODEL_SUFFIXES)


def _describe_atomic(path: Path, atomic: AtomicRows | None) -> Description:
    """What simulate and train read from a PDB/mmCIF file, by their reader (``atomic``)."""
    if atomic is None:
        raise InputError(path, "an atomic model (PDB/mmCIF): `cryoshift info` describes it")
    d = Description("model", str(path))
    for key, value in atomic(path):
        d.add(key, value)
    return d


def _describe_dataset(path: Path) -> Description:
    from cryoshift.runtime.dataset import read_dataset

    d = Description("dataset", str(path))
    with read_dataset(path, with_labels=False) as ds:
        labelled = ds.labelled
        d.add("type", "labelled dataset" if labelled else "unlabelled dataset")
        d.add("volumes", len(ds))
        d.add("box size", ds.box_size)
        d.add("voxel size (A)", f"{ds.voxel_size:.4g}")
        d.add("contrast", ds.contrast)
        d.add("dtype", str(ds.volumes.dtype))
        d.add("classes", ", ".join(ds.class_names) if ds.class_names else "(none)")
        for key in ("generator", "seed", "cryoshift_version"):
            if key in ds.meta:
                d.add(key, ds.meta[key])
    if labelled:
        with read_dataset(path, with_labels=True) as ds:
            names = ds.class_names
            counts = [int((ds.labels == i).sum()) for i in range(len(names))]
        for name, count in zip(names, counts, strict=True):
            d.add(f"  {name}", count)
    return d


def _describe_onnx(path: Path) -> Description:
    meta = read_onnx_metadata(path)
    d = Description("onnx", str(path))
    d.add("type", "ONNX model")
    _add_model_rows(d, meta)
    d.add("file size", format_bytes(path.stat().st_size))
    return d


def _add_model_rows(d: Description, meta: ModelMetadata) -> None:
    """The cryoshift metadata of a model, as an ONNX model and an engine's sidecar both carry it."""
    d.add("classes", f"{meta.num_classes}: {', '.join(meta.class_names)}")
    d.add("box size", meta.box_size)
    d.add("voxel size (A)", f"{meta.voxel_size:.4g}")
    d.add("contrast", meta.contrast)
    d.add("normalisation", meta.normalisation)
    d.add("temperature", meta.temperature)
    d.add("unknown threshold", meta.unknown_threshold)
    d.add("shift reference", f"{meta.shift_reference:.4g} ({len(meta.feature_mean)} features)")
    for key in ("method", "backbone", "precision", "cryoshift_version", "created"):
        value = getattr(meta, key)
        if value:
            d.add(key, value)
    if "test_views" in meta.extra:  # poses averaged per prediction: inference costs that many forwards
        d.add("test views", meta.extra["test_views"])
    fitted = meta.extra.get(CALIBRATION_VIEWS)
    if fitted is not None and fitted != meta.extra.get("test_views"):  # export warned; whoever got the model
        d.add(
            "calibration",
            f"fitted for {fitted} test views, not the {meta.extra.get('test_views', '?')} this model "
            "averages: its confidences, unknown calls and shift scores are off",
        )
    options = meta.extra.get("backbone_options")
    if isinstance(options, dict) and options:  # e.g. canonical=true changes what the graph computes
        d.add("backbone options", ", ".join(f"{k}={json.dumps(v)}" for k, v in options.items()))
    elif options not in (None, {}):  # another tool's form: shown as written, not left out unseen
        d.add("backbone options", f"{json.dumps(options)} (not name=value pairs; as written in the model)")
    recipe = meta.extra.get("recipe")  # what the method trained with besides its losses (template labels ...)
    if isinstance(recipe, dict) and recipe:
        d.add("trained with", ", ".join(f"{k}={json.dumps(v)}" for k, v in recipe.items()))
    if meta.data_fingerprints:
        d.add("data", ", ".join(f"{k}={v}" for k, v in meta.data_fingerprints.items()))


NEEDS_TENSORRT = "needs TensorRT to check"


def _describe_engine(path: Path) -> Description:
    """A TensorRT engine (``model.engine``) or its sidecar (``model.engine.json``), from the sidecar
    (runtime/engine_sidecar.py): the model, the GPU, TensorRT version, precision and batch profile it
    was built for, whether the engine file is the one described, and whether this machine could run
    it. Why: info refused both as an unknown file type, so a facility had to open the JSON by hand
    to see what an engine it was given was built for. An engine without its sidecar is one line
    (read_engine_sidecar's refusal), as classify says it."""
    from cryoshift.runtime.engine_sidecar import read_engine_sidecar, sidecar_path

    side = read_engine_sidecar(path)
    d = Description("engine", str(path))
    d.add("type", f"TensorRT engine (described by its sidecar {sidecar_path(side.path).name})")
    _add_model_rows(d, side.metadata)
    gpu = side.gpu_name + (
        f" (compute capability {side.compute_capability})" if side.compute_capability else ""
    )
    d.add("built for GPU", gpu)
    d.add("TensorRT", side.tensorrt_version)
    d.add("engine precision", side.precision)
    d.add("batch profile", f"min {side.batch_min}, opt {side.batch_opt}, max {side.batch_max}")
    if side.onnx_file:
        d.add("built from", f"{side.onnx_file} (sha256 {side.onnx_sha256[:12]}...)")
    d.add("engine file", _engine_file_state(side))
    d.add("this machine", _engine_fits_here(side))
    return d


def _engine_file_state(side: EngineSidecar) -> str:
    """Size of the engine file and whether it is the one the sidecar describes (classify's check)."""
    from cryoshift.runtime.engine_sidecar import verify_engine_file

    try:
        verify_engine_file(side)
    except InputError as exc:
        return exc.reason
    size = format_bytes(side.path.stat().st_size)
    return (
        f"{size}, sha256 matches the sidecar"
        if side.engine_sha256
        else f"{size} (the sidecar gives no sha256)"
    )


def _engine_fits_here(side: EngineSidecar) -> str:
    """Whether classify would accept the engine here, told without importing TensorRT: the GPU name
    by nvidia-smi (classify's lookup) and TensorRT's version from its installed package metadata,
    compared by classify's rule (check_engine_compatible)."""
    from importlib.metadata import PackageNotFoundError, version

    from cryoshift.runtime.engine_sidecar import check_engine_compatible, query_gpu_name

    gpu = query_gpu_name(0)
    if gpu is None:
        return "no: no GPU visible (nvidia-smi)"
    if gpu.strip().lower() != side.gpu_name.strip().lower():
        return f"no: this machine's GPU is {gpu!r}"
    trt = None
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-libs"):
        try:
            trt = version(dist)
            break
        except PackageNotFoundError:
            continue
    if trt is None:
        return f"GPU matches ({gpu}); TensorRT is not installed here ({NEEDS_TENSORRT})"
    try:
        check_engine_compatible(side, gpu, trt)
    except InputError:
        return f"no: this machine has TensorRT {trt}"
    return f"yes (GPU {gpu}, TensorRT {trt})"


def describe(path: str | Path, full: bool = False, atomic: AtomicRows | None = None) -> Description:
    """Describe ``path``; unknown kinds and unreadable files raise :class:`InputError`.

    A file-system refusal (no permission for the file or a folder on the way) is an InputError
    too, so that among several paths the others are still described or validated. ``atomic``
    describes PDB/mmCIF files (see :data:`AtomicRows`)."""
    from cryoshift.runtime.copick_io import is_copick

    if is_copick(path) and not Path(path).exists():  # "no such file or directory" misled
        raise InputError(
            path,
            "info does not read copick projects: classify one with --copick-voxel-spacing, "
            "--copick-tomo-type and --copick-picks (the errors name what it lacks)",
        )
    try:
        return _describe(Path(path), full, atomic)
    except OSError as exc:
        from cryoshift.runtime.sources.planner import os_error

        raise os_error(path, exc) from exc


def _describe(path: Path, full: bool, atomic: AtomicRows | None = None) -> Description:
    from cryoshift.runtime.backends import ENGINE_SUFFIXES
    from cryoshift.runtime.contract import MRC_BASE_SUFFIXES, MRC_HEADER_BYTES
    from cryoshift.runtime.dataset import META, is_dataset
    from cryoshift.runtime.mrc import is_mrc_path, refuse_foreign, refuse_special
    from cryoshift.runtime.picks import STAR_SUFFIXES, TABLE_SUFFIXES

    path = Path(path)
    if not path.exists():
        raise InputError(path, missing_reason(path, "no such file or directory"))
    if path.is_dir():
        if is_dataset(path):
            return _describe_dataset(path)
        entries = list(path.iterdir())
        if not entries:
            raise InputError(path, "empty directory")
        raise InputError(
            path,
            _folder_hint(path)
            or f"directory is not a cryoshift dataset (no {META}); {len(entries)} entries; "
            "give a file instead",
        )
    refuse_special(path)  # a named pipe would block every reader below
    suffix = path.suffix.lower()
    if is_mrc_path(path) or _mrc_by_content(path):
        return _describe_mrc(path, full)
    if suffix in STAR_SUFFIXES or suffix in TABLE_SUFFIXES:
        return _describe_table(path)
    if is_onnx(path):  # by suffix or content
        return _describe_onnx(path)
    if _is_atomic_model(path):
        return _describe_atomic(path, atomic)
    if suffix in ENGINE_SUFFIXES or is_sidecar_name(path):
        return _describe_engine(path)
    if suffix in CHECKPOINT_SUFFIXES:
        raise InputError(
            path,
            "is a PyTorch checkpoint; info describes exported models: run "
            f"`cryoshift export {path} -o DIR`, then `cryoshift info DIR/model.onnx`",
        )
    try:  # say what a file users mistake for volumes (.npz, .npy ...) is, not just "unknown"
        with open(path, "rb") as fh:
            refuse_foreign(path, fh.read(MRC_HEADER_BYTES))
    except OSError:
        pass  # unreadable: the unknown-type refusal below still names it
    if not suffix and path.is_file() and path.stat().st_size == 0:  # read by content, as .txt is
        raise InputError(path, "file is empty")
    raise InputError(
        path,
        f"unknown file type {suffix or '(no suffix)'!r}; info reads MRC ({' '.join(MRC_BASE_SUFFIXES)}, "
        "gzip/bzip2 ok), .star, .csv/.tsv, .onnx, .engine/.engine.json, PDB/mmCIF (gzip ok) or a "
        "dataset directory",
    )


def _folder_hint(path: Path) -> str | None:
    """What a folder that cryoshift wrote (other than a dataset) is, and which of its files info
    describes: "not a cryoshift dataset" would suggest that the folder is broken."""
    if (path / "model.onnx").is_file():
        return f"is an export folder; give its model: {path / 'model.onnx'}"
    if (path / "model.pt").is_file() or (path / "checkpoints").is_dir():
        return (
            "is a training run directory; info describes exported models: run "
            f"`cryoshift export {path} -o DIR`, then `cryoshift info DIR/model.onnx`"
        )
    from cryoshift.runtime.summary import PREDICTIONS

    for name in (f"{PREDICTIONS}.star", f"{PREDICTIONS}.csv"):
        if (path / name).is_file():
            return (
                f"is a classify results folder; give its table ({path / name}) "
                f"or run `cryoshift report {path}`"
            )
    return None


def validate(path: str | Path, atomic: AtomicRows | None = None) -> list[str]:
    """Problems that make ``path`` unusable for cryoshift, one reason each; [] = usable.

    ``cryoshift info --validate`` prints them and exits 1 when there is any (mrcfile.validate
    style), so scripts can trust the exit code: an MRC must be a 3-D volume or volume stack (no 2-D
    image, no stack of 2-D images) with finite voxels (every voxel is read), cubic voxels and a
    voxel size; tables, datasets and models must be readable.
    """
    path = Path(path)
    try:
        desc = describe(path, atomic=atomic) if not _looks_mrc(path) else None
    except OSError as exc:  # _looks_mrc: no permission for a folder on the way
        from cryoshift.runtime.sources.planner import os_error

        return [os_error(path, exc).reason]
    except InputError as exc:
        return [exc.reason if exc.path in (None, str(path)) else str(exc)]
    if desc is not None:
        if desc.kind == "tomograms":
            return _tomogram_table_problems(path)
        if desc.kind == "engine":  # a sidecar without its engine, or another engine under its name
            return _engine_problems(path)
        return _dataset_problems(path) if desc.kind == "dataset" else []
    from cryoshift.runtime.mrc import open_volume, volume_stats

    problems: list[str] = []
    try:
        with open_volume(path, allow_2d=True) as vol:
            h = vol.header
            if len(h["shape"]) == 2:
                ny, nx = h["shape"]
                problems.append(f"is a 2-D image ({nx}x{ny}), not a volume")
            elif h.get("images"):  # it validated as "ok", and simulate read it as a 3-D map
                problems.append(
                    f"is a stack of {h['images']} 2-D images (MRC space group 0, mz = 1), not a volume"
                )
            if not vol.voxel_size_known:
                problems.append("voxel size is not set in the header (cella/mx)")
            if vol.anisotropic:
                sx, sy, sz = vol.voxel_sizes
                problems.append(f"anisotropic voxels: {sx:.4g} x {sy:.4g} x {sz:.4g} A (X, Y, Z)")
            stats = volume_stats(vol.data)
            if stats.nonfinite:
                problems.append(f"{stats.nonfinite} NaN/Inf voxels")
            elif stats.max == stats.min:
                problems.append(f"every voxel is {stats.min:g} (no contrast)")
    except InputError as exc:
        problems.append(exc.reason if exc.path in (None, str(path)) else str(exc))
    except OSError as exc:
        from cryoshift.runtime.sources.planner import os_error

        problems.append(os_error(path, exc).reason)
    return problems


def _engine_problems(path: Path) -> list[str]:
    """What classify would refuse of an engine before loading it, wherever it runs: the engine
    file missing next to its sidecar, or not the file the sidecar describes (sha256)."""
    from cryoshift.runtime.engine_sidecar import read_engine_sidecar, verify_engine_file

    try:
        verify_engine_file(read_engine_sidecar(path))
    except InputError as exc:
        return [str(exc)]
    return []


def _dataset_problems(path: Path) -> list[str]:
    """A dataset's volumes as train and evaluate check them (every volume is read), so a dataset
    that validates is one they accept."""
    from cryoshift.runtime.dataset import UNUSABLE, read_dataset, unusable_volumes

    with read_dataset(path, with_labels=False) as ds:
        bad = unusable_volumes(ds.volumes)
    return [f"{len(bad)} volumes hold {UNUSABLE} (first: index {bad[0]})"] if len(bad) else []


def _mrc_by_content(path: Path) -> bool:
    """An MRC under a name that does not say what it is (``.txt``, no suffix): classify reads such
    files by content, so info must too."""
    from cryoshift.runtime.mrc import content_kind, is_mrc_path
    from cryoshift.runtime.picks import NAMED_TABLE_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in NAMED_TABLE_SUFFIXES or is_mrc_path(path) or not path.is_file():
        return False
    try:
        return content_kind(path) == "mrc"
    except OSError:
        return False  # unreadable: the caller's reader names the problem


def _looks_mrc(path: Path) -> bool:
    from cryoshift.runtime.mrc import is_mrc_path

    return (is_mrc_path(path) and not path.is_dir()) or _mrc_by_content(path)

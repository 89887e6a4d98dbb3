"""Subtomograms for parity checks and int8 calibration.

Parity proven on random noise says little about real data, so the exporter looks for real
subtomograms first: a ``--parity-data`` / ``--calibration`` dataset directory or MRC stack, else
the datasets the training run's config names (target first: that is where the model will be
used), and only then random volumes, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from cryoshift.export.result import ExportWarning
from cryoshift.runtime.errors import InputError

DATASET_VOLUMES = "volumes.mrc"
# Config keys that may hold dataset paths, most wanted first (target data is what gets classified).
CONFIG_KEYS = (
    "target",
    "target_data",
    "target_dataset",
    "calibration",
    "val",
    "source",
    "source_data",
    "source_dataset",
    "data",
    "dataset",
)


def read_volumes(
    path: str | Path,
    box_size: int | None = None,
    limit: int = 64,
    seed: int = 0,
    tomograms: list[str] | None = None,
) -> np.ndarray:
    """Up to ``limit`` volumes (N, D, D, D) float32 from a dataset directory, an MRC stack, a single
    MRC volume or a directory of single-volume MRC files; a random subset when there are more.
    A pick table (STAR/CSV) is cropped from ``tomograms`` at ``box_size``."""
    from cryoshift.runtime.labelled_picks import crop_picks, is_pick_table
    from cryoshift.runtime.mrc import check_finite, open_volume

    path = Path(path)
    if is_pick_table(path):
        if box_size is None:
            raise InputError(path, "picks are cropped at the model's box size, which is not known here")
        return crop_picks(path, list(tomograms or []), box_size, limit, seed)
    if path.is_dir():
        if (path / DATASET_VOLUMES).is_file():
            return read_volumes(path / DATASET_VOLUMES, box_size, limit, seed)
        return _read_folder(path, box_size, limit, seed)
    if not path.is_file():
        raise InputError(path, "no such file or directory")
    # The runtime's reader: gzip/bzip2, axis order, truncated or foreign files named in one line.
    with open_volume(path) as vol:
        data = vol.data
        if data.ndim == 3:
            data = data[None]
        # Shape first: a whole tomogram given by mistake is refused before it is read.
        if data.shape[1] != data.shape[2] or data.shape[2] != data.shape[3]:
            raise InputError(path, f"volumes are not cubic: {data.shape[1:]}")
        if box_size is not None and data.shape[1] != box_size:
            raise InputError(path, f"box size {data.shape[1]} does not match the model's {box_size}")
        n = data.shape[0]
        idx = np.arange(n)
        if n > limit:
            idx = np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
        try:
            volumes = np.asarray(data[idx], dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read MRC data: {exc}") from exc
    # NaN/Inf would show up later as a failed parity check or a broken int8 range: a data problem.
    check_finite(volumes, path)
    return volumes


def volume_digests(volumes: np.ndarray) -> list[bytes]:
    """One digest per volume of its float32 voxels: the same volume read twice (by two draws from
    one data set, or from a dataset folder and its volumes.mrc) has the same digest, whatever
    path, reader or draw brought it. Used to hold int8 parity volumes out of calibration."""
    import hashlib

    data = np.ascontiguousarray(volumes, dtype=np.float32)
    return [hashlib.blake2b(v.tobytes(), digest_size=16).digest() for v in data]


def _read_folder(path: Path, box_size: int | None, limit: int, seed: int) -> np.ndarray:
    """Up to ``limit`` volumes from the MRC files of a folder (a random subset of the files when
    there are more): each volume of a single-volume file, and of a stack as many as are still
    wanted (one volume of a 12-volume stack was read, and its folder called "1 subtomograms").
    Batch rule, as for training targets: a file that cannot be used (corrupt, another box, NaN) is
    skipped with a warning naming it and the reason, and the next file takes its place; only a
    folder with no usable file is refused."""
    from cryoshift.runtime.mrc import is_mrc_path

    files = sorted(p for p in path.iterdir() if is_mrc_path(p) and p.is_file())  # as classify lists it
    if not files:
        raise InputError(path, f"no {DATASET_VOLUMES} and no MRC files in this directory")
    order = np.random.default_rng(seed).permutation(len(files)) if len(files) > limit else range(len(files))
    chosen: dict[int, np.ndarray] = {}
    skipped: list[InputError] = []
    count = 0
    for i in order:
        if count >= limit:
            break
        try:
            chosen[int(i)] = read_volumes(files[i], box_size, limit - count, seed)
            count += len(chosen[int(i)])
        except InputError as exc:
            skipped.append(exc)
            warnings.warn(f"skipped {exc}", ExportWarning, stacklevel=3)
    if not chosen:
        raise InputError(
            path, f"no usable MRC file in this directory ({len(skipped)} skipped; first: {skipped[0]})"
        )
    return np.concatenate([chosen[i] for i in sorted(chosen)])


def voxel_and_contrast(path: str | Path) -> tuple[float | None, str | None, Path]:
    """The voxel size and contrast subtomograms at ``path`` say they have (None: not stated), and
    the file that says so: a dataset's dataset.json, an MRC's header, or the first MRC of a folder
    that states a voxel size. Headers only; pick tables say neither (their tomograms do).

    A folder whose MRC files state voxel sizes more than VOXEL_TOLERANCE apart is refused: the
    first file's size was checked against the model while the others were read too, so files of
    another voxel size calibrated the int8 model unchecked."""
    from cryoshift.runtime.dataset import META, is_dataset, read_dataset
    from cryoshift.runtime.labelled_picks import is_pick_table
    from cryoshift.runtime.mrc import is_mrc_path, open_volume

    path = Path(path)
    if is_dataset(path):
        with read_dataset(path, with_labels=False) as ds:
            return ds.voxel_size, ds.contrast, path / META
    if is_pick_table(path):
        return None, None, path
    files = [path] if path.is_file() else []
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if is_mrc_path(p) and p.is_file())
    for i, file in enumerate(files):
        try:
            with open_volume(file) as vol:
                voxel = float(vol.voxel_size) if vol.voxel_size_known else None
        except InputError:
            continue  # read_volumes names (or skips) a file it cannot read
        if voxel is not None:
            _refuse_mixed_voxel_sizes(path, voxel, file, files[i + 1 :])
            return voxel, None, file
    return None, None, path


def _refuse_mixed_voxel_sizes(folder: Path, first: float, first_file: Path, others: list[Path]) -> None:
    """Refuse a folder whose files state voxel sizes more than VOXEL_TOLERANCE from the first's,
    naming both files (a 1 KiB header read each, as classify plans a folder)."""
    from cryoshift.runtime.contract import VOXEL_TOLERANCE, voxel_mismatch
    from cryoshift.runtime.sources.planner import peek_voxel

    for file in others:
        header = peek_voxel(file)
        if header is None or not header.voxel_size_known:
            continue  # unreadable or unstated: read_volumes skips or reads it as before
        voxel = float(header.voxel_size)
        if (voxel_mismatch(voxel, first) or 0.0) > VOXEL_TOLERANCE:
            raise InputError(
                folder,
                f"its MRC files state different voxel sizes ({first_file.name}: {first:.4g} A, "
                f"{file.name}: {voxel:.4g} A); which one the data has is a guess: give a folder "
                "of one voxel size",
            )


def config_data_paths(config: dict[str, Any]) -> list[Path]:
    """Existing dataset paths named in a training config (nested dicts searched), target first."""
    found: dict[str, list[Path]] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in CONFIG_KEYS:
                    for item in value if isinstance(value, list) else [value]:
                        if isinstance(item, str) and item and Path(item).exists():
                            found.setdefault(key, []).append(Path(item))
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(config)
    return [p for key in CONFIG_KEYS for p in found.get(key, [])]


def random_volumes(n: int, box_size: int, seed: int = 0) -> np.ndarray:
    """Gaussian blobs in noise: a last resort so the graph is at least exercised."""
    rng = np.random.default_rng(seed)
    grid = np.indices((box_size,) * 3).astype(np.float32) - (box_size - 1) / 2
    r2 = (grid**2).sum(axis=0)
    vols = rng.normal(size=(n, box_size, box_size, box_size)).astype(np.float32)
    widths = rng.uniform(0.1, 0.3, size=n) * box_size
    vols -= 3.0 * np.exp(-r2[None] / (2 * widths[:, None, None, None] ** 2))
    return vols


def find_volumes(
    box_size: int,
    given: str | Path | None = None,
    config: dict[str, Any] | None = None,
    limit: int = 64,
    seed: int = 0,
    purpose: str = "parity",
) -> tuple[np.ndarray, str]:
    """Volumes for ``purpose`` and a description of where they came from."""
    tomograms = list((config or {}).get("tomograms") or [])
    if given is not None:
        return read_volumes(given, box_size, limit, seed, tomograms), str(given)
    candidates: Iterable[Path] = config_data_paths(config or {})
    for path in candidates:
        try:
            return read_volumes(path, box_size, limit, seed, tomograms), str(path)
        except InputError as exc:
            warnings.warn(
                f"{purpose} data from the training config unusable: {exc}", ExportWarning, stacklevel=2
            )
    warnings.warn(
        f"no real subtomograms for the {purpose} check (give --parity-data); "
        f"using {min(limit, 32)} random volumes",
        ExportWarning,
        stacklevel=2,
    )
    return random_volumes(min(limit, 32), box_size, seed), "random volumes"

"""The labelled dataset directory that ``simulate`` writes and train/evaluate/classify read.

::

    DIR/volumes.mrc      (N, D, D, D) MRC volume stack, float32 or float16, voxel size in header
    DIR/particles.csv    one row per volume: index, [label, class_name,] then any parameters
    DIR/dataset.json     {"format": "cryoshift.dataset/1", "n", "box_size", "voxel_size",
                          "contrast", "class_names", "labelled", ...extra metadata}

Why this shape: a stack maps into memory in one piece (fast random access for training,
no thousands of small files), CSV stays readable in a spreadsheet, and JSON holds the
facts a model must agree with. ``dataset.json`` is written last, so a directory without
it is an unfinished write and is never mistaken for a dataset. Labels are read only when
asked for (``with_labels=True``) so target labels cannot leak into training by accident.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd

from cryoshift.runtime.contract import CONTRASTS, VOXEL_SIZE_RANGE, class_names_problem
from cryoshift.runtime.errors import InputError, missing_reason
from cryoshift.runtime.ledger import frame_csv_text
from cryoshift.runtime.literal_paths import for_pandas
from cryoshift.runtime.mrc import MrcVolume, open_volume
from cryoshift.runtime.outfiles import write_text

FORMAT = "cryoshift.dataset/1"
VOLUMES = "volumes.mrc"
TABLE = "particles.csv"
META = "dataset.json"
LABEL_COLUMNS = ("label", "class_name")


def _version() -> str:
    """This cryoshift's version, for dataset.json (an uninstalled source tree's: UNKNOWN_VERSION)."""
    try:
        from cryoshift.runtime import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "0.0.0"  # cryoshift.runtime.UNKNOWN_VERSION, which did not import


def is_dataset(path: str | Path) -> bool:
    """True if ``path`` is a finished dataset directory (it has ``dataset.json``)."""
    path = Path(path)
    return path.is_dir() and (path / META).is_file()


@dataclass
class Dataset:
    """A dataset opened for reading; ``volumes`` is a read-only memory map (N, D, D, D)."""

    path: Path
    volumes: np.ndarray
    labels: np.ndarray | None
    class_names: list[str]
    voxel_size: float
    contrast: str
    table: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    # What the reader settled that dataset.json does not say (the header's voxel size standing in
    # for a missing one), for the command to print as a note: ``voxel_size`` is the fact to use,
    # never ``meta["voxel_size"]``, which a dataset.json may lack.
    notes: list[str] = field(default_factory=list)
    _mrc: MrcVolume | None = field(default=None, repr=False)

    @property
    def box_size(self) -> int:
        return int(self.volumes.shape[-1])

    @property
    def labelled(self) -> bool:
        return bool(self.meta.get("labelled", False))

    def __len__(self) -> int:
        return int(self.volumes.shape[0])

    def close(self) -> None:
        """Close the MRC file (arrays already taken from ``volumes`` stay readable)."""
        if self._mrc is not None:
            self._mrc.close()
            self._mrc = None

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_class_names(where: Path, class_names: list[Any] | None, labelled: bool) -> None:
    """The one check of a dataset's class names, for the writer and for a read dataset.json.

    Unlabelled data may have none (the writer stores ``[]``); labelled data needs at least one.
    The names themselves follow the contract's class-name rule
    (:func:`~cryoshift.runtime.contract.class_names_problem`): a model trained on the data carries
    them, and the runtime refuses a model whose names break it, so the data is refused first, before
    a whole training run.
    """
    if not class_names:
        if labelled:
            state = "missing" if class_names is None else "empty"
            raise InputError(where, f"class_names is {state}; a labelled dataset needs one name per class")
        return
    problem = class_names_problem([str(c) for c in class_names])
    if problem:
        raise InputError(where, f"class_names has {problem}")


def _validate_names(directory: Path, class_names: list[str] | None, labels: np.ndarray | None) -> None:
    if labels is not None and class_names is None:
        raise InputError(directory, "labels need class_names")
    _check_class_names(directory, class_names, labelled=labels is not None)
    if labels is not None and labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise InputError(
            directory,
            f"labels must lie in 0..{len(class_names) - 1} "
            f"for {len(class_names)} classes, got {labels.min()}..{labels.max()}",
        )


def _stack_label(meta: dict[str, Any]) -> bytes:
    """The volume stack's MRC label: the cryoshift version, and the seed of a simulated dataset.

    Why: mrcfile's default label stamps the creation time, so two identical ``cryoshift simulate``
    runs wrote different bytes; the dataset's time of making is not part of what it is.
    """
    label = f"cryoshift {_version()} dataset"
    if isinstance(meta.get("seed"), int):
        label += f", seed {meta['seed']}"
    return label.encode("ascii", "replace")[:80]


class DatasetWriter:
    """Write a dataset chunk by chunk into a stack created up front (memory-mapped).

    Simulation produces volumes in batches; writing them straight into the final file keeps
    memory flat however large N is. ``particles.csv`` and ``dataset.json`` are written on a
    successful :meth:`close`; closing after fewer than ``n`` volumes is an error, and an
    exception inside ``with`` leaves the directory without ``dataset.json`` (unfinished).
    """

    def __init__(
        self,
        directory: str | Path,
        n: int,
        box_size: int,
        voxel_size: float = 1.0,
        class_names: list[str] | None = None,
        contrast: str = "dark",
        meta: dict[str, Any] | None = None,
        dtype: Any = np.float32,
    ):
        import mrcfile

        self.directory = Path(directory)
        self.n, self.box_size = int(n), int(box_size)
        if self.n <= 0 or self.box_size <= 0:
            raise InputError(self.directory, f"need n > 0 and box_size > 0, got n={n}, box_size={box_size}")
        if contrast not in CONTRASTS:
            raise InputError(self.directory, f"contrast must be one of {CONTRASTS}, not {contrast!r}")
        _check_voxel_size(self.directory, voxel_size, "voxel size")
        self.dtype = np.dtype(dtype)
        modes = {np.dtype(np.float32): 2, np.dtype(np.float16): 12}
        if self.dtype not in modes:
            raise InputError(self.directory, f"dataset volumes are float32 or float16, not {self.dtype}")
        self.voxel_size = float(voxel_size)
        self.class_names = list(class_names) if class_names is not None else None
        _validate_names(self.directory, self.class_names, None)
        self.contrast = contrast
        self.meta = dict(meta or {})
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / META).unlink(missing_ok=True)  # the directory is unfinished from now on
        stack = self.directory / VOLUMES
        if stack.is_symlink():  # a planted link is replaced, never written through (runtime/outfiles.py)
            stack.unlink()
        self._mrc = mrcfile.new_mmap(
            stack,
            shape=(self.n,) + (self.box_size,) * 3,
            mrc_mode=modes[self.dtype],
            overwrite=True,
        )
        self._mrc.voxel_size = self.voxel_size
        self._mrc.header.label[0] = _stack_label(self.meta)
        self._count = 0
        self._labels: list[np.ndarray] = []
        self._rows: list[dict[str, Any]] = []
        self._labelled: bool | None = None
        self._stats = [math.inf, -math.inf, 0.0, 0.0]  # min, max, sum, sum of squares

    def write(
        self,
        volumes: np.ndarray,
        labels: np.ndarray | list[int] | None = None,
        rows: list[dict[str, Any]] | None = None,
    ) -> None:
        """Append a chunk of (k, D, D, D) volumes with their labels and per-volume parameters."""
        if self._mrc is None:
            raise InputError(self.directory, "dataset writer is closed")
        volumes = np.asarray(volumes)
        if volumes.ndim == 3:
            volumes = volumes[None]
        k = volumes.shape[0]
        if volumes.shape[1:] != (self.box_size,) * 3:
            raise InputError(
                self.directory,
                f"volumes must be (k, {self.box_size}, {self.box_size}, "
                f"{self.box_size}), got {volumes.shape}",
            )
        if self._count + k > self.n:
            raise InputError(
                self.directory, f"too many volumes: {self._count + k} written, dataset holds {self.n}"
            )
        if not np.isfinite(volumes).all():
            raise InputError(self.directory, f"volumes {self._count}..{self._count + k - 1} contain NaN/Inf")
        labelled = labels is not None
        if self._labelled is None:
            self._labelled = labelled
        elif self._labelled != labelled:
            raise InputError(self.directory, "either every chunk has labels or none does")
        if labelled:
            lab = np.asarray(labels, dtype=np.int64).reshape(-1)
            if lab.size != k:
                raise InputError(self.directory, f"{lab.size} labels for {k} volumes")
            _validate_names(self.directory, self.class_names, lab)
            self._labels.append(lab)
        if rows is not None and len(rows) != k:
            raise InputError(self.directory, f"{len(rows)} parameter rows for {k} volumes")
        if rows is not None:
            self._rows.extend(dict(r) for r in rows)
        else:
            self._rows.extend({} for _ in range(k))
        self._mrc.data[self._count : self._count + k] = volumes.astype(self.dtype, copy=False)
        v = volumes.astype(np.float64)
        s = self._stats
        s[0], s[1] = min(s[0], float(v.min())), max(s[1], float(v.max()))
        s[2] += float(v.sum())
        s[3] += float(np.square(v).sum())
        self._count += k

    def close(self) -> Path:
        """Finish the stack header, then write ``particles.csv`` and ``dataset.json``."""
        if self._mrc is None:
            return self.directory
        if self._count != self.n:
            self.abort()
            raise InputError(self.directory, f"only {self._count} of {self.n} volumes were written")
        total = self.n * self.box_size**3
        mean = self._stats[2] / total
        header = self._mrc.header
        header.dmin, header.dmax, header.dmean = self._stats[0], self._stats[1], mean
        header.rms = math.sqrt(max(self._stats[3] / total - mean * mean, 0.0))
        self._mrc.flush()
        self._mrc.close()
        self._mrc = None
        table = pd.DataFrame(self._rows)
        for col in ("index", *LABEL_COLUMNS):
            if col in table.columns:
                table = table.drop(columns=col)
        front = {"index": np.arange(self.n)}
        if self._labelled:
            labels = np.concatenate(self._labels)
            front["label"] = labels
            front["class_name"] = np.asarray(self.class_names, dtype=object)[labels]
        table = pd.concat([pd.DataFrame(front), table.reset_index(drop=True)], axis=1)
        write_text(self.directory / TABLE, frame_csv_text(table, index=False))
        info = {
            "format": FORMAT,
            "n": self.n,
            "box_size": self.box_size,
            "voxel_size": self.voxel_size,
            "contrast": self.contrast,
            "class_names": self.class_names or [],
            "labelled": bool(self._labelled),
            "dtype": self.dtype.name,
            "cryoshift_version": _version(),
        }
        for key, value in self.meta.items():
            info.setdefault(key, value)
        write_text(self.directory / META, json.dumps(info, indent=2, default=_json_default) + "\n")
        return self.directory

    def abort(self) -> None:
        """Close the stack without marking the directory finished."""
        if self._mrc is not None:
            self._mrc.close()
            self._mrc = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_dataset(
    directory: str | Path,
    volumes: np.ndarray,
    labels: np.ndarray | list[int] | None = None,
    class_names: list[str] | None = None,
    voxel_size: float = 1.0,
    contrast: str = "dark",
    table: pd.DataFrame | list[dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a whole in-memory (N, D, D, D) dataset at once; returns the directory."""
    volumes = np.asarray(volumes)
    if volumes.ndim != 4 or len(set(volumes.shape[1:])) != 1:
        raise InputError(directory, f"volumes must be an (N, D, D, D) array of cubes, got {volumes.shape}")
    dtype = np.float16 if volumes.dtype == np.float16 else np.float32
    rows = table.to_dict("records") if isinstance(table, pd.DataFrame) else table
    if labels is not None and class_names is None:
        raise InputError(directory, "labels need class_names")
    with DatasetWriter(
        directory, len(volumes), volumes.shape[1], voxel_size, class_names, contrast, meta, dtype
    ) as writer:
        writer.write(volumes, labels, rows)
    return Path(directory)


def _count(info: dict[str, Any], key: str, directory: Path) -> int:
    """A positive integer field of dataset.json (a hand-edited file may hold anything)."""
    value = info.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(directory / META, f"{key!r} must be a positive integer, got {value!r}")
    return value


def _check_meta(info: dict[str, Any], directory: Path) -> None:
    """Class names, contrast and voxel size of dataset.json have the types readers rely on."""
    names = info.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(c, str) for c in names)):
        raise InputError(directory / META, f"'class_names' must be a list of names, got {names!r}")
    labelled = info.get("labelled", False)
    if not isinstance(labelled, bool):  # bool("no") is True: a string read as labelled
        raise InputError(directory / META, f"'labelled' must be true or false, got {labelled!r}")
    _check_class_names(directory / META, names, labelled=labelled)
    _check_contrast(info, directory / META)
    if "voxel_size" in info:
        _check_voxel_size(directory / META, info["voxel_size"], "'voxel_size'")


def _check_contrast(info: dict[str, Any], where: Path) -> None:
    """dataset.json must say its contrast, as every writer of datasets records it.

    Why no default: a missing key was read as "dark", so light data with the key removed (or
    written by another tool) was trained as dark and evaluated by dark models, with a wrong
    accuracy and no word; the contrast cannot be told from the volumes with certainty."""
    if "contrast" not in info:
        raise InputError(
            where,
            "has no 'contrast'; add "
            '"contrast": "dark" (protein darker than solvent, as in tomograms) or "light" (as in maps)',
        )
    if info["contrast"] not in CONTRASTS:
        raise InputError(where, f"'contrast' must be one of {CONTRASTS}, got {info['contrast']!r}")


def _check_voxel_size(where: Path, value: Any, name: str) -> None:
    """The one check of a dataset's voxel size, for the writer, dataset.json and a stack header:
    a positive number within :data:`~cryoshift.runtime.contract.VOXEL_SIZE_RANGE` (Angstrom).

    Why the range: 1e-9 (metres) or 1e9 was accepted and became the voxel size of every model
    trained on the data, compared with every tomogram later (never matching, or matching nonsense).
    """
    from numbers import Real

    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise InputError(where, f"{name} must be a positive number, got {value!r}")
    low, high = VOXEL_SIZE_RANGE
    if not low <= float(value) <= high:
        raise InputError(
            where,
            f"{name} {value:g} A is outside the plausible {low:g}..{high:g} A per voxel (another unit?); "
            "give the voxel size in Angstrom",
        )


def _labels(column: pd.Series, class_names: list[str], path: Path, vol: MrcVolume) -> np.ndarray:
    """Integer labels indexing ``class_names``; anything else would crash scoring far from here."""
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= len(class_names))
    if bad.any():
        vol.close()
        row = int(np.flatnonzero(bad)[0])
        value = column.iloc[row]
        value = value.item() if isinstance(value, np.generic) else value  # 42, not np.int64(42)
        raise InputError(
            path,
            f"{int(bad.sum())} labels are not class indices 0..{len(class_names) - 1} "
            f"(first: row {row}, label {value!r})",
        )
    return values.astype(np.int64)


def _check_class_column(
    column: pd.Series, labels: np.ndarray, class_names: list[str], path: Path, vol: MrcVolume
) -> None:
    """The table's class_name must be the name of the row's label. Labels are what training and
    scoring read; a row relabelled by editing its class_name (the readable column) was silently
    trained and scored under its old label."""
    given = column.astype(str).to_numpy()
    expected = np.asarray(class_names, dtype=object)[labels].astype(str)
    wrong = np.flatnonzero(column.notna().to_numpy() & (given != expected))
    _refuse_rows(
        wrong,
        path,
        vol,
        "' class_name is not the name of their label",
        lambda row: f", label {int(labels[row])} is {str(expected[row])!r}, class_name {str(given[row])!r}",
        "correct the one that is wrong",
    )


def _refuse_rows(
    bad: np.ndarray, path: Path, vol: MrcVolume, what: str, first: Callable[[int], str], advice: str
) -> None:
    """Refuse a table with ``bad`` rows (indices), naming how many and the first (``first`` says
    what is wrong with it), and close the stack the caller opened."""
    if len(bad):
        vol.close()
        row = int(bad[0])
        raise InputError(path, f"{len(bad)} rows{what} (first: row {row}{first(row)}); {advice}")


# What ``unusable_volumes`` finds, for the messages that name it.
UNUSABLE = "NaN/Inf, values beyond +-1e15 or one value throughout (a blank box)"


def unusable_volumes(volumes: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Indices of volumes holding NaN/Inf, magnitudes that overflow float32 normalisation, or
    a single value (a blank or zero-filled box, as classify refuses it).

    One non-finite volume turns every loss into NaN; a blank one gets a confident class that
    means nothing. Read in chunks (the stack may be a memory map); NaN fails both comparisons,
    so per-volume min/max cover NaN, Inf and absurd values alike.
    """
    from cryoshift.runtime.sources import VALUE_LIMIT

    bad: list[np.ndarray] = []
    for start in range(0, len(volumes), chunk):
        part = np.asarray(volumes[start : start + chunk])
        flat = part.reshape(len(part), -1)
        # float64: against a float16 stack (a dataset may be one) the limit became inf in a
        # RuntimeWarning ("overflow encountered in cast") printed on every training run
        lo, hi = flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64)
        ok = (lo > -VALUE_LIMIT) & (hi < VALUE_LIMIT) & (lo < hi)
        bad.append(np.flatnonzero(~ok) + start)
    return np.concatenate(bad).astype(np.int64) if bad else np.zeros(0, np.int64)


def _voxel_size(info: dict[str, Any], vol: MrcVolume, directory: Path) -> tuple[float, str | None]:
    """The dataset's voxel size: dataset.json's, which the stack's header must not contradict, or
    the header's where dataset.json has none (with a note saying so, the second value).

    Without either, the reader's stand-in of 1.0 A became the voxel size of every model trained
    on the data; with both, a contradiction (one of them edited) was settled for dataset.json
    without a word, though either may be the wrong one."""
    from cryoshift.runtime.contract import VOXEL_TOLERANCE, voxel_mismatch

    header = float(vol.voxel_size) if vol.voxel_size_known else 0.0
    if "voxel_size" not in info:
        if header <= 0:
            vol.close()
            raise InputError(
                directory / META,
                f"has no 'voxel_size' and the header of {VOLUMES} none either; add the voxel size "
                '(Angstrom) to dataset.json, e.g. "voxel_size": 10.0',
            )
        try:
            _check_voxel_size(directory / VOLUMES, header, "header voxel size")
        except InputError:
            vol.close()
            raise
        note = f"{directory / META}: no 'voxel_size'; the header of {VOLUMES} says {header:.4g} A, used"
        return header, note
    stated = float(info["voxel_size"])
    off = voxel_mismatch(header, stated)
    if off is not None and off > VOXEL_TOLERANCE:
        vol.close()
        raise InputError(
            directory / VOLUMES,
            f"header voxel size {header:.4g} A differs from dataset.json's {stated:.4g} A; correct "
            "whichever is wrong",
        )
    return stated, None


def _check_order(table: pd.DataFrame, path: Path, vol: MrcVolume) -> None:
    """Refuse a table whose ``index`` column (the writer's 0..n-1) does not read 0..n-1 down the
    rows: row i describes volume i, so a table sorted by class or with a repeated row paired labels
    and picks with the wrong volumes without a word (evaluate scored a wrong accuracy)."""
    if "index" not in table.columns:
        return
    values = pd.to_numeric(table["index"], errors="coerce").to_numpy(dtype=np.float64)
    off = np.flatnonzero(values != np.arange(len(values)))  # NaN differs from every row number
    _refuse_rows(
        off,
        path,
        vol,
        " are out of volume order",
        lambda row: f" has index {_plain(table['index'].iloc[row])!r}",
        f"row i must describe volume i of {VOLUMES}: sort the table by index and remove repeated rows",
    )


def _plain(value: Any) -> Any:
    """A table value as Python has it (0, not ``np.int64(0)``, in a message's repr)."""
    return value.item() if isinstance(value, np.generic) else value


def read_dataset(directory: str | Path, with_labels: bool = False) -> Dataset:
    """Open a dataset directory; labels (and the label columns of the table) only if asked for."""
    directory = Path(directory)
    if not directory.exists():
        raise InputError(directory, missing_reason(directory, "no such directory"))
    if not directory.is_dir():
        raise InputError(directory, f"is a file, expected a dataset directory with {META}")
    if not any(directory.iterdir()):
        raise InputError(directory, f"empty directory, expected {VOLUMES}, {TABLE} and {META}")
    if not (directory / META).is_file():
        hint = " (an unfinished write?)" if (directory / VOLUMES).exists() else ""
        raise InputError(directory, f"not a cryoshift dataset: no {META}{hint}")
    from cryoshift.runtime.jsonfile import JSON_ERRORS, JsonContentError, json_failure, parse_json

    try:  # a key given twice was last-wins; a 5000-digit number leaked sys.set_int_max_str_digits()
        info = parse_json((directory / META).read_text())
    except JsonContentError as exc:
        raise InputError(directory / META, str(exc)) from exc
    except (OSError, *JSON_ERRORS) as exc:  # a binary or deeply nested file was a traceback
        raise InputError(directory / META, f"not valid JSON ({json_failure(exc)})") from exc
    if not isinstance(info, dict):
        raise InputError(directory / META, f"must hold a JSON object, found a {type(info).__name__}")
    if info.get("format") != FORMAT:
        raise InputError(directory / META, f"unknown format {info.get('format')!r}, expected {FORMAT!r}")
    for name in (VOLUMES, TABLE):
        if (directory / name).is_dir():  # was "missing", which sent the user looking for a file
            raise InputError(directory / name, "is a directory, not a file (the dataset's " + name + ")")
        if not (directory / name).is_file():
            raise InputError(directory, f"{name} is missing")
    n, box = _count(info, "n", directory), _count(info, "box_size", directory)
    _check_meta(info, directory)
    vol = open_volume(directory / VOLUMES)
    data = vol.data if vol.data.ndim == 4 else vol.data[None]
    if data.shape != (n, box, box, box):
        vol.close()
        raise InputError(
            directory / VOLUMES, f"stack has shape {data.shape}, dataset.json says {n} volumes of {box}^3"
        )
    try:
        table = pd.read_csv(for_pandas(directory / TABLE), dtype={"class_name": str})  # class '007' is not 7
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        vol.close()
        raise InputError(directory / TABLE, f"not a readable CSV ({exc})") from exc
    if len(table) != n:
        vol.close()
        raise InputError(directory / TABLE, f"has {len(table)} rows, dataset.json says {n}")
    _check_order(table, directory / TABLE, vol)
    voxel_size, voxel_note = _voxel_size(info, vol, directory)
    labels = None
    if with_labels:
        if not info.get("labelled") or "label" not in table.columns:
            vol.close()
            raise InputError(directory, "dataset is unlabelled; labels were asked for")
        labels = _labels(table["label"], list(info.get("class_names") or []), directory / TABLE, vol)
        if "class_name" in table.columns:
            names = list(info["class_names"])
            _check_class_column(table["class_name"], labels, names, directory / TABLE, vol)
    else:
        table = table.drop(columns=[c for c in LABEL_COLUMNS if c in table.columns])
    return Dataset(
        path=directory,
        volumes=data,
        labels=labels,
        class_names=list(info.get("class_names") or []),
        voxel_size=voxel_size,
        contrast=str(info["contrast"]),
        table=table,
        meta=info,
        notes=[voxel_note] if voxel_note else [],
        _mrc=vol,
    )

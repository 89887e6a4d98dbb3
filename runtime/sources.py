"""What to classify: turn the user's inputs into a flat, deterministic list of items.

Inputs mix freely in one run: single-volume MRC files, globs and directories of them, MRC
volume stacks, STAR listings of per-particle MRCs (``rlnImageName``), pick tables (STAR or
CSV) matched by name to memory-mapped tomograms, and cryoshift dataset directories. Each
item carries an id that traces back to its origin (``path``, RELION's ``000003@path`` for
a 1-based stack slice, or ``tomogram:x,y,z``), so results, the resume ledger and the errors
table all speak the same language. Planning never reads voxel data; readers load one item
into a preallocated batch row. A bad input becomes an item with an error attached, so it
flows through the same pipeline and ends up in the errors table exactly once.
"""

from __future__ import annotations

import glob
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np

from cryoshift.runtime.contract import CONTRASTS, MRC_HEADER_BYTES, MRC_MODES, VOXEL_TOLERANCE
from cryoshift.runtime.errors import InputError

TABLE_SUFFIXES = (".star", ".csv", ".tsv")


class PlanRefusal(InputError):
    """A problem with the run itself (options, data that does not fit the model), not with one
    input: it stops planning instead of becoming an error row."""


class Item(NamedTuple):
    """One subtomogram to classify (a tuple: millions of them must stay cheap)."""

    id: str
    kind: str  # "file" | "stack" | "tomogram" | "error"
    path: str  # volume file, stack or tomogram
    index: int = -1  # index in a stack, -1 for a single volume
    x: float = math.nan  # pick coordinates in pixels (tomogram items)
    y: float = math.nan
    z: float = math.nan
    tomo: str = ""
    error: str = ""  # reason, for items that failed while planning


@dataclass
class Plan:
    """Items in a fixed order plus the facts checked while planning."""

    items: Sequence[Item]  # an ItemList: pick tables stay arrays (runtime/pickrows.py)
    inputs: list[str]
    box_size: int
    contrast: str
    voxel_sizes: dict[str, float] = field(default_factory=dict)  # per opened stack/tomogram/file group
    notes: list[str] = field(default_factory=list)
    # STAR tables classified row by row: (path, item id per table row or None); the output STAR
    # copies their blocks and columns (see runtime/star_out.py).
    origins: list[tuple[str, Sequence[str | None]]] = field(default_factory=list)

    def shard(self, index: int, count: int) -> Plan:
        """Deterministic partition: every ``count``-th item from position ``index``.

        Position in the planned order (sorted within globs and directories) is stable across
        runs, so SLURM array tasks and resumed runs always agree on who owns what.
        """
        if count < 1 or not 0 <= index < count:
            raise InputError(None, f"shard {index}/{count} is invalid: need 0 <= i < n")
        return Plan(self.items[index::count], self.inputs, self.box_size, self.contrast,
                    self.voxel_sizes, self.notes, self.origins)


def stack_id(path: str | Path, index: int) -> str:
    """RELION's name for slice ``index`` (0-based) of a stack: ``000003@path`` counts from 1."""
    return f"{index + 1:06d}@{path}"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        left, right = text.split("/")
        index, count = int(left), int(right)
    except ValueError:
        raise InputError(None, f"--shard {text!r} is not of the form i/n (e.g. 0/4)") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(None, f"--shard {text!r}: need 0 <= i < n")
    return index, count


# ---------------------------------------------------------------------------------------------
# Opening volumes (memory maps), shared by planning and the reader threads.


class VolumeCache:
    """Thread-safe LRU of opened memory-mapped MRC files (stacks and tomograms stay open)."""

    def __init__(self, size: int = 32):
        self.size = size
        self._open: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> Any:
        with self._lock:
            vol = self._open.get(path)
            if vol is not None:
                self._open.move_to_end(path)
                return vol
        vol = open_mrc(path)
        with self._lock:
            self._open[path] = vol
            while len(self._open) > self.size:
                self._open.popitem(last=False)
        return vol


def open_mrc(path: str | Path) -> Any:
    """Memory-map an MRC file via the runtime reader, with every failure as InputError."""
    from cryoshift.runtime.mrc import open_volume

    if str(path).startswith("copick:"):  # a copick tomogram (runtime/copick_io.py)
        from cryoshift.runtime.copick_io import open_volume as open_copick

        return open_copick(str(path))
    try:
        return open_volume(path)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(path, os_reason(path, exc)) from exc
    except ValueError as exc:
        raise InputError(path, f"cannot read MRC file ({exc})") from exc


def os_reason(path: str | Path, exc: OSError) -> str:
    """A file-system failure in words (no ``[Errno 2]``): what a user can act on."""
    if isinstance(exc, FileNotFoundError):
        if os.path.islink(path):
            return f"dangling symbolic link (points to {os.readlink(path)}, which does not exist)"
        return "no such file or directory"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, expected an MRC file"
    if isinstance(exc, PermissionError):
        return "permission denied (cannot read the file)"
    return f"cannot read: {' '.join(str(exc.strerror or exc).split())}"


# ---------------------------------------------------------------------------------------------
# Planning


def _expand(text: str) -> list[Path]:
    """A path, a directory (its MRC files, sorted) or a glob (sorted matches)."""
    if any(ch in text for ch in "*?["):
        return [Path(p) for p in sorted(glob.glob(text, recursive=True))]
    path = Path(text)
    if path.is_dir() and not (path / "dataset.json").is_file():
        from cryoshift.runtime.mrc import is_mrc_path

        return sorted(p for p in path.iterdir() if is_mrc_path(p) and p.is_file())
    return [path]


# Tomogram names: the decorations below (and only these) are ignored when a pick table's name is
# matched to a tomogram file; everything else must be equal. Documented in the README.
_NAME_SUFFIXES = (".tomostar",)
_PIXEL_SUFFIX = re.compile(r"_\d+(?:\.\d+)?Apx$")  # Warp: TS_01_10.00Apx
_BIN_SUFFIX = re.compile(r"_bin\d+$")  # IMOD/AreTomo binning: TS_01_bin4
_REC_PREFIX = "rec_"  # IMOD reconstructions: rec_TS_01


def _strip_suffix(name: str) -> str:
    """A name without folder and MRC suffix (``.mrc``, ``.rec``, ``.mrc.gz`` ...) or ``.tomostar``."""
    from cryoshift.runtime.mrc import mrc_suffix

    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    suffix = mrc_suffix(name) or next((s for s in _NAME_SUFFIXES if name.lower().endswith(s)), "")
    return name[: len(name) - len(suffix)] if suffix else name


def tomogram_key(name: str) -> str:
    """A tomogram name without its documented decorations: folder, MRC suffix or ``.tomostar``,
    the ``rec_`` prefix, Warp's ``_<pixel>Apx`` and a ``_bin<N>`` suffix."""
    key = _strip_suffix(name)
    if key.startswith(_REC_PREFIX) and len(key) > len(_REC_PREFIX):
        key = key[len(_REC_PREFIX):]
    while True:
        stripped = _BIN_SUFFIX.sub("", _PIXEL_SUFFIX.sub("", key))
        if stripped == key or not stripped:
            return key
        key = stripped


def _tomogram_index(tomograms: list[str], tables: dict[str, Any] | None = None) -> dict[str, Path]:
    """Tomogram files by stem (the name pick tables use); a RELION 5 ``tomograms.star`` adds its
    tomograms by rlnTomoName (their table rows go into ``tables``)."""
    from cryoshift.runtime.tomograms import is_tomogram_table, read_tomogram_table

    index: dict[str, Path] = {}
    for text in tomograms:
        for path in _expand(text):
            if not path.is_file():
                reason = "not a file" if path.exists() else os_reason(path, FileNotFoundError())
                raise PlanRefusal(path, f"tomogram given with --tomograms: {reason}")
            if is_tomogram_table(path):
                for entry in read_tomogram_table(path):
                    index[entry.name] = entry.path
                    if tables is not None:
                        tables[entry.name] = entry
                continue
            stem = _strip_suffix(path.name)
            if stem in index and index[stem] != path:
                raise PlanRefusal(path, f"two tomograms are named {stem!r}: {index[stem]} and {path}; "
                                        "give only one of them")
            index[stem] = path
    return index


def _match_tomogram(name: str, index: dict[str, Path], picks: Path) -> Path:
    """Pick-table tomogram name -> file: the same name (folder and file suffix aside), else the
    same name once the documented decorations are stripped from both (:func:`tomogram_key`).
    Never a guess: no match, or several, raise :class:`InputError` naming what was found."""
    if not index:
        raise PlanRefusal(picks, "picks need tomograms: pass them with --tomograms")
    for exact in (name, _strip_suffix(name)):
        if exact in index:
            return index[exact]
    key = tomogram_key(name)
    found = sorted({str(p) for stem, p in index.items() if tomogram_key(stem) == key})
    if len(found) == 1:
        return Path(found[0])
    if found:
        shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")
        raise InputError(picks, f"tomogram name {name!r} is ambiguous: it matches {shown}; "
                                "give only the one meant with --tomograms")
    names = ", ".join(sorted(index)[:5]) + (" ..." if len(index) > 5 else "")
    raise InputError(picks, f"no tomogram matches name {name!r} (have: {names}; names must be equal apart "
                            "from folder, file suffix, a rec_ prefix and _<pixel>Apx/_bin<N> suffixes)")


class _Planner:
    def __init__(self, box_size: int, model_voxel: float, contrast: str | None, model_contrast: str,
                 ignore_voxel_size: bool, tomograms: list[str], cache: VolumeCache,
                 coordinate_pixel_size: float | None = None, binning: float | None = None):
        self.box = box_size
        self.model_voxel = model_voxel
        self.contrast = contrast
        self.model_contrast = model_contrast
        self.ignore_voxel = ignore_voxel_size
        self.tomograms = tomograms
        self._tomo_index: dict[str, Path] | None = None
        self.cache = cache
        from cryoshift.runtime.pickrows import ItemList

        self.items = ItemList()
        self.failed_inputs: list[InputError] = []  # explicit inputs that became error items
        self.voxel_sizes: dict[str, float] = {}
        self.notes: list[str] = []
        self.origins: list[tuple[str, Sequence[str | None]]] = []
        self.tomo_tables: dict[str, Any] = {}  # rlnTomoName -> TomogramEntry from a tomograms.star
        self.coordinate_pixel_size = coordinate_pixel_size
        self.binning = binning

    # -- checks ------------------------------------------------------------------------------
    def check_voxel(self, path: Path | str, vol: Any) -> None:
        voxel = float(vol.voxel_size or 0.0)
        self.voxel_sizes[str(path)] = voxel
        if not getattr(vol, "voxel_size_known", True) or voxel <= 0 or self.model_voxel <= 0:
            return  # header says "unset": nothing to compare
        mismatch = abs(voxel - self.model_voxel) / self.model_voxel
        if mismatch > VOXEL_TOLERANCE and not self.ignore_voxel:
            raise PlanRefusal(path, f"voxel size {voxel:.3g} A differs from the model's "
                                   f"{self.model_voxel:.3g} A "
                                   f"by {mismatch:.0%} (> {VOXEL_TOLERANCE:.0%}); rescale the data or pass "
                                   "--ignore-voxel-size")

    def check_contrast(self, source: str, contrast: str) -> None:
        if contrast != self.model_contrast:
            raise PlanRefusal(source, f"data contrast is {contrast!r} but the model expects "
                                     f"{self.model_contrast!r}; use a model exported for {contrast!r} data "
                                     "or pass the right --contrast")

    # -- inputs ------------------------------------------------------------------------------
    def add(self, text: str) -> None:
        """Plan one input. A problem with it (missing, dangling link, empty folder, unreadable,
        wrong type, a stack of the wrong box) becomes one error item and the other inputs go on;
        :class:`PlanRefusal` (options, data that does not fit the model) stops planning."""
        start, n_origins = len(self.items), len(getattr(self, "origins", ()))
        try:
            self._add(text)
        except PlanRefusal:
            raise
        except InputError as exc:
            self.items.truncate(start)
            if hasattr(self, "origins"):
                del self.origins[n_origins:]
            own = exc.path is None or exc.path in (text, str(Path(text)))
            reason = exc.reason if own else f"{exc.path}: {exc.reason}"
            self.items.append(Item(text, "error", text, error=reason))
            self.failed_inputs.append(exc)

    def _add(self, text: str) -> None:
        if text.startswith("copick:"):  # a copick project (runtime/copick_io.py)
            from cryoshift.runtime.copick_io import plan

            plan(self, text)
            return
        path = Path(text)
        if path.is_dir() and (path / "dataset.json").is_file():
            self.add_dataset(path)
            return
        paths = _expand(text)
        if not paths:
            if path.is_dir():
                raise InputError(text, "folder holds no MRC files" if any(path.iterdir()) else "empty folder")
            raise InputError(text, "matches no files")
        for p in paths:
            suffix = p.suffix.lower()
            if len(paths) > 1 and suffix not in TABLE_SUFFIXES and suffix != ".mrcs" and p is not paths[0]:
                # Directories and globs can hold millions of single volumes: no header read per
                # file here (readers check each file); the first one was checked in full.
                self.items.append(Item(str(p), "file", str(p)))
                continue
            try:
                if suffix in TABLE_SUFFIXES:
                    self.add_table(p)
                else:
                    self.add_volume_file(p, strict=len(paths) == 1 and not p.exists())
            except PlanRefusal:
                raise
            except InputError as exc:
                if len(paths) == 1:
                    raise  # the input itself failed: add() makes it one error item
                self.items.append(Item(str(p), "error", str(p), error=exc.reason))

    def add_volume_file(self, path: Path, strict: bool = False) -> None:
        from cryoshift.runtime.mrc import check_isotropic, read_header

        if strict:
            raise InputError(path, os_reason(path, FileNotFoundError()))
        try:
            header = read_header(path)  # the header only: cheap for directories of many files
            check_isotropic(header, path)
        except OSError as exc:
            raise InputError(path, os_reason(path, exc)) from exc
        self.check_voxel(path, SimpleNamespace(**header))
        if header["is_stack"]:
            shape = header["shape"]
            self.check_box(path, shape[1:])  # an error item for this stack (see add)
            self.items.extend(Item(stack_id(path, i), "stack", str(path), i) for i in range(shape[0]))
        else:
            self.items.append(Item(str(path), "file", str(path)))

    def check_box(self, path: Path | str, shape: tuple[int, ...]) -> None:
        if tuple(shape) != (self.box,) * 3:
            shown = "x".join(str(s) for s in shape)
            raise InputError(path, f"volumes are {shown} but the model takes {self.box}^3 boxes; "
                                   "re-extract at the model's box size")

    def add_dataset(self, path: Path) -> None:
        from cryoshift.runtime.dataset import read_dataset

        with read_dataset(path) as ds:  # checks dataset.json against the stack and the table
            info = ds.meta
        contrast = self.contrast or info.get("contrast") or "dark"
        self.check_contrast(str(path), contrast)
        stack = path / "volumes.mrc"
        vol = open_mrc(stack)
        from cryoshift.runtime.mrc import check_isotropic

        check_isotropic(vol.header, stack)
        self.check_voxel(stack, vol)
        data = vol.data if vol.is_stack else vol.data[None]
        self.check_box(stack, data.shape[1:])
        self.items.extend(Item(stack_id(stack, i), "stack", str(stack), i) for i in range(data.shape[0]))

    def add_table(self, path: Path) -> None:
        from cryoshift.runtime.picks import read_particle_listing, read_picks
        from cryoshift.runtime.tables import PickTable, read_pick_table

        if not path.is_file():
            raise InputError(path, "no such file")
        if _is_listing(path):
            listing = read_particle_listing(path)
            start = len(self.items)
            seen_voxel: set[str] = set()
            for row in listing.itertuples(index=False):
                vpath = str(row.path)
                index = _as_index(getattr(row, "index", -1))
                if vpath not in seen_voxel:
                    seen_voxel.add(vpath)
                    self._check_listed_file(vpath)
                if index >= 0:
                    self.items.append(Item(stack_id(vpath, index), "stack", vpath, index))
                else:
                    self.items.append(Item(vpath, "file", vpath))
            if path.suffix.lower() == ".star":
                self.origins.append((str(path), [it.id for it in self.items[start:]]))
            return
        centred = path.suffix.lower() == ".star" and _star_has(path, "rlnCenteredCoordinateXAngst") \
            and not _star_has(path, "rlnCoordinateX")
        in_voxels = centred  # Angstrom picks (and Warp/M picks with a stated pixel size) need no --binning
        if centred:
            # RELION 5 centred Angstrom coordinates: converted with each tomogram's own header;
            # picks outside the tomogram become error rows when cropped, like pixel picks.
            picks = read_pick_table(path, pixel_size=lambda name: self._tomo_pixel(path, name),
                                    tomo_shape=lambda name: self._tomo_header(path, name)["shape"])
        elif self.binning or self.coordinate_pixel_size or not _star_has(path, "rlnDetectorPixelSize"):
            picks = read_pick_table(path)  # streamed: only names and coordinates, as arrays
        else:
            picks = read_picks(path)
            if not (self.binning or self.coordinate_pixel_size):  # Warp/M: the table's own pixel size
                from cryoshift.runtime.warp import scale_to_voxels

                picks, note = scale_to_voxels(path, picks, lambda name: self._tomo_pixel(path, name))
                if note:
                    self.notes.append(note)
                    in_voxels = True
            picks = PickTable.from_frame(path, picks)
        self.add_picks(path, picks, scale=not in_voxels)

    def _tomo_header(self, picks: Path, name: str) -> dict[str, Any]:
        from cryoshift.runtime.mrc import read_header

        if self._tomo_index is None:
            self._tomo_index = _tomogram_index(self.tomograms, self.tomo_tables)
        if not name and len(self._tomo_index) == 1:
            name = next(iter(self._tomo_index))
        return read_header(_match_tomogram(name, self._tomo_index, picks))

    def _tomo_pixel(self, picks: Path, name: str) -> float:
        """A per voxel of a tomogram: its tomograms.star row (tilt-series pixel x binning) when
        there is one, else the MRC header."""
        header = self._tomo_header(picks, name)
        entry = self.tomo_tables.get(name)
        return entry.pixel_size if entry is not None and entry.pixel_size else header["voxel_size"]

    def _coordinate_scale(self, name: str, vol: Any) -> float:
        """Factor from pick pixels to reconstruction voxels (--binning / --coordinate-pixel-size)."""
        if self.binning:
            return 1.0 / self.binning
        if self.coordinate_pixel_size:
            entry = self.tomo_tables.get(name)
            voxel = entry.pixel_size if entry is not None and entry.pixel_size else float(vol.voxel_size or 0)
            if voxel <= 0:
                raise InputError(name, "--coordinate-pixel-size needs the tomogram's voxel size, and its "
                                       "header has none; use --binning instead")
            return self.coordinate_pixel_size / voxel
        return 1.0

    def _check_listed_file(self, vpath: str) -> None:
        """Voxel size of a listed file, read once per file; unreadable files fail per item later."""
        try:
            vol = self.cache.get(vpath)
        except InputError:
            return
        self.check_voxel(vpath, vol)

    def add_picks(self, path: Path, picks: Any, scale: bool = True) -> None:
        """Plan a :class:`~cryoshift.runtime.tables.PickTable` as one lazy selection of rows
        (:class:`~cryoshift.runtime.pickrows.PickRows`): per tomogram name, in order of first
        appearance, its file or the reason it has none; items are made from the arrays when read."""
        import numpy as np

        from cryoshift.runtime.pickrows import PickRows, PickSource, RowIds

        if self._tomo_index is None:
            self._tomo_index = _tomogram_index(self.tomograms, self.tomo_tables)
        index = self._tomo_index
        names = list(picks.names)
        if "" in names:  # rows naming no tomogram: the only one given, else a refusal
            if len(index) != 1:
                raise PlanRefusal(path, "picks name no tomogram (no tomo_name/rlnTomoName column); "
                                        "pass exactly one tomogram with --tomograms")
            names[names.index("")] = next(iter(index))
        unique: dict[str, int] = {}
        remap = np.array([unique.setdefault(n, len(unique)) for n in names], dtype=np.int32)
        tomo = picks.tomo if np.array_equal(remap, np.arange(len(names))) else remap[picks.tomo]
        names = list(unique)
        tomo_for: dict[str, Path] = {}
        unmatched: dict[str, str] = {}  # picks of a tomogram not given: error rows, not a refusal
        scales = np.ones(len(names))
        for k, name in enumerate(names):
            if scale and (self.binning or self.coordinate_pixel_size):
                try:
                    vol = self.cache.get(str(_match_tomogram(name, index, path)))
                except InputError:
                    vol = None
                scales[k] = self._coordinate_scale(name, vol) if vol is not None else 1.0
            try:
                tomo_path = _match_tomogram(name, index, path)
            except InputError as exc:
                if not index:
                    raise
                unmatched[name] = exc.reason
                continue
            vol = self.cache.get(str(tomo_path))
            if vol.is_stack:
                raise InputError(tomo_path, "is a volume stack, not a tomogram")
            if vol.anisotropic:
                from cryoshift.runtime.mrc import check_isotropic

                check_isotropic(vol.header, tomo_path)
            self.check_voxel(tomo_path, vol)
            tomo_for[name] = tomo_path
        if unmatched and not tomo_for:  # nothing matched at all: a naming problem, say it once
            raise InputError(path, next(iter(unmatched.values())))
        xyz = picks.xyz
        if (scales != 1.0).any():
            xyz = xyz * scales[tomo][:, None]
        from cryoshift.runtime.tomograms import outside_hint_arrays

        shapes = {k: self.cache.get(str(tomo_for[n])).data.shape
                  for k, n in enumerate(names) if n in tomo_for}
        hint = outside_hint_arrays(path, xyz, tomo, shapes, self.tomo_tables)
        if hint:
            self.notes.append(hint)
        key = (str(path.resolve()), bool(scale), self.binning, self.coordinate_pixel_size)
        source = PickSource(str(path), key, names, tomo, xyz,
                            [str(tomo_for[n]) if n in tomo_for else None for n in names],
                            [unmatched.get(n, "") for n in names])
        rows = PickRows(source)
        self.items.add_rows(rows)
        if path.suffix.lower() == ".star":
            self.origins.append((str(path), RowIds(rows)))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value) in ("", "nan")


def _as_index(value: Any) -> int:
    try:
        if _missing(value):
            return -1
        return int(value)
    except (TypeError, ValueError):
        return -1


def _is_listing(path: Path) -> bool:
    """A table of subtomogram files (rlnImageName / path column) rather than of coordinates."""
    if path.suffix.lower() == ".star":
        return _star_has(path, "rlnImageName")
    try:
        with open(path, errors="replace") as fh:
            header = fh.readline()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc}") from exc
    cols = {c.strip().strip('"').lower() for c in header.replace("\t", ",").split(",")}
    return bool(cols & {"rlnimagename", "path", "image", "image_name"}) and not cols & {"x", "rlncoordinatex"}


def _star_has(path: Path, label: str) -> bool:
    """Cheap sniff of a STAR file's column labels (no full parse)."""
    try:
        with open(path, errors="replace") as fh:
            for _, line in zip(range(200), fh, strict=False):
                if line.strip().startswith("_" + label):
                    return True
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc}") from exc
    return False


def plan_inputs(inputs: list[str], box_size: int, model_voxel_size: float, model_contrast: str = "dark",
                contrast: str | None = None, tomograms: list[str] | None = None,
                ignore_voxel_size: bool = False, cache: VolumeCache | None = None,
                coordinate_pixel_size: float | None = None, binning: float | None = None) -> Plan:
    """Enumerate every item of ``inputs`` in a stable order and check them against the model.

    Refuses (InputError) what can never work: a data contrast or voxel size that differs from
    the model's, stacks of the wrong box size, missing inputs. Items that are merely bad
    (a corrupt file among thousands) come back as ``kind == "error"`` items.
    """
    if contrast is not None and contrast not in CONTRASTS:
        raise InputError(None, f"--contrast must be one of {', '.join(CONTRASTS)}, not {contrast!r}")
    if not inputs:
        raise InputError(None, "no inputs given")
    planner = _Planner(box_size, model_voxel_size, contrast, model_contrast, ignore_voxel_size,
                       list(tomograms or []), cache or VolumeCache(), coordinate_pixel_size, binning)
    data_contrast = contrast or "dark"
    has_non_dataset = any(not (Path(t).is_dir() and (Path(t) / "dataset.json").is_file()) for t in inputs)
    if has_non_dataset:
        planner.check_contrast("--contrast", data_contrast)
    for text in inputs:
        planner.add(text)
    if len(planner.failed_inputs) == len(inputs):  # nothing at all to classify: say why, once
        first = planner.failed_inputs[0]
        if len(inputs) == 1:
            raise first
        raise InputError(None, f"none of the {len(inputs)} inputs can be classified; the first: {first}")
    return Plan(planner.items, list(inputs), box_size, data_contrast, planner.voxel_sizes, planner.notes,
                planner.origins)


# ---------------------------------------------------------------------------------------------
# Loading one item into a batch row




def _read_single_fast(path: str, out: np.ndarray) -> float | None:
    """Read a plain little-endian single-volume MRC of ``out``'s shape straight into ``out``.

    About 20x faster than opening it through mrcfile, which matters for directories of
    millions of files. Returns the voxel size (0 if unset), or None for anything unusual
    (compressed, big-endian, stack, other shape, short file), which then takes the full reader
    and its precise error messages.
    """
    box = out.shape[0]
    with open(path, "rb") as fh:
        head = fh.read(MRC_HEADER_BYTES)
        if len(head) < MRC_HEADER_BYTES or head[208:211] != b"MAP" or head[212] != 0x44:
            return None
        ints = np.frombuffer(head, "<i4", 24)
        nx, ny, nz, mode, mx, ispg, nsymbt = (int(ints[i]) for i in (0, 1, 2, 3, 7, 22, 23))
        dtype = MRC_MODES.get(mode)
        if dtype is None or (nz, ny, nx) != (box, box, box) or 401 <= ispg <= 630 or nsymbt < 0:
            return None
        if tuple(int(v) for v in ints[16:19]) not in ((1, 2, 3), (0, 0, 0)):
            return None  # another axis order: the full reader transposes it
        cell = np.frombuffer(head, "<f4", 3, 40).astype(np.float64)
        if not (ints[7:10] == mx).all() or not np.allclose(cell, cell[0], rtol=0.01):
            return None  # anisotropic or odd sampling: the full reader decides
        fh.seek(MRC_HEADER_BYTES + nsymbt)
        data = np.fromfile(fh, dtype=dtype, count=box**3)
        if data.size != box**3:
            return None
    out[...] = data.reshape(out.shape)
    cella_x = float(np.frombuffer(head, "<f4", 1, 40)[0])
    voxel = cella_x / mx if mx > 0 else 0.0
    return voxel if math.isfinite(voxel) and voxel > 0 else 0.0  # NaN/Inf/negative cell: unset


def _check_item_voxel(item: Item, voxel: float, model_voxel: float | None) -> None:
    if model_voxel and voxel > 0:
        mismatch = abs(voxel - model_voxel) / model_voxel
        if mismatch > VOXEL_TOLERANCE:
            raise InputError(item.path, f"voxel size {voxel:.3g} A differs from the model's "
                                        f"{model_voxel:.3g} A by {mismatch:.0%}")


VALUE_LIMIT = 1e15  # |voxel| beyond this overflows float32 sums of squares in the model's normalisation


def _check_values(out: np.ndarray, item: Item) -> None:
    """NaN/Inf, or values so large that z-scoring in float32 overflows (NaN logits), fail the item.

    Two reductions instead of ``isfinite(...).all()``: no temporary array, and NaN fails both
    comparisons, so one test covers NaN, Inf and absurd magnitudes.
    """
    lo, hi = float(out.min()), float(out.max())
    if lo > -VALUE_LIMIT and hi < VALUE_LIMIT:
        return
    where = f" (item {item.id})" if item.id != item.path else ""
    if not np.isfinite(out).all():
        raise InputError(item.path, "contains NaN or infinite values" + where)
    raise InputError(item.path, f"values reach {max(abs(lo), abs(hi)):.3g}, beyond +-{VALUE_LIMIT:.0e}: "
                                "not subtomogram intensities (normalisation would overflow)" + where)


def load_item(item: Item, out: np.ndarray, cache: VolumeCache, voxel_size: float | None = None) -> None:
    """Fill ``out`` (D, D, D) float32 with ``item``'s voxels or raise InputError with the reason.

    ``voxel_size`` (the model's) makes single files of another voxel size fail as items;
    stacks and tomograms were already checked while planning.
    """
    if item.kind == "error":
        raise InputError(item.path, item.error)
    try:
        _load_item(item, out, cache, voxel_size)
    except OSError as exc:  # a file gone, a dangling link, no permission: said in words
        raise InputError(item.path, os_reason(item.path, exc)) from exc


def _load_item(item: Item, out: np.ndarray, cache: VolumeCache, voxel_size: float | None) -> None:
    box = out.shape[0]
    if item.kind == "file":
        voxel = _read_single_fast(item.path, out)
        if voxel is not None:
            _check_item_voxel(item, voxel, voxel_size)
            _check_values(out, item)
            return
        with open_mrc(item.path) as vol:  # not cached: directories can hold millions of files
            if vol.anisotropic:
                from cryoshift.runtime.mrc import check_isotropic

                check_isotropic(vol.header, item.path)
            if vol.voxel_size_known:
                _check_item_voxel(item, vol.voxel_size, voxel_size)
            data = vol.data
            if vol.is_stack or data.ndim != 3:
                raise InputError(item.path, f"expected a single volume, found shape {tuple(data.shape)}")
            if data.shape != (box, box, box):
                shown = "x".join(str(s) for s in data.shape)
                raise InputError(item.path, f"box {shown} does not match the model's {box}^3")
            out[...] = data
    elif item.kind == "stack":
        vol = cache.get(item.path)
        data = vol.data if vol.data.ndim == 4 else vol.data[None]
        if not 0 <= item.index < data.shape[0]:
            raise InputError(item.path, f"index {item.index} outside stack of {data.shape[0]} volumes")
        if data.shape[1:] != (box, box, box):
            shown = "x".join(str(s) for s in data.shape[1:])
            raise InputError(item.path, f"box {shown} does not match the model's {box}^3")
        out[...] = data[item.index]
    elif item.kind == "tomogram":
        from cryoshift.runtime.crop import crop_box

        # Crops straight into the batch row; a pick outside the tomogram raises InputError.
        crop_box(cache.get(item.path).data, (item.x, item.y, item.z), box, out=out, path=item.path)
    else:  # pragma: no cover - planning only makes the kinds above
        raise InputError(item.path, f"unknown item kind {item.kind}")
    _check_values(out, item)

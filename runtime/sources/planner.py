"""Planning: the user's inputs, checked against the model, as one deterministic list of items.

:class:`Planner` takes each input in turn (MRC files, globs and folders of them, volume stacks,
dataset folders, rlnImageName listings, pick tables via runtime/sources/picktables.py, copick
projects via runtime/copick_io.py); :func:`plan_inputs` returns the :class:`Plan`. Planning
reads headers, never voxel data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryoshift.runtime.contract import CONTRASTS, VOXEL_TOLERANCE, percent, voxel_mismatch
from cryoshift.runtime.errors import InputError, MissingExtraError, missing_reason
from cryoshift.runtime.picks import NAMED_TABLE_SUFFIXES
from cryoshift.runtime.sources.cache import VolumeCache, open_mrc, os_reason
from cryoshift.runtime.sources.items import CHECKED_AGAINST, Item, Plan, PlanRefusal, stack_id
from cryoshift.runtime.sources.paths import (
    dataset_of,
    expand_input,
    is_dataset_dir,
    is_glob,
    no_match_reason,
    no_mrc_files_reason,
    results_note,
    scan_folder,
    tomogram_index,
)

UNKNOWN_VOXEL_NOTES = 20  # files noted one by one for a header without a voxel size; then a count


# How a refusal of data of another voxel size ends for classify and evaluate (plan_inputs).
CLASSIFY_VOXEL_ADVICE = "rescale the data or pass --ignore-voxel-size"


# A dataset folder is read as one (its contrast, voxel size and table from dataset.json) only
# when it is an input itself; met inside a folder or a glob input it is skipped, and the note
# says how to read it, in the words of the command (by what the items are checked against).
_NESTED_DATASET_ADVICE = {
    CHECKED_AGAINST: "a dataset is classified only as an input of its own (e.g. {})",
    "training run": "a dataset is target data only as the --target itself (--target {})",  # train
}
NESTED_DATASETS_SHOWN = 3  # dataset folders named in that note; the rest are counted

# A contrast refusal in the words of the command (by what the items are checked against): train
# has no model yet and no --contrast, its target is checked against the source's convention.
_CONTRAST_REFUSAL = {
    CHECKED_AGAINST: "data contrast is {data!r} but the model expects {model!r}; use a model exported "
    "for {data!r} data or pass the right --contrast",
    "training run": "target contrast is {data!r} but the source's is {model!r}; give data of one "
    "convention (a simulated source: cryoshift simulate --contrast {data})",
}


class Planner:
    """Adds the items of one input at a time (:meth:`add`); ``items``, ``voxel_sizes``, ``notes``
    and ``origins`` become the :class:`Plan`."""

    def __init__(
        self,
        box_size: int,
        model_voxel: float,
        contrast: str | None,
        model_contrast: str,
        ignore_voxel_size: bool,
        tomograms: list[str],
        cache: VolumeCache,
        coordinate_pixel_size: float | None = None,
        binning: float | None = None,
        voxel_advice: str = CLASSIFY_VOXEL_ADVICE,
        against: str = CHECKED_AGAINST,
        scale_options: bool = True,
        own_output: Path | None = None,
    ):
        self.box = box_size
        # this run's output folder: a glob input over it leaves its files out (paths.expand_input)
        self.own_output = own_output
        # Whether the command has --binning / --coordinate-pixel-size (classify): refusals of pixel
        # picks of an unknown sampling offer them, or (evaluate, train, export) rescaling the table.
        self.scale_options = scale_options
        self.voxel_advice = voxel_advice
        self.against = against
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
        self.pick_tables = 0  # inputs planned as picks (the only ones --tomograms applies to)
        self.voxel_sizes: dict[str, float] = {}
        self.unknown_voxel: list[str] = []  # files whose header has no usable voxel size
        self.notes: list[str] = []
        self.voxel_notes: list[str] = []  # those of notes about headers without a voxel size
        self.origins: list[tuple[str, Sequence[str | None]]] = []
        self.tomo_tables: dict[str, Any] = {}  # rlnTomoName -> TomogramEntry from a tomograms.star
        self.placement: dict[str, tuple[float, tuple[float, float, float]]] = {}  # Plan.placement
        self.coordinate_pixel_size = coordinate_pixel_size
        self.binning = binning

    def tomogram_index(self) -> dict[str, Path]:
        """The ``--tomograms`` files by name (read once, when the first pick table needs them)."""
        if self._tomo_index is None:
            self._tomo_index = tomogram_index(self.tomograms, self.tomo_tables)
            for text, reason in getattr(self._tomo_index, "unreadable", []):
                self.notes.append(
                    f"{text}: --tomograms folder not read ({reason}); picks of tomograms not "
                    "found elsewhere fail as error rows"
                )
        return self._tomo_index

    # -- checks ------------------------------------------------------------------------------
    def check_voxel(self, path: Path | str, vol: Any) -> None:
        """Compare a file's voxel size with the model's and record it for the manifest.

        A mismatch is a problem of that file (InputError): one file given on the command line,
        one in a folder and one tomogram of a pick table all become error rows while the other
        inputs go on (PlanRefusal would stop the run for one file). A header without a usable
        voxel size (cell 0, NaN, Inf or negative) cannot be compared: the file is classified as
        before, with a note, and the manifest records null, never the reader's 1.0 stand-in.
        """
        known = getattr(vol, "voxel_size_known", True) and float(vol.voxel_size or 0.0) > 0
        if not known:
            if str(path) not in self.unknown_voxel:
                self.unknown_voxel.append(str(path))
                self._note_unknown_voxel(path, vol)
            return
        voxel = float(vol.voxel_size)
        self.voxel_sizes[str(path)] = voxel
        mismatch = voxel_mismatch(voxel, self.model_voxel)
        if mismatch is None:
            return
        if mismatch > VOXEL_TOLERANCE and not self.ignore_voxel:
            raise InputError(
                path,
                f"voxel size {voxel:.3g} A differs from the {self.against}'s "
                f"{self.model_voxel:.3g} A "
                f"by {percent(mismatch)} (> {VOXEL_TOLERANCE:.0%}); {self.voxel_advice}",
            )

    def check_tomogram_axes(self, path: Path | str, vol: Any) -> None:
        """Refuse a ``--tomograms`` file that looks un-rotated (stored XZY, as IMOD's ``tilt``
        writes it: :func:`~cryoshift.runtime.tomograms.unrotated_reason`) unless the tomograms.star
        row listing it states that size; InputError, so only its picks fail.

        Called by picktables._check_tomogram, the check every tomogram gets before its picks are
        cropped, whether given in a folder, a glob or a table."""
        from cryoshift.runtime.tomograms import refuse_unrotated

        shape = getattr(vol, "shape", None)
        if shape is None:
            return
        entry = next((e for e in self.tomo_tables.values() if Path(e.path) == Path(path)), None)
        refuse_unrotated(path, tuple(shape), entry)

    def _note_unknown_voxel(self, path: Path | str, vol: Any) -> None:
        """One note per file whose header has no usable voxel size (``info --validate`` flags it),
        for the first :data:`UNKNOWN_VOXEL_NOTES` of them: a folder of a million such files would
        bury the summary; :meth:`closing_notes` counts the rest, whose manifest entries say null."""
        if len(self.unknown_voxel) > UNKNOWN_VOXEL_NOTES:
            return
        header = getattr(vol, "header", None)
        cell = header.get("cell") if isinstance(header, dict) else getattr(vol, "cell", None)
        shown = f" (cell = {', '.join(f'{c:g}' for c in cell)})" if cell else ""
        checked = f" against the {self.against}'s {self.model_voxel:.3g} A" if self.model_voxel > 0 else ""
        note = (
            f"{path}: no usable voxel size in the header{shown}; classified without checking "
            f"it{checked} (manifest: null)"
        )
        self.notes.append(note)
        self.voxel_notes.append(note)

    def closing_notes(self) -> list[str]:
        """Notes that can only be written once every input is planned (the count of files past
        the per-file voxel-size notes)."""
        more = len(self.unknown_voxel) - UNKNOWN_VOXEL_NOTES
        if more <= 0:
            return []
        return [
            f"{more} more files have no usable voxel size in the header; classified without "
            "checking it (manifest: null for each)"
        ]

    def check_contrast(self, source: str, contrast: str) -> None:
        """Refuse data of another contrast than the model's (its answers would be meaningless),
        in the words of the command (:data:`_CONTRAST_REFUSAL`)."""
        if contrast != self.model_contrast:
            words = _CONTRAST_REFUSAL.get(self.against, _CONTRAST_REFUSAL[CHECKED_AGAINST])
            raise PlanRefusal(source, words.format(data=contrast, model=self.model_contrast))

    # -- inputs ------------------------------------------------------------------------------
    def add(self, text: str) -> None:
        """Plan one input. A problem with it (missing, dangling link, empty folder, unreadable,
        wrong type, another voxel size, a stack of the wrong box) becomes one error item and the
        other inputs go on; :class:`PlanRefusal` (options, a contrast the model was not made
        for) stops planning."""
        start, n_origins = len(self.items), len(getattr(self, "origins", ()))
        try:
            try:
                self._add(text)
            except OSError as exc:  # no permission for a folder on the way, ...: this input fails
                raise os_error(text, exc) from exc
            except (InputError, MemoryError, MissingExtraError):
                raise  # a missing extra (copick) stops the run before any work: every such input needs it
            except Exception as exc:  # a reader library failing on it: this input fails, not the run
                raise InputError(text, f"unexpected error reading it: {type(exc).__name__}: {exc}") from exc
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
        if is_dataset_dir(path):
            self.add_dataset(path)
            return
        owner = None if is_glob(text) else dataset_of(path)
        if owner is not None:  # DIR/volumes.mrc: the dataset's recorded contrast applies to it
            self.add_dataset(owner)
            self.notes.append(
                f"{text}: read as the dataset {owner} it belongs to (its dataset.json's contrast and "
                "voxel size checked); name the folder to read a dataset"
            )
            return
        unnamed: list[Path] = []
        results: list[Path] = []  # earlier runs' output folders a glob met (left out, said once)
        if path.is_dir():  # one listing: the MRC files, and what expand passes over
            files, datasets, specials, unnamed = scan_folder(path)
            # a pipe under an MRC name: planned as the folder's files are, an error row as if named
            paths = sorted(files + specials) if specials else files
        else:
            found = expand_input(text, self.own_output)
            paths, datasets = _outside_datasets(text, found.paths)
            results = found.results
        if not paths:
            if datasets:
                only = "holds no MRC files, only" if path.is_dir() else "matches only"
                raise InputError(text, f"{only} {self._dataset_note(datasets)}")
            if path.is_dir():
                raise InputError(text, no_mrc_files_reason(text) if any(path.iterdir()) else "empty folder")
            if results:
                raise InputError(text, f"matches no input files; {results_note(results)}")
            raise InputError(text, no_match_reason(text))
        from cryoshift.runtime.mrc import is_mrc_path

        for p in paths:
            suffix = p.suffix.lower()
            if len(paths) > 1 and is_mrc_path(p) and suffix != ".mrcs" and p is not paths[0]:
                # Directories and globs can hold millions of single volumes: the first one was
                # checked in full, the others get only the voxel-size check every input gets
                # (a 1 KiB read, see peek_voxel); readers check the rest of each file.
                self.add_folder_file(p)
                continue
            self.add_listed_file(p, alone=len(paths) == 1)
        if datasets:  # said once the input is planned (a failed input is said as its error alone)
            self.notes.append(f"{text}: skipped {self._dataset_note(datasets)}")
        if results:
            self.notes.append(f"{text}: {results_note(results)}")
        if unnamed:  # never read (no MRC name), but not passed over without a word either
            self.notes.append(_special_note(text, unnamed))

    def _dataset_note(self, datasets: list[Path]) -> str:
        """The dataset folders a folder or glob input met, and how to read one (by command)."""
        shown = ", ".join(str(d) for d in datasets[:NESTED_DATASETS_SHOWN])
        more = len(datasets) - NESTED_DATASETS_SHOWN
        if len(datasets) == 1:
            what = f"the dataset folder {shown}"
        else:
            what = f"{len(datasets)} dataset folders ({shown}{f' and {more} more' if more > 0 else ''})"
        advice = _NESTED_DATASET_ADVICE.get(self.against, _NESTED_DATASET_ADVICE[CHECKED_AGAINST])
        return f"{what}; {advice.format(datasets[0])}"

    def add_listed_file(self, p: Path, alone: bool = False) -> None:
        """One file of an input, read in full (its header); a bad one becomes an error item, or,
        when it is the whole input (``alone``), fails that input."""
        try:
            if p.is_dir():  # a sub-folder named like a volume (x.mrc/), in a folder or a glob
                raise InputError(p, _folder_reason(p))
            if input_kind(p) == "table":
                self.add_table(p)
            else:
                self.add_volume_file(p, strict=alone and not p.exists())
        except PlanRefusal:
            raise
        except (InputError, OSError) as exc:
            if alone:
                raise  # the input itself failed: add() makes it one error item
            reason = exc.reason if isinstance(exc, InputError) else os_error(p, exc).reason
            self.items.append(Item(str(p), "error", str(p), error=reason))

    def add_folder_file(self, path: Path) -> None:
        """One more file of a folder or glob: its voxel size checked and recorded as an explicit
        file's is (:meth:`check_voxel`: the same note and manifest record for a header without
        one, the same error row for another size), so how a file was named changes nothing."""
        header = peek_voxel(path)
        if header is None and path.is_dir():  # a sub-folder named like a volume (x.mrc/)
            self.items.append(Item(str(path), "error", str(path), error=_folder_reason(path)))
            return
        if header is not None and header.is_stack:  # a volume stack under .mrc: split as when named
            self.add_listed_file(path)
            return
        if header is not None:
            try:
                self.check_voxel(path, header)
            except InputError as exc:
                self.items.append(Item(str(path), "error", str(path), error=exc.reason))
                return
        self.items.append(Item(str(path), "file", str(path)))

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
            raise InputError(
                path,
                f"volumes are {shown} but the {self.against} takes {self.box}^3 boxes; "
                f"re-extract at the {self.against}'s box size",
            )

    def add_dataset(self, path: Path) -> None:
        from cryoshift.runtime.dataset import read_dataset

        with read_dataset(path) as ds:  # checks dataset.json against the stack and the table
            info = ds.meta
        self.check_contrast(str(path), self._dataset_contrast(path, info["contrast"]))
        stack = path / "volumes.mrc"
        vol = open_mrc(stack)
        from cryoshift.runtime.mrc import check_isotropic

        check_isotropic(vol.header, stack)
        self.check_voxel(stack, vol)
        data = vol.data if vol.is_stack else vol.data[None]
        self.check_box(stack, data.shape[1:])
        self.items.extend(Item(stack_id(stack, i), "stack", str(stack), i) for i in range(data.shape[0]))

    def _dataset_contrast(self, path: Path, recorded: str) -> str:
        """The contrast of dataset ``path``: the one its dataset.json records (read_dataset refuses a
        dataset without one). A ``--contrast`` that says otherwise is refused, never applied.

        Why: the option silently overrode the record, so a light dataset with ``--contrast dark``
        was classified as dark data (wrong classes, exit 0); which of the two is right is a guess."""
        if self.contrast is not None and self.contrast != recorded:
            raise PlanRefusal(
                str(path),
                f"its dataset.json records contrast {recorded!r} but --contrast says {self.contrast!r}; "
                "drop --contrast (a dataset's own record applies) or correct dataset.json",
            )
        return recorded

    def add_table(self, path: Path) -> None:
        """A STAR/CSV table: a listing of subtomogram files, or picks in tomograms."""
        from cryoshift.runtime.sources.picktables import plan_pick_table

        if not path.is_file():
            from cryoshift.runtime.mrc import refuse_special

            refuse_special(path)  # a named pipe is there, just not a file: say so
            raise InputError(path, missing_reason(path))
        if is_listing(path):
            from cryoshift.runtime.sources.picktables import refuse_2d_extraction

            refuse_2d_extraction(path)  # RELION 5 Extract's 2-D tilt-series stacks: not subtomograms
            self._refuse_listing_with_picks(path)
            self.add_listing(path)
        else:
            self.pick_tables += 1
            plan_pick_table(self, path)

    def _refuse_listing_with_picks(self, path: Path) -> None:
        """Refuse a STAR that lists extracted subtomograms (``rlnImageName``) and holds pick
        coordinates too (RELION's particles.star after Extract) when ``--tomograms`` is given.

        Why: it was read as the listing without a word, so with ``-t`` (meant for these picks, or
        for another input's) the listed files were classified, not crops of the tomograms; which
        of the two the user means is a guess."""
        if not self.tomograms or path.suffix.lower() != ".star":
            return
        from cryoshift.runtime.picks import CENTERED_COLUMNS, PIXEL_COLUMNS
        from cryoshift.runtime.sources.picktables import star_has

        coords = next((c for c in (PIXEL_COLUMNS[0], CENTERED_COLUMNS[0]) if star_has(path, c)), None)
        if coords is None:
            return
        raise InputError(
            path,
            f"lists subtomogram files (rlnImageName) and holds pick coordinates ({coords}), and "
            "--tomograms is given: classifying the listed files or cropping the picks from the "
            "tomograms is a guess; classify it without --tomograms for the listed files, or remove "
            "its rlnImageName column to crop the picks",
        )

    def add_listing(self, path: Path) -> None:
        """A table of subtomogram files and stack slices (rlnImageName, ``path``/``index``); a row
        naming no usable image (``0@stack.mrcs``, an empty name) is an error row of its own."""
        from cryoshift.runtime.picks import STATED_PIXEL, listing_rows

        listing, bad = listing_rows(path)
        start = len(self.items)
        voxel_problem: dict[tuple[str, float], str] = {}  # (listed file, stated size) -> why its items fail
        stated_only: set[str] = set()  # files whose header has no voxel size: checked by the STAR's
        for i, (vpath, index, stated) in enumerate(
            zip(map(str, listing["path"]), listing["index"], listing[STATED_PIXEL], strict=True)
        ):
            index = _as_index(index)
            if i in bad:
                ident = _bad_listing_id(path, vpath, i, bad[i])
                self.items.append(Item(ident, "error", str(path), error=bad[i]))
                continue
            key = (vpath, float(stated) if stated > 0 else 0.0)
            if key not in voxel_problem:
                voxel_problem[key] = self._check_listed_file(path, vpath, key[1], stated_only)
            if voxel_problem[key]:
                ident = stack_id(vpath, index) if index >= 0 else vpath
                self.items.append(Item(ident, "error", vpath, index, error=voxel_problem[key]))
            elif index >= 0:
                self.items.append(Item(stack_id(vpath, index), "stack", vpath, index))
            else:
                self.items.append(Item(vpath, "file", vpath))
        if path.suffix.lower() == ".star":
            self.origins.append((str(path), [it.id for it in self.items[start:]]))
        if stated_only:  # no longer "classified without checking", but the check rests on the STAR
            self.notes.append(
                f"{path}: {len(stated_only)} listed files have no usable voxel size in their header; "
                "checked by the listing's data_optics rlnImagePixelSize instead (manifest: that size)"
            )

    def _check_listed_file(self, listing: Path, vpath: str, stated: float, stated_only: set[str]) -> str:
        """Voxel size of a listed file, read once per file (and stated size): "" if fine, else why
        its items fail (unreadable files fail per item later, with their own reason).

        ``stated``: the listing's ``data_optics`` rlnImagePixelSize for the file's rows (0: none).
        A header that contradicts it (> VOXEL_TOLERANCE) refuses the listing, as dataset.json
        against its header is refused: either may be the wrong one. A header without a usable
        voxel size is checked by the stated size instead of not at all (and added to ``stated_only``)."""
        try:
            vol = self.cache.get(vpath)
        except InputError:
            return ""
        known = getattr(vol, "voxel_size_known", True) and float(vol.voxel_size or 0.0) > 0
        if stated > 0 and known:
            off = voxel_mismatch(float(vol.voxel_size), stated)
            if off is not None and off > VOXEL_TOLERANCE:
                raise InputError(
                    listing,
                    f"data_optics rlnImagePixelSize {stated:.4g} A differs from the header voxel size "
                    f"{float(vol.voxel_size):.4g} A of {vpath} by {percent(off)} (> {VOXEL_TOLERANCE:.0%}); "
                    "correct whichever is wrong",
                )
        try:
            if stated > 0 and not known:
                stated_only.add(vpath)
                self.check_voxel(vpath, SimpleNamespace(voxel_size=stated, voxel_size_known=True))
            else:
                self.check_voxel(vpath, vol)
        except InputError as exc:
            return (
                exc.reason
                if known
                else f"the listing's data_optics rlnImagePixelSize (the header has none): {exc.reason}"
            )
        return ""


def _outside_datasets(text: str, paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """``paths`` (a glob or file input ``text`` expanded: :func:`expand`; a folder input's are
    sorted by :func:`scan_folder`) without what belongs to a dataset
    folder, and those dataset folders (sorted). A file named on its own is kept, a dataset's
    volumes.mrc too: only what a folder or a glob met is sorted out.

    Why: a dataset is read as one only when it is an input itself (:meth:`Planner.add_dataset`).
    Inside a target folder it was passed over without a word, a glob matching it made an error
    row ("is a directory"), and a recursive glob read its stack as bare volumes, its recorded
    contrast unchecked: light data trained or classified as dark."""
    from cryoshift.runtime.mrc import is_mrc_path

    if not is_glob(text):  # one file
        return paths, []
    kept: list[Path] = []
    datasets: dict[Path, None] = {}
    in_dataset: dict[Path, bool] = {}  # each folder looked into once: a glob may match millions
    for p in paths:
        if p.parent not in in_dataset:
            in_dataset[p.parent] = is_dataset_dir(p.parent)
        if in_dataset[p.parent]:  # a dataset's volumes.mrc, dataset.json, particles.csv
            datasets[p.parent] = None
        elif not is_mrc_path(p) and is_dataset_dir(p):  # the glob matched the folder itself
            datasets[p] = None
        else:
            kept.append(p)
    return kept, sorted(datasets)


def _folder_reason(path: Path) -> str:
    """Why a folder among a folder input's (or a glob's) files is an error row: it has the name
    of a volume (``x.mrc/``), and a folder input is not read deeper; or a glob matched a link to
    one, which it does not enter (:func:`paths.safe_glob`). Said, not passed over: the user may
    expect it classified. One that cannot be listed says why instead."""
    try:
        with os.scandir(path):
            pass
    except OSError as exc:
        return os_reason(path, exc)
    if path.is_symlink():
        return (
            "is a link to a folder, not an MRC file; linked folders are not entered (give it as an "
            "input of its own to read the MRC files in it)"
        )
    return (
        "is a folder, not an MRC file; the sub-folders of a folder input are not read (give it as an "
        "input of its own, or a glob with **, to read the MRC files in it)"
    )


SPECIALS_SHOWN = 3  # entries named in the note of a folder's pipes, sockets and devices


def _special_note(text: str, unnamed: list[Path]) -> str:
    """The note of a folder input's named pipes, sockets and devices without an MRC name."""
    shown = ", ".join(p.name for p in unnamed[:SPECIALS_SHOWN])
    more = len(unnamed) - SPECIALS_SHOWN
    n = len(unnamed)
    return (
        f"{text}: skipped {n} entr{'y' if n == 1 else 'ies'} that {'is' if n == 1 else 'are'} not a "
        f"regular file (a named pipe, socket or device: {shown}{f' and {more} more' if more > 0 else ''}); "
        "a folder is read for its MRC files only"
    )


def peek_voxel(path: Path) -> SimpleNamespace | None:
    """The voxel size in the header of a folder's or glob's file, read as cheaply as the fast
    reader reads it (one 1 KiB read, no mrcfile: planning may meet millions of such files), as
    the ``voxel_size``/``voxel_size_known``/``cell`` that :meth:`Planner.check_voxel` takes.

    Compressed and unusual headers (other sampling per axis) take the full header reader. None
    where there is nothing to check (missing, a pipe, anisotropic, not an MRC file): the reader
    fails that item with its own reason, as before.
    """
    from cryoshift.runtime.mrc import VOLUME_STACK_SPACE_GROUPS, open_raw_header, raw_voxel_size, read_header

    try:
        with open_raw_header(path) as raw:  # non-blocking: a FIFO must not block
            if raw is None:  # a folder or a pipe under an MRC name
                return None
            h = raw.header
    except OSError:
        return None
    voxel = raw_voxel_size(h) if h is not None else None
    if voxel is not None:
        known = voxel > 0
        return SimpleNamespace(
            voxel_size=voxel if known else 1.0,
            voxel_size_known=known,
            cell=h.cell,
            is_stack=h.ispg in VOLUME_STACK_SPACE_GROUPS,
        )
    try:
        header = read_header(path)
    except Exception:  # whatever is wrong with it fails this one item when it is read, not the folder
        return None
    return None if header["anisotropic"] else SimpleNamespace(**header)


def _bad_listing_id(listing: Path, vpath: str, row: int, reason: str) -> str:
    """Id of a listing row that names no usable image: RELION's text for ``0@stack`` (its
    ``000000@`` id cannot clash with a real slice), else the listing and its 1-based row."""
    if "slice number 0" in reason:
        return f"{0:06d}@{vpath}"
    return f"{listing}:row {row + 1}"


def os_error(text: str | Path, exc: OSError) -> InputError:
    """A file-system failure while planning input ``text`` as the InputError of that input (the
    file the system refused is named when it is not the input itself)."""
    where = exc.filename if isinstance(exc.filename, str) else str(text)
    reason = os_reason(where, exc)
    if where not in (str(text), str(Path(text))):
        reason = f"{where}: {reason}"
    return InputError(text, reason)


def input_kind(path: Path) -> str:
    """``"table"`` (STAR/CSV) or ``"volume"`` (MRC): by the name where it says (``.star``,
    ``.csv``, ``.tsv``; ``.mrc``, ``.mrcs``, ``.map``, ``.rec`` ...), else by the content
    (``.txt``, no suffix): text is a table, anything else goes to the MRC reader, which reads a
    valid header and names what is not one (an .npy, a zip, "not an MRC file")."""
    from cryoshift.runtime.mrc import content_kind, is_mrc_path

    if path.suffix.lower() in NAMED_TABLE_SUFFIXES:
        return "table"
    if is_mrc_path(path) or not path.is_file():
        return "volume"  # what is missing or not a regular file: the MRC reader says so
    try:
        kind = content_kind(path)
    except OSError as exc:
        raise InputError(path, os_reason(path, exc)) from exc
    return "table" if kind == "text" else "volume"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value) in ("", "nan")


def _as_index(value: Any) -> int:
    try:
        if _missing(value):
            return -1
        return int(value)
    except (TypeError, ValueError):
        return -1


def is_listing(path: Path) -> bool:
    """A table of subtomogram files (rlnImageName / path column) rather than of coordinates."""
    if path.suffix.lower() == ".star":
        from cryoshift.runtime.sources.picktables import star_has

        return star_has(path, "rlnImageName")
    from cryoshift.runtime.tables import csv_header_start

    try:  # the header: the first line that is not blank or a # comment (a note of who picked)
        _, start = csv_header_start(path)
        with open(path, "rb") as fh:
            fh.seek(start)
            header = fh.readline().decode("utf-8", "replace").lstrip("\ufeff")
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc}") from exc
    cols = {c.strip().strip('"').lower() for c in header.replace("\t", ",").split(",")}
    return bool(cols & {"rlnimagename", "path", "image", "image_name"}) and not cols & {"x", "rlncoordinatex"}


def _reads_as_dataset(text: str) -> bool:
    """Whether input ``text`` is planned as a dataset (its folder, or one of its own files),
    whose contrast its dataset.json records: the others are of --contrast (dark by default)."""
    if is_glob(text) or text.startswith("copick:"):
        return False
    path = Path(text)
    return is_dataset_dir(path) or dataset_of(path) is not None


def _refuse_unused_tomograms(planner: Planner, inputs: list[str]) -> None:
    """``--tomograms`` given, but no input is a table of picks (only picks are cropped from
    tomograms): a listing of subtomogram files, a stack or a folder was read as it is and the
    option dropped without a word, so a run meant for picks in those tomograms used other data.
    Not refused when an input failed: it may have been the picks table, and its error was said."""
    if planner.tomograms and not planner.pick_tables and not planner.failed_inputs:
        shown = inputs[0] if len(inputs) == 1 else f"{inputs[0]} (and {len(inputs) - 1} more)"
        raise InputError(
            shown,
            "--tomograms only applies to a table of picks (STAR/CSV coordinates), and no input is one; "
            "drop --tomograms or give the picks table",
        )


def plan_inputs(
    inputs: list[str],
    box_size: int,
    model_voxel_size: float,
    model_contrast: str = "dark",
    contrast: str | None = None,
    tomograms: list[str] | None = None,
    ignore_voxel_size: bool = False,
    cache: VolumeCache | None = None,
    coordinate_pixel_size: float | None = None,
    binning: float | None = None,
    voxel_advice: str = CLASSIFY_VOXEL_ADVICE,
    against: str = CHECKED_AGAINST,
    scale_options: bool | None = None,
    own_output: Path | None = None,
) -> Plan:
    """Enumerate every item of ``inputs`` in a stable order and check them against the model.

    Refuses (PlanRefusal) what can never work: a data contrast that differs from the model's,
    bad options. A bad input (missing, unreadable, another voxel size, a stack of the wrong
    box) or a bad item (a corrupt file among thousands, a pick of an unreadable tomogram, a
    table row that is not numbers) comes back as ``kind == "error"`` items; only when every
    input fails is the first reason raised (InputError). ``voxel_advice`` ends the refusal of
    another voxel size: what the calling command offers (train has no --ignore-voxel-size).
    ``against`` names what box and voxel size the refusals compare with (``"model"``: "the model's
    10 A"; train's target: ``"training run"``). ``scale_options``: whether the calling command
    has ``--binning``/``--coordinate-pixel-size`` for the refusals to offer (default: classify's
    plans, those checked against the model, do; train's target has none; evaluate and export say
    False through labelled_picks.py). ``own_output``: the run's output folder, which a glob input
    leaves out (:func:`paths.expand_input`).
    """
    if contrast is not None and contrast not in CONTRASTS:
        raise InputError(None, f"--contrast must be one of {', '.join(CONTRASTS)}, not {contrast!r}")
    if not inputs:
        raise InputError(None, "no inputs given")
    planner = Planner(
        box_size,
        model_voxel_size,
        contrast,
        model_contrast,
        ignore_voxel_size,
        list(tomograms or []),
        cache or VolumeCache(),
        coordinate_pixel_size,
        binning,
        voxel_advice,
        against,
        against == CHECKED_AGAINST if scale_options is None else scale_options,
        own_output,
    )
    if any(not _reads_as_dataset(t) for t in inputs):
        planner.check_contrast("--contrast", contrast or "dark")
    for text in inputs:
        planner.add(text)
    if len(planner.failed_inputs) == len(inputs):  # nothing at all to classify: say why, once
        first = planner.failed_inputs[0]
        if len(inputs) == 1:
            raise first
        raise InputError(None, f"none of the {len(inputs)} inputs can be classified; the first: {first}")
    _refuse_unused_tomograms(planner, inputs)
    return Plan(
        planner.items,
        list(inputs),
        box_size,
        # every input planned was checked to be of the model's contrast: dataset folders by their
        # dataset.json ("dark", the default of --contrast, was recorded for light datasets)
        model_contrast,
        planner.voxel_sizes,
        planner.notes + planner.closing_notes() + planner.items.ids.notes(),
        planner.origins,
        planner.unknown_voxel,
        planner.voxel_notes + planner.closing_notes(),
        planner.placement,
    )

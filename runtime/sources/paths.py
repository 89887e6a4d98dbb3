"""From what the user typed to files: inputs expanded (globs, folders), and the tomogram names
of pick tables matched to tomogram files by the documented rules (README), never by a guess."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.features import FEATURES_STEM
from cryoshift.runtime.lock import CLASSIFY_LOCK_STEM
from cryoshift.runtime.sources.cache import os_reason
from cryoshift.runtime.sources.items import PlanRefusal
from cryoshift.runtime.summary import ERRORS, MANIFEST, PREDICTIONS, REPORT_HTML, RUN


class Expansion(NamedTuple):
    """An input expanded (:func:`expand_input`): its files, and the output folders of earlier
    cryoshift runs its glob met and left out (for the planner's note)."""

    paths: list[Path]
    results: list[Path]


def expand(text: str, own_output: Path | None = None) -> list[Path]:
    """A path, a directory (its MRC files, sorted) or a glob (sorted matches): the files of
    :func:`expand_input`, without its record of the results folders left out."""
    return expand_input(text, own_output).paths


def expand_input(text: str, own_output: Path | None = None) -> Expansion:
    """A path, a directory (its MRC files, sorted) or a glob (sorted matches), by the rule of
    :func:`is_glob`: text that names an existing file, folder or link is that path.

    A dangling symbolic link with an MRC name in a directory is kept, as a glob keeps it: it
    then fails as an item ("dangling symbolic link ...") instead of vanishing without a word.
    A folder a glob matches is read as a folder input is (:func:`glob_folder_entries`). What
    cryoshift runs wrote, this one's into ``own_output`` too, a glob leaves out
    (:func:`_outside_results`).
    """
    if is_glob(text):
        kept, results = _outside_results(text, _glob_with_folders(text), own_output)
        return Expansion([Path(p) for p in _unique_files(kept)], results)
    path = Path(text)
    if path.is_dir() and not is_dataset_dir(path):
        return Expansion(scan_folder(path).files, [])
    return Expansion([path], [])


def is_glob(text: str) -> bool:
    """Whether an input is read as a glob pattern (what :func:`expand` expands as one): it holds
    ``*``, ``?`` or ``[`` and names no existing file, folder or link.

    Why: a file named ``[ab].mrc`` was always a pattern, so it classified ``a.mrc`` instead (a
    silent wrong answer), or "matched no files" when it was the only file. The rule is the one
    ``simulate --structures`` follows for commas: text that names something is that path. So
    the literal file wins even where the pattern would also match other files (``star*.mrc``
    is that one file when it exists); to mean the pattern then, bracket a plain letter of it
    (``sta[r]*.mrc``), which no file is named."""
    return glob.has_magic(text) and not os.path.lexists(text)


def no_match_reason(text: str) -> str:
    """Why a glob input gave no file, said as the planner refuses it ("matches no files"), with
    the escaped pattern to use where a folder on its way holds glob characters itself.

    Why: ``T[1]/*.mrc`` read the folder ``T[1]`` as the pattern ``T1``, so it matched no files
    although ``T[1]`` is there; ``T[[]1]/*.mrc`` names it (an existing file named whole is read
    as itself: :func:`is_glob`)."""
    escaped = _escape_existing_folders(text)
    if escaped == text:
        return "matches no files"
    return f"matches no files; its folder holds glob characters itself: escape them to name it ({escaped})"


def _escape_existing_folders(pattern: str) -> str:
    """``pattern`` with its longest leading part that names an existing folder escaped
    (``glob.escape``): the literal folder, not a pattern, as :func:`is_glob` reads a whole path."""
    parts = pattern.split(os.sep)
    for end in range(len(parts) - 1, 0, -1):
        head = os.sep.join(parts[:end])
        if head and glob.has_magic(head) and os.path.isdir(head):
            return os.sep.join([glob.escape(head), *parts[end:]])
    return pattern


def _glob_with_folders(pattern: str) -> list[str]:
    """The sorted matches of ``pattern``, the folders among them read as folder inputs are
    (:func:`glob_folder_entries`), or left out where the glob matched their entries itself.

    Why: ``T/**`` matches ``T/`` itself and every folder below it, and ``T/*`` a sub-folder:
    each became an error item ("is a directory"). ``dir/**`` reaches every entry of the folders
    it matches (as glob does: hidden ones aside), so those are left out; any other glob means
    what the shell's expansion of it means on the command line (``classify m T/*`` names each
    sub-folder as an input). A file reached twice is kept once (:func:`_unique_files`). A link
    to a folder is not entered, as ``**`` enters none (:func:`safe_glob`), nor a folder that
    cannot be listed: each fails as an item saying what it is."""
    raw = safe_glob(pattern)
    folders = {str(Path(m)) for m in raw if _plain_folder(m)}
    reached = os.path.basename(pattern) == "**"
    out: list[str] = []
    for match in raw:
        path = Path(match)
        if str(path) not in folders:
            out.append(str(path))
        elif not reached:  # a sub-folder the glob matched too (``**/``) is read as one of its own
            out.extend(e for e in glob_folder_entries(path) if e not in folders)
        elif not os.access(match, os.R_OK | os.X_OK):  # safe_glob's walk passed it over
            out.append(str(path))
    return sorted(dict.fromkeys(out))


def _plain_folder(match: str) -> bool:
    """A glob's match that is a folder, not a link to one (``dir/``, as ``dir/**`` and ``*/``
    give it, is the folder), and no dataset (read only as an input of its own)."""
    try:
        return os.path.isdir(match) and not os.path.islink(match) and not is_dataset_dir(Path(match))
    except OSError:
        return False


def glob_folder_entries(path: Path) -> list[str]:
    """A folder a glob matched, as a folder input reads it: its MRC files, and what fails or is
    noted as an item of a folder input (:class:`FolderScan`: pipes and sub-folders with an MRC
    name, dataset folders). Its other entries (no MRC name) are left out, as a folder input
    leaves them, and it is not entered deeper: ``**`` is the way to say that. A folder that
    cannot be listed stays itself, and fails as an item naming why."""
    try:
        scan = scan_folder(path)
    except InputError:
        return [str(path)]
    return [str(p) for p in scan.files + scan.specials + scan.datasets]


class FolderScan(NamedTuple):
    """A folder's entries by what a folder input makes of them (:func:`scan_folder`), each sorted."""

    # regular files and dangling links with an MRC name (compressed ones too, xz and zstd included,
    # which fail as items: mrc.unread_compressed_name): what expand lists
    files: list[Path]
    datasets: list[Path]  # sub-folders that are datasets (read only as inputs of their own)
    # named pipes, sockets, devices (or links to one) and sub-folders with an MRC name: each fails
    # as an item saying what it is, as when named on its own (a folder ``x.mrc/`` was passed over)
    specials: list[Path]
    unnamed: list[Path]  # pipes, sockets and devices without an MRC name


def scan_folder(path: Path) -> FolderScan:
    """One listing of a folder input: what :func:`expand` reads and what it passes over.

    Why one: the planner needs the sub-folders that are datasets (skipped with a note) and the
    entries that are not regular files (a named pipe under an MRC name fails as an error row, as it
    does named on its own): it listed the folder a second time for them. An entry that cannot be
    looked at is left out here; a folder that cannot be listed is refused (InputError)."""
    from cryoshift.runtime.mrc import is_mrc_path, unread_compressed_name

    try:
        entries = list(os.scandir(path))
    except PermissionError as exc:
        raise InputError(path, os_reason(path, exc)) from exc
    files: list[Path] = []
    datasets: list[Path] = []
    specials: list[Path] = []
    unnamed: list[Path] = []
    for entry in entries:
        p = Path(entry.path)
        # an MRC name under xz or zstd is listed, so that it fails as an item saying "decompress it"
        mrc = is_mrc_path(p) or unread_compressed_name(p)
        if p.is_file() or is_dangling(p):
            if mrc:
                files.append(p)
            continue
        try:
            folder = entry.is_dir()
        except OSError:
            continue
        if folder and not mrc:
            if is_dataset_dir(p):
                datasets.append(p)
            continue  # a folder input is not read deeper (a glob's ``**`` is)
        (specials if mrc else unnamed).append(p)
    return FolderScan(sorted(files), sorted(datasets), sorted(specials), sorted(unnamed))


def safe_glob(pattern: str) -> list[str]:
    """``glob.glob(pattern, recursive=True)`` that never descends into a symbolic link to a
    directory while expanding ``**``.

    Why: Python 3.11's ``**`` follows directory links, so a link to ``.`` listed every file
    ~40 times (until ELOOP) and two such links made the walk exponential: a hang. Each ``**``
    is expanded here with ``os.walk(followlinks=False)`` (hidden folders skipped, as glob
    does); the parts of the pattern between them go to ``glob.glob``, which does not recurse.
    """
    parts = pattern.split(os.sep)
    if "**" not in parts:
        return glob.glob(pattern)
    at = parts.index("**")
    head, tail = os.sep.join(parts[:at]), os.sep.join(parts[at + 1 :])
    if at == 0:
        bases = ["."]
    elif not head:
        bases = [os.sep]  # the pattern starts with /**
    elif glob.has_magic(head):
        bases = glob.glob(head)
    else:
        bases = [head]
    found: list[str] = []
    for base in bases:
        if not os.path.isdir(base):
            continue
        for folder in _folders(base):
            prefix = folder if at else os.path.relpath(folder)  # "**/x": names as glob gives them
            prefix = "" if prefix == "." else prefix
            if parts[at + 1 :] == [""]:  # "dir/**/": the folders only
                found.append(os.path.join(prefix, "") if prefix else "")
                continue
            if not tail:  # "dir/**": the folder (as "dir/") and everything in it
                if folder == base and prefix:
                    found.append(os.path.join(prefix, ""))
                found.extend(glob.glob(os.path.join(glob.escape(prefix), "*")) if prefix else glob.glob("*"))
                continue
            found.extend(safe_glob(os.path.join(glob.escape(prefix), tail) if prefix else tail))
    return [f for f in dict.fromkeys(found) if f]


def _folders(base: str) -> list[str]:
    """``base`` and every folder below it, without entering symbolic links or hidden folders."""
    out = []
    for root, dirs, _files in os.walk(base, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.append(root)
    return out


def _unique_files(paths: list[str]) -> list[str]:
    """``paths`` without a file already reached by another path (links): classified once."""
    seen: set[tuple[int, int]] = set()
    out = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(p)  # dangling or unreadable: kept, it fails as an item naming itself
            continue
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


# The files a classify run writes into its output folder (runtime/summary.output_names, features,
# --split-by-class's predictions_<class>.star, the lock of runtime/run.one_writer, report's page),
# plain and per shard: how a results folder is known, and which of its files a glob leaves out
# where the user may have put data beside them (the glob's own folder, this run's output folder).
_SHARD = r"(?:\.shard-\d+-of-\d+)?"
_RECORD_NAME = re.compile(rf"^(?:{RUN}|{MANIFEST}){_SHARD}\.json$")
_LOCK_NAME = re.compile(rf"^{re.escape(CLASSIFY_LOCK_STEM)}{_SHARD}\.lock$")
_OUTPUT_NAME = re.compile(
    rf"^(?:(?:{PREDICTIONS}|{ERRORS}){_SHARD}\.csv|{PREDICTIONS}{_SHARD}(?:_.+)?\.star|(?:{RUN}|{MANIFEST}){_SHARD}\.json"
    rf"|{FEATURES_STEM}{_SHARD}\.npy|{re.escape(REPORT_HTML)})$",
    re.DOTALL,
)
_RECORD_START = re.compile(rb'^\s*\{\s*"format"\s*:\s*"cryoshift\.')
RESULTS_SHOWN = 3  # results folders named in the note of a glob that left them out


def is_results_dir(path: Path | str) -> bool:
    """A cryoshift classify output folder: it holds the run's lock file, or a ``run.json`` or
    ``manifest.json`` (of a shard too) that starts with a cryoshift ``format``. False where it
    cannot be listed.

    Why the content is read: ``manifest.json`` is a common name, and a data folder that holds
    another tool's must still be read."""
    try:
        with os.scandir(path) as entries:
            return any(_marks_results(entry) for entry in entries)
    except OSError:
        return False


def _marks_results(entry: os.DirEntry[str]) -> bool:
    """Whether one entry of a folder makes it a cryoshift results folder (:func:`is_results_dir`)."""
    if _LOCK_NAME.match(entry.name):
        return True
    if not _RECORD_NAME.match(entry.name):
        return False
    try:
        if not entry.is_file():  # a named pipe under the name would block the read
            return False
        with open(entry.path, "rb") as fh:
            return bool(_RECORD_START.match(fh.read(256)))
    except OSError:
        return False


def _outside_results(
    pattern: str, matches: list[str], own_output: Path | None
) -> tuple[list[str], list[Path]]:
    """A glob's ``matches`` without what cryoshift runs wrote, and the results folders that held
    it (sorted): all of an earlier run's results folder below the glob's own folder
    (:func:`glob_base`); from the glob's own folder, where it is one, and from this run's
    ``own_output`` (said by no note) the files a run writes (:data:`_OUTPUT_NAME`), never data
    the user put beside them. This run's folder is left out by name alone because it is a results
    folder only once the run has written its record: a resumed run would plan otherwise.

    Why: ``D/**`` over a tree holding an earlier run's ``D/res`` read its manifest.json,
    run.json, predictions.csv/.star and errors.csv as pick tables and listings: error rows
    (with ``-o D/res --resume`` added to the run's own errors.csv), and its predictions.star
    planned as a listing; ``D/*`` with ``-o D`` did the same with the files beside the data.
    What else a results folder the glob starts in holds (``D/res/*.mrc``) was named by the
    user, and is read."""
    base = os.path.normpath(glob_base(pattern))
    own = os.path.realpath(own_output) if own_output is not None else None
    verdicts: dict[str, str | None] = {}  # folder -> the results folder it is (each looked at once)
    kept: list[str] = []
    results: dict[Path, None] = {}
    for match in matches:
        folder = _written_by_a_run(os.path.normpath(match), base, own, verdicts)
        if folder is None:
            kept.append(match)
        elif folder != own:
            results[Path(folder)] = None
    return kept, sorted(results)


def _written_by_a_run(match: str, base: str, own: str | None, verdicts: dict[str, str | None]) -> str | None:
    """The results folder (or ``own``, resolved) whose output ``match`` is: an earlier run's that
    holds it at any depth below ``base``, or the folder just above it when ``match`` has a run's
    file name.
    None where it is none. Only folders are looked at, each once (``verdicts``): a glob may
    match millions of files, and a stat of each would double its cost."""
    folders: list[str] = []
    parent = os.path.dirname(match)
    while parent and _below(parent, base):
        folders.append(parent)
        parent = os.path.dirname(parent)
    for folder in reversed(folders):  # the outermost first: a results folder inside one is its
        found = _verdict(folder, own, verdicts)
        if found is not None and found != own:
            return found
    if _OUTPUT_NAME.match(os.path.basename(match)):
        return _verdict(os.path.dirname(match) or os.curdir, own, verdicts)
    return None


def _verdict(folder: str, own: str | None, verdicts: dict[str, str | None]) -> str | None:
    """``own`` where ``folder`` is this run's output folder, ``folder`` where it is another
    run's (:func:`is_results_dir`), else None; looked at once per folder."""
    if folder not in verdicts:
        if own is not None and os.path.realpath(folder) == own:
            verdicts[folder] = own
        else:
            verdicts[folder] = folder if is_results_dir(folder) else None
    return verdicts[folder]


def _below(folder: str, base: str) -> bool:
    """Whether ``folder`` lies strictly below ``base`` (both as a glob names them, normalised)."""
    if base in ("", os.curdir):
        return folder not in ("", os.curdir, os.pardir) and not folder.startswith(os.pardir + os.sep)
    return folder.startswith(base.rstrip(os.sep) + os.sep)


def glob_base(pattern: str) -> str:
    """The folder a glob starts in: its leading parts without glob characters (``D/res`` of
    ``D/res/*.mrc``, ``.`` of ``**/*.mrc``)."""
    parts = pattern.split(os.sep)
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    if fixed == [""]:
        return os.sep
    return os.sep.join(fixed) or os.curdir


def results_note(folders: list[Path]) -> str:
    """The note of what a glob left out of the results folders it met (the planner prefixes the
    input)."""
    shown = ", ".join(str(f) for f in folders[:RESULTS_SHOWN])
    more = len(folders) - RESULTS_SHOWN
    where = f"in {shown}" if len(folders) == 1 else f"in {len(folders)} folders: {shown}"
    tail = f" and {more} more" if more > 0 else ""
    return (
        f"left out what earlier cryoshift runs wrote {where}{tail} (results, not input data); "
        "name a file there to read it"
    )


def is_dataset_dir(path: Path) -> bool:
    """A cryoshift dataset folder (``dataset.json`` inside); False where it cannot be looked into
    (no permission): the input then fails naming the folder, not its ``dataset.json``."""
    try:
        return path.is_dir() and (path / "dataset.json").is_file()
    except OSError:
        return False


def dataset_of(path: Path) -> Path | None:
    """The dataset folder whose own file ``path`` is (its volumes.mrc, particles.csv or
    dataset.json, by the name given or, for a link, by its target), else None.

    Why: ``DIR/volumes.mrc`` named on its own was classified as a bare volume stack, the
    contrast that DIR/dataset.json records unchecked: light data read as dark without a word.
    The planner reads such a file as its dataset (:meth:`Planner.add_dataset`)."""
    from cryoshift.runtime.dataset import META, TABLE, VOLUMES

    for named in (path, Path(os.path.realpath(path))):
        if named.name in (VOLUMES, TABLE, META) and is_dataset_dir(named.parent):
            return named.parent
    return None


def is_dangling(path: Path) -> bool:
    """A symbolic link whose target does not exist."""
    return path.is_symlink() and not path.exists()


# Tomogram names: the decorations below (and only these) are ignored when a pick table's name is
# matched to a tomogram file; everything else must be equal. Documented in the README.
_NAME_SUFFIXES = (".tomostar",)
_PIXEL_SUFFIX = re.compile(r"_\d+(?:\.\d+)?Apx$")  # Warp: TS_01_10.00Apx
_BIN_SUFFIX = re.compile(r"_bin\d+$")  # IMOD/AreTomo binning: TS_01_bin4
_REC_SUFFIX = re.compile(r"_rec$")  # IMOD/etomo 4.10+ reconstructions: TS_01_rec
_REC_PREFIX = "rec_"  # RELION 5 reconstructions: rec_TS_01
# How the messages name those decorations (README, "Tomogram names").
DECORATIONS = "folder, file suffix, a rec_ prefix and _rec/_<pixel>Apx/_bin<N> suffixes"


def strip_suffix(name: str) -> str:
    """A name without folder and MRC suffix (``.mrc``, ``.rec``, ``.mrc.gz`` ...) or ``.tomostar``."""
    from cryoshift.runtime.mrc import mrc_suffix

    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    suffix = mrc_suffix(name) or next((s for s in _NAME_SUFFIXES if name.lower().endswith(s)), "")
    return name[: len(name) - len(suffix)] if suffix else name


def tomogram_key(name: str) -> str:
    """A tomogram name without its documented decorations: folder, MRC suffix or ``.tomostar``,
    the ``rec_`` prefix, IMOD's ``_rec``, Warp's ``_<pixel>Apx`` and a ``_bin<N>`` suffix (in any
    order: ``TS_01_bin4_rec``)."""
    key = strip_suffix(name)
    if key.startswith(_REC_PREFIX) and len(key) > len(_REC_PREFIX):
        key = key[len(_REC_PREFIX) :]
    while True:
        stripped = _REC_SUFFIX.sub("", _BIN_SUFFIX.sub("", _PIXEL_SUFFIX.sub("", key)))
        if stripped == key or not stripped:
            return key
        key = stripped


class TomogramIndex(dict):
    """Tomogram files by name (``dict[str, Path]``), plus what matching must not guess past:
    ``ambiguous`` (a name held by several files: its picks fail naming them all),
    ``unreadable`` (``--tomograms`` folders that could not be listed, with the reason: names
    not found may be in them, so their picks fail saying so) and ``empty`` (``--tomograms``
    globs and folders that gave no file, and tomograms.star files without a row, with why, named
    likewise). ``listed_in`` names the
    ``tomograms.star`` that gave a file its name, for those messages."""

    def __init__(self) -> None:
        super().__init__()
        self.ambiguous: dict[str, list[Path]] = {}
        self.unreadable: list[tuple[str, str]] = []
        # ``--tomograms`` globs and folders that gave no file, and tomograms.star files that list
        # none, with why: said by name when picks find no tomogram ("picks need tomograms: pass
        # them with --tomograms" misled)
        self.empty: list[tuple[str, str]] = []
        self.listed_in: dict[Path, Path] = {}

    def add(self, stem: str, path: Path, listed_in: Path | None = None) -> None:
        """Index ``path`` as ``stem`` (``listed_in``: the tomograms.star row naming it); another
        file of that name makes the name ambiguous, however each was given (an MRC file's stem,
        a tomograms.star rlnTomoName): which one the picks mean would be a guess. The same file
        reached twice is one file."""
        if listed_in is not None:
            self.listed_in.setdefault(path, listed_in)
        if stem in self and not _same_file(self[stem], path):
            known = self.ambiguous.setdefault(stem, [self[stem]])
            if not any(_same_file(k, path) for k in known):
                known.append(path)
            return
        self.setdefault(stem, path)

    def describe(self, path: Path | str) -> str:
        """A file as an error names it: with the tomograms.star that listed it, if one did."""
        star = self.listed_in.get(Path(path))
        return f"{path} (rlnTomoName in {star})" if star is not None else str(path)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (as written, else once links and ``..`` are resolved)."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one is missing: compare the names
        return os.path.realpath(a) == os.path.realpath(b)


def tomogram_index(tomograms: list[str], tables: dict[str, Any] | None = None) -> TomogramIndex:
    """Tomogram files by stem (the name pick tables use); a RELION 5 ``tomograms.star`` adds its
    tomograms by rlnTomoName (their table rows go into ``tables``).

    Two files of one name are not refused here: only the picks that use that name fail (see
    :func:`match_tomogram`), whether the name came from two MRC files, two tomograms.star rows
    or one of each (a STAR row used to replace an MRC of its name without a word). A folder that
    cannot be listed (no permission) is recorded in ``index.unreadable``: picks whose tomogram is
    not found then fail naming it."""
    from cryoshift.runtime.tomograms import is_tomogram_table, read_tomogram_table

    index = TomogramIndex()
    for text in tomograms:
        specials: list[Path] = []
        try:
            if Path(text).is_dir() and not is_dataset_dir(Path(text)):
                paths, _, specials, _ = scan_folder(Path(text))
            else:
                paths = expand(text)
        except InputError as exc:  # a folder that cannot be listed
            index.unreadable.append((text, exc.reason))
            continue
        for special in specials:  # a pipe under a tomogram's name: its picks fail naming what it is
            index.add(strip_suffix(special.name), special)
        if not paths and not specials:
            index.empty.append((text, _empty_reason(text)))
        for path in paths:
            if is_dangling(path) and str(path) != text:
                # In a folder or glob: indexed, so its picks fail naming it (add_picks). Beside a
                # file of its name it makes the name ambiguous, as any second file does: kept out
                # only when it came second, the picks were silently cropped from the other file.
                index.add(strip_suffix(path.name), path)
                continue
            try:
                is_file = path.is_file()
            except PermissionError:  # a folder on the way cannot be entered: its picks fail
                index.add(strip_suffix(path.name), path)  # naming it when it is opened
                continue
            if not is_file:
                reason = "not a file" if path.exists() else os_reason(path, FileNotFoundError())
                raise PlanRefusal(path, f"tomogram given with --tomograms: {reason}")
            if is_tomogram_table(path):
                entries = read_tomogram_table(path)
                if not entries:  # a loop with labels and no rows: its picks must not say "no match" only
                    index.empty.append((str(path), "tomograms.star lists no tomograms"))
                for entry in entries:
                    index.add(entry.name, entry.path, listed_in=path)
                    if tables is not None:
                        tables.setdefault(entry.name, entry)
                continue
            index.add(strip_suffix(path.name), path)
    return index


def match_tomogram(name: str, index: dict[str, Path], picks: Path) -> Path:
    """Pick-table tomogram name -> file: the same name (folder and file suffix aside), else the
    same name once the documented decorations are stripped from both (:func:`tomogram_key`).
    Never a guess: no match, or several, raise :class:`InputError` naming what was found."""
    if not index:
        unreadable = getattr(index, "unreadable", [])
        if unreadable:
            raise InputError(picks, f"no tomogram can be read: {_unreadable_text(unreadable)}")
        empty = getattr(index, "empty", [])
        if empty:
            text, reason = empty[0]
            more = f" (nor do {len(empty) - 1} more --tomograms)" if len(empty) > 1 else ""
            raise PlanRefusal(
                text,
                f"--tomograms {reason}{more}; the picks need their tomograms (MRC files or a tomograms.star)",
            )
        raise PlanRefusal(picks, "picks need tomograms: pass them with --tomograms")
    if not name.strip():  # a row that names no tomogram in a table that names them: never a match
        raise InputError(picks, "empty tomogram name")
    ambiguous: dict[str, list[Path]] = getattr(index, "ambiguous", {})
    describe = getattr(index, "describe", str)
    for exact in (name, strip_suffix(name)):
        if exact in index:
            if exact in ambiguous:
                _refuse_ambiguous(name, [describe(p) for p in ambiguous[exact]], picks)
            return index[exact]
    key = tomogram_key(name)
    found = sorted(
        {str(p) for stem in index if tomogram_key(stem) == key for p in ambiguous.get(stem, [index[stem]])}
    )
    if len(found) == 1:
        return Path(found[0])
    if found:
        _refuse_ambiguous(name, [describe(p) for p in found], picks)
    _refuse_normalisation_twin(name, index, picks)
    names = ", ".join(sorted(index)[:5]) + (" ..." if len(index) > 5 else "")
    unreadable = getattr(index, "unreadable", [])
    maybe = f"; it may be in {_unreadable_text(unreadable)}" if unreadable else ""
    empty = getattr(index, "empty", [])
    if empty:
        maybe += f"; {_empty_text(empty)}"
    raise InputError(
        picks,
        f"no tomogram matches name {name!r} (have: {names}; names must be equal apart from "
        f"{DECORATIONS}){maybe}",
    )


def _refuse_normalisation_twin(name: str, index: dict[str, Path], picks: Path) -> None:
    """Refuse a name that matches a tomogram only once both are Unicode-normalised (a pick ``TS_é``
    spelled e + combining accent, as macOS writes names, against a file ``TS_é.mrc`` with the
    composed é), saying so: "no tomogram matches" showed two names that look identical. Not matched
    silently: a guess at which tomogram is meant is an error."""
    from cryoshift.runtime.terminal import normalisation_difference

    key = tomogram_key(name)
    for stem in sorted(index):
        difference = normalisation_difference(key, tomogram_key(stem))
        if difference:
            raise InputError(
                picks,
                f"no tomogram matches name {name!r}: {getattr(index, 'describe', str)(index[stem])} "
                f"differs only in {difference}; spell the two alike",
            )


def _refuse_ambiguous(name: str, found: list[str], picks: Path) -> None:
    """The picks of a name that several ``--tomograms`` files hold fail, naming the files."""
    shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")
    raise InputError(
        picks,
        f"tomogram name {name!r} is ambiguous: it matches {shown}; give only the one meant with --tomograms",
    )


def _empty_text(empty: list[tuple[str, str]]) -> str:
    """``--tomograms`` globs and folders that hold no tomogram, with why (for a message)."""
    return "; ".join(f"--tomograms {text}: {reason}" for text, reason in empty[:3]) + (
        " ..." if len(empty) > 3 else ""
    )


def _empty_reason(text: str) -> str:
    """Why a ``--tomograms`` glob or folder gave no file (:func:`expand` gave nothing), as the
    planner says it of inputs."""
    path = Path(text)
    try:
        if path.is_dir():
            return no_mrc_files_reason(text) if any(path.iterdir()) else "folder is empty"
    except OSError:
        pass
    return f"glob {no_match_reason(text)}"


NESTED_LOOK = 10_000  # entries of a folder's sub-folders looked at for an MRC file, at most


def no_mrc_files_reason(text: str) -> str:
    """Why a folder that is not empty gave no input: it holds no MRC files; where its sub-folders
    hold some, saying so with the recursive glob that reads them (quoted for the shell).

    Why: a folder of sub-folders (``files/user01/session1/*.mrc``) was refused with "folder holds
    no MRC files" alone, which reads as if the data were missing. Folders are read one level deep
    on purpose (a results folder or a dataset beside the data is not read by accident); the walk
    stops at the first MRC file or after :data:`NESTED_LOOK` entries."""
    import shlex

    from cryoshift.runtime.mrc import mrc_suffix

    seen = 0
    for folder, dirs, files in os.walk(text):
        dirs.sort()
        if os.path.normpath(folder) != os.path.normpath(text):
            for name in sorted(files):
                suffix = mrc_suffix(name)
                if suffix:
                    found = os.path.join(folder, name)
                    pattern = shlex.quote(f"{text.rstrip(os.sep) or os.sep}{os.sep}**{os.sep}*{suffix}")
                    return (
                        f"folder holds no MRC files, but its sub-folders do (e.g. {found}); folders "
                        f"are read one level deep: give {pattern} (quoted) to read every sub-folder"
                    )
        seen += len(dirs) + len(files)
        if seen > NESTED_LOOK:
            break
    return "folder holds no MRC files"


def _unreadable_text(unreadable: list[tuple[str, str]]) -> str:
    """``--tomograms`` folders that could not be listed, with why (for a pick's error row)."""
    return "; ".join(f"{text} ({reason})" for text, reason in unreadable[:3]) + (
        " ..." if len(unreadable) > 3 else ""
    )

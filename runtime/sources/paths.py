"""From what the user typed to files: inputs expanded (globs, folders), and the tomogram names
of pick tables matched to tomogram files by the documented rules (README), never by a guess."""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.sources.cache import os_reason
from cryoshift.runtime.sources.items import PlanRefusal


def expand(text: str) -> list[Path]:
    """A path, a directory (its MRC files, sorted) or a glob (sorted matches).

    A dangling symbolic link with an MRC name in a directory is kept, as a glob keeps it: it
    then fails as an item ("dangling symbolic link ...") instead of vanishing without a word.
    """
    if any(ch in text for ch in "*?["):
        return [Path(p) for p in sorted(glob.glob(text, recursive=True))]
    path = Path(text)
    if path.is_dir() and not (path / "dataset.json").is_file():
        from cryoshift.runtime.mrc import is_mrc_path

        return sorted(p for p in path.iterdir() if is_mrc_path(p) and (p.is_file() or is_dangling(p)))
    return [path]


def is_dangling(path: Path) -> bool:
    """A symbolic link whose target does not exist."""
    return path.is_symlink() and not path.exists()


# Tomogram names: the decorations below (and only these) are ignored when a pick table's name is
# matched to a tomogram file; everything else must be equal. Documented in the README.
_NAME_SUFFIXES = (".tomostar",)
_PIXEL_SUFFIX = re.compile(r"_\d+(?:\.\d+)?Apx$")  # Warp: TS_01_10.00Apx
_BIN_SUFFIX = re.compile(r"_bin\d+$")  # IMOD/AreTomo binning: TS_01_bin4
_REC_PREFIX = "rec_"  # IMOD reconstructions: rec_TS_01


def strip_suffix(name: str) -> str:
    """A name without folder and MRC suffix (``.mrc``, ``.rec``, ``.mrc.gz`` ...) or ``.tomostar``."""
    from cryoshift.runtime.mrc import mrc_suffix

    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    suffix = mrc_suffix(name) or next((s for s in _NAME_SUFFIXES if name.lower().endswith(s)), "")
    return name[: len(name) - len(suffix)] if suffix else name


def tomogram_key(name: str) -> str:
    """A tomogram name without its documented decorations: folder, MRC suffix or ``.tomostar``,
    the ``rec_`` prefix, Warp's ``_<pixel>Apx`` and a ``_bin<N>`` suffix."""
    key = strip_suffix(name)
    if key.startswith(_REC_PREFIX) and len(key) > len(_REC_PREFIX):
        key = key[len(_REC_PREFIX) :]
    while True:
        stripped = _BIN_SUFFIX.sub("", _PIXEL_SUFFIX.sub("", key))
        if stripped == key or not stripped:
            return key
        key = stripped


def tomogram_index(tomograms: list[str], tables: dict[str, Any] | None = None) -> dict[str, Path]:
    """Tomogram files by stem (the name pick tables use); a RELION 5 ``tomograms.star`` adds its
    tomograms by rlnTomoName (their table rows go into ``tables``)."""
    from cryoshift.runtime.tomograms import is_tomogram_table, read_tomogram_table

    index: dict[str, Path] = {}
    for text in tomograms:
        for path in expand(text):
            if is_dangling(path) and str(path) != text:
                # In a folder or glob: indexed, so its picks fail naming it (add_picks).
                index.setdefault(strip_suffix(path.name), path)
                continue
            if not path.is_file():
                reason = "not a file" if path.exists() else os_reason(path, FileNotFoundError())
                raise PlanRefusal(path, f"tomogram given with --tomograms: {reason}")
            if is_tomogram_table(path):
                for entry in read_tomogram_table(path):
                    index[entry.name] = entry.path
                    if tables is not None:
                        tables[entry.name] = entry
                continue
            stem = strip_suffix(path.name)
            if stem in index and index[stem] != path:
                raise PlanRefusal(
                    path, f"two tomograms are named {stem!r}: {index[stem]} and {path}; give only one of them"
                )
            index[stem] = path
    return index


def match_tomogram(name: str, index: dict[str, Path], picks: Path) -> Path:
    """Pick-table tomogram name -> file: the same name (folder and file suffix aside), else the
    same name once the documented decorations are stripped from both (:func:`tomogram_key`).
    Never a guess: no match, or several, raise :class:`InputError` naming what was found."""
    if not index:
        raise PlanRefusal(picks, "picks need tomograms: pass them with --tomograms")
    for exact in (name, strip_suffix(name)):
        if exact in index:
            return index[exact]
    key = tomogram_key(name)
    found = sorted({str(p) for stem, p in index.items() if tomogram_key(stem) == key})
    if len(found) == 1:
        return Path(found[0])
    if found:
        shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")
        raise InputError(
            picks,
            f"tomogram name {name!r} is ambiguous: it matches {shown}; "
            "give only the one meant with --tomograms",
        )
    names = ", ".join(sorted(index)[:5]) + (" ..." if len(index) > 5 else "")
    raise InputError(
        picks,
        f"no tomogram matches name {name!r} (have: {names}; names must be equal apart "
        "from folder, file suffix, a rec_ prefix and _<pixel>Apx/_bin<N> suffixes)",
    )

"""The plan's vocabulary: one :class:`Item` per subtomogram, the :class:`Plan` of a run, the
ids that trace an item back to its input, and the deterministic shards of a plan."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cryoshift.runtime.errors import InputError
from cryoshift.runtime.ledger import escape_text

# What the data's box and voxel size are checked against, as the refusals name it (plan_inputs,
# load_item): the model's, for classify, evaluate and export; train checks its target against the
# training run's (the source's), as no model exists yet.
CHECKED_AGAINST = "model"


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
    # Files whose header has no usable voxel size: the manifest records null for them, never
    # the reader's 1.0 stand-in (kept out of ``voxel_sizes``, whose values are all real sizes).
    unknown_voxel: list[str] = field(default_factory=list)
    # Those of ``notes`` about ``unknown_voxel`` (classify's wording; train says it its own way).
    voxel_notes: list[str] = field(default_factory=list)
    # Per tomogram MRC of the picks: (A per voxel, (X, Y, Z) voxels RELION's centred coordinates
    # count from), as planning placed the picks; predictions.star writes centred Angstrom by it
    # (runtime/star_out.py), so a pick is written where it was read.
    placement: dict[str, tuple[float, tuple[float, float, float]]] = field(default_factory=dict)

    def shard(self, index: int, count: int) -> Plan:
        """Deterministic partition: every ``count``-th item from position ``index``.

        Position in the planned order (sorted within globs and directories) is stable across
        runs, so SLURM array tasks and resumed runs always agree on who owns what.
        """
        if count < 1 or not 0 <= index < count:
            raise InputError(None, f"shard {index}/{count} is invalid: need 0 <= i < n")
        return Plan(
            self.items[index::count],
            self.inputs,
            self.box_size,
            self.contrast,
            self.voxel_sizes,
            self.notes,
            self.origins,
            self.unknown_voxel,
            self.voxel_notes,
            self.placement,
        )


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


def volume_identity(path: str) -> Any:
    """What a file is, however its path is written: (device, inode), so links, ``./``, ``..`` and
    absolute spellings agree; the real path where it cannot be stat'ed (missing: an error row
    later) or the file system has no inode numbers."""
    try:
        st = os.stat(path)
    except ValueError:  # a NUL in the name: no file has it
        return os.path.abspath(path)
    except OSError:
        st = None
    if st is not None and st.st_ino:
        return st.st_dev, st.st_ino
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return os.path.abspath(path)


def item_identity(item: Item) -> Any:
    """What ``item`` is, whatever its id says: a pick (a tomogram name and coordinates, copick's
    plain items too) by its id, as the same point picked twice is one particle; anything else by
    its file and slice (an error row of a file too), so two spellings of one volume are one item
    and two volumes under one id text are two."""
    if item.tomo:
        return "pick", item.id
    return volume_identity(item.path), item.index


def described(item: Item) -> str:
    """``item`` in words for a note: ``slice 3 of v.mrc``, ``the file a.mrc`` (saying so when its
    name is not UTF-8, as the escaped text alone cannot tell it from a name with a backslash)."""
    shown = escape_text(item.path)
    what = f"slice {item.index + 1} of {shown}" if item.index >= 0 else f"the file {shown}"
    if item.tomo:
        what = f"the pick {escape_text(item.id)}"
    return what + (" (a name that is not UTF-8, its bytes shown as \\xNN)" if shown != item.path else "")


class UniqueIds:
    """The ids of planned items, made unique: an item whose id (as written: escape_text) another
    item already holds gets the first free ``~2``, ``~3`` ... suffix, as repeated picks do
    (pickrows.PickSource.ids); a repeat of the same item (:func:`item_identity`) keeps its id,
    for :func:`~cryoshift.runtime.run.distinct` to drop.

    Why: a file named ``000003@v.mrc`` beside the stack ``v.mrc`` had the id of the stack's third
    slice, and a file named ``c\\xff.mrc`` the written id of ``c<byte ff>.mrc``; dropping repeats
    by id then dropped a real volume under a note that an input was given twice. Planning is
    deterministic, so every shard and every resume hands out the same suffixes."""

    def __init__(self) -> None:
        self._owners: dict[str, Item] = {}  # written id -> the item holding it
        self.renamed: list[tuple[Item, Item]] = []  # (item whose id was taken, the item holding it)

    def admit(self, item: Item) -> Item:
        """``item`` under an id no other item holds (itself, or with a suffix)."""
        ident = item.id
        written = ident if ident.isascii() else escape_text(ident)  # escape_text's own fast path, inlined
        owner = self._owners.setdefault(written, item)  # one look-up for a new id
        return item if owner is item else self._collide(item)

    def _collide(self, item: Item) -> Item:
        """``item``, whose id another item holds: that id for a repeat of its holder, else under
        the first ``~n`` that is free or held by the same item (a repeat of one given ``~n``)."""
        ident, n = item.id, 1
        while True:
            candidate = item if n == 1 else item._replace(id=ident)
            owner = self._owners.setdefault(escape_text(ident), candidate)
            if owner is candidate:  # free: held by this item from now on
                self.renamed.append((candidate, self._owners[escape_text(item.id)]))
                return candidate
            if owner == candidate or item_identity(owner) == item_identity(item):
                return candidate  # a repeat of the item holding the id: dropped by run.distinct
            n += 1
            ident = f"{item.id}~{n}"

    def forget(self, item: Item) -> None:
        """Free the id of ``item``, undone by the planner (its input failed as a whole)."""
        written = escape_text(item.id)
        if self._owners.get(written) is item:
            del self._owners[written]
            self.renamed = [pair for pair in self.renamed if pair[0] is not item]

    def notes(self, shown: int = 3) -> list[str]:
        """One note on the items that were given a suffix (the first ``shown`` named)."""
        if not self.renamed:
            return []
        named = "; ".join(
            f"{described(item)} has the id of {described(holder)} and is written as {escape_text(item.id)}"
            for item, holder in self.renamed[:shown]
        )
        more, n = len(self.renamed) - shown, len(self.renamed)
        return [
            f"{n} item{'s' if n != 1 else ''} would share an id with another item: {named}"
            + (f"; and {more} more (each with a ~N suffix)" if more > 0 else "")
        ]

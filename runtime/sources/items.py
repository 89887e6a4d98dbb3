"""The plan's vocabulary: one :class:`Item` per subtomogram, the :class:`Plan` of a run, the
ids that trace an item back to its input, and the deterministic shards of a plan."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cryoshift.runtime.errors import InputError

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

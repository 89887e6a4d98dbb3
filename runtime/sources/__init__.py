"""What to classify: turn the user's inputs into a flat, deterministic list of items.

Inputs mix freely in one run: single-volume MRC files, globs and directories of them, MRC
volume stacks, STAR listings of per-particle MRCs (``rlnImageName``), pick tables (STAR or
CSV) matched by name to memory-mapped tomograms, and cryoshift dataset directories. Each
item carries an id that traces back to its origin (``path``, RELION's ``000003@path`` for
a 1-based stack slice, or ``tomogram:x,y,z``), so results, the resume ledger and the errors
table all speak the same language. Planning never reads voxel data; readers load one item
into a preallocated batch row. A bad input becomes an item with an error attached, so it
flows through the same pipeline and ends up in the errors table exactly once.

One job per module:

=================  ==========================================================================
``items.py``       :class:`Item`, :class:`Plan` (and its shards), ids, ``--shard i/n``
``cache.py``       :class:`VolumeCache` of memory-mapped files, file-system errors in words
``paths.py``       inputs expanded (globs, folders); pick-table tomogram names matched to files
``planner.py``     :func:`plan_inputs`: every input checked against the model, in a fixed order
``picktables.py``  pick tables: coordinates to reconstruction voxels, rows kept as arrays
``load.py``        :func:`load_item`: one item's voxels into a batch row, or the reason it fails
=================  ==========================================================================

Example::

    plan = plan_inputs(["picks.star"], 32, 10.0, tomograms=["tomos/"], cache=(cache := VolumeCache()))
    out = np.empty((32, 32, 32), np.float32)
    load_item(plan.items[0], out, cache)
"""

from __future__ import annotations

from cryoshift.runtime.sources.cache import VolumeCache, open_mrc, os_reason
from cryoshift.runtime.sources.items import Item, Plan, PlanRefusal, parse_shard, stack_id
from cryoshift.runtime.sources.load import VALUE_LIMIT, load_item
from cryoshift.runtime.sources.paths import tomogram_key
from cryoshift.runtime.sources.planner import plan_inputs

__all__ = [
    "VALUE_LIMIT",
    "Item",
    "Plan",
    "PlanRefusal",
    "VolumeCache",
    "load_item",
    "open_mrc",
    "os_reason",
    "parse_shard",
    "plan_inputs",
    "stack_id",
    "tomogram_key",
]

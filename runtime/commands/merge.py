"""``cryoshift merge``: join the outputs of ``classify --shard i/n`` runs, each id exactly once."""

from __future__ import annotations

from pathlib import Path

import typer

from cryoshift.runtime.commands._options import echo_summary

NAME = "merge"
NO_ARGS_IS_HELP = True


def command(
    folders: list[Path] = typer.Argument(
        ...,
        metavar="FOLDER",
        help="Folders holding predictions.shard-i-of-n.csv files (the -o of the shard runs; one or several).",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Where the merged files go (default: the first folder)."
    ),
    allow_missing: bool = typer.Option(
        False, "--allow-missing", help="Merge even if some of the n shards are missing."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No summary; notes and the error count still go to stderr."
    ),
) -> None:
    """Join --shard outputs into predictions.csv/.star, errors.csv and manifest.json.

    Every id appears exactly once. Shards of another model or other inputs (a picks table
    re-sorted between the tasks), a missing shard, a damaged shard table (a cut-off row, fewer
    rows than its manifest says), or results in the output folder that did not come from these
    shards are refused in one line naming the file.

    Example: cryoshift merge results   (after cryoshift classify ... -o results --shard $I/$N)
    """
    from cryoshift.runtime.merge import merge_shards

    summary = merge_shards(list(folders), out, allow_missing=allow_missing)
    echo_summary(summary, quiet)

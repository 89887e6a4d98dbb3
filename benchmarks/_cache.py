"""Settings-keyed caches of the benchmarks' ``--work`` folders (accuracy.py, domain_shift.py).

Beside each cached item (a target's data, a simulated split, a trained run; inside a job record)
lie the settings that made it. Items were reused by name alone, so a `cpu` table silently held
`smoke` models, and an edited method default or plugin version re-printed the old numbers. An item
is reused only under the settings that made it; under others it is refused in one line naming what
differs. An item made before settings were recorded is reused with a note (remaking the caches of
finished benchmarks would cost hours). These helpers lived in accuracy.py, which domain_shift.py
imported for them; both scripts now share this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

SETTINGS_SUFFIX = ".settings.json"

# User files up to this size are keyed by their content (sha256); larger ones (tomograms) by size
# and modification time, so that a benchmark run does not read gigabytes only to key its cache.
HASHED_BYTES = 64 * 2**20


def plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so a fresh and a stored one compare."""
    return json.loads(json.dumps(value, default=str))


def settings_file(item: Path) -> Path:
    """Where the settings of the cached directory ``item`` are kept: next to it, not inside it (the
    trainer owns a run directory, and a killed one is removed whole)."""
    return item.with_name(item.name + SETTINGS_SUFFIX)


def read_settings(item: Path) -> dict[str, Any] | None:
    """The stored settings of ``item``; None when it was made before settings were recorded."""
    path = settings_file(item)
    return json.loads(path.read_text()) if path.is_file() else None


def write_settings(item: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` for ``item`` (atomically: shards read each other's)."""
    path = settings_file(item)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(plain(settings), indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flat(sub, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def settings_differ(cached: dict[str, Any], now: dict[str, Any], limit: int = 4) -> str:
    """'key: cached -> now' for the first ``limit`` settings that differ; '' when none does."""
    old, new = _flat(plain(cached)), _flat(plain(now))
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k, "(none)") != new.get(k, "(none)")]
    shown = [f"{k} {old.get(k, '(none)')!r} -> {new.get(k, '(none)')!r}" for k in keys[:limit]]
    return "; ".join(shown) + (f"; and {len(keys) - limit} more" if len(keys) > limit else "")


def check_cached(item: Path, settings: dict[str, Any], cached: dict[str, Any] | None) -> None:
    """Refuse, in one line, to reuse ``item`` when ``cached`` (the settings it was made with) differ
    from ``settings`` (what this run would make). An item from before settings were recorded
    (``cached`` None) is reused with a one-line note: it cannot be checked, and remaking the caches of
    finished benchmarks would cost hours; delete it to have it remade."""
    if cached is None:
        print(
            f"note: {item} was made before cached items recorded their settings: reused unchecked "
            "(delete it to remake it)",
            file=sys.stderr,
            flush=True,
        )
        return
    diff = settings_differ(cached, settings)
    if diff:
        raise SystemExit(
            f"{item} was made with other settings ({diff}): give this run its own --work, "
            f"or delete {item} (and its {SETTINGS_SUFFIX}) to remake it"
        )


def reuse_or_record(item: Path, settings: dict[str, Any], made: bool) -> bool:
    """The check of a cached directory ``item`` that holds a finished result when ``made``: reuse it
    if made with ``settings`` (:func:`check_cached` refuses it otherwise), else record ``settings``
    for the item about to be made. True when it is to be reused."""
    if made:
        check_cached(item, settings, read_settings(item))
        return True
    write_settings(item, settings)
    return False


def content_digest(path: Path) -> str:
    """One sha256 over a user's input file, or every file of a folder: names, sizes and contents
    (size and modification time alone above :data:`HASHED_BYTES`). Keyed by name alone, another
    dataset of the same name reused the split made from the first."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        name = file.relative_to(path).as_posix() if path.is_dir() else file.name
        digest.update(f"{name}\0{stat.st_size}\0".encode())
        if stat.st_size > HASHED_BYTES:
            digest.update(f"{stat.st_mtime_ns}\0".encode())
            continue
        with file.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(2**20), b""):
                digest.update(block)
    return digest.hexdigest()


def method_settings(method: str, method_kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a registered method trains with: its merged hyper-parameters (its defaults, which an
    edit or an upgrade changes, under the given ones) and where it comes from (a plugin's
    distribution and version; None for a built-in)."""
    from cryoshift.training.adapt import METHODS

    defaults = getattr(METHODS.get(method), "defaults", dict)()
    return {
        "method": method,
        "method_hparams": {**defaults, **method_kwargs},
        "method_origin": METHODS.origin(method),
    }

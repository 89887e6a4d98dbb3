"""A small registry by name, for backbones and adaptation methods, open to installed plugins.

A duplicate name raises (two modules silently overwriting each other is a bug) unless it is the
same definition run again (a re-run notebook cell) or ``register(name, replace=True)``, and an
unknown name lists the valid ones with the closest match.

Plugins come from another installed distribution's entry points (``enable_plugins(group)``), e.g.
``[project.entry-points."cryoshift.methods"] mymethod = "mypkg.mymethod:MyMethod"``. Why entry
points: a method registered by a user script exists in that process only, so ``cryoshift train
--resume``, ``evaluate`` and ``export`` of its run, each a new process, could not find it; an
installed distribution's entry points are seen by every process. Nothing else is ever imported
(no environment variable, no module named in a run folder: config.json is data, never code).

The group is read on the first lookup (``names``, ``get``, ``in``), not at import: a command
that never looks a name up imports no plugin. A plugin that cannot be used (it fails to import,
its object is not what the registry holds, its name is invalid or another plugin's too) never
stops the others: asking for its name raises one line naming the plugin, its distribution and the
problem, and any other lookup says it once as a ``cryoshift: warning:`` line on stderr. A plugin
named like a built-in is ignored (a built-in name always means the built-in), said the same way.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import re
import sys
from collections.abc import Callable
from importlib.metadata import Distribution, EntryPoint
from typing import Any, Generic, NoReturn, TypeVar

T = TypeVar("T")

# Names end up in file names (run folders, benchmark records) and on command lines.
VALID_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# Why a loaded plugin object does not fit the registry (None: it fits), given its entry's name.
PluginCheck = Callable[[str, Any], "str | None"]


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters (a plugin's import error may be
    a whole traceback's worth of text)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _distribution(entry: EntryPoint) -> str:
    """'distribution NAME VERSION' of an entry point (its package as pip knows it)."""
    dist = getattr(entry, "dist", None)
    if dist is None:
        return "an unknown distribution"
    return f"distribution {_named(dist)}"


def _named(dist: Distribution) -> str:
    """'NAME VERSION' of a distribution, '?' for what its METADATA lacks (never a KeyError)."""
    return f"{dist.metadata.get('Name') or '?'} {dist.metadata.get('Version') or '?'}"


def _qualified(obj: object) -> str:
    """``module.QualName`` of a registered class or function (what an error names)."""
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}.{getattr(obj, '__qualname__', None) or type(obj).__qualname__}"


def _same_definition(held: object, new: object) -> bool:
    """Whether ``new`` is ``held`` defined again: the same object, or the same qualified name
    from the same module (a re-run notebook cell or re-imported script defines a new class object
    each time; a different module or name is another definition, never replaced silently)."""
    if held is new:
        return True
    qualname = getattr(new, "__qualname__", None)
    return (
        qualname is not None
        and "<locals>" not in qualname
        and qualname == getattr(held, "__qualname__", None)
        and getattr(new, "__module__", None) == getattr(held, "__module__", None)
    )


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self.group: str | None = None  # entry-point group of plugins (enable_plugins)
        self._check: PluginCheck | None = None
        self._builtin: frozenset[str] = frozenset()
        self._loaded = False
        self._origins: dict[str, str] = {}  # plugin entry name -> its distribution, as said
        self._provided: dict[str, dict[str, str]] = {}  # plugin entry name -> distribution, version
        self._broken: dict[str, str] = {}  # plugin name that cannot be used -> why (one line)
        self._others: list[str] = []  # problems of no usable name (a plugin shadowed by a built-in)
        self._said: set[str] = set()  # problems already said (warned, raised or listed)

    def register(
        self, name: str | None = None, *, replace: bool = False
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or factory under ``name`` (default: its ``__name__``).

        A name already taken by another object raises ``ValueError``: two modules silently
        overwriting each other is a bug. Two cases replace the entry instead:

        - the same object, or one of the same qualified name from the same module: a notebook cell
          or script section run again (the class is a new object each time it is defined), so
          editing and re-running the cell that defines a method or backbone just works;
        - ``replace=True``: the caller means to swap the entry (e.g. a built-in for a variant).

        A replaced plugin entry no longer records its plugin's distribution (``origin``)."""

        def decorate(fn: Callable[..., T]) -> Callable[..., T]:
            key = name or fn.__name__
            held = self._entries.get(key)
            if held is not None and not replace and not _same_definition(held, fn):
                raise ValueError(
                    f"{self.kind} {key!r} is already registered by {_qualified(held)}; pass "
                    f"register({key!r}, replace=True) to replace it with {_qualified(fn)}"
                )
            if held is not None and held is not fn:
                self._origins.pop(key, None)
                self._provided.pop(key, None)
            self._entries[key] = fn
            return fn

        return decorate

    def enable_plugins(self, group: str, check: PluginCheck | None = None) -> None:
        """Also take the entries of entry-point group ``group`` (read on the first lookup).

        The names registered so far are the built-ins: a plugin of the same name is ignored.
        ``check(name, obj)`` says why a plugin's loaded object does not fit (None: it does)."""
        self.group = group
        self._check = check
        self._builtin = frozenset(self._entries)
        self._loaded = False

    # -- lookups -----------------------------------------------------------------------------
    def names(self, pattern: str = "*") -> list[str]:
        self._load()
        self._warn()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def get(self, name: str) -> Callable[..., T]:
        self._load()
        if name in self._broken:
            self._warn(skip=name)
            self._said.add(self._broken[name])
            raise ValueError(self._broken[name])
        self._warn()
        try:
            return self._entries[name]
        except KeyError:
            hint = f" Did you mean {self._closest(name)!r}?" if self._closest(name) else ""
            where = (
                f" (a {self.kind} of another package is found once its distribution, with a "
                f"{self.group!r} entry point, is installed)"
                if self.group
                else ""
            )
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}{where}.{hint}"
            ) from None

    def _closest(self, name: str) -> str | None:
        """The registered name closest to ``name``, case ignored: ``DANN`` matched nothing while
        ``Selftrain`` found ``selftrain`` (difflib compares characters, and every one differed)."""
        lowered = {entry.lower(): entry for entry in self._entries}
        close = difflib.get_close_matches(name.lower(), lowered, n=1)
        return lowered[close[0]] if close else None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build ``name``; keyword arguments that are None keep the entry's default."""
        return self.get(name)(**{k: v for k, v in kwargs.items() if v is not None})

    def __contains__(self, name: object) -> bool:
        self._load()
        self._warn()
        return name in self._entries

    def origin(self, name: str) -> str | None:
        """'distribution NAME VERSION' for an entry a plugin added; None for the others."""
        self._load()
        return self._origins.get(name)

    def provenance(self, name: str) -> dict[str, str] | None:
        """``{"distribution": NAME, "version": VERSION}`` of the plugin that added ``name`` (None:
        a built-in, or unknown): what a run records (versions.json), so that two runs of a method
        whose plugin changed between them can be told apart."""
        self._load()
        found = self._provided.get(name)
        return dict(found) if found is not None else None

    def problems(self) -> list[str]:
        """Every plugin that cannot be used or is ignored, one line each: for a listing, which says
        them itself (no warning repeats them afterwards)."""
        self._load()
        found = [*self._broken.values(), *self._others]
        self._said.update(found)
        return found

    # -- plugins -----------------------------------------------------------------------------
    def _warn(self, skip: str | None = None) -> None:
        """Say each plugin problem not yet said, once per process (``skip``: the name being refused)."""
        problems = [why for name, why in self._broken.items() if name != skip] + self._others
        for why in problems:
            if why not in self._said:
                self._said.add(why)
                print(f"cryoshift: warning: {why}", file=sys.stderr)

    def _load(self) -> None:
        if self._loaded or self.group is None:
            return
        self._loaded = True  # first: a plugin that looks names up while importing sees those so far
        by_name: dict[str, list[EntryPoint]] = {}
        for entry in self._group_entries():
            by_name.setdefault(entry.name, []).append(entry)
        for name, entries in sorted(by_name.items()):
            if len(entries) > 1:
                both = " and ".join(f"{_distribution(e)} ({e.value})" for e in entries)
                self._broken[name] = (
                    f"{self.kind} {name!r} cannot be used: plugins of {both} both declare it in "
                    f"{self.group!r}; uninstall one"
                )
                continue
            self._load_one(name, entries[0])

    def _group_entries(self) -> list[EntryPoint]:
        """The entry points of ``self.group``, one distribution at a time (the first of a name on
        the path, as ``importlib.metadata.entry_points`` takes it). Not that function itself: one
        malformed entry_points.txt anywhere made it raise, so no plugin and no built-in worked; here
        a distribution whose file names the group but cannot be read is one problem among others."""
        assert self.group is not None
        from importlib.metadata import distributions

        found: list[EntryPoint] = []
        seen: set[str] = set()
        for dist in distributions():
            key = re.sub(r"[-_.]+", "-", dist.metadata.get("Name") or "?").lower()
            if key in seen:
                continue
            seen.add(key)
            text = dist.read_text("entry_points.txt")
            if not text or f"[{self.group}]" not in text:
                continue
            try:
                found += dist.entry_points.select(group=self.group)
            except Exception as exc:  # a malformed file: said, and the other plugins still load
                self._others.append(
                    f"the {self.group!r} entry points of distribution {_named(dist)} cannot be read "
                    f"({_one_line(exc)}); its {self.kind}s are not available"
                )
        return found

    def _load_one(self, name: str, entry: EntryPoint) -> None:
        """Register plugin ``entry`` under ``name``, or record why it cannot be."""
        label = f"plugin {self.kind} {name!r} ({_distribution(entry)}, entry point {entry.value})"
        if name in self._builtin:
            self._others.append(
                f"{label} is ignored: {name!r} is a built-in {self.kind}; rename the entry point"
            )
            return
        if not VALID_NAME.fullmatch(name):
            self._refuse(name, entry, "has an invalid name: use letters, digits, '.', '_' and '-'")
            return
        before = dict(self._entries)
        try:
            obj = entry.load()
        except Exception as exc:  # any error of third-party code: said as one line, never fatal
            self._entries = before  # names its module registered before failing
            self._refuse(name, entry, f"fails to import ({_one_line(exc)})")
            return
        held = self._entries.get(name)
        if held is not None and held is not obj:
            self._entries = before
            if name in before:  # registered by this process before the plugins were read
                who = getattr(held, "__module__", "?")
                self._others.append(f"{label} is ignored: {name!r} is already registered by {who}")
            else:
                self._refuse(name, entry, f"registers another object as {name!r} than its entry point's")
            return
        problem = self._check(name, obj) if self._check is not None else None
        if problem:
            self._entries = before
            self._refuse(name, entry, problem)
            return
        self._entries[name] = obj  # also when its import registered it (the same object)
        dist = getattr(entry, "dist", None)
        provided = {
            "distribution": (dist.metadata.get("Name") if dist is not None else None) or "?",
            "version": (dist.metadata.get("Version") if dist is not None else None) or "?",
        }
        for added in (set(self._entries) - set(before)) | {name}:
            self._origins[added] = _distribution(entry)
            self._provided[added] = provided

    def _refuse(self, name: str, entry: EntryPoint, problem: str) -> None:
        self._broken[name] = (
            f"{self.kind} {name!r} cannot be used: its plugin ({_distribution(entry)}, entry point "
            f"{entry.value}) {problem}"
        )


class OneLineParser(argparse.ArgumentParser):
    """The parser of the registries' listings (``python -m cryoshift.training.backbones``,
    ``... .adapt``): a bad option prints one ``cryoshift: error:`` line (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split()).removeprefix("argument ")
        self.exit(2, f"cryoshift: error: {text} (see {self.prog} --help)\n")

"""One lazy registry type for every kind of plug-in part: tasks, operators, families, datasets, sections.

A `Registry` maps names to objects. Built-in entries are written as "module:attribute" strings and imported
on first use (so `survey --help` stays fast); modules listed in `modules` register entries when imported
(tasks do so with a class decorator). Anyone else, a study's plugin included, adds an entry with
`registry.register(name)` as a decorator, or `registry.add(name, obj)`. A name already taken is refused
with one line naming the kind, the name and where it was registered; an unknown name gets the choices.
"""

from __future__ import annotations

import inspect
from importlib import import_module
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_MISSING = object()


class RegistryError(ValueError):
    """A name registered twice, or asked for but not registered (one line)."""


def _origin(obj: Any) -> str:
    """Where `obj` was defined: 'file.py' or the module name ('' when unknown)."""
    try:
        return inspect.getsourcefile(obj) or getattr(obj, "__module__", "") or ""
    except TypeError:
        return getattr(obj, "__module__", "") or ""


class Registry(Mapping):
    """name -> object of one kind (e.g. "physics kind" -> builder), filled lazily.

    kind: what the names are, for messages ("perturbation family"); builtins: name -> "module:attribute",
    imported when asked for; modules: modules imported before the registry answers (entries they register).
    """

    def __init__(self, kind: str, builtins: dict[str, str] | None = None, *, modules: Iterable[str] = (),
                 sort: bool = True):
        self.kind = kind
        self._builtin: dict[str, str] = dict(builtins or {})
        self._modules: list[str] = list(modules)
        self._loaded: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._sort = sort
        self._importing = False

    # -- filling ------------------------------------------------------------------------------------
    def add(self, name: str, obj: T, *, origin: str | None = None) -> T:
        """Register `obj` as `name`; RegistryError if the name is taken by something else."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind}: a name must be a non-empty string, got {name!r}")
        taken = self._loaded.get(name)
        if name in self._builtin and name not in self._loaded:
            raise RegistryError(f"{self.kind} {name!r} is already registered (built in: {self._builtin[name]})")
        if taken is not None and taken is not obj:
            where = self._origins.get(name) or "another module"
            raise RegistryError(f"{self.kind} {name!r} is already registered by {where}")
        self._loaded[name] = obj
        self._origins[name] = origin if origin is not None else _origin(obj)
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`: `@registry.register("my-name")`."""
        def decorate(obj: T) -> T:
            return self.add(name, obj)

        return decorate

    def add_module(self, module: str) -> None:
        """Import `module` (now and whenever the registry is loaded) for the entries it registers."""
        if module not in self._modules:
            self._modules.append(module)
        self._import_modules()

    def _import_modules(self) -> None:
        if self._importing:
            return
        self._importing = True
        try:
            for module in list(self._modules):
                import_module(module)
        finally:
            self._importing = False

    # -- asking -------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._import_modules()
        names = list(dict.fromkeys([*self._builtin, *self._loaded]))
        return sorted(names) if self._sort else names

    def __contains__(self, name: object) -> bool:
        self._import_modules()
        return name in self._builtin or name in self._loaded

    def get(self, name: str, default: Any = _MISSING) -> T:
        """The object registered as `name` (importing a built-in one on first use); `default` (when given)
        for an unknown name, else RegistryError listing the known names."""
        self._import_modules()
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._builtin:
            if default is not _MISSING:
                return default
            raise RegistryError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        module, attribute = self._builtin[name].split(":")
        obj = getattr(import_module(module), attribute)
        self._loaded[name] = obj
        self._origins[name] = module
        return obj

    def peek(self, name: str) -> T | None:
        """The entry registered as `name` if it is already loaded, without importing anything."""
        return self._loaded.get(name)

    def __getitem__(self, name: str) -> T:
        try:
            return self.get(name)
        except RegistryError:
            raise KeyError(name) from None

    def __setitem__(self, name: str, obj: T) -> None:
        self.add(name, obj)

    def __delitem__(self, name: str) -> None:
        self.remove(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def origin(self, name: str) -> str:
        """Where `name` was registered (a file or a module)."""
        self.get(name)
        return self._origins.get(name, "")

    def builtin(self, name: str) -> bool:
        """Whether `name` ships with the package (as opposed to a plugin's or a test's)."""
        return name in self._builtin

    def remove(self, name: str) -> None:
        """Forget a registered (non-built-in) entry; for tests that register throw-away entries."""
        if name in self._builtin:
            raise RegistryError(f"{self.kind} {name!r} is built in and cannot be removed")
        self._loaded.pop(name, None)
        self._origins.pop(name, None)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._builtin) + len(self._loaded)} entries)"


__all__ = ["Registry", "RegistryError"]

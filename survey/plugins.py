"""A study's plugins: its own tasks, perturbation families, operators and report sections, without package edits.

A study file names them at the top level, `plugins = ["my_task.py", "my_family.py", "mylab.operators"]`:
a path (ending in .py, relative to the study file) or an importable module name. Each is imported once per
process, on the driver before the study is validated and on every worker before its first unit, with the
study file's folder on the import path (so a plugin, or a network factory, can import its sibling modules).
Inside, the package's own registries take the new parts:

    @survey.tasks.register("my-check")             a Task class (tasks/base.py)
    @survey.perturb.register("my-family")          a builder returning a Family
    @survey.physics.register("my-operator")        a builder returning a LinearPhysics
    survey.analysis.sections.register(MySection(table="my_table", ...))   the report section of its table

A file that does not exist, fails to import, or registers a name already taken raises `PluginError`, one line
naming the file (or module) and what went wrong; the CLI turns it into exit 2 before any work starts.
On a cluster of several machines a plugin file must be reachable at the same path on every machine.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterable

#: Resolved plugin (absolute file path or module name) -> its module, per process.
_LOADED: dict[str, ModuleType] = {}


class PluginError(ValueError):
    """A plugin that cannot be used: one line naming the file or module and the problem."""


def add_to_path(folder: str | Path | None) -> None:
    """Put `folder` (a study file's folder) on this process's import path, once."""
    if folder:
        text = str(Path(folder).resolve())
        if text not in sys.path:
            sys.path.insert(0, text)


def resolve(entry: str, base_dir: str | Path) -> str:
    """An entry as written in the study -> an absolute .py path, or the module name; PluginError if a file
    is missing."""
    if not isinstance(entry, str) or not entry.strip():
        raise PluginError(f"plugin {entry!r}: must be a file path ending in .py or a module name")
    if entry.endswith(".py") or "/" in entry or "\\" in entry:
        path = (Path(base_dir) / entry).resolve()
        if not path.is_file():
            raise PluginError(f"plugin {entry!r}: file {path} not found")
        return str(path)
    return entry


def _import(resolved: str) -> ModuleType:
    if resolved.endswith(".py"):
        path = Path(resolved)
        name = f"survey_plugin_{path.stem}_{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module
    return importlib.import_module(resolved)


def load(entries: Iterable[str], base_dir: str | Path | None = None) -> list[str]:
    """Import every plugin (once per process) with `base_dir` on the import path; the resolved entries.

    PluginError naming the plugin when a file is missing, its import raises (a name already registered
    included: the registries refuse it), or a module is not found."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    add_to_path(base)
    resolved_all = []
    for entry in entries:
        resolved = resolve(entry, base)
        resolved_all.append(resolved)
        if resolved in _LOADED:
            continue
        if resolved.endswith(".py"):
            add_to_path(Path(resolved).parent)
        try:
            _LOADED[resolved] = _import(resolved)
        except ModuleNotFoundError as err:
            if err.name == resolved:
                raise PluginError(f"plugin {entry!r}: no module named {resolved!r} (a file needs the .py ending)") \
                    from None
            raise PluginError(f"plugin {entry!r} ({resolved}): import failed: {err}") from None
        except Exception as err:  # noqa: BLE001 - the plugin's own code: say what it raised, on one line
            said = " ".join(str(err).split()) or type(err).__name__
            raise PluginError(f"plugin {entry!r} ({resolved}): import failed: {type(err).__name__}: {said}") \
                from None
    return resolved_all


def loaded() -> list[str]:
    """The plugins imported in this process (resolved), in import order."""
    return list(_LOADED)


__all__ = ["PluginError", "add_to_path", "load", "loaded", "resolve"]

"""One report section per store table, found through a registry (see analysis/report.py).

`SECTIONS` maps a table to its `Section` (survey.analysis.sections.base): title, method text, parameter
columns, default definitions of bad outcomes, and hooks for figures and worst cases. The built-in ones live
in `survey.analysis.sections.<table>` as `SECTION`, imported on first use; a plugin adds its own with
`register(MySection(...))` (its `table` is the key). Any other table the task registry or the store names
gets `generic.GenericSection`. Shared parts of the report: base (blocks, formatting, estimates), study
(provenance, truths, device, criteria), closing.
"""

from __future__ import annotations

from typing import Any

from survey.registry import Registry

#: table -> Section; built-in sections as "module:SECTION", imported lazily.
SECTIONS: Registry = Registry("report section", {
    table: f"survey.analysis.sections.{table}:SECTION"
    for table in ("attacks", "ball", "detectors", "insertions", "rare", "severity", "spectrum", "sweeps")
})


def register(section: Any) -> Any:
    """Register a `Section` instance as the section of its `table` (a plugin's own table); returns it."""
    from survey.analysis.sections.base import Section

    if not isinstance(section, Section) or not getattr(section, "table", ""):
        raise TypeError(f"register: {section!r} is not a Section with a table")
    return SECTIONS.add(section.table, section)


def registered(table: str) -> Any:
    """The section registered for `table`, or None."""
    return SECTIONS.get(table, None)


__all__ = ["SECTIONS", "register", "registered"]

"""The report document: numbered tables and figures (`Doc`) and the plain blocks the template renders.

Blocks are plain dicts rendered by templates/report.html.j2 (kind "p", "h3", "list", "table", "figure");
`Doc` numbers tables and figures in reading order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from survey.analysis.sections.text import format_number

MAX_WORST = 6       # networks shown in worst-case figures
#: A table cell longer than this (characters) is folded: its start shown, the whole value one click away (and
#: printed in full in the PDF).
LONG_CELL = 90
#: How tables name the interval methods of `survey.analysis.estimate`.
METHOD_NAMES = {"cluster-exact": "cluster-exact", "clopper-pearson": "Clopper–Pearson", "wilson": "Wilson",
                "bootstrap": "image bootstrap"}


class Doc:
    """Collects sections, numbering tables and figures in reading order."""

    def __init__(self, out: Path, *, store: Path | str = "", svg: bool = False):
        self.out = out
        self.sections: list[dict[str, Any]] = []
        self.tables = 0
        self.figures = 0
        self.data: dict[str, Any] = {"store": str(store)}
        self.svg = svg

    def section(self, anchor: str, title: str) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        self.sections.append({"anchor": anchor, "title": title, "number": len(self.sections) + 1,
                              "blocks": blocks})
        return blocks

    def table(self, caption: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
              note: str | None = None, commands: Sequence[str] = (), status_column: int | None = None,
              numeric: Sequence[int] = (), wrap: bool = False, fold: str | None = None) -> dict[str, Any]:
        """A numbered table block. Cells: strings, numbers (formatted) or `cell(...)` dicts; strings longer than
        LONG_CELL are folded. fold: the whole table goes in a closed <details> with this summary (open in print)."""
        self.tables += 1
        cells = [[fold_cell(c) if isinstance(c, (str, dict)) else format_number(c) for c in row] for row in rows]
        return {"kind": "table", "number": self.tables, "caption": caption, "columns": list(columns),
                "rows": cells, "note": note, "commands": list(commands), "status_column": status_column,
                "numeric": list(numeric), "wrap": wrap, "fold": fold}

    def figure(self, paths: Sequence[Path], caption: str) -> dict[str, Any]:
        self.figures += 1
        png = Path(paths[0])
        return {"kind": "figure", "number": self.figures, "caption": caption,
                "src": png.relative_to(self.out).as_posix(),
                "svg": next((Path(p).relative_to(self.out).as_posix() for p in paths[1:]), None)}

    def figure_path(self, name: str) -> Path:
        return self.out / "figures" / name


def cell(text: str, *, title: str | None = None, full: str | None = None,
         more: str | None = None) -> dict[str, str | None]:
    """A table cell shown as `text`: with `title` (a tooltip, e.g. the unabbreviated value), `full` (a folded
    <details> under `text` holding the whole value) or `more` (lines after `text`, folded behind "+n"); folded
    parts are printed open in the PDF."""
    return {"text": text, "title": title, "full": full, "more": more}


def fold_cell(value: str | dict) -> str | dict:
    """A string cell longer than LONG_CELL as a folded cell (its first words, then the whole value)."""
    if isinstance(value, dict) or len(value) <= LONG_CELL:
        return value
    head = value[:LONG_CELL - 30].rsplit(" ", 1)[0] if " " in value[:LONG_CELL - 30] else value[:LONG_CELL - 30]
    return cell(head + " …", full=value)


def parameter_text(value) -> str:
    """A parameter value in a few characters: lists as [a, b, …], tables as {k=v, …}, numbers as the report prints."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={parameter_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(parameter_text(v) for v in value) + "]"
    if isinstance(value, str):
        return value
    return format_number(value)


def parameters_cell(params: dict) -> dict | str:
    """A task's parameters as one folded cell: "7 parameters: iterations=200, lam=0.01 …" over one line per
    parameter (key = value); '–' when there are none."""
    if not params:
        return "–"
    items = [f"{k} = {parameter_text(v)}" for k, v in sorted(params.items())]
    head = ", ".join(items[:3]).replace(" = ", "=")
    head = head if len(head) <= 60 else head[:57].rsplit(",", 1)[0]
    return cell(f"{len(items)} parameter{'s' if len(items) != 1 else ''}: {head}"
                + (" …" if len(items) > 3 or len(head) < len(", ".join(items[:3])) else ""),
                full="\n".join(items))


def p(text: str, cls: str | None = None) -> dict[str, Any]:
    return {"kind": "p", "text": text, "cls": cls}


def h3(text: str) -> dict[str, Any]:
    return {"kind": "h3", "text": text}


def not_run(table: str) -> dict[str, Any]:
    return p(f"Not run: the store holds no '{table}' table.", "not-run")

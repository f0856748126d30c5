"""The report document: numbered tables and figures (`Doc`) and the plain blocks the template renders.

Blocks are plain dicts rendered by templates/report.html.j2 (kind "p", "h3", "list", "table", "figure");
`Doc` numbers tables and figures in reading order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from survey.analysis.sections.text import format_number

MAX_WORST = 6       # networks shown in worst-case figures
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
              numeric: Sequence[int] = (), wrap: bool = False) -> dict[str, Any]:
        self.tables += 1
        cells = [[c if isinstance(c, str) else format_number(c) for c in row] for row in rows]
        return {"kind": "table", "number": self.tables, "caption": caption, "columns": list(columns),
                "rows": cells, "note": note, "commands": list(commands), "status_column": status_column,
                "numeric": list(numeric), "wrap": wrap}

    def figure(self, paths: Sequence[Path], caption: str) -> dict[str, Any]:
        self.figures += 1
        png = Path(paths[0])
        return {"kind": "figure", "number": self.figures, "caption": caption,
                "src": png.relative_to(self.out).as_posix(),
                "svg": next((Path(p).relative_to(self.out).as_posix() for p in paths[1:]), None)}

    def figure_path(self, name: str) -> Path:
        return self.out / "figures" / name


def p(text: str, cls: str | None = None) -> dict[str, Any]:
    return {"kind": "p", "text": text, "cls": cls}


def h3(text: str) -> dict[str, Any]:
    return {"kind": "h3", "text": text}


def not_run(table: str) -> dict[str, Any]:
    return p(f"Not run: the store holds no '{table}' table.", "not-run")

"""`survey report`: write the self-contained HTML evidence report of a store and print its path."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Annotated, Optional

import typer

from survey.cli.common import EXIT_FAILED, StoreOption, command, error, fail, progress_bar, store_path


@command
def report(
    study: Annotated[Optional[Path], typer.Option("--study", help="Study file (TOML): intended use, tasks and "
                                                               "acceptance criteria (default: the study recorded "
                                                               "in the store's runs table).")] = None,
    store: StoreOption = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Report folder (default: "
                                                           "reports/<study name>/).")] = None,
    pdf: Annotated[bool, typer.Option("--pdf", help="Also print it to report.pdf beside index.html (A4, page "
                                                    "numbers, contents) with headless Chromium.")] = False,
) -> Path:
    """Write the evidence report (index.html + figures/) for the store; prints the path of index.html (and of
    report.pdf with --pdf).

    Example: survey report --study tasks/quick.toml --store results --out reports/quick --pdf
    """
    from survey.analysis.report import build_report
    from survey.spec import load_study

    browser = None
    if pdf:
        from survey.analysis.pdf import find_browser

        browser = find_browser()
        if browser is None:
            fail("--pdf: no Chromium on PATH (chromium, chromium-browser, google-chrome); install it "
                 "(apt-get install chromium) or leave out --pdf")

    import warnings

    with warnings.catch_warnings():   # what a task says about its settings, `survey run` said; the report shows it
        warnings.simplefilter("ignore", UserWarning)
        spec = load_study(study) if study is not None else None
    store = store_path(store, spec)
    if not store.is_dir():
        fail(f"store {str(store)!r}: no such directory (run a study first, or pass --store)")
    if out is None:
        out = Path("reports") / (spec.name if spec is not None else _recorded_name(store))
    with progress_bar("report") as update:
        index = build_report(store, out, spec, on_progress=update)
    for line in verdict_lines(index):
        typer.echo(line)
    typer.echo(str(index))
    if pdf:
        from survey.analysis.pdf import write_pdf

        try:
            typer.echo(str(write_pdf(index, browser=browser)))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            error(f"--pdf: the report is written but not printed: {exc}")
            raise typer.Exit(EXIT_FAILED) from None
    return index


def verdict_lines(index: Path) -> list[str]:
    """One line per acceptance criterion as the report's summary judged it (PASS, FAIL, INCONCLUSIVE with the
    number of images that would decide it, NOT RUN ...), read back from the report's embedded data."""
    import json
    import re

    found = re.search(r'id="report-data">(.*?)</script>', index.read_text(encoding="utf-8"), re.S)
    data = json.loads(found.group(1)) if found else {}
    lines = []
    for c in data.get("criteria", []):
        groups = c.get("groups") or []
        undecided = [g for g in groups if g.get("verdict") == "INCONCLUSIVE"]
        needs = [g["decide_clusters"] for g in undecided if g.get("decide_clusters") is not None]
        unit = (undecided[0].get("unit") if undecided else None) or "image"
        extra = (f" ({len(undecided)} of {len(groups)} groups undecided; up to {max(needs):,} {unit}s each would "
                 f"decide them at the observed rates)" if needs else
                 f" ({len(undecided)} of {len(groups)} groups undecided)" if undecided else "")
        lines.append(f"{c.get('status', '?').upper():>12}  {c.get('name')}{extra}")
    return lines


def _recorded_name(store: Path) -> str:
    """The newest run's study name in the store, else the store folder's name."""
    from survey.analysis.db import query

    try:
        frame = query(store, "SELECT study FROM runs ORDER BY started_at DESC LIMIT 1")
    except ValueError:
        return store.resolve().name
    return str(frame["study"].iloc[0]) if len(frame) else store.resolve().name

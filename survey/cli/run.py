"""`survey run`, `survey status` and `survey forget`: run a study into the store, see how far it got,
retract units so that they run again."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from survey.cli.common import EXIT_FAILED, StoreOption, command, fail, one_line, store_path


#: Seconds between plain progress lines when the output is not a terminal.
PLAIN_EVERY_S = 30.0


def run_and_print(study: Path, store: Path | None = None, address: str | None = None):
    """Run STUDY with a progress bar and print its summary; returns the `RunSummary`."""
    import time

    from survey.engine.scheduler import run_study
    from survey.spec import load_study

    import warnings

    with warnings.catch_warnings(record=True) as heard:   # said once, as notes, after the run (or by preflight)
        warnings.simplefilter("always")
        spec = load_study(study)
    console = Console()
    t0 = time.perf_counter()
    progress = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                        MofNCompleteColumn(),
                        TextColumn("{task.fields[rows]} rows, {task.fields[rate]} rows/s, {task.fields[failed]} failed, "
                                   "ETA {task.fields[eta]}"),
                        TimeElapsedColumn(), console=console, transient=False)
    bars: dict[str, int] = {}
    last: dict = {}
    plain = not console.is_terminal   # a pipe or a log file: plain lines instead of bars that show only at the end
    said = {"at": -float("inf"), "done": -1}

    def on_progress(p: dict) -> None:   # the bars appear with the first unit, never before a pre-run error
        from survey.engine.progress import eta_text

        if plain:   # the first report, then at most one line per PLAIN_EVERY_S, and the last
            now, done = time.perf_counter(), p["done"] + p["failed"]
            if done != said["done"] and (now - said["at"] >= PLAIN_EVERY_S or done >= p["total"]):
                console.print(f"{spec.name} progress: {done}/{p['total']} units, {p['rows']} rows, {p['failed']} "
                              f"failed, ETA {eta_text(p.get('eta_s'))}", markup=False, highlight=False,
                              soft_wrap=True)
                said.update(at=now, done=done)
            last.update(p)
            return
        if not bars:
            progress.start()
            bars[""] = progress.add_task(spec.name, total=p["total"], rows=0, rate="-", failed=0, eta="-")
            for name in p.get("networks", {}) if len(p.get("networks", {})) > 1 else ():
                bars[name] = progress.add_task(f"  {name}", total=1, rows=0, rate="-", failed=0, eta="-")
        rate = p["rows"] / max(time.perf_counter() - t0, 1e-9)
        progress.update(bars[""], completed=p["done"], total=p["total"], rows=p["rows"], rate=f"{rate:.0f}",
                        failed=p["failed"], eta=eta_text(p.get("eta_s")))
        for name, n in p.get("networks", {}).items():
            if name in bars:
                progress.update(bars[name], completed=n["done"] + n["failed"], total=n["total"], rows=n["rows"],
                                rate=f"{n['rows_per_s']:.0f}", failed=n["failed"], eta=eta_text(n["eta_s"]))
        last.update(p)

    def on_note(note: str) -> None:
        console.print(note, markup=False, highlight=False, style="yellow", soft_wrap=True)

    try:
        summary = run_study(spec, store_dir=store, address=address, on_progress=on_progress, on_note=on_note)
    finally:
        if bars:
            progress.stop()
    for message in dict.fromkeys(one_line(w.message) for w in heard):
        if not any(message in note for note in summary.notes):
            console.print(f"note: {message}", markup=False, highlight=False, style="yellow", soft_wrap=True)
    console.print(f"{spec.name}: {summary.done} units done, {summary.skipped} already in the store, "
                  f"{summary.failed} failed, {summary.rows} rows in {summary.seconds:.1f} s -> {summary.store}",
                  markup=False, highlight=False, soft_wrap=True)
    from survey.engine.progress import network_line
    from survey.engine.scheduler import unreached_message

    for name, p in last.get("networks", {}).items():   # per network: units, rows/s, measured seconds per unit
        console.print(network_line(name, p), markup=False, highlight=False, soft_wrap=True)

    if summary.unreached:
        console.print(unreached_message(summary.unreached), markup=False, highlight=False, style="yellow",
                      soft_wrap=True)
    for line in summary.skips:
        console.print(f"skipped: {line}", markup=False, highlight=False, style="yellow", soft_wrap=True)
    for unit_id, message in summary.failures[:10]:
        console.print(f"failed {unit_id}: {message}", markup=False, highlight=False, style="red", soft_wrap=True)
    if len(summary.failures) > 10:
        console.print(f"... and {len(summary.failures) - 10} more failed units (survey query \"SELECT unit_id, error "
                      "FROM ledger WHERE status = 'failed'\")", markup=False, highlight=False, style="red",
                      soft_wrap=True)
    return summary


@command
def run(
    study: Path = typer.Argument(..., help="Study file (TOML), e.g. tasks/quick.toml."),
    store: StoreOption = None,
    address: str = typer.Option(None, "--address", help="Ray cluster to join (default: RAY_ADDRESS, else an "
                                                        "embedded local cluster on loopback)."),
) -> None:
    """Run every unit of STUDY not yet in the store; rerunning resumes where it stopped.

    Exits 0 when every unit finished, 1 when some failed (rerun to retry them), 2 on a bad study or
    network (nothing runs), 130 when interrupted (finished units are kept).

    Example: survey run tasks/quick.toml --store results
    """
    summary = run_and_print(study, store, address)
    if summary.failed:
        raise typer.Exit(EXIT_FAILED)


@command
def status(
    study: Path = typer.Argument(..., help="Study file (TOML)."),
    store: StoreOption = None,
) -> None:
    """Done / pending / failed units per network and task.

    Example: survey status tasks/quick.toml --store results
    """
    from survey.engine.progress import study_status
    from survey.spec import load_study

    spec = load_study(study)
    root = store_path(store, spec)
    table = Table("network", "task", "done", "pending", "failed", title=f"{spec.name} in {root}")
    for row in study_status(spec, root):
        table.add_row(row["network"], row["task"], str(row["done"]), str(row["pending"]), str(row["failed"]))
    Console().print(table)


@command
def forget(
    study: Path = typer.Argument(..., help="Study file (TOML)."),
    network: list[str] = typer.Option(None, "--network", help="Only units of this network (repeat for more)."),
    task: list[str] = typer.Option(None, "--task", help="Only units of this task (repeat for more)."),
    dataset: list[str] = typer.Option(None, "--dataset", help="Only units of this dataset (repeat for more)."),
    reason: str = typer.Option(..., "--reason", help="Why they are retracted; recorded in the ledger."),
    yes: bool = typer.Option(False, "--yes", help="Forget them; without it, only say what would be forgotten."),
    store: StoreOption = None,
) -> None:
    """Retract finished units (their rows and tensors) so that the next `survey run` redoes them, e.g. after
    a fix to a task. Needs at least one of --network, --task, --dataset.

    Example: survey forget tasks/quick.toml --task ball --reason "ball criterion fixed" --yes
    """
    from survey.spec import load_study
    from survey.store import Store

    if not (network or task or dataset):
        fail("survey forget: name the units with --network, --task and/or --dataset")
    spec = load_study(study)
    root = store_path(store, spec)
    if not root.is_dir():
        fail(f"store {str(root)!r}: no such directory")
    chosen = [e for e in Store(root).latest_entries().values()
              if e["status"] == "ok" and (not network or e.get("network") in network)
              and (not task or e.get("task") in task) and (not dataset or e.get("dataset") in dataset)]
    rows = sum(int(e.get("rows") or 0) for e in chosen)
    if not yes:
        typer.echo(f"{len(chosen)} finished units ({rows} rows) match; pass --yes to forget them")
        return
    writer = Store.open(root)
    try:
        count = writer.forget([e["unit_id"] for e in chosen], reason)
    finally:
        writer.close()
    typer.echo(f"forgot {count} units ({rows} rows) in {root}; `survey run {study}` redoes them")

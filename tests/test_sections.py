"""Report sections: found through the task registry; a table without a module of its own gets the generic
section (title, parameters as recorded, counts, the criteria's estimates); bootstrap settings printed as used."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from html import unescape

import typer
from typer.testing import CliRunner

from survey.analysis.estimate import estimate
from survey.analysis.report import build_report, report_sections, section_for
from survey.analysis.sections.base import Section
from survey.analysis.sections.generic import GenericSection
from survey.store import Store
from survey.tasks import TASKS
from tests.stand_ins import StudyStandIn as _Study

try:
    from survey.tasks import Column
except ImportError:  # before tasks declared their columns
    from typing import NamedTuple

    class Column(NamedTuple):
        meaning: str
        unit: str = ""


@dataclasses.dataclass(kw_only=True)
class ProbeTask:
    """A made-up test writing the 'probes' table: is the output off by more than `level`?"""

    level: float = 0.1
    table = "probes"
    title = "Probe test"
    task_name = "probe"
    columns = {"level": Column("threshold on the output error", ""),
               "error": Column("1 when the output is off by more than level", "")}




def _probe_store(root):
    store = Store.open(root)
    try:
        entries = []
        for network, bad_every in (("net-a", 2), ("net-b", 5)):
            rows = [{"unit_id": f"{network}-{u}", "network": network, "dataset": "toy", "task": "probe",
                     "image_id": f"toy/{u}", "level": 0.1, "draw": d, "error": float((u + d) % bad_every == 0)}
                    for u in range(6) for d in range(4)]
            fragment = store.write_rows("probes", network, rows)
            entries += [{"unit_id": f"{network}-{u}", "status": "ok", "network": network, "dataset": "toy",
                         "task": "probe", "rows": 4, "seconds": 0.1, "error": None, "attempts": 1, "run_id": "r",
                         "finished_at": 1.0, "fragments": [fragment]} for u in range(6)]
        store.record_units(entries)
    finally:
        store.close()
    return root


def test_the_paper_tables_have_their_own_sections_found_through_the_registry():
    sections = report_sections({}, [])
    by_table = {s.table: s for s in sections}
    for table in ("attacks", "ball", "insertions", "sweeps"):
        section = by_table[table]
        assert type(section) is not GenericSection and isinstance(section, Section)
        assert section.definitions and section.method and section.tasks
    assert "attack" in section_for("attacks", [TASKS["attack"]]).tasks
    assert isinstance(section_for("probes", [ProbeTask]), GenericSection)


def test_a_table_without_a_section_gets_the_generic_one(tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS, "probe", ProbeTask)
    store = _probe_store(tmp_path / "store")
    criterion = {"name": "Probe error is rare", "table": "probes", "bad": "error > 0", "by": ["network"],
                 "per": "image", "max_upper": 0.9, "confidence": 0.9}
    study = _Study({"name": "probe-study", "tasks": [{"name": "probe", "params": {}}], "criteria": [criterion]})
    html = build_report(store, tmp_path / "out", study, n_boot=300, seed=7).read_text()
    assert "Probe test" in html                        # title from the task class
    assert "A made-up test writing the" in html        # method text from its docstring
    cells = re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)
    assert "level" in html and "net-a" in cells and "toy" in cells
    assert "1 when the output is off by more than level" in cells   # the declared columns
    # estimates of the criterion naming the table, as `estimate` gives them with the bootstrap used
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    found = data["estimates"]["criterion:Probe error is rare"]
    expected = estimate(store, "probes", "error > 0", by=["network"], per="image", confidence=0.9,
                        n_boot=300, seed=7)
    assert found["network"] == json.loads(json.dumps(expected, default=str))
    assert "90% interval (primary)" in html and "Image bootstrap: 300 resamples, seed 7" in html
    assert "Clopper–Pearson" in cells   # per-image counting: one row per image, the exact binomial is primary
    assert "2000 resamples" not in html
    from survey.cli.analyze import estimate as estimate_command

    app = typer.Typer()
    app.command()(estimate_command)
    command = found["commands"]["network"]
    assert "--bootstrap 300 --seed 7" in command and command in {unescape(c) for c in
                                                                  re.findall(r'<pre class="command">(.*?)</pre>',
                                                                             html, re.S)}
    result = CliRunner().invoke(app, [*shlex.split(command)[2:], "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == found["network"]
    assert "probes: 48 rows" in html


def test_generic_parameters_fall_back_to_columns_constant_per_unit(tmp_path):
    """A table no registered task writes (a study folder's own task, not loaded): constant columns per unit."""
    store = _probe_store(tmp_path / "store")
    html = build_report(store, tmp_path / "out").read_text()
    head = re.search(r"Parameters of the &#39;probes&#39; rows.*?</tr>", html, re.S).group(0)
    assert "level" in head and "draw" not in head and "error" not in head


def test_the_matched_budget_table_says_whether_each_search_levelled_off():
    """Levelled off = the median over budget rows of gain_at_50 / gain_at_100, per group and side: 1 for a
    search that had converged, below 1 for one still climbing (its gain a lower bound)."""
    from types import SimpleNamespace

    import duckdb
    import pandas as pd

    from survey.analysis.sections.attacks import AttacksSection

    rows = pd.DataFrame({"network": ["n"] * 6, "budget": [0.02] * 6, "search": ["budget"] * 5 + ["paper"],
                         "attacked": ["network", "network", "reference", "reference", "H", "network"],
                         "gain_at_50": [2.0, 3.0, 1.8, 2.7, 1.0, 1.0], "gain_at_100": [2.0, 3.0, 2.0, 3.0, 1.0, 9.0]})
    con = duckdb.connect()
    con.register("attacks", rows)
    ctx = SimpleNamespace(con=con, columns=lambda table: set(rows.columns), live=lambda: "TRUE")
    levelled = AttacksSection._levelled(ctx, ["network", "budget"])
    assert levelled == {("n", 0.02, "network"): 1.0, ("n", 0.02, "reference"): 0.9, ("n", 0.02, "H"): 1.0}

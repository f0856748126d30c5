"""`survey schema`: the declared meaning and unit of every column, with the stored types when a store is given."""

from __future__ import annotations

from typer.testing import CliRunner

from survey.cli import app
from survey.store import Store

runner = CliRunner()


def _invoke(*args, cwd=None):
    return runner.invoke(app, ["schema", *args], env={"COLUMNS": "240"})


def test_schema_lists_the_tables_and_their_titles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # no ./results here
    result = _invoke()
    assert result.exit_code == 0, result.output
    assert "attacks" in result.output and "Worst-case attack" in result.output and "runs" in result.output


def test_schema_of_attacks_without_a_store_is_the_declaration(tmp_path, monkeypatch):
    from survey.tasks import table_columns

    monkeypatch.chdir(tmp_path)
    result = _invoke("attacks")
    assert result.exit_code == 0, result.output
    declared = table_columns("attacks")
    for name in ("network", "tau", "run_id"):
        assert name in result.output
    assert declared["tau"].unit in result.output and declared["tau"].meaning[:30] in result.output
    assert "type" not in result.output.splitlines()[2]


def test_schema_of_attacks_with_a_store_shows_stored_types_and_undeclared_columns(tmp_path):
    from survey.analysis.db import table_schema

    store = Store.open(tmp_path / "results")
    store.write_rows("attacks", "mine", [{"network": "mine", "tau": 0.001, "my_extra": 3}])
    store.close()
    rows = {r["column"]: r for r in table_schema("attacks", tmp_path / "results")}
    assert rows["tau"]["type"] == "DOUBLE" and rows["tau"]["declared"]
    assert rows["network"]["type"] == "VARCHAR"
    assert rows["my_extra"]["type"] == "BIGINT" and not rows["my_extra"]["declared"]
    assert rows["eta"]["type"] is None   # declared, not in this store
    result = _invoke("attacks", "--store", str(tmp_path / "results"))
    assert result.exit_code == 0, result.output
    assert "my_extra" in result.output and "not declared by any task" in result.output
    assert "DOUBLE" in result.output and "(not stored)" in result.output


def test_schema_of_an_unknown_table_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke("nope")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: unknown table 'nope'") and "attacks" in result.stderr

"""survey.analysis.db: views over the store, read-only sandbox, bound parameters; `survey query` via CliRunner."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from survey.analysis.db import QueryError, connect, query, tables
from survey.cli import analyze


def _write(root: Path, table: str, network: str | None, columns: dict) -> Path:
    folder = root / table / f"network={network}" if network is not None else root / table
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{uuid.uuid4().hex}.parquet"
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    base = {"unit_id": ["u1", "u1"], "dataset": ["brain", "brain"], "task": ["ball", "ball"], "run_id": ["r", "r"]}
    # two fragments with different columns: union_by_name must keep both
    _write(root, "ball", "unet", {**base, "network": ["unet"] * 2, "image_id": ["a", "b"], "psnr": [30.0, 20.0]})
    _write(root, "ball", "cascade", {**base, "network": ["cascade"] * 2, "image_id": ["a", "b"],
                                     "err_rel": [0.1, 0.2]})
    _write(root, "runs", None, {"run_id": ["r"], "study": ["quick"]})
    _write(root, "_ledger", None, {"unit_id": ["u1"], "status": ["ok"]})
    (root / "tensors").mkdir()
    (root / "empty").mkdir()
    return root


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret"
    secret.mkdir()
    pq.write_table(pa.table({"password": ["hunter2"]}), secret / "x.parquet")
    (secret / "x.csv").write_text("password\nhunter2\n")
    return secret


def test_views_per_table_with_union_by_name_and_hive(store: Path):
    con = connect(store)
    assert tables(con) == ["ball", "ledger", "runs"]
    con.close()
    frame = query(store, "SELECT network, image_id, psnr, err_rel FROM ball ORDER BY network, image_id")
    assert list(frame["network"]) == ["cascade", "cascade", "unet", "unet"]
    assert frame.loc[frame.network == "unet", "psnr"].tolist() == [30.0, 20.0]
    assert frame.loc[frame.network == "unet", "err_rel"].isna().all()
    assert frame.loc[frame.network == "cascade", "err_rel"].tolist() == [0.1, 0.2]
    assert query(store, "SELECT study FROM runs")["study"].tolist() == ["quick"]
    assert query(store, "SELECT status FROM ledger")["status"].tolist() == ["ok"]


def test_files_being_written_by_a_running_survey_are_not_read(store: Path):
    """A survey writes `.tmp-part-*` files and renames them; a query meanwhile must neither fail on one
    (half-written, or gone by the time DuckDB opens it) nor count it."""
    for folder in (store / "ball" / "network=unet", store / "_ledger", store / "runs"):
        (folder / f".tmp-part-{uuid.uuid4().hex}.parquet").write_bytes(b"PAR1 half written")
    (store / "sweeps" / "network=unet").mkdir(parents=True)
    (store / "sweeps" / "network=unet" / ".tmp-part-x.parquet").write_bytes(b"PAR1")
    assert query(store, "SELECT count(*) AS n FROM ball")["n"].tolist() == [4]
    assert query(store, "SELECT count(*) AS n FROM ledger")["n"].tolist() == [1]
    con = connect(store)
    assert "sweeps" not in tables(con)  # only a temporary file: no table yet
    con.close()


def test_bound_parameters(store: Path):
    frame = query(store, "SELECT image_id FROM ball WHERE network = ? AND psnr > ? ORDER BY 1", ["unet", 25])
    assert frame["image_id"].tolist() == ["a"]
    assert query(store, "SELECT count(*) AS c FROM ball WHERE network = $1", ["cascade"])["c"].item() == 2
    assert query(store, "SELECT count(*) AS c FROM ball WHERE image_id = $img", {"img": "b"})["c"].item() == 2
    # a value is a value, never SQL
    assert query(store, "SELECT count(*) AS c FROM ball WHERE network = ?", ["x' OR '1'='1"])["c"].item() == 0


@pytest.mark.parametrize("sql, kind", [
    ("COPY ball TO '{outside}/out.csv'", "COPY"),
    ("COPY ball TO '{store}/out.csv'", "COPY"),
    ("CREATE TABLE t AS SELECT 1", "CREATE"),
    ("CREATE VIEW v AS SELECT * FROM read_csv('{outside}/x.csv')", "CREATE"),
    ("INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "LOAD"),
    ("ATTACH '{outside}/db.duckdb' AS other", "ATTACH"),
    ("INSERT INTO ball (image_id) VALUES ('c')", "INSERT"),
    ("SET enable_external_access = true", "SET"),
    ("EXPORT DATABASE '{outside}/dump'", "EXPORT"),
    ("EXPLAIN ANALYZE COPY ball TO '{store}/out.csv'", "COPY"),
    ("SELECT 1; COPY ball TO '{store}/out.csv'", "one statement"),
])
def test_refuses_statements_that_write_or_escape(store: Path, outside: Path, sql: str, kind: str):
    with pytest.raises(QueryError, match=kind):
        query(store, sql.format(store=store, outside=outside))
    assert not (outside / "out.csv").exists() and not (store / "out.csv").exists()
    assert not (outside / "db.duckdb").exists() and not (outside / "dump").exists()


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_parquet('{outside}/x.parquet')",
    "SELECT * FROM read_csv('{outside}/x.csv')",
    "SELECT * FROM read_csv_auto('{store}/../secret/x.csv')",
    "SELECT * FROM glob('{outside}/*')",
    "SELECT * FROM read_text('/etc/hostname')",
    "WITH t AS (SELECT * FROM read_parquet('{outside}/*.parquet')) SELECT * FROM t",
])
def test_refuses_reads_outside_the_store(store: Path, outside: Path, sql: str):
    with pytest.raises(QueryError, match="outside the store"):
        query(store, sql.format(store=store, outside=outside))


def test_reads_inside_the_store_and_read_only_statements_work(store: Path):
    part = next((store / "ball" / "network=unet").glob("*.parquet"))
    assert len(query(store, f"SELECT * FROM read_parquet('{part}')")) == 2
    assert "column_name" in query(store, "DESCRIBE ball").columns
    assert len(query(store, "SUMMARIZE ball")) > 0
    assert len(query(store, "EXPLAIN SELECT * FROM ball")) > 0
    assert query(store, "SHOW TABLES")["name"].tolist() == ["ball", "ledger", "runs"]


def test_engine_configuration_is_locked(store: Path, outside: Path):
    con = connect(store)
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access = true")
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"SELECT * FROM read_csv('{outside}/x.csv')").fetchall()
    con.close()


def test_store_path_with_quote_is_escaped(tmp_path: Path):
    root = tmp_path / "o'brien's store"
    _write(root, "ball", "unet", {"network": ["unet"], "image_id": ["a"], "psnr": [1.0]})
    assert query(root, "SELECT count(*) AS c FROM ball")["c"].item() == 1


def test_missing_store_and_bad_sql_are_clear(tmp_path: Path, store: Path):
    with pytest.raises(ValueError, match="no such directory"):
        query(tmp_path / "nope", "SELECT 1")
    with pytest.raises(QueryError, match="parse"):
        query(store, "SELEC 1")
    with pytest.raises(QueryError, match="nope"):
        query(store, "SELECT * FROM nope")


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("query")(analyze.query)
    app.command("estimate")(analyze.estimate)
    return app


def test_cli_query_formats(store: Path, tmp_path: Path):
    runner = CliRunner()
    sql = "SELECT network, count(*) AS n FROM ball WHERE network = ? GROUP BY network"
    result = runner.invoke(_app(), ["query", sql, "--store", str(store), "--format", "json", "--param", "unet"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"network": "unet", "n": 2}]

    result = runner.invoke(_app(), ["query", "SELECT count(*) AS n FROM ball WHERE psnr > ?", "--store", str(store),
                                    "--format", "csv", "--param", "25"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["n", "1"]

    out = tmp_path / "result.parquet"
    result = runner.invoke(_app(), ["query", "SELECT * FROM ball", "--store", str(store), "--format", "parquet",
                                    "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).num_rows == 4

    result = runner.invoke(_app(), ["query", "SELECT * FROM ball", "--store", str(store)])
    assert result.exit_code == 0 and "cascade" in result.stdout


def test_cli_query_refusal_is_an_error_message(store: Path, outside: Path):
    result = CliRunner().invoke(_app(), ["query", f"COPY ball TO '{outside}/out.csv'", "--store", str(store)])
    assert result.exit_code == 2
    assert "COPY statements are refused" in result.output
    assert not (outside / "out.csv").exists()

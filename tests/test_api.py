"""survey.api: the Python page docs/API.md runs as written on a tiny study (real Ray, Parquet, DuckDB)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import tiny_study, write_study

DOC = Path(__file__).resolve().parents[1] / "docs" / "API.md"

STUDY = tiny_study("api", """
[[tasks]]
name = "attack"
images_per_unit = 3
params = { iterations = 20, eta = 0.01, snapshot_levels = [0.05] }
""", count=3)


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_open_store_refuses_a_missing_folder(tmp_path):
    from survey.api import open_store

    with pytest.raises(FileNotFoundError, match="no such store"):
        open_store(tmp_path / "nothing")


@pytest.mark.slow
def test_the_api_page_runs_as_written(tmp_path, monkeypatch, ray_local, capsys):
    write_study(tmp_path, STUDY)
    monkeypatch.chdir(tmp_path)
    blocks = _code_blocks(DOC.read_text())
    assert blocks, "docs/API.md has no python example"
    scope: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), scope)
    store, est = scope["store"], scope["est"]
    assert "attacks" in store.tables()
    schema = store.schema("attacks")
    assert {"column", "meaning", "unit", "type"} <= set(schema.columns)
    assert len(schema) >= len(store.read("attacks").columns)
    assert isinstance(est, pd.DataFrame) and set(est["network"]) == {"tiny"} and (est["n"] == 3).all()
    assert Path(scope["index"]).is_file()
    # the same numbers as the library function behind `survey estimate`
    from survey.analysis.estimate import estimate
    direct = estimate("results", "attacks", "out_change_rel >= 2 * r_rel", per="image", by=["network"],
                      where="snapshot = 'level'")
    assert [r["k"] for r in direct] == list(est["k"])

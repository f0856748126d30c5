"""A seeded fuzz of damaged stores: `survey report` renders on every one and says what it left out.

The base store holds real rows (the paper's four tests run in-process on two tiny networks, no Ray); each case
copies it and, drawn by a seeded generator, removes tables (the ledger and runs included), turns float columns
to NaN or drops them, and empties groups (all rows of a network removed from a table). hypothesis is not a
dependency: a fixed seed over many cases replays exactly.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from survey.engine.networks import resolve_network
from survey.engine.planning import plan_work
from survey.engine.worker import SurveyWorker
from survey.engine.writer import StoreWriter
from survey.spec import load_study
from survey.store import Store
from tests.faults import ATTACK, SWEEP, faulty_study, network_entry

CASES = 12
BALL = ('[[tasks]]\nname = "ball"\nimages_per_unit = 2\n'
        'params = { level = 0.02, radius = [0.25], draws = 4, batch = 8, attack = { iterations = 3, eta = 0.05 } }\n')
INSERTION = ('[[tasks]]\nname = "insertion"\nimages_per_unit = 2\n'
             'params = { detail = "heart", size = 6, contrast = 0.4, count = 1 }\n')
CRITERIA = ('[[criteria]]\nname = "attack gain"\ntable = "attacks"\nbad = "out_change_rel >= 0.05"\nmax_upper = 0.9\n\n'
            '[[criteria]]\nname = "sweep"\ntable = "sweeps"\nbad = "psnr < 10"\nmax_upper = 0.9\n')


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(study, store) with attacks, ball, insertions and sweeps rows of networks a and b, and its ledger."""
    folder = tmp_path_factory.mktemp("fuzz")
    study = load_study(faulty_study(folder, network_entry("a") + network_entry("b"), ATTACK + BALL + INSERTION + SWEEP,
                                    criteria=CRITERIA))
    handles = {spec.name: resolve_network(spec, study.base_dir) for spec in study.networks}
    work = plan_work(study, handles)
    store = Store.open(folder / "results")
    writer = StoreWriter(store, "run-1")
    for name, handle in handles.items():
        worker = SurveyWorker(handle, "cpu")
        for outcome in worker.run([u for u in work.units if u.network == name], work.images[16], work.ids):
            assert outcome.error is None, outcome.error
            writer.add_ok(outcome, 1)
    writer.flush()
    store.close()
    return study, folder / "results"


def _rewrite(path: Path, change) -> None:
    table = pq.read_table(path, partitioning=None)
    pq.write_table(change(table), path)


def _damage(root: Path, rng: random.Random) -> list[str]:
    """Damage the store at `root` in place; what was done, for the failure message."""
    done = []
    tables = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in ("tensors",))
    for name in tables:
        roll = rng.random()
        if roll < 0.2:
            shutil.rmtree(root / name)
            done.append(f"removed {name}")
            continue
        for path in sorted((root / name).rglob("part-*.parquet")):
            schema = pq.read_schema(path)
            floats = [f.name for f in schema if pa.types.is_floating(f.type)]
            if floats and rng.random() < 0.5:
                chosen = rng.sample(floats, k=max(1, len(floats) // rng.choice((1, 2, 4))))
                done.append(f"NaN in {name}:{','.join(chosen)}")

                def nan(table, chosen=chosen):
                    for c in chosen:
                        i = table.schema.get_field_index(c)
                        table = table.set_column(i, c, pa.array([float("nan")] * table.num_rows, pa.float64()))
                    return table

                _rewrite(path, nan)
            if floats and rng.random() < 0.15:
                dropped = rng.choice(floats)
                done.append(f"dropped {name}:{dropped}")
                _rewrite(path, lambda t, c=dropped: t.drop_columns([c]))
            if rng.random() < 0.2 and "network=b" in path.as_posix():
                done.append(f"emptied {path.relative_to(root)}")
                _rewrite(path, lambda t: t.filter(pc.equal(pc.scalar(1), pc.scalar(0))))
    return done


@pytest.mark.slow   # ~4 s a case on 2 loaded cores (a report each); no Ray
@pytest.mark.parametrize("case", range(CASES))
def test_report_renders_on_any_damaged_store(base, tmp_path, case):
    from survey.analysis.report import build_report

    study, source = base
    root = tmp_path / "store"
    shutil.copytree(source, root)
    rng = random.Random(1000 + case)
    done = _damage(root, rng)
    index = build_report(root, tmp_path / "report", study if rng.random() < 0.5 else None, n_boot=50)
    html = index.read_text()
    assert "<html" in html, done
    for step in done:
        if step.startswith("NaN in") and (root / step.split()[2].split(":")[0]).is_dir():
            assert "NaN in" in html, done       # the report says what it read as unknown
    assert "Traceback" not in html, done


@pytest.mark.slow   # the base store: four tests run in-process on two networks
def test_a_criterion_on_all_nan_rows_reaches_no_verdict(base, tmp_path):
    """The store of the issue: every sweep PSNR NaN (a network that turned NaN, stored before the engine
    refused such rows). The sweep criterion must not pass (nor fail) on them."""
    from survey.analysis.report import build_report
    from survey.analysis.sections.study import evaluate_criteria

    study, source = base
    root = tmp_path / "store"
    shutil.copytree(source, root)
    for path in (root / "sweeps").rglob("part-*.parquet"):
        _rewrite(path, lambda t: t.set_column(t.schema.get_field_index("psnr"), "psnr",
                                              pa.array([float("nan")] * t.num_rows, pa.float64())))
    results = {r.name: r for r in evaluate_criteria(root, study.criteria)}
    assert results["sweep"].status not in ("pass", "fail"), results["sweep"]
    html = build_report(root, tmp_path / "report", study, n_boot=50).read_text()
    assert "All acceptance criteria are met" not in html and "NaN in psnr" in html

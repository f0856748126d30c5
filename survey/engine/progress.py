"""How far a study got: done / pending / failed units per network and task, from the ledger."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from survey.plan import plan
from survey.spec import Study
from survey.store import Store


def study_status(study: Study, store_dir: Path | str) -> list[dict]:
    """One dict per (network, task): done, pending, failed (from each unit's latest ledger entry; a forgotten
    unit, or one whose rows are missing from the store, is pending again)."""
    from survey.engine.networks import resolve_networks
    from survey.engine.planning import load_images

    store = Store(store_dir)
    sizes = {handle.size for handle in resolve_networks(study).values()}
    _, ids, _ = load_images(study, {min(sizes)})
    units = plan(study, {name: len(v) for name, v in ids.items()})
    latest = store.latest_entries() if store.root.exists() else {}
    finished = store.finished_units() if store.root.exists() else set()
    last = {unit_id: entry["status"] for unit_id, entry in latest.items()}
    counts: Counter = Counter()
    for u in units:
        # a finished unit whose rows went missing is pending again (the next run redoes it)
        state = "done" if u.unit_id in finished else "failed" if last.get(u.unit_id) == "failed" else "pending"
        counts[(u.network, u.task, state)] += 1
    keys = sorted({(u.network, u.task) for u in units})
    return [{"network": n, "task": t, "done": counts[(n, t, "done")], "pending": counts[(n, t, "pending")],
             "failed": counts[(n, t, "failed")]} for n, t in keys]

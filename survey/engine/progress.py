"""How far a study got: done / pending / failed units per network and task, from the ledger; and, while a run
goes on, units done, rows/s and an ETA per network (`RunProgress`)."""

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


class RunProgress:
    """Units done, rows, rows/s and an ETA per network while a run goes on, from the units' measured seconds.

    ETA of a network: its units left x the mean seconds of its finished units / its actors (None until one
    finished). `snapshot()` is the dict `survey run`'s progress hears: done, total, rows, failed over all
    networks, and `networks`: name -> done, total, rows, failed, rows_per_s, seconds_per_unit, eta_s.
    """

    def __init__(self, units, actors_per_network: int = 1, clock=None):
        import time
        self.clock = clock or time.perf_counter
        self.started = self.clock()
        self.actors = max(int(actors_per_network), 1)
        self.networks: dict[str, dict] = {}
        for unit in units:
            self.networks.setdefault(unit.network, {"done": 0, "total": 0, "rows": 0, "failed": 0,
                                                    "unit_seconds": 0.0})["total"] += 1

    def record(self, network: str, rows: int, seconds: float, ok: bool = True) -> None:
        tally = self.networks[network]
        if ok:
            tally["done"] += 1
            tally["rows"] += rows
            tally["unit_seconds"] += seconds
        else:
            tally["failed"] += 1

    def network(self, name: str) -> dict:
        t = self.networks[name]
        wall = max(self.clock() - self.started, 1e-9)
        per_unit = t["unit_seconds"] / t["done"] if t["done"] else None
        left = t["total"] - t["done"] - t["failed"]
        eta = 0.0 if left == 0 else None if per_unit is None else left * per_unit / self.actors
        return {"done": t["done"], "total": t["total"], "rows": t["rows"], "failed": t["failed"],
                "rows_per_s": t["rows"] / wall, "seconds_per_unit": per_unit, "eta_s": eta}

    def snapshot(self) -> dict:
        nets = {name: self.network(name) for name in self.networks}
        etas = [n["eta_s"] for n in nets.values()]
        return {"done": sum(n["done"] + n["failed"] for n in nets.values()),
                "total": sum(n["total"] for n in nets.values()),
                "rows": sum(n["rows"] for n in nets.values()),
                "failed": sum(n["failed"] for n in nets.values()),
                "eta_s": None if any(e is None for e in etas) else max(etas, default=0.0),
                "networks": nets}


def eta_text(seconds: float | None) -> str:
    """'-' (not known yet), '42 s', '3.5 min' or '2.1 h'."""
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def network_line(name: str, p: dict) -> str:
    """One line of a network's progress: 'unet: 3/8 units, 120 rows, 45.0 rows/s, 1.20 s per unit, ETA 6 s'."""
    per = "-" if p["seconds_per_unit"] is None else f"{p['seconds_per_unit']:.2f}"
    failed = f", {p['failed']} failed" if p["failed"] else ""
    return (f"{name}: {p['done']}/{p['total']} units, {p['rows']} rows, {p['rows_per_s']:.1f} rows/s, "
            f"{per} s per unit{failed}, ETA {eta_text(p['eta_s'])}")

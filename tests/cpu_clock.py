"""`pytest --cpu-clock FILE`: CPU seconds of every test, the test process plus its descendants (Ray's
raylet and workers, `survey` subprocesses), one JSON line per test appended to FILE (one file serves
several xdist workers). CPU seconds, unlike wall time, stay comparable while other work shares the cores.

Linux only (reads /proc); fixture setup is charged to the first test that needs the fixture. A lower bound for
tests whose grandchildren exit unreaped (a `survey run` subprocess's Ray workers, killed at its shutdown, are
counted only while they are alive at the start or end of the test)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, CPU s of the process and its reaped children) from /proc/PID/stat, or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()   # after "pid (comm) ": state ppid ... utime stime cutime cstime
    return int(fields[1]), sum(int(v) for v in fields[11:15]) / _TICK


def tree_cpu() -> float:
    """CPU s used so far by this process, its reaped children and every live descendant (with their own reaped
    children)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            got = _stat(entry)
            if got is not None:
                parent[int(entry)], cpu[int(entry)] = got
    me = os.getpid()
    total, frontier = 0.0, [me]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    while frontier:
        pid = frontier.pop()
        if pid != me:
            total += cpu.get(pid, 0.0)
        frontier.extend(children.get(pid, ()))
    t = os.times()
    return total + t.user + t.system + t.children_user + t.children_system


def pytest_addoption(parser):
    parser.addoption("--cpu-clock", metavar="FILE", default=None,
                     help="append one JSON line per test (node id, CPU s of the process tree, wall s) to FILE")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    path = item.config.getoption("--cpu-clock")
    if not path:
        yield
        return
    cpu, wall = tree_cpu(), time.perf_counter()
    yield
    row = {"test": item.nodeid, "cpu": round(tree_cpu() - cpu, 2), "wall": round(time.perf_counter() - wall, 2),
           "worker": os.environ.get("PYTEST_XDIST_WORKER", "main")}
    with open(path, "a") as out:
        out.write(json.dumps(row) + "\n")


def table(path: str, top: int = 30) -> str:
    """CPU s per module and the `top` costliest tests of a --cpu-clock file, as text."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    modules: dict[str, float] = {}
    for row in rows:
        module = row["test"].split("::")[0]
        modules[module] = modules.get(module, 0.0) + max(row["cpu"], 0.0)
    lines = [f"{sum(modules.values()):8.1f} CPU s in {len(rows)} tests", "", "per module:"]
    lines += [f"{cpu:8.1f}  {module}" for module, cpu in sorted(modules.items(), key=lambda kv: -kv[1])]
    lines += ["", f"top {top} tests:"]
    lines += [f"{row['cpu']:8.1f}  {row['test']}" for row in sorted(rows, key=lambda r: -r["cpu"])[:top]]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(table(sys.argv[1], *(int(a) for a in sys.argv[2:3])))

"""Merge the GPU check's parts into gpu_check.json and a markdown table (last step of gpu_check.sh).

    python -m benchmarks.gpu_report --out gpu_out --device cuda [--small] [--seconds S]

Reads gpu_tests.json, gpu_agree.json and gpu_speed.json from `--out` (a missing part is reported as not
finished), writes gpu_check.json (everything, plus a verdict) and gpu_check.md (the tables for
benchmarks/README.md). Exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_common import read_part

ROOT = Path(__file__).resolve().parents[1]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def verdict(tests: dict | None, agree: dict | None, speed: dict | None) -> list[str]:
    """The problems found, one line each (empty: every check passed)."""
    problems = []
    if tests is None:
        problems.append("CUDA-marked tests: did not finish")
    elif tests.get("status") != "ok":
        problems.append(f"CUDA-marked tests: {tests.get('reason')} {tests.get('counts', '')}")
    if agree is None:
        problems.append("device/CPU agreement: did not finish")
    else:
        not_run = [u for u in agree.get("units", []) if u["status"] == "not run"]
        if not_run:
            problems.append(f"{len(not_run)} of {len(agree['units'])} units not run (time budget spent)")
        for unit in agree.get("units", []):
            if unit["status"] not in ("agree", "skipped", "not run"):
                problems.append(f"unit {unit['task']} on {unit['kind']}: {unit['status']} "
                                f"({unit.get('reason') or unit.get('worst', '')} {unit.get('native', '')})".strip())
        for part, fine in (("zoo", ("agree", "skipped")), ("worker", ("ran", "skipped"))):  # 'not run' too: a problem
            for row in agree.get(part, []):
                if row.get("status") not in fine:
                    problems.append(f"{part} {row['network']}: {row.get('status')} ({row.get('reason', '')})")
    if speed is None:
        problems.append("throughput: did not finish")
    elif "error" in speed:
        problems.append(f"throughput: set-up failed ({speed['error'].get('reason')})")
    else:
        for name, entry in speed.get("benchmarks", {}).items():
            if entry.get("status") != "ok":
                problems.append(f"throughput {name}: {entry.get('status')} ({entry.get('reason', '')})")
    return problems


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and (abs(value) >= 1e5 or (0 < abs(value) < 1e-2)):
        return f"{value:.2e}"
    return f"{value:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    facts = report.get("facts", {})
    lines = [f"## GPU check: {report['mode']}", "",
             f"Device: {facts.get('device_name', report['device'])}"
             + (f" ({facts.get('memory_gib')} GiB, {facts.get('multiprocessors')} SMs, CUDA {facts.get('cuda')}, "
                f"cuDNN {facts.get('cudnn')}, TF32 convolutions {facts.get('tf32_conv')})" if report["device"] == "cuda" else "")
             + f"; torch {facts.get('torch', '?')}, Python {facts.get('python', '?')}; commit {report['commit']}; "
             f"{report['date']}; {report['seconds']:.0f} s.", "",
             f"Verdict: **{'PASS' if not report['problems'] else 'FAIL'}**" +
             ("" if not report["problems"] else " - " + "; ".join(report["problems"][:12])), ""]
    tests = report.get("tests") or {}
    lines += ["### CUDA-marked tests", "", f"{tests.get('status', 'not run')}: {tests.get('reason', '')}; "
              f"{tests.get('counts', {})}", ""]
    for case in tests.get("cases", []):
        lines.append(f"- `{case['id']}`: {case['outcome']}{' (' + case['reason'] + ')' if case['reason'] else ''}")
    agree = report.get("agree") or {}
    lines += ["", f"### Device against CPU, same seed (rtol {agree.get('rtol')}, atol {agree.get('atol')})", "",
              "| task | operator | rows | status | max relative difference | worst column | device generator |",
              "|---|---|---|---|---|---|---|"]
    for u in agree.get("units", []):
        lines.append(f"| {u['task']} | {u['kind']} | {u.get('rows', '-')} | {u['status']}"
                     f"{': ' + u['reason'] if u.get('reason') else ''} | {_num(u.get('max_rel'), 3)} | "
                     f"{u.get('worst') or '-'} | {u.get('native', '-')} |")
    if agree.get("zoo"):
        lines += ["", "| zoo network | operator | f(Ax) max rel. difference, TF32 default | TF32 off |", "|---|---|---|---|"]
        for z in agree["zoo"]:
            lines.append(f"| {z['network']} | {z.get('kind', '-')} | {_num(z.get('rel_diff_tf32'), 3)} | "
                         f"{_num(z.get('rel_diff_no_tf32'), 3)}{' ' + z['status'] + ': ' + z.get('reason', '') if z.get('status') != 'agree' else ''} |")
    if agree.get("worker"):
        lines += ["", "SurveyWorker in-process (no Ray), one budget-attack unit each: " + ", ".join(
            f"{w['network']} {w.get('status')}" + (f" ({w.get('reason')})" if w.get("status") != "ran" else "")
            for w in agree["worker"])]
    speed = report.get("speed") or {}
    lines += ["", f"### Throughput ({speed.get('network', 'dagan')}, 64 x 64 MRI; CPU side: "
              f"{speed.get('cpu_threads', '?')} torch threads in the same run)", "",
              "| benchmark | unit | device, best batch | best batch | CPU same run (batch) | ratio | README 2-core CPU "
              "| ratio to README | task / bare network loop | peak memory GiB | what limited it |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in speed.get("benchmarks", {}).items():
        best = (e.get("device") or {}).get("best") or {}
        cpu = e.get("cpu") or {}
        limited = (e.get("device") or {}).get("limited_by") or e.get("reason", "")
        lines.append(f"| {name} | {e.get('unit')} | {_num(best.get('rate'))} | {best.get('batch', '-')} | "
                     f"{_num(cpu.get('rate'))} ({cpu.get('batch', '-')}) | {_num(e.get('ratio'), 2)} | "
                     f"{_num(e.get('readme_cpu'))} | {_num(e.get('ratio_readme'), 2)} | {_num(e.get('task_over_bare'), 2)} | "
                     f"{best.get('peak_gib', '-')} | "
                     f"{limited} |")
    if speed.get("error"):
        lines.append(f"\nThroughput set-up failed: {speed['error'].get('reason')}")
    points = [(n, p) for n, e in speed.get("benchmarks", {}).items() for p in (e.get("device") or {}).get("points", [])]
    if points:
        lines += ["", "Device points (batch: rate): " + "; ".join(
            f"{n} " + ", ".join(f"{p['batch']}: {_num(p['rate'])}" for q, p in points if q == n)
            for n in dict.fromkeys(n for n, _ in points))]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--seconds", type=float, default=float("nan"), help="the whole check's wall time so far")
    args = parser.parse_args()
    tests, agree, speed = (read_part(args.out, n) for n in ("tests", "agree", "speed"))
    problems = verdict(tests, agree, speed)
    report = {"device": args.device, "mode": f"--device {args.device}" + (" --small" if args.small else ""),
              "commit": _commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "seconds": args.seconds, "facts": (speed or {}).get("facts", {}), "problems": problems,
              "passed": not problems, "tests": tests, "agree": agree, "speed": speed}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(f"gpu_report: {'PASS' if not problems else 'FAIL'}; wrote {args.out / 'gpu_check.json'} and "
          f"{args.out / 'gpu_check.md'}")
    for line in problems:
        print(f"  - {line}")
    sys.exit(0 if not problems else 1)


if __name__ == "__main__":
    main()

"""Find the tests that skip without a CUDA device and run them (step 1 of benchmarks/gpu_check.sh).

    python -m benchmarks.gpu_tests --device cuda --out gpu_out [--seconds 120]

A CUDA-marked test is a test function whose `pytest.mark.skipif` gives a reason containing
"needs a CUDA device" (or every test of a module whose `pytestmark` does); they are found by reading the
test files' syntax, not by importing them. pytest runs them in a subprocess (JUnit XML); the part
gpu_tests.json records each test's outcome. On cuda every one must pass; on cpu they are expected to skip.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks.gpu_common import Deadline, write_part

MARKER = "needs a CUDA device"
ROOT = Path(__file__).resolve().parents[1]


def _marks_cuda(node: ast.AST) -> bool:
    """True when `node` (a decorator or a pytestmark value) holds a skipif whose reason names MARKER."""
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            func = call.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "skipif":
                texts = [k.value for k in call.keywords if isinstance(k.value, ast.Constant)]
                texts += [a for a in call.args if isinstance(a, ast.Constant)]
                if any(isinstance(t.value, str) and MARKER in t.value for t in texts):
                    return True
    return False


def cuda_tests(tests_dir: Path = ROOT / "tests") -> list[str]:
    """pytest node ids (relative to the repository root) of every CUDA-marked test, in file order."""
    ids: list[str] = []
    for path in sorted(tests_dir.glob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        module_marked = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                            and _marks_cuda(n.value) for n in tree.body)
        rel = path.relative_to(tests_dir.parent).as_posix()

        def visit(body, prefix: str, marked: bool):
            for node in body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                    if marked or any(_marks_cuda(d) for d in node.decorator_list):
                        ids.append(f"{rel}::{prefix}{node.name}")
                elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                    visit(node.body, f"{prefix}{node.name}::", marked or any(_marks_cuda(d) for d in node.decorator_list))

        visit(tree.body, "", module_marked)
    return ids


def parse_junit(path: Path) -> list[dict]:
    """One dict per test case of a JUnit XML report: id, outcome (passed, failed, error, skipped), reason."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, reason = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                reason = (child.get("message") or child.text or "").strip().splitlines()[0][:300] \
                    if (child.get("message") or child.text) else ""
                break
        cases.append({"id": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "reason": reason,
                      "seconds": float(case.get("time") or 0.0)})
    return cases


def run_tests(ids: list[str], device: str, seconds: float, out: Path) -> dict:
    """Run `ids` under pytest; the part's content (counts, cases, status, the pytest output's tail)."""
    if not ids:
        return {"status": "error", "reason": f"no test marked {MARKER!r} was found", "cases": []}
    xml = out / "gpu_tests.xml.tmp"
    # Absolute ids and the caller's working folder: gpu_check.sh runs from its folder of links (the package
    # as installed), which must stay first on sys.path; pytest still finds its rootdir and conftest at ROOT.
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--rootdir={ROOT}",
           f"--junitxml={xml}", *(f"{ROOT}/{i}" for i in ids)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10.0, seconds))
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"pytest ran past {seconds:.0f} s", "cases": [], "ids": ids}
    output = (proc.stdout + proc.stderr)[-4000:]
    (out / "gpu_pytest.txt").write_text(proc.stdout + proc.stderr)
    if not xml.exists():
        return {"status": "error", "reason": f"pytest exited {proc.returncode} without a report", "output": output,
                "cases": [], "ids": ids}
    cases = parse_junit(xml)
    xml.unlink()
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    if device == "cuda":
        ok = counts["passed"] == len(cases) > 0
        reason = "all passed" if ok else "some did not pass on cuda"
    else:
        ok = counts["failed"] == counts["error"] == 0 and all(MARKER in c["reason"] or c["outcome"] == "passed"
                                                               for c in cases)
        reason = "skipped without a CUDA device, as expected" if ok else "unexpected outcome on cpu"
    return {"status": "ok" if ok else "failed", "reason": reason, "counts": counts, "cases": cases,
            "ids": ids, "pytest_exit": proc.returncode, "output": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    parser.add_argument("--seconds", type=float, default=150.0)
    args = parser.parse_args()
    clock = Deadline(args.seconds)
    ids = cuda_tests()
    print(f"gpu_tests: {len(ids)} CUDA-marked tests: {', '.join(i.split('::')[-1] for i in ids)}")
    part = run_tests(ids, args.device, args.seconds, args.out)
    part["seconds"] = round(clock.spent(), 1)
    write_part(args.out, "tests", part)
    counts = part.get("counts", {})
    print(f"gpu_tests: {part['status']} ({part['reason']}); {counts}; {part['seconds']} s")


if __name__ == "__main__":
    main()

"""Every task's contract example on the device, against the CPU at a fixed seed (step 2 of gpu_check.sh).

    python -m benchmarks.gpu_agree --device cuda --out gpu_out [--small] [--seconds 150]

Three checks, each recorded per unit in the part gpu_agree.json:

- units: for every registered task and operator kind, the task's `example` on the contract test's tiny
  float64 network and operators (tests/test_task_contract.py), run (1) on the CPU with a CPU generator,
  (2) on the device with the same CPU generator, so every random draw is the same: rows and tensors must
  equal the CPU's within RTOL / ATOL (on --device cpu they must be identical: the control); (3) on the
  device with a generator on the device, as the engine's worker runs it: it must run and give rows with
  the same columns (a different random stream, so values are not compared).
- zoo: each trained zoo network's f(Ax) on ellipse phantoms, device against CPU (float32), the largest
  difference relative to max |f(Ax)| with the device's default TF32 setting and with TF32 off (which must
  stay within ZOO_RTOL).
- worker: survey.engine.worker.SurveyWorker (no Ray) on the device, one attack unit per zoo network,
  companions loaded as a survey loads them.

A unit that needs a module this machine lacks is skipped with the module named.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.gpu_common import Deadline, outcome_of_error, resolve_device, write_part

#: Agreement of float64 rows between CPU and device: relative and absolute tolerance.
RTOL, ATOL = 1e-6, 1e-9
#: Agreement of a float32 zoo network's f(Ax) (TF32 off), relative to max |f(Ax)|; set before any device run.
ZOO_RTOL = 1e-3
#: --small: one zoo network per operator kind.
SMALL_ZOO = ["dagan", "ell50", "mrivn", "dncnn"]
#: Shares of the time budget after which no new unit, then no new zoo network, starts (the worker gets the rest).
UNITS_SHARE, ZOO_SHARE = 0.6, 0.8


def _close(a: Any, b: Any) -> tuple[bool, float]:
    """(equal within tolerance, relative difference) of two row values."""
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return a == b, 0.0 if a == b else math.inf
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b), 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    if math.isinf(a) or math.isinf(b):
        return a == b, 0.0 if a == b else math.inf
    diff = abs(a - b)
    return diff <= ATOL + RTOL * abs(b), diff / max(abs(b), ATOL)


def compare(reference, other) -> dict[str, Any]:
    """How `other` (rows, tensors) differs from `reference`: equal, the worst relative difference and where."""
    (rows_a, tensors_a), (rows_b, tensors_b) = reference, other
    if len(rows_a) != len(rows_b):
        return {"equal": False, "worst": "row count", "max_rel": math.inf, "detail": f"{len(rows_a)} vs {len(rows_b)} rows"}
    bad: dict[str, float] = {}
    worst, worst_at = 0.0, ""
    for ra, rb in zip(rows_a, rows_b):
        if ra.keys() != rb.keys():
            return {"equal": False, "worst": "columns", "max_rel": math.inf,
                    "detail": f"columns differ: {sorted(set(ra) ^ set(rb))}"}
        for key in ra:
            ok, rel = _close(rb[key], ra[key])
            if rel > worst:
                worst, worst_at = rel, key
            if not ok:
                bad[key] = max(bad.get(key, 0.0), rel)
    if tensors_a.keys() != tensors_b.keys():
        return {"equal": False, "worst": "tensors", "max_rel": math.inf,
                "detail": f"tensors differ: {sorted(set(tensors_a) ^ set(tensors_b))}"}
    for key in tensors_a:
        ta, tb = tensors_a[key].detach().cpu(), tensors_b[key].detach().cpu()
        if ta.shape != tb.shape or ta.dtype != tb.dtype:
            bad[f"tensor {key}"] = math.inf
            continue
        if ta.is_floating_point() or ta.is_complex():
            wide = torch.complex128 if ta.is_complex() else torch.float64
            ta, tb = ta.to(wide), tb.to(wide)
            finite = torch.isfinite(ta) & torch.isfinite(tb)
            same_nonfinite = bool(((~torch.isfinite(ta)) == (~torch.isfinite(tb))).all())
            diff = (ta - tb).abs()[finite]
            scale = ta.abs()[finite].max() if finite.any() else torch.tensor(1.0)
            rel = float(diff.max() / max(float(scale), ATOL)) if diff.numel() else 0.0
            ok = same_nonfinite and bool((diff <= ATOL + RTOL * ta.abs()[finite]).all())
        else:
            ok, rel = bool(torch.equal(ta, tb)), 0.0 if torch.equal(ta, tb) else math.inf
        if rel > worst:
            worst, worst_at = rel, f"tensor {key}"
        if not ok:
            bad[f"tensor {key}"] = rel
    return {"equal": not bad, "max_rel": worst, "worst": worst_at,
            "mismatched": {k: v for k, v in sorted(bad.items(), key=lambda kv: -kv[1])[:8]}}


_OPERATORS: dict[tuple[str, str], Any] = {}


def _context(kind: str, device: torch.device):
    """The contract test's context (tiny float64 network, small operator, two images) on `device`."""
    from survey.physics import make_physics
    from survey.solvers import make_reference
    from survey.tasks import TaskContext
    from tests.test_task_contract import PHYSICS, SIZE, TinyNet

    key = (kind, str(device))
    if key not in _OPERATORS:  # one operator per kind and device, as the contract test keeps them
        _OPERATORS[key] = make_physics(kind, size=SIZE, **PHYSICS.get(kind, {})).to(device)
    physics = _OPERATORS[key]
    g = torch.Generator().manual_seed(3)
    images = torch.nn.functional.avg_pool2d(torch.rand(2, 1, SIZE, SIZE, generator=g, dtype=torch.float64), 3, 1, 1)
    return TaskContext(net=TinyNet().to(device), physics=physics, images=images.to(device), image_ids=["img-a", "img-b"],
                       reference=make_reference(physics, iterations=5), network="tiny", dataset="noise",
                       unit_id="gpu-check-unit")


def _run_example(name: str, kind: str, device: torch.device, generator_device: torch.device):
    from survey.tasks import generator_for, make_task, task_class

    ctx = _context(kind, device)
    task = make_task(name, **task_class(name).example)
    rows, tensors = task(ctx, generator_for(ctx.unit_id, generator_device))
    return rows, {k: v.detach().cpu() for k, v in tensors.items()}


def check_unit(name: str, kind: str, device: torch.device) -> dict[str, Any]:
    """One task on one operator kind: the three runs of the module docstring, with their outcome.

    status: agree (rows equal, and the device generator's run ran), differ, error (a run raised; `stage`
    says which, the others still run), skipped (a module is missing)."""
    cpu = torch.device("cpu")
    result: dict[str, Any] = {"task": name, "kind": kind}
    start = time.perf_counter()
    try:
        on_cpu = _run_example(name, kind, cpu, cpu)
    except Exception as err:  # noqa: BLE001 - recorded, the check goes on
        return {**result, **outcome_of_error(err), "stage": "cpu"}
    result["rows"] = len(on_cpu[0])
    failed = None
    try:
        same_draws = _run_example(name, kind, device, cpu)
        cmp = compare(on_cpu, same_draws)
        result.update(max_rel=cmp["max_rel"], worst=cmp["worst"], mismatched=cmp.get("mismatched", {}),
                      detail=cmp.get("detail", ""))
    except Exception as err:  # noqa: BLE001
        failed = {**outcome_of_error(err), "stage": "device, CPU generator"}
        cmp = {"equal": False}
    if device.type == "cpu":  # the control: the same computation must give identical numbers
        result["native"] = "not run (device is the CPU)"
        status = "agree" if failed is None and result["max_rel"] == 0.0 else "differ"
    else:
        try:
            native_rows, _ = _run_example(name, kind, device, device)
            columns_match = [set(r) for r in native_rows] == [set(r) for r in on_cpu[0]]
            result["native"] = "ran" if columns_match else "ran, but its rows' columns differ from the CPU's"
        except Exception as err:  # noqa: BLE001
            out = outcome_of_error(err)
            result["native"] = f"{out['status']}: {out['reason']}"
            result["native_error"] = out.get("error", "")
        status = "agree" if cmp["equal"] and result["native"] == "ran" else "differ"
    if failed is not None:
        result.update(failed)
        status = failed["status"]
    result["status"] = status
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def check_zoo(device: torch.device, count: int, names: list[str] | None = None,
              time_left: Callable[[], bool] = lambda: True) -> list[dict[str, Any]]:
    """Each trained zoo network's f(Ax), device against CPU: the largest difference relative to max |f|."""
    from survey.data import load_dataset
    from survey.nets.zoo import entry, is_trained, load_network, zoo_names

    out = []
    for name in names or zoo_names():
        if not is_trained(name):
            continue
        if not time_left():
            out.append({"network": name, "status": "not run", "reason": "time budget spent"})
            continue
        try:
            net_c, phys_c = load_network(name, "cpu")
            net_d, phys_d = load_network(name, device)
            x = load_dataset("ellipses", split="test", size=phys_c.size, count=count).images
            x = x.to(next(net_c.parameters()).dtype)
            with torch.no_grad():
                ref = net_c(phys_c.A(x), phys_c).double()
                diffs = {}
                for tf32 in (True, False):
                    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
                    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
                    try:
                        got = net_d(phys_d.A(x.to(device)), phys_d).double().cpu()
                    finally:
                        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
                    diffs[tf32] = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
            status = "agree" if diffs[False] <= ZOO_RTOL else "differ"
            out.append({"network": name, "kind": entry(name).physics["kind"], "status": status,
                        "reason": "" if status == "agree" else f"TF32 off, {diffs[False]:.2g} > {ZOO_RTOL:g}",
                        "dtype": str(x.dtype).replace("torch.", ""), "rel_diff_tf32": diffs[True],
                        "rel_diff_no_tf32": diffs[False]})
        except Exception as err:  # noqa: BLE001
            out.append({"network": name, **outcome_of_error(err)})
    return out


def check_worker(device: torch.device, names: list[str] | None,
                 time_left: Callable[[], bool] = lambda: True) -> list[dict[str, Any]]:
    """SurveyWorker in-process on the device: one budget-attack unit per zoo network (no Ray)."""
    out = []
    try:
        import numpy as np

        from survey.data import load_dataset
        from survey.engine.networks import NetworkHandle
        from survey.engine.worker import SurveyWorker
        from survey.nets.zoo import entry, is_trained, zoo_names
        from survey.plan import Unit
    except Exception as err:  # noqa: BLE001
        return [{"network": "(all)", **outcome_of_error(err)}]
    params = dict(search="budget", budgets=[0.02], iterations=2, restarts=1, singular_start=False)
    for name in names or zoo_names():
        if not is_trained(name):
            continue
        if not time_left():
            out.append({"network": name, "status": "not run", "reason": "time budget spent"})
            continue
        start = time.perf_counter()
        try:
            handle = NetworkHandle(name, True, dict(entry(name).physics))
            worker = SurveyWorker(handle, device=device.type, threads=torch.get_num_threads())
            data = load_dataset("ellipses", split="test", size=handle.size, count=2)
            unit = Unit(f"gpu-check-{name}", name, "ellipses", "attack", params, 0, 2)
            (outcome,) = worker.run([unit], {"ellipses": np.asarray(data.images)}, {"ellipses": list(data.ids)})
            described = worker.describe()
            status = "ran" if outcome.error is None and outcome.rows else "error"
            out.append({"network": name, "status": status, "rows": len(outcome.rows),
                        "companions": sorted(worker.companions), "device_name": described["device_name"],
                        "reason": "" if outcome.error is None else outcome.error.strip().splitlines()[-1],
                        "error": outcome.error or "", "seconds": round(time.perf_counter() - start, 2)})
        except Exception as err:  # noqa: BLE001
            out.append({"network": name, **outcome_of_error(err)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    parser.add_argument("--small", action="store_true", help="fewer zoo networks and images (a dry run)")
    parser.add_argument("--seconds", type=float, default=150.0)
    args = parser.parse_args()
    device = resolve_device(args.device)
    clock = Deadline(args.seconds)
    part: dict[str, Any] = {"device": device.type, "rtol": RTOL, "atol": ATOL, "units": [], "zoo": [], "worker": []}
    try:
        from survey.physics import physics_kinds
        from survey.tasks import task_names
        tasks, kinds = task_names(), physics_kinds()
    except Exception as err:  # noqa: BLE001
        part["units"].append({"task": "(registry)", "kind": "", **outcome_of_error(err)})
        tasks, kinds = [], []
    if args.small:
        torch.set_num_threads(1)
    for i, name in enumerate(tasks):
        # --small: one operator kind per task, in turn, so every kind is still covered
        for kind in ([kinds[i % len(kinds)]] if args.small and kinds else kinds):
            if clock.spent() > UNITS_SHARE * clock.seconds:
                part["units"].append({"task": name, "kind": kind, "status": "not run", "reason": "time budget spent"})
                continue
            unit = check_unit(name, kind, device)
            part["units"].append(unit)
            write_part(args.out, "agree", part)  # after each unit: a step stopped from outside keeps its units
            print(f"gpu_agree: {name:16s} {kind:8s} {unit['status']:7s} max rel {unit.get('max_rel', float('nan')):.2g}"
                  f" {unit.get('reason', '')}{unit.get('native', '') if unit.get('status') == 'differ' else ''}")
    part["zoo"] = check_zoo(device, count=2 if args.small else 8, names=SMALL_ZOO if args.small else None,
                            time_left=lambda: clock.spent() < ZOO_SHARE * clock.seconds)
    part["worker"] = check_worker(device, ["dncnn"] if args.small else None, time_left=lambda: clock.left() > 5)
    part["seconds"] = round(clock.spent(), 1)
    write_part(args.out, "agree", part)
    statuses = [u["status"] for u in part["units"]]
    print(f"gpu_agree: {statuses.count('agree')} of {len(statuses)} units agree; zoo {len(part['zoo'])} networks, "
          f"worker {sum(w.get('status') == 'ran' for w in part['worker'])} ran; {part['seconds']} s")


if __name__ == "__main__":
    main()

"""Throughput on the device over the CPU, in one run, at the batch that fills the device (step 3 of gpu_check.sh).

    python -m benchmarks.gpu_speed --device cuda --out gpu_out [--small] [--seconds 240] [--cpu-threads 2]

The DAGAN U-Net of benchmarks/README.md (trained weights when present) on 64 x 64 Cartesian MRI at 20%,
ellipse phantoms (throughput does not depend on the image content), through the tasks' own code:

- attack: batched worst-case attack (paper Algorithm 1), image-iterations per second;
- ball: Gaussian-ball draws around the clean point, draws per second;
- reference: the compressed-sensing reference (FISTA, its default iterations), images per second;
- spectrum: top-k Lanczos of the local Jacobian, J^T J products per second;
- rare: multilevel splitting with a threshold out of reach (every pCN step runs), reconstructions per second.

Each is timed on the device at growing batches (each point after an untimed warm-up at that batch) until
the rate stops rising by 5%, memory runs out or its time share is spent; the best batch is reported. The
same measurement runs on this machine's CPU at the batch of benchmarks/README.md with `--cpu-threads`
torch threads (2: the README's 2-core machine), and the ratio device / CPU is taken in this one run; the
README's own 2-core figures are kept beside them (`README_CPU`). For attack, ball and rare a bare loop of the
network alone at the best batch (`bare_rate`) shows how much of the device's time the task's own work takes
(drawing noise, metrics, rows on the host).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.gpu_common import Deadline, device_facts, outcome_of_error, resolve_device, sync, write_part

#: benchmarks/README.md's figures on the project's 2-core CPU (2026-11-29), per benchmark, in its unit.
README_CPU = {"attack": 165.5, "ball": 228.2, "rare": 316.6}
#: Stop growing the batch once the rate rises by less than this factor.
PLATEAU = 1.05


def setup(device: torch.device):
    """(net, physics, base images (16, 1, 64, 64) on device, whether the weights are the trained ones)."""
    from survey.data import load_dataset
    from survey.nets.zoo import build_network, build_physics, is_trained, load_network

    trained = is_trained("dagan")
    if trained:
        net, physics = load_network("dagan", device)
    else:  # throughput does not depend on the weights
        physics = build_physics("dagan").to(device)
        net = build_network("dagan").to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    images = load_dataset("ellipses", split="test", size=physics.size, count=16).images.to(device)
    return net, physics, images, trained


def batch_of(images: torch.Tensor, count: int) -> torch.Tensor:
    reps = -(-count // images.shape[0])
    return images.repeat(reps, 1, 1, 1)[:count].contiguous()


def _context(net, physics, x):
    from survey.tasks import TaskContext

    return TaskContext(net=net, physics=physics, images=x, image_ids=[f"b{i}" for i in range(x.shape[0])])


def _task_runner(make: Callable[[int, bool], Any], work: Callable[[Any, int, bool], float], images_for: Callable[[int], int]):
    """A measure(net, physics, images, batch, warm) -> work done, for a task built by make(batch, warm)."""
    from survey.tasks import generator_for

    def measure(net, physics, images, batch: int, warm: bool) -> float:
        task = make(batch, warm)
        x = batch_of(images, images_for(batch))
        device = x.device
        rows, _ = task(_context(net, physics, x), generator_for("gpu-speed", device))
        return work(rows, batch, warm)

    return measure


def benchmarks(small: bool) -> dict[str, dict[str, Any]]:
    """name -> unit, batches on the device, batch on the CPU and the measure function."""
    from survey.solvers import make_reference
    from survey.tasks import make_task

    it = 2 if small else 20
    attack = _task_runner(
        lambda b, warm: make_task("attack", iterations=1 if warm else it, snapshot_levels=[100.0], keep_tensors=False,
                                  with_reference=False),
        lambda rows, b, warm: b * (1 if warm else it), lambda b: b)
    ball_images = 2 if small else 4
    ball = _task_runner(
        lambda b, warm: make_task("ball", center="clean", radius=0.05, radius_kind="relative-x", draws=b, batch=b,
                                  keep_tensors=False),
        lambda rows, b, warm: ball_images * b, lambda b: ball_images)
    k, lanczos = (2, 4) if small else (10, 20)
    spectrum = _task_runner(
        lambda b, warm: make_task("spectrum", k=k, iterations=lanczos, tol=1e-12, with_reference=False, with_h=False,
                                  keep_vectors=False, upper_bound=False),
        lambda rows, b, warm: float(sum(r["iterations"] for r in rows if r["k"] == 1)), lambda b: b)
    steps = 1 if small else 5
    rare = _task_runner(
        lambda b, warm: make_task("rare", family="gaussian", severities=[20.0], thresholds=[1e6], distances=["relative_l2"],
                                  estimators=["splitting"], targets=["network"], particles=b, mcmc_steps=steps,
                                  max_levels=1, stop_below=None, batch=b),
        lambda rows, b, warm: float(sum(r["calls"] for r in rows)), lambda b: 1)
    cs_iterations = 10 if small else None

    def reference(net, physics, images, batch: int, warm: bool) -> float:
        solver = make_reference(physics, **({"iterations": cs_iterations} if cs_iterations else {}))
        x = batch_of(images, batch)
        with torch.no_grad():
            solver(physics.A(x), physics)
        return float(batch)

    if small:
        return {"attack": dict(unit="image-iterations/s", batches=[2, 4], cpu_batch=2, measure=attack),
                "ball": dict(unit="draws/s", batches=[8, 16], cpu_batch=8, measure=ball),
                "reference": dict(unit="images/s", batches=[2, 4], cpu_batch=2, measure=reference),
                "spectrum": dict(unit="J^T J products/s", batches=[1, 2], cpu_batch=1, measure=spectrum),
                "rare": dict(unit="reconstructions/s", batches=[8, 16], cpu_batch=8, measure=rare)}
    return {"attack": dict(unit="image-iterations/s", batches=[16, 64, 256, 1024, 4096], cpu_batch=16, measure=attack),
            "ball": dict(unit="draws/s", batches=[128, 512, 2048, 8192, 32768], cpu_batch=128, measure=ball),
            "reference": dict(unit="images/s", batches=[16, 64, 256, 1024, 4096], cpu_batch=16, measure=reference),
            "spectrum": dict(unit="J^T J products/s", batches=[2, 8, 32, 128, 512], cpu_batch=2, measure=spectrum),
            "rare": dict(unit="reconstructions/s", batches=[100, 1000, 4000, 16000, 64000], cpu_batch=100,
                         measure=rare)}


#: Benchmarks with a bare network loop beside them: name -> (needs the input gradient, calls per task call).
BARE = {"attack": (True, lambda small: 2 if small else 20), "ball": (False, lambda small: 2 if small else 4),
        "rare": (False, lambda small: 2 if small else 6)}


def bare_rate(name: str, net, physics, images, batch: int, device: torch.device, small: bool) -> float:
    """Network calls on `batch` images per second in a bare loop (forward, plus the input gradient for the
    attack), as many calls as the task makes: the ceiling the task's own rate is read against."""
    grad, reps = BARE[name][0], BARE[name][1](small)
    y = physics.A(batch_of(images, batch))

    def step():
        if grad:
            with torch.enable_grad():
                u = y.clone().requires_grad_(True)
                torch.autograd.grad(net(u, physics).square().sum(), u)
        else:
            with torch.no_grad():
                net(y, physics)

    step()
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        step()
    sync(device)
    return batch * reps / (time.perf_counter() - start)


def timed(measure, net, physics, images, batch: int, device: torch.device) -> dict[str, Any]:
    """One warm-up call, then one timed call at `batch`: rate, seconds, peak device memory."""
    measure(net, physics, images, batch, True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    work = measure(net, physics, images, batch, False)
    sync(device)
    seconds = time.perf_counter() - start
    point = {"batch": batch, "work": work, "seconds": round(seconds, 4), "rate": work / seconds}
    if device.type == "cuda":
        point["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return point


def sweep(spec: dict[str, Any], setup_args, device: torch.device, seconds: float) -> dict[str, Any]:
    """The device's points over growing batches, the best one and what stopped the sweep."""
    clock = Deadline(seconds)
    points: list[dict[str, Any]] = []
    limited = ""
    for batch in spec["batches"]:
        if points and points[-1]["seconds"] * batch / points[-1]["batch"] * 2.5 > clock.left():
            limited = f"not saturated at batch {points[-1]['batch']}: the next batch would outrun the time share"
            break
        try:
            point = timed(spec["measure"], *setup_args, batch, device)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            limited = f"memory: out of device memory at batch {batch}"
            break
        points.append(point)
        best_before = max((p["rate"] for p in points[:-1]), default=0.0)
        if best_before and point["rate"] < PLATEAU * best_before:
            limited = f"saturated: batch {batch} is less than {PLATEAU - 1:.0%} faster than the best before it"
            break
    else:
        limited = limited or f"not saturated at the largest batch tried ({spec['batches'][-1]})"
    best = max(points, key=lambda p: p["rate"]) if points else None
    return {"points": points, "best": best, "limited_by": limited}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    parser.add_argument("--small", action="store_true", help="tiny batches and iterations (a dry run)")
    parser.add_argument("--seconds", type=float, default=240.0, help="time for all benchmarks, both sides")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    clock = Deadline(args.seconds)
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.cpu_threads)
    cpu = torch.device("cpu")
    part: dict[str, Any] = {"facts": device_facts(device), "cpu_threads": args.cpu_threads, "small": args.small,
                            "benchmarks": {}}
    try:
        specs = benchmarks(args.small)
        on_device = setup(device)
        on_cpu = setup(cpu) if device.type != "cpu" else on_device
        part["network"] = "dagan" + ("" if on_device[3] else " (untrained weights)")
    except Exception as err:  # noqa: BLE001 - recorded, the report says why
        part["error"] = outcome_of_error(err)
        write_part(args.out, "speed", part)
        print(f"gpu_speed: set-up failed: {part['error']['reason']}")
        return
    names = [n for n in specs if not args.only or n in args.only.split(",")]
    for i, name in enumerate(names):
        spec = specs[name]
        share = clock.left() / (len(names) - i)
        entry: dict[str, Any] = {"unit": spec["unit"], "readme_cpu": README_CPU.get(name)}
        try:
            start = time.perf_counter()
            entry["cpu"] = timed(spec["measure"], *on_cpu[:3], spec["cpu_batch"], cpu)
            entry["device"] = sweep(spec, on_device[:3], device, share - (time.perf_counter() - start))
            best = entry["device"]["best"]
            if best:
                entry["ratio"] = best["rate"] / entry["cpu"]["rate"]
                if entry["readme_cpu"]:
                    entry["ratio_readme"] = best["rate"] / entry["readme_cpu"]
                if name in BARE:  # the task's rate over a bare network loop at its best batch, on the device
                    entry["bare_rate"] = bare_rate(name, *on_device[:3], best["batch"], device, args.small)
                    entry["task_over_bare"] = best["rate"] / entry["bare_rate"]
            entry["status"] = "ok" if best else "error"
        except Exception as err:  # noqa: BLE001
            entry.update(outcome_of_error(err))
        part["benchmarks"][name] = entry
        part["seconds"] = round(clock.spent(), 1)
        write_part(args.out, "speed", part)  # after each one: a step stopped from outside keeps what it measured
        best = (entry.get("device") or {}).get("best") or {}
        print(f"gpu_speed: {name:9s} {entry.get('status')}: device {best.get('rate', float('nan')):.1f} {spec['unit']} "
              f"at batch {best.get('batch')}, cpu {entry.get('cpu', {}).get('rate', float('nan')):.1f}, "
              f"ratio {entry.get('ratio', float('nan')):.2f}; {(entry.get('device') or {}).get('limited_by', entry.get('reason', ''))}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    part["seconds"] = round(clock.spent(), 1)
    write_part(args.out, "speed", part)


if __name__ == "__main__":
    main()

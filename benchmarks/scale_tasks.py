"""How each task's cost grows with image size: seconds and peak memory of one image per task at 64 ... 320 px.

Per network (the zoo's U-Net and cascade architectures, untrained: time and memory do not depend on the
weights) and per task entry of TASKS (every task that applies to single-coil MRI, cut to a few iterations
or draws so one image of each runs here), a study at each size goes through the engine's own planning
(`survey.engine.cost`: preflight, the driver's memory probe, the budget's batch) and one image of each task
is run in-process with the task's real code, as `survey plan` measures it (Ray is not started, nothing is
stored). Every (network, size) is set up first; then each task runs at every size back to back, sizes
ascending in odd rounds and descending in even ones (--rounds), so a load that drifts meets all sizes alike.
A cell is the least CPU time of the process over the rounds (1 torch thread: what one quiet core takes; the
wall time is kept in the JSON beside it) and the largest measured peak memory above the start. The
reference's own cost is the `attack-reference` entry (the unrolled CS solver attacked), run with the U-Net's
study (it does not depend on the network). Bracket is left out: its certificate forms the dense Jacobian
(n^2 inputs), refused above 64 x 64.

Fitted exponent: cost ~ n^k over the sizes run (least squares on log-log, `benchmarks.scale.exponent`).
A 1,000-image study of a task at these settings = 1,000 x its seconds per image at the largest size, one actor.
The GPU column is extrapolated, not measured: the task's counted FLOPs (torch.utils.flop_counter's registry:
convolutions and matrix products only), counted at the smallest size and scaled by (n / n0)^2 (exact for these
fully convolutional networks at fixed iteration counts), over an assumed sustained rate (--gpu-tflops); FFTs,
wavelets and the CS solver's own work are not counted, so it is a lower bound on time; tasks that run under
`torch.inference_mode` (severity) are not seen by the counter (n/a).

Run: nice -n 15 .venv/bin/python -m benchmarks.scale_tasks [--sizes 64 128 256 320] [--rounds 2] [--out FILE]
(`--tasks attack severity`: only the entries whose label starts so; `--table FILE`: the table of a saved run)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from benchmarks.common import machine
from benchmarks.scale import _fmt_h, _fmt_s, exponent

NETWORKS = {  # label -> (factory, kwargs)
    "unet (dagan arch, 0.48M)": ("survey.nets.unet:UNet", '{ width = 16, depth = 3, input_mode = "magnitude" }'),
    "cascade (deepmri arch)": ("survey.nets.cascade:Cascade", "{ blocks = 5, layers = 5, width = 24 }"),
}

#: (label, TOML of the entry): one image each, a few iterations or draws (what a unit costs scales with them)
TASKS = [
    ("attack (Alg. 1, 2 it.)", 'name = "attack"\nparams = { iterations = 2, snapshot_iterations = [0, 2], '
                               'snapshot_levels = [0.01], with_reference = false }'),
    ("attack budget (2 it.)", 'name = "attack"\nparams = { search = "budget", budgets = [0.01], iterations = 2, '
                              'restarts = 1, singular_start = false, with_reference = false }'),
    ("ball (2 it. + 4 draws)", 'name = "ball"\nparams = { radius = [0.5], draws = 4, with_reference = false, '
                               'attack = { iterations = 2, eta = 0.01 } }'),
    ("sweep (1 ratio, + CS)", 'name = "sweep"\nparams = { ratios = [0.3], include_train = false }'),
    ("insertion (+ CS)", 'name = "insertion"\nparams = { detail = "heart", size = 24, contrast = 0.4, '
                         'position = "random", count = 1 }'),
    ("severity (2 families x 2)", 'name = "severity"\nparams = { families = { spike = [0.1], gaussian = [30.0] }, '
                                  'draws = 2, with_reference = false }'),
    ("rare (MC, 4 draws)", 'name = "rare"\nparams = { family = "gaussian", severities = [20.0], thresholds = [0.05], '
                           'distances = ["patch"], estimators = ["mc"], mc_draws = 4, targets = ["network", "H"] }'),
    ("spectrum (k 1, 2 it.)", 'name = "spectrum"\nparams = { k = 1, iterations = 2, with_reference = false, '
                              'upper_bound = false }'),
    ("detect (input noise)", 'name = "detect"\nparams = { methods = ["inputnoise"], inputnoise_passes = 2, '
                             'adv_iterations = 1, budget_iterations = 1, adaptive_iterations = 1, restarts = 1, '
                             'insert_contrasts = [0.8], experiments = ["worstcase"] }'),
    ("smoothing (3 + 4 draws)", 'name = "smoothing"\nparams = { budgets = [0.01], noise = 0.05, n_center = 3, '
                                'n_cert = 4, targets = ["network"] }'),
]
REFERENCE = ("reference: attack-reference (2 it.)",
             'name = "attack-reference"\nparams = { iterations = 2, snapshot_iterations = [0, 2], '
             'snapshot_levels = [] }')
STUDY_IMAGES = 1000


def study_text(label: str, n: int, memory_gb: float, only: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The study for network `label` at n x n and the labels of its task entries, in order (those whose label
    starts with one of `only`, when given)."""
    factory, kwargs = NETWORKS[label]
    entries = TASKS + ([REFERENCE] if label == next(iter(NETWORKS)) else [])
    entries = [e for e in entries if not only or e[0].startswith(only)]
    tasks = "\n\n".join(f"[[tasks]]\n{toml}" for _, toml in entries)
    text = (f'name = "scale-tasks"\nstore = "results"\n\n[[networks]]\nname = "net"\nfactory = "{factory}"\n'
            f'kwargs = {kwargs}\nphysics = {{ kind = "mri", size = {n}, mask = "fastmri-random", '
            f'acceleration = 4.0, seed = 0 }}\n\n[[datasets]]\nname = "brain"\nsplit = "test"\ncount = 1\n\n'
            f'{tasks}\n\n[engine]\nmemory_gb = {memory_gb}\n')
    return text, [lab for lab, _ in entries]


@dataclass
class Setup:
    """One (network, size): its study's units and budget batches, and a worker holding the built network."""

    label: str
    size: int
    labels: list[str]
    units: list
    work: object
    worker: object
    rows: dict[str, dict]       # task label -> probed peak of one call at the budget's batch, batch


def prepare(label: str, n: int, memory_gb: float, folder: Path, only: tuple[str, ...] = ()) -> Setup:
    """Preflight, plan, the driver's memory probe and the budget's batch per entry, as `survey plan` does."""
    from survey.engine import cost, memory
    from survey.engine.planning import plan_work
    from survey.engine.preflight import check_tasks, checked_networks
    from survey.engine.worker import SurveyWorker
    from survey.spec import load_study

    text, labels = study_text(label, n, memory_gb, only)
    path = folder / f"study-{list(NETWORKS).index(label)}-{n}.toml"
    path.write_text(text)
    study = load_study(path)
    handles = checked_networks(study)
    work = plan_work(study, handles)
    check_tasks(study, work.units, handles)
    budget = memory.budget_bytes(memory_gb, "cpu")
    worker = SurveyWorker(handles["net"], "cpu", threads=torch.get_num_threads())
    worker._build(work.units[:1])
    probes = cost.probe_network(study, "net", worker.net, worker.physics, "cpu")
    rows = {}
    for unit in work.units:   # one unit per entry (one image each)
        batch = cost.unit_batch(study, unit, probes, budget)
        rows[labels[unit.task_index]] = {"probe_peak": probes[memory.needs_backward(unit.task)].peak(batch),
                                         "batch": batch}
    return Setup(label, n, labels, list(work.units), work, worker, rows)


def run_entry(setup: Setup, index: int) -> dict:
    """CPU seconds (this process, all threads), wall seconds and measured peak bytes of entry `index`'s one image."""
    from survey.engine import cost

    unit = setup.units[index]
    cpu = time.process_time()
    seconds, peak = cost.measure_one_image(setup.worker, unit, setup.work)
    return {"cpu_s": time.process_time() - cpu, "wall_s": seconds, "peak": peak}


def measure(setups: list[Setup], rounds: int, flops: bool) -> dict:
    """label -> size -> task -> the best CPU and wall seconds over `rounds` (sizes ascending, then descending,
    alternating: load that drifts meets every size alike), the largest measured peak, the probe's peak and
    batch, and (at the smallest size) FLOPs."""
    out: dict = {}
    for r in range(rounds):
        for label in dict.fromkeys(s.label for s in setups):
            mine = sorted((s for s in setups if s.label == label), key=lambda s: s.size, reverse=r % 2 == 1)
            for index, task in enumerate(mine[0].labels):
                for setup in mine:
                    got = run_entry(setup, index)
                    cell = out.setdefault(label, {}).setdefault(str(setup.size), {}).setdefault(
                        task, {**setup.rows[task], "cpu_s": [], "wall_s": [], "peak": 0})
                    cell["cpu_s"].append(got["cpu_s"])
                    cell["wall_s"].append(got["wall_s"])
                    cell["peak"] = max(cell["peak"], got["peak"])
                    print(f"round {r + 1} {label} {setup.size} px {task}: {got['cpu_s']:.2f} s CPU, "
                          f"{got['wall_s']:.2f} s wall, {got['peak'] / 2 ** 20:.0f} MB", flush=True)
                    if flops and r == 0 and setup.size == min(s.size for s in mine):
                        cell["flops"] = _count_flops(setup.worker, setup.units[index], setup.work)
    for by_size in out.values():
        for cells in by_size.values():
            for cell in cells.values():
                cell["seconds"], cell["wall"] = min(cell["cpu_s"]), min(cell["wall_s"])
    return out


class _Flops(TorchDispatchMode):
    """Counts FLOPs of every dispatched op the flop registry knows (FlopCounterMode's count without its module
    hooks, which refuse `torch.autograd.grad` to a leaf input)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def _count_flops(worker, unit, work) -> float | None:
    one = dataclasses.replace(unit, image_stop=unit.image_start + 1)
    try:
        with _Flops() as counter:
            (outcome,) = worker.run([one], work.images.get(worker.handle.size, {}), work.ids)
    except Exception:  # noqa: BLE001 - an op the counter cannot follow: no GPU extrapolation for this task
        return None
    if outcome.error is not None:
        print(f"  FLOPs not counted for {unit.task}: {outcome.error.strip().splitlines()[-1]}", flush=True)
        return None
    return float(counter.total)


def table(results: dict, sizes: list[int], gpu_tflops: float) -> str:
    """The README table over the sizes measured for every network (ascending); FLOPs from the smallest."""
    sizes = sorted(n for n in sizes if all(str(n) in by_size for by_size in results.values()))
    lines = [f"| network | task | {' | '.join(f'{n} px' for n in sizes)} | k (time) | k (memory) | "
             f"1,000 images at {sizes[-1]} px here | on one GPU (extrapolated) |",
             "|---|---|" + "---|" * (len(sizes) + 4)]
    n0, last = sizes[0], sizes[-1]
    for label, by_size in results.items():
        for task in by_size[str(n0)]:
            cells = [by_size[str(n)].get(task) for n in sizes]
            if any(c is None for c in cells):
                continue
            secs, peaks = [c["seconds"] for c in cells], [max(c["peak"], 1) for c in cells]
            shown = [f"{_fmt_s(s)}, {p / 2 ** 20:.0f} MB" for s, p in zip(secs, peaks)]
            k_time = exponent(sizes, secs) if len(sizes) > 1 else float("nan")
            k_mem = exponent(sizes, peaks) if len(sizes) > 1 else float("nan")
            flops = cells[0].get("flops")
            gpu = "n/a" if not flops else _gpu_time(flops * (last / n0) ** 2 / (gpu_tflops * 1e12) * STUDY_IMAGES)
            lines.append(f"| {label} | {task} | {' | '.join(shown)} | {k_time:.2f} | {k_mem:.2f} | "
                         f"{_fmt_h(secs[-1] * STUDY_IMAGES)} | {gpu} |")
    return "\n".join(lines)


def _gpu_time(seconds: float) -> str:
    return _fmt_h(seconds) if seconds >= 60 else f"{seconds:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 320])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tasks", nargs="+", default=[], help="only the task labels starting with these")
    parser.add_argument("--rounds", type=int, default=2, help="repeats per cell, sizes ascending then descending")
    parser.add_argument("--memory-gb", type=float, default=8.0)
    parser.add_argument("--gpu-tflops", type=float, default=20.0,
                        help="assumed sustained TFLOP/s of one GPU for the extrapolated column")
    parser.add_argument("--out", default=None)
    parser.add_argument("--table", default=None, help="print the table of a saved --out file and stop")
    args = parser.parse_args()
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        print(f"machine: {saved['machine']}; wall {saved['wall_s']:.0f} s\n")
        print(table(saved["results"], saved["sizes"], args.gpu_tflops))
        return
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        setups = [prepare(label, n, args.memory_gb, Path(folder), tuple(args.tasks))
                  for n in args.sizes for label in args.networks]
        print(f"prepared {len(setups)} (network, size) in {time.time() - started:.0f} s", flush=True)
        results = measure(setups, args.rounds, flops=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "sizes": args.sizes, "rounds": args.rounds,
                                              "wall_s": time.time() - started, "results": results}, indent=1))
    print(f"\nmachine: {machine()}; wall {time.time() - started:.0f} s\n")
    print(table(results, args.sizes, args.gpu_tflops))


if __name__ == "__main__":
    main()

"""How the cost grows with image size: time per unit and peak memory at 64 ... 320 pixels, fitted cost ~ n^k.

Per network (the zoo's U-Net and cascade architectures, the fastMRI U-Net baseline; untrained: time and
memory do not depend on the weights) and per task kind cheap to time in-process:
  attack iteration   one forward + backward to the data, batch 1 (what an attack or budget-search step costs)
  ball draws         forward only, batch 8 (per draw)
and the CS reference solve (survey.solvers, the operator's defaults: 200 FISTA iterations), batch 1.
Peak memory: survey.engine.memory.probe_memory (process peak RSS growth on the CPU, CUDA peak on a GPU).
Cost of a 1,000-image study: attack = 1,000 images x 200 iterations, ball = 1,000 images x 100 draws,
reference = 1,000 solves. The GPU column is extrapolated from counted FLOPs (torch.utils.flop_counter) at an
assumed sustained rate (--gpu-tflops), not measured.

Run: nice -n 10 .venv/bin/python -m benchmarks.scale [--sizes 64 128 256 320] [--out benchmarks/scale.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from benchmarks.common import machine

NETWORKS = {  # label -> (architecture, arch params, physics kind)
    "unet (dagan arch, 0.48M)": ("unet", {"width": 16, "depth": 3, "input_mode": "magnitude"}),
    "cascade (deepmri arch)": ("cascade", {"blocks": 5, "layers": 5, "width": 24}),
    "fastmri-unet (7.8M)": ("fastmri_unet", {"chans": 32, "pools": 4}),
}
ATTACK_ITERATIONS, BALL_DRAWS, STUDY_IMAGES = 200, 100, 1000


def _physics(n: int):
    from survey.physics import make_physics

    return make_physics("mri", size=n, mask="fastmri-random", acceleration=4.0, seed=0)


def _best(fn, repeats: int, warm: bool = True) -> float:
    if warm:
        fn()  # warm-up (allocator, kernels)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def measure_network(arch: str, params: dict, n: int, repeats: int) -> dict:
    from survey.engine.memory import probe_memory
    from survey.nets.zoo import _architectures

    physics = _physics(n)
    torch.manual_seed(0)
    net = _architectures()[arch](**params).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x1, x8 = torch.rand(1, 1, n, n), torch.rand(8, 1, n, n)
    y1, y8 = physics.A(x1), physics.A(x8)

    def step():
        y = y1.clone().requires_grad_(True)
        net(y, physics).square().sum().backward()  # to y only: the parameters are frozen

    def draws():
        with torch.no_grad():
            net(y8, physics)

    warm = n <= 128  # above, one cold call each (the machine is shared; the first call costs little extra there)
    out = {"attack_s": _best(step, repeats, warm), "ball_s": _best(draws, repeats, warm) / 8,
           "attack_flops": _flops(step), "ball_flops": _flops(draws) / 8}
    out["attack_peak"] = probe_memory(net, physics, backward=True, device="cpu").peak(1)
    out["ball_peak"] = probe_memory(net, physics, backward=False, device="cpu").peak(1)
    return out


def measure_reference(n: int, repeats: int) -> dict:
    from survey.engine.memory import PeakMeter
    from survey.solvers import make_reference

    physics = _physics(n)
    ref = make_reference(physics)
    y = physics.A(torch.rand(1, 1, n, n))
    seconds = _best(lambda: ref(y, physics), repeats, n <= 128)
    meter = PeakMeter(torch.device("cpu"))
    meter.start()
    ref(y, physics)
    return {"reference_s": seconds, "reference_peak": meter.peak()}


def exponent(sizes: list[int], values: list[float]) -> float:
    """Least-squares slope k of log(value) on log(n): cost ~ n^k."""
    lx = [math.log(s) for s in sizes]
    ly = [math.log(max(v, 1e-12)) for v in values]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def _fmt_s(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_h(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


def _gpu(seconds: float | None) -> str:
    if seconds is None:
        return "n/a (FFT and wavelet FLOPs are not counted)"
    return _fmt_h(seconds) if seconds >= 60 else f"{seconds:.0f} s"


def table(results: dict, sizes: list[int], gpu_tflops: float) -> str:
    lines = [f"| network | kind | {' | '.join(f'{n} px' for n in sizes)} | k (time) | k (memory) | "
             f"1,000-image study at {sizes[-1]} here | on one GPU (extrapolated) |",
             "|---|---|" + "---|" * (len(sizes) + 4)]
    per_study = {"attack": ATTACK_ITERATIONS, "ball": BALL_DRAWS, "reference": 1}
    for label, by_size in results.items():
        kinds = ["reference"] if label == "reference (CS, 200 FISTA)" else ["attack", "ball"]
        for kind in kinds:
            secs = [by_size[str(n)][f"{kind}_s"] for n in sizes]
            peaks = [by_size[str(n)][f"{kind}_peak"] for n in sizes]
            cells = [f"{_fmt_s(s)}, {p / 2 ** 20:.0f} MB" for s, p in zip(secs, peaks)]
            study = secs[-1] * per_study[kind] * STUDY_IMAGES
            flops = by_size[str(sizes[-1])].get(f"{kind}_flops")
            gpu = None if flops is None else flops / (gpu_tflops * 1e12) * per_study[kind] * STUDY_IMAGES
            k_mem = exponent(sizes, peaks) if min(peaks) > 0 else float("nan")
            lines.append(f"| {label} | {kind} | {' | '.join(cells)} | {exponent(sizes, secs):.2f} | {k_mem:.2f} | "
                         f"{_fmt_h(study)} | {_gpu(gpu)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 320])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gpu-tflops", type=float, default=20.0,
                        help="assumed sustained TFLOP/s of one GPU for the extrapolated column")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    results: dict = {}
    for label, (arch, params) in NETWORKS.items():
        results[label] = {}
        for n in args.sizes:
            results[label][str(n)] = measure_network(arch, params, n, args.repeats if n <= 128 else 1)
            print(label, n, {k: round(v, 4) for k, v in results[label][str(n)].items() if k.endswith("_s")},
                  flush=True)
    results["reference (CS, 200 FISTA)"] = {}
    for n in args.sizes:
        results["reference (CS, 200 FISTA)"][str(n)] = measure_reference(n, args.repeats if n <= 128 else 1)
        print("reference", n, round(results["reference (CS, 200 FISTA)"][str(n)]["reference_s"], 4), flush=True)
    print(f"\nmachine: {machine()}\n")
    print(table(results, args.sizes, args.gpu_tflops))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"machine": machine(), "sizes": args.sizes, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()

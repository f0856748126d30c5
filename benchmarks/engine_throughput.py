"""Engine throughput: attack image-iterations per second through `run_study` (planning, Ray actors,
Parquet store and ledger included) over a bare PyTorch loop doing the same forward and backward work
(Algorithm 1 on the same network, operator and batch size), measured in one run. Target >= 0.9.

    python -m benchmarks.engine_throughput [--images 64] [--per-unit 8] [--iterations 100] [--size 64]

At `--size 256` the same U-Net and operator recipe run on 256 x 256 images (fewer images and iterations fit
the time: e.g. --images 8 --per-unit 4 --iterations 8).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from benchmarks.common import machine

STUDY = """
name = "bench"
seed = 0
[[networks]]
name = "unet"
factory = "survey.nets.unet:UNet"
kwargs = {{ width = 16, depth = 3, input_mode = "magnitude" }}
physics = {{ kind = "mri", size = {size}, ratio = 0.2, mask = "gaussian-lines", seed = 0 }}
[[datasets]]
name = "ellipses"
count = {images}
[[tasks]]
name = "attack"
images_per_unit = {per_unit}
params = {{ iterations = {iterations}, snapshot_levels = [100.0], keep_tensors = false, with_reference = false }}
[engine]
actors_per_network = 1
max_in_flight = 2
cpus_per_actor = {threads}
"""


def bare_loop(images: torch.Tensor, per_unit: int, iterations: int, threads: int, size: int = 64) -> float:
    """Seconds for the same attack work in plain PyTorch: momentum ascent on ||f(A(x + r)) - f(Ax)||^2."""
    from survey.nets.unet import UNet
    from survey.physics import make_physics

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = UNet(width=16, depth=3, input_mode="magnitude").eval()
    for p in net.parameters():
        p.requires_grad_(False)
    physics = make_physics("mri", size=size, ratio=0.2, mask="gaussian-lines", seed=0)
    start = time.perf_counter()
    for lo in range(0, images.shape[0], per_unit):
        x = images[lo:lo + per_unit]
        with torch.no_grad():
            target = net(physics.A(x), physics)
        r = 1e-3 * torch.rand_like(x)
        v = torch.zeros_like(x)
        for _ in range(iterations):
            r.requires_grad_(True)
            loss = 0.5 * (net(physics.A(x + r), physics) - target).pow(2).sum() - 0.005 * r.pow(2).sum()
            (grad,) = torch.autograd.grad(loss, r)
            with torch.no_grad():
                v = 0.9 * v + 1e-3 * grad
                r = r.detach() + v
    return time.perf_counter() - start


def engine_run(images: int, per_unit: int, iterations: int, threads: int, size: int = 64) -> tuple[float, float]:
    """(seconds with a warm Ray cluster, seconds to start the embedded cluster) for the same work."""
    import ray

    from survey.engine.cluster import connect
    from survey.engine.scheduler import run_study
    from survey.spec import load_study

    folder = Path(tempfile.mkdtemp(prefix="survey-bench-"))
    try:
        path = folder / "study.toml"
        path.write_text(textwrap.dedent(STUDY.format(images=images, per_unit=per_unit, iterations=iterations,
                                                     threads=threads, size=size)))
        start = time.perf_counter()
        connect(num_cpus=threads)
        startup = time.perf_counter() - start
        start = time.perf_counter()
        summary = run_study(load_study(path), store_dir=folder / "results")
        seconds = time.perf_counter() - start
        assert summary.failed == 0 and summary.done == images // per_unit, summary
        ray.shutdown()
        return seconds, startup
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--per-unit", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="image size in pixels (64, 256, ...)")
    args = parser.parse_args()
    from survey.data import load_dataset

    images = load_dataset("ellipses", split="test", size=args.size, count=args.images).images
    work = args.images * args.iterations
    bare = bare_loop(images, args.per_unit, args.iterations, args.threads, args.size)
    engine, startup = engine_run(args.images, args.per_unit, args.iterations, args.threads, args.size)
    print(f"machine: {machine()}")
    print(f"work: {args.images} images x {args.iterations} iterations, batch {args.per_unit}, U-Net 483k params, "
          f"{args.size} x {args.size} MRI")
    print(f"bare PyTorch loop: {work / bare:.1f} image-iterations/s ({bare:.1f} s)")
    print(f"survey engine:     {work / engine:.1f} image-iterations/s ({engine:.1f} s, warm cluster; "
          f"cluster start {startup:.1f} s)")
    print(f"ratio engine / bare: {bare / engine:.2f} (target >= 0.9); with cluster start "
          f"{bare / (engine + startup):.2f}; fixed cost of the run (actor start, planning, store) "
          f"~{engine - bare:.1f} s")


if __name__ == "__main__":
    main()

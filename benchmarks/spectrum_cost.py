"""Benchmark: cost of the top-k local Jacobian spectrum per image, in network-call equivalents.

One network-call equivalent is one forward + backward pass of the network on one image (the unit an attack
iteration costs), timed here on the same batch. The spectrum (tasks/spectrum.py) costs one forward with the
graph of J^T w kept, then one jvp (double backward) and one vjp per Krylov vector; the dense alternative is
the full Jacobian, one vjp per output pixel (n^2 of them, batched here through torch.func-free autograd
with is_grads_batched), timed only where it fits (n <= 32 by default), and extrapolated as n^2 passes
otherwise. Ratios, not timed tests: `python -m benchmarks.spectrum_cost --network automap --k 20`.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import machine


def forward_backward(net, physics, x: torch.Tensor) -> float:
    """Seconds of one forward + backward of the network on the batch x (the input's gradient)."""
    y = physics.A(x)
    start = time.perf_counter()
    with torch.enable_grad():
        u = y.clone().requires_grad_(True)
        out = net(u, physics)
        torch.autograd.grad(out.square().sum(), u)
    return time.perf_counter() - start


def dense_jacobian_seconds(net, physics, x: torch.Tensor, chunk: int = 256) -> float:
    """Seconds for the dense Jacobian of r -> f(A(x + r)) at one image (x: (1, 1, n, n)), by batched vjps."""
    start = time.perf_counter()
    with torch.enable_grad():
        r = torch.zeros_like(x, requires_grad=True)
        out = net(physics.A(x + r), physics).reshape(-1)
        eye = torch.eye(out.numel(), dtype=out.dtype)
        for part in eye.split(chunk):
            torch.autograd.grad(out, r, part, retain_graph=True, is_grads_batched=True)
    return time.perf_counter() - start


def main() -> None:
    from survey.data import load_dataset
    from survey.nets.zoo import entry, load_network
    from survey.tasks.spectrum import top_singular

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="automap", help="zoo network")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--dense-max-size", type=int, default=32, help="time the dense Jacobian up to this n")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    net, physics = load_network(args.network)
    for p in net.parameters():
        p.requires_grad_(False)
    x = load_dataset(entry(args.network).dataset, split="test", size=physics.size, count=args.images).images
    unit = min(forward_backward(net, physics, x) for _ in range(3)) / x.shape[0]
    start = time.perf_counter()
    found = top_singular(net, physics, x, args.k, tol=args.tol, generator=torch.Generator().manual_seed(0))
    seconds = (time.perf_counter() - start) / x.shape[0]
    n = physics.size
    print(machine())
    print(f"{args.network} at {n} x {n}, {x.shape[0]} images: forward+backward {1e3 * unit:.1f} ms per image")
    print(f"spectrum k = {args.k} (tol {args.tol:g}): {found.products} J^T J products, {seconds:.2f} s per image = "
          f"{seconds / unit:.0f} network-call equivalents; max residual {float(found.residual.nan_to_num(0).max()):.2g}")
    if n <= args.dense_max_size:
        dense = dense_jacobian_seconds(net, physics, x[:1])
        print(f"dense Jacobian ({n * n} vjps): {dense:.2f} s per image = {dense / unit:.0f} network-call equivalents; "
              f"ratio dense / spectrum {dense / seconds:.1f}")
    else:
        print(f"dense Jacobian: not timed (n = {n}); {n * n} vjps = {n * n} network-call equivalents at least, "
              f"{n * n * unit / seconds:.1f} x the spectrum")


if __name__ == "__main__":
    main()

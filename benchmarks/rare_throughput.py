"""Splitting's batched particle moves against a bare batched forward loop, on a zoo network, in one run.

    .venv/bin/python -m benchmarks.rare_throughput [--particles 25] [--runs 4] [--levels 1] [--steps 10] [--snr 20]

Splitting (survey.rare.splitting through survey.rare.perturbation_score, the `rare` task's path) on one real
brain slice with the gaussian family at an SNR, a threshold out of reach so every level runs its pCN steps:
calls = runs * particles * (1 + steps * levels) reconstructions, the runs moving as one batch of
runs * particles. The bare loop runs the same number of network calls at the same batch on perturbed
measurements made beforehand (y + sigma e). Each side is timed in turn,
best of `repeats`; printed: reconstructions per second of each and the ratio (target >= 0.9).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import machine, setup
from survey.perturb import make_family
from survey.perturb.gaussian import sigma_from_snr
from survey.rare import perturbation_score, splitting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=25)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--levels", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--snr", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    net, physics, images, _ = setup(count=1)
    family = make_family("gaussian")
    x = images[:1]
    with torch.no_grad():
        y = physics.A(x)
        sigma = sigma_from_snr(y, args.snr, physics)
        dim = family.latent_shape(physics)[0]
        width = args.particles * args.runs
        score = perturbation_score(net, physics, y, family, sigma, batch=width, x=x)
        calls = width * (1 + args.steps * args.levels)
        gen = torch.Generator().manual_seed(0)
        z = torch.randn((width, dim), generator=gen, dtype=torch.float64)
        noisy = family.perturb(y, z, sigma, physics)

        def particles():
            result = splitting(score, dim, 1e6, generator=torch.Generator().manual_seed(1),
                               n_particles=args.particles, mcmc_steps=args.steps, runs=args.runs,
                               max_levels=args.levels)
            assert result.calls == calls, result.calls

        def bare():
            for _ in range(calls // width):
                net(noisy, physics)

        net(noisy, physics)   # warm-up: first-call allocations count for neither side
        best = {"splitting": float("inf"), "bare": float("inf")}
        for _ in range(args.repeats):   # in turn, so load from other processes hits both alike
            for name, fn in (("splitting", particles), ("bare", bare)):
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    rate = {k: calls / v for k, v in best.items()}
    print(f"{machine()}; dagan on 64 x 64 MRI, {args.runs} runs x {args.particles} particles, {args.levels} levels x "
          f"{args.steps} pCN "
          f"steps = {calls} reconstructions, SNR {args.snr:g} dB")
    print(f"splitting: {rate['splitting']:.1f} reconstructions/s; bare batched forward loop: {rate['bare']:.1f}/s; "
          f"ratio {rate['splitting'] / rate['bare']:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()

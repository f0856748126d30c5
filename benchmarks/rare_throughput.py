"""Splitting's batched particle moves against a bare batched forward loop, on a zoo network, interleaved in one run.

    .venv/bin/python -m benchmarks.rare_throughput [--particles 25] [--runs 4] [--levels 1] [--steps 4] [--pairs 6]

Splitting (survey.rare.splitting through survey.rare.perturbation_score, the `rare` task's path) on one real
brain slice with the gaussian family at an SNR, a threshold out of reach so every level runs its pCN steps:
calls = runs * particles * (1 + steps * levels) reconstructions, the runs moving as one batch of
runs * particles. The bare loop runs the same number of network calls at the same batch on perturbed
measurements made beforehand (y + sigma e). The two sides alternate in one process, `pairs` times (A B, B A,
A B, ...), so load from other processes hits both alike; printed: the median over pairs of reconstructions per
second of each, the median of the pairs' ratios (target >= 0.9), and the share of the splitting side's time
spent outside the network call (perturbation, distance, the moves' bookkeeping).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import machine, setup
from survey.perturb import make_family
from survey.perturb.gaussian import sigma_from_snr
from survey.rare import perturbation_score, splitting


class TimedNet:
    """The network with its wall time summed (seconds in `spent`), for the share outside it."""

    def __init__(self, net):
        self.net, self.spent = net, 0.0

    def __call__(self, y, physics):
        start = time.perf_counter()
        out = self.net(y, physics)
        self.spent += time.perf_counter() - start
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=25)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--levels", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--snr", type=float, default=20.0)
    parser.add_argument("--pairs", type=int, default=6)
    args = parser.parse_args()
    net, physics, images, _ = setup(count=1)
    timed = TimedNet(net)
    family = make_family("gaussian")
    x = images[:1]
    with torch.no_grad():
        y = physics.A(x)
        sigma = sigma_from_snr(y, args.snr, physics)
        dim = family.latent_shape(physics)[0]
        width = args.particles * args.runs
        score = perturbation_score(timed, physics, y, family, sigma, batch=width, x=x)
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
                timed(noisy, physics)

        timed(noisy, physics)   # warm-up: first-call allocations count for neither side
        seconds = {"splitting": [], "bare": []}
        outside = []
        for i in range(args.pairs):   # A B, B A, ...: a drift in load over a pair hits both sides alike
            order = (("splitting", particles), ("bare", bare))
            for name, fn in order if i % 2 == 0 else order[::-1]:
                timed.spent = 0.0
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
                if name == "splitting":
                    outside.append(1.0 - timed.spent / seconds[name][-1])
    ratios = [b / s for s, b in zip(seconds["splitting"], seconds["bare"])]
    rate = {k: calls / statistics.median(v) for k, v in seconds.items()}
    print(f"{machine()}; dagan on 64 x 64 MRI, {args.runs} runs x {args.particles} particles, {args.levels} levels x "
          f"{args.steps} pCN steps = {calls} reconstructions per side, {args.pairs} interleaved pairs, "
          f"SNR {args.snr:g} dB")
    print(f"splitting: {rate['splitting']:.1f} reconstructions/s; bare batched forward loop: {rate['bare']:.1f}/s "
          f"(medians over pairs)")
    print(f"ratio (median over pairs) {statistics.median(ratios):.3f} (target >= 0.9); pairs "
          f"{' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"splitting's time outside the network call: median {100 * statistics.median(outside):.1f}% "
          f"(pairs {' '.join(f'{100 * o:.1f}' for o in outside)})")


if __name__ == "__main__":
    main()

"""Splitting's batched particle moves against a bare batched forward loop, on a zoo network, interleaved in one run.

    .venv/bin/python -m benchmarks.rare_throughput [--particles 25] [--runs 4] [--levels 1] [--steps 4] [--repeats 5]

Splitting (survey.rare.splitting through survey.rare.perturbation_score, the `rare` task's path) on one real
brain slice with the gaussian family at an SNR, a threshold out of reach so every level runs its pCN steps:
calls = runs * particles * (1 + steps * levels) reconstructions, the runs moving as one batch of
runs * particles. The bare loop's calls run the same network at the same batch on perturbed measurements made
beforehand (y + sigma e), one right after each of splitting's network calls (A B A B ... call by call, so load
from other processes hits both sides alike) and timed apart from it. Printed, as medians over `repeats`:
reconstructions per second of each side, their ratio (target >= 0.9) and the share of splitting's time spent
outside its network calls (perturbation, distance, the moves' bookkeeping).
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


class Interleaved:
    """The network for splitting's score, each of its calls followed by one bare call on `noisy` (the same batch).

    splitting: seconds in splitting's own network calls; bare: seconds in the bare calls."""

    def __init__(self, net, noisy):
        self.net, self.noisy = net, noisy
        self.splitting = self.bare = 0.0

    def __call__(self, y, physics):
        start = time.perf_counter()
        out = self.net(y, physics)
        middle = time.perf_counter()
        self.net(self.noisy, physics)
        self.splitting += middle - start
        self.bare += time.perf_counter() - middle
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=25)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--levels", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
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
        calls = width * (1 + args.steps * args.levels)
        gen = torch.Generator().manual_seed(0)
        z = torch.randn((width, dim), generator=gen, dtype=torch.float64)
        both = Interleaved(net, family.perturb(y, z, sigma, physics))
        score = perturbation_score(both, physics, y, family, sigma, batch=width, x=x)
        net(both.noisy, physics)   # warm-up: first-call allocations count for neither side
        seconds = {"splitting": [], "bare": []}
        outside = []
        for _ in range(args.repeats):
            both.splitting = both.bare = 0.0
            start = time.perf_counter()
            result = splitting(score, dim, 1e6, generator=torch.Generator().manual_seed(1),
                               n_particles=args.particles, mcmc_steps=args.steps, runs=args.runs,
                               max_levels=args.levels)
            total = time.perf_counter() - start - both.bare   # splitting's own time
            assert result.calls == calls, result.calls
            seconds["splitting"].append(total)
            seconds["bare"].append(both.bare)
            outside.append(1.0 - both.splitting / total)
    ratios = [b / s for s, b in zip(seconds["splitting"], seconds["bare"])]
    rate = {k: calls / statistics.median(v) for k, v in seconds.items()}
    print(f"{machine()}; dagan on 64 x 64 MRI, {args.runs} runs x {args.particles} particles, {args.levels} levels x "
          f"{args.steps} pCN steps = {calls} reconstructions per side, interleaved call by call, {args.repeats} "
          f"repeats, SNR {args.snr:g} dB")
    print(f"splitting: {rate['splitting']:.1f} reconstructions/s; bare batched forward loop: {rate['bare']:.1f}/s "
          f"(medians over repeats)")
    print(f"ratio (median over repeats) {statistics.median(ratios):.3f} (target >= 0.9); repeats "
          f"{' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"splitting's time outside its network calls: median {100 * statistics.median(outside):.1f}% "
          f"(repeats {' '.join(f'{100 * o:.1f}' for o in outside)})")

if __name__ == "__main__":
    main()

"""How far a local singular value reaches: finite differences along v_1 against sigma_1.

For a map f and its top right singular vector v_1 at x, ||f(A(x + t v_1)) - f(Ax)|| / t tends to sigma_1 as
t -> 0; how quickly it falls away says over what perturbation sizes sigma_1 describes f. Printed for the
network and for the unrolled CS reference on the network's operator, at steps t = 1e-6 .. 2e-2 of ||x||
(the attack's budgets are 0.5-5%). Not a timed test: `python -m benchmarks.spectrum_locality --network dagan`.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine

STEPS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 2e-2)


def secant_gains(f, physics, x: torch.Tensor, v: torch.Tensor, steps=STEPS) -> list[float]:
    """||f(A(x + t ||x|| v)) - f(Ax)|| / (t ||x||) for each t; x (1, 1, n, n), v a unit image-shaped direction."""
    with torch.no_grad():
        base = f(physics.A(x), physics)
        gains = []
        for t in steps:
            step = t * float(x.norm())
            gains.append(float((f(physics.A(x + step * v), physics) - base).norm()) / step)
    return gains


def main() -> None:
    from survey.data import load_dataset
    from survey.nets.zoo import entry, load_network
    from survey.solvers.cs import make_reference
    from survey.tasks.spectrum import top_singular

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="dagan", help="zoo network")
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    net, physics = load_network(args.network)
    reference = make_reference(physics)
    images = load_dataset(entry(args.network).dataset, split="test", size=physics.size, count=args.images).images
    print(machine())
    print(f"{args.network} at {physics.size} x {physics.size}; secant gains at t ||x||, t = "
          + ", ".join(f"{t:g}" for t in STEPS))
    for i in range(images.shape[0]):
        x = images[i:i + 1]
        for name, f in (("network", net), ("reference", reference)):
            found = top_singular(f, physics, x, 1, tol=1e-3, generator=torch.Generator().manual_seed(0))
            gains = secant_gains(f, physics, x, found.vectors[:, 0])
            print(f"image {i} {name:9s} sigma_1 {float(found.sigma[0, 0]):8.2f} | "
                  + " ".join(f"{g:7.2f}" for g in gains))


if __name__ == "__main__":
    main()

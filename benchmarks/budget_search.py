"""Budget worst-case search throughput on this machine: image-iterations per second of one batched
`worst_case` call (all images x budgets x restarts stacked, one network call per iteration) over the
same search run one (image, budget) at a time.

    python benchmarks/budget_search.py [--network dagan] [--images 4] [--budgets 0.01 0.05] [--iterations 10]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine, setup, timed
from survey.tasks.budget import worst_case


def load(name: str, count: int):
    if name == "dagan":
        net, physics, images, _ = setup(count)
        return net, physics, images
    from survey.data import load_dataset
    from survey.nets.zoo import build_network, build_physics, entry, is_trained, load_network

    torch.set_flush_denormal(True)
    if is_trained(name):
        net, physics = load_network(name)
    else:
        physics = build_physics(name)
        net = build_network(name, physics).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    data = load_dataset(entry(name).dataset, split="test", size=physics.size)
    reps = (count + len(data) - 1) // len(data)
    return net, physics, data.images.repeat(reps, 1, 1, 1)[:count]


def ratio(net, physics, images, budgets, iterations: int, restarts: int, repeats: int = 3) -> tuple[float, float]:
    def batched():
        worst_case(net, physics, images, budgets, iterations=iterations, restarts=restarts,
                   generator=torch.Generator().manual_seed(0))

    def one_at_a_time():
        for i in range(images.shape[0]):
            for eps in budgets:
                worst_case(net, physics, images[i:i + 1], [eps], iterations=iterations, restarts=restarts,
                           generator=torch.Generator().manual_seed(0))

    # Interleaved, best of `repeats` each: on a shared machine load changes between blocks.
    best_batched = best_single = float("inf")
    for _ in range(repeats):
        best_batched = min(best_batched, timed(batched, 1))
        best_single = min(best_single, timed(one_at_a_time, 1))
    work = images.shape[0] * len(budgets) * restarts * iterations
    return work / best_batched, work / best_single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="dagan")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.01, 0.05])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 is "
                        "fairer on a loaded machine, where a multi-threaded op waits for a descheduled thread")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    net, physics, images = load(args.network, args.images)
    print(f"machine: {machine()}")
    batched, single = ratio(net, physics, images, args.budgets, args.iterations, args.restarts, args.repeats)
    print(f"budget search ({args.network}, {args.images} images x {len(args.budgets)} budgets x "
          f"{args.restarts} restarts): batched {batched:.1f} image-iterations/s, one at a time {single:.1f}/s, "
          f"ratio {batched / single:.2f}x")


if __name__ == "__main__":
    main()

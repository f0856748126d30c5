"""Task throughput on this machine, measured in one run:

1. attack: image-iterations per second of one batched call (all images x restarts stacked) over the
   same attack run one image at a time (target >= 1.5x on a 2-core CPU);
2. ball: Gaussian-ball draws per second over a bare loop calling the same network on batches of the
   same size with the same noise work left out (target >= 0.9).

    python benchmarks/task_throughput.py [--images 16] [--iterations 30] [--draws 512]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine, setup, timed
from survey.tasks import TaskContext, generator_for, make_task


def attack_ratio(net, physics, images, ids, iterations: int) -> tuple[float, float]:
    task = make_task("attack", iterations=iterations, snapshot_levels=[100.0], keep_tensors=False,
                     with_reference=False)

    def batched():
        task(TaskContext(net=net, physics=physics, images=images, image_ids=ids), generator_for("bench"))

    def one_at_a_time():
        for i in range(images.shape[0]):
            task(TaskContext(net=net, physics=physics, images=images[i:i + 1], image_ids=ids[i:i + 1]),
                 generator_for("bench"))

    work = images.shape[0] * iterations
    return work / timed(batched, 2), work / timed(one_at_a_time, 2)


def ball_ratio(net, physics, images, ids, draws: int, batch: int) -> tuple[float, float]:
    task = make_task("ball", center="clean", radius=0.05, radius_kind="relative-x", draws=draws, batch=batch,
                     keep_tensors=False)
    images = images[:4]

    def survey_ball():
        task(TaskContext(net=net, physics=physics, images=images, image_ids=ids[:4]), generator_for("bench"))

    y = physics.A(images)
    noisy = y.repeat_interleave(batch // images.shape[0], 0)

    @torch.inference_mode()
    def bare_loop():
        for _ in range(images.shape[0] * draws // batch):
            net(noisy, physics)

    work = images.shape[0] * draws
    return work / timed(survey_ball, 2), work / timed(bare_loop, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--draws", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    net, physics, images, ids = setup(args.images)
    print(f"machine: {machine()}")
    batched, single = attack_ratio(net, physics, images, ids, args.iterations)
    print(f"attack: batched {batched:.1f} image-iterations/s, one at a time {single:.1f}/s, "
          f"ratio {batched / single:.2f}x (target >= 1.5)")
    ball, bare = ball_ratio(net, physics, images, ids, args.draws, args.batch)
    print(f"ball:   {ball:.1f} draws/s, bare forward loop {bare:.1f}/s, ratio {ball / bare:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()

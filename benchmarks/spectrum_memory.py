"""Benchmark: the spectrum task's peak memory per Lanczos block, over the engine's probe of the network.

For each block size and image count, one `top_singular` run (k 1, two blocks of products) is metered by
survey.engine.memory.PeakMeter (VmHWM on Linux), and the ratio (peak - probe.fixed) / (images x block x
probe.per_image) printed: the factor `survey.engine.memory.WORKING_SET_PER["spectrum"]` must cover.
`python -m benchmarks.spectrum_memory --network dagan` (a zoo network at its own size) or `--network varnet320`
(the narrow 8-coil VarNet of tests/test_scale320.py at 320 x 320).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import machine
from survey.engine.memory import WORKING_SET_PER, PeakMeter, probe_memory
from tasks.spectrum import top_singular


def network(name: str):
    """(net, physics) of a zoo network, or the narrow 320 px multi-coil VarNet for "varnet320"."""
    if name == "varnet320":
        from survey.nets.e2e_varnet import E2EVarNet
        from survey.physics import make_physics

        torch.manual_seed(0)
        return (E2EVarNet(cascades=2, chans=4, pools=4, sens_chans=2),
                make_physics("pmri", size=320, mask="fastmri-equispaced", acceleration=4.0, seed=0, coils=8))
    from survey.nets.zoo import build_network, build_physics

    physics = build_physics(name)
    return build_network(name, physics), physics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="dagan")
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--images", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine())
    net, physics = network(args.network)
    net.eval()
    probe = probe_memory(net, physics, network=args.network)
    n = physics.size
    print(f"{args.network} at {n} x {n}: probe fixed {probe.fixed / 2**20:.0f} MB, per image "
          f"{probe.per_image / 2**20:.0f} MB; planned factor per block {WORKING_SET_PER['spectrum'][1]}")
    for block in args.blocks:
        for images in args.images:
            x = torch.rand(images, 1, n, n, generator=torch.Generator().manual_seed(0))
            top_singular(net, physics, x, 1, iterations=block, block=block)   # one-time allocations first
            meter = PeakMeter(torch.device("cpu"))
            meter.start()
            top_singular(net, physics, x, 1, iterations=2 * block, block=block)
            peak = meter.peak()
            factor = (peak - probe.fixed) / (images * block * probe.per_image)
            print(f"  block {block}, {images} image(s): peak {peak / 2**20:.0f} MB, factor {factor:.2f}", flush=True)


if __name__ == "__main__":
    main()

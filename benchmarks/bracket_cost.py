"""Benchmark: what the bracket costs per image, and what it says, on trained zoo networks.

Per network and image: the certificate's tangent pass (the dense clean Jacobian, one tangent per input,
batched), its bound per budget (back-substitution: the pushes of the units that may flip and the backward chord
pass; and the interval pass), the budget search and Lanczos for sigma_1; each also in network-call equivalents
(one forward + backward of the network on one image). Then the bracket at each budget (attack gain <= truth <=
certified gain, sigma_1 beside it; the back-substituted, interval and global certified gains) and center
smoothing's certified radius with its PSNR price. Ratios and figures, not timed tests:

    python -m benchmarks.bracket_cost --networks dncnn dagan ell50 --size 64 --budgets 0.0001 0.001 0.01
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch

from benchmarks.common import machine


def unit_cost(net, physics, x) -> float:
    y = physics.A(x)
    start = time.perf_counter()
    with torch.enable_grad():
        u = y.clone().requires_grad_(True)
        torch.autograd.grad(net(u, physics).square().sum(), u)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["dncnn", "dagan", "ell50"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.001, 0.01])
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--smoothing-noise", type=float, default=0.05)
    parser.add_argument("--no-estimate", action="store_true", help="skip the Lanczos product (slow at 64 x 64)")
    parser.add_argument("--no-smoothing", action="store_true", help="skip center smoothing")
    parser.add_argument("--no-backward", action="store_true", help="skip the backward chord pass")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--iterations", type=int, default=60, help="budget search iterations")
    parser.add_argument("--restarts", type=int, default=4, help="budget search random restarts")
    parser.add_argument("--no-global", action="store_true", help="skip the certified global Lipschitz bound")
    parser.add_argument("--no-certificate", action="store_true",
                        help="skip the certificate, Lanczos and the budget search (center smoothing only)")
    args = parser.parse_args(argv)

    from survey.data import load_dataset
    from survey.nets.lipschitz import lipschitz_bound
    from survey.nets.zoo import entry, load_network
    from survey.physics import make_physics

    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    for name in args.networks:
        e = entry(name)
        net, _ = load_network(name)
        physics = make_physics(**{**e.physics, "size": args.size})
        data = load_dataset(e.dataset, size=args.size, count=args.images)
        glob = None
        if not (args.no_certificate or args.no_global):
            start = time.perf_counter()
            glob = lipschitz_bound(net, physics, estimate=not args.no_estimate)
            t_global = time.perf_counter() - start
            estimate = "" if glob.estimate is None else f", Lanczos estimate {glob.estimate:.4g}"
            print(f"\n{name} at {args.size} x {args.size}: global Lipschitz bound {glob.value:.4g} (certified: "
                  f"{glob.certified}){estimate}, {t_global:.1f} s", flush=True)
        for i in range(args.images):
            x = data.images[i:i + 1].double()
            net32 = copy.deepcopy(net).float().eval()
            net64 = net.double()
            if not args.no_certificate:
                unit = min(unit_cost(net64, physics, x) for _ in range(3))
                with torch.no_grad():
                    clean = net64(physics.A(x), physics)
                print(f"  image {data.ids[i]}: forward+backward {unit * 1e3:.1f} ms", flush=True)
                bracket(args, net, net64, physics, x, clean, glob, unit)
            if not args.no_smoothing:
                print(f"  {name} at {args.size} x {args.size}, image {data.ids[i]}: center smoothing", flush=True)
            for eps in ([] if args.no_smoothing else args.budgets):
                smoothing(args, net32, physics, x, eps)


def bracket(args, net, net64, physics, x, clean, glob, unit) -> None:
    """The certificate, Lanczos and the budget search at one image; one table row per budget."""
    from survey.certify.programs import certify_local
    from survey.tasks.budget import worst_case
    from survey.tasks.spectrum import leading_directions, top_singular

    rho = [b * float(x.norm()) for b in args.budgets]
    start, cpu = time.perf_counter(), time.process_time()
    cert = certify_local(net, physics, x, rho, backward=not args.no_backward)
    t_cert, cpu_cert = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    spec = top_singular(net64, physics, x, 1, tol=1e-3, generator=torch.Generator().manual_seed(0))
    t_spec = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    starts = leading_directions(net64, physics, x, 1, generator=torch.Generator().manual_seed(1))
    attack = worst_case(net64, physics, x, args.budgets, iterations=args.iterations, restarts=args.restarts, starts=starts,
                        generator=torch.Generator().manual_seed(2))
    t_attack, cpu_attack = time.perf_counter() - start, time.process_time() - cpu
    scale = float(x.norm()) / float(clean.norm())
    print(f"    certificate {t_cert:.1f} s wall, {cpu_cert:.1f} CPU-s ({t_cert / unit:.0f} calls: tangent pass {cert.lin.meta['seconds']:.1f} s, "
          f"per budget {', '.join(f'{b.seconds:.1f}' for b in cert.bounds)} s; ||J||_cert {cert.lin.norm:.4g}), "
          f"Lanczos {t_spec:.1f} s, budget search {t_attack:.1f} s ({cpu_attack:.1f} CPU-s)", flush=True)
    print("    budget   attack   sigma_1   certified   gap      back-subst.  intervals   linear  remainder"
          "  unstable  global")
    for k, b in enumerate(cert.bounds):
        unit_gain = float(clean.norm()) * args.budgets[k]
        found = float(attack.gain[k, 0])
        best = min(b.bound, math.inf if glob is None else glob.value * float(x.norm()) * args.budgets[k]) / unit_gain
        flag = "" if found <= best else "  UNSOUND: the attack exceeds the certificate"
        print(f"    {args.budgets[k]:<8g} {found:7.4f}  {float(spec.sigma[0, 0]) * scale:7.4f}"
              f"  {best:10.4g}  {best / found:7.4g}  {b.backsub / unit_gain:10.4g}  {b.interval / unit_gain:10.4g}"
              f"  {b.linear / unit_gain:7.4f}  {b.remainder / unit_gain:9.4g}"
              f"  {b.unstable / max(b.units, 1):7.2%}  {math.nan if glob is None else glob.value * scale:8.4g}{flag}", flush=True)


def smoothing(args, net32, physics, x, eps) -> None:
    """Center smoothing's certified radius at input radius eps ||x|| and its PSNR price, with the network in its
    own precision (float32) as the smoothing task runs it."""
    from survey.certify.smoothing import center_smooth
    from survey.metrics import psnr

    x = x.float()
    with torch.no_grad():
        clean = net32(physics.A(x), physics)
    start = time.perf_counter()
    sm = center_smooth(lambda u: net32(physics.A(u), physics), x, args.smoothing_noise, eps * float(x.norm()),
                       n_center=64, n_cert=512, generator=torch.Generator().manual_seed(3))
    t_sm = time.perf_counter() - start
    centre = sm.centre.view_as(x)
    price = float(psnr(clean.clamp(0, 1), x)[0]) - float(psnr(centre.clamp(0, 1), x)[0])
    gain = None if sm.radius is None else sm.radius / float(centre.norm()) / eps
    print(f"    smoothing noise {args.smoothing_noise:g}, eps {eps:g}: certified radius "
          f"{sm.radius if sm.radius is None else round(sm.radius, 4)} (as a gain {gain if gain is None else round(gain, 1)}), "
          f"p {sm.p:.4f}, {sm.samples} samples, {t_sm:.1f} s, PSNR {float(psnr(clean.clamp(0, 1), x)[0]):.2f} dB, "
          f"price {price:.2f} dB {sm.reason}", flush=True)

if __name__ == "__main__":
    main()

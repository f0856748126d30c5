"""Benchmark: what the certificate would cost per image at a size too large to run it whole here.

The local certificate (survey.certify.programs.certify_local) is three batched passes of the float64 network:
the tangent pass (one tangent per input: n^2 samples), the forward pushes of the units that may flip (at most
`columns` = 4096 samples per budget; the rest go as boxes, one pass each) and the backward chord pass (2 x n^2
objectives per budget, each a forward and a backward). This times a few samples of each pass at size n in CPU
seconds (the process's own CPU time over all its threads, so a loaded machine slows the wall clock, not the
figure) and multiplies by the counts: the cost of one image, the pushes between none and the full 4096.

    python -m benchmarks.bracket_scale --networks dncnn dagan ell50 --sizes 32 64 --samples 4
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from benchmarks.common import machine


def _cpu(fn) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of fn()."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def probe(name: str, size: int, samples: int) -> dict:
    """CPU seconds per sample of each pass of the certificate of zoo network `name` at size x size, one image."""
    from survey.certify.backsub import BackwardOps, PushOps, _chunks, _Const
    from survey.certify.programs import basis_for, builder_for, coefficients_for
    from survey.certify.propagate import CleanOps, Program, TangentOps
    from survey.data import load_dataset
    from survey.nets.zoo import entry, load_network
    from survey.physics import make_physics

    e = entry(name)
    net, _ = load_network(name)
    physics = make_physics(**{**e.physics, "size": size})
    x = load_dataset(e.dataset, size=size, count=1).images.double()
    net64 = copy.deepcopy(net).double().eval()
    prog = Program(builder_for(net)(net64, physics, "image"), lambda u: u, x, coefficients_for(physics, "image", x))
    units, count = basis_for(physics, "image", x)
    clean = CleanOps()
    out = {}
    with torch.no_grad():
        output = prog.run(clean, x)
        prog.run(TangentOps(clean), units(torch.arange(1)))  # warm-up
        out["tangent"] = _cpu(lambda: prog.run(TangentOps(clean), units(torch.arange(samples))))
        pos = [torch.zeros_like(z[0]) for z in clean.inputs] + [torch.zeros_like(output[0])]
        neg = [torch.zeros_like(q) for q in pos]
        inject = torch.rand(samples, *clean.shapes[0][1:], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        zero = torch.zeros_like(x)
        out["push"] = _cpu(lambda: prog.run(PushOps(clean, 0, inject, pos, neg, box=False), zero))
    relax = [(torch.where(z > 0, 1.0, kind[1]).to(z.dtype), torch.zeros_like(z), torch.zeros_like(z))
             if kind[0] == "leaky" else (None, None, torch.zeros(shape, dtype=z.dtype))
             for kind, z, shape in zip(clean.kinds, clean.inputs, clean.shapes)]

    def backward(count=samples):
        with torch.enable_grad():
            t = torch.zeros(count, *x.shape[1:], dtype=x.dtype, requires_grad=True)
            o = prog.run(BackwardOps(clean, relax, _Const(count, x)), t)
            torch.autograd.grad(o, t, torch.ones_like(o))
    backward(1)  # warm-up: the first backward pass of a process pays autograd's set-up
    out["backward"] = _cpu(backward)
    per = {k: v[0] / samples for k, v in out.items()}
    outputs = output.numel()
    return {"name": name, "size": size, "inputs": count, "outputs": outputs, "chunks": _chunks(clean),
            "units": sum(z.numel() for z in clean.inputs), "per": per, "wall": {k: v[1] / samples for k, v in out.items()},
            "tangent_pass": per["tangent"] * count, "pushes_full": per["push"] * 4096,
            "backward_pass": per["backward"] * 2 * outputs, "jacobian_mib": count * outputs * 8 / 2 ** 20}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["dncnn", "dagan", "ell50"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--samples", type=int, default=4, help="samples timed per pass")
    parser.add_argument("--budgets", type=int, default=2, help="budgets per image (pushes and backward per budget)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time without spin-waits)")
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; CPU seconds (all threads), per sample (batches of --samples; whole runs measured up to 2x more per sample) and per image")
    for size in args.sizes:
        for name in args.networks:
            r = probe(name, size, args.samples)
            low = r["tangent_pass"] + args.budgets * r["backward_pass"]
            high = low + args.budgets * r["pushes_full"]
            print(f"{name} at {size} x {size}: {r['inputs']} inputs, {r['units']} nonlinear units; per sample "
                  f"tangent {r['per']['tangent']:.3f} s, push {r['per']['push']:.3f} s, backward "
                  f"{r['per']['backward']:.3f} s (CPU; wall {r['wall']['tangent']:.2f} / {r['wall']['push']:.2f} / "
                  f"{r['wall']['backward']:.2f} s); tangent pass {r['tangent_pass'] / 3600:.2f} h, per budget: "
                  f"backward pass {r['backward_pass'] / 3600:.2f} h, pushes up to {r['pushes_full'] / 3600:.2f} h; "
                  f"one image at {args.budgets} budgets {low / 3600:.1f}-{high / 3600:.1f} CPU-h; dense J "
                  f"{r['jacobian_mib']:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()

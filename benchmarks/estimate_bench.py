"""Time `survey.analysis.estimate.estimate` on synthetic Gaussian-ball rows (default 10^7) in a temporary store.

    .venv/bin/python benchmarks/estimate_bench.py [--rows 10000000] [--images 500] [--networks 4]

Rows are written as a few Parquet files in the store layout (ball/network=<name>/part-*.parquet),
with per-image bad probabilities p_i ~ Beta(2, 8) and equal draws per image (--ragged: unequal);
then the estimate (four intervals, B = 2000 bootstrap resamples of images) is timed per network,
per (network, radius) and per image.
Prints the seconds and the machine.

    .venv/bin/python benchmarks/estimate_bench.py --coverage [--reps 1000] [--draws 100]

instead prints the coverage table of docs/INTERVALS.md: per-image P(bad) ~ Beta(p c, (1 - p) c) with
intra-image correlation rho = 1 / (c + 1) (rho = 0: every image has P(bad) = p; rho = 1: each image is
all-bad with probability p), m images, --draws draws per image; the share of --reps repetitions whose
95% interval holds the population value p, per method, and the primary interval's mean width.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from survey.analysis.estimate import METHODS, estimate  # noqa: E402
from survey.analysis.intervals import (clopper_pearson, cluster_exact, cluster_t,  # noqa: E402
                                       image_moments)


def _labels(values: list[str], indices: np.ndarray) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), pa.array(values))


def write_ball_store(root: Path, rows: int, images: int, networks: int, files_per_network: int = 2,
                     ragged: bool = False, seed: int = 0) -> None:
    """`rows` ball rows over `networks` x `images` images, draws correlated within images.

    By default every image gets the same number of draws at each of four radii (as the ball task
    makes them); `ragged` assigns rows to images at random instead (unequal draws per image).
    """
    rng = np.random.default_rng(seed)
    per_file = rows // (networks * files_per_network)
    per_image = rows // (networks * images)
    image_names = [f"brain-{i:05d}" for i in range(images)]
    radii = np.array([0.0025, 0.005, 0.01, 0.02])
    for net in range(networks):
        name = f"net{net}"
        p_image = rng.beta(2, 8, size=images)
        for f in range(files_per_network):
            if ragged:
                image = rng.integers(0, images, size=per_file)
                radius = rng.choice(radii, size=per_file)
            else:
                image = np.arange(f * per_file, (f + 1) * per_file) // per_image
                radius = radii[np.arange(per_file) % 4]
            change = np.where(rng.random(per_file) < p_image[image], rng.uniform(0.3, 1.0, per_file),
                              rng.uniform(0.0, 0.2, per_file))
            table = pa.table({
                "unit_id": _labels([f"u{net}-{f}"], np.zeros(per_file)),
                "network": _labels([name], np.zeros(per_file)),
                "dataset": _labels(["brain"], np.zeros(per_file)),
                "task": _labels(["ball"], np.zeros(per_file)),
                "run_id": _labels(["bench"], np.zeros(per_file)),
                "image_id": _labels(image_names, image),
                "radius_kind": _labels(["quarter_r"], np.zeros(per_file)),
                "radius": radius,
                "draw": np.arange(per_file, dtype=np.int64),
                "out_change_rel": change,
                "err_rel": change + 0.05,
                "psnr": 30.0 - 20 * change,
            })
            out = root / "ball" / f"network={name}" / f"part-{uuid.uuid4().hex}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, out, compression="zstd")


def population_counts(rng: np.random.Generator, reps: int, m: int, draws: int, p: float,
                      rho: float) -> np.ndarray:
    """(reps, m) bad counts of `draws` draws per image; per-image P(bad) ~ Beta with mean p, correlation rho."""
    if p in (0.0, 1.0) or rho == 0:
        p_image = np.full((reps, m), p)
    elif rho == 1:
        p_image = (rng.random((reps, m)) < p).astype(np.float64)
    else:
        c = 1 / rho - 1
        p_image = rng.beta(p * c, (1 - p) * c, size=(reps, m))
    return rng.binomial(draws, p_image)


def coverage_row(rng: np.random.Generator, reps: int, m: int, draws: int, p: float, rho: float,
                 n_boot: int = 400) -> dict[str, float]:
    """Coverage of the population value p by each method's 95% interval over `reps` repetitions."""
    k = population_counts(rng, reps, m, draws, p, rho)
    groups = np.repeat(np.arange(reps), m)
    mo = image_moments(k.ravel(), np.full(k.size, draws), groups)
    low, high, _ = cluster_exact(mo["mean"], mo["var_mean"], mo["m"], mo["n_indep"], mo["df"])
    edge = (mo["mean"] <= 0) | (mo["mean"] >= 1)
    t_low, t_high = cluster_t(mo["mean"], mo["var_mean"], mo["m"])
    t_low, t_high = np.where(edge, low, t_low), np.where(edge, high, t_high)
    cp_low, cp_high = clopper_pearson(k.sum(axis=1), m * draws)
    idx = rng.integers(0, m, size=(n_boot, m))
    boot = k[:, idx].sum(axis=2) / (m * draws)          # (reps, n_boot) percentile image bootstrap
    b_low, b_high = np.quantile(boot, [0.025, 0.975], axis=1)
    tol = 1e-12
    covers = lambda lo, hi: float(np.mean((lo <= p + tol) & (p - tol <= hi)))  # noqa: E731
    return {"pooled clopper-pearson": covers(cp_low, cp_high), "bootstrap (percentile)": covers(b_low, b_high),
            "cluster-t (+ edge)": covers(t_low, t_high), "cluster-exact": covers(low, high),
            "width": float(np.mean(high - low))}


def coverage_table(reps: int = 1000, draws: int = 100, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    print(f"coverage of the population value by 95% intervals, {reps} repetitions, {draws} draws per image")
    header = None
    for m in (10, 20, 48):
        for p in (0.0, 1e-3, 1e-2, 0.05, 0.2, 0.5, 1.0):
            for rho in ((0.0,) if p in (0.0, 1.0) else (0.0, 0.01, 0.1, 0.5, 1.0)):
                row = coverage_row(rng, reps, m, draws, p, rho)
                if header is None:
                    header = list(row)
                    print("| m | p | rho | " + " | ".join(header) + " |")
                    print("|" + "---|" * (3 + len(header)))
                print(f"| {m} | {p:g} | {rho:g} | " + " | ".join(f"{row[h]:.3f}" if h != "width" else f"{row[h]:.4f}"
                                                              for h in header) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--images", type=int, default=500, help="images per network")
    parser.add_argument("--networks", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ragged", action="store_true", help="unequal draws per image (slower bootstrap)")
    parser.add_argument("--coverage", action="store_true", help="print the interval coverage table instead")
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=100, help="draws per image (--coverage)")
    args = parser.parse_args()
    if args.coverage:
        coverage_table(args.reps, args.draws)
        return

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs visible; python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="estimate-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_ball_store(root, args.rows, args.images, args.networks, ragged=args.ragged)
        size = sum(p.stat().st_size for p in root.rglob("*.parquet")) / 2**20
        print(f"wrote {args.rows:,} rows ({size:.0f} MiB Parquet) in {time.perf_counter() - t0:.1f} s")
        cases = [("per network", "out_change_rel >= 0.25", dict(by=["network"])),
                 ("per (network, radius)", "out_change_rel >= 0.25", dict(by=["network", "radius"])),
                 ("per image, by network", "out_change_rel >= 0.9999", dict(by=["network"], per="image"))]
        for label, bad, kwargs in cases:
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                rows = estimate(root, "ball", bad, **kwargs)
                times.append(time.perf_counter() - t0)
            first = rows[0]
            print(f"{label:<24} best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s "
                  f"({len(rows) // len(METHODS)} groups; e.g. p={first['p']:.4f} n={first['n']:,} "
                  f"clusters={first['clusters']})")


if __name__ == "__main__":
    main()

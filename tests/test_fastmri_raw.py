"""fastMRI as its users know it: raw k-space from fastMRI-layout HDF5 files as the measurements, under
fastMRI's column masks (survey.physics.fastmri_masks), through the attack and the ball on real Ray."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from survey.data import load_dataset
from survey.data.fastmri import centred_fft, centred_ifft, read_raw, to_raw_layout
from survey.physics import make_physics
from survey.physics.fastmri_masks import adjusted_acceleration, make_fastmri_columns, make_fastmri_mask
from tests.conftest import write_study

N = 32


def write_fastmri(path, kspace: np.ndarray, acquisition: str = "CORPD_FBK") -> None:
    """A file in fastMRI's layout: 'kspace' (slices, [coils,] rows, cols) complex64, 'ismrmrd_header', attrs."""
    import h5py

    with h5py.File(path, "w") as f:
        f["kspace"] = kspace.astype(np.complex64)
        f["ismrmrd_header"] = np.bytes_(b"<?xml version='1.0'?><ismrmrdHeader/>")
        f.attrs["acquisition"] = acquisition
        f.attrs["max"] = float(np.abs(kspace).max())
        f.attrs["norm"] = float(np.linalg.norm(kspace))
        f.attrs["patient_id"] = "test"


def phantom_kspace(rng, slices: int, rows: int, cols: int, coils: int | None = None) -> np.ndarray:
    """Centred k-space of a smooth complex object (per coil: smooth sensitivities) plus complex noise."""
    yy, xx = np.mgrid[-1:1:rows * 1j, -1:1:cols * 1j]
    obj = np.stack([(xx**2 / 0.5 + yy**2 / 0.7 < 1) * (0.6 + 0.3 * s) * np.exp(1j * (xx + s * yy))
                    for s in range(slices)])
    if coils is None:
        k = centred_fft(obj)
    else:
        maps = np.stack([np.exp(-((xx - np.cos(c))**2 + (yy - np.sin(c))**2)) * np.exp(1j * c) for c in range(coils)])
        k = centred_fft(obj[:, None] * maps[None])
    return k + 0.01 * (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape))


# ---------------------------------------------------------------- masks

@pytest.mark.parametrize("n, fraction", [(32, 0.08), (368, 0.08), (368, 0.04), (320, 0.1)])
def test_centre_lines_as_fastmri(n, fraction):
    for kind in ("fastmri-equispaced", "fastmri-random"):
        columns = make_fastmri_columns(kind, n, 4, fraction, seed=3)
        low = round(n * fraction)
        pad = (n - low + 1) // 2
        assert columns[pad:pad + low].all()
        assert pad <= n // 2 < pad + low or low == 0       # DC inside the centre band


def test_equispaced_lattice_offsets_and_acceleration():
    n, acc, fraction = 368, 4, 0.08
    low = round(n * fraction)
    a = adjusted_acceleration(n, acc, low)
    assert a == pytest.approx(acc * (low - n) / (low * acc - n))
    pad = (n - low + 1) // 2
    centre = np.zeros(n, dtype=bool)
    centre[pad:pad + low] = True
    for offset in range(round(a)):
        columns = make_fastmri_columns("fastmri-equispaced", n, acc, fraction, offset=offset)
        lattice = np.zeros(n, dtype=bool)
        lattice[np.around(np.arange(offset, n - 1, a)).astype(int)] = True
        assert np.array_equal(columns, centre | lattice)
        assert n / columns.sum() == pytest.approx(acc, rel=0.08)   # the adjusted spacing meets 4x
    # without an offset: fastMRI's draw, RandomState(seed), one randint(1) for the pair, then the offset
    for seed in range(5):
        rng = np.random.RandomState(seed)
        rng.randint(1)
        offset = rng.randint(0, high=round(a))
        assert np.array_equal(make_fastmri_columns("fastmri-equispaced", n, acc, fraction, seed=seed),
                              make_fastmri_columns("fastmri-equispaced", n, acc, fraction, offset=offset))


def test_random_mask_probability_and_seed():
    n, acc, fraction = 368, 4, 0.08
    low = round(n * fraction)
    counts = [make_fastmri_columns("fastmri-random", n, acc, fraction, seed=s).sum() for s in range(200)]
    # outside the centre each column is drawn with p = (n / acc - low) / (n - low): n / acc in expectation
    # (up to the draws that land in the centre band)
    p = (n / acc - low) / (n - low)
    expected = low + (n - low) * p
    assert np.mean(counts) == pytest.approx(expected, rel=0.02)
    a = make_fastmri_columns("fastmri-random", n, acc, fraction, seed=7)
    assert np.array_equal(a, make_fastmri_columns("fastmri-random", n, acc, fraction, seed=7))
    assert not np.array_equal(a, make_fastmri_columns("fastmri-random", n, acc, fraction, seed=8))
    rng = np.random.RandomState(7)
    rng.randint(1)
    pad = (n - low + 1) // 2
    replay = rng.uniform(size=n) < p
    replay[pad:pad + low] = True
    assert np.array_equal(a, replay)


def test_masks_sample_whole_columns_and_the_operator_checks_its_parameters():
    mask = make_fastmri_mask("fastmri-equispaced", N, 4, 0.08, seed=0)
    assert mask.shape == (N, N) and mask.dtype == torch.bool
    assert torch.equal(mask, mask[:1].expand(N, N))                   # columns: the phase-encode axis
    physics = make_physics("mri", size=N, mask="fastmri-equispaced", acceleration=4, center_fraction=0.08)
    assert torch.equal(physics.mask, mask)
    facts = physics.describe()
    assert facts["acceleration"] == 4.0 and facts["center_fraction"] == 0.08 and facts["mask"] == "fastmri-equispaced"
    assert make_physics("mri", size=N, mask="fastmri-random").describe()["center_fraction"] == 0.08  # 4x default
    with pytest.raises(ValueError, match="not `ratio`"):
        make_physics("mri", size=N, mask="fastmri-random", ratio=0.25)
    with pytest.raises(ValueError, match="fastMRI mask kinds"):
        make_physics("mri", size=N, mask="uniform-lines", acceleration=4)
    with pytest.raises(ValueError, match="acceleration"):
        make_fastmri_mask("fastmri-random", N, 0.5)
    with pytest.raises(ValueError, match="offset"):
        make_fastmri_mask("fastmri-random", N, 4, offset=1)
    # a sweep moves the acceleration
    assert physics.at_ratio(0.5).describe()["acceleration"] == 2.0


def test_operator_with_fastmri_mask_is_adjoint_on_complex_images():
    physics = make_physics("mri", size=N, mask="fastmri-random", acceleration=4, seed=1).to(torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, N, N, dtype=torch.complex128, generator=g)
    y = torch.randn(2, 1, N, N, dtype=torch.complex128, generator=g)
    lhs = torch.vdot(physics.A(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), physics.A_adjoint(y).flatten())
    assert torch.allclose(lhs, rhs, rtol=1e-10)


# ---------------------------------------------------------------- raw k-space as the measurements

def test_single_coil_measurements_are_the_raw_kspace(tmp_path):
    kspace = phantom_kspace(np.random.default_rng(0), 3, N, N)
    write_fastmri(tmp_path / "file_sc.h5", kspace, "CORPD_FBK")
    images = load_dataset("fastmri", size=N, path=tmp_path, source="kspace")
    assert images.ids == [f"fastmri/file_sc.h5#{i}" for i in range(3)]
    assert images.images.dtype == torch.complex64 and images.images.shape == (3, 1, N, N)
    assert float(images.images.abs().max()) == pytest.approx(1.0, abs=1e-6)   # per-volume scale
    import h5py
    with h5py.File(tmp_path / "file_sc.h5") as f:
        volume = read_raw(f["kspace"], N)
    assert f"file_sc.h5 {volume.scale:.6g}" in images.source                 # the scale is recorded
    # x is fastMRI's centred image of the k-space
    assert np.allclose(images.images[:, 0].numpy() * volume.scale, centred_ifft(kspace), atol=1e-5)
    raw = torch.from_numpy(kspace.astype(np.complex64))[:, None]
    for mask in ("fastmri-equispaced", "fastmri-random"):
        physics = make_physics("mri", size=N, mask=mask, acceleration=4, center_fraction=0.08, seed=2)
        measured = to_raw_layout(physics.A(images.images)) * volume.scale
        assert torch.allclose(measured, physics.mask * raw, atol=1e-5 * float(raw.abs().max()), rtol=0)
        assert torch.equal(measured != 0, physics.mask.expand_as(measured))


def test_multi_coil_is_compressed_to_one_virtual_coil_exactly(tmp_path):
    rng = np.random.default_rng(1)
    kspace = phantom_kspace(rng, 2, 40, N, coils=4)                          # tall, like fastMRI
    write_fastmri(tmp_path / "file_mc.h5", kspace, "CORPDFS_FBK")
    import h5py

    # the combination is the principal left singular vector of the (coils, samples) matrix
    u = np.linalg.svd(np.moveaxis(kspace, 1, 0).reshape(4, -1), full_matrices=False)[0][:, 0]
    for readout in ("kspace", "image"):
        images = load_dataset("fastmri", size=N, path=tmp_path / "file_mc.h5", source="kspace", readout=readout)
        with h5py.File(tmp_path / "file_mc.h5") as f:
            volume = read_raw(f["kspace"], N, readout)
        w = volume.weights
        assert np.linalg.norm(w) == pytest.approx(1.0) and abs(np.vdot(w, u)) == pytest.approx(1.0, abs=1e-6)
        virtual = np.tensordot(w.conj(), kspace, axes=(0, 1))                  # (slices, 40, N)
        if readout == "kspace":       # rows cropped in k-space: the kept samples are the acquired ones
            expected = virtual[:, 4:36]
        else:                         # readout oversampling removed in image space, columns untouched
            expected = centred_fft(centred_ifft(virtual, axes=(-2,))[:, 4:36], axes=(-2,))
            assert np.allclose(centred_ifft(expected), centred_ifft(virtual)[:, 4:36])  # the central rows
        physics = make_physics("mri", size=N, mask="fastmri-equispaced", acceleration=4, center_fraction=0.08)
        measured = to_raw_layout(physics.A(images.images)) * volume.scale
        target = physics.mask * torch.from_numpy(expected.astype(np.complex64))[:, None]
        assert torch.allclose(measured, target, atol=1e-5 * float(target.abs().max()), rtol=0)
    # a rank-one coil model (the same image in every coil, fixed complex gains) is kept whole
    gains = np.array([1.0, 0.5j, -0.3, 0.2 + 0.1j])
    single = phantom_kspace(rng, 2, N, N)
    write_fastmri(tmp_path / "rank1.h5", gains[None, :, None, None] * single[:, None])
    with h5py.File(tmp_path / "rank1.h5") as f:
        volume = read_raw(f["kspace"], N)
    assert abs(np.vdot(volume.weights, gains / np.linalg.norm(gains))) == pytest.approx(1.0)
    assert np.allclose(np.abs(volume.kspace), np.linalg.norm(gains) * np.abs(single))


def test_magnitude_option_hashes_and_unusable_files(tmp_path):
    kspace = phantom_kspace(np.random.default_rng(2), 2, N, N)
    write_fastmri(tmp_path / "a.h5", kspace)
    complex_set = load_dataset("fastmri", size=N, path=tmp_path / "a.h5", source="kspace")
    magnitude = load_dataset("fastmri", size=N, path=tmp_path / "a.h5", source="kspace", image="magnitude")
    assert magnitude.images.dtype == torch.float32
    assert torch.allclose(magnitude.images, complex_set.images.abs())
    conj = type(complex_set)("fastmri", "test", complex_set.ids, complex_set.images.conj().resolve_conj(),
                             complex_set.source)
    assert conj.content_hash != complex_set.content_hash                     # the imaginary part counts
    assert magnitude.content_hash != complex_set.content_hash
    write_fastmri(tmp_path / "small.h5", kspace[:, :16, :16])
    found = load_dataset("fastmri", size=N, path=tmp_path, source="kspace")
    assert found.ids == complex_set.ids
    assert "smaller than size 32" in dict(found.skipped)["small.h5"]
    with pytest.raises(ValueError, match="even size"):
        load_dataset("fastmri", size=31, path=tmp_path / "a.h5", source="kspace")
    with pytest.raises(ValueError, match="source must be one of"):
        load_dataset("fastmri", size=N, path=tmp_path / "a.h5", source="raw")


# ---------------------------------------------------------------- a study on real Ray

STUDY = """
name = "fastmri-raw"
seed = 3
store = "results"

[[networks]]
name = "tiny"
factory = "tiny_net.py:build"
physics = { kind = "mri", size = 32, mask = "fastmri-equispaced", acceleration = 4, center_fraction = 0.08 }

[[datasets]]
name = "knee"
kind = "fastmri"
params = { path = "knee.h5", source = "kspace" }

[[tasks]]
name = "attack"
images_per_unit = 2
params = { iterations = 4, eta = 0.01, snapshot_levels = [0.01], with_reference = false }

[[tasks]]
name = "ball"
images_per_unit = 2
params = { draws = 3, batch = 8, radius = 0.25, attack = { iterations = 3, eta = 0.01 } }
"""


@pytest.mark.slow
def test_a_study_undersamples_raw_kspace_4x_and_runs_attack_and_ball(tmp_path, ray_local):
    from typer.testing import CliRunner

    from survey.cli import app

    path = write_study(tmp_path, STUDY)
    write_fastmri(tmp_path / "knee.h5", phantom_kspace(np.random.default_rng(3), 2, N, N, coils=4))
    result = CliRunner().invoke(app, ["run", str(path), "--store", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    ids = {"fastmri/knee.h5#0", "fastmri/knee.h5#1"}
    attacks = pq.read_table(tmp_path / "results" / "attacks", partitioning="hive").to_pylist()
    assert {r["image_id"] for r in attacks} == ids and {r["dataset"] for r in attacks} == {"knee"}
    assert all(np.isfinite(r["out_change_rel"]) and r["r_norm"] > 0 for r in attacks)
    ball = pq.read_table(tmp_path / "results" / "ball", partitioning="hive").to_pylist()
    assert len(ball) == 2 * 3 and {r["image_id"] for r in ball} == ids
    assert all(np.isfinite(r["out_change_rel"]) for r in ball)

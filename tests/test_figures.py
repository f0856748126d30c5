"""Figures: tensors are found through the rows' tensor_file / tensor_index, files are written, data shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from survey.analysis import figures
from survey.store import Store


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64)


@pytest.fixture()
def attack_store(tmp_path):
    """A store holding one attack unit's kept tensors (3 snapshots of one sample) and its rows."""
    store = Store.open(tmp_path / "store")
    gen = torch.Generator().manual_seed(0)
    r = torch.stack([0.01 * (s + 1) * torch.randn(1, 16, 16, generator=gen) for s in range(3)])
    out = 0.5 + 0.1 * torch.randn(3, 1, 16, 16, generator=gen)
    ref_out = out + 0.01
    rel, digest = store.write_tensors("unit-a", {"r": r, "out": out, "ref_out": ref_out})
    rows = [{"unit_id": "unit-a", "network": "net", "image_id": "img/0", "restart": 0, "snapshot": "level",
             "snapshot_target": t, "r_rel": t * 1.1, "iteration": 5 * (k + 1), "psnr": 30.0 - k, "ref_psnr": 35.0,
             "psnr_clean": 31.0, "ref_psnr_clean": 36.0, "psnr_visibility": 50.0 - 5 * k,
             "tensor_file": rel, "tensor_sha256": digest, "tensor_index": k}
            for k, t in enumerate((0.01, 0.02, 0.05))]
    return store.root, rows, {"r": r, "out": out, "ref_out": ref_out}


def test_row_tensors_follow_tensor_index_and_per_image_keys(attack_store, tmp_path):
    root, rows, kept = attack_store
    got = figures.row_tensors(root, rows[2])
    assert set(got) == {"r", "out", "ref_out"}
    assert torch.equal(got["r"], kept["r"][2]) and torch.equal(got["out"], kept["out"][2])
    assert set(figures.row_tensors(root, rows[0], ("out",))) == {"out"}
    # ball-style keys are indexed by image_index, whatever the row's tensor_index
    store = Store(root)
    centres = torch.arange(2 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16)
    rel, _ = store.write_tensors("unit-b", {"per_image/r": centres})
    got = figures.row_tensors(root, {"unit_id": "unit-b", "tensor_file": rel, "tensor_index": 57, "image_index": 1})
    assert torch.equal(got["r"], centres[1])
    with pytest.raises(ValueError, match="does not exist"):
        figures.row_tensors(root, {**rows[0], "tensor_file": "tensors/missing.safetensors"})
    with pytest.raises(ValueError, match="kept no tensors"):
        figures.row_tensors(root, {**rows[0], "tensor_file": None})


def test_attack_grid_png_and_svg_with_and_without_truth(attack_store, tmp_path):
    root, rows, _ = attack_store
    x = torch.rand(16, 16, generator=torch.Generator().manual_seed(1))
    with_x = figures.attack_grid(root, list(reversed(rows)), tmp_path / "figs" / "grid", x=x, svg=True)
    assert [p.suffix for p in with_x] == [".png", ".svg"] and all(p.stat().st_size > 0 for p in with_x)
    assert "<svg" in with_x[1].read_text()[:2000]
    without = figures.attack_grid(root, rows, tmp_path / "figs" / "grid_nox")
    assert len(without) == 1
    wide, narrow = Image.open(with_x[0]).size, Image.open(without[0]).size
    assert wide[0] > narrow[0]  # the ground-truth column is there only when x is given
    assert _pixels(with_x[0]).std() > 10


def test_attack_grid_shows_measurement_domain_perturbations(tmp_path):
    store = Store.open(tmp_path / "store")
    e = torch.randn(2, 1, 16, 16, dtype=torch.complex64)
    rel, _ = store.write_tensors("u", {"r": e[:, :, :, :9].contiguous(), "out": torch.rand(2, 1, 16, 16)})
    rows = [{"unit_id": "u", "network": "n", "image_id": "i", "r_rel": 0.01 * (k + 1), "tensor_file": rel,
             "tensor_index": k} for k in range(2)]
    (png,) = figures.attack_grid(store.root, rows, tmp_path / "meas")
    assert png.exists() and _pixels(png).std() > 5


def test_statistics_figures_write_pngs_and_refuse_empty_input(tmp_path):
    rng = np.random.default_rng(0)
    attacks = pd.DataFrame({"network": ["a"] * 6 + ["b"] * 6, "r_rel": np.tile([0.01, 0.02, 0.05], 4),
                            "out_change_rel": rng.uniform(0.01, 0.2, 12),
                            "ref_out_change_rel": rng.uniform(0, 0.05, 12)})
    estimates = [{"network": n, "radius": r, "p": 0.5, "ci_low": 0.3, "ci_high": 0.7, "method": m}
                 for n in ("a", "b") for r in (0.1, 0.25, 0.5) for m in ("clopper-pearson", "wilson")]
    sweeps = pd.DataFrame({"network": "a", "axis": "ratio", "value": np.repeat([0.2, 0.3, 0.5, 1.0], 3),
                           "train_value": 0.3, "psnr": rng.uniform(20, 30, 12), "ref_psnr": rng.uniform(25, 40, 12),
                           "h_psnr": [18, 19, 20, 21, 22, 23, 24, 25, 26, 150, 151, 149]})
    made = [figures.instability_curves(attacks, tmp_path / "inst"),
            figures.ball_curves(estimates, tmp_path / "ball", svg=True),
            figures.recovery_rates([dict(e, solver="network") for e in estimates if e["radius"] == 0.1],
                                   tmp_path / "rec"),
            figures.sweep_curves(sweeps, tmp_path / "sweep")]
    for paths in made:
        assert paths[0].suffix == ".png" and _pixels(paths[0]).std() > 5
    assert made[1][1].suffix == ".svg"
    with pytest.raises(ValueError):
        figures.instability_curves(attacks.iloc[:0], tmp_path / "empty")
    with pytest.raises(ValueError, match="no clopper-pearson"):
        figures.ball_curves([e for e in estimates if e["method"] == "wilson"], tmp_path / "none")


def test_image_grid_keeps_its_signature(tmp_path):
    path = figures.image_grid([torch.rand(8, 8), torch.rand(8, 8, dtype=torch.complex64)], ["a", "b"],
                              out=tmp_path / "g.png")
    assert path == tmp_path / "g.png" and path.exists()


def test_tensors_of_a_retracted_unit_are_never_served(tmp_path):
    """`forget` deletes a unit's tensors and a rerun rewrites the same file: the cache must not serve the old
    tensors, and a stale row (its sha256) must not borrow the new ones."""
    store = Store.open(tmp_path / "store")
    try:
        old = torch.zeros(2, 1, 8, 8)
        rel, digest = store.write_tensors("unit-r", {"out": old})
        store.record_units([{"unit_id": "unit-r", "status": "ok", "network": "n", "dataset": "d", "task": "attack",
                             "rows": 2, "seconds": 0.1, "error": None, "attempts": 1, "run_id": "r",
                             "finished_at": 1.0, "fragments": []}])
        stale = {"unit_id": "unit-r", "tensor_file": rel, "tensor_sha256": digest, "tensor_index": 1}
        assert torch.equal(figures.row_tensors(store.root, stale)["out"], old[1])   # now cached
        assert store.forget(["unit-r"], "test") == 1
        with pytest.raises(ValueError, match="does not exist"):
            figures.row_tensors(store.root, stale)
        new = torch.ones(2, 1, 8, 8)
        rel2, digest2 = store.write_tensors("unit-r", {"out": new})   # the unit redone: same path, new content
        assert rel2 == rel and digest2 != digest
        fresh = {**stale, "tensor_sha256": digest2}
        assert torch.equal(figures.row_tensors(store.root, fresh)["out"], new[1])
        with pytest.raises(ValueError, match="retracted or redone"):
            figures.row_tensors(store.root, stale)
        # rows without a recorded digest (older stores) still read the file as it is now
        assert torch.equal(figures.row_tensors(store.root, {**stale, "tensor_sha256": None})["out"], new[1])
    finally:
        store.close()


def test_moved_figures_are_still_importable_from_figures():
    from survey.analysis.figures import attack_grid, sweep_curves
    from survey.analysis.sections import attacks, sweeps

    assert attack_grid is attacks.attack_grid and sweep_curves is sweeps.sweep_curves
    for name in figures.__all__:
        assert callable(getattr(figures, name)) or name == "PSNR_CAP"


def test_wide_figures_get_text_that_stays_legible_shrunk_to_a4():
    """A figure wider than the A4 text width is shrunk in the PDF: its text grows by the same factor (capped);
    a figure that fits keeps its text as drawn."""
    import matplotlib.pyplot as plt

    from survey.analysis.figures import A4_TEXT_WIDTH, MAX_TEXT_SCALE, legible_at_a4, theme

    theme()
    for width, factor in ((A4_TEXT_WIDTH * 1.25, 1.25), (A4_TEXT_WIDTH * 3, MAX_TEXT_SCALE), (5.0, 1.0)):
        fig, ax = plt.subplots(figsize=(width, 3))
        label = ax.set_xlabel("relative perturbation")
        before = label.get_fontsize()
        assert legible_at_a4(fig) == pytest.approx(factor)
        assert label.get_fontsize() == pytest.approx(before * factor)
        plt.close(fig)

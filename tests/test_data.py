"""Datasets: the [0, 1] image contract, determinism, splits, and reading users' files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from survey.data import io, load_dataset
from survey.data.catalog import describe

SIZE = 32


def check_contract(images, size=SIZE):
    x = images.images
    assert x.dtype == torch.float32 and x.ndim == 4 and x.shape[1:] == (1, size, size)
    assert len(images.ids) == len(set(images.ids)) == x.shape[0] > 0
    assert torch.isfinite(x).all()
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(x.amax(dim=(1, 2, 3)), torch.ones(x.shape[0]))   # every image reaches 1
    assert isinstance(images.source, str) and images.source


BUILTIN = [("ellipses", {"n_train": 6, "n_val": 3, "n_test": 4}), ("shepp-logan", {}), ("brain", {}),
           ("dicom-samples", {})]


@pytest.mark.parametrize("name,params", BUILTIN, ids=[b[0] for b in BUILTIN])
def test_builtin_loaders_follow_the_contract_and_are_deterministic(name, params):
    first = load_dataset(name, split="test", size=SIZE, **params)
    second = load_dataset(name, split="test", size=SIZE, **params)
    check_contract(first)
    assert all(i.startswith(f"{name}/") for i in first.ids)
    assert first.ids == second.ids and first.content_hash == second.content_hash


def test_ellipses_image_depends_only_on_seed_and_index():
    few = load_dataset("ellipses", split="train", size=SIZE, n_train=3)
    many = load_dataset("ellipses", split="train", size=SIZE, n_train=8)
    assert few.ids == ["ellipses/000000", "ellipses/000001", "ellipses/000002"]
    assert torch.equal(few.images, many.images[:3])
    other_seed = load_dataset("ellipses", split="train", size=SIZE, n_train=3, seed=1)
    assert not torch.equal(few.images, other_seed.images)
    assert len({img.numpy().tobytes() for img in many.images}) == 8      # all different
    assert float((many.images == 0).float().mean()) > 0.2                # background outside the ellipses


def test_ellipses_splits_are_disjoint():
    splits = {s: load_dataset("ellipses", split=s, size=16, n_train=20, n_val=5, n_test=5) for s in
              ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [20, 5, 5]
    ids = [set(v.ids) for v in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    hashes = {img.numpy().tobytes() for v in splits.values() for img in v.images}
    assert len(hashes) == 30


def test_shepp_logan_has_the_standard_layout():
    img = load_dataset("shepp-logan", split="test", size=64).images[0, 0]
    assert float(img[32, 2]) == 0.0                            # outside the head
    assert abs(float(img[21, 32]) - 0.3) < 1e-6                # the large ellipse above the centre
    assert float(img[32, 39]) < 1e-6 and float(img[32, 25]) < 1e-6  # the two ventricles (right, left)
    assert abs(float(img[45, 32]) - 0.2) < 1e-6                # brain matter
    with pytest.raises(ValueError, match="single test image"):
        load_dataset("shepp-logan", split="train")


def test_brain_slices_are_real_tissue_split_by_z():
    sets = {s: load_dataset("brain", split=s, size=SIZE) for s in ("train", "val", "test")}
    ids = [i for v in sets.values() for i in v.ids]
    assert len(ids) == len(set(ids)) > 100
    for split, rule in (("test", 0), ("val", 1)):
        assert all(int(i.split("/z")[1]) % 5 == rule for i in sets[split].ids)
    assert all(int(i.split("/z")[1]) % 5 > 1 for i in sets["train"].ids)
    for v in sets.values():
        check_contract(v)
        tissue = (v.images > 0.1).float().mean(dim=(1, 2, 3))
        assert float(tissue.min()) > 0.05
        border = torch.cat([v.images[..., 0, :], v.images[..., -1, :], v.images[..., 0], v.images[..., -1]], -1)
        assert float(border.max()) < 0.05                    # background all round the head
    mid = sets["test"].images[len(sets["test"]) // 2, 0]
    assert float((mid - mid.flip(-1)).abs().mean()) < 0.08   # a symmetric template, left-right


def test_dicom_samples_hold_real_ct_and_mr_in_test_only():
    images = load_dataset("dicom-samples", split="test", size=SIZE)
    assert {"dicom-samples/CT_small", "dicom-samples/MR_small"} <= set(images.ids)
    assert images.skipped == []
    with pytest.raises(ValueError, match="only a 'test' split"):
        load_dataset("dicom-samples", split="train")


# ---------------------------------------------------------------- user folders

def write_dicom(path, pixels: np.ndarray, modality="CT", series: str | None = None, patient: str | None = None):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series or generate_uid()
    if patient is not None:
        ds.PatientID = patient
    ds.Modality = modality
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.set_pixel_data(pixels.astype(np.uint16), "MONOCHROME2", 12)
    ds.save_as(path, enforce_file_format=True)


def ramp(h=20, w=24):
    return np.add.outer(np.arange(h), 2 * np.arange(w)).astype(np.float64)


@pytest.fixture
def mixed_folder(tmp_path):
    from PIL import Image
    import nibabel as nib

    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[:, 10:, 0] = 200                                       # a red right half
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    np.save(tmp_path / "plane.npy", ramp())
    volume = np.zeros((16, 18, 5), np.float32)                 # (x, y, z) in RAS
    volume[:, :, 1:4] = 1.0
    volume[12:, 14:, 1:4] = 5.0                                # a bright right-anterior corner
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "head.nii.gz")
    (tmp_path / "scans").mkdir()
    write_dicom(tmp_path / "scans" / "ct.dcm", 1000 + ramp(24, 24))
    write_dicom(tmp_path / "scans" / "IM0001", 1000 + ramp(24, 24).T)   # DICOM without an extension
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    np.save(tmp_path / "line.npy", np.arange(5.0))
    np.save(tmp_path / "zeros.npy", np.zeros((8, 8)))
    (tmp_path / "notes.dcm").write_text("this is not DICOM\n")
    return tmp_path


def test_folder_loads_good_files_and_reports_bad_ones(mixed_folder):
    images = load_dataset("folder", split="test", size=SIZE, path=str(mixed_folder))
    check_contract(images)
    assert images.ids == ["folder/head.nii.gz#1", "folder/head.nii.gz#2", "folder/head.nii.gz#3",
                          "folder/photo.png", "folder/plane.npy", "folder/scans/IM0001", "folder/scans/ct.dcm"]
    reasons = dict(images.skipped)
    assert set(reasons) == {"broken.png", "line.npy", "zeros.npy", "notes.dcm", "head.nii.gz"}
    assert "not a readable image" in reasons["broken.png"]
    assert "2-D" in reasons["line.npy"] and "(5,)" in reasons["line.npy"]
    assert "constant" in reasons["zeros.npy"]
    assert "DICOM" in reasons["notes.dcm"]
    assert "2 of 5 slices empty" in reasons["head.nii.gz"]

    by_id = dict(zip(images.ids, images.images))
    assert torch.allclose(by_id["folder/plane.npy"], io.prepare_image(ramp(), SIZE))
    assert torch.allclose(by_id["folder/scans/ct.dcm"], io.prepare_image(ramp(24, 24), SIZE), atol=1e-6)
    photo = by_id["folder/photo.png"][0]                      # red -> luminance, left half black
    assert float(photo[:, :SIZE // 2 - 2].max()) == 0.0 and float(photo[:, SIZE // 2 + 2:].min()) == 1.0
    axial = by_id["folder/head.nii.gz#2"][0]                   # anterior up, patient's right on the right
    assert float(axial[:4, -4:].min()) == 1.0 and float(axial[-4:, :4].max()) < 0.5


def test_folder_hash_split_keeps_a_volume_together_and_is_disjoint(mixed_folder):
    from survey.data.folder import scan

    found = scan(mixed_folder, SIZE, split_mode="hash")
    assert found.ids == scan(mixed_folder, SIZE, split_mode="hash").ids
    split_of = dict(zip(found.ids, found.splits))
    assert len({split_of[f"folder/head.nii.gz#{z}"] for z in (1, 2, 3)}) == 1
    assert split_of["folder/plane.npy"] == io.hash_split("plane.npy")
    loaded = {}
    for split in ("train", "val", "test"):
        try:
            loaded[split] = set(load_dataset("folder", split=split, size=SIZE, path=mixed_folder,
                                             split_mode="hash").ids)
        except ValueError as exc:
            assert "no image in split" in str(exc)
            loaded[split] = set()
    assert sum(len(v) for v in loaded.values()) == len(found.ids) == len(set().union(*loaded.values()))


def test_folder_hash_split_keeps_each_volume_and_subject_in_one_split(tmp_path):
    from survey.data.folder import scan

    volumes = [f"vol{v:02d}" for v in range(12)]
    for v in volumes:                                          # 2-D slices of one volume in its own sub-folder
        (tmp_path / v).mkdir()
        write_pngs(tmp_path / v, 3)
    (tmp_path / "pat").mkdir()                                 # two series of one patient, one file per slice
    for k, series in enumerate(("1.2.3.1", "1.2.3.2")):
        write_dicom(tmp_path / "pat" / f"s{k}.dcm", 1000 + ramp(24, 24) * (k + 1), series=series, patient="P7")

    found = scan(tmp_path, SIZE, split_mode="hash")
    split_of = dict(zip(found.ids, found.splits))
    for v in volumes:
        assert {s for i, s in split_of.items() if i.startswith(f"folder/{v}/")} == {io.hash_split(v)}
    assert {split_of["folder/pat/s0.dcm"], split_of["folder/pat/s1.dcm"]} == {io.hash_split("patient:P7")}
    assert len({io.hash_split(v) for v in volumes}) > 1       # the volumes do spread over the splits


def write_pngs(folder, count: int, size: int = 24) -> list[str]:
    from PIL import Image

    names = []
    for i in range(count):
        pixels = (np.add.outer(np.arange(size), (i + 1) * np.arange(size)) % 256).astype(np.uint8)
        names.append(f"slice{i:02d}.png")
        Image.fromarray(pixels).save(folder / names[-1])
    return names


def test_a_folder_of_users_images_is_test_data_by_default(tmp_path):
    from survey.data.folder import scan

    names = write_pngs(tmp_path, 21)
    images = load_dataset("folder", size=SIZE, path=tmp_path)
    check_contract(images)
    assert images.split == "test" and images.ids == [f"folder/{n}" for n in names] and images.skipped == []
    for split in ("train", "val"):
        with pytest.raises(ValueError, match="no image in split .* split_mode='hash'"):
            load_dataset("folder", split=split, size=SIZE, path=tmp_path)

    # split_mode="hash": the split by file hash as before, each file where hash_split puts it.
    expected = {s: [f"folder/{n}" for n in names if io.hash_split(n) == s] for s in ("train", "val", "test")}
    assert scan(tmp_path, SIZE, split_mode="hash").counts() == {s: len(v) for s, v in expected.items()}
    for split, ids in expected.items():
        if ids:
            assert load_dataset("folder", split=split, size=SIZE, path=tmp_path, split_mode="hash").ids == ids
        else:
            with pytest.raises(ValueError, match="no image in split .* split_mode='test'"):
                load_dataset("folder", split=split, size=SIZE, path=tmp_path, split_mode="hash")
    assert len(expected["train"]) > len(expected["test"])     # most of the user's images are not test data
    with pytest.raises(ValueError, match="split_mode must be one of"):
        load_dataset("folder", size=SIZE, path=tmp_path, split_mode="random")


def test_broken_files_among_good_ones_are_reported_with_names_and_reasons(tmp_path, monkeypatch):
    write_pngs(tmp_path, 5)
    (tmp_path / "slice02.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")   # a PNG cut short
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "stack.npy", np.full((3, 8, 8), np.inf))
    images = load_dataset("folder", size=SIZE, path=tmp_path)
    assert images.ids == ["folder/slice00.png", "folder/slice01.png", "folder/slice03.png", "folder/slice04.png"]
    assert [item for item, _ in images.skipped] == ["slice02.png", "sub/stack.npy"]
    reasons = dict(images.skipped)
    assert "not a readable image" in reasons["slice02.png"] and "no finite values" in reasons["sub/stack.npy"]
    message = images.skipped_message()
    assert message.startswith("skipped 2 files: slice02.png (not a readable image")
    assert "sub/stack.npy (no finite values)" in message
    assert images.subset([0]).skipped == images.skipped
    assert load_dataset("folder", size=SIZE, path=tmp_path, count=2).skipped == images.skipped

    # Whatever a third-party reader raises for one file is reported, not fatal.
    from survey.data import folder

    real = io.read_raster

    def flaky(path):
        if path.name == "slice03.png":
            raise RuntimeError("decoder crashed")
        return real(path)

    monkeypatch.setattr(io, "read_raster", flaky)
    images = folder.load(size=SIZE, path=tmp_path)
    assert dict(images.skipped)["slice03.png"] == "RuntimeError: decoder crashed"
    assert "folder/slice04.png" in images.ids


def test_skipped_message_names_the_first_few():
    from survey.data.base import skipped_message

    assert skipped_message([]) == ""
    assert skipped_message([("a.png", "bad")]) == "skipped 1 file: a.png (bad)"
    many = [(f"f{i}", "r") for i in range(5)]
    assert skipped_message(many, limit=2) == "skipped 5 files: f0 (r); f1 (r); ... and 3 more"


def test_folder_without_usable_images_raises_with_reasons(tmp_path):
    (tmp_path / "a.dcm").write_text("nope")
    np.save(tmp_path / "b.npy", np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="no usable image") as err:
        load_dataset("folder", path=tmp_path)
    assert str(tmp_path) in str(err.value) and "a.dcm" in str(err.value) and "NaN" in str(err.value)
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset("folder", path=tmp_path / "missing")
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("folder")


# ---------------------------------------------------------------- fastMRI

def centred_fft2(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def test_fastmri_reads_reconstructions_and_multicoil_kspace(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    truth = rng.uniform(0.2, 1.0, (2, 40, 32))                 # (slices, h, w), tall like fastMRI
    maps = rng.normal(size=(4, 40, 32)) + 1j * rng.normal(size=(4, 40, 32))
    maps /= np.sqrt((np.abs(maps) ** 2).sum(axis=0))           # sum_c |s_c|^2 = 1, so RSS = |x|
    kspace = centred_fft2(maps[None] * truth[:, None]).astype(np.complex64)
    with h5py.File(tmp_path / "multicoil.h5", "w") as f:
        f["kspace"] = kspace
    with h5py.File(tmp_path / "recon.h5", "w") as f:
        f["reconstruction_rss"] = truth[:, 4:36, :].astype(np.float32)
        f["kspace"] = kspace                                    # ignored: the reconstruction comes first
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["ismrmrd_header"] = np.zeros(3)
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f["kspace"] = np.zeros((2, 8, 8))

    (tmp_path / "notes.h5").write_text("not HDF5")
    images = load_dataset("fastmri", split="test", size=SIZE, path=tmp_path)     # all slices in 'test'
    check_contract(images)
    assert images.ids == ["fastmri/multicoil.h5#0", "fastmri/multicoil.h5#1", "fastmri/recon.h5#0",
                          "fastmri/recon.h5#1"]
    for s in range(2):
        expected = io.prepare_image(truth[s], SIZE)            # centre crop 40 x 32 -> 32 x 32
        assert torch.allclose(images.images[s], expected, atol=1e-5)
        assert torch.allclose(images.images[2 + s], expected, atol=1e-5)
    reasons = dict(images.skipped)
    assert "no reconstruction_rss" in reasons["empty.h5"] and "must be complex" in reasons["flat.h5"]
    assert "not a readable HDF5 file" in reasons["notes.h5"]
    assert images.skipped_message().startswith("skipped 3 files: empty.h5 (")

    single = load_dataset("fastmri", size=SIZE, path=tmp_path / "multicoil.h5")
    assert single.ids == images.ids[:2]
    with pytest.raises(ValueError, match="no usable slice"):
        load_dataset("fastmri", path=tmp_path / "empty.h5")
    from survey.data.fastmri import scan

    hashed = scan(tmp_path, SIZE, split_mode="hash")
    assert hashed.splits == [io.hash_split(i.split("/")[1].split("#")[0]) for i in hashed.ids]


def test_fastmri_keeps_the_good_slices_of_a_file_with_a_bad_one(tmp_path, monkeypatch):
    import h5py

    from survey.data import fastmri

    truth = np.random.default_rng(2).uniform(0.2, 1.0, (3, 16, 16))
    truth[1] = np.nan
    with h5py.File(tmp_path / "vol.h5", "w") as f:
        f["reconstruction_rss"] = truth
    images = load_dataset("fastmri", size=SIZE, path=tmp_path)
    assert images.ids == ["fastmri/vol.h5#0", "fastmri/vol.h5#2"]
    assert images.skipped[0][0] == "vol.h5#1" and "NaN" in images.skipped[0][1]

    real = fastmri.slice_reader

    def corrupt_chunk(dataset, key):   # h5py raises OSError when a chunk cannot be read
        count, read = real(dataset, key)
        return count, lambda i: (_ for _ in ()).throw(OSError("Can't read data")) if i == 0 else read(i)

    monkeypatch.setattr(fastmri, "slice_reader", corrupt_chunk)
    images = fastmri.load(size=SIZE, path=tmp_path)
    assert images.ids == ["fastmri/vol.h5#2"]
    assert dict(images.skipped)["vol.h5#0"] == "OSError: Can't read data"


def test_singlecoil_kspace_gives_the_magnitude_image():
    from survey.data.fastmri import kspace_to_image

    x = np.random.default_rng(1).normal(size=(12, 10)) + 1j
    assert np.allclose(kspace_to_image(centred_fft2(x)), np.abs(x))


# ---------------------------------------------------------------- catalog

def test_describe_reports_counts_and_source(mixed_folder):
    ell = describe("ellipses", size=16)
    assert ell["counts"] == {"train": 2000, "val": 100, "test": 100} and "seed=0" in ell["source"]
    assert describe("shepp-logan", size=16)["counts"] == {"train": 0, "val": 0, "test": 1}
    assert describe("folder")["counts"] is None
    folder = describe("folder", size=16, path=mixed_folder)
    assert sum(folder["counts"].values()) == 7 and str(mixed_folder) in folder["source"]
    with pytest.raises(ValueError, match="unknown dataset"):
        describe("nope")

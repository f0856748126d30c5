"""The network zoo: small re-trainings of the paper's networks, each with a recipe and a model card.

Weights live next to this file in weights/NAME.safetensors with a card weights/NAME.json; both are
produced by `survey zoo train NAME` (survey.nets.train) and loaded here with their hash checked.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ZooEntry:
    """Everything needed to rebuild, train and evaluate one zoo network."""

    name: str
    summary: str
    architecture: str            # key of ARCHITECTURES
    arch_params: dict
    physics: dict                # make_physics keyword arguments (kind first)
    dataset: str                 # training and test data
    steps: int                   # optimiser steps of the recipe (fixed, so training is reproducible)
    batch: int = 16
    lr: float = 1e-3
    notes: str = ""
    extra: dict = field(default_factory=dict)


def _architectures() -> dict[str, type[nn.Module]]:
    from survey.nets.automap import Automap
    from survey.nets.cascade import Cascade
    from survey.nets.dncnn import DnCNN
    from survey.nets.e2e_varnet import E2EVarNet
    from survey.nets.fastmri_unet import FastMRIUNet
    from survey.nets.unet import UNet
    from survey.nets.varnet import VarNet

    return {"unet": UNet, "cascade": Cascade, "varnet": VarNet, "dncnn": DnCNN, "automap": Automap,
            "fastmri_unet": FastMRIUNet, "e2e_varnet": E2EVarNet}


#: fastMRI-size networks (320 x 320, fastMRI column masks at 4x) for planning and scale tests: randomly
#: initialised from a fixed seed (extra["init"] == "random"), no weights file; their card says so.
_RANDOM_INIT_NOTE = "Randomly initialised (torch seed 0), not trained: for cost, memory and engine tests only."


def _fastmri_size_entries() -> list[ZooEntry]:
    single = {"kind": "mri", "size": 320, "mask": "fastmri-random", "acceleration": 4.0, "seed": 0}
    multi = {"kind": "pmri", "size": 320, "mask": "fastmri-equispaced", "acceleration": 4.0, "seed": 0, "coils": 8}
    unet, varnet = {"chans": 32, "pools": 4}, {"cascades": 4, "chans": 18, "pools": 4, "sens_chans": 8}
    init = {"init": "random", "seed": 0}
    return [
        ZooEntry("fastmri-unet", "fastMRI U-Net baseline (chans 32, 4 pools, 7.8M parameters), single coil",
                 "fastmri_unet", unet, single, "brain", steps=0, notes=_RANDOM_INIT_NOTE, extra=init),
        ZooEntry("fastmri-unet-mc", "fastMRI U-Net baseline on the coil-combined zero filling, 8 coils",
                 "fastmri_unet", unet, multi, "brain", steps=0, notes=_RANDOM_INIT_NOTE, extra=init),
        ZooEntry("e2e-varnet", "End-to-end VarNet: 4 k-space cascades, sensitivities from the ACS lines, 8 coils",
                 "e2e_varnet", varnet, multi, "brain", steps=0, notes=_RANDOM_INIT_NOTE, extra=init),
        ZooEntry("e2e-varnet-sc", "End-to-end VarNet: 4 k-space cascades, single coil",
                 "e2e_varnet", varnet, single, "brain", steps=0, notes=_RANDOM_INIT_NOTE, extra=init),
    ]


#: Steps of the 128 x 128 recipes: what 15 minutes bought on the loaded shared CPU (their cards keep the wall time).
STEPS_UNET_128 = 300
STEPS_CASCADE_128 = 130

ZOO: dict[str, ZooEntry] = {e.name: e for e in [
    ZooEntry("automap", "AUTOMAP: dense layers from k-space samples, then convolutions",
             "automap", {"conv_width": 32}, {"kind": "mri", "size": 32, "ratio": 0.6, "mask": "random-points", "seed": 0},
             "brain", steps=3000, batch=16, lr=1e-3,
             notes="32 x 32: its dense layers grow with the square of the pixel count."),
    ZooEntry("dagan", "DAGAN generator: residual U-Net on |A* y|",
             "unet", {"width": 16, "depth": 3, "input_mode": "magnitude"},
             {"kind": "mri", "size": 64, "ratio": 0.2, "mask": "gaussian-lines", "seed": 0},
             "brain", steps=2500, notes="Trained with the pixel loss only: no adversarial term."),
    ZooEntry("deepmri", "Deep MRI: cascade of 5 CNNs with hard data consistency",
             "cascade", {"blocks": 5, "layers": 5, "width": 24},
             {"kind": "mri", "size": 64, "ratio": 0.33, "mask": "gaussian-lines", "seed": 0},
             "brain", steps=1200),
    # 128 x 128 versions of the U-Net and cascade recipes: briefly trained on the shared CPU (see their cards)
    ZooEntry("dagan-128", "DAGAN generator at 128 x 128: residual U-Net on |A* y|",
             "unet", {"width": 16, "depth": 3, "input_mode": "magnitude"},
             {"kind": "mri", "size": 128, "ratio": 0.2, "mask": "gaussian-lines", "seed": 0},
             "brain", steps=STEPS_UNET_128, batch=8,
             notes="The dagan recipe at 128 x 128, briefly trained: 15 minutes at nice 15 on the 2-core CPU shared by "
                   "seven sessions (load 30-40), not the 30 minutes planned; pixel loss only."),
    ZooEntry("deepmri-128", "Deep MRI at 128 x 128: cascade of 5 CNNs with hard data consistency",
             "cascade", {"blocks": 5, "layers": 5, "width": 24},
             {"kind": "mri", "size": 128, "ratio": 0.33, "mask": "gaussian-lines", "seed": 0},
             "brain", steps=STEPS_CASCADE_128, batch=8,
             notes="The deepmri recipe at 128 x 128, briefly trained: 15 minutes at nice 15 on the 2-core CPU shared "
                   "by seven sessions (load 30-40), not the 30 minutes planned."),
    ZooEntry("ell50", "FBPConvNet trained on ellipses: U-Net on the FBP of 50 views",
             "unet", {"width": 16, "depth": 3, "input_mode": "real"},
             {"kind": "radon", "size": 64, "views": 50}, "ellipses", steps=2000),
    ZooEntry("med50", "FBPConvNet trained on medical images: U-Net on the FBP of 50 views",
             "unet", {"width": 16, "depth": 3, "input_mode": "real"},
             {"kind": "radon", "size": 64, "views": 50}, "brain", steps=2000),
    ZooEntry("mrivn", "MRI-VN: variational network for parallel MRI",
             "varnet", {"steps": 6, "filters": 16, "kernel": 5},
             {"kind": "pmri", "size": 64, "ratio": 0.15, "mask": "uniform-lines", "seed": 0, "coils": 8},
             "brain", steps=1000, batch=8,
             notes="6 steps of 16 learned 5 x 5 filters (MRI-VN: 10 steps, 48 filters of 11 x 11), for CPU time."),
    ZooEntry("dncnn", "DnCNN: 17-layer residual denoiser, noise 25/255",
             "dncnn", {"depth": 17, "width": 32}, {"kind": "denoise", "size": 64, "sigma": 25 / 255},
             "brain", steps=5000, batch=16, extra={"patch": 32},
             notes="17 layers as in DnCNN, 32 channels instead of 64 and 32 x 32 training patches for CPU time."),
    ZooEntry("lactunet", "U-Net on the FBP for limited-angle CT (30 degree missing wedge)",
             "unet", {"width": 16, "depth": 3, "input_mode": "real"},
             {"kind": "radon", "size": 64, "views": 60, "angular_range": 150.0}, "brain", steps=2000),
]}

#: The fastMRI-size networks, kept apart from ZOO (the trained zoo) but found by `entry` and `zoo_names`.
SCALE_ZOO: dict[str, ZooEntry] = {e.name: e for e in _fastmri_size_entries()}


@dataclass(frozen=True)
class CompanionEntry:
    """An uncertainty companion of a zoo network (survey.nets.uncertainty), trained post hoc.

    name: "<base>-<method>"; params: the companion's constructor keywords; steps / batch / lr: the recipe.
    """

    name: str
    base: str
    method: str                  # "inn", "mcdropout" or "probout"
    params: dict
    steps: int
    batch: int = 16
    lr: float = 1e-4
    notes: str = ""


#: Companions: Oala et al.'s INN in the last 8 layers of its 17-layer DnCNN is kept as is; its U-Net's 12
#: interval layers (about half its 23) become 7 of our U-Net's 18 (the two finest decoder levels and the
#: head), which keeps the companion files small and the bounds cheap. MC dropout fine-tunes the same tail
#: with dropout, ProbOut adds a log-variance head on the features entering the last layer. Step counts are
#: small (a few minutes each on a shared 2-core CPU); the INN learning rates are set so that the output
#: widths can reach the size of the network's errors within them (widths grow through |W| with depth).
COMPANIONS: dict[str, CompanionEntry] = {e.name: e for e in [
    CompanionEntry("dncnn-inn", "dncnn", "inn", {"layers": 8, "beta": 1e-3}, steps=30, batch=8, lr=5e-9,
                   notes="Interval weights in the last 8 of 17 convolutions (as Oala et al.); beta = 1e-3 (Oala et al.)."),
    CompanionEntry("dncnn-mcdropout", "dncnn", "mcdropout", {"layers": 8, "p": 0.05, "passes": 128}, steps=20,
                   lr=1e-4, notes="Last 8 convolutions fine-tuned with dropout 0.05 after every other one (Oala et al.: "
                                  "after every other convolution, trained from scratch)."),
    CompanionEntry("dncnn-probout", "dncnn", "probout", {"hidden": 16}, steps=30, lr=1e-3,
                   notes="Log-variance head on the last hidden features; mean = the frozen DnCNN."),
    CompanionEntry("lactunet-inn", "lactunet", "inn", {"layers": 7, "beta": 1e-4}, steps=30, batch=8, lr=5e-8,
                   notes="Interval weights in the last 7 of 18 layers (Oala et al.: 12 of its U-Net's 23); beta = 1e-4 "
                         "(Oala et al.)."),
    CompanionEntry("lactunet-mcdropout", "lactunet", "mcdropout", {"layers": 7, "p": 0.7, "passes": 128},
                   steps=20, lr=1e-4, notes="Last 7 layers fine-tuned with dropout 0.7 after each up-sampling "
                                             "(Oala et al.: after down- and up-sampling, trained from scratch)."),
    CompanionEntry("lactunet-probout", "lactunet", "probout", {"hidden": 16}, steps=30, lr=1e-3,
                   notes="Log-variance head on the last decoder features; mean = the frozen U-Net."),
]}


def companion_entry(name: str) -> CompanionEntry:
    if name not in COMPANIONS:
        raise ValueError(f"unknown companion {name!r}; choose one of {list(COMPANIONS)}")
    return COMPANIONS[name]


def companion_names(base: str) -> list[str]:
    """The companions of zoo network `base` by the naming convention `<base>-<method>`."""
    return [name for name, e in COMPANIONS.items() if e.base == base]


def zoo_names() -> list[str]:
    return list(ZOO) + list(SCALE_ZOO)


def entry(name: str) -> ZooEntry:
    if name in SCALE_ZOO:
        return SCALE_ZOO[name]
    if name not in ZOO:
        raise ValueError(f"unknown zoo network {name!r}; choose one of {zoo_names()}")
    return ZOO[name]


def build_physics(name: str):
    from survey.physics import make_physics

    return make_physics(**entry(name).physics)


def build_network(name: str, physics=None) -> nn.Module:
    """The untrained architecture of zoo network `name` (AUTOMAP needs its physics for the input size)."""
    e = entry(name)
    cls = _architectures()[e.architecture]
    if e.architecture == "automap":
        return cls(physics if physics is not None else build_physics(name), **e.arch_params)
    return cls(**e.arch_params)


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def card_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_random_init(name: str) -> bool:
    """A zoo network used untrained, initialised from a fixed seed (no weights file)."""
    return name in SCALE_ZOO and SCALE_ZOO[name].extra.get("init") == "random"


def load_card(name: str) -> dict | None:
    if is_random_init(name):
        e = SCALE_ZOO[name]
        return {"name": name, "init": "random", "seed": e.extra["seed"], "notes": e.notes, "trained": False,
                "architecture": e.architecture, "arch_params": e.arch_params, "physics": e.physics}
    path = card_path(name)
    return json.loads(path.read_text()) if path.exists() else None


def is_trained(name: str) -> bool:
    return weights_path(name).exists() and card_path(name).exists()


def load_network(name: str, device: str | torch.device = "cpu"):
    """Trained zoo network `name` in eval mode and its physics, on `device`; checks the weights hash."""
    e = entry(name)
    if is_random_init(name):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(e.extra["seed"])
            physics = build_physics(name)
            net = build_network(name, physics)
        return net.to(device).eval(), physics.to(device)
    path = weights_path(name)
    if not path.exists():
        raise FileNotFoundError(f"zoo network {name!r} has no weights at {path}; run `survey zoo train {name}`")
    card = load_card(name) or {}
    digest = file_sha256(path)
    if card.get("weights_sha256") not in (None, digest):
        raise ValueError(f"weights {path} have sha256 {digest[:12]}..., the card says "
                         f"{card['weights_sha256'][:12]}...: retrain with `survey zoo train {name}`")
    physics = build_physics(name).to(device)
    net = build_network(name, physics)
    net.load_state_dict(load_file(str(path), device="cpu"))
    return net.to(device).eval(), physics

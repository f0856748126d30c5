"""Training recipes of the zoo: supervised pixel loss on (A x, x) pairs, fixed step count, then a model card."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from survey.nets.zoo import ZooEntry, build_network, build_physics, card_path, entry, file_sha256, weights_path


def measure(physics, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Measurements y = A x, with the operator's own noise model when it has one (denoising)."""
    if hasattr(physics, "noisy"):
        return physics.noisy(x, generator)
    return physics.A(x)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips and 90-degree rotations of a batch (B, 1, n, n)."""
    k = int(torch.randint(0, 4, (1,), generator=generator))
    x = torch.rot90(x, k, dims=(-2, -1))
    if bool(torch.randint(0, 2, (1,), generator=generator)):
        x = torch.flip(x, dims=(-1,))
    return x


def _crop(x: torch.Tensor, patch: int, generator: torch.Generator) -> torch.Tensor:
    """One random patch x patch crop shared by the batch (fully convolutional networks only)."""
    i, j = (int(torch.randint(0, x.shape[-1] - patch + 1, (1,), generator=generator)) for _ in range(2))
    return x[..., i:i + patch, j:j + patch]


@torch.no_grad()
def evaluate(net, physics, images: torch.Tensor, batch: int = 32, reference=None,
             generator: torch.Generator | None = None) -> dict:
    """Mean PSNR/SSIM (dB, unitless) of the network, of H and (optionally) of the reference on `images`."""
    from survey.metrics import psnr, ssim

    sums: dict[str, float] = {}
    for start in range(0, images.shape[0], batch):
        x = images[start:start + batch]
        y = measure(physics, x, generator)
        outputs = {"net": net(y, physics), "H": physics.H(y)}
        if reference is not None:
            outputs["reference"] = reference(y, physics)
        for key, out in outputs.items():
            out = out.real if torch.is_complex(out) else out
            sums[f"psnr_{key}"] = sums.get(f"psnr_{key}", 0.0) + float(psnr(out, x).sum())
            sums[f"ssim_{key}"] = sums.get(f"ssim_{key}", 0.0) + float(ssim(out, x).sum())
    return {k: round(v / images.shape[0], 3) for k, v in sums.items()}


def train(name: str, *, steps: int | None = None, seed: int = 0, device: str = "cpu",
          out_dir: Path | None = None, log=None) -> dict:
    """Train zoo network `name` by its recipe; write NAME.safetensors and NAME.json; return the card."""
    from survey.data import load_dataset
    from survey.solvers import make_reference

    torch.set_flush_denormal(True)  # denormals slowed CPU training 2-5x partway through
    from survey.nets.zoo import COMPANIONS
    if name in COMPANIONS:
        return train_companion(name, steps=steps, seed=seed, device=device, out_dir=out_dir, log=log)
    e: ZooEntry = entry(name)
    steps = steps or e.steps
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    physics = build_physics(name).to(device)
    net = build_network(name, physics).to(device)
    train_physics = physics
    if "patch" in e.extra:  # operators are size-specific: train on patches with a patch-sized operator
        from survey.physics import make_physics
        train_physics = make_physics(**{**e.physics, "size": e.extra["patch"]}).to(device)
    size = e.physics["size"]
    train_set = load_dataset(e.dataset, split="train", size=size)
    test_set = load_dataset(e.dataset, split="test", size=size)
    x_train = train_set.images.to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=e.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps, eta_min=e.lr / 20)
    start = time.perf_counter()
    net.train()
    for step in range(steps):
        idx = torch.randint(0, x_train.shape[0], (e.batch,), generator=generator)
        x = _augment(x_train[idx.to(device)], generator)
        if "patch" in e.extra:
            x = _crop(x, e.extra["patch"], generator)
        loss = torch.nn.functional.mse_loss(net(measure(train_physics, x, generator), train_physics), x)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if log is not None and (step % 100 == 0 or step == steps - 1):
            log(step, loss.item(), time.perf_counter() - start)
    wall = time.perf_counter() - start
    net.eval()
    reference = make_reference(physics)
    metrics = evaluate(net, physics, test_set.images.to(device), reference=reference,
                       generator=torch.Generator().manual_seed(seed + 1))
    out_dir = Path(out_dir) if out_dir else weights_path(name).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / weights_path(name).name
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(weights))
    card = {
        "name": name, "summary": e.summary, "architecture": e.architecture, "arch_params": e.arch_params,
        "parameters": sum(p.numel() for p in net.parameters()),
        "physics": physics.describe(), "physics_spec": e.physics,
        "dataset": e.dataset, "train_split": {"name": "train", "count": len(train_set),
                                              "content_hash": train_set.content_hash},
        "test_split": {"name": "test", "count": len(test_set), "content_hash": test_set.content_hash},
        "recipe": {"steps": steps, "epochs": round(steps * e.batch / len(train_set), 1), "batch": e.batch, "lr": e.lr, "loss": "mse", "optimiser": "adam+cosine",
                   "augmentation": "flips, 90-degree rotations", "seed": seed, **e.extra},
        "wall_time_s": round(wall, 1), "device": str(device), "host_cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "test_metrics": metrics, "notes": e.notes,
        "weights_file": weights.name, "weights_sha256": file_sha256(weights),
    }
    (out_dir / card_path(name).name).write_text(json.dumps(card, indent=2) + "\n")
    return card


def train_companion(name: str, *, steps: int | None = None, seed: int = 0, device: str = "cpu",
                    out_dir: Path | None = None, log=None) -> dict:
    """Train uncertainty companion `name` ("<net>-<method>") post hoc around its frozen zoo network, by
    the base's data pipeline (same split, augmentation and patches); write its weights and card."""
    from survey.data import load_dataset
    from survey.nets.uncertainty import build_companion
    from survey.nets.zoo import companion_entry, load_card, load_network

    torch.set_flush_denormal(True)
    c = companion_entry(name)
    base = entry(c.base)
    steps = steps or c.steps
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net, physics = load_network(c.base, device)
    companion = build_companion(c.method, net, **c.params).to(device)
    train_physics = physics
    if "patch" in base.extra:
        from survey.physics import make_physics
        train_physics = make_physics(**{**base.physics, "size": base.extra["patch"]}).to(device)
    size = base.physics["size"]
    train_set = load_dataset(base.dataset, split="train", size=size)
    test_set = load_dataset(base.dataset, split="test", size=size)
    x_train = train_set.images.to(device)
    optimiser = torch.optim.Adam(companion.trainable(), lr=c.lr)
    start = time.perf_counter()
    net.eval()
    for step in range(steps):
        idx = torch.randint(0, x_train.shape[0], (c.batch,), generator=generator)
        x = _augment(x_train[idx.to(device)], generator)
        if "patch" in base.extra:
            x = _crop(x, base.extra["patch"], generator)
        loss = companion.loss(measure(train_physics, x, generator), train_physics, x, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        companion.project_()
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(step, loss.item(), time.perf_counter() - start)
    wall = time.perf_counter() - start
    out_dir = Path(out_dir) if out_dir else weights_path(name).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / weights_path(name).name
    state = companion.companion_state()
    save_file(state, str(weights))
    companion.load_companion_state(state)  # the card's metrics are those of the stored tensors
    companion.eval()
    x_test = test_set.images[:8].to(device)  # the first 8 test images: MC passes are costly on a CPU
    y_test = measure(physics, x_test, torch.Generator().manual_seed(seed + 1))
    metrics = {k: round(v, 5) for k, v in companion.test_metrics(y_test, physics, x_test).items()}
    card = {
        "name": name, "base": c.base, "method": c.method, "params": c.params,
        "base_weights_sha256": (load_card(c.base) or {}).get("weights_sha256"),
        "tail_parameters": companion.split.tail_parameter_count(),
        "stored_tensors": sum(v.numel() for v in state.values()),
        "stored_dtypes": sorted({str(v.dtype).replace("torch.", "") for v in state.values()}),
        "physics_spec": base.physics, "dataset": base.dataset,
        "train_split": {"name": "train", "count": len(train_set), "content_hash": train_set.content_hash},
        "test_split": {"name": "test", "count": len(test_set), "content_hash": test_set.content_hash,
                       "metrics_on_first": int(x_test.shape[0])},
        "recipe": {"steps": steps, "batch": c.batch, "lr": c.lr, "optimiser": "adam",
                   "loss": {"inn": "interval (Oala et al.)", "mcdropout": "mse with dropout",
                            "probout": "gaussian nll"}[c.method],
                   "augmentation": "flips, 90-degree rotations", "seed": seed, "post_hoc": "base weights frozen",
                   **base.extra},
        "wall_time_s": round(wall, 1), "device": str(device), "host_cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__, "test_metrics": metrics, "notes": c.notes,
        "weights_file": weights.name, "weights_sha256": file_sha256(weights),
    }
    (out_dir / card_path(name).name).write_text(json.dumps(card, indent=2) + "\n")
    return card

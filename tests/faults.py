"""A library of misbehaving networks and damaged stores for the fault battery (tests/test_faults.py).

FAULTY_NET: `build(kind, after, size)` returns a network that is healthy until it misbehaves as `kind` says:
    "ok"       f(y) = Re H(y) (scaled by a weight)
    "nan"/"inf" NaN / Inf in every output after `after` calls (the probe makes two)
    "complex"  H(y) without taking the real part
    "int"      an int64 image
    "shape"    one pixel short on each side, only at image size `size`
    "batch"    raises on batches of `after` measurements
    "batchshape" one image too few for batches of `after` measurements
    "noisy"    adds fresh noise on every call (not reproducible)
    "sweepnan" NaN only for measurements of another sampling pattern than its training one
    "fixed"    declares `fixed_sampling` (the sweep skips it, as it does exported networks bound to one mask)
`needs_width(width)` is a factory that needs an argument.
"""

from __future__ import annotations

from pathlib import Path

FAULTY_NET = '''
import torch
from torch import nn


class Faulty(nn.Module):
    def __init__(self, kind="ok", after=0, size=0):
        super().__init__()
        self.kind, self.after, self.size, self.calls = kind, after, size, 0
        self.w = nn.Parameter(torch.ones(()))
        self.train_mask = None
        if kind == "fixed":   # declares that it reads only its trained sampling points (as an exported network)
            self.fixed_sampling = True

    def forward(self, y, physics):
        self.calls += 1
        h = physics.H(y)
        if self.kind == "complex":
            return h * self.w
        h = h.real if torch.is_complex(h) else h
        out = self.w * h
        if self.kind in ("nan", "inf") and self.calls > self.after:
            out = out + (float("nan") if self.kind == "nan" else float("inf"))
        if self.kind == "shape" and h.shape[-1] == self.size:
            out = out[..., :-1, :-1]
        if self.kind == "batchshape" and y.shape[0] == self.after:
            out = out[1:]
        if self.kind == "int":
            out = out.to(torch.int64)
        if self.kind == "batch" and y.shape[0] == self.after:
            raise RuntimeError(f"Faulty refuses a batch of {self.after}")
        if self.kind == "noisy":
            out = out + 0.01 * torch.randn_like(out)
        if self.kind == "sweepnan":
            mask = physics.measured_mask()
            if self.train_mask is None:
                self.train_mask = mask
            elif mask.shape != self.train_mask.shape or bool((mask != self.train_mask).any()):
                out = out * float("nan")
        return out


def build(kind="ok", after=0, size=0):
    return Faulty(kind, after, size)


def needs_width(width):
    return Faulty()
'''

PHYSICS = '{ kind = "mri", size = 16, ratio = 0.5, mask = "uniform-lines", seed = 0 }'


def network_entry(name: str, kind: str = "ok", after: int = 0, size: int = 0, physics: str = PHYSICS) -> str:
    return (f'[[networks]]\nname = "{name}"\nfactory = "faulty.py:build"\n'
            f'kwargs = {{ kind = "{kind}", after = {after}, size = {size} }}\nphysics = {physics}\n\n')


def faulty_study(folder: Path, networks: str, tasks: str, *, count: int = 2, criteria: str = "") -> Path:
    """Write faulty.py and study.toml (the `networks` entries, ellipse phantoms, `tasks`) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "faulty.py").write_text(FAULTY_NET)
    path = folder / "study.toml"
    path.write_text(f'name = "faults"\nstore = "results"\n\n{networks}[[datasets]]\nname = "ellipses"\n'
                    f'split = "test"\ncount = {count}\n\n{tasks}\n{criteria}')
    return path


#: Cheap tasks: a 3-iteration paper attack and a two-ratio sweep.
ATTACK = ('[[tasks]]\nname = "attack"\nimages_per_unit = 2\n'
          'params = { iterations = 3, lam = 0.01, eta = 0.01, tau = 0.001, snapshot_levels = [0.05] }\n')
SWEEP = '[[tasks]]\nname = "sweep"\nimages_per_unit = 2\nparams = { ratios = [0.3, 0.5] }\n'

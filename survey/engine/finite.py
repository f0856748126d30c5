"""Non-finite numbers stopped where they are made: the network's outputs inside a unit, and the rows a unit
returns. A unit that meets one fails with one line naming the network, the unit and what went non-finite,
so no NaN reaches the store to be counted as a good or a bad outcome downstream.

A row may carry NaN on purpose only when it says why: a non-empty `skipped` or `error` column (the sweep's
levels a network cannot take). Every other float of a row must not be NaN. An infinite value in a row is a
value (a PSNR of identical images, a severity of "no photon noise") that compares correctly in every predicate;
an infinite network output is caught by `FiniteGuard` instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

#: Row columns that explain a deliberate NaN in the same row (the measurement was not made).
EXPLAINING_COLUMNS = ("skipped", "error")


class BadOutputError(Exception):
    """A network output the survey cannot use (non-finite, or not one image per measurement). Not a ValueError
    / RuntimeError on purpose: tasks that catch those (a network that cannot take another sampling pattern)
    must not swallow it."""


class NonFiniteError(BadOutputError):
    """A network output or a row value that is NaN (or an output that is Inf)."""


def _count(values: torch.Tensor) -> str:
    nan = int(torch.isnan(values).sum())
    inf = int(torch.isinf(values).sum())
    parts = [f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else ""]
    return " and ".join(p for p in parts if p) + f" of {values.numel()} values"


class FiniteGuard(nn.Module):
    """`net` with every output checked finite and one image per measurement: raises NonFiniteError (or
    BadOutputError for a wrong batch size) naming the network, the call (counted from 1 within the unit) and the
    batch. Attributes the tasks ask of the network (`fixed_sampling`, ...)
    are those of `net`."""

    def __init__(self, net: nn.Module, network: str):
        super().__init__()
        self.net = net
        self.network = network
        self.calls = 0
        self.unit = ""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("net"), name)

    def start(self, unit_id: str) -> None:
        """Count calls afresh for the unit `unit_id`."""
        self.calls, self.unit = 0, unit_id

    def forward(self, y, *args, **kwargs):
        out = self.net(y, *args, **kwargs)
        self.calls += 1
        if isinstance(out, torch.Tensor) and isinstance(y, torch.Tensor) and y.ndim and (
                out.ndim == 0 or out.shape[0] != y.shape[0]):
            raise BadOutputError(f"network {self.network!r} returned an output of shape {tuple(out.shape)} for a "
                                 f"batch of {y.shape[0]} measurements at call {self.calls} of unit {self.unit}; "
                                 f"expected one image per measurement ({y.shape[0]}, 1, n, n)")
        if isinstance(out, torch.Tensor):
            values = torch.view_as_real(out) if torch.is_complex(out) else out
            if values.is_floating_point() and not bool(torch.isfinite(values.detach()).all()):
                raise NonFiniteError(f"network {self.network!r} returned non-finite values "
                                     f"({_count(values.detach())}) at call {self.calls} of unit {self.unit} "
                                     f"(a batch of {out.shape[0] if out.ndim else 1})")
        return out


def _bad(column: str, value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def check_rows(network: str, unit_id: str, task: str, rows: list[dict[str, Any]]) -> None:
    """Raise NonFiniteError naming the columns of `rows` that hold NaN (and in how many rows), except in rows
    whose `skipped` or `error` column says why the measurement is missing."""
    bad: dict[str, int] = {}
    for row in rows:
        if any(isinstance(row.get(c), str) and row.get(c) for c in EXPLAINING_COLUMNS):
            continue
        for key, value in row.items():
            if _bad(key, value):
                bad[key] = bad.get(key, 0) + 1
    if bad:
        shown = ", ".join(f"{k} ({n} of {len(rows)} rows)" for k, n in sorted(bad.items()))
        raise NonFiniteError(f"network {network!r}, unit {unit_id} ({task}): NaN (non-finite values) in {shown}")


__all__ = ["BadOutputError", "EXPLAINING_COLUMNS", "FiniteGuard", "NonFiniteError", "check_rows"]

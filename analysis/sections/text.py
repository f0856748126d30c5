"""Text helpers of the report: numbers, intervals, the `survey estimate` commands printed under tables,
and whether a (network, dataset) group is in or out of the network's training distribution."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

CONFIDENCE = 0.95
#: Bootstrap resamples and seed of the report's estimates (the defaults of `survey estimate`); the report
#: prints the values it used, and the commands under each table pass them when they differ.
N_BOOT = 2000
SEED = 0
#: Levels and quantiles of the per-image distribution of P(bad) (the defaults of `survey estimate --distribution`).
LEVELS = (0.01, 0.1, 0.5)
QUANTILES = (0.5, 0.9, 0.99)


# -- formatting -----------------------------------------------------------------------------------

def format_number(value: Any, digits: int = 4) -> str:
    """The report's number format: 4 significant digits; '–' for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    return f"{value:.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


def format_interval(low: Any, high: Any) -> str:
    return f"[{format_number(low)}, {format_number(high)}]"


def percent(confidence: float) -> str:
    """0.95 -> '95%' (0.975 -> '97.5%')."""
    return f"{round(100 * confidence, 6):g}%"


def estimate_command(table: str, bad: str | None, *, where: str | None, by: Sequence[str], per: str,
                     store: Path, confidence: float = CONFIDENCE, x: str = "value", y: str = "psnr",
                     n_boot: int = N_BOOT, seed: int = SEED) -> str:
    """The `survey estimate` command line that prints the same numbers (x, y: curve axes, per="curve")."""
    parts = ["survey", "estimate", "--table", table]
    if bad is not None:
        parts += ["--bad", bad]
    if where:
        parts += ["--where", where]
    if by:
        parts += ["--by", ",".join(by)]
    if per != "row":
        parts += ["--per", per]
    if per == "curve":
        parts += [*(["--x", x] if x != "value" else []), *(["--y", y] if y != "psnr" else [])]
    if confidence != 0.95:
        parts += ["--confidence", f"{confidence:g}"]
    if n_boot != 2000:   # the CLI's defaults
        parts += ["--bootstrap", str(n_boot)]
    if seed != 0:
        parts += ["--seed", str(seed)]
    parts += ["--store", str(store)]
    return " ".join(_shell_quote(p) for p in parts)


def distribution_command(table: str, bad: str, *, where: str | None, by: Sequence[str], store: Path,
                         confidence: float = CONFIDENCE) -> str:
    """The `survey estimate --distribution` line printing the per-image distribution of P(bad)."""
    command = estimate_command(table, bad, where=where, by=by, per="image", store=store, confidence=confidence)
    head, _, tail = command.rpartition(" --store ")
    return f"{head} --distribution --store {tail}"


# -- training data: in- or out-of-distribution ------------------------------------------------------

def training_data(info: dict[str, Any], network: str) -> list[str] | None:
    """The datasets `network` was trained on: the study's `trained_on`, else its zoo card's dataset; None
    when unknown (a bring-your-own network that declares none)."""
    for spec in info.get("networks") or []:
        if isinstance(spec, dict) and spec.get("name") == network:
            if spec.get("trained_on"):
                return [str(d) for d in spec["trained_on"]]
            if spec.get("factory"):
                return None
            break
    try:
        from survey.nets.zoo import load_card, zoo_names

        card = load_card(network) if network in zoo_names() else None
    except (ImportError, OSError, ValueError):
        return None
    trained = (card or {}).get("dataset")
    return [trained] if isinstance(trained, str) else list(trained) if isinstance(trained, list) else None


def distribution(info: dict[str, Any] | None, network: Any, dataset: Any) -> str | None:
    """"in-distribution" when `network` was trained on `dataset` (by the study's name of it or its kind),
    "out-of-distribution" when not, None when either is unknown."""
    if info is None or network is None or dataset is None:
        return None
    trained = training_data(info, str(network))
    if trained is None:
        return None
    kinds = {d.get("name"): d.get("kind") or d.get("name") for d in info.get("datasets") or [] if isinstance(d, dict)}
    names = {str(dataset), str(kinds.get(dataset, dataset))}
    return "in-distribution" if names & set(trained) else "out-of-distribution"


def _shell_quote(text: str) -> str:
    """shlex.quote, but SQL with single quotes goes in double quotes when that needs no escaping."""
    quoted = shlex.quote(text)
    if quoted.startswith("'") and "'" in text and not any(ch in text for ch in '"$`\\!'):
        return f'"{text}"'
    return quoted


def as_json(text: Any) -> Any:
    """A JSON text column as Python; None when missing or not JSON."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Frame rows as dicts, NaN as None."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]


def count(value: Any) -> int:
    """An SQL count or sum as int; NULL (NaN in pandas) as 0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    return int(value)


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))

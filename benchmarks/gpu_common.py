"""Shared pieces of the GPU check (benchmarks/gpu_check.sh): deadlines, device facts, part files, skips.

Each step of the check (gpu_tests, gpu_agree, gpu_speed) writes one JSON part into the output folder;
gpu_report merges the parts. A step that needs a module this machine lacks records a skip naming the
module instead of crashing, so one call on a device shows every problem at once.
"""

from __future__ import annotations

import json
import platform
import time
import traceback
from pathlib import Path
from typing import Any

import torch


class Deadline:
    """Seconds left of a budget that started when this object was made."""

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.seconds = float(seconds)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def spent(self) -> float:
        return time.monotonic() - self.start


def resolve_device(name: str) -> torch.device:
    """torch.device for `name` ('cuda' or 'cpu'); ValueError in one line when CUDA is asked for but absent."""
    if name not in ("cuda", "cpu"):
        raise ValueError(f"--device must be cuda or cpu, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch.cuda.is_available() is False on this machine "
                         f"(torch {torch.__version__}); use --device cpu for a dry run")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels (timings must include them)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_facts(device: torch.device) -> dict[str, Any]:
    """Device name, memory, torch and CUDA versions, CPU threads, Python: the table's header."""
    facts: dict[str, Any] = {"device": device.type, "torch": torch.__version__, "python": platform.python_version(),
                             "machine": platform.machine(), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(device_name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                     multiprocessors=props.multi_processor_count, cuda=torch.version.cuda,
                     cudnn=torch.backends.cudnn.version(), tf32_conv=torch.backends.cudnn.allow_tf32,
                     tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    else:
        facts.update(device_name=platform.processor() or platform.machine())
    return facts


def missing_module(err: BaseException) -> str | None:
    """The top-level module a ModuleNotFoundError (anywhere in the chain) names, else None."""
    while err is not None:
        if isinstance(err, ModuleNotFoundError) and err.name:
            return err.name.split(".")[0]
        err = err.__cause__ or err.__context__
    return None


def outcome_of_error(err: BaseException) -> dict[str, Any]:
    """A skip naming the missing module, or an error with the last lines of the traceback."""
    module = missing_module(err)
    if module is not None:
        return {"status": "skipped", "reason": f"needs the module {module!r}, missing on this machine"}
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return {"status": "error", "reason": "out of device memory", "error": str(err).splitlines()[0]}
    lines = traceback.format_exception(type(err), err, err.__traceback__)
    return {"status": "error", "reason": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
            "error": "".join(lines)[-3000:]}


def write_part(out: Path, name: str, data: dict[str, Any]) -> Path:
    """Write part `name` (gpu_<name>.json) into `out`, atomically (temporary name, then rename)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu_{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str, allow_nan=True))
    tmp.replace(path)
    return path


def read_part(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"gpu_{name}.json"
    return json.loads(path.read_text()) if path.exists() else None

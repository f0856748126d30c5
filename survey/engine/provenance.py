"""The `runs` row of a run: what ran (study, code, weights, data) where and by whom."""

from __future__ import annotations

import getpass
import json
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from survey.engine.networks import NetworkHandle
from survey.spec import Study

PACKAGES = ("stability-survey", "torch", "ray", "numpy", "pyarrow", "duckdb", "PyWavelets")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def run_record(study: Study, handles: dict[str, NetworkHandle], hashes: dict[str, str], run_id: str,
               worker_info: dict[str, dict], notes: list[str] | None = None,
               skipped: dict[str, list[tuple[str, str]]] | None = None) -> dict[str, Any]:
    """One row of the store's `runs` table (columns: `survey.layout.RUN_COLUMNS`); `notes`: what the run
    had to say (weights unwrapped, files skipped), `skipped`: dataset -> (item, reason) of unused files."""
    import survey
    return {"run_id": run_id, "study": study.name, "study_sha256": study.digest(), "study_path": study.path,
            "seed": study.seed, "code_version": survey.__version__, "git_commit": git_commit(),
            "packages": json.dumps(package_versions()), "host": socket.gethostname(),
            "user": getpass.getuser(), "python": platform.python_version(), "started_at": time.time(),
            "devices": json.dumps(worker_info),
            "weights_sha256": json.dumps({n: h.weights_sha256() for n, h in handles.items()}),
            "datasets_sha256": json.dumps(hashes), "study_json": json.dumps(study.model_dump(), default=str),
            "notes": json.dumps(list(notes or [])),
            "datasets_skipped": json.dumps({k: [list(s) for s in v] for k, v in (skipped or {}).items()})}

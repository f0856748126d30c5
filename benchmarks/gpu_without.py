"""Make modules unimportable, so a CPU dry run of gpu_check.sh sees what the device machine lacks.

gpu_check.sh --without ray,duckdb copies this file as `sitecustomize.py` into the folder it puts first on
PYTHONPATH; every Python it starts (pytest's too) then raises ModuleNotFoundError for those top-level
names, as on a machine where they are not installed. Names come from $GPU_CHECK_WITHOUT (comma-separated).
"""

from __future__ import annotations

import os
import sys


class LeaveOut:
    """A meta-path finder refusing every module under the given top-level names."""

    def __init__(self, names):
        self.names = frozenset(n.strip() for n in names if n.strip())

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (left out by gpu_check.sh --without)",
                                      name=fullname)
        return None


_names = os.environ.get("GPU_CHECK_WITHOUT", "").split(",")
if any(n.strip() for n in _names):
    sys.meta_path.insert(0, LeaveOut(_names))

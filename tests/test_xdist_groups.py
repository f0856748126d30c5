"""`make test` runs the suite under pytest-xdist with `--dist loadgroup`: each module is one group (its module
fixtures are built once, on one worker; tests/conftest.py). A pytest that ignores the groups (pytest 9 with
pytest-xdist 3.8) silently builds them once per worker: the demo study alone twice."""

import pytest


def test_this_module_runs_as_one_xdist_group(request):
    if not getattr(request.config.option, "loadgroup", False):   # set on each worker by pytest-xdist
        pytest.skip("not under `--dist loadgroup` (make test, make test-fast)")
    assert request.node.nodeid.endswith("@tests/test_xdist_groups.py"), request.node.nodeid

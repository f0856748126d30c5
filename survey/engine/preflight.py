"""Checks that run on the driver before the store is opened or Ray starts: every network builds and
answers a probe, and every (task, network) pair of the plan can run. A failure is a StudyError of one
line naming the study file and the culprit."""

from __future__ import annotations

import json

from survey.engine.networks import NetworkHandle
from survey.plan import Unit
from survey.spec import NetworkSpec, Study, StudyError


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _files(spec: NetworkSpec) -> str:
    """The files a network entry names, as written in the study."""
    if spec.factory is None:
        return "zoo weights"
    return f"factory {spec.factory}" + (f", weights {spec.weights}" if spec.weights else "")


def probe_network(spec: NetworkSpec, handle: NetworkHandle, notes: list[str] | None = None) -> str | None:
    """Build the network on the CPU and call it on a probe; None when it works, else the problem. `notes`
    (when given) hears a line when the network is not deterministic."""
    from survey.nets.byo import check_network, determinism_note

    try:
        net, physics = handle.build("cpu")
        if handle.zoo:  # bring-your-own networks are probed by build() itself
            check_network(handle.name, net, physics)
        note = determinism_note(handle.name, net, physics) if notes is not None else None
        if note:
            notes.append(note)
    except Exception as err:  # noqa: BLE001 - user code: any failure is reported, none is raised
        problem = _one_line(err).removeprefix(f"network {handle.name!r}: ")
        return problem if isinstance(err, ValueError) else f"{type(err).__name__}: {problem}"
    return None


def probe_networks(study: Study, handles: dict[str, NetworkHandle], notes: list[str] | None = None) -> None:
    """Build and probe every network; StudyError naming the first that fails, its files and the problem."""
    for spec in study.networks:
        problem = probe_network(spec, handles[spec.name], notes)
        if problem is not None:
            raise StudyError(f"{study.path}: network {spec.name!r} ({_files(spec)}): {problem}")


def checked_networks(study: Study, notes: list[str] | None = None) -> dict[str, NetworkHandle]:
    """In one pass over the network entries: resolve each (files read, zoo weights present), build it and probe
    it; the handles of networks that passed. StudyError names the first entry that fails, its files and the
    problem. `notes` hears what a user should know about a network that works (not deterministic)."""
    from survey.engine.networks import resolve_network

    handles = {}
    for spec in study.networks:
        try:
            handle = resolve_network(spec, study.base_dir)
        except ValueError as err:
            problem = _one_line(err).removeprefix(f"network {spec.name!r}: ")
            raise StudyError(f"{study.path}: network {spec.name!r} ({_files(spec)}): {problem}") from None
        problem = probe_network(spec, handle, notes)
        if problem is not None:
            raise StudyError(f"{study.path}: network {spec.name!r} ({_files(spec)}): {problem}")
        handles[spec.name] = handle
    return handles


def check_tasks(study: Study, units: list[Unit], handles: dict[str, NetworkHandle],
                notes: list[str] | None = None) -> None:
    """Build each distinct (task, parameters, network) of the plan once and ask the task whether it fits
    the network's images (`check_image_size`, where a task has one) and whether the network has the
    companion models it needs (`companions_needed`); raises StudyError listing every pair that can never
    run, before anything is scheduled or written. What a task warns about its settings (rows that will not
    be validated, ...) goes to `notes` once per task entry, as one line naming it, instead of a Python warning."""
    import warnings

    from survey.tasks import make_task

    problems: list[str] = []
    seen: set[tuple] = set()
    for unit in units:
        key = (unit.task_index, unit.network, json.dumps(unit.params, sort_keys=True, default=str))
        if key in seen:
            continue
        seen.add(key)
        try:
            with warnings.catch_warnings(record=True) as heard:
                warnings.simplefilter("always")
                task = make_task(unit.task, **unit.params)
            for warning in heard if notes is not None else ():
                line = f"[[tasks]] #{unit.task_index + 1} ({unit.task}): {_one_line(warning.message)}"
                if line not in notes:
                    notes.append(line)
            check = getattr(task, "check_image_size", None)
            if check is not None:
                size = handles[unit.network].size
                check(size, size)
            needed = getattr(task, "companions_needed", lambda: ())()
            have = handles[unit.network].companion_methods() if needed else []
            missing = [m for m in needed if m not in have]
            if missing:
                raise ValueError(f"needs the trained companion(s) {missing}, which it does not have (zoo networks: "
                                 + ", ".join(f"`survey zoo train {unit.network}-{m}`" for m in missing)
                                 + "; or drop them from the task's `methods`)")
        except ValueError as exc:
            problems.append(f"[[tasks]] #{unit.task_index + 1} ({unit.task}) on network {unit.network!r}: "
                            f"{_one_line(exc)}")
    if problems:
        shown = "; ".join(dict.fromkeys(problems))
        raise StudyError(f"{study.path}: {len(problems)} task / network pair(s) can never run (restrict the "
                         f"task's `networks`, or change its parameters): {shown}")


def preflight(study: Study, units: list[Unit], handles: dict[str, NetworkHandle]) -> None:
    """Every check: networks build and answer a probe, then every (task, network) pair fits."""
    probe_networks(study, handles)
    check_tasks(study, units, handles)

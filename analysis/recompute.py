"""How a number of the report is recomputed: a *call* (a JSON-able dict naming one analysis function and its
keyword arguments, never the store) and the `survey estimate` command line a reader would type for it.

    {"function": "estimate", "kwargs": {"table": "ball", "bad": "point_gain >= 2", "by": ["network"], ...}}

`run_call(store_or_con, call)` runs it and returns rows (dicts). The functions are a fixed list (FUNCTIONS),
so a manifest can name only read-only analyses of the store; "sql" runs one read-only statement through the
sandboxed `survey.analysis.db.query`. `call_from_command` turns a printed `survey estimate` line into the
call the CLI makes for it, so the command under a table and the recomputation are one thing.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any, Callable

#: The analyses a call may name (function name -> its importer).
FUNCTIONS: dict[str, Callable[[], Callable]] = {}


def _register(name: str, module: str, attr: str) -> None:
    def load():
        from importlib import import_module
        return getattr(import_module(module), attr)
    FUNCTIONS[name] = load


_register("estimate", "survey.analysis.estimate", "estimate")
_register("per_image_distribution", "survey.analysis.estimate", "per_image_distribution")
_register("sweep_slopes", "survey.analysis.estimate", "sweep_slopes")
_register("paired_gain_ratio", "survey.analysis.paired", "paired_gain_ratio")
_register("rare_distribution", "survey.analysis.rare_summary", "rare_distribution")


def call(function: str, **kwargs: Any) -> dict[str, Any]:
    """A call spec; tuples become lists so that the spec survives JSON unchanged."""
    if function not in FUNCTIONS and function not in ("sql", "criteria"):
        raise ValueError(f"unknown analysis function {function!r}")
    return {"function": function, "kwargs": json.loads(json.dumps(kwargs, default=list))}


def call_key(spec: dict[str, Any]) -> str:
    """A stable text key of a call (equal calls, equal keys)."""
    return json.dumps(spec, sort_keys=True, default=str)


def _numbers(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def call_from_command(command: str) -> dict[str, Any] | None:
    """The call `survey estimate ...` makes (as survey.cli.analyze.estimate does), or None for another command."""
    argv = shlex.split(command)
    if argv[:2] != ["survey", "estimate"]:
        return None
    flags = {"--paired", "--slopes", "--distribution", "--wide"}
    opts: dict[str, Any] = {}
    i = 2
    while i < len(argv):
        name = argv[i]
        if name in flags:
            opts[name] = True
            i += 1
        else:
            opts[name] = argv[i + 1]
            i += 2
    groups = [c.strip() for c in opts.get("--by", "").split(",") if c.strip()]
    table, bad, where = opts.get("--table"), opts.get("--bad"), opts.get("--where")
    confidence = float(opts.get("--confidence", 0.95))
    n_boot, seed = int(opts.get("--bootstrap", 2000)), int(opts.get("--seed", 0))
    levels = _numbers(opts.get("--levels", "0.01,0.1,0.5"))
    quantiles = _numbers(opts.get("--quantiles", "0.5,0.9,0.99"))
    cluster = opts.get("--cluster")
    if opts.get("--paired"):
        from survey.analysis.paired import BY
        return call("paired_gain_ratio", table=table, by=groups or list(BY), where=where or "search = 'budget'",
                    confidence=confidence, n_boot=n_boot, seed=seed, unit=cluster or "image")
    if table == "rare" and bad is None and not opts.get("--slopes"):
        from survey.analysis.rare_summary import LEVELS
        return call("rare_distribution", by=groups, where=where, confidence=confidence,
                    levels=list(LEVELS) if "--levels" not in opts else levels, quantiles=quantiles)
    if opts.get("--distribution"):
        return call("per_image_distribution", table=table, bad=bad, where=where, by=groups, levels=levels,
                    quantiles=quantiles, confidence=confidence)
    if opts.get("--slopes"):
        return call("sweep_slopes", table=table, by=groups, where=where, x=opts.get("--x", "value"),
                    y=opts.get("--y", "psnr"), confidence=confidence, n_boot=n_boot, seed=seed)
    return call("estimate", table=table, bad=bad, where=where, by=groups, per=opts.get("--per", "row"),
                confidence=confidence, n_boot=n_boot, seed=seed, x=opts.get("--x", "value"),
                y=opts.get("--y", "psnr"), unit=cluster)


def run_call(store, spec: dict[str, Any], *, root: Path | None = None) -> list[dict[str, Any]]:
    """Rows of `spec` on `store` (a directory or a connection from `survey.analysis.db.connect`).

    "sql": kwargs {"sql"}; rows as records. "criteria": kwargs {"criteria", "n_boot", "seed", "correction",
    "cluster"}; one row per criterion x group (criterion index, group columns, decision fields) and one per
    criterion (its status). root: the store directory (criteria name it in their commands)."""
    function, kwargs = spec["function"], dict(spec.get("kwargs") or {})
    if function == "sql":
        from survey.analysis.db import execute
        from survey.analysis.sections.text import records
        if isinstance(store, (str, Path)):
            from survey.analysis.db import query
            return records(query(store, kwargs["sql"]))
        return records(execute(store, kwargs["sql"]))
    if function == "criteria":
        from survey.analysis.sections.study import evaluate_criteria
        con = None if isinstance(store, (str, Path)) else store
        where = Path(store) if isinstance(store, (str, Path)) else (root or Path("."))
        results = evaluate_criteria(where, kwargs["criteria"], con=con, n_boot=kwargs.get("n_boot", 2000),
                                    seed=kwargs.get("seed", 0), correction=kwargs.get("correction", "holm"),
                                    cluster=kwargs.get("cluster"))
        rows: list[dict[str, Any]] = []
        for i, r in enumerate(results):
            rows.append({"criterion": i, "status": r.status})
            for g in r.groups:
                rows.append({"criterion": i, **{c: g.get(c) for c in r.by}, **g})
        return rows
    if function not in FUNCTIONS:
        raise ValueError(f"unknown analysis function {function!r}")
    return list(FUNCTIONS[function]()(store, **kwargs))


def same_number(printed: str, value: Any) -> bool:
    """Whether `value` prints as `printed` in the report's number format."""
    return printed == printed_value(value)


def printed_value(value: Any) -> str:
    """The report's text of one value: numbers as `format_number` (4 significant digits), text as is."""
    from survey.analysis.sections.text import format_number
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "–"
    return format_number(value)

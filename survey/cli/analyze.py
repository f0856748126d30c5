"""`survey query` and `survey estimate`: read-only SQL over the store, and probabilities with intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from survey.cli.common import StoreOption, command, fail, store_path

QUERY_FORMATS = ("table", "csv", "json", "parquet")
ESTIMATE_FORMATS = ("table", "json")
_DISPLAY_ROWS = 200


def _param_value(text: str) -> Any:
    """A --param value: a JSON number, true, false or null when it reads as one, else the string itself
    (quote it as JSON, '"3"', to pass a number as text)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if value is None or isinstance(value, (bool, int, float, str)) else text


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _print_table(columns: list[str], rows: list[list[Any]], title: str | None = None, more: int = 0,
                 wide: bool = True) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=True)
    cells = [[_cell(v) for v in row] for row in rows]
    for row in cells:
        table.add_row(*row)
    # wide enough for every cell in full (a pipe or a narrow terminal wraps lines rather than cutting numbers)
    needed = sum(max([len(c), *(len(r[i]) for r in cells)]) + 3 for i, c in enumerate(columns)) + 1
    console = Console(width=max(160, Console().width, needed) if wide else max(Console().width, needed))
    console.print(table)
    if more:
        console.print(f"... {more} more rows (use --format csv/json/parquet with --out for all)")


@command
def query(
    sql: str = typer.Argument(..., help="One read-only SQL statement over the store's views "
                                        "(ball, attacks, sweeps, insertions, runs, ledger ...)."),
    store: StoreOption = None,
    fmt: str = typer.Option("table", "--format", help="table, csv, json or parquet (parquet needs --out)."),
    param: list[str] = typer.Option(None, "--param", help="Value for the next ? / $1 placeholder (repeat; "
                                                          "numbers as JSON, '\"3\"' for the text 3)."),
    out: Path = typer.Option(None, "--out", help="Write the result to this file instead of the terminal."),
) -> None:
    """Run one read-only SQL query over the store (SELECT, WITH, DESCRIBE, SUMMARIZE, EXPLAIN).

    Files outside the store cannot be read, and nothing can be written.

    Example: survey query "SELECT network, count(*) FROM attacks GROUP BY network" --store results
    """
    from survey.analysis.db import query as run_query

    if fmt not in QUERY_FORMATS:
        fail(f"--format must be one of {', '.join(QUERY_FORMATS)}, got {fmt!r}")
    if fmt == "parquet" and out is None:
        fail("--format parquet needs --out FILE")
    params = [_param_value(p) for p in param] if param else None
    frame = run_query(store_path(store), sql, params)
    if fmt == "table":
        if out is not None:
            fail("--format table prints to the terminal; use csv, json or parquet with --out")
        shown = frame.head(_DISPLAY_ROWS)
        _print_table([str(c) for c in frame.columns], shown.astype(object).values.tolist(),
                     more=len(frame) - len(shown))
        return
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out)
    else:
        text = frame.to_csv(index=False) if fmt == "csv" else frame.to_json(orient="records", date_format="iso",
                                                                             indent=2)
        if out is None:
            typer.echo(text.rstrip("\n"))
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text if text.endswith("\n") else text + "\n")
    typer.echo(f"wrote {len(frame)} rows to {out}", err=True)


@command
def estimate(
    table: str = typer.Option(..., "--table", help="Table to count in: ball, attacks, sweeps, insertions ..."),
    bad: str = typer.Option(None, "--bad", help="SQL predicate for a bad outcome, e.g. "
                                                "\"out_change_rel >= 0.1\" (per curve: \"slope < 0\", the default)."),
    by: str = typer.Option(None, "--by", help="Comma-separated group columns, e.g. network,radius."),
    where: str = typer.Option(None, "--where", help="SQL predicate selecting the rows to count."),
    confidence: float = typer.Option(0.95, "--confidence", help="Confidence level of the intervals."),
    per: str = typer.Option("row", "--per", help="Unit counted: row; image (bad if any of its rows is); "
                                                 "curve (sweeps: per-image slope, y_start, y_end, y_peak ...)."),
    slopes: bool = typer.Option(False, "--slopes", help="Instead: mean per-image slope of y against x with a "
                                                        "bootstrap interval (sweeps)."),
    distribution: bool = typer.Option(False, "--distribution", help="Instead: how P(bad) spreads over images "
                                                                    "(each image's share of bad rows): mean, "
                                                                    "quantiles, and per level the images above it "
                                                                    "with an exact interval (--per row or image)."),
    levels: str = typer.Option("0.01,0.1,0.5", "--levels", help="--distribution: comma-separated levels of "
                                                                "per-image P(bad), each in [0, 1)."),
    quantiles: str = typer.Option("0.5,0.9,0.99", "--quantiles", help="--distribution: comma-separated "
                                                                      "quantiles of per-image P(bad), in [0, 1]."),
    x: str = typer.Option("value", "--x", help="Curve abscissa for --per curve and --slopes (sweeps: value, the "
                                               "level on the row's axis; or ratio, views, sigma)."),
    y: str = typer.Option("psnr", "--y", help="Curve ordinate for --per curve and --slopes (psnr, ref_psnr, ssim, "
                                              "h_psnr ...)."),
    paired: bool = typer.Option(False, "--paired", help="Instead: the paired per-image worst-case gain ratio "
                                                        "network / reference (search = 'budget' rows) per network, "
                                                        "domain and budget (or --by), with an image-bootstrap "
                                                        "interval (--table attacks)."),
    n_boot: int = typer.Option(2000, "--bootstrap", help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    cluster: str = typer.Option(None, "--cluster", help="Unit of independence the intervals speak for: image, "
                                                        "volume or subject (default: the coarsest unit the rows "
                                                        "carry with at least 2 clusters)."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
    wide: bool = typer.Option(False, "--wide", help="Every interval method side by side (the default view shows "
                                                    "the primary interval only, to fit the terminal)."),
    store: StoreOption = None,
) -> None:
    """Probability of a bad outcome per group, with its primary interval (marked *: cluster-exact where rows
    share an image, else Clopper-Pearson) and the secondary ones (Clopper-Pearson, Wilson, image bootstrap).

    Example: survey estimate --table ball --bad "out_change_rel >= 0.1" --by network,radius --store results

    Example: survey estimate --table ball --bad "point_gain >= 2" --by network --per image --distribution
    --levels 0.01,0.1,0.5 --store results

    Example: survey estimate --paired --table attacks --store results

    Example: survey estimate --table ball --bad "point_gain >= 2" --by network --cluster volume --store results
    """
    from survey.analysis.estimate import estimate as run_estimate
    from survey.analysis.estimate import per_image_distribution, sweep_slopes

    if fmt not in ESTIMATE_FORMATS:
        fail(f"--format must be one of {', '.join(ESTIMATE_FORMATS)}, got {fmt!r}")
    if distribution and slopes:
        fail("--distribution and --slopes are two different summaries: give one")
    if distribution and per == "curve":
        fail("--distribution spreads per-image P(bad) over images: use --per row or --per image, not curve")
    groups = [c.strip() for c in by.split(",") if c.strip()] if by else []
    root = store_path(store)
    if cluster is not None and (slopes or distribution or (table == "rare" and bad is None)):
        fail("--cluster applies to the probability estimates and --paired, not to --slopes, --distribution or "
             "the rare table's summary")
    if paired:
        _print_paired(root, table, groups, where, confidence, n_boot, seed, fmt, cluster)
        return
    if table == "rare" and bad is None and not slopes:   # per-image rare-event estimates: their distribution
        from survey.analysis.rare_summary import LEVELS, rare_distribution

        rows = rare_distribution(root, by=groups, where=where, confidence=confidence,
                                 levels=LEVELS if levels == "0.01,0.1,0.5" else _numbers(levels, "--levels"),
                                 quantiles=_numbers(quantiles, "--quantiles"))
        if fmt == "json":
            typer.echo(json.dumps(rows, indent=2, default=str))
        else:
            columns = [c for c in (rows[0] if rows else {}) if c not in ("confidence", "estimand")]
            _print_table(columns, [[r.get(c) for c in columns] for r in rows],
                         title=f"rare: per-image P(bad) at {confidence:g} (bracket: surely to possibly above)")
        return
    if distribution:
        rows = per_image_distribution(root, table, bad, where=where, by=groups, levels=_numbers(levels, "--levels"),
                                      quantiles=_numbers(quantiles, "--quantiles"), confidence=confidence)
        if fmt == "json":
            typer.echo(json.dumps(rows, indent=2, default=str))
        elif not rows:
            typer.echo("no rows matched")
        else:
            columns = [c for c in rows[0] if c not in ("confidence", "estimand")]
            _print_table(columns, [[r.get(c) for c in columns] for r in rows],
                         title=f"{table}: per-image P({bad}) at {confidence:g}, {rows[0]['estimand'].split(':')[0]}")
        return
    if slopes:
        rows = sweep_slopes(root, table=table, by=groups, where=where, x=x, y=y, confidence=confidence,
                            n_boot=n_boot, seed=seed)
    else:
        rows = run_estimate(root, table, bad, where=where, by=groups, per=per, confidence=confidence,
                            n_boot=n_boot, seed=seed, x=x, y=y, unit=cluster)
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    _nan_note(root, table)
    if not rows:
        typer.echo("no rows matched")
        return
    asked = f"mean slope of {y} against {x}" if slopes else f"P({bad or 'slope < 0'})"
    title = f"{table}: {asked} at {confidence:g}"
    if slopes:
        columns = list(rows[0])
        _print_table(columns, [[r.get(c) for c in columns] for r in rows], title=title)
    else:
        _print_estimates(rows, title, wide)


def _nan_note(root: Path, table: str) -> None:
    """On stderr: the columns of `table` holding NaN, which every estimate reads as unknown (not counted)."""
    from survey.analysis.db import nan_counts

    try:
        counts = nan_counts(root, table)
    except (KeyError, ValueError, OSError):
        return
    if counts:
        shown = ", ".join(f"{c} ({n} rows)" for c, n in sorted(counts.items()))
        typer.echo(f"note: {table} holds NaN in {shown}; read as unknown, those rows count neither as bad nor as "
                   "good", err=True)


def _print_paired(root: Path, table: str, groups: list[str], where: str | None, confidence: float, n_boot: int,
                  seed: int, fmt: str, cluster: str | None = None) -> None:
    """`survey estimate --paired`: network / reference gain ratio per group (analysis/paired.py)."""
    from survey.analysis.paired import BY, paired_gain_ratio

    rows = paired_gain_ratio(root, table=table, by=groups or BY, where=where or "search = 'budget'",
                             confidence=confidence, n_boot=n_boot, seed=seed, unit=cluster or "image")
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("no paired rows matched (budget-search rows with attacked = 'network' and 'reference')")
        return
    keys = [c for c in (groups or BY) if c in rows[0]]
    unit = rows[0]["unit"]
    columns = [*keys, "images", f"{unit}s" if unit != "image" else "units", "network_median", "reference_median",
               "ratio", "interval*", "bootstrap", "p_sign_flip", "p_holm", "direction", "dropped", "median",
               "share_above_1"]
    shown = [[*(r[c] for c in keys), r["images"], r["units"], r["network_median"], r["reference_median"], r["ratio"],
              _pair(r["ci_low"], r["ci_high"]), _pair(r["boot_low"], r["boot_high"]),
              r["p_sign_flip"], r["p_holm"], r["direction"], r["dropped"], r["median"], r["share_above_1"]]
             for r in rows]
    _print_table(columns, shown, title=f"{table}: paired per-{unit} gain ratio network / reference (geometric mean "
                                       f"over {unit}s); * primary {confidence:g} interval: t on the per-{unit} log "
                                       "ratios; beside it the bootstrap (too narrow with few units)")
    console = Console(width=max(160, Console().width))
    console.print(f"p_sign_flip: exact two-sided sign-flip test of no difference; p_holm: Holm over the "
                  f"{rows[0]['family_size']} groups above; a direction is shown only when p_holm <= "
                  f"{1 - confidence:.3g} (the smallest p {rows[0]['units']} {unit}s allow is "
                  f"{rows[0]['min_p']:.3g})", highlight=False, markup=False)
    reasons: dict[str, int] = {}
    for r in rows:
        for reason, count in r["dropped_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    for reason, count in reasons.items():
        console.print(f"dropped {count} image{'s' if count != 1 else ''}: {reason}", highlight=False, markup=False)


def _pair(low: float, high: float) -> str:
    """'[low, high]', or '–' where there is no interval (one unit)."""
    return "–" if not (math.isfinite(low) and math.isfinite(high)) else f"[{low:.4g}, {high:.4g}]"


def _numbers(text: str, option: str) -> list[float]:
    """A comma-separated list of numbers (--levels, --quantiles)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"{option} must be comma-separated numbers, got {text!r}")
    if not values:
        fail(f"{option} needs at least one number")
    return values


def _interval(row: dict[str, Any]) -> str:
    low, high = row["ci_low"], row["ci_high"]
    return f"[{'-' if low is None else f'{low:.4g}'}, {'-' if high is None else f'{high:.4g}'}]"


def _print_estimates(rows: list[dict[str, Any]], title: str, wide: bool = False) -> None:
    """One line per group: counts, the primary estimate, its interval and one-sided upper bound and method;
    `wide`: each method's interval side by side (the primary one marked *) and the checks. The population the
    numbers speak for and the notes below."""
    from survey.analysis.estimate import FIXED_KEYS, METHODS

    groups = [c for c in rows[0] if c not in FIXED_KEYS]
    lines: dict[tuple, dict[str, Any]] = {}
    notes: dict[str, int] = {}
    populations: dict[str, int] = {}
    for row in rows:
        key = tuple(row[c] for c in groups)
        line = lines.setdefault(key, {**{c: row[c] for c in groups}, "n": row["n"], "k": row["k"], "p": row["p"],
                                      "clusters": row["clusters"], "check": row["rule_of_three"]})
        line[row["method"]] = _interval(row) + (" *" if row.get("primary") else "")
        if row.get("primary"):
            line.update(primary=row["method"], estimate=row["point"], upper=row["upper_bound"],
                        **{"interval*": _interval(row)})
            populations[row["estimand"]] = populations.get(row["estimand"], 0) + 1
        if row["method"] != "bootstrap":
            line["interval"] = row["interval"]
        if row["note"]:
            notes[f"{row['method']}: {row['note']}"] = notes.get(f"{row['method']}: {row['note']}", 0) + 1
    if wide:
        columns = [*groups, "n", "k", "p", "primary", "estimate", "upper", *METHODS, "interval", "check", "clusters"]
    else:
        columns = [*groups, "n", "k", "clusters", "estimate", "interval*", "upper", "primary"]
    _print_table(columns, [[line.get(c) for c in columns] for line in lines.values()], title=title, wide=wide)
    console = Console(width=max(160, Console().width)) if wide else Console()
    console.print("* the primary interval (report this one); estimate: its point estimate; upper: its upper "
                  "confidence bound, one-sided at the level (what criteria compare with their limits)",
                  highlight=False, markup=False)
    for population, count in populations.items():
        console.print(f"population: {population} ({count} group{'s' if count > 1 else ''})", highlight=False,
                      markup=False)
    if not wide:
        console.print("(--wide: every interval method side by side, and the rule-of-three check)", highlight=False,
                      markup=False)
    if wide and any(line["check"] is not None for line in lines.values()):
        Console().print("check: rule of three, 3/n when k = 0 (1 - 3/n when k = n), at 95%")
    for note, count in notes.items():
        Console().print(f"{note} ({count} group{'s' if count > 1 else ''})", highlight=False, markup=False)


@command
def plan_size(
    limit: float = typer.Option(..., "--limit", help="The criterion's largest acceptable P(bad) (max_upper)."),
    rate: float = typer.Option(0.0, "--rate", help="The rate the tested network is believed to have (below the "
                                                   "limit): 0 when no bad outcome is expected."),
    power: float = typer.Option(None, "--power", help="Chance of passing wanted at that rate (e.g. 0.8); "
                                                      "without it, the sample at which the rate itself passes."),
    confidence: float = typer.Option(0.95, "--confidence", help="Confidence of the one-sided bound."),
    family: int = typer.Option(1, "--family", help="Criterion x group decisions judged together (Holm: the last "
                                                   "one passes at alpha / family)."),
    unit: str = typer.Option("image", "--unit", help="What one cluster is (image, volume, subject): named in the "
                                                     "answer only."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """How many images (or volumes, subjects) a criterion "P(bad) <= limit" needs to PASS at a target rate: exact
    Clopper-Pearson on clusters counted once each, one-sided at the confidence.

    Example: survey plan-size --limit 0.05 --rate 0.01 --power 0.8
    """
    from survey.analysis.decisions import plan_size as run_plan

    if fmt not in ESTIMATE_FORMATS:
        fail(f"--format must be one of {', '.join(ESTIMATE_FORMATS)}, got {fmt!r}")
    plan = run_plan(limit, rate, confidence=confidence, power=power, family=family)
    plan["unit"] = unit
    if fmt == "json":
        typer.echo(json.dumps(plan, indent=2))
        return
    if plan["clusters"] is None:
        typer.echo(f"no sample up to 10^7 {unit}s passes P(bad) <= {limit:g} at rate {rate:g}")
        return
    how = (f"with power {plan['achieved_power']:.3f} (asked {power:g})" if power is not None
           else "at that rate itself (no margin for chance: use --power for one)")
    typer.echo(f"{plan['clusters']:,} {unit}s pass P(bad) <= {limit:g} at rate {rate:g} {how}: at most "
               f"{plan['bad_allowed']} bad {unit}s of {plan['clusters']:,}, one-sided {plan['level']:.4g} "
               f"Clopper-Pearson ({family} decision{'s' if family > 1 else ''} in the family)")

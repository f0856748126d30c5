"""Numbers quoted in the docs, each checked against a committed extract (docs/claims.toml).

A doc marks each quoted number with its claim id, invisible once rendered:

    DAGAN's ratio is <!-- n:matched_dagan_ratio -->0.64<!-- /n --> over 6 images.

and the claims file says how to recompute it, on which store (a name that maps to a committed extract):

    [stores]
    results-quick = "tests/fixtures/quick/extract"

    [claims.matched_dagan_ratio]
    command = "survey estimate --paired --table attacks --store results-quick"   # or call = {...}, or sql = "..."
    row = { network = "dagan", budget = 0.02 }     # the key columns of the row (default: the only row)
    field = "ratio"                                # default: the row's only or first column
    format = "{:.2f}"                              # Python format of the value (default: the report's, 4 digits)

`[docs]` names the docs and the `## ` sections whose numbers are claims ("*": every section). In them,
every number outside code, links and markers must be marked, or listed under `[unverified]` (numbers of
earlier runs whose stores are not committed), or under `[settings]` (numbers that are parameters, not
results). `check` returns one line per problem: a marked number without a claim, a claim whose value
differs, an unmarked number not listed, a listed number no longer in the doc, a claim quoted nowhere.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from survey.analysis.recompute import call_from_command, printed_value, run_call

MARK = re.compile(r"<!--\s*n:([A-Za-z0-9_.:-]+)\s*-->(.*?)<!--\s*/n\s*-->", re.S)
NUMBER = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+−]?\d+)?%?(?!\w)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\([^)]*\)")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_URL = re.compile(r"https?://\S+")


@dataclass
class Findings:
    """What `check` found: problems (each fails), checked claims (id, value) and unverified numbers."""

    problems: list[str] = field(default_factory=list)
    checked: list[tuple[str, str]] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)


def load(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def sections(text: str, wanted: list[str]) -> list[tuple[str, int, str]]:
    """(title, first line number, body) of each `## ` section of `text` named in `wanted` ("*": all; the
    text before the first heading counts as section "")."""
    parts: list[tuple[str, int, list[str]]] = [("", 1, [])]
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            parts.append((line[3:].strip(), i, []))
        else:
            parts[-1][2].append(line)
    return [(title, start, "\n".join(body)) for title, start, body in parts
            if "*" in wanted or title in wanted]


def _blank(match: re.Match) -> str:
    """The match replaced by spaces, newlines kept (line numbers stay right)."""
    return re.sub(r"[^\n]", " ", match.group(0))


def marked(text: str) -> list[tuple[str, str]]:
    """(claim id, quoted text) of every marked number."""
    return [(m.group(1), m.group(2).strip()) for m in MARK.finditer(text)]


def unmarked(text: str) -> list[str]:
    """Every number of `text` outside code fences, inline code, link targets, URLs, comments and markers."""
    for pattern in (_FENCE, MARK, _COMMENT, _CODE, _LINK, _URL):
        text = pattern.sub(_blank, text)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return NUMBER.findall(text)


def _store(name: str, stores: dict[str, str], root: Path) -> Path:
    if name not in stores:
        raise ValueError(f"store {name!r} is not in [stores]")
    return root / stores[name]


@lru_cache(maxsize=256)
def _rows(store: str, spec: str) -> list[dict[str, Any]]:
    """The rows of one call on one store: claims that quote the same table share one computation."""
    return run_call(Path(store), json.loads(spec))


def recompute(claim: dict[str, Any], stores: dict[str, str], root: Path) -> str:
    """The claim's value as the doc should print it, recomputed on its store's extract."""
    if "command" in claim:
        argv = shlex.split(claim["command"])
        name = argv[argv.index("--store") + 1] if "--store" in argv else claim.get("store")
        spec = call_from_command(claim["command"])
        if spec is None:
            raise ValueError(f"not a `survey estimate` command: {claim['command']!r}")
    elif "sql" in claim:
        name, spec = claim.get("store"), {"function": "sql", "kwargs": {"sql": claim["sql"]}}
    elif "call" in claim:
        name, spec = claim.get("store"), {"function": claim["call"]["function"],
                                          "kwargs": claim["call"].get("kwargs") or {}}
    else:
        raise ValueError("a claim needs command, sql or call")
    rows = _rows(str(_store(str(name), stores, root)), json.dumps(spec, sort_keys=True))
    key = claim.get("row") or {}
    matches = [r for r in rows if all(r.get(c) == v for c, v in key.items())]
    if not matches:
        raise ValueError(f"no row with {key} among {len(rows)}")
    if len(matches) > 1 and "field" not in claim and len(rows[0]) > 1:
        raise ValueError(f"{len(matches)} rows match {key}: name more key columns")
    row = matches[0]
    name_of_field = claim.get("field") or next(iter(row))
    value = row[name_of_field]
    return claim["format"].format(value) if "format" in claim else printed_value(value)


def check(root: Path, path: Path) -> Findings:
    """Every marked number of the claims file's docs against its claim, and every unmarked one against the
    [unverified] and [settings] lists (module docstring)."""
    spec = load(path)
    claims: dict[str, Any] = spec.get("claims") or {}
    stores: dict[str, str] = spec.get("stores") or {}
    found = Findings()
    quoted: set[str] = set()
    for doc, wanted in (spec.get("docs") or {}).items():
        doc_path = root / doc
        if not doc_path.is_file():
            found.problems.append(f"{doc}: no such doc")
            continue
        text = doc_path.read_text(encoding="utf-8")
        numbers: Counter[str] = Counter()
        for title, start, body in sections(text, list(wanted)):
            for cid, value in marked(body):
                quoted.add(cid)
                if cid not in claims:
                    found.problems.append(f"{doc} (section {title!r}): number {value} is marked {cid!r}, "
                                          "which has no claim")
                    continue
                try:
                    got = recompute(claims[cid], stores, root)
                except Exception as exc:  # noqa: BLE001 - a claim that cannot be recomputed fails, named
                    found.problems.append(f"{doc}: claim {cid!r} ({value}) could not be recomputed: {exc}")
                    continue
                if got != value:
                    found.problems.append(f"{doc}: claim {cid!r} says {value}, its extract gives {got}")
                else:
                    found.checked.append((cid, value))
            numbers.update(unmarked(body))
        listed = Counter((spec.get("unverified") or {}).get(doc) or [])
        settings = Counter((spec.get("settings") or {}).get(doc) or [])
        allowed = listed + settings
        for number, n in (numbers - allowed).items():
            found.problems.append(f"{doc}: {n} unmarked number(s) {number!r} in a claim section: mark each "
                                  "<!-- n:ID -->...<!-- /n --> with a claim, or list it under [settings]")
        for number, n in (allowed - numbers).items():
            found.problems.append(f"{doc}: {number!r} is listed under [unverified] or [settings] {n} time(s) more "
                                  "than the doc has it unmarked: remove it from the list")
        found.unverified += [f"{doc}: {number}" for number in (listed & numbers).elements()]
    for cid in sorted(set(claims) - quoted):
        found.problems.append(f"claim {cid!r} is quoted in no doc: remove it or mark the number")
    return found


def fill(root: Path, path: Path) -> dict[str, list[str]]:
    """Write each claim's recomputed value into its marks in the claims file's docs (after a rerun: mark the
    numbers, add their claims, fill); doc -> the claim ids whose text changed. A mark without a claim, or a
    claim that cannot be recomputed, raises ValueError naming it, and no doc is written."""
    spec = load(path)
    claims: dict[str, Any] = spec.get("claims") or {}
    stores: dict[str, str] = spec.get("stores") or {}
    values: dict[str, str] = {}
    texts: dict[str, str] = {}
    changed: dict[str, list[str]] = {}

    def value(cid: str) -> str:
        if cid not in claims:
            raise ValueError(f"mark {cid!r} has no claim in {path}")
        if cid not in values:
            try:
                values[cid] = recompute(claims[cid], stores, root)
            except Exception as exc:  # noqa: BLE001 - named, then nothing is written
                raise ValueError(f"claim {cid!r} could not be recomputed: {exc}") from exc
        return values[cid]

    for doc in spec.get("docs") or {}:
        text = (root / doc).read_text(encoding="utf-8")
        ids: list[str] = []

        def put(match: re.Match) -> str:
            new = value(match.group(1))
            if match.group(2).strip() != new:
                ids.append(match.group(1))
            return f"<!-- n:{match.group(1)} -->{new}<!-- /n -->"

        texts[doc] = MARK.sub(put, text)
        changed[doc] = ids
    for doc, text in texts.items():
        if changed[doc]:
            (root / doc).write_text(text, encoding="utf-8")
    return changed


def unmarked_lists(root: Path, path: Path) -> dict[str, list[str]]:
    """doc -> its unmarked numbers in the claim sections, in reading order (to fill [settings] after a rewrite)."""
    spec = load(path)
    out = {}
    for doc, wanted in (spec.get("docs") or {}).items():
        text = (root / doc).read_text(encoding="utf-8")
        out[doc] = [n for _, _, body in sections(text, list(wanted)) for n in unmarked(body)]
    return out


if __name__ == "__main__":
    # python -m survey.analysis.claims [docs/claims.toml]: the unmarked numbers, as TOML;
    # python -m survey.analysis.claims fill [docs/claims.toml]: write the recomputed values into the marks
    import sys

    args = sys.argv[1:]
    filling = args[:1] == ["fill"]
    rest = args[1:] if filling else args
    claims_file = Path(rest[0] if rest else "docs/claims.toml")
    if filling:
        for doc, ids in fill(Path.cwd(), claims_file).items():
            print(f"{doc}: {len(ids)} value(s) changed" + (f" ({', '.join(ids)})" if ids else ""))
        sys.exit(0)
    for doc, numbers in unmarked_lists(Path.cwd(), claims_file).items():
        print(f"{json.dumps(doc)} = {json.dumps(numbers, ensure_ascii=False)}")

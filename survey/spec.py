"""Study files (TOML): validated into a `Study`, with errors that name the file, the field and the value."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class StudyError(ValueError):
    """A study file that cannot be run; the message names file, field and value."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkSpec(_Model):
    """A zoo network by `name`, or a bring-your-own network by `factory` plus its `physics`."""

    name: str
    factory: str | None = None           # "package.module:callable" or "path/to/file.py:callable"
    weights: str | None = None           # safetensors or a state dict (loaded with weights_only=True)
    physics: dict[str, Any] | None = None  # make_physics keywords, for bring-your-own networks
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # datasets (kinds or study names) the network was trained on: the report marks groups on them as
    # in-distribution; zoo networks take it from their model card unless given here
    trained_on: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        from survey.layout import check_partition_value   # the name is a directory of the store
        return check_partition_value(name)

    @model_validator(mode="after")
    def _zoo_or_factory(self) -> "NetworkSpec":
        if self.factory is None:
            from survey.nets.zoo import zoo_names
            if self.name not in zoo_names():
                raise ValueError(f"unknown zoo network {self.name!r} (choose one of {zoo_names()}, "
                                 "or give `factory` and `physics` for your own network)")
            if self.physics is not None or self.weights is not None:
                raise ValueError(f"zoo network {self.name!r} brings its own physics and weights; "
                                 "remove `physics`/`weights` or give a `factory`")
        elif self.physics is None:
            raise ValueError(f"network {self.name!r} has a factory but no `physics` table")
        return self


class DatasetSpec(_Model):
    """A dataset under a study's own `name` (what rows, estimates and the report show), loaded as `kind`
    (a registered dataset; default: the name), so two `folder` datasets can be two hospitals' scans."""

    name: str
    kind: str | None = None                 # the loader (survey.data); None: `name`
    split: Literal["train", "val", "test"] = "test"
    count: int | None = Field(None, ge=1)
    size: int | None = Field(None, ge=8)   # default: each network's own image size
    params: dict[str, Any] = Field(default_factory=dict)   # e.g. path for folder/fastmri

    @model_validator(mode="after")
    def _known(self) -> "DatasetSpec":
        from survey.data import dataset_names
        if self.loader not in dataset_names():
            what = f"dataset kind {self.kind!r}" if self.kind is not None else f"dataset {self.name!r}"
            hint = "" if self.kind is not None else " (or give `kind` to name a dataset of that kind yourself)"
            raise ValueError(f"unknown {what}; choose one of {dataset_names()}{hint}")
        return self

    @property
    def loader(self) -> str:
        """The registered dataset that loads this one: `kind`, else `name`."""
        return self.kind or self.name


class TaskSpec(_Model):
    """One test; list values in `params` expand to a grid (see `survey.plan`)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    images_per_unit: int = Field(4, ge=1)
    repeats: int = Field(1, ge=1)           # independent repetitions (seeds) per grid point and shard
    networks: list[str] | None = None      # restrict to these networks (default: all)
    datasets: list[str] | None = None      # restrict to these datasets (default: all)
    max_images: int | None = Field(None, ge=1)  # only the first N images of each dataset (costly tests)


class EngineSpec(_Model):
    actors_per_network: int = Field(1, ge=1)
    max_in_flight: int = Field(2, ge=1)     # per actor
    retries: int = Field(2, ge=0)            # extra attempts for a unit that raises
    max_crashes: int = Field(5, ge=1)        # a unit whose calls kill this many actors is recorded as failed
    flush_seconds: float = Field(5.0, gt=0)  # finished units reach the store (rows, then ledger) this often
    device: str = "auto"                    # auto: cuda when available, else cpu
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0)
    # memory budget per actor (GiB) that batch sizes are planned in (survey.engine.memory); None: the
    # actor's share of the free RAM (CPU) or free GPU memory (CUDA)
    memory_gb: float | None = Field(None, gt=0, allow_inf_nan=False)


class CriterionSpec(_Model):
    """An acceptance criterion: the upper confidence bound of P(bad) must not exceed `max_upper`."""

    name: str
    table: str
    bad: str
    where: str | None = None
    # groups judged apart; datasets are kept apart unless `by` leaves "dataset" out (pooling them)
    by: list[str] = Field(default_factory=lambda: ["network", "dataset"])
    per: Literal["row", "image", "curve"] = "row"   # unit of counting (see survey.analysis.estimate)
    max_upper: float = Field(..., gt=0, le=1)
    confidence: float = Field(0.95, gt=0, lt=1)


class Study(_Model):
    name: str
    seed: int = 0
    store: str = "results"
    description: str = ""
    intended_use: str = ""
    networks: list[NetworkSpec] = Field(..., min_length=1)
    datasets: list[DatasetSpec] = Field(..., min_length=1)
    tasks: list[TaskSpec] = Field(..., min_length=1)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    criteria: list[CriterionSpec] = Field(default_factory=list)
    # family-wise correction over every criterion x group decision (survey.analysis.decisions): "holm"
    # keeps the chance of any wrong pass at 1 - confidence; "none" judges each decision alone
    correction: Literal["holm", "none"] = "holm"
    # the study's own tasks, families, operators and report sections (survey.plugins): .py files relative
    # to the study file, or importable module names; imported before the rest of the study is validated
    plugins: list[str] = Field(default_factory=list)
    path: str | None = None                # where the study file was read from (set by load_study)

    @model_validator(mode="after")
    def _unique_and_known(self) -> "Study":
        from survey.tasks import task_names
        for kind, names in (("network", [n.name for n in self.networks]),
                            ("dataset", [d.name for d in self.datasets])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} names {dupes}")
        for i, task in enumerate(self.tasks):
            if task.name not in task_names():
                raise ValueError(f"tasks[{i}]: unknown task {task.name!r}; choose one of {task_names()}")
            for field, known in (("networks", [n.name for n in self.networks]),
                                 ("datasets", [d.name for d in self.datasets])):
                for name in getattr(task, field) or []:
                    if name not in known:
                        raise ValueError(f"tasks[{i}].{field}: {name!r} is not declared in the study")
        return self

    @property
    def base_dir(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()

    def digest(self) -> str:
        """sha256 of the study's content (not its path): names the study in the `runs` table."""
        body = self.model_dump(exclude={"path"} if self.plugins else {"path", "plugins"})  # older digests stay
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _format_error(path: Path, err: ValidationError) -> str:
    """One line: the file, then each problem's field, message and value."""
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"]).replace(".[", "[")
        value = e.get("input")
        shown = "" if isinstance(value, (dict, list)) else f" (value: {value!r})"
        problems.append(f"{loc or '<top>'}: {e['msg']}{shown}")
    return f"{path}: invalid study file: " + "; ".join(problems)


def check_task_params(study: Study, path: Path | str) -> None:
    """Build every grid point of every task (unknown or invalid parameters raise in the task registry);
    StudyError naming the file, the [[tasks]] entry (1-based index and task name) and what the task said."""
    from survey.grid import expand_grid
    from survey.tasks import make_task

    for i, task in enumerate(study.tasks):
        for params in expand_grid(task):
            try:
                make_task(task.name, **params)
            except (ValueError, TypeError) as err:
                said = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
                raise StudyError(f"{path}: [[tasks]] #{i + 1} ({task.name}): {said}") from None


def load_plugins(data: dict, path: Path) -> None:
    """Import the study's `plugins` (with the study's folder on the import path) before anything else is
    validated, so the names they register are known; StudyError naming the file and the plugin."""
    from survey import plugins

    entries = data.get("plugins", [])
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise StudyError(f"{path}: plugins: must be a list of file paths or module names, got {entries!r}")
    base = path.parent if path.name != "<study>" else Path.cwd()
    try:
        plugins.load(entries, base)
    except plugins.PluginError as err:
        raise StudyError(f"{path}: {err}") from None


def parse_study(data: dict, path: Path | str = "<study>") -> Study:
    """Validate a study's content (plugins first, then fields, names, every task's parameters at every grid
    point)."""
    path = Path(path)
    load_plugins(data, path)
    try:
        study = Study.model_validate({**data, "path": str(path)})
    except ValidationError as err:
        raise StudyError(_format_error(path, err)) from None
    check_task_params(study, path)
    return study


def load_study(path: Path | str) -> Study:
    """Read and validate a TOML study file; raises StudyError naming file, field and value."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise StudyError(f"{path}: not valid TOML: {err}") from None
    return parse_study(data, path.resolve())

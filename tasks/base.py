"""The task contract: `Task`, its registry, the call-time context, seeded generators.

A task (foolbox 3's `attacks/base.py` is the model) is a keyword-only dataclass subclassing `Task`
that holds only its validated hyper-parameters (validators in `survey.tasks.validate`). Network,
physics, reference and images arrive at call time in a `TaskContext`. The final `Task.__call__`
does the shared work (eval mode, no autograd unless the task declares `needs_grad`, the label
columns, tensor/row alignment) around the task's own `run`, and returns a `TaskResult`: rows (dicts
of plain Python scalars and strings) plus tensors worth keeping. Tasks never print and draw
randomness only from `generator`.

Each task class declares as class variables its store `table`, a human `title`, the `columns` its
rows carry (name -> `Column(meaning, unit)`, labels included) and an `example` parameter set that
runs in well under a second on a tiny network (the contract test runs every registered example).
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import hashlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple, final

import torch

from survey.numerics import eval_mode
from survey.registry import Registry

#: task name -> task class; filled by `@register(name)` when a task module is imported.
TASKS: Registry = Registry("task")
#: task name -> {value of the primary class's `variant_key` -> class}; filled by `@register(name, variant=...)`.
VARIANTS: dict[str, dict[str, type]] = {}
#: Prefix of tensor names indexed by the rows' `image_index` (one tensor per image) instead of the row.
PER_IMAGE = "per_image/"


class Column(NamedTuple):
    """What a row column means (one line) and its unit ("" for names, flags, counts and ratios)."""

    meaning: str
    unit: str = ""


#: Columns every row carries, filled by `Task.__call__` from the context.
LABELS: dict[str, Column] = {
    "network": Column("name of the network under test"),
    "dataset": Column("name of the dataset the images come from"),
    "unit_id": Column("id of the work unit that made the row (seeds its generator); None outside a plan"),
    "task": Column("registered name of the task that made the row"),
    "physics": Column("kind of the network's forward operator (survey.physics registry name)"),
}


class Task(abc.ABC):
    """Base class of every instability test; subclasses are keyword-only dataclasses.

    Subclasses declare `table`, `title`, `columns`, `example` (and optionally `needs_grad`,
    `list_params`), validate their fields in `__post_init__` and implement `run`. Call a task as
    `task(ctx, generator) -> TaskResult`.
    """

    #: Store table the rows go to (several tasks may share one).
    table: ClassVar[str]
    #: Human title for reports ("Worst-case attack").
    title: ClassVar[str]
    #: Every column the rows can carry, labels included: name -> Column(meaning, unit).
    columns: ClassVar[dict[str, Column]]
    #: A small parameter set that runs in well under a second on a tiny network.
    example: ClassVar[dict[str, Any]]
    #: True when `run` needs autograd: it is then called under `torch.enable_grad()` (and turns
    #: gradients off where it does not need them); otherwise under `torch.no_grad()`.
    needs_grad: ClassVar[bool] = False
    #: Meaning (and unit) of parameters the docstring does not explain as "name: meaning" (survey tasks show).
    parameter_help: ClassVar[dict[str, Column]] = {}
    #: Parameters whose single value is a list (a flat list in a study is one value, not a grid).
    list_params: ClassVar[tuple[str, ...]] = ()
    #: Parameter whose value picks one of several classes registered under one name (`register(..., variant=)`).
    variant_key: ClassVar[str | None] = None
    #: The registered name (set by `register`).
    task_name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            raise TypeError(f"{cls.__qualname__} overrides Task.__call__; implement `run` instead")

    @classmethod
    def parameter_names(cls) -> list[str]:
        """The keyword hyper-parameters `make_task` accepts ("preset" too where the class has presets)."""
        if dataclasses.is_dataclass(cls):
            names = [f.name for f in dataclasses.fields(cls) if f.init]
        else:
            names = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
        return names + (["preset"] if hasattr(cls, "preset") else [])

    def applies_to(self, physics) -> str | None:
        """None when the task runs on this operator; otherwise the reason it does not (the contract checks
        skip such operators and say why, e.g. a sweep on an operator without a sampling axis)."""
        return None

    @classmethod
    def list_parameters(cls) -> set[str]:
        """Parameters whose single value is a list: the fields annotated tuple / list (alone or in a union)
        and, for an annotation that cannot say so (`Any`), `list_params`; a flat list in a study is then one
        value of them, not a grid."""
        declared = set(cls.list_params)
        if dataclasses.is_dataclass(cls):
            declared |= {f.name for f in dataclasses.fields(cls)
                         if any(part.split("[")[0].strip() in ("tuple", "list", "Sequence")
                                for part in str(f.type).split("|"))}
        return declared

    def params(self) -> dict[str, Any]:
        """The hyper-parameters as a dict (dataclass fields)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @final
    def __call__(self, ctx: "TaskContext", generator: torch.Generator) -> "TaskResult":
        """Run the task on `ctx` with randomness from `generator`: rows with the label columns first."""
        grad = torch.enable_grad() if self.needs_grad else torch.no_grad()
        with eval_mode(ctx.net), eval_mode(ctx.reference), grad:
            rows, tensors = self.run(ctx, generator)
        labels = {**ctx.labels(), "task": type(self).task_name, "physics": getattr(ctx.physics, "kind", "")}
        rows = [{**labels, **row} for row in rows]
        check_aligned(type(self).__name__, rows, tensors, len(ctx.image_ids))
        return TaskResult(rows, tensors)

    @abc.abstractmethod
    def run(self, ctx: "TaskContext", generator: torch.Generator) -> "TaskResult":
        """The test itself: rows without the label columns, and tensors aligned as `TaskResult` says."""


def check_aligned(task: str, rows: list[dict[str, Any]], tensors: dict[str, torch.Tensor], images: int) -> None:
    """Raise ValueError unless every tensor's first axis matches the rows (or the images, for names
    starting with PER_IMAGE, whose rows must then carry `image_index`)."""
    for name, value in tensors.items():
        per_image = name.startswith(PER_IMAGE)
        expected = images if per_image else len(rows)
        if value.ndim == 0 or value.shape[0] != expected:
            raise ValueError(f"{task}: tensor {name!r} has shape {tuple(value.shape)}, but its first axis must "
                             f"match the {expected} {'images' if per_image else 'rows'}")
        if per_image and rows and "image_index" not in rows[0]:
            raise ValueError(f"{task}: per-image tensor {name!r} needs an image_index column in the rows")


def rows_from_columns(columns: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Turn columns (name -> tensor or list of `count` values) into `count` rows of plain scalars:
    bools and ints stay so, other numbers become float."""
    values = {k: v.detach().cpu().tolist() if isinstance(v, torch.Tensor) else list(v) for k, v in columns.items()}
    for name, column in values.items():
        if len(column) != count:
            raise ValueError(f"column {name!r} has {len(column)} values for {count} rows")
    return [{k: _scalar(v[i]) for k, v in values.items()} for i in range(count)]


def _scalar(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, str)) else float(value)


def register(name: str, *, variant: str | None = None) -> Callable[[type], type]:
    """Class decorator adding a `Task` under `name` (sets `cls.task_name`); checks its declarations.

    With `variant`, the class runs the task `name` when the primary class's `variant_key` parameter
    has that value (e.g. `register("attack", variant="budget")` for `search = "budget"`): one task name,
    one table, separate classes with only the parameters each one uses.
    """

    def decorate(cls: type) -> type:
        taken = TASKS.peek(name)
        if variant is None and taken is not None and taken is not cls:
            raise ValueError(f"task name {name!r} is already registered by {taken.__qualname__} "
                             f"({TASKS.origin(name)})")
        taken = VARIANTS.get(name, {}).get(variant) if variant is not None else None
        if taken is not None and taken is not cls:
            raise ValueError(f"task {name!r} variant {variant!r} is already registered by {taken.__qualname__}")
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"task {name!r}: {cls!r} is not a survey.tasks.base.Task")
        for attr, kind in (("table", str), ("title", str), ("columns", dict), ("example", dict)):
            if not isinstance(getattr(cls, attr, None), kind):
                raise TypeError(f"task {name!r}: {cls.__qualname__}.{attr} must be declared as a {kind.__name__}")
        missing = sorted(set(LABELS) - set(cls.columns))
        bad = sorted(k for k, c in cls.columns.items() if not isinstance(c, Column) or not c.meaning)
        if missing or bad:
            raise TypeError(f"task {name!r}: columns lack the labels {missing} or a Column meaning for {bad}")
        cls.task_name = name
        if variant is None:
            TASKS.add(name, cls)
            if cls.variant_key:
                VARIANTS.setdefault(name, {})[getattr(cls, cls.variant_key)] = cls
        else:
            VARIANTS.setdefault(name, {})[variant] = cls
        return cls

    return decorate


def variants(name: str) -> dict[str, type["Task"]]:
    """value of the task's `variant_key` -> the class running it ({} for a task without variants)."""
    task_class(name)
    return dict(VARIANTS.get(name, {}))


def resolve(name: str, params: dict[str, Any]) -> type["Task"]:
    """The class that runs task `name` with `params`: the variant its `variant_key` picks, else the primary."""
    cls = task_class(name)
    key = cls.variant_key
    if not key or key not in params:
        return cls
    choices = VARIANTS.get(name, {})
    value = params[key]
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"task {name!r}: {key} {value!r} is not one of {sorted(choices)}")
    return choices[value]


def task_names() -> list[str]:
    return TASKS.names()


def task_class(name: str) -> type[Task]:
    """The class registered as `name`; ValueError naming the known tasks otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {task_names()}")
    return TASKS[name]


def make_task(name: str, **params: Any) -> Task:
    """Build the task `name` from keyword hyper-parameters (as written in a study file).

    A `preset` key is handed to the class's `preset(name, **overrides)` when it has one
    (e.g. the attack's parameter sets from the paper's Table 1). An unknown parameter raises a
    one-line ValueError: "task 'attack': unknown parameter 'etaa' (did you mean 'eta'?); accepted: ...".
    """
    cls = resolve(name, params)
    params = dict(params)
    known = cls.parameter_names()
    unknown = [k for k in params if k not in known]
    if unknown:
        quoted = ", ".join(repr(k) for k in unknown)
        close = difflib.get_close_matches(unknown[0], known, n=1) if len(unknown) == 1 else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        key = task_class(name).variant_key
        which = f" with {key}={params[key]!r}" if cls is not task_class(name) else ""
        raise ValueError(f"task {name!r}: unknown parameter{'s' if len(unknown) > 1 else ''} {quoted}{hint}; "
                         f"accepted{which}: {', '.join(sorted(known))}")
    preset = params.pop("preset", None)
    if preset is not None:
        return cls.preset(preset, **params)
    return cls(**params)


@dataclass
class TaskContext:
    """Everything a task needs at call time; built by the engine (or a test, or a notebook).

    net: called as `net(y, physics) -> (B, 1, n, n)` real image.
    physics: the `LinearPhysics` the network was trained for.
    reference: the stable reference solver, `reference(y, physics) -> image`, or None.
    images: (B, 1, n, n) ground truths in [0, 1]; image_ids: their B stable ids.
    network / dataset: names recorded in every row; unit_id: the work unit's id (seeds the generator).
    companions: the network's uncertainty companions, method -> model (survey.nets.uncertainty), for
    tasks that use them (detect); empty when the network has none.
    """

    net: Callable[..., torch.Tensor]
    physics: Any
    images: torch.Tensor
    image_ids: list[str]
    reference: Callable[..., torch.Tensor] | None = None
    network: str = "network"
    dataset: str = "dataset"
    unit_id: str | None = None
    companions: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[1] != 1:
            raise ValueError(f"TaskContext.images must be (B, 1, n, n), got {tuple(self.images.shape)}")
        if len(self.image_ids) != self.images.shape[0]:
            raise ValueError(f"TaskContext: {len(self.image_ids)} image_ids for {self.images.shape[0]} images")

    def labels(self) -> dict[str, Any]:
        """Label columns every row of this context carries (unit_id None outside a plan)."""
        return {"network": self.network, "dataset": self.dataset, "unit_id": self.unit_id}


class TaskResult(NamedTuple):
    """rows: one dict of plain scalars/strings per measurement; tensors: name -> tensor whose
    first axis is aligned with `rows` (tensors[name][k] belongs to rows[k], stored as the row's
    `tensor_index`), except names starting with PER_IMAGE ("per_image/"), indexed by the rows'
    `image_index` (one tensor per image, e.g. the ball's centre r shared by thousands of draws)."""

    rows: list[dict[str, Any]]
    tensors: dict[str, torch.Tensor]


def seed_from_id(unit_id: str) -> int:
    """A 63-bit seed from the sha256 of a unit id (stable across processes and machines)."""
    digest = hashlib.sha256(unit_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def generator_for(unit_id: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device` seeded from `unit_id`, so any unit can be replayed alone."""
    if not isinstance(unit_id, str) or not unit_id:
        raise ValueError(f"generator_for: unit_id must be a non-empty string, got {unit_id!r}")
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(seed_from_id(unit_id))
    return gen


__all__ = ["LABELS", "PER_IMAGE", "TASKS", "Column", "Task", "TaskContext", "TaskResult", "check_aligned",
           "eval_mode", "generator_for", "make_task", "register", "resolve", "rows_from_columns", "seed_from_id",
           "task_class", "task_names", "variants", "VARIANTS"]

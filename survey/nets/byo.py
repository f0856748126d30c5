"""Bring your own network: a factory named in a study file, optional weights, checked on a probe input.

`factory = "package.module:callable"` or `"path/to/file.py:callable"` (relative to the study file).
A file factory travels as source text (`FactorySource`), so remote Ray workers that lack the file can
still build the network. TorchScript (`.pt`/`.ts` via torch.jit.load, scripted or traced) and
torch.export (`.pt2`) archives are accepted as `factory = "archive:path/to/model.pt2"`; an exported
archive must have a dynamic batch dimension (`EXPORT_HINT`), which the probe checks with two batch sizes.
Weights may be a training checkpoint (`{"state_dict": ...}`, keys prefixed `module.` by DataParallel):
it is unwrapped, and `weights_notes` says what was done (printed by `survey run`, kept in `runs`).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class NetworkLoadError(ValueError):
    """A bring-your-own network that cannot be used; the message says which and why."""


#: Batch sizes of the probe: a network (or an archive exported at one batch size) that works at the
#: first but not the second fails before any work, not in the middle of a run.
PROBE_BATCHES = (2, 1)

#: How to export an archive that accepts any batch size (one line, for error messages).
EXPORT_HINT = ("export with a dynamic batch dimension: batch = torch.export.Dim('batch', min=1, max=1024); "
               "torch.export.save(torch.export.export(model, (y,), dynamic_shapes={'y': {0: batch}}), 'model.pt2') "
               "(the key is the name of forward's argument), or trace with torch.jit.trace(model, (y,)) instead")


@dataclass(frozen=True)
class FactorySource:
    """A resolved factory: a module path, a file's source text, or an exported archive's bytes."""

    name: str                   # network name in the study
    kind: str                   # "module", "file" or "archive"
    target: str                 # module name, file name, or archive file name
    attribute: str | None       # callable name (module/file)
    source: bytes | None = None  # file source or archive bytes
    weights: bytes | None = None
    weights_name: str | None = None
    kwargs: tuple = ()


def resolve_factory(name: str, factory: str, base_dir: Path, weights: str | None = None,
                    kwargs: dict | None = None) -> FactorySource:
    """Read everything a worker needs to rebuild network `name` (on the driver, before any work)."""
    weights_bytes = None
    if weights is not None:
        wpath = (base_dir / weights).resolve()
        if not wpath.is_file():
            raise NetworkLoadError(f"network {name!r}: weights file {wpath} not found")
        weights_bytes = wpath.read_bytes()
    kw = tuple(sorted((kwargs or {}).items()))
    if factory.startswith("archive:"):
        apath = (base_dir / factory.removeprefix("archive:")).resolve()
        if not apath.is_file():
            raise NetworkLoadError(f"network {name!r}: archive {apath} not found")
        return FactorySource(name, "archive", apath.name, None, apath.read_bytes(), weights_bytes,
                             weights and Path(weights).name, kw)
    if ":" not in factory:
        raise NetworkLoadError(f"network {name!r}: factory {factory!r} must look like 'module:callable' "
                               "or 'file.py:callable'")
    target, attribute = factory.rsplit(":", 1)
    if target.endswith(".py"):
        fpath = (base_dir / target).resolve()
        if not fpath.is_file():
            raise NetworkLoadError(f"network {name!r}: factory file {fpath} not found")
        return FactorySource(name, "file", fpath.name, attribute, fpath.read_bytes(), weights_bytes,
                             weights and Path(weights).name, kw)
    if importlib.util.find_spec(target.split(".")[0]) is None:
        raise NetworkLoadError(f"network {name!r}: module {target!r} not found (is it installed?)")
    return FactorySource(name, "module", target, attribute, None, weights_bytes, weights and Path(weights).name, kw)


def _load_module_from_source(src: FactorySource):
    """Import a file factory from its source text, in memory: no temporary file is written (none is left
    behind, even after Ctrl-C or on a killed worker). The source is registered with `linecache` under a
    name that says where it came from, so tracebacks, `inspect.getsource` and `torch.jit.script` see it."""
    import linecache
    import types

    mod_name = f"survey_byo_{src.name}_{abs(hash(src.source)) % 10**8}"
    filename = f"<survey factory {src.target} of network {src.name}>"
    text = src.source.decode("utf-8", errors="replace")
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    module = types.ModuleType(mod_name)
    module.__file__ = filename
    sys.modules[mod_name] = module
    try:
        exec(compile(text, filename, "exec"), module.__dict__)  # noqa: S102 - the user's own factory, as import would
    except Exception as err:  # noqa: BLE001 - user code: report what it raised
        raise NetworkLoadError(f"network {src.name!r}: importing {src.target} failed: {err!r}") from err
    return module


def _read_weights(src: FactorySource) -> dict:
    """The weights file's tensors as loaded (safetensors, or a torch pickle with weights_only=True)."""
    from safetensors.torch import load

    import io
    import pickle
    import re
    try:
        if src.weights_name.endswith(".safetensors"):
            state = load(src.weights)
        else:  # weights_only: a pickle's code is never run, only tensors and plain containers load
            state = torch.load(io.BytesIO(src.weights), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported (global: GLOBAL \S+|operand \d+)", str(err))
        raise NetworkLoadError(f"network {src.name!r}: weights {src.weights_name} hold pickled objects other than "
                               f"tensors (refused, not executed{': ' + found.group(0) if found else ''}); "
                               "save a state dict of tensors or safetensors") from err
    except Exception as err:  # noqa: BLE001
        raise NetworkLoadError(f"network {src.name!r}: cannot read weights {src.weights_name}: {err}") from err
    if not isinstance(state, dict):
        raise NetworkLoadError(f"network {src.name!r}: weights {src.weights_name} are not a state dict")
    return state


#: Keys under which training checkpoints keep the model's state dict.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")


def unwrap_state_dict(state: dict, name: str = "weights") -> tuple[dict, list[str]]:
    """(state dict, notes): a checkpoint's `state_dict` (or `model_state_dict`, `model`) entry taken, and
    the `module.` prefix of DataParallel / DistributedDataParallel keys removed; a note for each."""
    notes = []
    if not any(isinstance(v, torch.Tensor) for v in state.values()):
        key = next((k for k in CHECKPOINT_KEYS if isinstance(state.get(k), dict)), None)
        if key is not None:
            others = sorted(str(k) for k in state if k != key)
            notes.append(f"{name} is a checkpoint: loaded its {key!r} entry"
                         + (f" (ignored: {', '.join(others[:6])}{', ...' if len(others) > 6 else ''})"
                            if others else ""))
            state = state[key]
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
        notes.append(f"{name}: removed the 'module.' prefix of every key (saved from DataParallel)")
    return state, notes


def weights_notes(src: FactorySource) -> list[str]:
    """What loading `src`'s weights had to do (checkpoint entry taken, prefix removed); [] for a plain
    state dict or no weights. One line each, naming the network."""
    if src.weights is None or src.kind == "archive":
        return []
    _, notes = unwrap_state_dict(_read_weights(src), src.weights_name)
    return [f"network {src.name!r}: {note}" for note in notes]


def _load_weights(src: FactorySource, net: nn.Module) -> None:
    state, _ = unwrap_state_dict(_read_weights(src), src.weights_name)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0:4]
        raise NetworkLoadError(f"network {src.name!r}: weights {src.weights_name} do not match the "
                               f"network: {' '.join(first)}") from err


class _ArchiveNet(nn.Module):
    """Adapter for archives, which take the measurements only: net(y, physics) -> module(y).

    `train()` / `eval()` stop here: an exported program (torch.export) has no modes and raises on
    `train()`, and an archive is always used as saved (dropout off, batch norm frozen). A TorchScript
    module is put in eval mode once, when loaded.
    """

    def __init__(self, module, exported: bool):
        super().__init__()
        self.module = module
        self.exported = exported

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def forward(self, y, physics=None):
        return self.module(y)


def build_network(src: FactorySource) -> nn.Module:
    """Build (and load weights into) the network a `FactorySource` describes, in eval mode."""
    if src.kind == "archive":
        import io
        buf = io.BytesIO(src.source)
        try:
            exported = src.target.endswith(".pt2")
            if exported:
                module = torch.export.load(buf).module()
            else:
                module = torch.jit.load(buf, map_location="cpu").eval()
        except Exception as err:  # noqa: BLE001
            raise NetworkLoadError(f"network {src.name!r}: cannot load archive {src.target}: {err}") from err
        return _ArchiveNet(module, exported).eval()
    if src.kind == "file":
        module = _load_module_from_source(src)
    else:
        try:
            module = importlib.import_module(src.target)
        except ImportError as err:
            raise NetworkLoadError(f"network {src.name!r}: cannot import module {src.target!r}: {err}") from err
    factory = getattr(module, src.attribute, None)
    if factory is None or not callable(factory):
        raise NetworkLoadError(f"network {src.name!r}: {src.target} has no callable {src.attribute!r}")
    try:
        net = factory(**dict(src.kwargs))
    except TypeError as err:
        hint = ""
        if "required" in str(err) and "argument" in str(err):
            given = f" (given: {', '.join(k for k, _ in src.kwargs)})" if src.kwargs else ""
            hint = (f"; pass the factory's arguments with `kwargs = {{ ... }}` in network {src.name!r}'s "
                    f"[[networks]] entry{given}")
        raise NetworkLoadError(f"network {src.name!r}: calling {src.attribute}() failed: {err}{hint}") from err
    if not isinstance(net, nn.Module):
        raise NetworkLoadError(f"network {src.name!r}: {src.attribute}() returned {type(net).__name__}, "
                               "not a torch.nn.Module")
    if src.weights is not None:
        _load_weights(src, net)
    return net.eval()


def _one_line(text: object) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


#: An exported program's shape guard: "Guard failed: y.size()[2] == 32" (axis, the size it was exported at).
_GUARD = re.compile(r"(?:size\(\)|shape)\[(\d+)\]\s*==\s*(\d+)")


def _size_advice(name: str, physics, y: torch.Tensor) -> str:
    n = physics.size
    return (f"the study gives it measurements of shape {tuple(y.shape)} (physics {getattr(physics, 'kind', '?')!r} at "
            f"size = {n}); an archive exported or traced at another image size fails like this: set `size` in "
            f"network {name!r}'s physics to the size it was made for, or export it again at size {n}")


def _call_failed(name: str, net: nn.Module, physics, err: Exception, batch: int, works: list[int],
                 y: torch.Tensor) -> NetworkLoadError | None:
    """The probe's message for a call that raised at `batch` (`works`: batch sizes that worked), advice
    matching the cause: the batch size, the image size, or (None) neither, when the error says it all."""
    archive = isinstance(net, _ArchiveNet)
    detail = f"{type(err).__name__}: {_one_line(err)[:300]}"
    guard = _GUARD.search(str(err))
    if archive and guard is not None and int(guard.group(1)) > 0:
        axis, made = int(guard.group(1)), int(guard.group(2))
        got = y.shape[axis] if axis < y.ndim else "?"
        return NetworkLoadError(f"network {name!r}: the archive was exported for measurements with {made} along "
                                f"axis {axis}, got {got} ({detail}); {_size_advice(name, physics, y)}")
    batch_cause = (guard is not None and int(guard.group(1)) == 0) or bool(works)
    if batch_cause:
        hint = EXPORT_HINT if archive else "the network must accept any batch size"
        ok = f"works on a batch of {works[0]} measurements but " if works else ""
        return NetworkLoadError(f"network {name!r}: {ok}fails on a batch of {batch} ({detail}); {hint}")
    if archive:
        return NetworkLoadError(f"network {name!r}: fails on the probe at every batch size ({detail}); "
                                + _size_advice(name, physics, y))
    return None


def _check_output(name: str, out, batch: int, n: int) -> None:
    """Refuse an output that is not a real float image batch of shape (batch, 1, n, n), saying expected vs got."""
    if not isinstance(out, torch.Tensor):
        raise NetworkLoadError(f"network {name!r}: returned {type(out).__name__}, not a tensor")
    if torch.is_complex(out):
        raise NetworkLoadError(f"network {name!r}: returned a complex tensor ({out.dtype}); outputs must be real "
                               "images: return the real part or the magnitude (e.g. physics.H(y).real or .abs())")
    if out.dtype not in (torch.float32, torch.float64):
        raise NetworkLoadError(f"network {name!r}: returned a {out.dtype} tensor; expected a real float32 or "
                               "float64 image (cast it with .float())")
    expected = (batch, 1, n, n)
    if tuple(out.shape) != expected:
        got = tuple(out.shape)
        why = ""
        if out.ndim == 4 and got[-2:] != (n, n):
            why = (f": its images are {got[-2]} x {got[-1]} but the study's physics has size = {n} "
                   "(set `size` to the network's image size)")
        elif out.ndim != 4:
            why = f": {out.ndim} axes instead of 4 (batch, channel, height, width)"
        elif got[0] != batch:
            why = f": {got[0]} images for {batch} measurements"
        elif got[1] != 1:
            why = f": {got[1]} channels instead of 1"
        raise NetworkLoadError(f"network {name!r}: output shape {got} for a batch of {batch} measurements; "
                               f"expected {expected}{why}")
    if not torch.isfinite(out).all():
        bad = int((~torch.isfinite(out)).sum())
        raise NetworkLoadError(f"network {name!r}: output contains NaN or Inf ({bad} of {out.numel()} values) "
                               "on a probe input")


@torch.no_grad()
def check_network(name: str, net: nn.Module, physics, device="cpu") -> None:
    """Call the network on probes (A of a smooth image) at each of `PROBE_BATCHES`; fail clearly on a
    wrong signature, a batch size or image size it cannot take (advice matching the cause), a complex or
    non-float output, a wrong shape (expected vs got) or NaN."""
    n = physics.size
    grid = torch.linspace(-1, 1, n, device=device)
    image = (1 - (grid[:, None] ** 2 + grid[None, :] ** 2)).clamp(min=0)[None, None]
    works: list[int] = []
    for batch in PROBE_BATCHES:
        y = physics.A(image.repeat(batch, 1, 1, 1))
        try:
            out = net(y, physics)
        except TypeError as err:
            raise NetworkLoadError(f"network {name!r}: must be callable as net(y, physics) -> image; "
                                   f"calling it raised: {_one_line(err)}") from err
        except Exception as err:
            if not works:  # failing at the first batch: does any other batch size work?
                for other in PROBE_BATCHES[1:]:
                    try:
                        net(physics.A(image.repeat(other, 1, 1, 1)), physics)
                        works.append(other)
                        break
                    except Exception:  # noqa: BLE001 - only asked which batch sizes work
                        pass
            problem = _call_failed(name, net, physics, err, batch, works, y)
            if problem is None:
                raise
            raise problem from err
        _check_output(name, out, batch, n)
        works.append(batch)


@torch.no_grad()
def determinism_note(name: str, net: nn.Module, physics, device="cpu") -> str | None:
    """A note when two calls of `net` on the same probe differ (fresh randomness inside the network, dropout
    left on in an archive): its rows cannot be replayed exactly from their unit ids. None when they agree."""
    n = physics.size
    grid = torch.linspace(-1, 1, n, device=device)
    y = physics.A((1 - (grid[:, None] ** 2 + grid[None, :] ** 2)).clamp(min=0)[None, None])
    try:
        first, second = net(y, physics), net(y, physics)
        if not (isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor)) or first.shape != second.shape:
            return None
        change = float((first - second).abs().max()) / max(float(first.abs().max()), 1e-12)
    except Exception:  # noqa: BLE001 - the probe proper reports a network that fails
        return None
    if change <= 1e-6:
        return None
    return (f"network {name!r}: two calls on the same input differ (by {change:.2g} of its output's scale): it is "
            "not deterministic, so its rows cannot be replayed exactly from their unit ids (random layers left on?)")

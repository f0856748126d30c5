"""Memory probe and memory-bounded batch sizes: how many images of a task fit an actor's budget.

`probe_memory(net, physics)` measures the peak memory of one forward (+ backward to the input, for the
gradient tasks) at batch 1 and batch 2 at the network's own image size, after one unread call, giving a
fixed part and a per-image part in bytes. On CUDA it reads `torch.cuda.max_memory_allocated`; on the CPU the process's
peak resident set (Linux VmHWM, reset through /proc/self/clear_refs), falling back to the growth of
`resource.getrusage` ru_maxrss (which can only rise, so it may read low after a bigger earlier peak).
Resetting VmHWM also resets the process's ru_maxrss: after a probe, neither is a whole-process peak.

`batch_size(...)` turns a budget into a batch: floor((budget - fixed) / (per_image * working_set(task) *
HEADROOM)), capped by a task's own fixed `batch`; a budget that cannot hold one image raises `MemoryBudgetError`
naming network, task and the memory needed. `default_budget_bytes(device, actors)`: the actor's share of
the free memory (MemAvailable on the CPU, free GPU memory on CUDA) times `DEFAULT_FRACTION`.
"""

from __future__ import annotations

import gc
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch

GB = 1024 ** 3
#: Each probed image counts this much more, for allocator fragmentation and kernel work buffers.
HEADROOM = 1.25
#: Share of the free memory an actor may plan on when no `[engine] memory_gb` is given.
DEFAULT_FRACTION = 0.8
#: Tasks whose inner loop is forward only (no gradient); every other task is probed forward + backward.
#: The ball's draws are forward only, but its centre is a worst case found by a search first: one image
#: forward + backward must fit as well (`search_first`).
FORWARD_ONLY_TASKS = frozenset({"ball", "rare", "severity", "sweep", "insertion"})
SEARCH_FIRST_TASKS = frozenset({"ball"})
#: A task's working memory per image as a multiple of the probed call (before HEADROOM), where measured larger:
#: at 320 x 320 (benchmarks/README.md, "Scale") the attack and the budget search held 1.33-1.42x the network's
#: probed forward + backward and detect 1.90x, above the 1.25 headroom. Set after seeing those measurements:
#: 1.2 and 1.6 bring them to 1.5x and 2.0x. Any gradient search counts as an attack (the ball's centre search).
#: The other tasks keep the probed call (their 320 px readings were not compared with it), except spectrum (below).
WORKING_SET = {"attack": 1.2, "detect": 1.6}
#: Tasks whose working memory per image grows with one of their parameters: (parameter, factor per unit of it).
#: The spectrum's block Lanczos linearises each image `block` times, each a forward with its double-backward
#: graph: 1.60-1.82x the probed forward + backward per block for dagan at 64 x 64, 1.85-2.55x for the narrow
#: 8-coil VarNet at 320 x 320 (blocks 1, 2, 4 on 1 and 2 images, /proc VmHWM; benchmarks/README.md "Scale").
#: Set after seeing them: 2.1 per block, 2.6x with HEADROOM. (Before, spectrum was planned at 1x: at block 4 a
#: tenth of what the VarNet held.)
WORKING_SET_PER = {"spectrum": ("block", 2.1)}


class MemoryBudgetError(ValueError):
    """A task's unit cannot fit one image in the memory budget; the message names network, task, need."""


@dataclass(frozen=True)
class MemoryProbe:
    """Probed memory of a network at its image size, bytes: peak(b) ~ fixed + b * per_image."""

    network: str
    size: int
    backward: bool
    fixed: int
    per_image: int
    seconds_per_image: float     # wall time of the batch-1 call (forward, or forward + backward)
    method: str                  # "cuda", "vmhwm" or "ru_maxrss"

    def peak(self, batch: int) -> int:
        return self.fixed + batch * self.per_image


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc malloc_trim), so that the next peak counts new pages."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
        return True
    except OSError:
        return False


class PeakMeter:
    """Peak memory above the level at `start()`, in bytes, for the device in use."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.method = "cuda" if self.cuda else ("vmhwm" if _status_kb("VmHWM") is not None and _reset_peak_rss()
                                                else "ru_maxrss")

    def start(self) -> None:
        # the young generations only: they hold the garbage of the calls just made (a few ms); a full
        # collection takes 0.2 s in a driver holding Ray and pandas, and probing runs it twice per network
        gc.collect(1)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        elif self.method == "vmhwm":
            _trim_heap()
            _reset_peak_rss()
            self.base = _status_kb("VmRSS") * 1024
        else:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return max(torch.cuda.max_memory_allocated() - self.base, 0)
        if self.method == "vmhwm":
            return max(_status_kb("VmHWM") * 1024 - self.base, 0)
        return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base, 0)


def _one_call(net, physics, x: torch.Tensor, backward: bool) -> None:
    y = physics.A(x)
    if backward:
        y = y.detach().requires_grad_(True)
        out = net(y, physics)
        (grad,) = torch.autograd.grad(out.real.square().sum(), y)
        del grad, out
    else:
        with torch.no_grad():
            out = net(y, physics)
        del out


def probe_memory(net, physics, *, network: str = "network", backward: bool = True,
                 device: str | torch.device | None = None) -> MemoryProbe:
    """Peak memory of `net` on `physics`'s image size at batch 1 and 2 (parameters frozen, gradient to y).

    The per-image part is the growth from batch 1 to 2; where the meter cannot see that growth (allocator
    reuse) the whole batch-1 peak is taken as per-image, which can only overestimate; never less than the
    bytes of the image, its data, the output and one gradient.
    """
    if device is None:
        first = next(iter(net.parameters()), None)
        device = first.device if first is not None else "cpu"
    device = torch.device(device)
    n = physics.size
    requires = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    meter = PeakMeter(device)
    peaks, seconds, floor = [], 0.0, 0
    try:
        # a first call, not read: one-time allocations (autograd's engine, FFT plans) would otherwise count in
        # the batch-1 peak, making the per-image part read low and the fixed part high
        _one_call(net, physics, torch.rand(1, 1, n, n, generator=torch.Generator().manual_seed(0)).to(device),
                  backward)
        for batch in (1, 2):
            x = torch.rand(batch, 1, n, n, generator=torch.Generator().manual_seed(batch)).to(device)
            meter.start()
            t0 = time.perf_counter()
            _one_call(net, physics, x, backward)
            if batch == 1:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
            peaks.append(meter.peak())
            if batch == 1:  # at least the image, its data, the output and a gradient: what any call holds
                y = physics.A(x)
                floor = 2 * (x.numel() * x.element_size() + y.numel() * y.element_size())
                del y
            del x
    finally:
        for p, r in zip(net.parameters(), requires):
            p.requires_grad_(r)
    one, two = peaks
    per_image = two - one
    if per_image < one / 4:   # the meter missed the growth: charge the whole peak per image
        per_image, fixed = one, 0
    else:
        fixed = max(one - per_image, 0)
    return MemoryProbe(network, n, backward, int(fixed), int(max(per_image, floor)), seconds, meter.method)


def needs_backward(task: str) -> bool:
    """Whether the task's batched inner loop (the one `batch_size` sizes) takes gradients."""
    return task not in FORWARD_ONLY_TASKS


def search_first(task: str) -> bool:
    """Whether the task runs a gradient search on its images before a forward-only batched loop."""
    return task in SEARCH_FIRST_TASKS


def working_set(task: str, search: bool = False, params: dict | None = None) -> float:
    """`task`'s working memory per image over its probed call (WORKING_SET; a gradient search, `search`, as an
    attack's; for a task in WORKING_SET_PER, its factor times the parameter's value in `params`, the task's
    parameters with their defaults)."""
    if not search and task in WORKING_SET_PER:
        name, factor = WORKING_SET_PER[task]
        value = (params or {}).get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
            raise ValueError(f"working_set: task {task!r} is planned per {name!r}; its parameters give {value!r}")
        return factor * value
    return WORKING_SET.get("attack" if search else task, 1.0)


def per_image_need(probe: MemoryProbe, task: str, search: bool = False, params: dict | None = None) -> float:
    """Bytes one image of `task` is planned at: the probed per-image part x `working_set` x HEADROOM."""
    return probe.per_image * working_set(task, search, params) * HEADROOM


def batch_size(probe: MemoryProbe, budget_bytes: float, *, task: str, cap: int | None = None,
               search: bool = False, params: dict | None = None) -> int:
    """Largest batch whose planned peak (fixed + batch x `per_image_need`) fits `budget_bytes`, at most `cap`."""
    room = budget_bytes - probe.fixed
    fits = int(room // per_image_need(probe, task, search, params)) if room > 0 else 0
    if fits < 1:
        need = (probe.fixed + per_image_need(probe, task, search, params)) / GB
        raise MemoryBudgetError(
            f"network {probe.network!r}, task {task!r}: one {probe.size} x {probe.size} image needs "
            f"{need:.2f} GB ({'forward + backward' if probe.backward else 'forward'}, probed), the memory budget "
            f"is {budget_bytes / GB:.2f} GB; raise [engine] memory_gb or use a smaller image size")
    return min(fits, cap) if cap is not None else fits


def available_bytes(device: str | torch.device = "cpu") -> int:
    """Free memory of the device: MemAvailable (CPU, Linux; else the total) or free GPU memory (CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_budget_bytes(device: str | torch.device = "cpu", actors: int = 1) -> int:
    """An actor's planning budget when `[engine] memory_gb` is not given: its share of the free memory."""
    return int(available_bytes(device) * DEFAULT_FRACTION / max(actors, 1))


def budget_bytes(memory_gb: float | None, device: str | torch.device = "cpu", actors: int = 1) -> int:
    """`[engine] memory_gb` in bytes, else `default_budget_bytes`."""
    return int(memory_gb * GB) if memory_gb is not None else default_budget_bytes(device, actors)


__all__ = ["DEFAULT_FRACTION", "GB", "HEADROOM", "MemoryBudgetError", "MemoryProbe", "PeakMeter", "available_bytes",
           "WORKING_SET", "WORKING_SET_PER", "batch_size", "budget_bytes", "default_budget_bytes", "needs_backward",
           "per_image_need", "probe_memory", "search_first", "working_set"]

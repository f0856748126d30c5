"""CPU threads for the particles' small tensor operations: one thread for the bookkeeping, the caller's for the network.

A pCN step does a dozen elementwise operations on the (M, d) latents and the (M, *measurement_shape) perturbed
measurements around each network call. Each is microseconds of work but, on several threads, a parallel region
whose barrier waits for every thread to be scheduled: on a shared, loaded machine that wait (milliseconds per
region) can cost more than the work. `bookkeeping()` runs a block on one thread and remembers the caller's count;
`network()` inside it gives the caller's threads back for the score's network call. Elementwise results do not
depend on the thread count. The setting is process-wide (torch.set_num_threads): code that runs torch from
several Python threads at once should not use these. Neither does anything on a caller already at one thread.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

_CALLER: list[int] = []   # the thread counts of the enclosing bookkeeping() blocks, innermost last


@contextmanager
def bookkeeping() -> Iterator[None]:
    """Run the block on one CPU thread; restore the caller's count after it."""
    threads = torch.get_num_threads()
    _CALLER.append(threads)
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        _CALLER.pop()
        if threads > 1:
            torch.set_num_threads(threads)


@contextmanager
def network() -> Iterator[None]:
    """Inside bookkeeping(): run the block on the caller's threads again. Outside it: nothing changes."""
    threads = _CALLER[-1] if _CALLER else None
    current = torch.get_num_threads()
    if threads is None or threads == current:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(current)


__all__ = ["bookkeeping", "network"]

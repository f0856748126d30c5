"""Ctrl-C and SIGTERM stop a survey at a safe point: the dispatcher's wait for the next finished call.

Python raises KeyboardInterrupt wherever the main thread happens to be; inside a Parquet write, Ray's client
or the progress display's lock, the exception can leave state half-changed and the driver hangs at
shutdown instead of exiting. Here the first signal is only noted and the dispatcher raises it where nothing
is half-done (its finished units are flushed on the way out); a second signal interrupts at once.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Context: notes SIGINT / SIGTERM while it is open (main thread only); `check()` raises the noted one.

    A signal whose handler was SIG_IGN when the context opened (e.g. SIGINT in a background job) stays
    ignored."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _note(self, signum: int, frame) -> None:
        if self.signum is not None:   # asked twice: at once, wherever the main thread is
            raise KeyboardInterrupt(f"signal {signum}")
        self.signum = signum

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal was noted."""
        if self.signum is not None:
            raise KeyboardInterrupt(f"signal {self.signum}")

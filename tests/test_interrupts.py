"""Ctrl-C / SIGTERM during a survey are noted and raised between calls (survey.engine.interrupts): never
inside a write, Ray's client or a lock, where a raised exception can leave the driver hanging at shutdown."""

import os
import signal

import pytest

from survey.engine.interrupts import Interrupts


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_is_noted_then_raised_at_the_check(signum):
    before = signal.getsignal(signum)
    with Interrupts() as interrupts:
        interrupts.check()                 # nothing noted: no exception
        os.kill(os.getpid(), signum)       # delivered to this (main) thread at once
        written = sum(range(1000))         # the work in progress is not cut short
        with pytest.raises(KeyboardInterrupt, match=f"signal {int(signum)}"):
            interrupts.check()
    assert written == 499500
    assert signal.getsignal(signum) is before   # the handler before the run is back


def test_a_second_signal_interrupts_at_once():
    with Interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)


def test_an_ignored_signal_stays_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with Interrupts() as interrupts:
            os.kill(os.getpid(), signal.SIGINT)
            interrupts.check()   # a background job's SIGINT: ignored, as before the survey
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)

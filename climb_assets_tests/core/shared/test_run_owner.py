import os
import signal

import pytest

from climb_assets.core.shared.run_owner import interrupt_witness


def test_the_witness_sees_a_signal_that_a_handler_swallowed() -> None:
    """Dagster's handler during a run can drop an interrupt; the witness still sees it."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)  # swallows it
    try:
        with interrupt_witness() as arrived:
            assert not arrived()
            os.kill(os.getpid(), signal.SIGTERM)
            assert arrived()
            assert not arrived()  # each signal is reported once
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert signal.set_wakeup_fd(-1) == -1  # the interpreter's wakeup fd is restored


def test_an_interrupt_dropped_in_a_gc_callback_is_not_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc
    import sys
    import weakref

    printed: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: printed.append(u.exc_value))

    class Thing:
        pass

    def interrupt(ref: object) -> None:
        raise KeyboardInterrupt  # as Dagster's handler does when the signal lands here

    def fail(ref: object) -> None:
        raise ValueError("a real error in a callback")

    with interrupt_witness():
        thing, other = Thing(), Thing()
        refs = [weakref.ref(thing, interrupt), weakref.ref(other, fail)]
        del thing, other
        gc.collect()
    assert [type(e) for e in printed] == [ValueError] and len(refs) == 2

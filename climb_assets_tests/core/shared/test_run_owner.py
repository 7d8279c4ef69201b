import os
import signal

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

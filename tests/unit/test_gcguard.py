"""gcguard: no garbage collection while any worker is inside a load burst, collection back
on when the last one leaves, and what the burst left alive frozen (out of later full
collections, which would otherwise hold the GIL and stall the GUI)."""

import gc
import threading

import pytest

from pollenstudio.core import gcguard


@pytest.fixture(autouse=True)
def _gc_state():
    was = gc.isenabled()
    gc.enable()
    yield
    gc.unfreeze()
    if was:
        gc.enable()
    else:
        gc.disable()


def test_nested_holds_from_two_threads_keep_collection_off_until_the_last_release():
    entered, leave = threading.Event(), threading.Event()
    seen = []

    def other():
        with gcguard.held():
            entered.set()
            leave.wait(10)
            seen.append(gc.isenabled())

    t = threading.Thread(target=other)
    with gcguard.held():
        assert not gc.isenabled()
        t.start()
        assert entered.wait(10)
    assert not gc.isenabled()  # the other thread is still loading
    leave.set()
    t.join(10)
    assert seen == [False]
    assert gc.isenabled()


def test_release_freezes_what_the_burst_left_alive():
    gc.unfreeze()
    with gcguard.held():
        kept = [[i] for i in range(1000)]  # container objects: tracked by the collector
    assert gc.get_freeze_count() >= len(kept)


def test_collection_that_was_off_stays_off():
    gc.disable()
    with gcguard.held():
        pass
    assert not gc.isenabled()


def test_a_burst_can_end_early_and_only_once():
    with gcguard.Burst() as b:
        assert not gc.isenabled()
        b.end()
        assert gc.isenabled()
        b.end()
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        gcguard.release()

"""A worker job that ran a while hands the memory it freed back to the system when it ends
(issue 28 item 15: detection, edge maps and Grad-CAM left hundreds of MB of freed tensors
resident in their threads' malloc arenas)."""

import time


def test_a_long_job_asks_to_release_freed_memory_after_its_work_a_quick_one_does_not(qtbot, monkeypatch):
    from pollenstudio.gui import workers

    events = []
    monkeypatch.setattr(workers, "release_freed_heap_soon", lambda: events.append("release"))
    monkeypatch.setattr(workers, "RELEASE_AFTER_S", 0.05)

    def work(token, secs):
        time.sleep(secs)
        events.append("work")
        return secs

    runner = workers.JobRunner()
    done = []
    with qtbot.waitSignal(runner.submit("long", work, 0.1, on_done=done.append).signals.finished, timeout=5000):
        pass
    qtbot.waitUntil(lambda: bool(done) and events[-1:] == ["release"], timeout=5000)
    assert events == ["work", "release"] and done == [0.1]
    events.clear()
    job = runner.submit("quick", work, 0.0)
    qtbot.waitUntil(lambda: job.done, timeout=5000)
    assert events == ["work"]  # a thumbnail-sized job skips the trim

import io

from pollenstudio.commands._console import ConsoleProgress


def test_progress_in_a_log_prints_about_every_tenth_and_the_end():
    log = io.StringIO()  # not a terminal
    progress = ConsoleProgress("detect", stream=log)
    for i in range(1, 501):
        progress.update(i, 500, "image")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert 10 <= len(lines) <= 12
    assert lines[-1].startswith("detect 500/500 (100%)")


def test_quiet_progress_prints_nothing_but_still_tracks():
    log = io.StringIO()
    progress = ConsoleProgress("train", quiet=True, stream=log)
    progress.update(3, 10)
    assert log.getvalue() == ""
    assert (progress.done, progress.total) == (3, 10)

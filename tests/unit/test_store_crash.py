"""Crash safety: SIGKILL a process in the middle of editing; nothing acknowledged is lost."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pollenstudio.core.types import AnnotationStatus, Box

CHILD = textwrap.dedent(
    """
    import sys
    from pollenstudio.core.types import Box, Detection
    from pollenstudio.project import Project

    p = Project.open(sys.argv[1])
    cat = p.categories()[0].id
    seed = int(sys.argv[2])
    print("READY", flush=True)
    i = 0
    while True:
        x = (seed * 7919 + i * 13) % 900
        y = (seed * 104729 + i * 31) % 900
        aid = p.add_annotation(1, Box(x, y, x + 10, y + 10), cat)
        print(f"ADD {aid}", flush=True)
        p.move_annotation(aid, Box(x + 1, y + 1, x + 11, y + 11))
        print(f"MOVE {aid} {x + 1} {y + 1}", flush=True)
        r = p.write_proposals(2, [Detection(Box(x, y, x + 8, y + 8), 0, "Betula", 0.5)])
        if r.written:
            p.accept(r.written[0])
            print(f"ACCEPT {r.written[0]}", flush=True)
        tmp = p.add_annotation(1, Box(x, y, x + 5, y + 5), cat)
        p.undo()
        print(f"UNDONE {tmp}", flush=True)
        i += 1
    """
)


@pytest.mark.slow
def test_sigkill_during_edits_loses_nothing_acknowledged(tmp_path, store):
    with store.create(tmp_path / "p") as p:
        with p.importing():
            p.bulk_insert([{"path": "a.png", "width": 1000, "height": 1000},
                           {"path": "b.png", "width": 1000, "height": 1000}], [])
        p.add_category("Betula")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(1234)
    added, moved, accepted, undone = set(), {}, set(), set()
    kills = 0
    t_end = time.monotonic() + 25
    while kills < 16 and time.monotonic() < t_end:
        proc = subprocess.Popen([sys.executable, str(script), store.target(tmp_path / "p"), str(kills)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(rng.uniform(0.02, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        kills += 1
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                continue  # a line cut by the kill was never an acknowledgement
            if parts[0] == "ADD":
                added.add(int(parts[1]))
            elif parts[0] == "MOVE" and len(parts) == 4:
                moved[int(parts[1])] = (float(parts[2]), float(parts[3]))
            elif parts[0] == "ACCEPT":
                accepted.add(int(parts[1]))
            elif parts[0] == "UNDONE":
                undone.add(int(parts[1]))
        with store.open(tmp_path / "p") as p:
            assert p.integrity_check() == "ok"
            for aid in added:
                p.annotation(aid)  # raises if lost
            for aid, (x, y) in moved.items():
                assert p.annotation(aid).box == Box(x, y, x + 10, y + 10)
            for aid in accepted:
                assert p.annotation(aid).status is AnnotationStatus.ACCEPTED
            gone = {a.id for a in p.annotations(1)}
            assert not undone & gone  # an acknowledged undo stays undone
    assert kills >= 10
    assert len(added) > 20 and accepted and undone  # the children really were editing when killed


BULK_CHILD = textwrap.dedent(
    """
    import sys
    from pollenstudio.core.types import Box
    from pollenstudio.project import Project

    p = Project.open(sys.argv[1])
    cat = p.categories()[0].id
    rows = [{"image_id": 1, "box": Box(i % 900, 0, i % 900 + 10, 10), "category_id": cat,
             "status": "proposed", "source": "model", "score": 0.5} for i in range(5000)]
    print("READY", flush=True)
    n = 0
    while True:
        with p.importing():
            p.bulk_insert([], rows)
        n += 1
        print(f"ACK {n}", flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_during_big_imports_keeps_each_import_whole(tmp_path, store):
    """An import is one transaction: after a kill the project has every acknowledged import
    and no part of the one in flight."""
    with store.create(tmp_path / "p") as p:
        with p.importing():
            p.bulk_insert([{"path": "a.png", "width": 1000, "height": 1000}], [])
        p.add_category("Betula")
    script = tmp_path / "bulk_child.py"
    script.write_text(BULK_CHILD)
    rng = random.Random(99)
    total_acked = 0
    # an import of 5,000 rows takes ~0.1 s into SQLite and ~0.4 s to a server over its socket:
    # kill within a few imports' time on either
    scale = 1.0 if store.backend == "sqlite" else 4.0
    for k in range(6):
        proc = subprocess.Popen([sys.executable, str(script), store.target(tmp_path / "p")], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(rng.uniform(0.05, 0.5) * scale)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        acks = [ln for ln in out.splitlines() if ln.startswith("ACK ") and ln[4:].isdigit()]
        total_acked += len(acks)
        with store.open(tmp_path / "p") as p:
            assert p.integrity_check() == "ok"
            n = p.annotation_count()
            assert n % 5000 == 0, f"a partial import survived the kill ({n} rows)"
            assert n >= total_acked * 5000
            total_acked = n // 5000  # an unacknowledged but committed import counts from now on
            assert p.image_counts()[1].undecided == n  # derived counts committed with the rows
    assert total_acked >= 2  # imports really completed between the kills

"""Several reviewers and a detection job on one project at once (issue 30, item 6).

    python bench/lab_load.py                      # 4 reviewers x 10,000 images x 100,000 edits (PostgreSQL)
    python bench/lab_load.py --images 1000 --edits 10000      # a quick run
    python bench/lab_load.py --pg postgresql://u@host/db      # a given server (default: $POLLENSTUDIO_TEST_PG,
                                                              # else a throwaway one, scripts/pg_throwaway.sh)

Workload, the same on both stores: a project of ``--images`` images, each with 10 model
proposals (bulk-inserted, no image files: nothing here reads pixels). On PostgreSQL
``--reviewers`` reviewer processes (default 4) each take their own share of the images and
make ``--edits`` edits in all, as fast as they can (a closed loop: every process commits
its next edit as soon as the last one returned, far faster than a person; the latencies
are those of a saturated store on this machine). Per image a reviewer claims it (the claim
other windows see) and makes 10 edits through the Project API, each one undoable command
committed at once: 4 accept, 2 reject, 2 move, 1 relabel, 1 box drawn. At the same time a
*detection job* writes proposals on random images through ``Project.write_proposals`` (the
store's write path and merge rule, synthetic detections instead of a model: the model's
time is not what is measured here), replacing the undecided proposals of images the
reviewers are working on; a reviewer whose proposal was replaced meanwhile reads the image
again (counted as "replaced under the reviewer"). A fifth process is *another reviewer's
window*: it receives the others' changes as the app does (PostgreSQL: LISTEN/NOTIFY,
``project.reviewers.listen``; SQLite: ``ChangeFeed.poll`` every ``reviewers.POLL_S``, the
app's period) and records when each edit arrives. The same workload then runs on an
SQLite project with one reviewer (all the edits in one process).

During the PostgreSQL run one reviewer and the detection job are SIGKILLed (``--kill``,
default on) and started again; the killed reviewer continues after the last image it had
acknowledged an edit on.

Measured: edits lost = acknowledged edits (the call returned; each one logged by its
reviewer right after) whose state (status, box, taxon) is not in the store at the end,
read through a fresh connection; every annotation is edited once, so its logged state must
be its final one. p50/p95/p99 edit latency (call to return); refresh = the time from an
edit's call to its arrival in the other window. Results: bench/results/lab_load.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROPOSALS_PER_IMAGE = 10
PLAN = ("accept", "accept", "accept", "accept", "reject", "reject", "move", "move", "relabel", "add")
TAXA = ("Pinus", "Quercus", "Betula", "Alnus")


# ---------------------------------------------------------------------- helpers
def _open(target: str, root: str | None):
    from pollenstudio.project import Project

    return Project.open(target, image_root=root) if "://" in target else Project.open(target)


def _pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def _box(rng, w=2048, h=1536):
    from pollenstudio.core.types import Box

    x, y, s = rng.uniform(0, w - 80), rng.uniform(0, h - 80), rng.uniform(30, 70)
    return Box(x, y, x + s, y + s)


def setup(target: str, root: str | None, n_images: int, seed: int = 0) -> None:
    """A project of ``n_images`` images with ``PROPOSALS_PER_IMAGE`` proposals each."""
    from pollenstudio.project import Project

    rng = random.Random(seed)
    kw = {"image_root": root} if "://" in target else {}
    with Project.create(target, **kw) as p:
        cats = p.ensure_categories(TAXA)
        step = 2000
        for start in range(0, n_images, step):
            images, anns = [], []
            for i in range(start, min(n_images, start + step)):
                images.append({"key": i, "path": f"slides/s{i // 100:03d}/field{i:05d}.png", "width": 2048,
                               "height": 1536})
                for _ in range(PROPOSALS_PER_IMAGE):
                    anns.append({"image_key": i, "box": _box(rng), "category_id": cats[rng.choice(TAXA)],
                                 "score": rng.uniform(0.3, 0.99), "source": "model", "status": "proposed"})
            with p.importing():
                p.bulk_insert(images, anns)
        with p._tx():
            p._refresh_status()


# ---------------------------------------------------------------------- roles
def reviewer(args) -> None:
    """Edit the images ``index::reviewers`` until ``edits`` edits are acknowledged; one log
    line per acknowledged edit, written right after the call returned."""
    from pollenstudio.core.types import AnnotationStatus, Box
    from pollenstudio.project import reviewers as rv

    rng = random.Random(1000 + args.index)
    os.environ[rv.USER_ENV] = f"reviewer{args.index}"
    p = _open(args.target, args.root)
    cats = [c.id for c in p.categories()]
    ids = [r.id for r in p.images()][args.index :: args.reviewers]
    log_path = Path(args.log)
    done_images, acked, last, on_last = set(), 0, None, 0
    if log_path.exists():  # restarted after a kill: go on where the acknowledged edits end
        for line in log_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the line in flight when the process was killed
            done_images.add(rec["image"])
            acked += 1
            on_last = on_last + 1 if rec["image"] == last else 1
            last = rec["image"]
    # the image in flight is worked on again from its next planned edit; the proposal the
    # killed process may have decided without logging it is no longer undecided, so no
    # annotation is edited twice
    done_images.discard(last)
    log = open(log_path, "a", buffering=1)
    replaced = refused = 0
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    next_at = time.perf_counter()
    for image_id in ids:
        if acked >= args.edits:
            break
        if image_id in done_images:
            continue
        c = rv.claim(p, image_id)
        if c.session != p.session and c.reviewer == p.reviewer:
            # still claimed by this reviewer's killed window: taken over, as the person
            # would after a crash (Review > Take over this image)
            rv.claim(p, image_id, takeover=True)
        edited: set[int] = set()
        for kind in PLAN[on_last if image_id == last else 0 :]:
            if acked >= args.edits:
                break
            if period:  # a person's pace: the next edit at its time, whatever the last one cost
                next_at += period
                time.sleep(max(0.0, next_at - time.perf_counter()))
            for _attempt in range(5):
                t0 = time.time()
                c0 = time.perf_counter()
                try:
                    if kind == "add":
                        aid = p.add_annotation(image_id, _box(rng), rng.choice(cats))
                        a = p.annotation(aid)
                        dt = time.perf_counter() - c0
                    else:
                        props = [a for a in p.annotations(image_id)
                                 if a.status is AnnotationStatus.PROPOSED and a.id not in edited]
                        if not props:
                            break
                        target = rng.choice(props)
                        c0 = time.perf_counter()
                        t0 = time.time()
                        if kind == "accept":
                            a = p.accept(target.id)
                        elif kind == "reject":
                            a = p.reject(target.id)
                        elif kind == "move":
                            b = target.box
                            a = p.move_annotation(target.id, Box(b.x1 + 3, b.y1 - 2, b.x2 + 5, b.y2 + 1))
                        else:
                            a = p.relabel(target.id, rng.choice([c for c in cats if c != target.category_id]))
                        dt = time.perf_counter() - c0
                except Exception as exc:  # noqa: BLE001
                    if "does not exist" in str(exc) or "not in" in str(exc):
                        replaced += 1  # the detection job replaced that proposal: read again
                        continue
                    if "deadlock" in str(exc) or "could not serialize" in str(exc):
                        refused += 1  # the server refused the transaction (nothing saved): the person tries again
                        continue
                    raise
                edited.add(a.id)
                log.write(json.dumps({"image": image_id, "ann": a.id, "kind": kind, "status": a.status.value,
                                      "box": list(a.box.xyxy()), "cat": a.category_id, "t0": t0, "dt": dt}) + "\n")
                acked += 1
                break
    log.close()
    rv.release(p)
    p.close()
    print(json.dumps({"replaced": replaced, "refused": refused, "acked": acked}))


def detector(args) -> None:
    """A detection job: synthetic proposals on random images through write_proposals, one
    transaction per image, until the stop file appears. One line per image written."""
    from pollenstudio.core.types import Box, Detection

    rng = random.Random(7 + int(time.time()))
    p = _open(args.target, args.root)
    ids = [r.id for r in p.images()]
    run = p.start_run("detect", {"bench": "lab_load", "synthetic": True})
    log = open(args.log, "a", buffering=1)
    stop = Path(args.stop)
    while not stop.exists():
        image_id = rng.choice(ids)
        existing = p.annotations(image_id)
        dets = []
        for a in existing[:6]:  # the model finds the same grains again (decided ones are skipped)...
            b = a.box
            k = rng.randrange(len(TAXA))
            dets.append(Detection(Box(b.x1 + 1, b.y1 + 1, b.x2 + 1, b.y2 + 1), k, TAXA[k], rng.uniform(0.3, 0.99)))
        for _ in range(4):  # ... and some new ones
            k = rng.randrange(len(TAXA))
            dets.append(Detection(_box(rng), k, TAXA[k], rng.uniform(0.3, 0.99)))
        c0 = time.perf_counter()
        try:
            res = p.write_proposals(image_id, dets, None, run)
        except Exception as exc:  # noqa: BLE001 - refused by the server: nothing written, logged
            if "deadlock" not in str(exc) and "could not serialize" not in str(exc):
                raise
            log.write(json.dumps({"image": image_id, "refused": str(exc)[:200], "dt": time.perf_counter() - c0}) + "\n")
            continue
        log.write(json.dumps({"image": image_id, "written": len(res.written), "skipped": res.skipped,
                              "dt": time.perf_counter() - c0}) + "\n")
        time.sleep(args.detect_pause)
    p.finish_run(run, "done", {})
    p.close()


def observer(args) -> None:
    """Another reviewer's window: when each change of the others arrives (as the app gets it)."""
    import threading

    from pollenstudio.project import reviewers as rv

    os.environ[rv.USER_ENV] = "observer"
    p = _open(args.target, args.root)
    log = open(args.log, "a", buffering=1)
    stop = Path(args.stop)

    def seen(ch) -> None:
        if ch.annotation_ids and ch.author.startswith("reviewer"):  # the reviewers' edits, not the detection job's
            log.write(json.dumps({"t": time.time(), "anns": list(ch.annotation_ids)}) + "\n")

    if p.server is not None:
        ev = threading.Event()
        t = threading.Thread(target=rv.listen, args=(p, seen, ev), daemon=True)
        t.start()
        while not stop.exists():
            time.sleep(0.2)
        ev.set()
        t.join(5)
    else:
        feed = rv.ChangeFeed(p)
        while not stop.exists():
            for ch in feed.poll():
                seen(ch)
            time.sleep(rv.POLL_S)
    p.close()


# ---------------------------------------------------------------------- one store
def _spawn(role: str, target: str, root, log: Path, stop: Path, **kw):
    cmd = [sys.executable, __file__, "--role", role, "--target", target, "--log", str(log), "--stop", str(stop)]
    if root:
        cmd += ["--root", root]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})


def _lines(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def run_store(label: str, target: str, root, n_reviewers: int, edits: int, work: Path, kill: bool,
              detect_pause: float, rate: float = 0.0) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    stop = work / "stop"
    obs = _spawn("observer", target, root, work / "observer.log", stop)
    det_log = work / "detector.log"
    det = _spawn("detector", target, root, det_log, stop, detect_pause=detect_pause)
    time.sleep(3.0)  # the observer is listening before the first edit
    per = [edits // n_reviewers + (1 if i < edits % n_reviewers else 0) for i in range(n_reviewers)]
    logs = [work / f"reviewer{i}.log" for i in range(n_reviewers)]
    revs = [_spawn("reviewer", target, root, logs[i], stop, index=i, reviewers=n_reviewers, edits=per[i], rate=rate)
            for i in range(n_reviewers)]
    t0 = time.perf_counter()
    killed = []
    victim = 1 if n_reviewers > 1 else 0
    while any(r.poll() is None for r in revs):
        if kill and not killed:
            n = len(_lines(logs[victim]))
            if n >= per[victim] * 0.4:
                os.kill(revs[victim].pid, signal.SIGKILL)
                revs[victim].wait()
                killed.append(f"reviewer {victim} after {n} acknowledged edits")
                revs[victim] = _spawn("reviewer", target, root, logs[victim], stop, index=victim,
                                      reviewers=n_reviewers, edits=per[victim], rate=rate)
        if kill and len(killed) == 1 and time.perf_counter() - t0 > 5:
            done = sum(len(_lines(lg)) for lg in logs)
            if done >= edits * 0.5:
                os.kill(det.pid, signal.SIGKILL)
                det.wait()
                killed.append(f"detection job after {len(_lines(det_log))} images written")
                det = _spawn("detector", target, root, det_log, stop, detect_pause=detect_pause)
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    errors = [r.stderr.read()[-2000:] for r in revs if r.returncode != 0]
    outs = []
    for r in revs:
        try:
            outs.append(json.loads(r.stdout.read().strip().splitlines()[-1]))
        except (ValueError, IndexError):
            pass
    if det.poll() is not None:
        errors.append("the detection job ended early: " + det.stderr.read()[-2000:])
    time.sleep(2.0)  # the last notifications arrive
    stop.touch()
    for proc in (det, obs):
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    # every acknowledged edit must be in the store, read through a fresh connection
    acked = [rec for lg in logs for rec in _lines(lg)]
    p = _open(target, root)
    lost = 0
    by_ann = {}
    for rec in acked:
        by_ann[rec["ann"]] = rec
    for aid, rec in by_ann.items():
        try:
            a = p.annotation(aid)
        except Exception:  # noqa: BLE001 - gone
            lost += 1
            continue
        if (a.status.value != rec["status"] or a.category_id != rec["cat"]
                or any(abs(x - y) > 1e-6 for x, y in zip(a.box.xyxy(), rec["box"]))):
            lost += 1
    p.close()
    lat = [rec["dt"] * 1000 for rec in acked]
    arrivals: dict[int, list[float]] = {}
    for rec in _lines(work / "observer.log"):
        for aid in rec["anns"]:
            arrivals.setdefault(aid, []).append(rec["t"])
    refresh = []  # from the call of an edit to the first arrival of a reviewer's change of that annotation after it
    for rec in acked:
        after = [t for t in arrivals.get(rec["ann"], ()) if t >= rec["t0"]]
        if after:
            refresh.append(min(after) - rec["t0"])
    dets = _lines(det_log)
    return {"store": label, "reviewers": n_reviewers, "edits_acked": len(acked), "edits_asked": edits,
            "annotations_checked": len(by_ann), "lost": lost, "wall_s": wall, "edits_per_s": len(acked) / wall,
            "lat_p50": _pct(lat, 50), "lat_p95": _pct(lat, 95), "lat_p99": _pct(lat, 99),
            "refresh_n": len(refresh), "refresh_p50": _pct(refresh, 50), "refresh_p95": _pct(refresh, 95),
            "refresh_max": max(refresh) if refresh else float("nan"),
            "detect_images": sum("written" in d for d in dets),
            "detect_p95": _pct([d["dt"] * 1000 for d in dets if "written" in d], 95),
            "detect_skipped": sum(d.get("skipped", 0) for d in dets),
            "detect_refused": sum("refused" in d for d in dets),
            "edits_refused": sum(o.get("refused", 0) for o in outs),
            "replaced_under": sum(o.get("replaced", 0) for o in outs),
            "refusals": sorted({d["refused"].split(" DETAIL")[0].split(": ", 1)[-1] for d in dets if "refused" in d}),
            "killed": killed, "errors": errors}


# ---------------------------------------------------------------------- main
def _throwaway_pg():
    out = subprocess.run(["bash", str(ROOT / "scripts" / "pg_throwaway.sh"), "start"], capture_output=True, text=True,
                         env={**os.environ, "PG_PORT": os.environ.get("PG_PORT", "55477")})
    if out.returncode != 0:
        raise SystemExit(f"could not start a throwaway PostgreSQL: {out.stderr}")
    env = dict(line.split(" ", 1)[1].split("=", 1) for line in out.stdout.splitlines() if line.startswith("export "))
    return env["POLLENSTUDIO_TEST_PG"], env["PG_THROWAWAY_DIR"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--edits", type=int, default=100_000)
    ap.add_argument("--reviewers", type=int, default=4)
    ap.add_argument("--pg", default=os.environ.get("POLLENSTUDIO_TEST_PG", ""))
    ap.add_argument("--no-kill", dest="kill", action="store_false")
    ap.add_argument("--no-sqlite", dest="sqlite", action="store_false")
    ap.add_argument("--detect-pause", type=float, default=0.0,
                    help="seconds the detection job waits between images (default 0: as fast as it can)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="edits per second of each reviewer (default 0: a closed loop, each edit as soon as the "
                         "last returned)")
    ap.add_argument("--keep", action="store_true", help="keep the projects and logs (their folder is printed)")
    ap.add_argument("--append", action="store_true", help="add the results to --out instead of replacing it")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "lab_load.txt"))
    # roles of the child processes
    ap.add_argument("--role", choices=("reviewer", "detector", "observer"), help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--stop", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        {"reviewer": reviewer, "detector": detector, "observer": observer}[args.role](args)
        return 0
    if args.images * len(PLAN) < args.edits:
        ap.error(f"--edits {args.edits} needs at least {args.edits // len(PLAN)} images ({len(PLAN)} edits per image)")
    work = Path(tempfile.mkdtemp(prefix="lab_load."))
    print(f"projects and logs in {work}" + ("" if args.keep else " (removed at the end; --keep keeps them)"),
          file=sys.stderr)
    root = str(work / "images")
    os.makedirs(root)
    results, pg_dir = [], None
    try:
        pg = args.pg
        if not pg:
            pg, pg_dir = _throwaway_pg()
        sep = "&" if "?" in pg else "?"
        target = f"{pg}{sep}project=lab_load_{uuid.uuid4().hex[:8]}"
        t = time.perf_counter()
        setup(target, root, args.images)
        print(f"PostgreSQL project: {args.images} images set up in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        results.append(run_store("PostgreSQL", target, root, args.reviewers, args.edits, work / "pg", args.kill,
                                 args.detect_pause, args.rate))
        print(json.dumps(results[-1]), file=sys.stderr)
        if args.sqlite:
            folder = str(work / "sqlite_project")
            setup(folder, None, args.images)
            results.append(run_store("SQLite", folder, None, 1, args.edits, work / "sqlite", False,
                                     args.detect_pause, args.rate * args.reviewers))
            print(json.dumps(results[-1]), file=sys.stderr)
    finally:
        if pg_dir:
            subprocess.run(["bash", str(ROOT / "scripts" / "pg_throwaway.sh"), "stop", pg_dir], capture_output=True)
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    report(results, args)
    return 0 if all(r["lost"] == 0 and not r["errors"] for r in results) else 1


def report(results: list[dict], args) -> None:
    import platform

    rows = [("reviewers", "reviewers", "{}"), ("edits acknowledged", "edits_acked", "{}"),
            ("edits lost", "lost", "{}"), ("wall time (s)", "wall_s", "{:.0f}"), ("edits / s (all reviewers)",
                                                                                  "edits_per_s", "{:.0f}"),
            ("edit latency p50 (ms)", "lat_p50", "{:.1f}"), ("edit latency p95 (ms)", "lat_p95", "{:.1f}"),
            ("edit latency p99 (ms)", "lat_p99", "{:.1f}"),
            ("edits seen by the other window", "refresh_n", "{}"), ("refresh p50 (s)", "refresh_p50", "{:.3f}"),
            ("refresh p95 (s)", "refresh_p95", "{:.3f}"), ("refresh max (s)", "refresh_max", "{:.3f}"),
            ("detection job: images written", "detect_images", "{}"),
            ("detection job: write p95 (ms)", "detect_p95", "{:.1f}"),
            ("detection job: detections skipped (decided)", "detect_skipped", "{}"),
            ("detection job: writes refused by the server", "detect_refused", "{}"),
            ("edits refused by the server (retried)", "edits_refused", "{}"),
            ("proposals replaced under a reviewer (reread)", "replaced_under", "{}")]
    pace = (f"each reviewer {args.rate:g} edits/s (the SQLite reviewer {args.rate * args.reviewers:g}/s: the same "
            "total)" if args.rate > 0 else
            "closed loop: each reviewer commits its next edit as soon as the last returned (no think time)")
    lines = [f"bench/lab_load.py --images {args.images} --edits {args.edits} --reviewers {args.reviewers}"
             + (f" --rate {args.rate:g}" if args.rate > 0 else "") + (f" --detect-pause {args.detect_pause:g}"
                                                                     if args.detect_pause else "")
             + ("" if args.kill else " --no-kill"),
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, {os.cpu_count()} CPU cores "
             "shared by every process (reviewers, detection job, other window, the PostgreSQL server)",
             pace, "detection job: synthetic proposals through Project.write_proposals, "
             + (f"{args.detect_pause:g} s between images" if args.detect_pause else "as fast as it can"),
             "", f"{'':46s}" + "".join(f"{r['store']:>14s}" for r in results)]
    for name, key, fmt in rows:
        lines.append(f"{name:46s}" + "".join(f"{fmt.format(r[key]):>14s}" for r in results))
    for r in results:
        if r["killed"]:
            lines.append(f"{r['store']}: SIGKILLed and started again: " + "; ".join(r["killed"]))
        for e in r.get("refusals", []):
            lines.append(f"{r['store']}: the server refused: {e}")
        for e in r["errors"]:
            lines.append(f"{r['store']}: a reviewer failed: {e}")
    lines.append("goals: 0 lost, p95 edit latency < 50 ms, refresh < 1 s")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.exists():
        text = out.read_text() + "\n" + text
    out.write_text(text)


if __name__ == "__main__":
    sys.exit(main())

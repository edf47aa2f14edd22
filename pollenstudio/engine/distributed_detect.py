"""Detection of many images or slides spread over processes and machines (issue 30, item 4).

Why torchrun and not Ray. Multi-GPU training already runs under torchrun
(:mod:`pollenstudio.engine.distributed`), which ships with PyTorch: a lab that trains on
several GPUs has it, and detection needs no new dependency, no cluster service to install
and keep (Ray needs its head node, object store and dashboard, and a version matched on
every machine), and no second way to say "run on these machines". torchrun starts the
workers on every machine (``--nnodes``, ``--nproc-per-node``, a rendezvous point), gives
each its rank and GPU (``LOCAL_RANK``), and its elastic agent restarts a group whose worker
died (``--max-restarts``). What Ray would add, a task scheduler, is not needed: the work is
a list of independent images, and the list is kept where every worker already writes, in
the project's database (:mod:`pollenstudio.project.detect_queue`). Each worker claims a
few images at a time (PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED``; a transaction on
SQLite), so fast machines take more and slow ones fewer, and a machine may join late.

Every worker detects through :func:`pollenstudio.engine.detect_job.detect_project`, the
same job as ``pollenstudio detect`` and the app, so proposals go through
:meth:`Project.write_proposals` and its merge rule (:mod:`pollenstudio.project.merge`): a
grain a person decided is never overwritten or resurrected, whichever worker on whichever
machine writes. The image is marked done in the same transaction as its proposals, so:

- a worker killed at any instant loses nothing: what it stored is marked, what it had
  claimed but not stored goes back to the queue (at once when its process on this machine
  is gone or torchrun restarts it; after its lease, ``detect_queue.LEASE_S``, when its
  machine vanished) and a worker still running takes it over;
- a rerun of the same command with the same settings continues the unfinished job and
  detects only the images not yet done (a finished job is not resumed: detecting again
  is then a new job, as with ``pollenstudio detect``).

Each batch a worker claims is one detect run of the project (its params name the job and
the worker), recorded and taken back on failure as any detect run.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field

from pollenstudio.core.errors import Cancelled, ProjectError
from pollenstudio.core.progress import NullProgress
from pollenstudio.project.detect_queue import DetectQueue, Job, worker_name

MAX_REFUSALS = 5  # a batch the server refused this many times in a row ends the worker with the error
POLL_S = 0.5  # how often a worker with nothing to claim looks again while others still hold claims

# the settings that make a job: two launches with the same ones are the same job
SETTINGS = ("model_version_id", "conf", "iou", "tile", "imgsz", "grain_size", "um_per_px", "backend",
            "stack_mode", "flip_pass", "images", "batch")


@dataclass
class WorkerSummary:
    job_id: int
    worker: str
    detected: int = 0  # images this worker stored
    proposals: int = 0
    skipped: int = 0  # detections dropped because a person had decided that grain
    failed: list[tuple[str, str]] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0
    waited_s: float = 0.0  # time spent waiting for other workers' claims

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failed"] = [{"image": p, "error": e} for p, e in self.failed]
        return d


def is_transient(exc: Exception) -> bool:
    """A refusal the same transaction may not meet again: PostgreSQL broke a deadlock or a
    serialization conflict by failing this side (nothing of it was saved), SQLite stayed
    busy past its timeout, or two workers on a server created the same new taxon at once
    (the store looks the name up, then inserts it: the second insert is refused; run again,
    it finds the taxon)."""
    text = str(exc).lower()
    return any(w in text for w in ("deadlock detected", "could not serialize", "database is locked", "is busy",
                                   "categories_name_key", "unique constraint failed: categories.name"))


def _again(fn, *args):
    """``fn(*args)``, tried again (up to ``MAX_REFUSALS`` times) when the database refused it
    for a moment (:func:`is_transient`): a short queue transaction that met another's locks."""
    for k in range(MAX_REFUSALS + 1):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - only transient refusals are tried again
            if k == MAX_REFUSALS or not is_transient(exc):
                raise
            time.sleep(0.05 * 2 ** k)


def job_settings(project, model=None, *, conf: float, iou: float, tile="auto", imgsz=None, grain_size=None,
                 um_per_px=None, backend="torch", stack_mode=None, flip_pass=False, images="all",
                 batch=None) -> dict:
    """The settings of a job, with the model resolved to a model version of the project
    (registered when it is a file the project does not know yet), so every worker on every
    machine runs the same weights even if the active version changes meanwhile."""
    from pollenstudio.engine.detect_job import DEFAULT_STACK_MODE, STACK_MODES
    from pollenstudio.engine.models import check_checkpoint, register_model_file, resolve_model

    stack_mode = stack_mode or DEFAULT_STACK_MODE
    if stack_mode not in STACK_MODES:
        raise ProjectError(f"stack mode must be one of {', '.join(STACK_MODES)}, got {stack_mode!r}")
    if images not in ("all", "unreviewed", "new"):
        raise ProjectError(f"images must be all, unreviewed or new, got {images!r}")
    resolved = resolve_model(project, model)
    mv = resolved.version_id
    if mv is None:
        mv = register_model_file(project, resolved.path, check_checkpoint(resolved.path).to_dict(), "detect")
    return {"model_version_id": int(mv), "model": resolved.label, "conf": float(conf), "iou": float(iou),
            "tile": str(tile), "imgsz": imgsz, "grain_size": grain_size, "um_per_px": um_per_px,
            "backend": backend or "torch", "stack_mode": stack_mode, "flip_pass": bool(flip_pass),
            "images": images, "batch": batch}


def open_job(project, settings: dict, restart: bool = False) -> tuple[Job, bool]:
    """The open job with these settings (resumed: its failed images are tried again), else
    a new one over the images ``settings['images']`` selects now. Returns (job, resumed)."""
    from pollenstudio.engine.detect_job import select_images

    queue = DetectQueue(project)
    key_params = {k: settings.get(k) for k in SETTINGS}
    key_params["label"] = settings.get("model")
    ids = select_images(project, settings["images"])
    job, resumed = queue.open_job(key_params, ids, restart=restart)
    if resumed:
        queue.reopen_failed(job.id)
    return job, resumed


def default_chunk(total: int, workers: int) -> int:
    """Images per claim: small enough that the work spreads evenly (about 8 claims per
    worker) and a killed worker's unfinished claim is small, large enough that a run per
    claim does not dominate; at most 32."""
    return max(1, min(32, math.ceil(total / max(1, workers) / 8)))


class _MarkingProject:
    """The project as :func:`detect_project` sees it in a worker: every call goes to the
    real project, except that an image's proposals and its "done" mark in the queue are one
    transaction, and each run records the job and the worker."""

    def __init__(self, project, queue: DetectQueue, job_id: int, worker: str):
        self._project, self._queue, self._job, self._worker = project, queue, job_id, worker
        self.run_id: int | None = None

    def __getattr__(self, name):
        return getattr(self._project, name)

    def start_run(self, kind: str, params: dict | None = None) -> int:
        self.run_id = self._project.start_run(kind, {**(params or {}), "job": self._job, "worker": self._worker})
        return self.run_id

    def write_proposals(self, image_id, detections, model_version_id=None, run_id=None, **kw):
        with self._project._tx() as conn:
            res = self._project.write_proposals(image_id, detections, model_version_id, run_id, **kw)
            self._queue.mark_done(conn, self._job, image_id, run_id, self._worker)
        return res


class _Heartbeat(threading.Thread):
    """Renews the worker's claims while it detects (a slide may take minutes)."""

    def __init__(self, queue: DetectQueue, job_id: int, worker: str):
        super().__init__(daemon=True, name="detect-heartbeat")
        self.queue, self.job_id, self.worker = queue, job_id, worker
        self.stop = threading.Event()

    def run(self) -> None:
        every = max(1.0, self.queue.lease_s / 4)
        while not self.stop.wait(every):
            try:
                self.queue.renew(self.job_id, self.worker)
            except Exception:  # noqa: BLE001 - a busy database now and then: the next beat renews
                pass


def run_worker(project, job_id: int, *, device: str = "auto", chunk: int | None = None, progress=None,
               worker: str | None = None, predictor=None, wait_for_others: bool = True) -> WorkerSummary:
    """Claim images of job ``job_id`` and detect them until none is left; returns what this
    worker did. ``predictor``: one already built (tests); default: the job's model version
    with the job's settings on ``device``. ``wait_for_others``: when nothing is left to
    claim but other workers still hold claims, wait and take over those whose worker died
    (the job is then complete when this returns, unless a worker elsewhere still runs)."""
    from pollenstudio.engine.detect_job import detect_project

    progress = progress or NullProgress()
    me = worker or worker_name()
    queue = DetectQueue(project)
    job = queue.job(job_id)
    if job.status != "open":  # the others finished it (or it was started over) before this worker came
        return WorkerSummary(job_id, me)
    p = job.params
    if predictor is None:
        from pollenstudio.engine.predict import Predictor

        predictor = Predictor.from_project(project, str(p["model_version_id"]), device=device, conf=p["conf"],
                                           iou=p["iou"], tile=p["tile"], batch=p.get("batch"), imgsz=p.get("imgsz"),
                                           grain_size=p.get("grain_size"), um_per_px=p.get("um_per_px"),
                                           backend=p.get("backend") or "torch")
    counts = queue.counts(job_id)
    chunk = chunk or default_chunk(counts.total, int(os.environ.get("WORLD_SIZE", "1")))
    summary = WorkerSummary(job_id, me)
    marking = _MarkingProject(project, queue, job_id, me)
    beat = _Heartbeat(queue, job_id, me)
    beat.start()
    t0 = time.perf_counter()
    refusals = 0
    try:
        while True:
            progress.check()
            _again(queue.release_dead, job_id, me)
            ids = _again(queue.claim, job_id, chunk, me)
            if not ids:
                counts = queue.counts(job_id)
                if counts.open == 0 or not wait_for_others:
                    break
                t_wait = time.perf_counter()
                time.sleep(POLL_S)  # others hold claims: one of them may die and leave them
                summary.waited_s += time.perf_counter() - t_wait
                continue
            names = {i: project.image(i).path for i in ids}
            marking.run_id = None
            try:
                s = detect_project(marking, predictor, ids, progress=progress, stack_mode=p.get("stack_mode"),
                                   flip_pass=bool(p.get("flip_pass")))
            except BaseException as exc:
                # a failed run took its writes back: they wait again (an interrupted one keeps them)
                if marking.run_id is not None and not isinstance(exc, KeyboardInterrupt):
                    _again(queue.undo_run, job_id, marking.run_id)
                _again(queue.settle, job_id, ids, None, me)
                if isinstance(exc, Exception) and is_transient(exc) and refusals < MAX_REFUSALS:
                    refusals += 1  # the server gave up a transaction (a deadlock with a reviewer's edit): again
                    time.sleep(0.1 * 2 ** refusals)
                    continue
                raise
            refusals = 0
            summary.runs.append(s.run_id)
            summary.detected += s.done
            summary.proposals += s.proposals
            summary.skipped += s.skipped
            summary.failed.extend(s.failed)
            by_path = {path: i for i, path in names.items()}
            _again(queue.settle, job_id, ids, {by_path[path]: why for path, why in s.failed if path in by_path}, me)
            counts = queue.counts(job_id)
            progress.update(counts.done + counts.failed, counts.total, f"job {job_id}: {summary.detected} image(s) here")
            if s.cancelled:
                summary.cancelled = True
                break
    except Cancelled:
        summary.cancelled = True
    finally:
        beat.stop.set()
        summary.seconds = time.perf_counter() - t0
    if not summary.cancelled:
        _again(queue.finish_if_complete, job_id)
    return summary


def wait_for_job(project, job_id: int, progress=None, poll_s: float = POLL_S) -> None:
    """Until no image of the job is waiting or claimed by a live worker (progress shown)."""
    progress = progress or NullProgress()
    queue = DetectQueue(project)
    while True:
        counts = queue.counts(job_id)
        progress.update(counts.done + counts.failed, counts.total, f"job {job_id}")
        if counts.pending == 0 and queue.live_claims(job_id) == 0:
            return
        progress.check()
        time.sleep(poll_s)

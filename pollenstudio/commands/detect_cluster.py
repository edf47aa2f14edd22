"""`pollenstudio detect PROJECT --workers N` and `--distributed` (under torchrun): one
detection spread over processes and machines (issue 30; :mod:`pollenstudio.engine.distributed_detect`).

On one machine::

    pollenstudio detect myproject --workers 4            # 4 local worker processes

Over several machines, on each (same command, the project on the lab's PostgreSQL server)::

    torchrun --nnodes 3 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint HOST0:29400 \\
        --max-restarts 3 -m pollenstudio detect "postgresql://server/pollen?project=core7" --distributed

A rerun of the same command continues an unfinished job: only the images not yet detected
are detected. These options are added to `pollenstudio detect` by ``pollenstudio.cli``;
without them `detect` runs as one process, as before.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

WORKER_FAILED = 4  # exit status: a worker died; the images it left are waiting for a rerun


def add_arguments(parser) -> None:
    from pollenstudio.commands._console import positive_int

    g = parser.add_argument_group("spread over processes and machines (lab server, issue 30)")
    g.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="detect with N worker processes on this machine, sharing the work through the project's "
                        "database; a rerun of the same command continues an interrupted job, detecting only "
                        "what is missing (exit status 4 when workers died and left images undetected)")
    g.add_argument("--distributed", action="store_true",
                   help="this process is one worker of a job started by torchrun on one or several machines "
                        "(see docs/lab-server.md)")
    g.add_argument("--new-job", action="store_true",
                   help="with --workers/--distributed: start the job over instead of continuing an unfinished "
                        "one with the same settings")
    g.add_argument("--claim", type=positive_int, default=None, metavar="K",
                   help="images a worker takes at a time (default: about an eighth of its share, at most 32)")
    g.add_argument("--worker-of", type=int, default=None, help=argparse.SUPPRESS)  # a local worker process
    g.add_argument("--threads", type=positive_int, default=None, help=argparse.SUPPRESS)


def wants_cluster(args) -> bool:
    return bool(args.workers or args.distributed or args.worker_of is not None)


def _open(target: str):
    from pathlib import Path

    from pollenstudio.core.errors import ProjectError
    from pollenstudio.project import Project
    from pollenstudio.project.schema import DB_NAME

    if "://" not in target:
        p = Path(target)
        if p.is_dir() and not (p / DB_NAME).exists():
            raise ProjectError(f"{p} holds no project: --workers and --distributed detect a project's images; "
                               f"make one first (pollenstudio import {p} ... or pollenstudio detect {p})")
    return Project.open(target)


def _check_settings(args):
    """Bad settings are refused in words before anything is written."""
    from pollenstudio.core.errors import PollenStudioError, ProjectError
    from pollenstudio.engine.predict import select_device
    from pollenstudio.engine.runtime import default_backend, resolve_backend
    from pollenstudio.engine.scale import typical_grain_px
    from pollenstudio.engine.tiling import resolve_tile_size

    if args.workers and args.distributed:
        raise ProjectError("--workers starts worker processes here; --distributed is one worker started by "
                           "torchrun: give one of them")
    try:
        resolve_tile_size(args.tile, 10**6, 10**6, 640)
    except ValueError as exc:
        raise PollenStudioError(f"--tile: {exc}") from None
    typical_grain_px(args.grain_size, args.um_per_px)
    backend = args.backend or default_backend()
    dev = select_device(args.device)
    resolve_backend(backend, dev.type)
    return backend, dev


def _settings(proj, args, backend) -> dict:
    from pollenstudio.engine.distributed_detect import job_settings

    return job_settings(proj, args.model, conf=args.conf, iou=args.iou, tile=args.tile, imgsz=args.imgsz,
                        grain_size=args.grain_size, um_per_px=args.um_per_px, backend=backend,
                        stack_mode=args.stack_mode, flip_pass=args.flip_pass, images=args.images, batch=args.batch)


def run(args) -> int:
    if args.worker_of is not None:
        return _run_worker(args)
    if args.distributed:
        return _run_distributed(args)
    return _run_local(args)


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _run_worker(args) -> int:
    """One local worker process of a job (started by the launcher below)."""
    from pollenstudio.commands._console import ConsoleProgress, print_json
    from pollenstudio.engine.distributed_detect import run_worker

    _set_threads(args.threads)
    with _open(args.target) as proj:
        s = run_worker(proj, args.worker_of, device=args.device, chunk=args.claim,
                       progress=ConsoleProgress("worker", quiet=True))
    print_json(s.to_dict())
    return 130 if s.cancelled else 0


def _run_distributed(args) -> int:
    """One worker started by torchrun: rank 0 opens (or continues) the job and tells the
    others its number; every rank then works the queue; rank 0 reports when it is done."""
    from pollenstudio.commands._console import ConsoleProgress, print_json
    from pollenstudio.engine.distributed import broadcast_object, init_from_env, shutdown
    from pollenstudio.engine.distributed_detect import run_worker, wait_for_job

    backend, _ = _check_settings(args)
    ctx, dev = init_from_env(args.device)
    quiet = args.quiet or args.json or not ctx.is_main
    try:
        with _open(args.target) as proj:
            job_id = None
            if ctx.is_main:
                job, resumed = _open_job(proj, args, backend, quiet)
                job_id = job.id
            job_id = broadcast_object(ctx, job_id)
            _set_threads(args.threads)
            s = run_worker(proj, job_id, device=str(dev), chunk=args.claim,
                           progress=ConsoleProgress(f"detect (rank {ctx.rank})", quiet=quiet))
            if not ctx.is_main:
                return 130 if s.cancelled else 0
            wait_for_job(proj, job_id)
            return _report(proj, job_id, args, time_started=None, workers=[s.to_dict()], exits=[],
                           world=ctx.world_size)
    finally:
        shutdown(ctx)


def _open_job(proj, args, backend, quiet):
    from pollenstudio.engine.distributed_detect import open_job

    job, resumed = open_job(proj, _settings(proj, args, backend), restart=args.new_job)
    if not quiet:
        from pollenstudio.project.detect_queue import DetectQueue

        c = DetectQueue(proj).counts(job.id)
        if resumed:
            print(f"continuing detection job {job.id} ({job.params.get('label')}): {c.done} of {c.total} image(s) "
                  f"done before, {c.open} to go", file=sys.stderr)
        else:
            print(f"detection job {job.id} ({job.params.get('label')}): {c.total} image(s)", file=sys.stderr)
    return job, resumed


def _worker_devices(dev, n: int) -> list[str]:
    """A GPU per worker in turn when the device is CUDA without an index; else the same."""
    if dev.type == "cuda" and dev.index is None:
        import torch

        k = max(1, torch.cuda.device_count())
        return [f"cuda:{i % k}" for i in range(n)]
    return [str(dev)] * n


def _run_local(args) -> int:
    """Start ``--workers`` local worker processes on one job and wait for them."""
    from pollenstudio.commands._console import ConsoleProgress
    from pollenstudio.engine.distributed_detect import default_chunk
    from pollenstudio.project.detect_queue import DetectQueue

    backend, dev = _check_settings(args)
    quiet = args.quiet or args.json
    t_start = time.time()
    with _open(args.target) as proj:
        job, _ = _open_job(proj, args, backend, quiet)
        queue = DetectQueue(proj)
        counts = queue.counts(job.id)
        n = args.workers
        claim = args.claim or default_chunk(counts.open, n)
        threads = args.threads or max(1, (os.cpu_count() or 1) // n)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        procs = []
        for d in _worker_devices(dev, n):
            cmd = [sys.executable, "-m", "pollenstudio", "detect", args.target, "--worker-of", str(job.id),
                   "--device", d, "--claim", str(claim), "--threads", str(threads)]
            # a session of their own: a Ctrl+C reaches them once, from here, not also from the terminal
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                          start_new_session=True))
        if not quiet:
            print(f"{n} worker process(es): " + ", ".join(str(p.pid) for p in procs), file=sys.stderr)
        progress = ConsoleProgress("detect", quiet=quiet)
        interrupted = False
        try:
            shown = None
            while any(p.poll() is None for p in procs):
                c = queue.counts(job.id)
                now = (c.done + c.failed, sum(p.poll() is None for p in procs))
                if now != shown:
                    progress.update(now[0], c.total, f"{now[1]} worker(s)")
                    shown = now
                time.sleep(0.5)
        except KeyboardInterrupt:  # Ctrl+C: each worker finishes its image in flight and gives back the rest
            interrupted = True
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
        outs = [p.communicate() for p in procs]
        workers, exits = [], []
        for p, (out, err) in zip(procs, outs):
            exits.append({"pid": p.pid, "returncode": p.returncode,
                          "error": _last_error(err) if p.returncode not in (0, 130) else ""})
            try:
                workers.append(json.loads(out))
            except ValueError:
                pass
        rc = _report(proj, job.id, args, t_start, workers, exits, world=n)
    return 130 if interrupted else rc


def _last_error(err: str) -> str:
    lines = [ln for ln in (err or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _report(proj, job_id: int, args, time_started, workers: list[dict], exits: list[dict], world: int) -> int:
    from pollenstudio.commands._console import print_json
    from pollenstudio.project.detect_queue import DetectQueue

    queue = DetectQueue(proj)
    c = queue.counts(job_id)
    items = queue.items(job_id)
    failed = [(proj.image(i).path, err) for i, state, _w, _r, _t, err in items if state == "failed"]
    now_done = None
    if time_started is not None:
        now_done = queue.done_since(job_id, time_started)
    died = [e for e in exits if e["returncode"] not in (0, 130)]
    out = {"project": str(args.target), "job": job_id, "workers": world, "images": c.total, "done": c.done,
           "failed": [{"image": p, "error": e} for p, e in failed], "waiting": c.open,
           "detected_now": now_done, "proposals_now": sum(w.get("proposals", 0) for w in workers),
           "skipped_now": sum(w.get("skipped", 0) for w in workers), "worker_exits": exits,
           "job_status": queue.job(job_id).status}
    if args.json:
        print_json(out)
    else:
        for p, e in failed:
            print(f"could not use: {e}", file=sys.stderr)
        for e in died:
            how = f"signal {-e['returncode']}" if e["returncode"] < 0 else f"exit status {e['returncode']}"
            print(f"worker {e['pid']} ended with {how}" + (f": {e['error']}" if e["error"] else ""), file=sys.stderr)
        line = f"job {job_id}: {c.done}/{c.total} images done"
        if now_done is not None:
            line += f" ({now_done} now, {out['proposals_now']} proposals)"
        if out["skipped_now"]:
            line += f", {out['skipped_now']} already decided by a person"
        if failed:
            line += f", {len(failed)} failed (named above)"
        if c.open:
            line += f"; {c.open} not detected yet: run the same command again to detect only those"
        print(line)
    if c.open:
        return WORKER_FAILED
    if failed:
        return 3 if c.done else 1
    return 0

"""`pollenstudio train`: retrain the detector on a project's reviewed annotations.

A run starts from the model in use (the active version, else the shipped grain model) unless
``--base`` names another one, or ``--base scratch`` asks for a new network.

After training, the model in use before the run is scored on the new version's validation
images and the two are printed side by side, overall and per taxon (``engine.compare``, the
same comparison the training dashboard shows; ``--no-compare`` skips it).

Works as one process or under torchrun (one process per GPU, or several CPU processes)::

    pollenstudio train myproject --epochs 50 --activate
    torchrun --nproc_per_node=4 -m pollenstudio train myproject --epochs 50
"""

from __future__ import annotations

import argparse

from pollenstudio.commands._console import model_imgsz, non_negative_int, number_in, positive_int
from pollenstudio.commands._project import PROJECT_HELP

HELP = "Train a new model version on the project's reviewed images (also under torchrun for several GPUs)."


_imgsz = model_imgsz  # a multiple of 32 from 64 to 4096


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {v}")
    return v


def _version_name(text: str) -> str:
    """Refused before training starts, not after it (the store's rule, core.names)."""
    from pollenstudio.core.errors import InvalidNameError
    from pollenstudio.core.names import check_name

    try:
        return check_name(text, "model version name")
    except InvalidNameError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", help=PROJECT_HELP)
    p.add_argument("--base", default=None, metavar="VERSION|FILE|scratch",
                   help="model to start from: a model version id or name, a .safetensors file, or \"scratch\" for a "
                        "new network (default: the model in use: the active version, else the shipped grain model; "
                        "with --tiny and no --base: scratch)")
    p.add_argument("--stage", choices=("auto", "detector", "classifier", "both"), default="auto",
                   help="what to train: auto (the recipe's choice from the reviewed images and grains, the device and "
                        "the frame size), detector (taxa in the detector's head), classifier (keep the base detector, "
                        "name its grains with a taxon classifier; seconds), both (detector as grain finder + "
                        "classifier). Default auto")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: the auto recipe's)")
    p.add_argument("--imgsz", type=_imgsz, default=None,
                   help="model input size in pixels, multiple of 32 (default: the auto recipe's)")
    p.add_argument("--freeze", choices=("none", "backbone", "neck"), default=None,
                   help="layers kept fixed: none, backbone, neck (= train the head only) (default: the auto recipe's)")
    p.add_argument("--batch", type=positive_int, default=16, help="images per batch and process (default 16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--scale", choices=("n", "s"), default="n",
                   help="model size when training from scratch (--base scratch) (default n; otherwise the base decides)")
    p.add_argument("--variant", choices=("full", "base", "edge", "cspokm"), default="full",
                   help="HieraEdgeNet modules when training from scratch: full (edge priors + CSPOKM), base (plain), "
                        "edge, cspokm (default full)")
    p.add_argument("--activate", action="store_true", help="make the new model version the project's active model")
    p.add_argument("--resume", action="store_true", help="continue the project's last interrupted training")
    p.add_argument("--optimizer", choices=("auto", "sgd", "adamw"), default="auto", help="default auto")
    p.add_argument("--lr0", type=number_in(0.0, 10.0, lo_open=True), default=None, help="initial learning rate (default: 0.01 SGD, 0.002 AdamW)")
    p.add_argument("--patience", type=non_negative_int, default=50, help="stop after this many epochs without validation gain (0: never)")
    p.add_argument("--val-fraction", type=_fraction, default=0.2, help="share of images (or slides) for validation (default 0.2)")
    p.add_argument("--no-mosaic", action="store_true", help="switch off 4-image mosaic augmentation")
    p.add_argument("--low-res", type=_fraction, default=None, metavar="P",
                   help="share of training frames shown at 1.5-4x lower resolution and upsampled back, as "
                        "calibrated detection upsamples low-magnification images (default 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=non_negative_int, default=None, help="data loading processes (default: 0 on CPU)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads per process (default: torch's choice)")
    p.add_argument("--tiny", action="store_true",
                   help="a very small model of the same design, trained from scratch (smoke tests, demos)")
    p.add_argument("--name", type=_version_name, default=None, help="name of the new model version")
    p.add_argument("--no-compare", action="store_true",
                   help="skip scoring the model in use on the new version's validation images")
    p.add_argument("--json", action="store_true", help="print the result as JSON (with the comparison)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import sys
    import time

    from pollenstudio.commands._console import ConsoleProgress, print_json
    from pollenstudio.engine.compare import compare_with_reference, reference_model
    from pollenstudio.engine.distributed import init_from_env, shutdown
    from pollenstudio.engine.models import scratch_model_config
    from pollenstudio.engine.train import TrainConfig, train_project
    from pollenstudio.commands._project import open_project

    ctx, device = init_from_env(args.device)
    try:
        quiet = args.quiet or args.json or not ctx.is_main
        project = open_project(args.project)
        try:
            from pollenstudio.engine.recipe import auto_plan

            start = None if args.resume else _start_model(project, args)
            base = None if start is None else start.as_base()
            plan = None if args.resume else auto_plan(project, base, str(device))
        except BaseException:
            project.close()
            raise
        if args.stage != "auto":
            stage = args.stage
        else:  # a resumed run continues a detector training
            stage = "detector" if plan is None else plan.recipe.stage
        given = dict(epochs=args.epochs, imgsz=args.imgsz, freeze=args.freeze, lr0=args.lr0, batch=args.batch,
                     device=str(device), optimizer=args.optimizer, patience=args.patience, val_fraction=args.val_fraction,
                     seed=args.seed, workers=args.workers, threads=args.threads)
        if plan is not None:  # the auto recipe, every flag given overriding its choice
            cfg = plan.recipe.train_config(**given)
        else:
            cfg = TrainConfig(**{k: v for k, v in given.items() if v is not None})
        if args.no_mosaic:
            cfg.augment.mosaic = 0.0
        if args.low_res is not None:
            cfg.augment.low_res = args.low_res
        model_cfg = scratch_model_config(cfg.imgsz, args.variant, args.scale, tiny=args.tiny)
        progress = ConsoleProgress("train", quiet=quiet)
        log = []

        def on_epoch_end(trainer, epoch, m):
            log.append(m)
            if quiet or "map50" not in m:
                return
            line = (f"epoch {epoch + 1}/{cfg.epochs}  loss {m['loss']:.3f}  mAP@.5 {m['map50']:.3f}  "
                    f"mAP@.5:.95 {m['map50_95']:.3f}  ({m.get('seconds', 0):.0f} s)")
            sys.stderr.write("\r" + line.ljust(110) + "\n")  # over the progress bar's line

        t0 = time.perf_counter()
        overridden = None
        if plan is not None and (args.stage != "auto" or any(v is not None for v in (args.epochs, args.imgsz, args.freeze, args.lr0))):
            overridden = f"Overridden: stage {stage}, {cfg.epochs} epochs at {cfg.imgsz} px, freeze {cfg.freeze}, lr {cfg.lr0}."
        try:
            if not quiet and plan is not None:
                sys.stderr.write(f"Starts from {_start_words(start)}.\n")
                sys.stderr.write(plan.describe() + "\n")
                if overridden:
                    sys.stderr.write(overridden + "\n")
            compare = ctx.is_main and not args.no_compare
            reference = reference_model(project) if compare else None  # in use before --activate switches
            res = train_project(
                project, cfg, model_cfg=model_cfg, base=base, activate=args.activate, resume=args.resume,
                progress=progress, callbacks={"on_epoch_end": on_epoch_end}, dist=ctx, device=device, name=args.name,
                stage=stage,
            )
            seconds = time.perf_counter() - t0
            comparison = None
            if compare:
                comparison = compare_with_reference(
                    project, res.version_id, reference, device=str(device), conf=cfg.conf, batch=cfg.batch,
                    progress=ConsoleProgress("compare", quiet=quiet),
                )
        finally:
            project.close()
        if not ctx.is_main:
            return 0
        out = {
            "version_id": res.version_id,
            "weights": str(res.weights),
            "active": bool(args.activate),
            "map50": res.metrics.get("map50"),
            "map50_95": res.metrics.get("map50_95"),
            "precision": res.metrics.get("precision"),
            "recall": res.metrics.get("recall"),
            "stage": stage,
            "base": None if args.resume else _start_words(start),
            # what was trained: the recipe's description alone would name settings the flags replaced
            "recipe": None if plan is None else plan.recipe.describe() + (f" {overridden}" if overridden else ""),
            "epochs": res.result.epochs_run,
            "best_epoch": res.result.best_epoch + 1,
            "stopped_early": res.result.stopped_early,
            "train_images": res.n_train_images,
            "val_images": res.n_val_images,
            "processes": ctx.world_size,
            "device": str(device),
            "seconds": round(seconds, 1),  # training; the comparison's scoring is not counted
            # the validation figures mean nothing on so few images: the text says so instead
            "too_few_to_score": _too_few(res),
        }
        if comparison is not None:
            out["comparison"] = comparison.to_dict()
        if args.json:
            print_json(out)
        else:
            fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
            print(f"model version {out['version_id']} ({'active' if out['active'] else 'not active; use --activate or the GUI'})")
            print(f"weights      {out['weights']}")
            if out["too_few_to_score"]:
                print(f"validation   {out['too_few_to_score']}")
            else:
                print(f"validation   mAP@.5 {fmt(out['map50'])}   mAP@.5:.95 {fmt(out['map50_95'])}   "
                      f"P {fmt(out['precision'])}   R {fmt(out['recall'])}   on {out['val_images']} images")
            if stage == "classifier":
                n_all = out["train_images"] + out["val_images"]
                held = (f"scored first on {out['val_images']} held out, then refitted on all" if out["val_images"]
                        else "none held out")
                print(f"trained      a taxon classifier on the base detector's crops of every reviewed image "
                      f"({n_all}; {held}), {out['seconds']:.0f} s")
            else:
                print(f"trained      {out['epochs']} epochs (best {out['best_epoch']}) on {out['train_images']} images, "
                      f"{out['processes']} process(es) on {out['device']}, {out['seconds']:.0f} s")
            if comparison is not None:
                _print_comparison(comparison)
        return 0
    finally:
        shutdown(ctx)


def _too_few(res) -> str | None:
    """Why the run's validation figures mean nothing (engine.evaluate.too_few_to_score), or None."""
    from pollenstudio.engine.evaluate import too_few_to_score

    if not res.n_val_images:
        return "too few reviewed images to score: none was held out for validation"
    return too_few_to_score(res.metrics)


def _start_model(project, args):
    """The model a new run starts from (``engine.models.training_base``): ``--base``, else
    the model in use; None = a new network (``--base scratch``, or ``--tiny`` without
    ``--base``: a tiny network is always a new one)."""
    from pollenstudio.engine.models import training_base

    if args.base is None and args.tiny:
        return None
    return training_base(project, args.base)


def _start_words(start) -> str:
    if start is None:
        return "scratch (a new network)"
    return {"active": f"the model in use, {start.label}",
            "default": f"the model in use, the {start.label} ({start.path.name})"}.get(start.kind, start.label)


def _print_comparison(c) -> None:
    """The new version against the model in use, overall and per taxon (AP@.5)."""
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    change = lambda a, b: "-" if a is None or b is None else f"{b - a:+.4f}"  # noqa: E731
    if c.reference_metrics is None:
        print(f"comparison   {c.note or 'none'}")
        return
    old, new = c.reference_metrics, c.metrics
    how = ""
    if c.class_agnostic:  # the model in use names no taxon of the project: finding only, both models
        new, how = c.finding or {}, ", class-agnostic (finding only)"
    print(f"comparison   new model vs model in use ({c.reference_name}), on the same {c.n_val} validation images{how}")
    print(f"  {'':<12}{'in use':>10}{'new':>10}{'change':>10}")
    for label, key in (("mAP@.5", "map50"), ("mAP@.5:.95", "map50_95"), ("precision", "precision"),
                       ("recall", "recall")):
        print(f"  {label:<12}{fmt(old.get(key)):>10}{fmt(new.get(key)):>10}{change(old.get(key), new.get(key)):>10}")
    if c.taxa:
        width = max(12, *(len(t.name) + 2 for t in c.taxa))
        print(f"  {'taxon (AP@.5)':<{width}}{'grains':>8}{'in use':>10}{'new':>10}{'change':>10}")
        for t in c.taxa:
            print(f"  {t.name:<{width}}{t.grains:>8}{fmt(t.old):>10}{fmt(t.new):>10}{change(t.old, t.new):>10}")
    if c.note:
        print(f"  {c.note}")

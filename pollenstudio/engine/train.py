"""Retraining HieraEdgeNet on a project's reviewed annotations.

Two levels:

* :class:`Trainer` trains a detector on samples (no project needed): warm-up, cosine or
  linear LR schedule ``lr0 -> lr0 * lrf``, SGD or AdamW, EMA of the weights, mixed precision
  on CUDA, gradient clipping, early stopping on validation mAP, cancel within one batch,
  resume from ``last.ckpt``, fine-tuning from a checkpoint with another taxon list, and
  multi-process DDP under torchrun. Everything that watches a run (CLI bar, GUI, tests)
  subscribes to named events::

      on_train_start(trainer)
      on_epoch_start(trainer, epoch)
      on_batch_end(trainer, epoch, batch, n_batches, loss)
      on_val_end(trainer, epoch, result)            # EvalResult on the validation split
      on_epoch_end(trainer, epoch, metrics)         # dict: losses, lr, map50, map50_95, ...
      on_train_end(trainer, result)                 # TrainResult
      on_cancel(trainer, epoch)

* :func:`train_project` builds the data from a project, runs a Trainer in
  ``<project>/models/runs/train-<run>/`` and registers the result as a model version
  (weights in ``<project>/models/``, validation metrics, config, parent, annotation ids).
  It only reads annotations; it never changes one.

``last.ckpt`` is a safetensors file (model, EMA and optimizer tensors) whose metadata holds
the rest of the training state as JSON: nothing is ever pickled.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from pollenstudio.core.atomic import WriteError, is_disk_full
from pollenstudio.core.errors import Cancelled, CheckpointError, PollenStudioError, ProjectError
from pollenstudio.core.progress import NullProgress, Progress
from pollenstudio.core.types import DEFAULT_CONF
from pollenstudio.engine.augment import AugmentConfig
from pollenstudio.engine.dataset import (
    DatasetError,
    DetectionData,
    Sample,
    TrainDataset,
    collate,
    data_from_project,
    split_samples,
)
from pollenstudio.engine.distributed import (
    DistContext,
    all_reduce_mean,
    any_true,
    barrier,
    broadcast_object,
    make_sampler,
    unwrap,
    wrap_model,
)
from pollenstudio.engine.evaluate import evaluate_model

EVENTS = (
    "on_train_start",
    "on_epoch_start",
    "on_batch_end",
    "on_val_end",
    "on_epoch_end",
    "on_train_end",
    "on_cancel",
)
STATE_FORMAT = "pollenstudio-train-state"
STATE_VERSION = 1


@dataclass
class TrainConfig:
    """Recipe of one training run (JSON-serialisable; stored with the model version)."""

    epochs: int = 100
    imgsz: int = 640
    batch: int = 16  # per process
    device: str = "auto"
    optimizer: str = "auto"  # auto | sgd | adamw ("auto": AdamW for short runs, SGD for long)
    lr0: float | None = None  # None: 0.01 for SGD, 0.002 for AdamW
    lrf: float = 0.01  # final LR = lr0 * lrf
    schedule: str = "cosine"  # cosine | linear
    momentum: float = 0.937  # SGD momentum / Adam beta1
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    ema: bool = True
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0  # EMA ramps up over about this many optimizer steps
    amp: bool = True  # float16 autocast; used on CUDA only
    grad_clip: float = 10.0
    patience: int = 50  # epochs without val improvement before stopping (0: never)
    val_fraction: float = 0.2
    conf: float = DEFAULT_CONF  # operating threshold for precision / recall
    seed: int = 0
    workers: int | None = None  # DataLoader workers (None: 0 on CPU, up to 8 on CUDA)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    freeze: str = "none"  # none | backbone (train neck + head) | neck (train the head only)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if isinstance(kw.get("augment"), dict):
            kw["augment"] = AugmentConfig.from_dict(kw["augment"])
        return cls(**kw)


@dataclass
class TrainResult:
    weights: Path | None  # best (or last) weights, detector checkpoint format
    metrics: dict  # validation metrics of those weights (EvalResult.to_dict) or {}
    epochs_run: int
    best_epoch: int
    history: list[dict]
    stopped_early: bool = False
    seconds: float = 0.0
    model_config: dict = field(default_factory=dict)


FREEZE = ("none", "backbone", "neck")
NECK_MODULES = ("top4", "top3", "ok3", "down_n4", "bottom4", "ok4", "down_n5", "bottom5", "ok5")


def frozen_modules(model, freeze: str) -> list:
    """Top-level modules of a HieraEdgeNet that ``freeze`` keeps fixed: "backbone" = stem to
    C2PSA (the neck and head train); "neck" = everything but the detection head."""
    if freeze not in FREEZE:
        raise PollenStudioError(f"unknown freeze setting {freeze!r}; use {', '.join(FREEZE)}")
    if freeze == "none":
        return []
    keep = {"detect"} | (set(NECK_MODULES) if freeze == "backbone" else set())
    return [m for n, m in unwrap(model).named_children() if n not in keep]


def fitness(metrics: dict) -> float:
    """Model selection score: mostly mAP@.5:.95, a little mAP@.5 (breaks ties early on)."""
    return 0.9 * float(metrics.get("map50_95", 0.0)) + 0.1 * float(metrics.get("map50", 0.0))


# ---------------------------------------------------------------- EMA
class ModelEMA:
    """Exponential moving average of a model's weights (smoother, better val figures).

    decay ramps from 0 towards ``decay`` as ``1 - exp(-updates / tau)`` so the first
    hundred steps of a short run are not dominated by the random initial weights.
    """

    def __init__(self, model, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = float(decay), float(tau), int(updates)

    def update(self, model) -> None:
        import torch

        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.tau))
        msd = unwrap(model).state_dict()
        with torch.no_grad():
            for k, v in self.module.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(msd[k].detach(), alpha=1.0 - d)
                else:
                    v.copy_(msd[k])


# ---------------------------------------------------------------- safe training state
def save_train_state(path: Path, model, ema: ModelEMA | None, optimizer, scaler, state: dict) -> None:
    """Write everything needed to resume: tensors to safetensors, the rest as JSON metadata.
    Atomic (core.atomic): a crash or a full disk mid-save leaves the previous last.ckpt."""
    from safetensors.torch import save

    from pollenstudio.core.atomic import write_bytes

    tensors = {}
    for k, v in unwrap(model).state_dict().items():
        tensors["model." + k] = v.detach().cpu().contiguous().clone()
    if ema is not None:
        for k, v in ema.module.state_dict().items():
            tensors["ema." + k] = v.detach().cpu().contiguous().clone()
    osd = optimizer.state_dict()
    opt_scalars: dict[str, dict] = {}
    for idx, st in osd["state"].items():
        for name, v in st.items():
            if hasattr(v, "detach"):
                tensors[f"optim.{idx}.{name}"] = v.detach().cpu().contiguous().clone()
            else:
                opt_scalars.setdefault(str(idx), {})[name] = v
    meta = dict(state)
    meta["optimizer_groups"] = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in osd["param_groups"]]
    meta["optimizer_scalars"] = opt_scalars
    meta["ema_updates"] = ema.updates if ema is not None else None
    meta["scaler"] = scaler.state_dict() if scaler is not None and scaler.is_enabled() else None
    write_bytes(path, save(tensors, metadata={"format": STATE_FORMAT, "format_version": str(STATE_VERSION),
                                              "state": json.dumps(meta)}))


def read_train_state(path: Path) -> tuple[dict, dict]:
    """-> (tensors by prefixed name, state dict). Refuses anything but our own format."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training state at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            md = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path.name} is damaged and cannot be resumed from ({exc})") from exc
    if md.get("format") != STATE_FORMAT or int(md.get("format_version", "0")) != STATE_VERSION:
        raise CheckpointError(f"{path.name} is not a PollenStudio training state this version can resume")
    return tensors, json.loads(md["state"])


def _sub(tensors: dict, prefix: str) -> dict:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


# ---------------------------------------------------------------- the trainer
class Trainer:
    """Train a detector on ``train`` samples, validate on ``val`` after each epoch.

    Model source, in order: ``resume`` state in ``work_dir/last.ckpt``; ``base`` checkpoint
    (fine-tuning; another taxon list is fine, see ``load_for_finetune``); else a fresh
    ``model_cfg``. Files written (rank 0 only): ``work_dir/last.ckpt`` every epoch,
    ``work_dir/best.safetensors`` whenever validation fitness improves.
    """

    def __init__(
        self,
        train: list[Sample],
        val: list[Sample],
        class_names: list[str],
        cfg: TrainConfig,
        work_dir: str | os.PathLike,
        model_cfg=None,
        base: str | os.PathLike | None = None,
        progress: Progress | None = None,
        callbacks: dict | None = None,
        dist: DistContext | None = None,
        device=None,
    ):
        self.train_samples, self.val_samples = list(train), list(val)
        self.class_names = list(class_names)
        self.cfg = cfg
        self.work_dir = Path(work_dir)
        self.model_cfg = model_cfg
        self.base = Path(base) if base is not None else None
        self.progress = progress or NullProgress()
        self.dist = dist or DistContext()
        self.device = device
        self.callbacks: dict[str, list] = {e: [] for e in EVENTS}
        for event, fns in (callbacks or {}).items():
            for fn in fns if isinstance(fns, (list, tuple)) else [fns]:
                self.add_callback(event, fn)
        self.model = None
        self.ema: ModelEMA | None = None
        self.optimizer = None
        self.history: list[dict] = []
        self.epoch = 0
        self.start_weights: dict | None = None  # copy of the initial state (tests, provenance)

    # -- callbacks ---------------------------------------------------------------------
    def add_callback(self, event: str, fn) -> None:
        if event not in self.callbacks:
            raise ValueError(f"unknown training event {event!r}; events: {', '.join(EVENTS)}")
        self.callbacks[event].append(fn)

    def _fire(self, event: str, *args) -> None:
        for fn in self.callbacks[event]:
            fn(self, *args)

    @property
    def last_path(self) -> Path:
        return self.work_dir / "last.ckpt"

    @property
    def best_path(self) -> Path:
        return self.work_dir / "best.safetensors"

    # -- setup ---------------------------------------------------------------------------
    def _build_model(self, resume_state):
        import torch

        from pollenstudio.detector.checkpoint import load_for_finetune
        from pollenstudio.detector.config import ModelConfig
        from pollenstudio.detector.model import build_model

        if resume_state is not None:
            tensors, state = resume_state
            mcfg = ModelConfig.from_dict(state["model_config"])
            model = build_model(mcfg)
            model.load_state_dict(_sub(tensors, "model."))
            return model, mcfg
        if self.base is not None:
            torch.manual_seed(self.cfg.seed)  # new class rows get a reproducible init
            model, mcfg, _ = load_for_finetune(self.base, self.class_names)
            if mcfg.imgsz != self.cfg.imgsz:
                mcfg = ModelConfig.from_dict({**mcfg.to_dict(), "imgsz": int(self.cfg.imgsz)})
                model.cfg = mcfg
            return model, mcfg
        mcfg = self.model_cfg or ModelConfig()
        d = mcfg.to_dict()
        d.update(nc=len(self.class_names), class_names=list(self.class_names), imgsz=int(self.cfg.imgsz))
        mcfg = ModelConfig.from_dict(d)
        torch.manual_seed(self.cfg.seed)  # same init on every rank
        return build_model(mcfg), mcfg

    def _optimizer(self, model, n_iters: int):
        """Three groups: decayed weights, BN/1-d weights and biases without decay."""
        import torch

        name = self.cfg.optimizer.lower()
        if name == "auto":
            name = "adamw" if n_iters < 10000 else "sgd"
        lr0 = self.cfg.lr0 if self.cfg.lr0 is not None else (0.002 if name == "adamw" else 0.01)
        decay, no_decay, biases = [], [], []
        for pname, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if pname.endswith(".bias"):
                biases.append(p)
            elif p.ndim <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
        if name == "sgd":
            opt = torch.optim.SGD(no_decay, lr=lr0, momentum=self.cfg.momentum, nesterov=True)
        elif name == "adamw":
            opt = torch.optim.AdamW(no_decay, lr=lr0, betas=(self.cfg.momentum, 0.999), weight_decay=0.0)
        else:
            raise PollenStudioError(f"unknown optimizer {self.cfg.optimizer!r}; use auto, sgd or adamw")
        opt.add_param_group({"params": decay, "weight_decay": self.cfg.weight_decay})
        opt.add_param_group({"params": biases, "weight_decay": 0.0})
        for g in opt.param_groups:
            g["initial_lr"] = lr0
        return opt, name, lr0

    def _lr_factor(self, epoch: float) -> float:
        e, lrf = max(1, self.cfg.epochs), self.cfg.lrf
        if self.cfg.schedule == "linear":
            return (1.0 - epoch / e) * (1.0 - lrf) + lrf
        if self.cfg.schedule == "cosine":
            return ((1.0 - math.cos(epoch * math.pi / e)) / 2.0) * (lrf - 1.0) + 1.0
        raise PollenStudioError(f"unknown LR schedule {self.cfg.schedule!r}; use cosine or linear")

    def _set_lr(self, epoch: int, it: int, n_warm: int, opt_name: str) -> None:
        """Per-iteration LR/momentum: linear warm-up into the per-epoch schedule."""
        lf = self._lr_factor(epoch)
        for j, g in enumerate(self.optimizer.param_groups):
            target = g["initial_lr"] * lf
            if it < n_warm:
                frac = it / max(1, n_warm)
                # SGD: biases start high and come down, weights ramp up from 0. Adam's
                # per-parameter scaling makes a high bias LR destructive, so it ramps too.
                start = self.cfg.warmup_bias_lr if (j == 2 and opt_name == "sgd") else 0.0
                g["lr"] = start + (target - start) * frac
                mom = self.cfg.warmup_momentum + (self.cfg.momentum - self.cfg.warmup_momentum) * frac
                if opt_name == "sgd":
                    g["momentum"] = mom
                else:
                    g["betas"] = (mom, g["betas"][1])
            else:
                g["lr"] = target
                if opt_name == "sgd":
                    g["momentum"] = self.cfg.momentum
                else:
                    g["betas"] = (self.cfg.momentum, g["betas"][1])

    def _loader(self, dataset, epoch: int, shuffle: bool):
        import torch
        from torch.utils.data import DataLoader

        sampler = make_sampler(self.dist, dataset, shuffle, self.cfg.seed)
        if sampler is not None:
            sampler.set_epoch(epoch)
            gen = None
        else:
            gen = torch.Generator().manual_seed(self.cfg.seed * 1000003 + epoch)
        workers = self.cfg.workers
        if workers is None:
            workers = min(8, max(0, (os.cpu_count() or 1) // max(1, self.dist.local_world_size) - 1)) if self.device.type == "cuda" else 0
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            generator=gen,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
        )

    # -- main loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        import torch

        from pollenstudio.detector.checkpoint import save_checkpoint
        from pollenstudio.detector.loss import DetectionLoss
        from pollenstudio.engine.predict import select_device

        cfg, ctx = self.cfg, self.dist
        t0 = time.perf_counter()
        if self.device is None:
            self.device = select_device(cfg.device)
        device = self.device
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        if not self.train_samples:
            raise DatasetError("nothing to train on: no reviewed image is in the training split")

        resume_state = read_train_state(self.last_path) if resume else None
        model, mcfg = self._build_model(resume_state)
        self.model_cfg = mcfg
        model = model.to(device).train()
        frozen = frozen_modules(model, cfg.freeze)
        for m in frozen:
            for p in m.parameters():
                p.requires_grad_(False)
        self.start_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

        ds = TrainDataset(self.train_samples, cfg.imgsz, cfg.augment, seed=cfg.seed)
        n_batches = math.ceil(len(ds) / max(1, ctx.world_size) / cfg.batch)
        n_iters = n_batches * cfg.epochs
        self.optimizer, opt_name, lr0 = self._optimizer(model, n_iters)
        self.ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau) if cfg.ema else None
        use_amp = bool(cfg.amp and device.type == "cuda")
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        loss_fn = DetectionLoss(model)
        start_epoch, best_fit, best_epoch, best_metrics = 0, -1.0, -1, {}
        if resume_state is not None:
            tensors, state = resume_state
            if self.ema is not None and any(k.startswith("ema.") for k in tensors):
                self.ema.module.load_state_dict(_sub(tensors, "ema."))
                self.ema.updates = int(state.get("ema_updates") or 0)
            osd = {"param_groups": state["optimizer_groups"], "state": {}}
            for k, v in tensors.items():
                if k.startswith("optim."):
                    _, idx, name = k.split(".", 2)
                    osd["state"].setdefault(int(idx), {})[name] = v.to(device)
            for idx, st in state.get("optimizer_scalars", {}).items():
                osd["state"].setdefault(int(idx), {}).update(st)
            self.optimizer.load_state_dict(osd)
            if state.get("scaler") and use_amp:
                scaler.load_state_dict(state["scaler"])
            start_epoch = int(state["epoch"]) + 1
            best_fit, best_epoch = float(state["best_fitness"]), int(state["best_epoch"])
            best_metrics = state.get("best_metrics", {})
            self.history = list(state.get("history", []))
        self.model = wrap_model(ctx, model, device)

        n_close = min(cfg.augment.close_mosaic, cfg.epochs // 3)
        n_warm = round(cfg.warmup_epochs * n_batches)
        stopped_early = False
        self._fire("on_train_start")
        total_steps = cfg.epochs * n_batches
        epoch = start_epoch
        try:
            for epoch in range(start_epoch, cfg.epochs):
                self.epoch = epoch
                te = time.perf_counter()
                ds.set_epoch(epoch, mosaic=epoch < cfg.epochs - n_close)
                loader = self._loader(ds, epoch, shuffle=True)
                self.model.train()
                for m in frozen:  # frozen layers keep their batch-norm statistics too
                    m.eval()
                self._fire("on_epoch_start", epoch)
                sums = np.zeros(4)
                nb = 0
                for i, (imgs, targets, _) in enumerate(loader):
                    if any_true(ctx, self.progress.cancelled, device):
                        raise Cancelled("training cancelled by the user")
                    self._set_lr(epoch, i + n_batches * epoch, n_warm, opt_name)
                    x = imgs.to(device, non_blocking=True).float().div_(255.0)
                    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                        out = self.model(x)
                    loss, parts = loss_fn(out, targets.to(device))
                    self.optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if cfg.grad_clip and cfg.grad_clip > 0:
                        scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    scaler.step(self.optimizer)
                    scaler.update()
                    if self.ema is not None:
                        self.ema.update(self.model)
                    lv = float(loss.detach()) / max(1, x.shape[0])
                    sums += [lv, float(parts["box"]), float(parts["dfl"]), float(parts["cls"])]
                    nb += 1
                    done = epoch * n_batches + i + 1
                    self.progress.update(done, total_steps, f"epoch {epoch + 1}/{cfg.epochs} loss {lv:.3f}")
                    self._fire("on_batch_end", epoch, i, n_batches, lv)
                means = all_reduce_mean(ctx, list(sums / max(1, nb)), device)
                metrics = {
                    "epoch": epoch,
                    "loss": means[0],
                    "box": means[1],
                    "dfl": means[2],
                    "cls": means[3],
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "mosaic": bool(ds.mosaic),
                }
                # validation and files on rank 0; the others wait and learn the verdict
                stop = False
                if ctx.is_main:
                    eval_model = self.ema.module if self.ema is not None else copy.deepcopy(unwrap(self.model))
                    if self.val_samples:
                        res = evaluate_model(eval_model, mcfg, self.val_samples, self.class_names, device, cfg.conf, cfg.batch)
                        vm = res.to_dict()
                        metrics.update(map50=res.map50, map50_95=res.map50_95, precision=res.precision, recall=res.recall)
                        self._fire("on_val_end", epoch, res)
                        fit = fitness(vm)
                        if fit > best_fit:
                            best_fit, best_epoch, best_metrics = fit, epoch, vm
                            save_checkpoint(self.best_path, eval_model, mcfg, {"epoch": epoch}, {"metrics": _brief(vm)})
                        elif cfg.patience and epoch - best_epoch >= cfg.patience:
                            stop = True
                    else:  # no validation split (tiny project): the latest weights are the best
                        best_epoch = epoch
                        save_checkpoint(self.best_path, eval_model, mcfg, {"epoch": epoch}, {})
                    metrics["seconds"] = time.perf_counter() - te
                    self.history.append(metrics)
                    save_train_state(
                        self.last_path, self.model, self.ema, self.optimizer, scaler,
                        {"epoch": epoch, "best_fitness": best_fit, "best_epoch": best_epoch, "best_metrics": best_metrics,
                         "history": self.history, "model_config": mcfg.to_dict(), "train_config": cfg.to_dict(),
                         "class_names": self.class_names},
                    )
                barrier(ctx)
                self._fire("on_epoch_end", epoch, metrics)
                if any_true(ctx, stop, device):
                    stopped_early = True
                    break
        except Cancelled:
            self._fire("on_cancel", epoch)
            raise
        result = TrainResult(
            weights=self.best_path if ctx.is_main else None,
            metrics=best_metrics,
            epochs_run=len(self.history) if ctx.is_main else epoch + 1,
            best_epoch=best_epoch,
            history=self.history,
            stopped_early=stopped_early,
            seconds=time.perf_counter() - t0,
            model_config=mcfg.to_dict(),
        )
        self._fire("on_train_end", result)
        return result


def _brief(vm: dict) -> dict:
    return {k: vm[k] for k in ("map50", "map50_95", "precision", "recall") if k in vm}


# ---------------------------------------------------------------- project level
@dataclass
class ProjectTrainResult:
    version_id: int | None  # None on ranks other than 0
    weights: Path | None
    metrics: dict
    result: TrainResult
    n_train_images: int
    n_val_images: int
    run_id: int | None


def resolve_base(project, base) -> tuple[Path | None, int | None]:
    """``base``: None (train from scratch) or a model reference for
    :func:`pollenstudio.engine.models.resolve_model` (version id or name, checkpoint file).
    Returns (checkpoint path, parent version id: only when a version was named)."""
    if base is None or base == "":
        return None, None
    from pollenstudio.engine.models import resolve_model

    r = resolve_model(project, base)
    return r.path, (r.version_id if r.kind == "version" else None)


@dataclass
class TrainPlan:
    """What a training of a project will learn, in words for the CLI and the dashboard."""

    class_names: list[str]  # the new model's classes, in order
    grains: dict[str, int]  # reviewed grains per class
    unidentified: int  # reviewed grains left "pollen" that train boxes only
    images: int  # reviewed images
    base_classes: list[str] | None  # the base model's classes (None: from scratch)
    frame: tuple[int, int] = (640, 640)  # median reviewed frame (width, height)
    recipe: object = None  # engine.recipe.Recipe: what "Auto" chose (set by engine.recipe.auto_plan)
    val_images: int | None = None  # reviewed images the split holds out for validation (the default fraction)

    def describe(self) -> str:
        from pollenstudio.core.types import GRAIN_CLASS as UNIDENTIFIED

        taxa = ", ".join(f"{n} {self.grains.get(n, 0)}" for n in self.class_names)
        if self.class_names == [UNIDENTIFIED]:
            what = f"a grain model: finds pollen grains, names none ({self.grains.get(UNIDENTIFIED, 0)} grains)"
        else:
            what = f"{len(self.class_names)} taxa ({taxa})"
        lines = [f"Learns {what} from {self.images} reviewed images."]
        if self.unidentified and self.class_names != [UNIDENTIFIED]:
            lines.append(f"{self.unidentified} unidentified grains (\"{UNIDENTIFIED}\") teach where grains are, not a taxon.")
        detector_learns = self.recipe is None or self.recipe.stage == "detector"
        if self.base_classes is not None and detector_learns:
            if self.base_classes == [UNIDENTIFIED] and self.class_names != [UNIDENTIFIED]:
                lines.append("Grows the grain model into these taxa: it keeps what it knows about finding grains.")
            else:
                new = [n for n in self.class_names if n not in self.base_classes]
                if new:
                    lines.append(f"New to the base model: {', '.join(new)}.")
        if self.recipe is not None:
            lines.append(self.recipe.describe())
        return " ".join(lines)


def plan_training(project, base=None) -> TrainPlan:
    """The class list, grain counts and base of a training of ``project`` from ``base``
    (``engine.recipe.auto_plan`` adds the auto recipe)."""
    base_path, _ = resolve_base(project, base)
    base_classes = None
    if base_path is not None:
        from pollenstudio.detector.checkpoint import read_checkpoint

        base_classes = list(read_checkpoint(base_path)[0].class_names)
    data = data_from_project(project, base_classes)
    counts = {n: 0 for n in data.class_names}
    unidentified = 0
    for smp in data.samples:
        for c in smp.classes.tolist():
            if c < 0:
                unidentified += 1
            else:
                counts[data.class_names[c]] += 1
    frame = (640, 640)
    if data.samples:
        frame = (int(np.median([s.width for s in data.samples])), int(np.median([s.height for s in data.samples])))
    val_images = len(split_samples(data.samples, TrainConfig().val_fraction)[1])
    return TrainPlan(list(data.class_names), counts, unidentified, len(data.samples), base_classes, frame,
                     val_images=val_images)


def _run_folder(project, run) -> Path | None:
    """A training run's work folder (``models/runs/train-*``), None when its record names
    anything else (never remove what a crafted record points at)."""
    wd = run.params.get("work_dir")
    if not isinstance(wd, str) or not wd:
        return None
    runs = (Path(project.folder) / "models" / "runs").resolve()
    p = (Path(project.folder) / wd).resolve()
    return p if p.parent == runs and p.name.startswith("train-") else None


def remove_unresumable_runs(project) -> list[tuple]:
    """Remove the work folders of stopped training runs that hold no training state: a run
    killed, crashed or out of disk before its first epoch ended leaves a best.safetensors that
    nothing resumes from or registers (12 MB and more, for ever). Runs still running, and
    runs with a ``last.ckpt`` (resumable), are left alone. Returns [(run, bytes freed)]."""
    out = []
    for run in project.runs("train"):
        if run.status == "running":
            continue
        p = _run_folder(project, run)
        if p is None or not p.is_dir() or (p / "last.ckpt").is_file():
            continue
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            out.append((run, size))
    return out


def _interrupted_run(project):
    for run in reversed(project.runs("train")):
        wd = run.params.get("work_dir")
        if run.status != "done" and wd and (Path(project.folder) / wd / "last.ckpt").is_file():
            return run
    return None


def readable_version_name(project, when: float | None = None) -> str:
    """"2026-05-14 · 36 reviewed images": the date and what the model learnt from, in words
    a palynologist reads at a glance ("v2 full-n" said nothing); unique in the project
    ("... (2)"), renameable (``Project.rename_model_version``, the dashboard's Rename).
    The training dashboard names its versions so; ``pollenstudio train`` keeps "vN variant"
    unless given --name."""
    from datetime import datetime

    from pollenstudio.core.types import ReviewStatus

    n = project.image_count(ReviewStatus.REVIEWED)
    day = datetime.fromtimestamp(when if when is not None else time.time()).strftime("%Y-%m-%d")
    return project.unique_model_version_name(f"{day} · {n} reviewed image{'s' if n != 1 else ''}")


def train_project(
    project,
    cfg: TrainConfig,
    model_cfg=None,
    base=None,
    activate: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
    callbacks: dict | None = None,
    dist: DistContext | None = None,
    device=None,
    name: str | None = None,
    stage: str = "detector",
) -> ProjectTrainResult:
    """Train on the project's reviewed annotations and register a model version.

    ``base``: model version id or checkpoint file to fine-tune from (its taxon list may
    differ from the project's; base taxa the project does not have are dropped). ``resume``:
    continue the latest interrupted training run of this project from its ``last.ckpt``.
    The new version becomes active only with ``activate=True``. Multi-process (``dist``):
    every rank calls this; rank 0 writes.

    ``stage`` (see :mod:`pollenstudio.engine.recipe`): "detector" trains the detector on the
    taxa; "classifier" keeps the base detector and fits a taxon classifier on crops of the
    reviewed grains (seconds; needs ``base``); "both" fine-tunes the detector as a grain
    finder (every grain one class), then fits the classifier on its features. A version
    with a classifier is one file (detector + classifier); its taxa are the project's
    taxa that have reviewed grains.
    """
    if stage not in ("detector", "classifier", "both"):
        raise PollenStudioError(f"unknown training stage {stage!r}; use detector, classifier or both")
    if name is not None:  # refused before the training, not after it
        from pollenstudio.core.names import check_name

        name = check_name(name, "model version name")
    if stage == "classifier":
        if resume:
            raise ProjectError("a classifier-only training has nothing to resume; start a new one")
        return _train_classifier_only(project, cfg, base, activate, progress, dist, device, name)
    ctx = dist or DistContext()
    progress = progress or NullProgress()
    folder = Path(project.folder)
    parent_id = None
    base_path = None
    old_run = None
    removed = remove_unresumable_runs(project) if ctx.is_main else []
    if resume:
        old_run = _interrupted_run(project)
        if old_run is None:
            if removed:
                run, size = max(removed, key=lambda r: r[0].id)
                raise ProjectError(
                    f"the last unfinished training (run {run.id}) stopped before it finished its first epoch, so it "
                    f"saved nothing to resume from; its unfinished files ({size / 1e6:.1f} MB) were removed. "
                    "Start a new training.")
            raise ProjectError("there is no interrupted training in this project to resume; start a new one")
        cfg = TrainConfig.from_dict({**old_run.params.get("train", {}), **_resume_overrides(cfg)})
        parent_id = old_run.params.get("parent_id")
        class_names = old_run.params.get("class_names")
    else:
        base_path, parent_id = resolve_base(project, base)
        class_names = None
        if base_path is not None:
            from pollenstudio.detector.checkpoint import read_checkpoint

            class_names = list(read_checkpoint(base_path)[0].class_names)
            # the new model's taxa are the project's: base taxa the project lacks are dropped
            have = {c.name for c in project.categories()}
            class_names = [n for n in class_names if n in have] or None
    data: DetectionData = data_from_project(project, class_names)
    named_data = data
    if stage == "both":
        if data.n_objects:  # (no grain at all is said below)
            _check_named_grains(named_data)  # before hours of training, not after
        data = _as_grain_data(data)
    if not data.samples or data.n_objects == 0:
        counts = project.status_counts()
        raise DatasetError(
            "nothing to train on: the project has no reviewed image with grains "
            f"({counts.get(_rs('reviewed'), 0)} reviewed, {counts.get(_rs('in_review'), 0)} in review). "
            "Accept, edit or draw boxes and finish reviewing some images first."
        )
    if resume and data.class_names != list(class_names):
        raise ProjectError("taxa were added since the interrupted training; start a new training instead of resuming")
    missing = [s for s in data.samples if not Path(s.path).is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} reviewed image file(s) are missing (e.g. {missing[0].path}); "
            "point the project at their new folder (relink) before training; nothing was trained"
        )
    train_s, val_s = split_samples(data.samples, cfg.val_fraction)

    run_id = None
    work_dir = None
    if ctx.is_main:
        wd = old_run.params["work_dir"] if old_run else f"models/runs/train-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        params = {
            "train": cfg.to_dict(),
            "model": model_cfg.to_dict() if model_cfg is not None else None,
            "base": str(base_path) if base_path else None,
            "parent_id": parent_id,
            "class_names": data.class_names,
            "resumed_from_run": old_run.id if old_run else None,
            "world_size": ctx.world_size,
            "work_dir": wd,  # where last.ckpt lives, so a later --resume finds it
        }
        run_id = project.start_run("train", params)
        work_dir = str(folder / wd)
    work_dir = broadcast_object(ctx, work_dir)
    trainer = Trainer(train_s, val_s, data.class_names, cfg, work_dir, model_cfg=model_cfg, base=base_path,
                      progress=progress, callbacks=callbacks, dist=ctx, device=device)
    try:
        result = trainer.fit(resume=resume)
    except (Cancelled, KeyboardInterrupt):
        if ctx.is_main:  # last.ckpt stays: `--resume` continues from the last finished epoch
            project.finish_run(run_id, "cancelled", {"epochs_done": len(trainer.history)})
        raise
    except BaseException as exc:
        if ctx.is_main:
            try:
                project.finish_run(run_id, "failed", {"error": str(exc)})
            except PollenStudioError:
                pass  # a full disk may refuse this too: the run reads "interrupted" on the next open
            if is_disk_full(exc):
                kept = Path(work_dir, "last.ckpt").is_file()
                raise WriteError(
                    f"{exc}. Training stopped; the project is unchanged. " + (
                        "The state of the last finished epoch is kept: free some space, then continue with "
                        "`pollenstudio train --resume`." if kept else "Free some space, then start the training again.")
                ) from None
        raise

    version_id = weights = None
    if ctx.is_main:
        from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint

        models = folder / "models"
        models.mkdir(parents=True, exist_ok=True)
        n = len(project.model_versions()) + 1
        stamp = time.strftime("%Y%m%d-%H%M%S")
        weights = models / f"v{n}-{stamp}-run{run_id}.safetensors"
        model, mcfg, _ = load_checkpoint(result.weights)
        summary = {
            "epochs": result.epochs_run,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "seconds": round(result.seconds, 1),
            "train_images": len(train_s),
            "val_images": len(val_s),
            "val_image_ids": [s.image_id for s in val_s],
            "grains": data.n_objects,
            "run_id": run_id,
            "world_size": ctx.world_size,
            "history": result.history,
        }
        from pollenstudio.engine.scale import grain_size_range

        # the grain sizes this model has seen (model-input px): calibrated detection aims there
        grain_px = grain_size_range(train_s, cfg.imgsz)
        summary["grain_size_px"] = grain_px
        extra = None
        if stage == "both":
            names, items = _classifier_items(project, named_data)  # rejections teach "not pollen" here too
            clf = _fit_classifier(model, items, names, device, progress)
            extra = clf.to_extra()
            summary["classifier"] = {"taxa": clf.class_names, "kind": clf.kind, "features": clf.spec.features}
        save_checkpoint(weights, model, mcfg, {"parent_id": parent_id, "run_id": run_id, "project": project.name,
                                               "grain_size_px": grain_px},
                        {"metrics": _brief(result.metrics), "epochs": result.epochs_run}, extra=extra)
        version_id = project.add_model_version(
            name or f"v{n} {mcfg.variant_name}-{mcfg.scale}",
            weights,
            metrics=result.metrics,
            config={"model": mcfg.to_dict(), "train": cfg.to_dict()},
            parent_id=parent_id,
            annotation_ids=data.annotation_ids,
            summary=summary,
            activate=activate,
        )
        project.finish_run(run_id, "done", {"version_id": version_id, **_brief(result.metrics)})
        # keep the finished run's folder small: the state is only needed to resume
        if result.weights is not None and Path(work_dir, "last.ckpt").is_file():
            Path(work_dir, "last.ckpt").unlink()
        shutil.rmtree(Path(work_dir), ignore_errors=True)
    barrier(ctx)
    return ProjectTrainResult(version_id, weights, result.metrics, result, len(train_s), len(val_s), run_id)


def _as_grain_data(data: DetectionData) -> DetectionData:
    """Every reviewed grain one class ("pollen"): what a grain finder learns from."""
    from dataclasses import replace

    from pollenstudio.core.types import GRAIN_CLASS

    samples = [replace(s, classes=np.zeros(len(s.classes), np.int64)) for s in data.samples]
    return DetectionData(samples, [GRAIN_CLASS], [None])


def _fit_classifier(model, items, class_names, device=None, progress=None):
    """A taxon classifier on ``items`` (:func:`_classifier_items`)."""
    from pollenstudio.engine.classify import train_classifier

    dev = device if device is not None else "cpu"
    return train_classifier(model.to(dev).eval(), items, class_names, device=dev, progress=progress)


def _score_classifier(model, mcfg, meta, clf, val, device, class_names) -> dict:
    """Validation metrics of detector + classifier on held-out reviewed images, over the
    project's taxa ``class_names`` (a taxon the classifier was never shown scores 0)."""
    from pollenstudio.engine.evaluate import ImagePreds, ImageTruth, evaluate_detections
    from pollenstudio.engine.predict import Predictor

    if not val:
        return {}
    pred = Predictor(model, mcfg, device=device or "cpu", conf=0.001, meta=meta, taxa=clf, fuse=False)
    pred.merge_same_grain = False  # the COCO protocol of `pollenstudio eval`
    index = {n: i for i, n in enumerate(class_names)}
    truths, preds = [], []
    for s, r in zip(val, pred.iter_predict([s.path for s in val])):
        # grains of taxa the classifier never saw (or unnamed ones) cannot be scored by name
        keep = np.array([0 <= c for c in s.classes], bool).reshape(-1)
        truths.append(ImageTruth(boxes=s.boxes[keep], classes=s.classes[keep], width=s.width, height=s.height))
        # a grain flagged as an unknown taxon or withdrawn as "not pollen" names no taxon: a miss
        named = [d for d in r.detections if d.label in index and not d.withdrawn]
        b = np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in named], np.float64).reshape(-1, 4)
        preds.append(ImagePreds(boxes=b, scores=np.array([d.score for d in named]),
                                classes=np.array([index[d.label] for d in named], np.int64)))
    return evaluate_detections(truths, preds, list(class_names)).to_dict()


MIN_REJECTED = 5  # rejected proposals needed before the classifier learns a "not pollen" class


def _classifier_items(project, data: DetectionData):
    """(class names, items) for the taxon classifier: each reviewed image's grains with their
    annotation ids, plus the proposals a person rejected there as :data:`NOT_POLLEN` (when
    there are at least MIN_REJECTED of them; proposals the classifier itself withdrew never
    count)."""
    from pollenstudio.core.types import WITHDRAWN_BY_MODEL, AnnotationStatus
    from pollenstudio.engine.classify import NOT_POLLEN

    rejected = {}
    for s in data.samples:
        if s.image_id is None or s.is_stack:
            continue
        boxes = [(a.id, a.box) for a in project.annotations(s.image_id)
                 if a.status is AnnotationStatus.REJECTED and a.author != WITHDRAWN_BY_MODEL]
        if boxes:
            rejected[s.image_id] = boxes
    names = list(data.class_names)
    n_rej = sum(len(v) for v in rejected.values())
    items = []
    if n_rej >= MIN_REJECTED:
        names.append(NOT_POLLEN)
    for s in data.samples:
        ids = list(s.annotation_ids) if len(s.annotation_ids) == len(s.classes) else [-1] * len(s.classes)
        src = s.eval_source()
        if n_rej >= MIN_REJECTED and s.image_id in rejected:
            rb = np.array([[b.x1, b.y1, b.x2, b.y2] for _, b in rejected[s.image_id]], np.float32)
            items.append((src, np.concatenate([np.asarray(s.boxes, np.float32).reshape(-1, 4), rb]),
                          np.concatenate([s.classes, np.full(len(rb), len(names) - 1, np.int64)]),
                          ids + [i for i, _ in rejected[s.image_id]]))
        else:
            items.append((src, s.boxes, s.classes, ids))
    return names, items


def _check_named_grains(data: DetectionData) -> None:
    """A taxon classifier learns taxa from reviewed grains that carry one: refuse in words
    when none does. Unidentified grains ("unidentified", "pollen": the grain model's class)
    name no taxon; a classifier of them alone would call every grain "pollen"."""
    from pollenstudio.core.types import is_unassigned_taxon

    real = [i for i, n in enumerate(data.class_names) if not is_unassigned_taxon(n)]
    if any(np.isin(s.classes, real).any() for s in data.samples):
        return
    if data.n_objects:
        raise DatasetError(
            f"name some grains first: all {data.n_objects} reviewed grain(s) are still unidentified "
            "(\"unidentified\" or \"pollen\"), so a taxon classifier would learn no taxon. Name grains with 1-9 / T in the review window and finish "
            "reviewing those images; nothing was trained.")
    raise DatasetError("nothing to learn taxa from: no reviewed grain carries a taxon. Name grains with 1-9 / T "
                       "and finish reviewing some images first.")


def _train_classifier_only(project, cfg: TrainConfig, base, activate, progress, dist, device, name) -> ProjectTrainResult:
    """Stage "classifier": the base detector unchanged + a taxon classifier, one new version."""
    from dataclasses import replace

    from pollenstudio.detector.checkpoint import load_checkpoint, save_checkpoint
    from pollenstudio.engine.classify import ClassifierError
    from pollenstudio.engine.predict import select_device

    ctx = dist or DistContext()
    progress = progress or NullProgress()
    base_path, parent_id = resolve_base(project, base)
    if base_path is None:
        raise ProjectError("a taxon classifier needs a detector to find the grains: choose a base model "
                           "(the grain model, or a version of this project)")
    data = data_from_project(project, None)
    _check_named_grains(data)
    missing = [s for s in data.samples if not Path(s.path).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} reviewed image file(s) are missing (e.g. {missing[0].path}); "
                           "point the project at their new folder (relink) before training; nothing was trained")
    t0 = time.perf_counter()
    dev = device if device is not None else select_device(cfg.device)
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    model, mcfg, meta = load_checkpoint(base_path, device=dev)
    train_s, val_s = split_samples(data.samples, cfg.val_fraction)
    val_ids = {id(s) for s in val_s}
    metrics: dict = {}
    if not ctx.is_main:
        return ProjectTrainResult(None, None, {}, TrainResult(None, {}, 0, -1, []), len(train_s), len(val_s), None)
    run_id = project.start_run("train", {"train": cfg.to_dict(), "stage": "classifier", "base": str(base_path),
                                         "parent_id": parent_id, "class_names": data.class_names})
    try:
        from pollenstudio.engine.classify import embed_items, fit_embedded

        model.to(dev).eval()
        # rejected proposals (debris, diatoms, spores, bubbles) teach "not pollen"
        names, items = _classifier_items(project, data)
        embedded = embed_items(model, items, device=dev, progress=progress)
        # scored on a held-out split (a classifier fitted without those images), then refitted
        # on every reviewed grain: a few-shot classifier cannot spare a quarter of a small
        # project's grains. The stored metrics are the held-out ones; later scoring of the
        # version on those images (eval, the comparison) sees grains its classifier learnt from.
        if train_s and val_s:
            try:
                held = fit_embedded([e for s, e in zip(data.samples, embedded) if id(s) not in val_ids], names)
                metrics = _score_classifier(model, mcfg, meta, held, val_s, dev, data.class_names)
            except ClassifierError:
                metrics = {}
        clf = fit_embedded(embedded, names)
    except (Cancelled, KeyboardInterrupt):
        project.finish_run(run_id, "cancelled", {})
        raise
    except BaseException as exc:
        project.finish_run(run_id, "failed", {"error": str(exc)})
        raise
    seconds = time.perf_counter() - t0
    folder = Path(project.folder)
    models = folder / "models"
    models.mkdir(parents=True, exist_ok=True)
    n = len(project.model_versions()) + 1
    weights = models / f"v{n}-{time.strftime('%Y%m%d-%H%M%S')}-run{run_id}.safetensors"
    keep = {k: meta[k] for k in ("grain_size_px",) if k in meta}
    save_checkpoint(weights, model, mcfg, {"parent_id": parent_id, "run_id": run_id, "project": project.name, **keep},
                    {"metrics": _brief(metrics), "epochs": 0, "stage": "classifier"}, extra=clf.to_extra())
    summary = {"stage": "classifier", "seconds": round(seconds, 1), "train_images": len(train_s), "val_images": len(val_s),
               "val_image_ids": [s.image_id for s in val_s], "grains": data.n_objects, "run_id": run_id,
               "classifier": {"taxa": clf.class_names, "kind": clf.kind, "features": clf.spec.features,
                              "grains": dict(zip(clf.class_names, clf.counts)),
                              "fitted_on": "every reviewed image" + (" (scored first on a held-out split fitted without it)"
                                                                     if metrics else ""),
                              "unknown_below": clf.unknown_below},
               "grain_size_px": meta.get("grain_size_px")}
    cfg_used = replace(cfg, epochs=0)
    version_id = project.add_model_version(
        name or f"v{n} classifier on {Path(base_path).stem}", weights, metrics=metrics,
        config={"model": mcfg.to_dict(), "train": cfg_used.to_dict(), "stage": "classifier"}, parent_id=parent_id,
        annotation_ids=data.annotation_ids, summary=summary, activate=activate)
    project.finish_run(run_id, "done", {"version_id": version_id, **_brief(metrics)})
    result = TrainResult(weights, metrics, 0, -1, [], False, seconds, mcfg.to_dict())
    return ProjectTrainResult(version_id, weights, metrics, result, len(train_s), len(val_s), run_id)


def _rs(name: str):
    from pollenstudio.core.types import ReviewStatus

    return ReviewStatus(name)


def _resume_overrides(cfg: TrainConfig) -> dict:
    """What a resume may change: where it runs, not what it learns."""
    return {"device": cfg.device, "workers": cfg.workers, "threads": cfg.threads}

"""torch.distributed glue for multi-process training launched by torchrun.

``torchrun --nproc_per_node=K -m pollenstudio train PROJECT`` starts K copies of the
command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR/PORT`` in the
environment. :func:`init_from_env` turns that into a :class:`DistContext` (NCCL when each
process has a GPU, Gloo on CPU); without those variables it is a single-process context
and every helper here is a no-op, so the Trainer has one code path.

Only rank 0 writes files (checkpoints, the model version in the project); the others
wait at a barrier so nobody reads a half-written file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from pollenstudio.core.errors import PollenStudioError


class DistributedError(PollenStudioError):
    """The multi-process launch is misconfigured (e.g. more processes than GPUs)."""


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None  # "nccl" | "gloo" | None (single process)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device: str | None = "auto", timeout_s: float = 1800.0) -> tuple[DistContext, "object"]:
    """Read torchrun's variables, start the process group, pick this rank's device.

    Returns (context, torch.device). ``device``: "auto" (a GPU per process when there are
    enough, else CPU), "cpu", or "cuda". Single-process launches return a context with
    world_size 1 and ``select_device(device)``.
    """
    import torch
    import torch.distributed as dist

    from pollenstudio.engine.predict import select_device

    world = env_world_size()
    if world <= 1:
        return DistContext(), select_device(device)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    want = (device or "auto").lower()
    use_cuda = torch.cuda.is_available() and want != "cpu"
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise DistributedError("CUDA was requested but this PyTorch sees no GPU; use --device cpu")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"process {local_rank} has no GPU: {local_world} processes per node but "
                f"{torch.cuda.device_count()} GPUs; lower --nproc_per_node"
            )
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        dev = torch.device("cpu")
        backend = "gloo"
        # share the cores between the processes on this node instead of oversubscribing
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    if not dist.is_initialized():
        kw = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s), **kw)
    return DistContext(rank, world, local_rank, local_world, backend), dev


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if ctx.backend == "nccl":
            import torch

            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def any_true(ctx: DistContext, flag: bool, device) -> bool:
    """True on every rank when ``flag`` is true on any rank (cancel, early stop)."""
    if not ctx.enabled:
        return bool(flag)
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(ctx: DistContext, obj, src: int = 0):
    """Send a small JSON-able object (epoch decisions, metrics) from ``src`` to every rank."""
    if not ctx.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(ctx: DistContext, values: list[float], device) -> list[float]:
    """Average a few floats (loss logs) over ranks."""
    if not ctx.enabled:
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / ctx.world_size).tolist()


def wrap_model(ctx: DistContext, model, device):
    """DistributedDataParallel on multi-process runs (BatchNorm synchronised on GPUs)."""
    if not ctx.enabled:
        return model
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    if ctx.backend == "nccl":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DDP(model, device_ids=[device.index], output_device=device.index)
    return DDP(model)


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def make_sampler(ctx: DistContext, dataset, shuffle: bool, seed: int):
    """DistributedSampler on multi-process runs (each rank sees its own shard), else None."""
    if not ctx.enabled:
        return None
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed, drop_last=False)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

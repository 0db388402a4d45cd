"""torch.distributed helpers for ``torchrun --nproc_per_node N edge train ...``.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in every
process; ``init_distributed`` reads them and joins the process group (gloo on CPU, NCCL on GPUs). With
no such environment it returns a single-process context and torch.distributed is never touched.

Only rank 0 writes files and logs progress (``DistContext.is_main``).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import nn

from edge.errors import EdgeError

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process stands: rank among world_size processes, its device, the backend in use."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_context() -> DistContext:
    """Rank, world size and local rank from torchrun's environment (1 process when unset)."""

    def read(name: str, default: int) -> int:
        value = os.environ.get(name)
        if value in (None, ""):
            return default
        try:
            return int(value)
        except ValueError:
            raise EdgeError(f"environment variable {name}={value!r}: expected an integer (set by torchrun)") from None

    world = read("WORLD_SIZE", 1)
    rank = read("RANK", 0)
    local = read("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise EdgeError(f"RANK={rank}, WORLD_SIZE={world}: expected 0 <= RANK < WORLD_SIZE (launch with torchrun)")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def resolve_device(request: str, local_rank: int = 0) -> str:
    """``cpu`` / ``cuda`` / ``cuda:N`` -> a concrete device string; EdgeError when CUDA is asked but absent."""
    if request == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise EdgeError(
            f"--device {request} asked for CUDA, but torch {torch.__version__} sees no CUDA device "
            "(no GPU, no driver, or a CPU-only torch build); use --device cpu or install a CUDA build of torch"
        )
    if request == "cuda":
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return request


def init_distributed(device_request: str = "cpu", timeout_minutes: float = 120.0) -> DistContext:
    """Join the process group when launched by torchrun; otherwise a single-process context.

    Backend: NCCL for CUDA devices, gloo on CPU. The timeout covers rank 0's validation, during which the
    other ranks wait at a barrier.
    """
    ctx = env_context()
    ctx.device = resolve_device(device_request, ctx.local_rank)
    if not ctx.distributed:
        return ctx
    import torch.distributed as dist

    if not dist.is_available():
        raise EdgeError("this torch build has no torch.distributed; train with one process or install torch with it")
    ctx.backend = "nccl" if ctx.device.startswith("cuda") else "gloo"
    if ctx.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(ctx.device))
    if not dist.is_initialized():
        dist.init_process_group(
            backend=ctx.backend,
            init_method="env://",
            rank=ctx.rank,
            world_size=ctx.world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    log.info("rank %d/%d joined the %s process group on %s", ctx.rank, ctx.world_size, ctx.backend, ctx.device)
    return ctx


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        if ctx.backend == "nccl":
            dist.barrier(device_ids=[torch.device(ctx.device).index or 0])
        else:
            dist.barrier()


def cleanup(ctx: DistContext) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_mean(values: Dict[str, float], ctx: DistContext) -> Dict[str, float]:
    """Average a dict of floats over all ranks (same keys on every rank); identity with one process."""
    if not ctx.distributed or not values:
        return dict(values)
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= ctx.world_size
    return dict(zip(keys, t.tolist()))


def broadcast_buffers(model: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP all-reduces gradients, so parameters agree on every rank, but each rank's BatchNorm statistics
    see only its own images; call this before saving or comparing states.
    """
    if not ctx.distributed:
        return
    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf.data, src=src)


def state_hashes(model: nn.Module) -> Dict[str, str]:
    """sha256 of the model's parameters and of its buffers (name, dtype, shape and bytes, in order)."""
    out = {}
    for kind, items in (("params", model.named_parameters()), ("buffers", model.named_buffers())):
        digest = hashlib.sha256()
        for name, tensor in items:
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
        out[kind] = digest.hexdigest()
    return out

"""Data-parallel training over several processes, GPUs and machines, on PyTorch's own engine.

`torchrun` starts K copies of `python -m labkit train ...` and tells each, through the environment, who it is
(RANK, WORLD_SIZE, LOCAL_RANK) and where to meet (MASTER_ADDR, MASTER_PORT). `session()` reads that, joins the
process group (`nccl` on CUDA, `gloo` on CPU), pins rank r of a machine to GPU LOCAL_RANK, and leaves the group at
the end. Started plainly (or by torchrun with one process) there is no process group at all and every helper
here is the identity, so one code path serves both.

In a distributed run every rank holds the whole (device-resident) dataset and trains on its own shard of each
epoch's shared permutation; `wrap()` puts the model under DistributedDataParallel, which averages the gradients.
Evaluation is sharded too: rank r scores test rows r, r+K, ... and the confusion counts are summed over ranks, so
the metrics are those of the whole test set while each rank does 1/K of the work.

Batch norm: `--sync-bn` computes the batch statistics over the global batch (all ranks) instead of each rank's
shard. On CUDA that is `torch.nn.SyncBatchNorm`; its forward has no CPU kernels (in torch 2.x it refuses
non-GPU input), so on CPU (gloo) labkit's own `SyncBatchNorm` below does the same with differentiable
all-reduces.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..core.device import resolve_device
from ..core.errors import LabkitError
from ..sla.inference import ModeResult

__all__ = ["Launch", "TORCHRUN_VARS", "launch_from_env", "device_for", "session", "is_distributed", "rank",
           "world_size", "is_main", "barrier", "all_reduce", "broadcast_buffers", "on_main", "main_first", "shard",
           "reduce_results", "wrap", "convert_sync_batchnorm", "SyncBatchNorm"]

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch."""

    rank: int  # 0 .. world_size-1 over all machines
    world_size: int  # processes over all machines
    local_rank: int  # 0 .. processes on this machine - 1; picks the GPU
    master: str  # "addr:port" of the rendezvous


# ------------------------------------------------------------------------------------------------------ the launch
def launch_from_env(env: dict[str, str] | None = None) -> Launch | None:
    """The torchrun launch described by the environment, or None when the process was started plainly."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return None
    missing = [k for k in TORCHRUN_VARS if k not in env]
    if missing:
        raise LabkitError(f"WORLD_SIZE is set but {', '.join(missing)} is not; start distributed runs with "
                          f"torchrun (it sets {', '.join(TORCHRUN_VARS)})")
    values = {k: _env_int(env, k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if not 0 <= values["RANK"] < values["WORLD_SIZE"]:
        raise LabkitError(f"RANK must be in [0, WORLD_SIZE={values['WORLD_SIZE']}), got {values['RANK']}")
    return Launch(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"],
                  f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}")


def _env_int(env: dict[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise LabkitError(f"environment variable {name} must be an integer, got {env[name]!r}") from None


def device_for(launch: Launch | None, name: str) -> torch.device:
    """`resolve_device(name)`, pinned to GPU LOCAL_RANK (and made current) when torchrun started us on CUDA."""
    device = resolve_device(name)
    if device.type != "cuda" or launch is None:
        return device
    count = torch.cuda.device_count()
    if launch.local_rank >= count:
        raise LabkitError(f"LOCAL_RANK {launch.local_rank} needs GPU {launch.local_rank} but only {count} are "
                          f"visible; use --nproc_per_node <= {count} (or set CUDA_VISIBLE_DEVICES)")
    device = torch.device("cuda", launch.local_rank)
    torch.cuda.set_device(device)
    return device


@contextmanager
def session(device_name: str = "auto") -> Iterator[torch.device]:
    """The training device; under torchrun with K > 1 processes, inside the process group for the block.

    The group is joined only if no one has joined it yet, and then it is left on the way out (after a barrier on
    success, so no rank leaves while another still needs it). A plain start yields the device and nothing else.
    """
    launch = launch_from_env()
    device = device_for(launch, device_name)
    owns = launch is not None and launch.world_size > 1 and not is_distributed()
    if owns:
        _join(launch, device)
    try:
        yield device
        if owns:
            barrier()
    finally:
        if owns:
            dist.destroy_process_group()


_groups_joined = 0  # by this process; a group made again after one was destroyed needs fresh rendezvous keys


def _join(launch: Launch, device: torch.device) -> None:
    """Join the default group through torchrun's store, under a key prefix used once: with the default
    prefix, a second group in the same process can read the first one's stale addresses and fail to connect."""
    global _groups_joined
    _groups_joined += 1
    store, _, _ = next(dist.rendezvous("env://", launch.rank, launch.world_size))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=launch.rank,
                            world_size=launch.world_size, store=dist.PrefixStore(f"labkit/{_groups_joined}", store),
                            device_id=device if device.type == "cuda" else None)


# --------------------------------------------------------------------------------------------------- who am I
def is_distributed() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 of the group; outside a group, torchrun's RANK 0 (or a plain process): the one that writes files."""
    if is_distributed():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


# ---------------------------------------------------------------------------------------------- communication
def _comm_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo works on the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    """`t` reduced over all ranks ('sum', 'max' or 'min'), as a new tensor on t's device; `t` when alone."""
    if not is_distributed():
        return t
    buf = t.detach().to(_comm_device()).clone()
    dist.all_reduce(buf, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return buf.to(t.device)


@torch.no_grad()
def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics), as DDP does before each forward: after
    the last step of an epoch each rank still holds the update from its own shard, so without this the ranks
    would evaluate with different statistics than the checkpoint (rank 0's) holds."""
    if is_distributed():
        for b in model.buffers():
            dist.broadcast(b, src=0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def on_main(fn: Callable[..., Any], *args: Any) -> None:
    """Run `fn(*args)` on rank 0 only; a `LabkitError` it raises is raised on every rank, so none is left
    waiting in a collective for a rank that gave up."""
    if is_distributed():
        _main_then_tell(fn, args)
    else:
        fn(*args)


def main_first(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` on rank 0 first, then on the other ranks, returning its result on each: rank 0 downloads or
    builds what the others then only read (no two processes download into one folder). Errors as `on_main`."""
    if not is_distributed():
        return fn(*args)
    result = _main_then_tell(fn, args)
    return result if rank() == 0 else fn(*args)


def _main_then_tell(fn: Callable[..., Any], args: tuple) -> Any:
    result, box = None, [None]
    if rank() == 0:
        try:
            result = fn(*args)
        except LabkitError as e:
            box[0] = str(e)
    dist.broadcast_object_list(box, src=0)  # also the barrier the other ranks wait at
    if box[0] is not None:
        raise LabkitError(box[0])
    return result


# ----------------------------------------------------------------------------------------------- evaluation
def shard(t: Tensor, rank_: int | None = None, world_size_: int | None = None) -> Tensor:
    """Rows rank, rank+K, ... of `t` (K = world size): every row in exactly one shard, none dropped."""
    r = rank() if rank_ is None else rank_
    k = world_size() if world_size_ is None else world_size_
    return t if k == 1 else t[r::k]


def reduce_results(results: dict[str, ModeResult]) -> dict[str, ModeResult]:
    """Per-shard `evaluate()` results -> whole-split results: confusion counts summed over ranks, accuracy
    recomputed from them, wall time of the slowest rank. `probabilities` stay this rank's shard."""
    if not is_distributed():
        return results
    out = {}
    for mode, r in results.items():  # same modes in the same order on every rank
        confusion = all_reduce(r.confusion)
        seconds = float(all_reduce(torch.tensor(r.seconds, dtype=torch.float64), op="max"))
        accuracy = float(confusion.diagonal().sum()) / max(int(confusion.sum()), 1)
        out[mode] = ModeResult(accuracy, confusion, r.probabilities, seconds)
    return out


# ---------------------------------------------------------------------------------------------------- models
def wrap(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """DistributedDataParallel over the group (batch norm synchronised first if `sync_bn`); `model` when alone."""
    if not is_distributed():
        return model
    if sync_bn:
        model = convert_sync_batchnorm(model)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Every BatchNorm layer -> one normalising with global-batch statistics (same parameters and buffers, so
    the state_dict, and every checkpoint, stays that of the plain model)."""
    if next(model.parameters()).device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert(model)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new.to(next(module.buffers(), torch.empty(0)).device)
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module


def _sum_over_ranks(t: Tensor) -> Tensor:
    """A differentiable all-reduce: its backward sums the incoming gradients over ranks."""
    from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce

    return differentiable_all_reduce(t)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all ranks, for devices where `torch.nn.SyncBatchNorm` has no kernels.

    Training forward: mean = Σ_ranks Σ x / n and biased var = Σ_ranks Σ (x - mean)² / n with n the global count
    (two passes, for accuracy), then the usual affine normalisation; running statistics get the unbiased var,
    exactly as `nn.BatchNorm2d` on the concatenated batch. The all-reduces are differentiable, so each rank's
    backward carries the other ranks' gradient through the shared statistics, as torch's SyncBatchNorm does.
    Outside training or a process group it is plain batch norm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]  # every axis but channels
        shape = [1, -1] + [1] * (x.dim() - 2)  # (C,) -> broadcastable over x
        xf = x.float()
        count = xf.new_tensor([xf.numel() // xf.shape[1]])
        stats = _sum_over_ranks(torch.cat([xf.sum(dims), count]))  # (C + 1,): global Σx, global n
        n = stats[-1]
        mean = stats[:-1] / n
        centred = xf - mean.view(shape)
        var = _sum_over_ranks((centred * centred).sum(dims)) / n  # biased, as batch norm normalises with
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach() * n / (n - 1).clamp_min(1))
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), m)

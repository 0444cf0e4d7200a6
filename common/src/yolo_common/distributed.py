"""torch.distributed plumbing shared by every training script.

One code path for the three launchers we use: ``torchrun`` (sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
and ``MASTER_ADDR``/``MASTER_PORT``), OpenMPI's ``mpirun`` (the Gaudi recipe; sets
``OMPI_COMM_WORLD_*`` and nothing about a rendezvous) and MPICH/Intel MPI (``PMI_RANK``/``PMI_SIZE``).
A plain ``python train.py`` is world size 1 and every helper here degrades to a cheap no-op, so the
training loop never needs ``if distributed:`` branches around logging, barriers or metric averaging.

Rendezvous: instead of ``init_method="env://"`` (which would force us to write defaults into
``os.environ`` and leak them into every child process) we build an explicit ``tcp://ADDR:PORT`` URL from
``MASTER_ADDR``/``MASTER_PORT`` of the launcher environment, defaulting to ``127.0.0.1:29500``. The
defaults only work on a single node: a multi-node ``mpirun`` must export ``MASTER_ADDR`` (rank 0's
host) and ideally ``MASTER_PORT`` itself (``mpirun -x MASTER_ADDR=... -x MASTER_PORT=...``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

DEFAULT_MASTER_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = 29500

# (rank, world size, local rank) variable names, in precedence order. torchrun comes first: when a
# torchrun job is itself started from an MPI allocation, torchrun's numbering is the one that counts.
_LAUNCHERS: tuple[tuple[str, str, str, str | None], ...] = (
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    # MPICH's hydra exports MPI_LOCALRANKID; plain PMI has no local rank at all.
    ("mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
)


@dataclass
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0..world_size-1.
        world_size: number of processes in the job (1 when not launched by a distributed launcher).
        local_rank: rank among the processes of this node; picks the accelerator index.
        backend: ``"nccl"``/``"gloo"``/``"hccl"`` once a process group exists, else ``None``.
        is_distributed: ``world_size > 1`` (filled in automatically when left as ``None``).
        launcher: which environment the numbers came from: ``"torchrun"``, ``"openmpi"``,
            ``"mpich"`` or ``"none"``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    is_distributed: bool | None = None
    launcher: str = "none"

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside 0..{self.world_size - 1}")
        if self.is_distributed is None:
            self.is_distributed = self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on global rank 0, the only rank that should write files."""
        return self.rank == 0


def _env_int(environ: Mapping[str, str], name: str) -> int:
    raw = environ[name]
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def read_launcher_env(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Reads rank/world size/local rank from the launcher's environment variables.

    Args:
        environ: the environment to read; ``os.environ`` when ``None``. Tests pass a dict.

    Returns:
        A ``DistInfo`` with ``backend=None``; world size 1 when no launcher variables are set.

    Raises:
        ValueError: a variable is not an integer, or the rank does not fit the world size.
    """
    environ = os.environ if environ is None else environ
    for launcher, rank_var, size_var, local_var in _LAUNCHERS:
        if rank_var in environ and size_var in environ:
            rank = _env_int(environ, rank_var)
            world_size = _env_int(environ, size_var)
            if local_var is not None and local_var in environ:
                local_rank = _env_int(environ, local_var)
            else:
                # No local rank exported: correct on a single node, and the best guess we have.
                local_rank = rank
            return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, launcher=launcher)
    return DistInfo()


def backend_for(device: torch.device | str) -> str:
    """The collective backend for a device: ``nccl`` (cuda), ``hccl`` (hpu), else ``gloo``."""
    device_type = torch.device(device).type
    return {"cuda": "nccl", "hpu": "hccl"}.get(device_type, "gloo")


def _rendezvous_url(environ: Mapping[str, str]) -> str:
    addr = environ.get("MASTER_ADDR") or DEFAULT_MASTER_ADDR
    port = environ.get("MASTER_PORT") or str(DEFAULT_MASTER_PORT)
    if ":" in addr and not addr.startswith("["):
        addr = f"[{addr}]"  # bare IPv6 literal
    return f"tcp://{addr}:{port}"


def init_distributed(
    device: torch.device | str,
    *,
    timeout_s: float = 1800.0,
    environ: Mapping[str, str] | None = None,
    backend: str | None = None,
) -> DistInfo:
    """Creates the default process group when the launcher asked for more than one process.

    World size 1 returns immediately without touching torch.distributed, so single-process runs pay
    nothing. Calling it again once a group exists returns the current ``DistInfo``. For cuda the
    process's current device is set to ``cuda:LOCAL_RANK`` (so plain ``"cuda"`` tensors land on the
    right GPU); use ``torch.device("cuda", info.local_rank)`` for DDP's ``device_ids``.

    Nothing is written to ``os.environ``: the rendezvous is ``tcp://MASTER_ADDR:MASTER_PORT`` read from
    ``environ`` with defaults ``127.0.0.1:29500`` (see the module docstring for multi-node mpirun).

    Args:
        device: the training device; picks the backend via ``backend_for``.
        timeout_s: collective timeout. Generous by default because rank 0 may spend minutes on
            dataset caching or evaluation while the others wait in a barrier.
        environ: launcher environment; ``os.environ`` when ``None``.
        backend: override ``backend_for(device)`` (a ``--dist-backend`` flag). ``nccl`` needs a CUDA
            device and ``hccl`` an HPU: any other pairing is refused here, before a rendezvous that
            would hang or fail deep inside the first collective.

    Returns:
        The job's ``DistInfo`` (with ``backend`` set when a group was created).
    """
    environ = os.environ if environ is None else environ
    # Checked even for one process, so a wrong flag is an error on the laptop, not on the cluster.
    if backend is not None:
        backend = backend.lower()
        need = {"nccl": "cuda", "hccl": "hpu"}.get(backend)
        if backend not in ("gloo", "nccl", "hccl"):
            raise ValueError(f"unknown distributed backend {backend!r}; expected gloo, nccl or hccl")
        if need is not None and torch.device(device).type != need:
            raise ValueError(f"backend {backend} needs a {need} device, the run is on {torch.device(device)}")
        if backend == "gloo" and torch.device(device).type == "hpu":
            # gloo reduces host tensors only: DDP on HPU would fail inside its first collective
            raise ValueError("backend gloo cannot reduce HPU tensors; use hccl on HPU")
    info = read_launcher_env(environ)
    if dist.is_available() and dist.is_initialized():
        info.backend = dist.get_backend()
        return info
    if info.world_size == 1:
        return info
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed support")
    backend = backend or backend_for(device)
    if backend == "hccl":
        # Registers the hccl backend with torch.distributed; only present in Habana's stack.
        import habana_frameworks.torch.distributed.hccl  # noqa: F401
    elif backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(
        backend=backend,
        init_method=_rendezvous_url(environ),
        rank=info.rank,
        world_size=info.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    info.backend = backend
    return info


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank: the process group's when one exists, else the launcher env's (0 if none).

    Falling back to the environment means rank-0-only logging is right even before
    ``init_distributed`` runs (e.g. a run directory created at the top of ``main``).
    """
    return dist.get_rank() if _initialized() else read_launcher_env().rank


def get_world_size() -> int:
    """World size: the process group's when one exists, else the launcher env's (1 if none)."""
    return dist.get_world_size() if _initialized() else read_launcher_env().world_size


def is_main_process() -> bool:
    """True on global rank 0."""
    return get_rank() == 0


def barrier() -> None:
    """Waits for every rank; a no-op without a process group."""
    if _initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all ranks, returned as a new tensor (the input is left untouched).

    Integer tensors are averaged in float32 (an integer mean would silently truncate). Without a
    process group this is a detached copy, so callers can use it unconditionally. The tensor must live
    on a device the backend supports (cuda for nccl, hpu for hccl, cpu for gloo).
    """
    out = tensor.detach().clone()
    if not out.is_floating_point():
        out = out.float()
    if _initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def cleanup() -> None:
    """Destroys the default process group if there is one (safe to call always, e.g. in ``finally``)."""
    if _initialized():
        dist.destroy_process_group()

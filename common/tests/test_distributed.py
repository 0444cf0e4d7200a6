import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from yolo_common import distributed as D


def test_read_launcher_env_none():
    info = D.read_launcher_env({})
    assert (info.rank, info.world_size, info.local_rank, info.is_distributed) == (0, 1, 0, False)
    assert info.launcher == "none" and info.backend is None


def test_read_launcher_env_torchrun():
    info = D.read_launcher_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank) == (3, 8, 1)
    assert info.is_distributed and info.launcher == "torchrun" and not info.is_main


def test_read_launcher_env_openmpi():
    env = {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "16", "OMPI_COMM_WORLD_LOCAL_RANK": "5"}
    info = D.read_launcher_env(env)
    assert (info.rank, info.world_size, info.local_rank, info.launcher) == (5, 16, 5, "openmpi")


def test_read_launcher_env_mpich_without_local_rank():
    info = D.read_launcher_env({"PMI_RANK": "1", "PMI_SIZE": "2"})
    assert (info.rank, info.world_size, info.local_rank, info.launcher) == (1, 2, 1, "mpich")


def test_torchrun_wins_over_mpi():
    env = {"RANK": "0", "WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"}
    assert D.read_launcher_env(env).launcher == "torchrun"


def test_read_launcher_env_bad_values():
    with pytest.raises(ValueError, match="RANK='x'"):
        D.read_launcher_env({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="outside"):
        D.read_launcher_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_backend_for():
    assert D.backend_for("cuda:1") == "nccl"
    assert D.backend_for(torch.device("cpu")) == "gloo"
    assert D.backend_for("hpu") == "hccl"


def test_single_process_is_noop(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE"):
        monkeypatch.delenv(var, raising=False)
    info = D.init_distributed("cpu")
    assert not info.is_distributed and not torch.distributed.is_initialized()
    assert D.get_rank() == 0 and D.get_world_size() == 1 and D.is_main_process()
    D.barrier()
    x = torch.tensor([1, 2, 3])
    y = D.all_reduce_mean(x)
    assert y.dtype == torch.float32 and torch.equal(y, x.float()) and y.data_ptr() != x.data_ptr()
    D.cleanup()


def test_backend_override_is_checked_even_for_one_process():
    # --dist-backend must never be silently ignored: a pairing that cannot work is refused at once
    with pytest.raises(ValueError, match="needs a cuda device"):
        D.init_distributed("cpu", backend="nccl", environ={})
    with pytest.raises(ValueError, match="needs a hpu device"):
        D.init_distributed("cpu", backend="HCCL", environ={})
    with pytest.raises(ValueError, match="unknown distributed backend"):
        D.init_distributed("cpu", backend="mpi4", environ={})
    assert not D.init_distributed("cpu", backend="gloo", environ={}).is_distributed
    with pytest.raises(ValueError, match="gloo cannot reduce HPU"):
        D.init_distributed("hpu", backend="gloo", environ={})


def test_backend_override_reaches_the_process_group(monkeypatch):
    # gloo on a CUDA run (the default would be nccl): the flag, not the device, picks the backend
    seen = {}
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(D.dist, "init_process_group", lambda **kw: seen.update(kw))
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_PORT": "1"}
    info = D.init_distributed("cuda", backend="gloo", environ=env)
    assert seen["backend"] == "gloo" and info.backend == "gloo"
    info = D.init_distributed("cpu", environ=env)
    assert seen["backend"] == "gloo"


def test_get_rank_falls_back_to_env(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert D.get_rank() == 1 and D.get_world_size() == 2 and not D.is_main_process()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_WORKER = textwrap.dedent("""
    import json, sys, torch
    from yolo_common import distributed as D
    info = D.init_distributed("cpu", timeout_s=60)
    assert info.backend == "gloo", info
    x = torch.tensor([float(info.rank), 10.0 * (info.rank + 1)])
    mean = D.all_reduce_mean(x)
    D.barrier()
    out = dict(rank=D.get_rank(), world=D.get_world_size(), local=info.local_rank,
               launcher=info.launcher, main=D.is_main_process(), mean=mean.tolist(), x=x.tolist())
    D.cleanup()
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_gloo_two_processes():
    """Two real processes on gloo (~10 s: each imports torch): rank 0 launched torchrun-style, rank 1
    mpirun-style, so both env paths meet in one process group; checks rank detection and the mean."""
    port = str(_free_port())
    procs = []
    styles = ["torchrun", "openmpi"]
    for rank, style in enumerate(styles):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_", "PMI_", "MASTER_"))}
        env["MASTER_PORT"] = port  # MASTER_ADDR left out on purpose: the 127.0.0.1 default is used
        if style == "torchrun":
            env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
        else:
            env.update(OMPI_COMM_WORLD_RANK=str(rank), OMPI_COMM_WORLD_SIZE="2",
                       OMPI_COMM_WORLD_LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen([sys.executable, "-c", _WORKER], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT "):]))
    results.sort(key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1]
    assert [r["main"] for r in results] == [True, False]
    for r in results:
        assert r["world"] == 2 and r["local"] == r["rank"] and r["launcher"] == styles[r["rank"]]
        assert r["mean"] == pytest.approx([0.5, 15.0])
    assert results[1]["x"] == [1.0, 20.0]  # the input tensor is not modified in place

"""A private process group per engine: rendezvous on a free TCP port, no global state (lesson 14).

`torch.distributed.init_process_group` sets one default group for the whole process, so two
engines in one process would share it. Instead rank 0 opens a TCPStore on port 0 (the OS picks a
free port), passes the port to its workers, and every rank builds the backend object directly:
ProcessGroupGloo on CPU, ProcessGroupNCCL on GPUs. `torch.distributed.all_reduce(x, group=g)`
takes such an object as it is, so TPGroup needs no default group.

Invariants:
- Nothing here touches torch.distributed's default group, a fixed port or a shared-memory name.
- Every collective times out after COLLECTIVE_TIMEOUT: a hung peer becomes an error, not a hang.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

HOST = "127.0.0.1"                            # TP spans the GPUs of one host
COLLECTIVE_TIMEOUT = timedelta(minutes=5)


def create_store(world_size: int) -> dist.TCPStore:
    """Rank 0's rendezvous store on a port the OS picks; workers connect to `store.port`."""
    return dist.TCPStore(HOST, 0, world_size, is_master=True, wait_for_workers=False, timeout=COLLECTIVE_TIMEOUT)


def connect_store(port: int, world_size: int) -> dist.TCPStore:
    return dist.TCPStore(HOST, port, world_size, is_master=False, timeout=COLLECTIVE_TIMEOUT)


def create_process_group(store: dist.Store, rank: int, world_size: int, device: torch.device):
    """This rank's end of the group; blocks until every rank has called it with the same store."""
    if device.type == "cuda":
        os.environ["NCCL_NVLS_ENABLE"] = "0"  # NVLink multicast off, before NCCL initialises
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = COLLECTIVE_TIMEOUT
        group = dist.ProcessGroupNCCL(store, rank, world_size, opts)
        group.eager_connect_single_device(device)  # the communicator exists before any graph capture
        return group
    return dist.ProcessGroupGloo(store, rank, world_size, timeout=COLLECTIVE_TIMEOUT)


def abort_process_group(group) -> None:
    """Tear down an NCCL communicator locally, so kernels stuck waiting on a dead peer return.
    Gloo needs nothing: a dead peer closes its sockets, and the waiting collective raises."""
    if hasattr(dist, "ProcessGroupNCCL") and isinstance(group, dist.ProcessGroupNCCL):
        try:
            group.abort()
        except RuntimeError:
            pass

"""A tensor-parallel worker: ranks 1..N-1, each a spawned process running one model shard (lesson 14).

The worker builds the same ModelRunner as rank 0 (its own rank, its own device), then loops:
receive one step's StepInputs from rank 0, call `execute`, repeat. It never schedules or samples;
the collectives inside `execute` keep it in step with rank 0.

Pipe protocol (one duplex multiprocessing Pipe per worker):
    worker -> rank 0   ("hello", pid)              imports done; about to join the process group
                       ("ready", num_kvcache_blocks)  shard loaded, KV cache allocated, graphs captured
                       ("error", traceback text)   then the worker exits with code 1
    rank 0 -> worker   send_bytes(pickle(StepInputs)) one step; pickled once, sent to every worker
                       send_bytes(pickle(None))    shut down

Invariants:
- A worker outlives neither its parent (a thread watches the parent's sentinel and exits at
  once, even while the main thread waits inside a collective) nor a closed pipe (EOF ends the loop).
- Every rank calls `execute` on the same StepInputs in the same order, so every rank issues the
  same collectives and replays the same CUDA graphs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import sys
import threading
import traceback
from multiprocessing.connection import Connection

import torch

from aios.config import Config
from aios.distributed.process_group import abort_process_group, connect_store, create_process_group
from aios.distributed.tp_group import TPGroup
from aios.engine.model_runner import ModelRunner

SHUTDOWN = pickle.dumps(None)


def _exit_with_parent() -> None:
    parent = mp.parent_process()
    if parent is not None:
        mp.connection.wait([parent.sentinel])     # ready when the parent process is gone
        os._exit(1)


def worker_main(config: Config, rank: int, store_port: int, device: torch.device, conn: Connection) -> None:
    threading.Thread(target=_exit_with_parent, name="aios-parent-watch", daemon=True).start()
    size = config.tensor_parallel_size
    group = None
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:                                     # N processes share the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // size))
        conn.send(("hello", os.getpid()))
        group = create_process_group(connect_store(store_port, size), rank, size, device)
        runner = ModelRunner(config, TPGroup(rank, size, group), device)
        conn.send(("ready", runner.num_kvcache_blocks))
        while True:
            try:
                inputs = pickle.loads(conn.recv_bytes())
            except EOFError:                      # rank 0 closed the pipe or died: nothing to report
                break
            if inputs is None:
                break
            runner.execute(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except BaseException:  # noqa: BLE001 - report anything to rank 0, then exit non-zero
        try:
            conn.send(("error", f"rank {rank} (pid {os.getpid()}):\n{traceback.format_exc()}"))
        except OSError:
            pass
        abort_process_group(group)
        os._exit(1)                               # skip destructors that could wait on dead peers
    abort_process_group(group)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)                                   # nothing left that the OS does not free; exit in ms, not s

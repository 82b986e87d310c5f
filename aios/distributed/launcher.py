"""Start a tensor-parallel engine: rank 0 in this process, ranks 1..N-1 in spawned workers (lesson 14).

    create_tp_runner(config) -> TPModelRunner       (LLMEngine calls it when tensor_parallel_size > 1)

Start-up, in this order:
  1. In this process, before any other starts: the model must split N ways (a meta-device copy
     raises the layers' own ValueError) and, on GPU, N devices must exist.
  2. Open a TCPStore on a free port; spawn workers 1..N-1 (aios/distributed/worker.py) with that
     port; wait for each one's hello.
  3. Every rank joins the engine's private process group and builds its shard at the same time.
     On GPU the KV-cache profile all-reduces MIN, so all ranks take the smallest rank's block
     count; on CPU the count is a pure function of the config. Each worker reports its count in
     its "ready" message, and all must agree.
Each step, rank 0 pickles the StepInputs once, writes it to every worker's pipe, then runs the same
`execute`; only rank 0 samples.

Shutdown: `close()`, garbage collection or interpreter exit (weakref.finalize) sends "shutdown",
joins, and terminates any straggler. A watchdog thread waits on the workers' sentinels: a worker
that dies marks the runner failed (and aborts NCCL, so kernels waiting on it return), and the step
in flight, or the next one, raises a RuntimeError that names the rank, pid and exit status. After
any failed step the ranks may be out of step, so the runner stops its workers and refuses to run.

A script that builds a TP engine must guard its entry point with `if __name__ == "__main__":`, as
for any multiprocessing spawn.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import torch

from aios.config import Config
from aios.distributed.process_group import COLLECTIVE_TIMEOUT, abort_process_group, create_process_group, create_store
from aios.distributed.tp_group import TPGroup
from aios.distributed.worker import SHUTDOWN, worker_main
from aios.engine.model_runner import ModelRunner, StepHandle
from aios.engine.scheduler import ScheduledBatch
from aios.engine.step_inputs import StepInputs
from aios.models.registry import build_model

STARTUP_TIMEOUT_S = COLLECTIVE_TIMEOUT.total_seconds()
CANNOT_CONTINUE = "this tensor-parallel engine cannot continue: create a new LLM"
STARTUP_FAILED = "the tensor-parallel engine could not start"
SHUTDOWN_TIMEOUT_S = 5.0


class TensorParallelError(RuntimeError):
    """A worker died or failed, or a step broke off: the ranks are out of step for good."""


@dataclass
class Worker:
    rank: int
    process: BaseProcess
    conn: Connection                          # rank 0's end of the worker's pipe
    error: str | None = None                  # the traceback it sent before exiting, if any


class _Health:
    """Shared by the runner, its finalizer and the watchdog thread; none of them holds the runner,
    so garbage collection can still reach it."""

    def __init__(self) -> None:
        self.group = None                     # rank 0's process group, once it exists
        self.worker_died = False              # set by the watchdog
        self.stopped = False                  # workers stopped: closed, or after a failure
        self.failure: str | None = None       # why the runner refuses to run, after a failure


def tp_devices(config: Config) -> list[torch.device]:
    """Device of each rank; raises ValueError (before anything starts) if the model cannot be
    split tensor_parallel_size ways or there are too few GPUs."""
    size = config.tensor_parallel_size
    with torch.device("meta"):                # no memory, no weights: only the layers' shape checks
        build_model(config.hf_config, TPGroup(0, size), max_model_len=config.max_model_len)
    if config.device == "cpu":
        return [torch.device("cpu")] * size
    first = torch.device(config.device).index or 0
    count = torch.cuda.device_count()
    if first + size > count:
        raise ValueError(f"tensor_parallel_size={size} needs GPUs cuda:{first}..cuda:{first + size - 1}, "
                         f"but torch sees {count} GPU(s)")
    return [torch.device("cuda", first + r) for r in range(size)]


MAIN_GUARD_HINT = ('each worker is a spawned process that re-imports your script: put the code that creates '
                   'the LLM under `if __name__ == "__main__":`')


def exit_if_spawned_import(size: int) -> None:
    """Called before an LLM(tensor_parallel_size > 1) is built. In a worker that is re-importing the
    user's script (spawn runs it as __mp_main__ while the process is "inheriting", the flag
    multiprocessing's own check reads), the script is building an LLM at import time: say so in one
    line and exit (a traceback from inside multiprocessing's bootstrap would bury it); the parent
    sees this worker die before its hello and says the same."""
    if getattr(mp.current_process(), "_inheriting", False):
        print(f"aios: LLM(tensor_parallel_size={size}) at import time; {MAIN_GUARD_HINT}", file=sys.stderr)
        raise SystemExit(1)


def create_tp_runner(config: Config) -> TPModelRunner:
    size = config.tensor_parallel_size
    devices = tp_devices(config)
    store = create_store(size)
    ctx = mp.get_context("spawn")
    workers: list[Worker] = []
    health = _Health()
    try:
        for rank in range(1, size):
            parent_conn, child_conn = ctx.Pipe()
            process = ctx.Process(target=worker_main, args=(config, rank, store.port, devices[rank], child_conn),
                                  name=f"aios-tp{size}-rank{rank}", daemon=True)
            process.start()
            child_conn.close()
            workers.append(Worker(rank, process, parent_conn))
        threading.Thread(target=_watch, args=(workers, health), name="aios-tp-watchdog", daemon=True).start()
        try:
            _expect(workers, "hello")
        except TensorParallelError as e:       # died before its first message: most often the script
            raise TensorParallelError(f"{e}\n(a worker that dies before it starts: {MAIN_GUARD_HINT})") from None
        health.group = create_process_group(store, 0, size, devices[0])
        runner = TPModelRunner(config, TPGroup(0, size, health.group), devices[0], workers, health, store)
        blocks = _expect(workers, "ready")
        if any(n != runner.num_kvcache_blocks for n in blocks):
            raise RuntimeError(f"ranks disagree on the KV-cache size: rank 0 has {runner.num_kvcache_blocks} "
                               f"blocks, ranks 1..{size - 1} have {blocks}")
    except BaseException as e:
        failure = _describe_dead(workers, 2.0, STARTUP_FAILED) if _maybe_a_peer_failure(e) else None
        _stop_workers(workers, health)
        if failure:
            raise TensorParallelError(failure) from e
        raise
    return runner


class TPModelRunner(ModelRunner):
    """Rank 0's runner: a ModelRunner that sends each step's inputs to the workers first."""

    def __init__(self, config: Config, tp: TPGroup, device: torch.device, workers: list[Worker],
                 health: _Health, store) -> None:
        self.workers, self._health, self._store = workers, health, store
        self._finalizer = weakref.finalize(self, _stop_workers, workers, health)
        super().__init__(config, tp, device)   # collectives with the workers, which build theirs now

    @property
    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self.workers]

    def run(self, batch: ScheduledBatch, inputs: StepInputs | None = None,
            logits_processor: Callable[[torch.Tensor], torch.Tensor] | None = None) -> StepHandle:
        self._raise_if_failed()
        inputs = inputs or self.prepare_inputs(batch)
        payload = pickle.dumps(inputs, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            for w in self.workers:
                w.conn.send_bytes(payload)
            handle = super().run(batch, inputs, logits_processor)
            handle.tokens()                   # TP steps are synchronous: wait here, inside the guard
        except BaseException as e:
            self._fail(e)
            raise
        self._raise_if_failed()               # NCCL aborted under us returns garbage, not an error
        return handle

    def close(self) -> None:
        self._finalizer()
        super().close()

    def _raise_if_failed(self) -> None:
        h = self._health
        if h.worker_died and h.failure is None:
            h.failure = _describe_dead(self.workers, 2.0, CANNOT_CONTINUE) or \
                f"a tensor-parallel worker died; {CANNOT_CONTINUE}"
            _stop_workers(self.workers, h)
        if h.failure:
            raise TensorParallelError(h.failure)
        if h.stopped:
            raise RuntimeError("this LLM is closed")

    def _fail(self, e: BaseException) -> None:
        """After an exception inside a step the ranks may be out of step (some inside a collective
        that rank 0 left): stop the workers for good, and turn a dead worker into a clear error."""
        h = self._health
        if h.stopped:
            return
        dead = _describe_dead(self.workers, 2.0, CANNOT_CONTINUE) if _maybe_a_peer_failure(e) else None
        h.failure = dead or f"a step failed on rank 0 ({type(e).__name__}: {e}); {CANNOT_CONTINUE}"
        _stop_workers(self.workers, h, timeout_s=0.5)     # live ones may wait in a collective forever
        if dead:
            raise TensorParallelError(dead) from e


# ---- worker bookkeeping (module functions: the finalizer and the watchdog must not hold the runner) ----

def _expect(workers: list[Worker], kind: str) -> list:
    """Each worker's payload of its next message, which must be `kind`; raises at once when a
    worker reports an error or dies, and after STARTUP_TIMEOUT_S."""
    values: dict[int, object] = {}
    pending = {w.conn: w for w in workers}
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            ranks = sorted(w.rank for w in pending.values())
            raise TensorParallelError(f"tensor-parallel workers {ranks} sent no {kind!r} within "
                                      f"{STARTUP_TIMEOUT_S:.0f} s; {STARTUP_FAILED}")
        ready = mp.connection.wait(list(pending) + [w.process.sentinel for w in pending.values()], timeout=left)
        for conn in [c for c in ready if c in pending]:
            w = pending.pop(conn)
            try:
                got, payload = conn.recv()
            except (EOFError, OSError):
                got, payload = "died", None
            if got == "error":
                w.error = payload
            if got != kind:
                raise TensorParallelError(_describe_dead(workers, 2.0, STARTUP_FAILED) or
                                          f"tensor-parallel worker rank {w.rank} sent {got!r}, expected {kind!r}")
            values[w.rank] = payload
        if any(w.process.exitcode is not None for w in pending.values()):
            raise TensorParallelError(_describe_dead(workers, 0.0, STARTUP_FAILED) or
                                      f"a tensor-parallel worker died; {STARTUP_FAILED}")
    return [values[w.rank] for w in workers]


def _maybe_a_peer_failure(e: BaseException) -> bool:
    """A collective whose peer died raises RuntimeError (gloo, NCCL, CUDA); a pipe whose reader
    died, ConnectionError. Anything else (a bad checkpoint, Ctrl-C) is rank 0's own error."""
    return isinstance(e, (RuntimeError, ConnectionError)) and not isinstance(e, TensorParallelError)


def _describe_dead(workers: list[Worker], grace_s: float = 0.0, consequence: str = "") -> str | None:
    """Which workers have exited or reported an error, how, then the tracebacks they sent; None if
    none has. Waits up to grace_s for one to exit (a peer's collective error can arrive before its
    death is visible here)."""
    if grace_s and all(w.process.exitcode is None for w in workers):
        mp.connection.wait([w.process.sentinel for w in workers], timeout=grace_s)
    lines, reports = [], []
    for w in workers:
        if w.process.exitcode is None and mp.connection.wait([w.process.sentinel], timeout=0):
            w.process.join(1.0)                # its pipes close a moment before it can be reaped
        code = w.process.exitcode
        try:
            while w.error is None and w.conn.poll():
                got, payload = w.conn.recv()
                if got == "error":
                    w.error = payload
        except (EOFError, OSError):
            pass
        if code is None and w.error is None:
            continue
        how = "failed" if code is None else f"died (killed by signal {-code})" if code < 0 else \
            f"died (exit code {code})"
        lines.append(f"tensor-parallel worker rank {w.rank} (pid {w.process.pid}) {how}")
        if w.error:
            reports.append(w.error.rstrip())
    if not lines:
        return None
    return "; ".join(lines + ([consequence] if consequence else [])) + "".join(f"\n\n{r}" for r in reports)


def _watch(workers: list[Worker], health: _Health) -> None:
    live = {w.process.sentinel for w in workers}
    while live and not health.stopped:
        for sentinel in mp.connection.wait(list(live), timeout=1.0):
            live.discard(sentinel)
            if not health.stopped:
                health.worker_died = True
                abort_process_group(health.group)


def _stop_workers(workers: list[Worker], health: _Health, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Ask every worker to exit, wait up to timeout_s, then terminate whoever is left (e.g. one
    stuck in a collective that rank 0 will never join)."""
    if health.stopped:
        return
    health.stopped = True
    for w in workers:
        try:
            w.conn.send_bytes(SHUTDOWN)
        except (OSError, ValueError):          # already dead, or pipe closed
            pass
    deadline = time.monotonic() + timeout_s
    for w in workers:
        w.process.join(max(0.0, deadline - time.monotonic()))
    for w in workers:
        if w.process.is_alive():
            w.process.terminate()
            w.process.join(1.0)
        if w.process.is_alive():
            w.process.kill()
            w.process.join()
        w.conn.close()
    abort_process_group(health.group)

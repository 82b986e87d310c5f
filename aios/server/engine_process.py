"""Where the engine loop runs: a thread of the server's process, or a process of its own.

A thread is simplest (tests, lessons: `create_app(llm)` with an LLM already built), but the engine
thread and the event loop then share one GIL: under load the event loop, writing a JSON chunk per
token per stream, holds it while the GPU waits for the next step's launch. `python -m aios.server`
therefore runs the loop in a child process (vLLM's EngineCore does the same): commands go down a
multiprocessing.Queue, Batches of events come back through a Pipe (pickled: a copy of the loop's
counters by nature), read by a thread here.

The child is started with "spawn" (CUDA cannot be forked) and is not a daemon (its engine may start
tensor-parallel workers of its own). It stops on a "stop" command, and by itself when it finds the
server's process gone.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import multiprocessing as mp
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from aios.llm import LLM
from aios.server.engine_loop import Batch, EngineLoop

logger = logging.getLogger("aios.server")

STOP = ("stop", None, None)


@dataclass
class EngineInfo:
    """What the HTTP side needs to know of the engine it cannot touch."""

    model: str                                # the checkpoint directory
    max_model_len: int
    has_tokenizer: bool
    vocab_size: int

    @classmethod
    def of(cls, engine: LLM) -> EngineInfo:
        return cls(engine.config.model, engine.config.max_model_len, engine.tokenizer is not None,
                   engine.config.hf_config.vocab_size)


def _check_stream_interval(stream_interval: int) -> None:
    if stream_interval < 1:
        raise ValueError(f"stream_interval must be >= 1, got {stream_interval}")


class ThreadRunner:
    def __init__(self, engine: LLM, max_waiting: int, stream_interval: int) -> None:
        _check_stream_interval(stream_interval)
        self.engine, self.info = engine, EngineInfo.of(engine)
        # the API side's own: the engine thread decodes with the engine's while the API side encodes
        self.tokenizer = copy.deepcopy(engine.tokenizer)
        self._args = (max_waiting, stream_interval)
        self._inbox: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self, deliver: Callable[[Batch], None], on_exit: Callable[[], None]) -> None:
        """`deliver` runs on the engine thread; `on_exit` is unused: the thread ends only when told to."""
        def send(batch: Batch) -> None:       # the event loop reads the counters while this thread goes on
            deliver(dataclasses.replace(batch, counters=batch.counters.snapshot()))

        loop = EngineLoop(self.engine, send, *self._args)
        self._thread = threading.Thread(target=loop.run, args=(self._inbox,), name="aios-engine-loop", daemon=True)
        self._thread.start()

    def put(self, command: tuple) -> None:
        self._inbox.put(command)

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float) -> None:
        if self.is_alive:
            self.put(STOP)
            self._thread.join(timeout)


class _ChildInbox:
    """The child's end of the command queue: an idle wait gives up once the server's process is gone."""

    def __init__(self, commands: mp.Queue) -> None:
        self.commands = commands

    def get(self) -> tuple:
        while True:
            try:
                return self.commands.get(timeout=1.0)
            except queue.Empty:
                if not mp.parent_process().is_alive():
                    return STOP

    def get_nowait(self) -> tuple:
        return self.commands.get_nowait()


def _engine_main(model: str | None, engine_kwargs: dict, max_waiting: int, stream_interval: int,
                 commands: mp.Queue, conn) -> None:
    """The child process: load the model, say so, serve commands until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C reaches the whole process group: the server stops us
    try:
        engine = LLM(model, **engine_kwargs)
    except Exception as e:                    # the parent prints it and exits
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    try:
        conn.send(("ready", EngineInfo.of(engine)))
        EngineLoop(engine, conn.send, max_waiting, stream_interval).run(_ChildInbox(commands))
    finally:
        engine.close()
        conn.close()


class ProcessRunner:
    def __init__(self, model: str | None, engine_kwargs: dict, max_waiting: int, stream_interval: int) -> None:
        _check_stream_interval(stream_interval)
        ctx = mp.get_context("spawn")
        self._commands = ctx.Queue()
        self._conn, child_conn = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_engine_main, name="aios-engine", args=(
            model, engine_kwargs, max_waiting, stream_interval, self._commands, child_conn))
        self._process.start()
        child_conn.close()                    # so that recv() sees EOF once the child is gone
        self._stopping = False
        try:
            kind, payload = self._conn.recv()     # through the model's load and warm-up
        except EOFError:
            kind, payload = "error", f"the engine process exited with status {self._process.exitcode}"
        if kind == "error":
            self._process.join(30)
            raise RuntimeError(payload)
        self.info: EngineInfo = payload
        self._reader: threading.Thread | None = None
        self.tokenizer = None                 # the API side tokenizes: the same files as the engine's
        if self.info.has_tokenizer:
            from transformers import AutoTokenizer
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(self.info.model)
            except Exception as e:  # noqa: BLE001 - tokenizers raise many types for broken files
                self.stop(30)
                raise RuntimeError(f"cannot load the tokenizer from {self.info.model!r}: {e}") from e

    def start(self, deliver: Callable[[Batch], None], on_exit: Callable[[], None]) -> None:
        """`deliver` runs on a reader thread for every Batch; `on_exit` once the child's pipe closes."""
        self._reader = threading.Thread(target=self._read, args=(deliver, on_exit), name="aios-engine-reader",
                                        daemon=True)
        self._reader.start()

    def _read(self, deliver: Callable[[Batch], None], on_exit: Callable[[], None]) -> None:
        while True:
            try:
                batch = self._conn.recv()     # blocks without the GIL
            except (EOFError, OSError):
                break
            except Exception:                 # a message that does not unpickle: a bug, not a reason to stop
                logger.exception("unreadable message from the engine process")
                continue
            deliver(batch)
        if not self._stopping:
            logger.error("the engine process exited (status %s)", self._process.exitcode)
        on_exit()

    def put(self, command: tuple) -> None:
        self._commands.put(command)

    @property
    def is_alive(self) -> bool:
        return self._process.is_alive() and (self._reader is None or self._reader.is_alive())

    def stop(self, timeout: float) -> None:
        """Ask the loop to stop (it fails what is still live with 503s, then closes the engine)."""
        if self._stopping:
            return
        self._stopping = True
        if self._process.is_alive():
            self.put(STOP)
            self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        if self._reader is not None:
            self._reader.join(5)

"""Reference for lesson 08: aios's own scheduler (aios/engine/scheduler.py, Scheduler.schedule)."""

from aios.engine.scheduler import Scheduler

__all__ = ["Scheduler"]

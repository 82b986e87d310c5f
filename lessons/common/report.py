"""Timing and printing for the lesson scripts: Timer (GPU-synchronized), table, heading."""

from __future__ import annotations

import time


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


class Timer:
    """`with Timer(device) as t: ...` then t.seconds (synchronizes the GPU at both ends)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._start


def table(headers: list[str], rows: list[list]) -> str:
    """A plain-text table, numbers right-aligned."""
    def fmt(x) -> str:
        if isinstance(x, float):
            return f"{x:,.1f}" if abs(x) >= 10 else f"{x:,.3f}"
        if isinstance(x, int) and not isinstance(x, bool):
            return f"{x:,}"
        return str(x)

    cells = [[fmt(x) for x in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(items: list[str], raw: list | None = None) -> str:
        out = []
        for i, (s, w) in enumerate(zip(items, widths)):
            numeric = raw is not None and isinstance(raw[i], (int, float)) and not isinstance(raw[i], bool)
            out.append(s.rjust(w) if numeric else s.ljust(w))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(c, r) for c, r in zip(cells, rows)])


def heading(text: str) -> None:
    print(f"\n== {text} ==")

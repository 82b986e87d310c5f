"""A launched step, as the host holds it: its sampled tokens and their scores, on the device until
the host reads them (lesson 11: with async scheduling, one step later).

Invariants:
- tokens_device[row_of[seq_id]] is the token sampled for seq_id; the next step reads it there on
  the device (StepInputs.placeholder_src), so the host never waits in between.
- The host copies (tokens_host, and logprobs / prompt_logprobs once `copy_to_host` has moved them)
  are written behind one CUDA event; `tokens()` and `read_logprobs()` wait on it, so no reader
  sees a copy still in flight. On the CPU they are the device tensors themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from aios.layers.logprobs import LogprobsLists, LogprobsTensors


@dataclass
class StepHandle:
    """A launched step: its sampled tokens live on the device until `tokens()` reads them.

    With async scheduling the engine schedules and launches step N+1 before it calls tokens() of
    step N; a decode in step N+1 whose input is step N's token reads it on the device
    (placeholder_dst / placeholder_src), so the host never waits in between."""

    tokens_device: torch.Tensor                # [num sampled] int64 on the device
    tokens_host: torch.Tensor                  # pinned host copy, filled asynchronously
    event: torch.cuda.Event | None = None      # recorded after every copy (CUDA only)
    row_of: dict[int, int] = field(default_factory=dict)   # seq_id -> row
    # scores (issue 20), host copies filled with the tokens: of the sampled rows that ask ...
    logprobs: LogprobsTensors | None = None
    logprob_row_of: dict[int, int] = field(default_factory=dict)    # seq_id -> row of logprobs
    # ... and of the prompt rows: (seq_id, first prompt token scored, count) in row order
    prompt_logprobs: LogprobsTensors | None = None
    prompt_logprob_spans: list[tuple[int, int, int]] = field(default_factory=list)

    def copy_to_host(self, device: torch.device) -> None:
        """Start the host copies of the tokens and scores of a step run on `device` (on CUDA:
        pinned, non-blocking, behind one event)."""
        self.tokens_host = self.tokens_device
        if device.type == "cuda":
            self.tokens_host = torch.empty(len(self.tokens_device), dtype=torch.int64, pin_memory=True)
            self.tokens_host.copy_(self.tokens_device, non_blocking=True)
            for name in ("logprobs", "prompt_logprobs"):
                if getattr(self, name) is not None:
                    setattr(self, name, getattr(self, name).to_host(pinned=True))
            self.event = torch.cuda.Event()
            self.event.record()

    def tokens(self) -> list[int]:
        if self.event is not None:
            self.event.synchronize()
        return self.tokens_host.tolist()

    def read_logprobs(self) -> tuple[LogprobsLists | None, LogprobsLists | None]:
        """(sampled rows', prompt rows') scores on the host; waits as tokens() does."""
        if self.event is not None:
            self.event.synchronize()
        return (None if self.logprobs is None else self.logprobs.tolist(),
                None if self.prompt_logprobs is None else self.prompt_logprobs.tolist())

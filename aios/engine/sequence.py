"""One request's state: its tokens, its KV blocks, and where it is in its life.

    WAITING --schedule--> RUNNING --stop condition--> FINISHED
       ^                     |  \\
       +----preemption-------+   +--last token launched--> FINISHING --its token read--> FINISHED
                                    (async scheduling: "length" is certain, blocks freed at once)

    PENDING_FORK --its request's first token launched (the fork)--> RUNNING
    (samples 1..best_of-1 of a request with n > 1 or best_of > 1: one prefill serves them all)

A request that asks for several samples is one SequenceGroup (vLLM's name): sample 0, the parent,
is queued and prefills the prompt; the step that samples its first token samples best_of tokens
from that one logits row, and the scheduler forks the other samples from the parent there: each
takes the parent's tokens and shares every one of its KV blocks (ref counts, block_manager.py).
From the fork on, each sample is an ordinary sequence (preempted, recomputed, finished alone);
only an abort and the final choice of the n best (`SequenceGroup.outputs`) see the group.

Each field has one writer (the reader of a field may be anyone):
| field                                         | written by                                      |
|-----------------------------------------------|-------------------------------------------------|
| seq_id, num_prompt_tokens, sampling_params,   | LLMEngine, at construction                      |
|   arrival_time, group, logits_processing,     |                                                 |
|   num_logprobs                                |                                                 |
| token_ids (placeholders, tokens, truncation)  | Scheduler (launched, postprocess, abort)        |
| status, finish_reason, stop_reason, error     | Scheduler                                       |
| num_computed_tokens, num_cached_tokens,       | Scheduler                                       |
|   num_preemptions, first_token_time,          |                                                 |
|   token_times                                 |                                                 |
| output_logprobs, prompt_logprobs              | Scheduler (postprocess; truncated with tokens)  |
| block_table, block_hashes                     | BlockManager                                    |
| grammar (its state: the tokens it accepted)   | StructuredOutputRequests (the engine's) creates |
|                                               |   it once the constraint is compiled;           |
|                                               |   Scheduler.postprocess advances it             |

Invariants:
- token_ids = prompt tokens followed by generated tokens; it grows, and shrinks only when a stop or
  an abort drops tokens sampled after it.
- Tokens [0, num_computed_tokens) have their K/V in the cache, in block_table order:
  token i lives in block block_table[i // block_size] at offset i % block_size.
- At most the last two entries of token_ids are PLACEHOLDER (tokens sampled by steps in flight);
  every token before them is known.
- output_logprobs[i] scores output token i (where the request asks for logprobs): it has an entry
  for every known output token, none for a placeholder, and a stop that drops tokens drops theirs.
- prompt_logprobs[i] scores prompt token i (where it asks for prompt_logprobs): [None] at first,
  then one entry per position in order as the prefill chunks are read; a preempted sequence's
  recompute adds none twice. A sequence still missing some takes no prefix-cache hits (their
  logits would never be computed).
- block_hashes[i] is the prefix-cache hash of block i (chained over blocks 0..i); it exists only
  for full blocks whose K/V is written, or is being written by the step just scheduled.
- A sequence with a constraint (sampling_params.structured_outputs) has grammar None only while
  its grammar compiles (`waiting_for_grammar`): it is then WAITING (or PENDING_FORK), never
  admitted, holds no block and has no output token; all samples of a group get theirs at once.
- The samples of a group share one prompt_logprobs list (the parent's prefill scores it once);
  each has its own output_logprobs and, with structured outputs, its own grammar state.
- A PENDING_FORK sequence holds no block and is in no scheduler queue; its group is not forked
  and its group's parent (seqs[0]) is WAITING or RUNNING. Once the group is forked, none is.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aios.layers.logprobs import num_sample_logprobs
from aios.sampling_params import SamplingParams

if TYPE_CHECKING:
    from aios.layers.logits_processors import LogitsProcessing
    from aios.layers.logprobs import TokenLogprobs
    from aios.structured_output import StructuredOutputGrammar

PLACEHOLDER = -1   # a sampled token still on the GPU (async scheduling); replaced when the host reads it


class SequenceStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHING = enum.auto()      # its last token is launched and its blocks are freed; not yet read
    FINISHED = enum.auto()
    PENDING_FORK = enum.auto()   # a request's sample 1.. before its parent's first token forks it


@dataclass(eq=False)
class SequenceGroup:
    """The samples of one request: seqs[j] is sample j (j < best_of), seqs[0] the parent that
    prefills. `forked` is written by the Scheduler, once, at the fork."""

    seqs: list[Sequence]
    n: int                       # samples returned (the request's n); len(seqs) is best_of
    forked: bool = False

    @property
    def parent(self) -> Sequence:
        return self.seqs[0]

    @property
    def is_finished(self) -> bool:
        return all(s.is_finished for s in self.seqs)

    def outputs(self) -> list[Sequence]:
        """The samples the request returns: all of them in sample order when best_of == n, else
        the n with the highest cumulative logprob, best first (vLLM's best_of; its samples keep
        their sampled tokens' logprobs: layers/logprobs.py, num_sample_logprobs)."""
        if len(self.seqs) == self.n:
            return list(self.seqs)
        return sorted(self.seqs, key=lambda s: s.cumulative_logprob, reverse=True)[: self.n]


class Sequence:
    def __init__(self, seq_id: int, prompt_token_ids: list[int], sampling_params: SamplingParams,
                 block_size: int, logits_processing: LogitsProcessing | None = None) -> None:
        self.seq_id = seq_id
        self.status = SequenceStatus.WAITING
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.sampling_params = sampling_params
        self.logits_processing = logits_processing   # None: its logits go to the sampler as they are
        self.num_logprobs = num_sample_logprobs(sampling_params)   # top-N of its sampled tokens; None: no scores
        self.output_logprobs: list[TokenLogprobs] = []
        self.prompt_logprobs: list[TokenLogprobs | None] = [None] if sampling_params.prompt_logprobs is not None else []
        self.block_size = block_size
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0        # prompt tokens served by the prefix cache (last admission)
        self.num_preemptions = 0
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.error: str | None = None     # why it finished with finish_reason "error" (its own failure)
        self.arrival_time = time.perf_counter()
        self.first_token_time: float | None = None
        self.token_times: list[float] = []
        self.grammar: StructuredOutputGrammar | None = None   # its constraint's state (structured outputs)
        self.group: SequenceGroup | None = None   # the request's samples, when it asks for more than one

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        """Generated tokens the host knows (placeholders of steps in flight left out)."""
        return self.output_token_ids_since(0)

    @property
    def num_known_output_tokens(self) -> int:
        """len(output_token_ids), without building the list."""
        end = len(self.token_ids)
        while end > self.num_prompt_tokens and self.token_ids[end - 1] == PLACEHOLDER:
            end -= 1
        return end - self.num_prompt_tokens

    def output_token_ids_since(self, start: int) -> list[int]:
        """output_token_ids[start:], copying only those: a stream asks for its new tokens every step."""
        first = self.num_prompt_tokens
        return self.token_ids[first + start: first + self.num_known_output_tokens]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    @property
    def cumulative_logprob(self) -> float:
        """The sum of its sampled tokens' logprobs (0 where it keeps no scores: num_logprobs None)."""
        return sum(e.logprobs[0] for e in self.output_logprobs)

    @property
    def waiting_for_grammar(self) -> bool:
        """It has a constraint whose grammar is still compiling: the scheduler does not admit it yet."""
        return self.grammar is None and self.sampling_params.structured_outputs is not None

    @property
    def needs_prompt_logprobs(self) -> bool:
        """It asks for prompt logprobs and the host does not hold all of them yet."""
        return self.sampling_params.prompt_logprobs is not None and len(self.prompt_logprobs) < self.num_prompt_tokens

    @property
    def is_decode(self) -> bool:
        """All tokens but the newest have K/V in the cache: the next step computes one token."""
        return self.num_computed_tokens == len(self.token_ids) - 1

    def block_token_ids(self, i: int) -> list[int]:
        return self.token_ids[i * self.block_size: (i + 1) * self.block_size]

    def record_token_time(self, now: float) -> None:
        if self.first_token_time is None:
            self.first_token_time = now
        self.token_times.append(now)

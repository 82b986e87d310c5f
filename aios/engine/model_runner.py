"""One model shard on one device: it runs steps. Step N on rank 0:

    prepare_inputs (host, vectorized numpy: step_inputs.py; prompt-logprob rows: layers/logprobs.py)
    -> execute_step (every TP rank: upload, then a CUDA graph replay or an eager forward; logits of
       the sampling rows, and the scores of prompt-logprob rows)
    -> logits processors (rank 0, rows that ask: layers/logits_processors.py) -> the sampler
    -> logprobs of the sampled rows that ask, from the unprocessed logits -> StepHandle

`execute` takes only flat arrays, so TP workers (aios/distributed/worker.py) run the very same code
with the arrays rank 0 sends them. The runner's other concerns each have a file of their own:
the upload of a step's inputs (upload.py), the launched step and its host copies (step_handle.py),
the KV cache's memory and its size (kv_cache.py), CUDA graph capture and replay (cuda_graph.py),
the step's sampling settings as tensors (aios/layers/sampler.py), what a request does to its
logits (aios/layers/logits_processors.py), the scores of tokens (aios/layers/logprobs.py).

Start-up: build the model (its family from the registry, its kernels from the Backend), load the
weights, size the KV cache (GPU: a profiling pass of the largest step), warm up (every prefill tile
variant and the sampler compiled, so no request pays a compile), capture CUDA graphs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from aios.config import Config
from aios.distributed.tp_group import TPGroup
from aios.engine.cuda_graph import CUDAGraphRunner
from aios.engine.cuda_graph_mixed import MixedCUDAGraphRunner
from aios.engine.kv_cache import KVCache, cpu_num_blocks, gpu_num_blocks
from aios.engine.scheduler import ScheduledBatch
from aios.engine.step_handle import StepHandle
from aios.engine.step_inputs import StepInputs, dummy_prefill_inputs, prepare_step_inputs, profile_seq_lens
from aios.engine.upload import to_device, upload_step_inputs
from aios.layers.attention import Attention
from aios.layers.backend import Backend
from aios.layers.gemm_choice import assign_gemms
from aios.layers.logits_processors import apply_logits_processors, logits_processor_tensors
from aios.layers.logprobs import (
    LogprobsTensors,
    compute_logprobs,
    prompt_logprob_rows,
    sample_logprob_rows,
)
from aios.layers.sampler import Sampler, SamplingTensors, sampling_tensors, worst_case_sampling
from aios.models.registry import build_model
from aios.utils.context import Context, cu_seqlens
from aios.utils.loader import init_dummy_weights, load_model

__all__ = ["ModelRunner", "StepHandle", "WeightLoader"]


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


WeightLoader = Callable[[torch.nn.Module, str], None]      # (model, checkpoint dir): load_model's signature


class ModelRunner:
    def __init__(self, config: Config, tp: TPGroup | None = None, device: torch.device | None = None, *,
                 backend: Backend | None = None, sampler: Sampler | None = None,
                 weight_loader: WeightLoader | None = None,
                 step_inputs_fn: Callable[..., StepInputs] = prepare_step_inputs,
                 cuda_graph_runner_cls: type[CUDAGraphRunner] = CUDAGraphRunner) -> None:
        """`backend`, `sampler`, `weight_loader`, `step_inputs_fn`, `cuda_graph_runner_cls`: the
        seams where a learner's piece replaces the engine's (default: Backend.from_config(config),
        Sampler(backend), load_model, prepare_step_inputs, CUDAGraphRunner)."""
        self.step_inputs_fn = step_inputs_fn
        self.config = config
        self.tp = tp or TPGroup()
        self.device = device or torch.device(config.device)
        self.is_cuda = self.device.type == "cuda"
        self.dtype: torch.dtype = config.dtype  # type: ignore[assignment]
        self.block_size = config.kvcache_block_size
        self.max_blocks_per_seq = (config.max_model_len + self.block_size - 1) // self.block_size
        backend = backend or Backend.from_config(config, self.device)   # lessons 09/10: the kernels every layer runs
        with _default_dtype(self.dtype), torch.device(self.device):
            self.model = build_model(config.hf_config, self.tp, backend, config.max_model_len)
        if config.load_format == "dummy":
            init_dummy_weights(self.model, config.seed)
        else:
            (weight_loader or load_model)(self.model, config.model)
        self.model.eval()
        if self.is_cuda and config.fused_kernels and config.decode_gemm == "auto":   # before warm-up and capture
            assign_gemms(self.model, config.cudagraph_batch_sizes, self.dtype, self.device)
        self.sampler = sampler or Sampler(backend)
        self.rng = np.random.default_rng(config.seed + self.tp.rank)   # noise keys of unseeded rows
        self.kv_cache = KVCache([m for m in self.model.modules() if isinstance(m, Attention)], self.block_size,
                                self.dtype, self.device)
        self.last_handle: StepHandle | None = None   # the previous step, for on-device input tokens
        self.cuda_graphs = cuda_graph_runner_cls(self.model, config.cudagraph_batch_sizes, self.max_blocks_per_seq,
                                                 self.device)
        self.mixed_graphs = MixedCUDAGraphRunner(   # steps holding prefill tokens (cuda_graph_mixed.py)
            self.model, config.cudagraph_mixed_tokens, config.max_num_seqs, self.max_blocks_per_seq,
            config.max_model_len, self.device) if config.cudagraph_mixed_tokens else None
        self.num_kvcache_blocks = config.num_kvcache_blocks or self.profile_num_blocks()
        self.kv_cache.allocate(self.num_kvcache_blocks)
        if self.is_cuda:
            self.warm_up()
            if not config.enforce_eager:
                self.cuda_graphs.capture()
                if self.mixed_graphs is not None:
                    self.mixed_graphs.capture()

    def close(self) -> None:
        """Free this runner's device memory (KV cache, CUDA graphs, weights), so another engine in
        the same process can size its cache from what is free. The runner is unusable after."""
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
        self.cuda_graphs.close()
        if self.mixed_graphs is not None:
            self.mixed_graphs.close()
            self.mixed_graphs.model = None
        self.last_handle = None
        self.kv_cache.free()
        self.model = self.cuda_graphs.model = None
        if self.is_cuda:
            torch.cuda.empty_cache()

    @property
    def block_bytes(self) -> int:
        return self.kv_cache.block_bytes

    # ---- start-up ------------------------------------------------------------------------------

    def profile_num_blocks(self) -> int:
        """How many KV blocks fit: on CPU a fixed budget; on GPU what is left under
        gpu_memory_utilization after weights and the peak activations of the largest step the
        scheduler can form (profile_seq_lens), with max_num_seqs rows through the sampler."""
        cfg = self.config
        if not self.is_cuda:
            return cpu_num_blocks(cfg, self.block_bytes)
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        seq_lens = profile_seq_lens(cfg.max_num_batched_tokens, cfg.max_num_seqs, cfg.max_model_len)
        blocks_per_seq = [(n + self.block_size - 1) // self.block_size for n in seq_lens]
        self.kv_cache.allocate(sum(blocks_per_seq))
        logits = self.execute(dummy_prefill_inputs(seq_lens, blocks_per_seq, self.block_size))
        logits = logits[:1].expand(cfg.max_num_seqs, -1).contiguous()
        self.sampler(logits, worst_case_sampling(cfg.max_num_seqs, self.device))
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - self.kv_cache.nbytes
        self.kv_cache.free()
        del logits
        num_blocks = gpu_num_blocks(cfg, self.device, self.block_bytes, peak)
        if self.tp.size > 1:                 # every rank must hold the same number of blocks
            t = torch.tensor([num_blocks], device=self.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN, group=self.tp.group)
            num_blocks = int(t.item())
        if num_blocks < self.max_blocks_per_seq:
            raise RuntimeError(f"only {num_blocks} KV blocks fit in GPU memory, fewer than one sequence of "
                               f"max_model_len={cfg.max_model_len} needs; raise gpu_memory_utilization or "
                               f"lower max_model_len / max_num_batched_tokens")
        return num_blocks

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Pay the first-use costs now, not inside the first requests' time to first token: Triton
        compiles the prefill kernels' tile variants (16/32/64-row query tiles for short chunks,
        larger ones for long prompts), and cuBLAS picks and loads a GEMM kernel for each range of
        token counts. One small prefill step per power of two up to the step budget; its K/V goes
        into blocks no sequence owns yet."""
        cfg = self.config
        q_len, logits = 2, None
        while q_len <= min(cfg.max_num_batched_tokens, cfg.max_model_len):
            num_blocks = (q_len + self.block_size - 1) // self.block_size
            if num_blocks > self.num_kvcache_blocks:
                break
            logits = self.execute(dummy_prefill_inputs([q_len], [num_blocks], self.block_size))
            q_len *= 2
        # the sampler on the model's logits dtype: profile_num_blocks ran it on fp32 logits (the
        # top-k/top-p path), a temperature-only row hands the kernel logits of the model's dtype
        if logits is not None:
            rows = len(logits)
            self.sampler(logits, SamplingTensors(temperatures=torch.ones(rows, device=self.device),
                                                 row_keys=torch.zeros(rows, dtype=torch.int64, device=self.device)))
        torch.cuda.synchronize(self.device)

    # ---- one step ------------------------------------------------------------------------------

    def prepare_inputs(self, batch: ScheduledBatch) -> StepInputs:
        """Flatten the batch into flat host arrays (aios/engine/step_inputs.py), plus the rows that
        score prompt tokens where a sequence asks for prompt logprobs (aios/layers/logprobs.py)."""
        row_of = self.last_handle.row_of if self.last_handle is not None else {}
        inputs = self.step_inputs_fn(batch, self.block_size, row_of)
        rows = prompt_logprob_rows(batch)
        if rows is not None:
            inputs.prompt_logits_indices, inputs.prompt_target_ids = rows.logits_indices, rows.target_ids
            inputs.num_prompt_logprobs, inputs.prompt_logprob_spans = rows.num_logprobs, rows.spans
        if batch.blocks_to_copy:
            inputs.blocks_to_copy = np.asarray(batch.blocks_to_copy, dtype=np.int64).reshape(-1, 2)
        return inputs

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        return to_device(a, self.device)

    @torch.inference_mode()
    def execute(self, inputs: StepInputs, use_cuda_graph: bool = True) -> torch.Tensor:
        """Run the model on one step's inputs; return logits [len(logits_indices), vocab]. A pure
        decode step replays a CUDA graph where one was captured for it (cuda_graph.py), a small step
        holding prefill tokens where Config.cudagraph_mixed_tokens has graphs for it
        (cuda_graph_mixed.py), anything else runs eagerly (so does everything with use_cuda_graph=False)."""
        return self.execute_step(inputs, use_cuda_graph)[0]

    @torch.inference_mode()
    def execute_step(self, inputs: StepInputs,
                     use_cuda_graph: bool = True) -> tuple[torch.Tensor, LogprobsTensors | None]:
        """execute(), plus the scores of the prompt-logprob rows (rank 0; None where there are none).
        A step with such rows runs eagerly: it needs the hidden states of every prompt row."""
        t = upload_step_inputs(inputs, self.device)
        if len(inputs.blocks_to_copy):           # copy-on-write: before this step writes any K/V
            pairs = self._to_device(inputs.blocks_to_copy)
            self.kv_cache.copy_blocks(pairs[:, 0], pairs[:, 1])
        if len(inputs.placeholder_dst):
            t["input_ids"][t["placeholder_dst"]] = self.last_handle.tokens_device[t["placeholder_src"]]
        num_prompt_rows = len(inputs.prompt_logits_indices)
        graph_bs = self.cuda_graphs.batch_size_for(inputs) if use_cuda_graph and not num_prompt_rows else None
        if graph_bs is not None:
            return self.cuda_graphs.replay(t, graph_bs), None
        size = self.mixed_graph_size(inputs, use_cuda_graph)
        if size is not None:
            return self.mixed_graphs.replay(t, inputs, size), None
        context = Context(
            is_prefill=inputs.is_prefill,
            slot_mapping=t["slot_mapping"],
            block_tables=t["block_tables"],
            context_lens=t["context_lens"],
            cu_seqlens_q=t["cu_seqlens_q"],
            cu_seqlens_k=cu_seqlens(t["context_lens"]),
            max_seqlen_q=inputs.max_seqlen_q,
            max_seqlen_k=inputs.max_seqlen_k,
        )
        hidden = self.model(t["input_ids"], t["positions"], context)
        prompt_logprobs = None
        if num_prompt_rows:
            prompt_logprobs = self._prompt_logprobs(hidden, t["prompt_logits_indices"], t["prompt_target_ids"],
                                                    inputs.num_prompt_logprobs)
        if len(inputs.logits_indices) != len(inputs.context_lens) or inputs.is_prefill:
            hidden = hidden[t["logits_indices"]]
        return self.model.compute_logits(hidden), prompt_logprobs

    def mixed_graph_size(self, inputs: StepInputs, use_cuda_graph: bool = True) -> int | None:
        """The mixed-step graph bucket execute_step replays this step with, or None (a decode step,
        one no captured bucket holds, prompt-logprob rows: they need every hidden row)."""
        if self.mixed_graphs is None or not use_cuda_graph or len(inputs.prompt_logits_indices):
            return None
        return self.mixed_graphs.size_for(inputs)

    def _prompt_logprobs(self, hidden: torch.Tensor, rows: torch.Tensor, target_ids: torch.Tensor,
                         num_logprobs: int) -> LogprobsTensors | None:
        """Scores of prompt rows, max_num_seqs rows of logits at a time: no more memory than the
        sampler's rows, which the profile measured. Every TP rank computes the logits (the LM head
        all-gathers); rank 0 scores them."""
        parts = []
        for start in range(0, len(rows), self.config.max_num_seqs):
            end = start + self.config.max_num_seqs
            logits = self.model.compute_logits(hidden[rows[start:end]])
            if self.tp.rank == 0:
                parts.append(compute_logprobs(logits, target_ids[start:end], num_logprobs))
        return LogprobsTensors.cat(parts) if parts else None

    def run(self, batch: ScheduledBatch, inputs: StepInputs | None = None,
            logits_processor: Callable[[torch.Tensor], torch.Tensor] | None = None) -> StepHandle:
        """Launch one step on rank 0 and return at once: the model, then, for each sequence whose
        chunk reaches its last token (batch.samples; partial prefill chunks sample nothing), its
        logits processing, its token and its scores where it asks for them.
        `logits_processor` (the engine's structured-output mask) is called once the model is
        launched, with the sampled rows' logits, and returns the logits to sample from: its host
        work overlaps the model's GPU time. It may advance the sequences (LLMEngine's constrained
        path runs Scheduler.launched and the previous step's postprocess in it), so everything this
        step reads from them is read before it is called. Order on the logits, as vLLM's: the
        grammar mask, then the scores (logprobs), then penalties / bias / bad words, then sampling.
        A request's first sample (batch.forks) samples one row per sample of the request from its
        one logits row, replicated on the device (each row has its own noise key)."""
        sampled = batch.sampled_seqs
        rows = batch.logits_rows()
        inputs = inputs or self.prepare_inputs(batch)
        logits, prompt_logprobs = self.execute_step(inputs)
        if rows is not None:
            logits = logits[self._to_device(rows)]
        handle = StepHandle(torch.zeros(0, dtype=torch.int64, device=self.device), None,
                            row_of={s.seq_id: i for i, s in enumerate(sampled)},
                            prompt_logprobs=prompt_logprobs, prompt_logprob_spans=inputs.prompt_logprob_spans)
        if sampled:
            last = self.last_handle
            # read from the sequences now: logits_processor may advance them
            processing = logits_processor_tensors(sampled, last.row_of if last else {}, self._to_device)
            t = sampling_tensors([s.sampling_params for s in sampled], [s.num_output_tokens for s in sampled],
                                 self.config.hf_config.vocab_size, self.rng, self._to_device)
            if logits_processor is not None:
                logits = logits_processor(logits)
            sample_logits = logits
            if processing is not None:
                sample_logits = apply_logits_processors(logits, processing, last.tokens_device if last else None)
            handle.tokens_device = self.sampler(sample_logits, t)
            handle.logprobs, handle.logprob_row_of = self._sample_logprobs(sampled, logits, handle.tokens_device)
        handle.copy_to_host(self.device)
        self.last_handle = handle
        return handle

    def _sample_logprobs(self, sampled: list, logits: torch.Tensor,
                         tokens: torch.Tensor) -> tuple[LogprobsTensors | None, dict[int, int]]:
        """Scores of the sampled tokens of the rows that ask, from the raw (unprocessed) logits."""
        wants = sample_logprob_rows(sampled)
        if not wants:
            return None, {}
        rows = [i for i, _ in wants]
        if len(rows) < len(sampled):                 # only the rows that ask pay for the log_softmax
            index = self._to_device(np.asarray(rows, dtype=np.int64))
            logits, tokens = logits[index], tokens[index]
        logprobs = compute_logprobs(logits, tokens, max(n for _, n in wants))
        return logprobs, {sampled[i].seq_id: r for r, i in enumerate(rows)}

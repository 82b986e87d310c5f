"""One model shard on one device: weights, KV cache, step inputs, CUDA graphs, sampling.

`run(batch)` is one engine step on rank 0:
    prepare_inputs (host, vectorized numpy: aios/engine/step_inputs.py) -> execute (every TP rank)
    -> sample (rank 0)
`execute` takes only flat arrays, so TP workers (aios/distributed/worker.py) run the very same
code with the arrays rank 0 sends them.

KV cache: one tensor [2, num_layers, num_blocks, block_size, num_kv_heads, head_dim]; layer i's
Attention module holds views kv_cache[0, i] and kv_cache[1, i].
CUDA graphs (lesson 11): pure-decode steps replay a graph captured for the smallest captured
batch size >= the batch; the graph reads its inputs from static buffers that prepare fills.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from aios.config import Config
from aios.distributed.tp_group import TPGroup
from aios.engine.scheduler import ScheduledBatch
from aios.engine.step_inputs import StepInputs, dummy_prefill_inputs, prepare_step_inputs, profile_seq_lens
from aios.kernels.sampling import seeded_row_keys
from aios.layers.attention import Attention
from aios.layers.backend import Backend
from aios.layers.sampler import Sampler, SamplingTensors
from aios.models.registry import build_model
from aios.utils.context import Context
from aios.utils.loader import init_dummy_weights, load_model


@dataclass
class StepHandle:
    """A launched step: its sampled tokens live on the device until `tokens()` reads them.

    With async scheduling the engine schedules and launches step N+1 before it calls tokens() of
    step N; a decode in step N+1 whose input is step N's token reads it on the device
    (placeholder_dst / placeholder_src), so the host never waits in between."""

    sampled: list                              # sequences that sampled a token, in row order
    tokens_device: torch.Tensor                # [len(sampled)] int64 on the device
    tokens_host: torch.Tensor                  # pinned host copy, filled asynchronously
    event: torch.cuda.Event | None = None      # recorded after the copy (CUDA only)
    row_of: dict[int, int] = field(default_factory=dict)   # seq_id -> row

    def tokens(self) -> list[int]:
        if self.event is not None:
            self.event.synchronize()
        return self.tokens_host.tolist()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


class ModelRunner:
    def __init__(self, config: Config, tp: TPGroup | None = None, device: torch.device | None = None) -> None:
        self.config = config
        self.tp = tp or TPGroup()
        self.device = device or torch.device(config.device)
        self.dtype: torch.dtype = config.dtype  # type: ignore[assignment]
        self.block_size = config.kvcache_block_size
        self.max_blocks_per_seq = (config.max_model_len + self.block_size - 1) // self.block_size
        hf = config.hf_config
        backend = Backend.from_config(config, self.device)   # lessons 09/10: the kernels every layer runs
        with _default_dtype(self.dtype), torch.device(self.device):
            self.model = build_model(hf, self.tp, backend, config.max_model_len)
        if config.load_format == "dummy":
            init_dummy_weights(self.model, config.seed)
        else:
            load_model(self.model, config.model)
        self.model.eval()
        self.sampler = Sampler(backend)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + self.tp.rank)
        self.rng = np.random.default_rng(config.seed + self.tp.rank)   # sampling noise keys
        self.attn_layers = [m for m in self.model.modules() if isinstance(m, Attention)]
        self.num_kv_heads = self.attn_layers[0].num_kv_heads
        self.head_dim = hf.head_dim
        self.is_cuda = self.device.type == "cuda"
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.kv_cache = torch.empty(0)
        self.last_handle: StepHandle | None = None   # the previous step, for on-device input tokens
        self.num_kvcache_blocks = config.num_kvcache_blocks or self.profile_num_blocks()
        self.allocate_kv_cache(self.num_kvcache_blocks)
        if self.is_cuda:
            self.warm_up()
        if self.is_cuda and not config.enforce_eager:
            self.capture_cudagraphs()

    def close(self) -> None:
        """Free this runner's device memory (KV cache, CUDA graphs, weights), so another engine in
        the same process can size its cache from what is free. The runner is unusable after."""
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
        self.graphs.clear()
        self.graph_logits = {}
        self.graph_vars = {}
        self.last_handle = None
        for layer in self.attn_layers:
            layer.k_cache = layer.v_cache = torch.empty(0)
        self.attn_layers = []
        self.kv_cache = torch.empty(0)
        self.model = None
        if self.is_cuda:
            torch.cuda.empty_cache()

    # ---- memory --------------------------------------------------------------------------------

    @property
    def block_bytes(self) -> int:
        """Bytes of one KV block across all layers (K and V)."""
        el = torch.empty(0, dtype=self.dtype).element_size()
        return 2 * len(self.attn_layers) * self.block_size * self.num_kv_heads * self.head_dim * el

    def allocate_kv_cache(self, num_blocks: int) -> None:
        self.kv_cache = torch.empty(2, len(self.attn_layers), num_blocks, self.block_size, self.num_kv_heads,
                                    self.head_dim, dtype=self.dtype, device=self.device)
        for i, layer in enumerate(self.attn_layers):
            layer.k_cache, layer.v_cache = self.kv_cache[0, i], self.kv_cache[1, i]

    def profile_num_blocks(self) -> int:
        """How many KV blocks fit: on CPU a fixed budget; on GPU what is left under
        gpu_memory_utilization after weights and the peak activations of the largest step."""
        cfg = self.config
        if not self.is_cuda:
            useful = self.max_blocks_per_seq * min(cfg.max_num_seqs, 64)
            return max(1, min(int(cfg.cpu_kvcache_space_gib * 2**30) // self.block_bytes, useful))
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        seq_lens = profile_seq_lens(cfg.max_num_batched_tokens, cfg.max_num_seqs, cfg.max_model_len)
        blocks_per_seq = [(n + self.block_size - 1) // self.block_size for n in seq_lens]
        self.allocate_kv_cache(sum(blocks_per_seq))
        cache_bytes = self.kv_cache.numel() * self.kv_cache.element_size()
        inputs = dummy_prefill_inputs(seq_lens, blocks_per_seq, self.block_size)
        logits = self.execute(inputs)
        rows = cfg.max_num_seqs
        logits = logits[:1].expand(rows, -1).contiguous()
        self.sampler(logits, self._worst_case_sampling(rows), self.generator)
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - cache_bytes
        self.kv_cache = torch.empty(0)
        for layer in self.attn_layers:
            layer.k_cache = layer.v_cache = torch.empty(0)
        del logits
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        non_torch = (total - free) - torch.cuda.memory_reserved(self.device)
        budget = int(total * cfg.gpu_memory_utilization) - non_torch - peak
        num_blocks = budget // self.block_bytes
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
            self.sampler(logits, SamplingTensors(temperatures=torch.ones(len(logits), device=self.device)),
                         self.generator)
        torch.cuda.synchronize(self.device)

    def _worst_case_sampling(self, rows: int) -> SamplingTensors:
        d = self.device
        return SamplingTensors(temperatures=torch.ones(rows, device=d),
                               top_ks=torch.full((rows,), 50, device=d), top_ps=torch.full((rows,), 0.9, device=d),
                               min_ps=torch.full((rows,), 0.05, device=d))

    # ---- step inputs ---------------------------------------------------------------------------

    def prepare_inputs(self, batch: ScheduledBatch) -> StepInputs:
        """Flatten the batch into flat host arrays (aios/engine/step_inputs.py)."""
        row_of = self.last_handle.row_of if self.last_handle is not None else {}
        return prepare_step_inputs(batch, self.block_size, row_of)

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a)
        if self.is_cuda:
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    # ---- forward -------------------------------------------------------------------------------

    def _upload(self, inputs: StepInputs) -> dict[str, torch.Tensor]:
        """Two host-to-device copies per step (one int64 pack, one int32 pack) instead of one per array.
        Every array starts 16-byte aligned in its pack: Triton specializes a kernel on whether each
        pointer argument is 16-byte aligned, so an offset that moved with the token count would give
        a request a kernel variant the warm-up never compiled (a compile inside its TTFT)."""
        packs = {np.int64: ("input_ids", "positions", "slot_mapping", "logits_indices", "placeholder_dst",
                            "placeholder_src"),
                 np.int32: ("block_tables", "context_lens", "cu_seqlens_q")}
        out: dict[str, torch.Tensor] = {}
        for dtype, names in packs.items():
            arrays = [getattr(inputs, k) for k in names]
            per = 16 // np.dtype(dtype).itemsize
            starts = np.cumsum([0] + [-(-a.size // per) * per for a in arrays])
            host = np.zeros(starts[-1], dtype)
            for a, start in zip(arrays, starts):
                host[start:start + a.size] = a.reshape(-1)
            flat = torch.from_numpy(host)
            if self.is_cuda:
                flat = flat.pin_memory().to(self.device, non_blocking=True)
            for k, a, start in zip(names, arrays, starts):
                out[k] = flat[start:start + a.size].view(a.shape)
        return out

    @torch.inference_mode()
    def execute(self, inputs: StepInputs) -> torch.Tensor:
        """Run the model on one step's inputs; return logits [len(logits_indices), vocab]."""
        t = self._upload(inputs)
        if len(inputs.placeholder_dst):
            t["input_ids"][t["placeholder_dst"]] = self.last_handle.tokens_device[t["placeholder_src"]]
        graph_bs = self._graph_batch_size(inputs)
        if graph_bs is not None:
            return self._replay(t, graph_bs)
        cu_q = t["cu_seqlens_q"]
        context = Context(
            is_prefill=inputs.is_prefill,
            slot_mapping=t["slot_mapping"],
            block_tables=t["block_tables"],
            context_lens=t["context_lens"],
            cu_seqlens_q=cu_q,
            cu_seqlens_k=torch.nn.functional.pad(t["context_lens"].cumsum(0, dtype=torch.int32), (1, 0)),
            max_seqlen_q=inputs.max_seqlen_q,
            max_seqlen_k=inputs.max_seqlen_k,
        )
        hidden = self.model(t["input_ids"], t["positions"], context)
        if len(inputs.logits_indices) != len(inputs.context_lens) or inputs.is_prefill:
            hidden = hidden[t["logits_indices"]]
        return self.model.compute_logits(hidden)

    # ---- CUDA graphs (lesson 11) ---------------------------------------------------------------

    def _graph_batch_size(self, inputs: StepInputs) -> int | None:
        """The captured batch size to replay for this step, or None to run eagerly."""
        if not self.graphs or inputs.is_prefill:
            return None
        bs = len(inputs.context_lens)
        if inputs.block_tables.shape[1] > self.max_blocks_per_seq or len(inputs.logits_indices) != bs:
            return None
        return next((s for s in self.config.cudagraph_batch_sizes if s >= bs and s in self.graphs), None)

    @torch.inference_mode()
    def capture_cudagraphs(self) -> None:
        max_bs = max(self.config.cudagraph_batch_sizes)
        d, width = self.device, self.max_blocks_per_seq
        self.graph_vars = {
            "input_ids": torch.zeros(max_bs, dtype=torch.int64, device=d),
            "positions": torch.zeros(max_bs, dtype=torch.int64, device=d),
            "slot_mapping": torch.full((max_bs,), -1, dtype=torch.int64, device=d),
            "context_lens": torch.zeros(max_bs, dtype=torch.int32, device=d),
            "block_tables": torch.zeros(max_bs, width, dtype=torch.int32, device=d),
        }
        v = self.graph_vars
        self.graph_logits: dict[int, torch.Tensor] = {}
        pool = None
        for bs in sorted(self.config.cudagraph_batch_sizes, reverse=True):
            context = Context(is_prefill=False, slot_mapping=v["slot_mapping"][:bs],
                              block_tables=v["block_tables"][:bs], context_lens=v["context_lens"][:bs])
            # warm up (Triton compiles, cuBLAS picks kernels) outside the capture
            self.model.compute_logits(self.model(v["input_ids"][:bs], v["positions"][:bs], context))
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                hidden = self.model(v["input_ids"][:bs], v["positions"][:bs], context)
                self.graph_logits[bs] = self.model.compute_logits(hidden)
            if pool is None:
                pool = graph.pool()
            self.graphs[bs] = graph
            torch.cuda.synchronize(d)

    def _replay(self, t: dict[str, torch.Tensor], graph_bs: int) -> torch.Tensor:
        v, bs = self.graph_vars, t["context_lens"].shape[0]
        width = t["block_tables"].shape[1]
        for k in ("input_ids", "positions", "slot_mapping", "context_lens"):
            v[k][:bs].copy_(t[k])
        v["slot_mapping"][bs:graph_bs].fill_(-1)       # padding rows write nothing
        v["context_lens"][bs:graph_bs].fill_(0)        # ... and read nothing
        v["block_tables"][:bs, :width].copy_(t["block_tables"])
        v["block_tables"][:graph_bs, width:].fill_(-1)
        self.graphs[graph_bs].replay()
        return self.graph_logits[graph_bs][:bs]

    # ---- sampling ------------------------------------------------------------------------------

    def sampling_tensors(self, seqs: list) -> SamplingTensors:
        """Settings of the sequences that sample this step. Greedy rows ignore top-k/top-p/min-p.
        Noise keys: a seeded request's is a hash of (seed, output position), so its draw is the same
        in any batch; the other rows' come from the runner's own generator."""
        params = [s.sampling_params for s in seqs]
        d = self._to_device
        temps = np.asarray([p.temperature for p in params], dtype=np.float32)
        t = SamplingTensors(temperatures=d(temps), all_greedy=bool((temps == 0).all()))
        if t.all_greedy:
            return t
        sampled = temps > 0
        vocab = self.config.hf_config.vocab_size
        top_ks = np.where(sampled, [p.top_k if 0 < p.top_k < vocab else vocab for p in params], vocab).astype(np.int64)
        top_ps = np.where(sampled, [p.top_p for p in params], 1.0).astype(np.float32)
        min_ps = np.where(sampled, [p.min_p for p in params], 0.0).astype(np.float32)
        if (top_ks < vocab).any():                       # upload only the masks someone asked for
            t.top_ks = d(top_ks)
        if (top_ps < 1.0).any():
            t.top_ps = d(top_ps)
        if (min_ps > 0.0).any():
            t.min_ps = d(min_ps)
        keys = self.rng.integers(0, 2**32, len(seqs), dtype=np.int64)
        seeded = [i for i, p in enumerate(params) if p.seed is not None and p.temperature > 0]
        if seeded:
            seeds = torch.tensor([params[i].seed & 0x7FFF_FFFF_FFFF_FFFF for i in seeded], dtype=torch.int64)
            positions = torch.tensor([seqs[i].num_output_tokens for i in seeded], dtype=torch.int64)
            keys[seeded] = seeded_row_keys(seeds, positions).numpy()
        t.row_keys = d(keys)
        return t

    def run(self, batch: ScheduledBatch, inputs: StepInputs | None = None) -> StepHandle:
        """Launch one step on rank 0 and return at once: the model, then sampling for each sequence
        whose chunk reaches its last token (partial prefill chunks sample nothing)."""
        sampled = batch.sampled_seqs
        inputs = inputs or self.prepare_inputs(batch)
        logits = self.execute(inputs)
        if sampled:
            tokens = self.sampler(logits, self.sampling_tensors(sampled), self.generator)
        else:
            tokens = torch.zeros(0, dtype=torch.int64, device=self.device)
        handle = StepHandle(sampled, tokens, tokens, row_of={s.seq_id: i for i, s in enumerate(sampled)})
        if self.is_cuda:
            handle.tokens_host = torch.empty(len(sampled), dtype=torch.int64, pin_memory=True)
            handle.tokens_host.copy_(tokens, non_blocking=True)
            handle.event = torch.cuda.Event()
            handle.event.record()
        self.last_handle = handle
        return handle

"""Engine configuration: one dataclass, every lesson's switch is a field here.

A field that a lesson turns on or off names that lesson in its comment. `Config` is built once by
`LLMEngine` from the user's keyword arguments and is read-only after `__post_init__`: what the
engine measures at start-up (the KV-cache size, the EOS ids) lives on the engine, not in here.

Fields left at None are picked from the device in `__post_init__` (`device_defaults`), and
`describe()` is the one start-up line that says what was picked.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from aios.models.registry import family_of

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def parse_dtype(dtype: str | torch.dtype | None, default: torch.dtype) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; use float32, bfloat16 or float16")
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of float32, bfloat16, float16")
    return _DTYPES[dtype]


@dataclass
class ModelConfig:
    """The parts of a HuggingFace decoder's config.json that the engine uses. Which fields a family
    reads, and which of its fields it refuses, is its parser's business (aios/models/registry.py)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    torch_dtype: str | None
    eos_token_id: list[int]
    rope_scaling: dict | None = None
    model_type: str = "qwen3"                 # the registry's key for the family's model class
    qkv_bias: bool = False                    # q/k/v projections carry biases (Qwen2; Llama's attention_bias)
    o_proj_bias: bool = False                 # o_proj carries a bias (Llama's attention_bias)
    mlp_bias: bool = False                    # gate/up/down projections carry biases (Llama's mlp_bias)
    sliding_window: int | None = None         # Mistral, Gemma 3's local layers: each query sees its last W tokens
    layer_types: list[str] | None = None      # Gemma 3: "sliding_attention" | "full_attention", one per layer
    rope_local_theta: float | None = None     # Gemma 3: the RoPE base of the sliding layers
    query_pre_attn_scalar: float | None = None   # Gemma 3: attention scale is its ** -0.5 (None: head_dim)
    final_logit_softcapping: float | None = None  # Gemma 3: logits = cap * tanh(logits / cap)
    moe: MoEConfig | None = None              # routed experts (Qwen3-MoE); None: every layer's MLP is dense

    @classmethod
    def from_dir(cls, model_dir: str) -> ModelConfig:
        """Read config.json and parse it with the parser of the family it names."""
        path = os.path.join(model_dir, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no config.json in model directory {model_dir!r}")
        try:
            with open(path) as f:
                raw: dict[str, Any] = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"malformed {path}: {e}") from e
        if not isinstance(raw, dict):
            raise ValueError(f"malformed {path}: not a JSON object")
        return family_of(raw, path).parse_config(raw, path)

    @classmethod
    def from_hf(cls, raw: dict[str, Any], path: str, model_type: str) -> ModelConfig:
        """The fields every decoder family shares; a missing required one is an error naming it."""
        try:
            heads = raw["num_attention_heads"]
            eos = raw.get("eos_token_id")
            rope_params = raw.get("rope_parameters") or {}
            return cls(
                vocab_size=raw["vocab_size"],
                hidden_size=raw["hidden_size"],
                intermediate_size=raw["intermediate_size"],
                num_hidden_layers=raw["num_hidden_layers"],
                num_attention_heads=heads,
                num_key_value_heads=raw.get("num_key_value_heads") or heads,
                head_dim=raw.get("head_dim") or raw["hidden_size"] // heads,
                rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
                rope_theta=raw.get("rope_theta", rope_params.get("rope_theta", 1e6)),
                max_position_embeddings=raw.get("max_position_embeddings", 40960),
                tie_word_embeddings=raw.get("tie_word_embeddings", False),
                torch_dtype=raw.get("torch_dtype") or raw.get("dtype"),
                eos_token_id=[] if eos is None else ([eos] if isinstance(eos, int) else list(eos)),
                rope_scaling=raw.get("rope_scaling"),
                model_type=model_type,
            )
        except KeyError as e:
            raise ValueError(f"{path} lacks the field {e.args[0]!r}") from e


@dataclass(frozen=True)
class MoEConfig:
    """A sparse-MoE decoder's experts and routing (lesson 16; aios/layers/fused_moe.py)."""

    num_experts: int
    num_experts_per_tok: int                  # top-k experts per token
    moe_intermediate_size: int                # each expert's SiLU-gated MLP width
    norm_topk_prob: bool                      # renormalize the top-k probabilities to sum to 1
    sparse_layers: tuple[int, ...]            # decoder layers with experts; the others have a dense MLP


@dataclass
class Config:
    model: str
    device: str | None = None                 # "cuda" when available, else "cpu"
    dtype: str | torch.dtype | None = None    # default: checkpoint's dtype on GPU, float32 on CPU
    max_model_len: int = 4096                 # prompt + output tokens of one sequence
    max_num_seqs: int | None = None           # lesson 08: sequences in one step (None: device_defaults)
    max_num_batched_tokens: int | None = None  # lesson 08: token budget of one step (None: device_defaults)
    kvcache_block_size: int = 256             # lesson 06: tokens per KV block (256: fastest on H100, see README)
    num_kvcache_blocks: int | None = None     # None: sized from memory (GPU: after a profiling pass)
    gpu_memory_utilization: float = 0.90      # share of GPU memory the engine may use
    cpu_kvcache_space_gib: float = 1.0        # KV-cache budget on CPU
    # lesson 09: "triton" (FlashAttention kernels) | "torch" (reference) | "triton-tma" (opt-in, issue 21:
    # prefill through aios/kernels/prefill_attention_tma.py's TMA loads; Hopper, bf16/fp16; on an H200 the
    # kernel is 1.15-1.28x prefill_attention, the 8B shape's long16k row +1.3%: BENCHMARKS.md)
    attention_backend: str = "triton"
    fused_kernels: bool = True                # lesson 10: Triton RMSNorm+residual, q/k-norm+RoPE, SiLU*mul
    # lesson 10: with fused_kernels, a one-token step runs add+RMSNorm and SiLU*up inside the next gemv
    # (aios/kernels/fused_gemv.py). Off by default: on an H200 it made batch-1 decode of the 8B shape
    # slower (BENCHMARKS.md, "The norm inside the gemv")
    fuse_norm_into_gemv: bool = False
    # lesson 10 / issue 21: with fused_kernels, a one-token step's gate_up gemv applies SiLU(gate) * up
    # in its epilogue (aios/kernels/gemv_silu_and_mul.py): two launches per MLP, not three (H200: a 0.6B
    # MLP 8.75 -> 7.80 us, the 8B's level; kernels/NOTES.md). Where fuse_norm_into_gemv is on too, its
    # forward_one_row wins (SiLU in down_proj)
    silu_in_gemv: bool = True
    # lesson 16 / issue 21: the MoE's grouped GEMMs, "triton" (aios/kernels/fused_moe.py) or "tma" (opt-in:
    # aios/kernels/fused_moe_tma.py, TMA loads of the experts and a persistent grid; Hopper; on an H200
    # level with "triton" at decode sizes, 3% faster at 4,096 tokens: kernels/NOTES.md)
    moe_gemm: str = "triton"
    # lesson 10 / issue 21: the GEMM of a linear layer's 2 ... 256 rows (a decode batch), with fused_kernels.
    # "cublas": F.linear. "skinny": 2 ... 64 rows through aios/kernels/skinny_gemm.py (on an H200 faster
    # on the 0.6B's narrow layers, slower at 32-64 rows of the 8B). "auto": each layer shape and decode
    # graph's row count through whichever of cuBLAS, cuBLASLt and skinny_gemm was fastest when timed at
    # start-up (aios/layers/gemm_choice.py). Opt-in (kernels/NOTES.md, "A few rows")
    decode_gemm: str = "cublas"
    enforce_eager: bool = False               # lesson 11: True turns CUDA graphs off
    async_scheduling: bool = True             # lesson 11: schedule step N+1 while the GPU runs step N
    tensor_parallel_size: int = 1             # lesson 14
    enable_prefix_caching: bool = True        # lesson 13
    enable_chunked_prefill: bool = True       # lesson 08: split long prompts across steps
    static_batching: bool = False             # lesson 07: admit a new batch only when the last one is done
    skip_tokenizer_init: bool = False         # prompts as token ids only, no text out (benchmarks)
    load_format: str = "auto"                 # "auto": safetensors; "dummy": random weights (benchmarks)
    cudagraph_batch_sizes: list[int] | None = None  # lesson 11: None -> [1, 2, 4, 8, 16, 32, ...]
    # lesson 11 / issue 21: a step holding prefill tokens (a new prompt beside the decodes) of at most this
    # many tokens replays a CUDA graph too (aios/engine/cuda_graph_mixed.py: 16, 32, 64, ... tokens); 0: such
    # steps run eagerly. None: MIXED_GRAPH_TOKENS where CUDA graphs run with attention_backend="triton"
    # (a server's steps: H200, 0.6B shape, Poisson 32 req/s, inter-token p99 33.1 -> 5.0 ms; BENCHMARKS.md)
    cudagraph_mixed_tokens: int | None = None
    seed: int = 0                             # seeds the engine's sampler for unseeded requests
    max_stop_strings: int = 32                # per request: each one is searched for after every token
    max_stop_string_len: int = 256            # characters; the stop check decodes this many tokens a step
    max_logprobs: int = 20                    # the largest logprobs / prompt_logprobs a request may ask (vLLM's)
    max_bad_words: int = 64                   # per request: each is tokenized at admission and checked every step
    max_logit_bias: int = 1024                # entries of a request's logit_bias: uploaded every step
    hf_config: ModelConfig = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not os.path.isdir(self.model):
            raise FileNotFoundError(f"model directory {self.model!r} does not exist")
        self.hf_config = ModelConfig.from_dir(self.model)
        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device='cuda' but torch sees no CUDA GPU")
        seqs, tokens = device_defaults(self.device)
        self.max_num_seqs = seqs if self.max_num_seqs is None else self.max_num_seqs
        self.max_num_batched_tokens = tokens if self.max_num_batched_tokens is None else self.max_num_batched_tokens
        checkpoint_dtype = parse_dtype(self.hf_config.torch_dtype, torch.bfloat16)
        self.dtype = parse_dtype(self.dtype, checkpoint_dtype if self.device != "cpu" else torch.float32)
        self.max_model_len = min(self.max_model_len, self.hf_config.max_position_embeddings)
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "kvcache_block_size",
                     "tensor_parallel_size", "max_stop_strings", "max_stop_string_len", "max_bad_words",
                     "max_logit_bias"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.max_logprobs, int) or isinstance(self.max_logprobs, bool) or self.max_logprobs < 0:
            raise ValueError(f"max_logprobs must be an int >= 0, got {self.max_logprobs!r}")
        if not (isinstance(self.gpu_memory_utilization, (int, float)) and 0.0 < self.gpu_memory_utilization <= 1.0):
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.num_kvcache_blocks is not None and self.num_kvcache_blocks < 1:
            raise ValueError(f"num_kvcache_blocks must be >= 1, got {self.num_kvcache_blocks}")
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError("without chunked prefill, max_num_batched_tokens must be >= max_model_len")
        if self.attention_backend not in ("triton", "triton-tma", "torch"):
            raise ValueError(f"attention_backend must be 'triton', 'triton-tma' or 'torch', "
                             f"got {self.attention_backend!r}")
        if self.moe_gemm not in ("triton", "tma"):
            raise ValueError(f"moe_gemm must be 'triton' or 'tma', got {self.moe_gemm!r}")
        if self.load_format not in ("auto", "dummy"):
            raise ValueError(f"load_format must be 'auto' or 'dummy', got {self.load_format!r}")
        if self.decode_gemm not in ("cublas", "skinny", "auto"):
            raise ValueError(f"decode_gemm must be 'cublas', 'skinny' or 'auto', got {self.decode_gemm!r}")
        m = self.cudagraph_mixed_tokens
        if m is None:
            m = default_mixed_graph_tokens(self.device, self.attention_backend, self.enforce_eager)
        if not isinstance(m, int) or isinstance(m, bool) or m < 0:
            raise ValueError(f"cudagraph_mixed_tokens must be an int >= 0 or None, got {m!r}")
        if m and self.attention_backend != "triton":
            raise ValueError(f"cudagraph_mixed_tokens needs attention_backend='triton' (its prefill kernel "
                             f"takes a static tile schedule), got {self.attention_backend!r}")
        self.cudagraph_mixed_tokens = min(m, self.max_num_batched_tokens)
        if self.cudagraph_batch_sizes is None:
            # every decode batch the scheduler can form replays a graph: sizes up to max_num_seqs
            top = self.max_num_seqs
            sizes = [1, 2, 4, 8] + list(range(16, top + 1, 16))
            self.cudagraph_batch_sizes = sorted({s for s in sizes if s <= top} | {top})

    def describe(self, num_kvcache_blocks: int) -> str:
        """The start-up line: what this engine runs with, the device-picked values named."""
        return (f"AIOS on {device_name(self.device)}: {self.dtype}, max_num_seqs={self.max_num_seqs}, "
                f"max_num_batched_tokens={self.max_num_batched_tokens}, max_model_len={self.max_model_len}, "
                f"{num_kvcache_blocks} KV blocks of {self.kvcache_block_size} tokens, CUDA graphs "
                + ("off" if self.enforce_eager or self.device == "cpu"
                   else f"for decode batches up to {max(self.cudagraph_batch_sizes)}"
                   + (f" and mixed steps up to {self.cudagraph_mixed_tokens} tokens"
                      if self.cudagraph_mixed_tokens else "")))


MIXED_GRAPH_TOKENS = 512    # vLLM's largest CUDA-graph size for steps holding prefill tokens, too


def default_mixed_graph_tokens(device: str, attention_backend: str, enforce_eager: bool) -> int:
    """Config.cudagraph_mixed_tokens=None: graphs for steps of up to MIXED_GRAPH_TOKENS tokens wherever
    CUDA graphs run and the prefill kernel takes a static tile table (attention_backend="triton");
    elsewhere 0 (the CPU, eager engines, the torch and triton-tma backends run such steps eagerly)."""
    if device == "cpu" or enforce_eager or attention_backend != "triton":
        return 0
    return MIXED_GRAPH_TOKENS


LARGE_GPU_GIB = 70      # vLLM's threshold: its offline LLM takes 1024 seqs / 16384 tokens a step above it


def device_defaults(device: str) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens) for a device, as vLLM's offline LLM picks them.

    A GPU of >= 70 GiB (H100, H200) holds the KV cache of a thousand short sequences, and a bigger
    batch keeps its tensor cores fed: 1024 sequences and 16,384 tokens a step. On an H200, 512 short
    requests of the Qwen3-0.6B shape ran at 27,242 output tok/s at 256 / 8192 and 47,723 at
    1024 / 16384 (BENCHMARKS.md, "Batch defaults picked from the GPU"). Smaller GPUs and the CPU take
    256 / 8192."""
    if device.startswith("cuda"):
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        if total >= LARGE_GPU_GIB * 2**30:
            return 1024, 16384
    return 256, 8192


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return "CPU"

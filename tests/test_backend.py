"""The kernels a model runs are chosen once, at construction, and the model holds one RoPE table.

- The engine builds its layers with the backend Config names (the references on a CPU); no layer
  has a switch to flip afterwards, and the torch backend launches no Triton kernel.
- The Triton backend, built on purpose (the kernels run under Triton's CPU interpreter here),
  computes what the torch backend computes, with or without the fused q/k-norm + RoPE + KV store.
- Every layer shares one cos/sin table of max_model_len rows.
"""

import pytest
import torch
import triton.runtime.interpreter
import triton.runtime.jit

from aios import LLM, SamplingParams
from aios.config import ModelConfig
from aios.layers.attention import Attention
from aios.layers.backend import TORCH, TORCH_ATTENTION, TRITON, TRITON_ATTENTION, Backend
from aios.layers.rotary_embedding import RotaryEmbedding
from aios.models.registry import build_model
from aios.utils.context import Context
from aios.utils.loader import load_model
from helpers import greedy, hf_greedy, random_prompts

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"      # the CPU runs the kernels in Triton's interpreter


@pytest.fixture
def triton_launches(monkeypatch) -> list[str]:
    """Names of the Triton kernels launched while the test runs (compiled or interpreted)."""
    launched: list[str] = []
    for cls in (triton.runtime.jit.JITFunction, triton.runtime.interpreter.InterpretedFunction):
        def run(self, *args, _run=cls.run, **kwargs):
            launched.append(self.fn.__name__)
            return _run(self, *args, **kwargs)
        monkeypatch.setattr(cls, "run", run)
    return launched


def test_the_engine_on_a_cpu_builds_every_layer_with_the_torch_references(tiny_ckpt, triton_launches):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", attention_backend="triton", fused_kernels=True)
    model = llm.model_runner.model
    assert not [name for name, m in model.named_modules() if hasattr(m, "use_triton")]
    attn = [m for m in model.modules() if isinstance(m, Attention)]
    assert attn and all(a.attn_backend is TORCH_ATTENTION and not a.fused_qk_norm_rope_store for a in attn)
    llm.generate([[5, 6, 7, 8]], SamplingParams(temperature=0.0, max_tokens=4), use_tqdm=False)
    llm.generate([[5, 6, 7, 8]], SamplingParams(temperature=0.8, max_tokens=4), use_tqdm=False)
    assert triton_launches == []


def test_backend_from_config_follows_the_switches_on_a_gpu_only(tiny_ckpt):
    class Cfg:
        device, attention_backend, fused_kernels = "cuda", "torch", True
        fuse_norm_into_gemv, silu_in_gemv, moe_gemm, decode_gemm = False, False, "triton", "cublas"
        dtype, kvcache_block_size = torch.float32, 256
        hf_config = ModelConfig.from_dir(tiny_ckpt)

    assert Backend.from_config(Cfg) == Backend(TORCH_ATTENTION, fused_kernels=True)
    Cfg.fuse_norm_into_gemv = True
    assert Backend.from_config(Cfg) == Backend(TORCH_ATTENTION, fused_kernels=True, fused_one_row=True)
    Cfg.fuse_norm_into_gemv, Cfg.silu_in_gemv = False, True
    assert Backend.from_config(Cfg) == Backend(TORCH_ATTENTION, fused_kernels=True, silu_in_gemv=True)
    Cfg.silu_in_gemv, Cfg.decode_gemm = False, "skinny"
    assert Backend.from_config(Cfg) == Backend(TORCH_ATTENTION, fused_kernels=True, skinny_gemm=True)
    Cfg.decode_gemm = "auto"                       # timed by the model runner, not a Backend switch
    assert Backend.from_config(Cfg) == Backend(TORCH_ATTENTION, fused_kernels=True)
    Cfg.attention_backend, Cfg.fused_kernels = "triton", False      # the one-row fusions need fused kernels
    assert Backend.from_config(Cfg) == Backend(TRITON_ATTENTION, fused_kernels=False)
    assert Backend.from_config(Cfg, torch.device("cpu")) == TORCH
    Cfg.attention_backend = "triton-tma"            # opt-in TMA prefill: its refusals come at start-up
    with pytest.raises(ValueError, match="bf16 or fp16"):
        Backend.from_config(Cfg)
    Cfg.device = "cpu"
    assert Backend.from_config(Cfg) == TORCH


def one_prefill_and_one_decode(model_dir: str, backend: Backend, prompt: list[int]) -> torch.Tensor:
    """Logits of a prefill of `prompt` and of one decode after it, on a model built with `backend`."""
    with torch.device(DEVICE):
        config = ModelConfig.from_dir(model_dir)
        model = build_model(config, backend=backend, max_model_len=64)
        load_model(model, model_dir)
        block_size, n = 16, len(prompt)
        for layer in (m for m in model.modules() if isinstance(m, Attention)):
            shape = (4, block_size, layer.num_kv_heads, layer.head_dim)
            layer.k_cache, layer.v_cache = torch.zeros(shape), torch.zeros(shape)
        i32 = dict(dtype=torch.int32)
        block_tables = torch.tensor([[2, 0, -1]], **i32)           # not block 0 first: the table is read
        slots = torch.tensor([2 * block_size + p if p < block_size else p - block_size for p in range(n + 1)])
        prefill = Context(is_prefill=True, slot_mapping=slots[:n], block_tables=block_tables,
                          context_lens=torch.tensor([n], **i32), cu_seqlens_q=torch.tensor([0, n], **i32),
                          cu_seqlens_k=torch.tensor([0, n], **i32), max_seqlen_q=n, max_seqlen_k=n)
        decode = Context(is_prefill=False, slot_mapping=slots[n:], block_tables=block_tables,
                         context_lens=torch.tensor([n + 1], **i32))
        with torch.inference_mode():
            first = model.compute_logits(model(torch.tensor(prompt), torch.arange(n), prefill)[-1:])
            second = model.compute_logits(model(torch.tensor([7]), torch.tensor([n]), decode))
        return torch.cat([first, second])


@pytest.mark.parametrize("backend", [TRITON, Backend(TRITON_ATTENTION, fused_kernels=False),
                                     Backend(TORCH_ATTENTION, fused_kernels=True)],
                         ids=["triton-fused", "triton-attention", "torch-attention-fused"])
def test_a_triton_backend_runs_its_kernels_and_computes_what_the_references_do(tiny_ckpt, backend,
                                                                              triton_launches):
    prompt = [11, 3, 250, 17, 9, 42, 100, 5, 77, 31, 8, 64, 2, 19, 300, 12, 6]   # crosses a 16-token block
    ref = one_prefill_and_one_decode(tiny_ckpt, TORCH, prompt)
    assert triton_launches == []
    got = one_prefill_and_one_decode(tiny_ckpt, backend, prompt)
    assert (got - ref).abs().max().item() < 1e-4
    launched = set(triton_launches)
    assert ("_qk_norm_rope_kernel" in launched) == backend.fused_kernels
    assert ("_store_kvcache_kernel" in launched) == (not backend.fused_kernels)   # the fused one stores instead
    assert ("_prefill_attention_kernel" in launched) == (backend.attention is TRITON_ATTENTION)


def test_one_rope_table_per_model_with_max_model_len_rows(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", max_model_len=100)
    model = llm.model_runner.model
    tables = [b for name, b in model.named_buffers(remove_duplicate=False) if name.endswith("cos_sin_cache")]
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(layers) == 2 and len(tables) >= len(layers)
    assert len({t.untyped_storage().data_ptr() for t in tables}) == 1
    assert all(layer.rotary_emb.cos_sin_cache is tables[0] for layer in layers)
    assert tables[0].shape == (100, llm.config.hf_config.head_dim)


def test_rope_of_a_family_without_qk_norm_matches_hf():
    from transformers import Qwen3Config
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding, apply_rotary_pos_emb

    head_dim, positions = 32, torch.tensor([0, 1, 5, 63, 17])
    hf_config = Qwen3Config(head_dim=head_dim, rope_theta=10000.0, max_position_embeddings=64)
    q, k = torch.randn(5, 4, head_dim), torch.randn(5, 2, head_dim)
    cos, sin = Qwen3RotaryEmbedding(hf_config)(q, positions[None])
    hf_q, hf_k = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin)
    rope = RotaryEmbedding(head_dim, 64, 10000.0)
    assert torch.allclose(rope(positions, q), hf_q[0].transpose(0, 1), atol=1e-6)
    assert torch.allclose(rope(positions, k), hf_k[0].transpose(0, 1), atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("attention_backend, fused_kernels", [("torch", False), ("triton", False), ("torch", True),
                                                              ("triton", True)])
def test_the_engine_on_a_gpu_launches_the_kernels_config_names_and_gives_hf_tokens(
        tiny_ckpt, triton_launches, attention_backend, fused_kernels):
    prompts = random_prompts(512, [3, 20, 40], seed=31)
    llm = LLM(tiny_ckpt, device="cuda", dtype="float32", kvcache_block_size=16, num_kvcache_blocks=64,
              max_model_len=512, enforce_eager=True, attention_backend=attention_backend,
              fused_kernels=fused_kernels)
    assert greedy(llm, prompts, 12) == hf_greedy(tiny_ckpt, prompts, 12)
    launched = set(triton_launches)
    assert ("_qk_norm_rope_kernel" in launched) == fused_kernels
    assert ("_rms_norm_kernel" in launched) == fused_kernels
    assert ("_store_kvcache_kernel" in launched) == (attention_backend == "triton" and not fused_kernels)
    assert ("_prefill_attention_kernel" in launched) == (attention_backend == "triton")
    if attention_backend == "torch" and not fused_kernels:
        assert launched == set()


@pytest.mark.gpu
def test_the_triton_backends_compute_what_the_references_do_on_the_gpu(tiny_ckpt):
    prompt = [11, 3, 250, 17, 9, 42, 100, 5, 77, 31, 8, 64, 2, 19, 300, 12, 6]
    ref = one_prefill_and_one_decode(tiny_ckpt, TORCH, prompt)
    for backend in (TRITON, Backend(TRITON_ATTENTION, fused_kernels=False), Backend(TORCH_ATTENTION, True)):
        assert (one_prefill_and_one_decode(tiny_ckpt, backend, prompt) - ref).abs().max().item() < 1e-4

"""RoPE scaling (aios/layers/rotary_embedding.py) is HF's: the inverse frequencies of "linear" and
"llama3" equal ROPE_INIT_FUNCTIONS' bit for bit, the cos/sin table equals HF's rotary embedding at
positions far past original_max_position_embeddings, and any other rope_type is an error naming it."""

import math

import pytest
import torch

from aios.layers.rotary_embedding import RotaryEmbedding, scale_inv_freq


def rope_inv_freq(head_dim: int, theta: float, rope: dict | None = None) -> torch.Tensor:
    """The table's inverse frequencies, as RotaryEmbedding computes them."""
    return scale_inv_freq(1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)), rope)

LLAMA31_8B = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 8192}
LLAMA32_1B = {**LLAMA31_8B, "factor": 32.0}
TINY_LLAMA3 = {**LLAMA31_8B, "original_max_position_embeddings": 32}


def hf_llama_config(head_dim: int, theta: float, rope: dict | None):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim, max_position_embeddings=256,
                       rope_parameters={"rope_theta": theta, **(rope or {"rope_type": "default"})})


@pytest.mark.parametrize("head_dim, theta, rope", [
    (128, 500000.0, LLAMA31_8B),              # Llama 3.1 8B / 70B / 405B, 3.3 70B
    (64, 500000.0, LLAMA32_1B),               # Llama 3.2 1B
    (32, 500000.0, TINY_LLAMA3),              # the tests' tiny Llama
    (128, 10000.0, {"rope_type": "linear", "factor": 4.0}),
    (64, 1e6, None),
], ids=["llama3.1-8b", "llama3.2-1b", "tiny-llama3", "linear", "default"])
def test_inv_freq_equals_hf_rope_init_functions_exactly(head_dim, theta, rope):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = hf_llama_config(head_dim, theta, rope)
    kind = (rope or {}).get("rope_type", "default")
    init = LlamaRotaryEmbedding.compute_default_rope_parameters if kind == "default" else ROPE_INIT_FUNCTIONS[kind]
    want, attention_factor = init(config, device="cpu")
    assert attention_factor == 1.0                # cos/sin unscaled: the table needs nothing more
    assert torch.equal(rope_inv_freq(head_dim, theta, rope), want)


def test_llama3_keeps_short_wavelengths_slows_long_ones_and_blends_the_band_between():
    base = rope_inv_freq(128, 500000.0)
    scaled = rope_inv_freq(128, 500000.0, LLAMA31_8B)
    wavelen = 2 * math.pi / base
    short, long = wavelen < 8192 / 4, wavelen > 8192 / 1
    band = ~short & ~long
    assert short.any() and long.any() and band.any()
    assert torch.equal(scaled[short], base[short])
    assert torch.allclose(scaled[long], base[long] / 8.0)
    assert ((scaled[band] < base[band]) & (scaled[band] > base[band] / 8.0)).all()


@pytest.mark.parametrize("rope", [TINY_LLAMA3, {"rope_type": "linear", "factor": 2.0}], ids=["llama3", "linear"])
def test_cos_sin_table_equals_hf_rotary_embedding_past_the_original_context(rope):
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    head_dim, positions = 32, torch.arange(256)              # 8x the tiny original context of 32
    cos, sin = LlamaRotaryEmbedding(hf_llama_config(head_dim, 500000.0, rope))(torch.zeros(1), positions[None])
    table = RotaryEmbedding(head_dim, 256, 500000.0, rope).cos_sin_cache
    half = head_dim // 2
    assert torch.allclose(table[:, :half], cos[0, :, :half], atol=1e-6)
    assert torch.allclose(table[:, half:], sin[0, :, :half], atol=1e-6)
    unscaled = RotaryEmbedding(head_dim, 256, 500000.0).cos_sin_cache
    assert not torch.allclose(table[64:], unscaled[64:], atol=1e-3)   # the scaling is really applied


@pytest.mark.parametrize("kind", ["yarn", "dynamic", "longrope", "proportional", "su"])
def test_an_unimplemented_rope_type_is_an_error_naming_it(kind):
    with pytest.raises(ValueError, match=f"rope_type '{kind}' is not supported"):
        RotaryEmbedding(32, 64, 10000.0, {"rope_type": kind, "factor": 2.0})


def test_the_old_type_key_is_read_as_rope_type():
    assert torch.equal(rope_inv_freq(32, 1e4, {"type": "linear", "factor": 2.0}), rope_inv_freq(32, 1e4) / 2.0)
    with pytest.raises(ValueError, match="rope_type 'yarn'"):
        rope_inv_freq(32, 1e4, {"type": "yarn", "factor": 2.0})


def test_a_llama3_scaling_without_one_of_its_fields_is_an_error_naming_it():
    for name in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
        rope = {k: v for k, v in LLAMA31_8B.items() if k != name}
        with pytest.raises(ValueError, match=f"lacks '{name}'"):
            rope_inv_freq(128, 500000.0, rope)

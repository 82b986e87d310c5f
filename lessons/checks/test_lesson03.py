"""Lesson 03: plain-torch causal attention, a safetensors loader into lesson 03's unfused model, and
greedy decoding with no cache, against torch's SDPA and HuggingFace's model."""

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from lessons.common import load_module

LESSON = "03"
unfused_model = load_module("03_own_the_model/unfused_model.py")
PROMPT_IDS = [5, 17, 42, 99, 7]


def sdpa(q, k, v, scale):
    """The oracle: torch's scaled_dot_product_attention, GQA heads repeated, bottom-right causal mask."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    num_q, num_k = q.shape[0], k.shape[0]
    mask = torch.arange(num_k)[None, :] <= torch.arange(num_k - num_q, num_k)[:, None]     # [num_q, num_k]
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                                           attn_mask=mask, scale=scale)
    return out.transpose(0, 1)


def hf_logits(model_dir: str, ids: list[int]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0]


def hf_greedy(model_dir: str, ids: list[int], n: int) -> list[int]:
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                          do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


def last_logits(model, ids: list[int]) -> torch.Tensor:
    forward = load_module("03_own_the_model/no_cache_loop.py").forward
    return forward(model, torch.tensor(ids), torch.arange(len(ids)))


@pytest.fixture(scope="module")
def tied_ckpt(tmp_path_factory) -> str:
    from aios.utils.tiny_checkpoint import make_checkpoint
    return make_checkpoint(str(tmp_path_factory.mktemp("tiny-qwen3-tied")), tie_word_embeddings=True)


@pytest.mark.readme("Build it: causal_attention")
@pytest.mark.parametrize("num_q,num_k", [(6, 6), (1, 9), (3, 8)], ids=["prefill", "decode", "chunk"])
def test_causal_attention_equals_sdpa_with_gqa(impl, num_q, num_k):
    torch.manual_seed(0)
    q = torch.randn(num_q, 4, 16)
    k, v = torch.randn(num_k, 2, 16), torch.randn(num_k, 2, 16)
    out = impl.causal_attention(q, k, v, 0.25)
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out, sdpa(q, k, v, 0.25), atol=1e-5, rtol=1e-5)


@pytest.mark.readme("Build it: load_weights")
def test_load_weights_copies_every_tensor_by_name_and_gives_hfs_logits(impl, tiny_ckpt):
    model = unfused_model.build(tiny_ckpt)
    impl.load_weights(model, tiny_ckpt)
    params = dict(model.named_parameters())
    for name, tensor in load_file(os.path.join(tiny_ckpt, "model.safetensors")).items():
        assert torch.equal(params[name], tensor), name
    torch.testing.assert_close(last_logits(model, PROMPT_IDS), hf_logits(tiny_ckpt, PROMPT_IDS)[-1],
                               atol=1e-4, rtol=1e-4)


@pytest.mark.readme("Build it: load_weights")
def test_load_weights_fills_a_tied_lm_head_from_the_embedding(impl, tied_ckpt):
    model = unfused_model.build(tied_ckpt)
    impl.load_weights(model, tied_ckpt)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    torch.testing.assert_close(last_logits(model, PROMPT_IDS), hf_logits(tied_ckpt, PROMPT_IDS)[-1],
                               atol=1e-4, rtol=1e-4)


@pytest.mark.readme("Build it: load_weights")
@pytest.mark.parametrize("fault", ["renamed", "missing"])
def test_load_weights_fails_loudly_on_a_tensor_it_cannot_place(impl, tiny_ckpt, tmp_path, fault):
    tensors = load_file(os.path.join(tiny_ckpt, "model.safetensors"))
    name = "model.layers.1.self_attn.k_proj.weight"
    weight = tensors.pop(name)
    if fault == "renamed":
        tensors[name.replace("k_proj", "key_proj")] = weight
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(open(os.path.join(tiny_ckpt, "config.json")).read())
    with pytest.raises(ValueError, match="key_proj" if fault == "renamed" else "k_proj"):
        impl.load_weights(unfused_model.build(str(tmp_path)), str(tmp_path))


@pytest.fixture(scope="module")
def loaded(tiny_ckpt):
    from aios.utils.loader import load_model
    model = unfused_model.build(tiny_ckpt)
    load_model(model, tiny_ckpt)
    return model


@pytest.mark.readme("Build it: generate_no_cache")
def test_generate_no_cache_gives_hfs_greedy_tokens(impl, tiny_ckpt, loaded):
    got = impl.generate_no_cache(loaded, PROMPT_IDS, 10)
    assert got == hf_greedy(tiny_ckpt, PROMPT_IDS, 10)


@pytest.mark.readme("Build it: generate_no_cache")
def test_generate_no_cache_runs_the_whole_sequence_every_step(impl, loaded):
    lengths = []
    hook = loaded.model.embed_tokens.register_forward_hook(lambda mod, args, out: lengths.append(len(args[0])))
    try:
        assert len(impl.generate_no_cache(loaded, PROMPT_IDS, 4)) == 4
        assert impl.generate_no_cache(loaded, PROMPT_IDS, 0) == []
    finally:
        hook.remove()
    assert lengths == [len(PROMPT_IDS) + i for i in range(4)], "one forward per new token, over all tokens so far"

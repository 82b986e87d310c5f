"""Lesson 10: checkpoint tensors into fused weights (q/k/v -> qkv_proj, gate/up -> gate_up_proj)
through packed_modules_mapping, against the separate matmuls and aios's loader; then the real engine
on your loader."""

import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from aios import LLM, SamplingParams
from aios.config import ModelConfig
from aios.engine.step_inputs import build_step_inputs
from aios.layers.linear import MergedColumnParallelLinear, QKVParallelLinear
from aios.models.qwen3 import Qwen3ForCausalLM
from aios.utils.loader import load_model as aios_load_model

LESSON = "10"


@pytest.mark.readme("Build it: the shard loaders")
def test_qkv_shards_land_in_their_rows_and_one_matmul_equals_three(impl):
    g = torch.Generator().manual_seed(0)
    layer = QKVParallelLinear(hidden_size=16, head_dim=4, total_num_heads=4, total_num_kv_heads=2)
    layer.weight.data.zero_()
    w = {"q": torch.randn(16, 16, generator=g), "k": torch.randn(8, 16, generator=g),
         "v": torch.randn(8, 16, generator=g)}
    for shard in ("v", "q", "k"):                    # any order: each shard has its own rows
        impl.qkv_weight_loader(layer, layer.weight, w[shard], shard)
    assert torch.equal(layer.weight, torch.cat([w["q"], w["k"], w["v"]]))
    x = torch.randn(3, 16, generator=g)
    separate = torch.cat([F.linear(x, w[s]) for s in "qkv"], dim=-1)
    assert torch.allclose(layer(x), separate, atol=1e-6)


@pytest.mark.readme("Build it: the shard loaders")
def test_gate_up_shards_land_in_their_rows(impl):
    g = torch.Generator().manual_seed(1)
    layer = MergedColumnParallelLinear(8, [12, 12])
    layer.weight.data.zero_()
    gate, up = torch.randn(12, 8, generator=g), torch.randn(12, 8, generator=g)
    impl.gate_up_weight_loader(layer, layer.weight, up, 1)
    impl.gate_up_weight_loader(layer, layer.weight, gate, 0)
    assert torch.equal(layer.weight, torch.cat([gate, up]))


def build(model_dir: str) -> Qwen3ForCausalLM:
    model = Qwen3ForCausalLM(ModelConfig.from_dir(model_dir))
    for p in model.parameters():
        p.data.fill_(float("nan"))                   # a parameter the loader misses stays NaN
    return model


@pytest.mark.readme("Build it: load_model")
def test_load_model_fills_every_parameter_as_aios_does(impl, tiny_ckpt):
    mine, want = build(tiny_ckpt), build(tiny_ckpt)
    impl.load_model(mine, tiny_ckpt)
    aios_load_model(want, tiny_ckpt)
    got = dict(mine.named_parameters())
    for name, p in want.named_parameters():
        assert torch.equal(got[name], p), f"{name} differs from aios's loader"
    hf = load_file(os.path.join(tiny_ckpt, "model.safetensors"))
    qkv = got["model.layers.1.self_attn.qkv_proj.weight"]
    assert torch.equal(qkv, torch.cat([hf[f"model.layers.1.self_attn.{n}_proj.weight"] for n in "qkv"]))


@pytest.mark.readme("Build it: load_model")
def test_a_checkpoint_missing_a_tensor_is_an_error(impl, tiny_ckpt, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_ckpt, broken)
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="norm"):
        impl.load_model(build(str(broken)), str(broken))


@pytest.mark.readme("Build it")
def test_the_engine_on_your_loader_gives_the_same_logits_and_tokens(impl, tiny_ckpt):
    g = torch.Generator().manual_seed(10)
    prompts = [torch.randint(3, 512, (n,), generator=g).tolist() for n in (5, 23)]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    ref = LLM(tiny_ckpt, device="cpu", dtype="float32")
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", weight_loader=impl.load_model)
    n = len(prompts[1])
    block_size = ref.config.kvcache_block_size
    inputs = build_step_inputs(np.asarray(prompts[1], np.int64), np.array([0]), np.array([n]),
                               np.arange((n + block_size - 1) // block_size, dtype=np.int32)[None],
                               np.arange(n), block_size)            # every position's logits, one prefill
    logits = [m.model_runner.execute(inputs) for m in (ref, llm)]
    assert logits[0].shape == (n, 512) and torch.equal(*logits)
    for (name, p), (_, q) in zip(ref.model_runner.model.named_parameters(), llm.model_runner.model.named_parameters()):
        assert torch.equal(p, q), f"{name} differs from aios's loader"
    assert [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)] == \
        [o["token_ids"] for o in ref.generate(prompts, params, use_tqdm=False)]

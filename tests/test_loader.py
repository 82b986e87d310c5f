"""Loading checkpoints: clear errors naming the file for anything missing or malformed."""

import json
import os
import shutil

import pytest
import torch

from aios import LLM
from aios.config import ModelConfig


def copy_ckpt(src: str, dst) -> str:
    dst = str(dst)
    shutil.copytree(src, dst)
    return dst


def test_unknown_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LLM(str(tmp_path / "nope"), device="cpu")


def test_missing_config_names_the_file(tiny_ckpt, tmp_path):
    d = copy_ckpt(tiny_ckpt, tmp_path / "m")
    os.remove(os.path.join(d, "config.json"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        LLM(d, device="cpu")


def test_malformed_config_names_the_file(tiny_ckpt, tmp_path):
    d = copy_ckpt(tiny_ckpt, tmp_path / "m")
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="config.json"):
        LLM(d, device="cpu")


def test_missing_weights_is_a_clear_error(tiny_ckpt, tmp_path):
    d = copy_ckpt(tiny_ckpt, tmp_path / "m")
    os.remove(os.path.join(d, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        LLM(d, device="cpu")


def test_corrupt_safetensors_names_the_file(tiny_ckpt, tmp_path):
    d = copy_ckpt(tiny_ckpt, tmp_path / "m")
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="model.safetensors"):
        LLM(d, device="cpu")


def test_checkpoint_lacking_a_tensor_names_it(tiny_ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    d = copy_ckpt(tiny_ckpt, tmp_path / "m")
    path = os.path.join(d, "model.safetensors")
    tensors = load_file(path)
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, path)
    with pytest.raises(ValueError, match="down_proj"):
        LLM(d, device="cpu")


def with_config(src: str, dst, **changes) -> str:
    """A copy of checkpoint src whose config.json has `changes` (None deletes a field)."""
    d = copy_ckpt(src, dst)
    path = os.path.join(d, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    with open(path, "w") as f:
        json.dump(cfg, f)
    return d


def test_a_model_type_that_contradicts_the_architecture_is_refused(tiny_ckpt, tmp_path):
    d = with_config(tiny_ckpt, tmp_path / "m", model_type="llama")
    with pytest.raises(ValueError, match="'qwen3' family but model_type is 'llama'"):
        LLM(d, device="cpu")


def test_an_unknown_architecture_is_an_error_naming_it_and_the_supported_ones(tiny_ckpt, tmp_path):
    d = with_config(tiny_ckpt, tmp_path / "m", architectures=["GPT2LMHeadModel"], model_type="gpt2")
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel.*not supported; supported: Qwen3ForCausalLM"):
        LLM(d, device="cpu")
    d = with_config(tiny_ckpt, tmp_path / "n", architectures=None, model_type="phi3")
    with pytest.raises(ValueError, match=r"model_type 'phi3' is not supported; supported: Qwen3ForCausalLM"):
        ModelConfig.from_dir(d)


@pytest.mark.parametrize("changes", [dict(model_type=None), dict(architectures=None)],
                         ids=["by-architectures", "by-model_type"])
def test_qwen3_is_found_by_its_architecture_or_by_its_model_type(tiny_ckpt, tmp_path, changes):
    from aios.models.qwen3 import Qwen3ForCausalLM
    from aios.models.registry import build_model

    config = ModelConfig.from_dir(with_config(tiny_ckpt, tmp_path / "m", **changes))
    assert config.model_type == "qwen3"
    with torch.device("meta"):
        assert type(build_model(config)) is Qwen3ForCausalLM


@pytest.mark.parametrize("field, value", [
    ("attention_bias", True),
    ("use_sliding_window", True),
    ("hidden_act", "gelu"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}),
    ("rope_parameters", {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}),
])
def test_a_config_field_that_changes_the_math_and_is_not_implemented_is_an_error_naming_it(
        tiny_ckpt, tmp_path, field, value):
    d = with_config(tiny_ckpt, tmp_path / "m", **{field: value})
    with pytest.raises(ValueError, match=f"{field}=.* is not supported for Qwen3"):
        ModelConfig.from_dir(d)

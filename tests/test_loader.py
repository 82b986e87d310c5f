"""Loading checkpoints: clear errors naming the file for anything missing or malformed."""

import json
import os
import shutil

import pytest

from aios import LLM


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


def test_non_qwen3_model_type_is_refused(tiny_ckpt, tmp_path):
    d = copy_ckpt(tiny_ckpt, tmp_path / "m")
    path = os.path.join(d, "config.json")
    cfg = json.load(open(path))
    cfg["model_type"] = "llama"
    json.dump(cfg, open(path, "w"))
    with pytest.raises(ValueError, match="qwen3"):
        LLM(d, device="cpu")

"""The fused MoE's measured tile tables (aios/kernels/moe_tiles.py): which entry a call takes, the
files' format and names, and that the engine's FusedMoE and fused_moe_config use them."""

import json

import pytest
import torch

from aios.kernels.fused_moe import fused_moe_config
from aios.kernels.moe_tiles import CONFIG_DIR, TILE_KEYS, MoeTiles, tiles_file_name


def tiles(block_m: int, silu_in_gemm: bool = True) -> dict:
    return dict(block_m=block_m, block_n=64, block_k=64, num_warps=4, num_stages=3, silu_in_gemm=silu_in_gemm)


TABLE = MoeTiles.from_dict({"16": tiles(16), "256": tiles(32), "4096": tiles(64, False)})


@pytest.mark.parametrize("num_tokens, block_m", [(1, 16), (16, 16), (63, 16), (65, 32), (256, 32),
                                                 (1023, 32), (1025, 64), (100_000, 64)])
def test_a_call_takes_the_entry_measured_nearest_on_a_log_scale(num_tokens, block_m):
    # 64 is the geometric midpoint of 16 and 256, 1024 that of 256 and 4096
    assert TABLE.choose(num_tokens)["block_m"] == block_m


def test_choose_returns_a_copy_the_caller_may_change():
    TABLE.choose(16)["block_m"] = 128
    assert TABLE.choose(16)["block_m"] == 16


def test_save_then_load_gives_the_same_table_under_vllms_file_name(tmp_path):
    path = TABLE.save(128, 768, "NVIDIA H200", tmp_path)
    assert path.name == "E=128,N=768,device_name=NVIDIA_H200.json"
    assert MoeTiles.load(128, 768, "NVIDIA H200", tmp_path) == TABLE
    assert MoeTiles.load(128, 384, "NVIDIA H200", tmp_path) is None          # another shape: no table
    assert MoeTiles.load(128, 768, "NVIDIA H100 80GB HBM3", tmp_path) is None


@pytest.mark.parametrize("bad", [{}, {"0": tiles(16)}, {"16": {k: 1 for k in TILE_KEYS if k != "num_stages"}}])
def test_a_malformed_table_is_refused(bad):
    with pytest.raises(ValueError):
        MoeTiles.from_dict(bad)


def test_fused_moe_config_uses_the_table_on_a_gpu_and_the_rule_without_one():
    cuda = torch.device("cuda")
    assert fused_moe_config(256, 8, cuda, TABLE) == tiles(32)
    assert fused_moe_config(256, 8, cuda)["block_m"] == 64                   # the rule: 2,048 pairs
    assert fused_moe_config(4096, 8, torch.device("cpu"), TABLE)["block_m"] == 16   # the interpreter's tiles


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.json")), ids=lambda p: p.name)
def test_every_committed_table_parses_and_covers_decode_and_prefill(path):
    table = MoeTiles.from_dict(json.loads(path.read_text()))
    num_experts, inter = (int(part.split("=")[1]) for part in path.stem.split(",")[:2])
    assert path.name == tiles_file_name(num_experts, inter, path.stem.split("device_name=")[1])
    measured = [t for t, _ in table.by_num_tokens]
    assert min(measured) <= 64 and max(measured) >= 4096, measured
    for _, entry in table.by_num_tokens:
        assert entry["block_m"] in (16, 32, 64, 128) and entry["num_warps"] in (4, 8)


def test_the_layer_holds_no_table_off_the_gpu():
    from aios.layers.fused_moe import FusedMoE
    assert FusedMoE(128, 64, 32).tiles is None

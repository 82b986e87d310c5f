"""Measured tile sizes of the fused MoE's grouped GEMMs, one table per MoE shape and GPU (lesson 16).

The grouped GEMM's best tiles depend on how many (token, expert) pairs each expert gets: a decode
batch of 64 tokens at top-8 over 128 experts gives each expert ~4 rows, a 16k-token prefill chunk
~1,000. No one formula picks well across that range on every GPU, so, as vLLM does, the tiles are
measured: `benchmarks/tune_moe.py` times every candidate at a ladder of token counts on the GPU and
writes one JSON file per (experts, intermediate size per rank, GPU name) into
aios/kernels/configs/fused_moe/, named as vLLM names its own:

    E=128,N=768,device_name=NVIDIA_H200.json     {"64": {"block_m": 16, "block_n": 64, ...}, ...}

Each entry holds `block_m`, `block_n`, `block_k`, `num_warps`, `num_stages` and `silu_in_gemm`
(the SiLU inside the first GEMM, or a launch of its own). The opt-in TMA kernel
(aios/kernels/fused_moe_tma.py) has tables of its own beside these, `gemm="tma"`:
`...,device_name=NVIDIA_H200,gemm=tma.json`, whose entries also hold `programs_per_sm`.
A call with T tokens takes the entry of the nearest measured token count (on a log scale: 96
tokens is as near 64 as 128). A shape or GPU without a file uses `fused_moe_config`'s rule (aios/kernels/fused_moe.py).

The table is read once, when the FusedMoE layer is built (aios/layers/fused_moe.py), and the
layer owns it; nothing here is module-level state.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs" / "fused_moe"
TILE_KEYS = ("block_m", "block_n", "block_k", "num_warps", "num_stages", "silu_in_gemm")
GEMM_KEYS = {None: TILE_KEYS, "tma": (*TILE_KEYS, "programs_per_sm")}     # the keys each kernel's table keeps


def tiles_file_name(num_experts: int, intermediate_size: int, device_name: str, gemm: str | None = None) -> str:
    """vLLM's naming: E experts, N = the intermediate size each rank holds, the GPU's name; and
    `,gemm=tma` for the TMA kernel's table."""
    suffix = "" if gemm is None else f",gemm={gemm}"
    return f"E={num_experts},N={intermediate_size},device_name={device_name.replace(' ', '_')}{suffix}.json"


@dataclass(frozen=True)
class MoeTiles:
    """{num_tokens: tile dict} for one MoE shape on one GPU, as benchmarks/tune_moe.py measured it."""

    by_num_tokens: tuple[tuple[int, dict], ...]                     # ascending num_tokens

    def __post_init__(self) -> None:
        if not self.by_num_tokens:
            raise ValueError("a tile table needs at least one entry")
        for num_tokens, tiles in self.by_num_tokens:
            missing = [k for k in TILE_KEYS if k not in tiles]
            if num_tokens < 1 or missing:
                raise ValueError(f"tile table entry {num_tokens}: needs num_tokens >= 1 and {TILE_KEYS}, "
                                 f"missing {missing}")

    def choose(self, num_tokens: int) -> dict:
        """The entry measured nearest num_tokens (log scale); a fresh dict the caller may change."""
        log_t = math.log(max(num_tokens, 1))
        _, tiles = min(self.by_num_tokens, key=lambda entry: abs(math.log(entry[0]) - log_t))
        return dict(tiles)

    @classmethod
    def from_dict(cls, table: dict, keys: tuple[str, ...] = TILE_KEYS) -> MoeTiles:
        return cls(tuple(sorted((int(t), {k: table[t][k] for k in keys if k in table[t]}) for t in table)))

    def to_dict(self) -> dict:
        return {str(t): tiles for t, tiles in self.by_num_tokens}

    @classmethod
    def load(cls, num_experts: int, intermediate_size: int, device_name: str,
             config_dir: Path = CONFIG_DIR, gemm: str | None = None) -> MoeTiles | None:
        """The measured table for this shape, GPU and kernel (`gemm`), or None where none was measured."""
        path = Path(config_dir) / tiles_file_name(num_experts, intermediate_size, device_name, gemm)
        if not path.exists():
            return None
        with open(path) as f:
            return cls.from_dict(json.load(f), GEMM_KEYS[gemm])

    def save(self, num_experts: int, intermediate_size: int, device_name: str,
             config_dir: Path = CONFIG_DIR, gemm: str | None = None) -> Path:
        path = Path(config_dir) / tiles_file_name(num_experts, intermediate_size, device_name, gemm)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")
        return path

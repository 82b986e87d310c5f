"""`pytest --shard K/N` (tests/sharding.py) splits the selected tests into parts that cover each once."""

import subprocess
import sys
from pathlib import Path

import pytest
from sharding import parse_shard, shard_files

COUNTS = {"tests/test_a.py": 40, "tests/test_b.py": 3, "tests/test_c.py": 17, "tests/test_d.py": 17,
          "tests/test_e.py": 1, "tests/test_f.py": 25}


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_the_parts_cover_every_file_once_and_are_balanced(n):
    parts = [shard_files(COUNTS, k, n) for k in range(1, n + 1)]
    assert sorted(f for part in parts for f in part) == sorted(COUNTS)
    loads = [sum(COUNTS[f] for f in part) for part in parts]
    assert max(loads) - min(loads) <= max(COUNTS.values())
    assert parts == [shard_files(dict(reversed(COUNTS.items())), k, n) for k in range(1, n + 1)]


@pytest.mark.parametrize("value", ["2", "0/2", "3/2", "a/b", "1/2/3"])
def test_a_malformed_shard_is_an_error_naming_it(value):
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(value)


def test_pytest_runs_each_selected_test_in_exactly_one_part():
    here = Path(__file__).parent
    files = [str(here / name) for name in ("test_sharding.py", "test_moe_tiles.py", "test_block_manager.py")]

    def collected(*extra):
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                              *extra, *files], capture_output=True, text=True, cwd=here.parent).stdout
        return {line for line in out.splitlines() if "::" in line}

    everything = collected()
    parts = [collected("--shard", f"{k}/2") for k in (1, 2)]
    assert everything and parts[0] and parts[1]
    assert not parts[0] & parts[1] and parts[0] | parts[1] == everything

"""`pytest --shard K/N`: the K-th of N parts of the selected tests, whole files each.

A full `pytest -m gpu` on a fresh H200 machine (cold Triton cache) takes about as long as one
device call may run (~600 s), so it is run as N calls of one commit: `--shard 1/2`, then `--shard
2/2`. Whole files stay together (module fixtures build checkpoints once). Files go to the part with
the fewest tests so far, largest file first: a deterministic split that covers every selected test
exactly once, whatever -m and -k chose.
"""

from __future__ import annotations


def parse_shard(value: str) -> tuple[int, int]:
    """'K/N' -> (K, N), 1 <= K <= N; a ValueError naming the value otherwise."""
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes K/N (e.g. 1/2), not {value!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard {value}: K must be in 1..N")
    return k, n


def shard_files(tests_per_file: dict[str, int], k: int, n: int) -> set[str]:
    """The files of part k of n."""
    loads, parts = [0] * n, [set() for _ in range(n)]
    for path, count in sorted(tests_per_file.items(), key=lambda kv: (-kv[1], kv[0])):
        lightest = min(range(n), key=lambda i: (loads[i], i))
        loads[lightest] += count
        parts[lightest].add(path)
    return parts[k - 1]

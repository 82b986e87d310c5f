"""Lesson 14: column- and row-parallel linear layers against one nn.Linear: shapes, the shards each
rank loads, the partial sums, and two real CPU ranks over gloo (one spawned process) whose
column -> row pair gives the single-device output on both ranks."""

import importlib
import multiprocessing
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from aios.distributed.tp_group import TPGroup

LESSON = "14"
IN, HIDDEN, OUT = 8, 12, 6
TIMEOUT = timedelta(seconds=30)              # a rank that never joins a collective fails the check, no hang


def full_weights():
    g = torch.Generator().manual_seed(0)
    return {"w1": torch.randn(HIDDEN, IN, generator=g), "b1": torch.randn(HIDDEN, generator=g),
            "w2": torch.randn(OUT, HIDDEN, generator=g), "b2": torch.randn(OUT, generator=g),
            "x": torch.randn(3, IN, generator=g)}


def load(layer, weight, bias=None):
    layer.weight.weight_loader(layer.weight, weight)
    if bias is not None:
        layer.bias.weight_loader(layer.bias, bias)
    return layer


class RecordingTP:
    """A stand-in group for one rank of `size` in one process: all_reduce records what it got and
    returns it unchanged (the test adds the ranks' partials up itself)."""

    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size, self.reduced = rank, size, []

    def all_reduce(self, x):
        self.reduced.append(x.clone())
        return x


@pytest.mark.readme("Build it: column parallel")
def test_column_parallel_holds_this_ranks_output_rows(impl):
    w = full_weights()
    for rank in (0, 1):
        layer = load(impl.ColumnParallelLinear(IN, HIDDEN, bias=True, tp=TPGroup(rank, 2)), w["w1"], w["b1"])
        rows = slice(rank * HIDDEN // 2, (rank + 1) * HIDDEN // 2)
        assert layer.weight.shape == (HIDDEN // 2, IN) and layer.bias.shape == (HIDDEN // 2,)
        assert torch.equal(layer.weight, w["w1"][rows]) and torch.equal(layer.bias, w["b1"][rows])
        assert torch.allclose(layer(w["x"]), F.linear(w["x"], w["w1"], w["b1"])[:, rows], atol=1e-5), \
            "a column-parallel rank computes its slice of the output, with no communication"
    with pytest.raises(ValueError):
        impl.ColumnParallelLinear(IN, 7, tp=TPGroup(0, 2))


@pytest.mark.readme("Build it: row parallel")
def test_row_parallel_holds_this_ranks_input_columns_and_the_whole_bias(impl):
    w = full_weights()
    for rank in (0, 1):
        layer = load(impl.RowParallelLinear(HIDDEN, OUT, bias=True, tp=TPGroup(rank, 2)), w["w2"], w["b2"])
        cols = slice(rank * HIDDEN // 2, (rank + 1) * HIDDEN // 2)
        assert layer.weight.shape == (OUT, HIDDEN // 2) and layer.bias.shape == (OUT,)
        assert torch.equal(layer.weight, w["w2"][:, cols]) and torch.equal(layer.bias, w["b2"])
    with pytest.raises(ValueError):
        impl.RowParallelLinear(7, OUT, tp=TPGroup(0, 2))


@pytest.mark.readme("Build it: row parallel")
def test_row_parallel_partials_sum_to_the_full_matmul_and_the_bias_is_added_once(impl):
    w = full_weights()
    h = torch.relu(F.linear(w["x"], w["w1"], w["b1"]))                   # the full hidden activations
    partials = []
    for rank in (0, 1):
        tp = RecordingTP(rank, 2)
        layer = load(impl.RowParallelLinear(HIDDEN, OUT, bias=True, tp=tp), w["w2"], w["b2"])
        out = layer(h[:, rank * HIDDEN // 2:(rank + 1) * HIDDEN // 2])
        assert len(tp.reduced) == 1, "one all-reduce per forward"
        assert torch.allclose(out, tp.reduced[0] + w["b2"], atol=1e-6), "the bias goes on after the all-reduce"
        partials.append(tp.reduced[0])
    assert torch.allclose(sum(partials), h @ w["w2"].T, atol=1e-5), "the ranks' partial outputs sum to x @ W^T"


@pytest.mark.readme("Build it")
def test_one_rank_is_a_plain_linear_layer(impl):
    w = full_weights()
    col = load(impl.ColumnParallelLinear(IN, HIDDEN, bias=True), w["w1"], w["b1"])
    row = load(impl.RowParallelLinear(HIDDEN, OUT, bias=False), w["w2"])
    want = F.linear(torch.relu(F.linear(w["x"], w["w1"], w["b1"])), w["w2"])
    assert torch.allclose(row(torch.relu(col(w["x"]))), want, atol=1e-5)


def mlp_on_rank(impl, rank: int, group) -> tuple[torch.Tensor, torch.Tensor]:
    """Column-parallel up, ReLU, row-parallel down, on this rank of two: (hidden shard, output)."""
    w = full_weights()
    tp = TPGroup(rank, 2, group)
    col = load(impl.ColumnParallelLinear(IN, HIDDEN, bias=True, tp=tp), w["w1"], w["b1"])
    row = load(impl.RowParallelLinear(HIDDEN, OUT, bias=True, tp=tp), w["w2"], w["b2"])
    hidden = col(w["x"])
    return hidden, row(torch.relu(hidden))


def _rank1(port: int, module: str, results) -> None:
    """Rank 1, in a process of its own: the same layers, its own shards, one gloo group with rank 0."""
    try:
        torch.set_num_threads(1)
        store = dist.TCPStore("127.0.0.1", port, 2, is_master=False, timeout=TIMEOUT)
        group = dist.ProcessGroupGloo(store, 1, 2, timeout=TIMEOUT)
        hidden, out = mlp_on_rank(importlib.import_module(module), 1, group)
        results.put(("ok", (hidden.tolist(), out.tolist())))         # plain lists: the process may exit first
    except BaseException as e:                                        # noqa: BLE001  (reported to rank 0)
        results.put(("error", f"rank 1: {type(e).__name__}: {e}\n{traceback.format_exc()}"))


@pytest.mark.readme("Build it")
def test_two_gloo_ranks_give_the_single_device_output(impl):
    w = full_weights()
    hidden_full = F.linear(w["x"], w["w1"], w["b1"])
    want = F.linear(torch.relu(hidden_full), w["w2"], w["b2"])
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    store = dist.TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False, timeout=TIMEOUT)
    worker = ctx.Process(target=_rank1, args=(store.port, impl.__name__, results), daemon=True)
    worker.start()
    try:
        group = dist.ProcessGroupGloo(store, 0, 2, timeout=TIMEOUT)   # waits for rank 1 to join
        hidden0, out0 = mlp_on_rank(impl, 0, group)
        status, got = results.get(timeout=TIMEOUT.total_seconds())
        assert status == "ok", got
        hidden1, out1 = map(torch.tensor, got)
    finally:
        worker.join(timeout=10)
        if worker.is_alive():
            worker.kill()
    half = HIDDEN // 2
    assert torch.allclose(hidden0, hidden_full[:, :half], atol=1e-5) and \
        torch.allclose(hidden1, hidden_full[:, half:], atol=1e-5), "each rank holds its half of the hidden features"
    assert torch.allclose(out0, want, atol=1e-5) and torch.allclose(out1, want, atol=1e-5), \
        "after the all-reduce both ranks hold the single-device output"

"""Lesson 11: which captured graph a decode step replays, and how replay pads the step to it.

On a CPU the runner gets stand-in graphs (an object whose replay() records the static buffers), so
the choice and the padding are checked as plain tensor code; on a GPU one check captures real
graphs and drives the engine with the learner's runner."""

import numpy as np
import pytest
import torch

from lessons.checks.paged import paged_case

LESSON = "11"
CAPTURED = [1, 2, 4, 8]
WIDTH = 4                                     # max_blocks_per_seq of the runner under test
VOCAB = 16


class FakeGraph:
    """Stands in for torch.cuda.CUDAGraph: replay() snapshots the buffers the graph would read."""

    def __init__(self, runner) -> None:
        self.runner, self.seen = runner, []

    def replay(self) -> None:
        self.seen.append({k: v.clone() for k, v in self.runner.graph_vars.items()})


def cpu_runner(impl, captured=CAPTURED, graphs=None):
    runner = impl.CUDAGraphRunner(None, captured, WIDTH, torch.device("cpu"))
    max_bs = max(captured)
    runner.graph_vars = {                    # stale values from an earlier step: 7 everywhere
        "input_ids": torch.full((max_bs,), 7, dtype=torch.int64),
        "positions": torch.full((max_bs,), 7, dtype=torch.int64),
        "slot_mapping": torch.full((max_bs,), 7, dtype=torch.int64),
        "context_lens": torch.full((max_bs,), 7, dtype=torch.int32),
        "block_tables": torch.full((max_bs, WIDTH), 7, dtype=torch.int32),
    }
    for bs in captured if graphs is None else graphs:
        runner.graphs[bs] = FakeGraph(runner)
        runner.graph_logits[bs] = torch.arange(bs * VOCAB, dtype=torch.float32).view(bs, VOCAB)
    return runner


def decode_inputs(num_seqs: int, width: int = 2, is_prefill: bool = False, num_sampled: int | None = None):
    from aios.engine.step_inputs import StepInputs

    n = num_seqs
    return StepInputs(
        input_ids=np.arange(n, dtype=np.int64), positions=np.arange(n, dtype=np.int64),
        slot_mapping=np.arange(n, dtype=np.int64), block_tables=np.zeros((n, width), dtype=np.int32),
        context_lens=np.ones(n, dtype=np.int32), cu_seqlens_q=np.arange(n + 1, dtype=np.int32),
        logits_indices=np.arange(n if num_sampled is None else num_sampled, dtype=np.int64),
        placeholder_dst=np.zeros(0, dtype=np.int64), placeholder_src=np.zeros(0, dtype=np.int64),
        is_prefill=is_prefill, max_seqlen_q=1, max_seqlen_k=1)


@pytest.mark.readme("Build it: batch_size_for")
@pytest.mark.parametrize("num_seqs,want", [(1, 1), (2, 2), (3, 4), (5, 8), (8, 8), (9, None)])
def test_a_decode_batch_replays_the_smallest_captured_size_that_holds_it(impl, num_seqs, want):
    assert cpu_runner(impl).batch_size_for(decode_inputs(num_seqs)) == want


@pytest.mark.readme("Build it: batch_size_for")
def test_only_captured_graphs_are_chosen(impl):
    runner = cpu_runner(impl, graphs=[2, 8])            # sizes 1 and 4 were never captured
    assert [runner.batch_size_for(decode_inputs(n)) for n in (1, 3, 5)] == [2, 8, 8]
    assert cpu_runner(impl, graphs=[]).batch_size_for(decode_inputs(1)) is None   # enforce_eager / CPU


@pytest.mark.readme("Build it: batch_size_for")
def test_prefill_wide_tables_and_non_sampling_rows_run_eagerly(impl):
    runner = cpu_runner(impl)
    assert runner.batch_size_for(decode_inputs(3, is_prefill=True)) is None
    assert runner.batch_size_for(decode_inputs(3, width=WIDTH + 1)) is None      # wider than captured
    assert runner.batch_size_for(decode_inputs(3, width=WIDTH)) == 4             # exactly as wide: fine
    assert runner.batch_size_for(decode_inputs(3, num_sampled=2)) is None        # a row that does not sample


def step_tensors(bs: int, width: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.arange(100, 100 + bs), "positions": torch.arange(10, 10 + bs),
            "slot_mapping": torch.arange(20, 20 + bs), "context_lens": torch.arange(1, 1 + bs, dtype=torch.int32),
            "block_tables": torch.arange(bs * width, dtype=torch.int32).view(bs, width)}


@pytest.mark.readme("Build it: replay")
def test_replay_copies_the_step_into_the_static_buffers_and_pads_the_rest(impl):
    runner = cpu_runner(impl)
    t = step_tensors(5, 2)
    logits = runner.replay(t, 8)
    graph = runner.graphs[8]
    assert len(graph.seen) == 1, "replay must replay the graph of graph_bs exactly once"
    assert all(not runner.graphs[bs].seen for bs in (1, 2, 4)), "only the graph of graph_bs replays"
    v = graph.seen[0]
    for k in ("input_ids", "positions", "slot_mapping", "context_lens"):
        assert torch.equal(v[k][:5], t[k].to(v[k].dtype)), f"{k}[:bs] must hold the step's values"
    assert v["slot_mapping"][5:8].tolist() == [-1, -1, -1], "padding rows write nothing: slot -1"
    assert v["context_lens"][5:8].tolist() == [0, 0, 0], "padding rows read nothing: context length 0"
    assert torch.equal(v["block_tables"][:5, :2], t["block_tables"])
    assert (v["block_tables"][:8, 2:] == -1).all(), "block-table columns past the step's width are -1"
    assert torch.equal(logits, runner.graph_logits[8][:5]), "return the first bs rows of the graph's logits"


@pytest.mark.readme("Build it: replay")
def test_replay_writes_into_the_buffers_the_graph_was_captured_on(impl):
    runner = cpu_runner(impl)
    before = {k: v.data_ptr() for k, v in runner.graph_vars.items()}
    runner.replay(step_tensors(3, WIDTH), 4)
    assert {k: v.data_ptr() for k, v in runner.graph_vars.items()} == before, \
        "a graph reads fixed addresses: copy into graph_vars in place (copy_, fill_), never rebind them"
    v = runner.graphs[4].seen[0]
    assert v["slot_mapping"][3].item() == -1 and v["context_lens"][3].item() == 0
    assert v["input_ids"][4:].tolist() == [7] * 4, "rows past graph_bs belong to larger graphs: leave them"


@pytest.mark.gpu
@pytest.mark.readme("Build it")
def test_the_engine_with_your_runner_replays_graphs_and_keeps_the_tokens(impl, tiny_ckpt):
    from aios import LLM, SamplingParams

    prompts = [[5 + i, 40 + 3 * i, 90, 7 * i + 1] for i in range(5)]                 # a decode batch of 5
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    kw = dict(device="cuda", dtype="float32", enforce_eager=False, cudagraph_batch_sizes=CAPTURED)
    with LLM(tiny_ckpt, **kw) as llm:
        want = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    with LLM(tiny_ckpt, cuda_graph_runner_cls=impl.CUDAGraphRunner, **kw) as llm:   # the engine's seam
        mine = llm.model_runner.cuda_graphs
        assert isinstance(mine, impl.CUDAGraphRunner) and mine.graphs
        replays = []
        replay = mine.replay
        mine.replay = lambda t, bs: replays.append(bs) or replay(t, bs)
        got = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    assert replays and set(replays) == {8}, f"decode steps of 5 sequences should replay the graph of 8: {replays}"
    assert got == want


# ---- the tile table of a graphed mixed step ----------------------------------------------------

def tiles_needed(seqlens_q, tile_rows: int) -> int:
    return sum(-(-q // tile_rows) for q in seqlens_q)


def every_step(num_tokens: int, num_seqs: int):
    """Every step of at most num_tokens query tokens in at most num_seqs sequences (as sorted tuples)."""
    def rest(left: int, seqs: int, top: int):
        yield ()
        if seqs:
            for q in range(1, min(left, top) + 1):
                for tail in rest(left - q, seqs - 1, q):
                    yield (q,) + tail
    return rest(num_tokens, num_seqs, num_tokens)


@pytest.mark.readme("Build it: the tile table of a graphed mixed step")
@pytest.mark.parametrize("tile_rows", [1, 2, 3, 4, 16])
def test_max_q_tiles_is_what_the_worst_small_step_needs(impl, tile_rows):
    for num_tokens in range(0, 10):
        for num_seqs in range(0, 5):
            worst = max(tiles_needed(step, tile_rows) for step in every_step(num_tokens, num_seqs))
            got = impl.max_q_tiles(num_tokens, num_seqs, tile_rows)
            assert got == worst, (f"max_q_tiles({num_tokens}, {num_seqs}, {tile_rows}) = {got}: the worst "
                                  f"such step needs {worst} tiles (fewer overflows it, more launches empty programs)")


@pytest.mark.readme("Build it: the tile table of a graphed mixed step")
@pytest.mark.parametrize("args", [(-1, 2, 16), (8, -1, 16), (8, 2, 0)])
def test_max_q_tiles_refuses_impossible_arguments(impl, args):
    with pytest.raises(ValueError):
        impl.max_q_tiles(*args)


def random_step(rng, num_seqs: int, max_q: int = 40, max_cached: int = 30):
    seqlens_q = rng.integers(0, max_q + 1, size=num_seqs)
    seqlens_q[rng.random(num_seqs) < 0.4] = 1                 # decode rows
    seqlens_q[rng.random(num_seqs) < 0.15] = 0                # sequences with nothing this step
    return seqlens_q, seqlens_q + rng.integers(0, max_cached + 1, size=num_seqs)


def tile_work(seqlens_q, seqlens_k, rows, tile_rows):
    seq, m = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
    cached = seqlens_k[seq] - seqlens_q[seq]
    return np.minimum(cached + (m + 1) * tile_rows, seqlens_k[seq])


@pytest.mark.readme("Build it: the tile table of a graphed mixed step")
@pytest.mark.parametrize("seed", range(6))
def test_the_table_lists_every_tile_once_heaviest_first_then_padding(impl, seed):
    rng = np.random.default_rng(seed)
    tile_rows = [1, 4, 16][seed % 3]
    seqlens_q, seqlens_k = random_step(rng, num_seqs=int(rng.integers(1, 12)))
    real = tiles_needed(seqlens_q, tile_rows)
    table = impl.prefill_q_tiles(seqlens_q, seqlens_k, tile_rows, real + 3)
    assert isinstance(table, np.ndarray) and table.dtype == np.int32 and table.shape == (real + 3, 2), \
        "an int32 array of shape [num_tiles, 2]"
    want = sorted((s, m) for s, q in enumerate(seqlens_q) for m in range(-(-int(q) // tile_rows)))
    assert sorted(map(tuple, table[:real].tolist())) == want, \
        "the first rows: every (seq, m_block) tile of a sequence with query tokens, each once"
    assert table[real:].tolist() == [[-1, 0]] * 3, "the rows after the step's tiles are padding: (-1, 0)"
    work = tile_work(seqlens_q, seqlens_k, table[:real], tile_rows)
    assert (np.diff(work) <= 0).all(), f"heaviest first: the keys each row visits should not grow, got {work.tolist()}"


@pytest.mark.readme("Build it: the tile table of a graphed mixed step")
def test_a_table_too_small_for_the_step_is_an_error_and_one_without_tiles_is_all_padding(impl):
    seqlens_q, seqlens_k = np.array([20, 1, 0]), np.array([30, 9, 4])          # 2 + 1 tiles of 16
    with pytest.raises(ValueError):
        impl.prefill_q_tiles(seqlens_q, seqlens_k, 16, 2)
    assert impl.prefill_q_tiles(seqlens_q, seqlens_k, 16, 3).shape == (3, 2)   # exactly enough
    assert impl.prefill_q_tiles(np.array([0, 0]), np.array([5, 0]), 16, 2).tolist() == [[-1, 0]] * 2


@pytest.mark.readme("Build it: the tile table of a graphed mixed step")
def test_the_prefill_kernel_over_your_table_equals_the_reference(impl):
    """aios's Triton prefill kernel (the interpreter on a CPU), its grid the rows of your table."""
    from aios.kernels.prefill_attention import _prefill_attention_launch, prefill_attention_ref

    seqlens_q, seqlens_k = [1, 17, 5, 0, 33, 1], [9, 17, 40, 6, 70, 20]      # decodes, prompts, chunks
    args = paged_case(seqlens_q, seqlens_k, 8)
    q, k_cache, v_cache, cu_q, cu_k, max_q, _, block_tables, scale = args
    tile_rows = 16
    table = impl.prefill_q_tiles(np.array(seqlens_q), np.array(seqlens_k), tile_rows,
                                 tiles_needed(seqlens_q, tile_rows) + 2)
    out = _prefill_attention_launch(q, k_cache, v_cache, cu_q, cu_k, max_q, block_tables, scale,
                                    block_m=tile_rows, block_n=16, num_warps=4, num_stages=1,
                                    q_tiles=torch.from_numpy(np.ascontiguousarray(table)).to(q.device))
    torch.testing.assert_close(out, prefill_attention_ref(*args), atol=2e-5, rtol=2e-5)


@pytest.mark.gpu
@pytest.mark.readme("Build it: the tile table of a graphed mixed step")
def test_the_engine_replays_mixed_steps_over_your_tables_and_keeps_the_tokens(impl, tiny_ckpt, monkeypatch):
    """Mixed-step graphs (16, 32, 48 tokens) whose every replay takes its tile table from your
    prefill_q_tiles: the greedy tokens must be those of an engine that runs such steps eagerly."""
    import aios.engine.cuda_graph_mixed as mixed
    from aios import LLM, SamplingParams

    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 100, size=n).tolist() for n in (5, 23, 37, 2, 14, 30)]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    kw = dict(device="cuda", dtype="float32", max_num_batched_tokens=48, kvcache_block_size=16,
              gpu_memory_utilization=0.3)
    with LLM(tiny_ckpt, cudagraph_mixed_tokens=0, **kw) as llm:
        want = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    calls = []
    mine = impl.prefill_q_tiles
    monkeypatch.setattr(mixed, "prefill_q_tiles", lambda *a: calls.append(1) or mine(*a))
    with LLM(tiny_ckpt, cudagraph_mixed_tokens=48, **kw) as llm:
        assert sorted(llm.model_runner.mixed_graphs.graphs) == [16, 32, 48]
        got = [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]
    assert calls, "no mixed step was staged through prefill_q_tiles"
    assert got == want

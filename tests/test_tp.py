"""Tensor parallelism on CPU (gloo): N ranks give one rank's greedy tokens, workers never outlive
their engine, and every failure is a clear error, never a hang (lesson 14)."""

import faulthandler
import gc
import multiprocessing.context
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from aios import LLM, Config, SamplingParams
from aios.distributed.launcher import TensorParallelError, tp_devices
from helpers import assert_no_leaked_blocks, greedy, random_prompts

MAX_TOKENS = 12
TINY_POOL = dict(num_kvcache_blocks=8, kvcache_block_size=16)      # forces preemption


def tp_llm(model: str, tp: int, **kwargs) -> LLM:
    return LLM(model, device="cpu", dtype="float32", tensor_parallel_size=tp, **kwargs)


def pid_gone(pid: int, timeout_s: float = 10.0) -> bool:
    """True once pid no longer runs (a zombie counts as gone: nothing of it executes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def hang_guard():
    """A hang becomes a failure with every thread's traceback instead of a stuck CI job."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def prompts():
    """Distinct prompts, then three sharing a two-block prefix (one of them twice)."""
    prefix = random_prompts(512, [32], seed=5)[0]
    shared = [prefix + tail for tail in random_prompts(512, [4, 11], seed=6)]
    return random_prompts(512, [3, 9, 30, 45], seed=11) + shared + shared[:1]


@pytest.fixture(scope="module")
def expected(tiny_ckpt, prompts):
    return greedy(LLM(tiny_ckpt, device="cpu", dtype="float32"), prompts, MAX_TOKENS)


@pytest.mark.parametrize("tp,kwargs", [(2, {}), (2, TINY_POOL), (4, TINY_POOL)],
                         ids=["tp2", "tp2-tiny-pool", "tp4-replicated-kv-heads-tiny-pool"])
@pytest.mark.slow
def test_tp_greedy_tokens_equal_one_rank(tiny_ckpt, prompts, expected, tp, kwargs, hang_guard):
    with tp_llm(tiny_ckpt, tp, **{"kvcache_block_size": 16, **kwargs}) as llm:
        assert greedy(llm, prompts, MAX_TOKENS) == expected
        assert greedy(llm, prompts[-3:], MAX_TOKENS) == expected[-3:]     # again: prefix-cache hits
        assert_no_leaked_blocks(llm)
        stats = llm.stats()
        assert stats["prefix_cache_hits"] > 0
        if kwargs:
            assert stats["num_preemptions"] > 0


@pytest.mark.slow
def test_tp_logprobs_and_penalties_equal_one_rank(tiny_ckpt, prompts, hang_guard):
    """Prompt logprobs go through the LM head's all-gather in slices of max_num_seqs rows: every rank
    must run the same slices (4 rows each here), or the collectives would hang."""
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, logprobs=3, prompt_logprobs=2,
                            repetition_penalty=1.4, presence_penalty=0.5, logit_bias={9: 2.0})
    kw = dict(kvcache_block_size=16, max_num_seqs=4)
    one = LLM(tiny_ckpt, device="cpu", dtype="float32", **kw).generate(prompts[:4], params, use_tqdm=False)
    with tp_llm(tiny_ckpt, 2, **kw) as llm:
        two = llm.generate(prompts[:4], params, use_tqdm=False)
        assert_no_leaked_blocks(llm)
    for a, b in zip(one, two):
        assert a["token_ids"] == b["token_ids"]
        for x, y in zip(a["logprobs"] + a["prompt_logprobs"][1:], b["logprobs"] + b["prompt_logprobs"][1:]):
            assert x.keys() == y.keys()
            assert all(abs(x[t].logprob - y[t].logprob) < 1e-4 for t in x)


@pytest.mark.slow
def test_workers_exit_on_close(tiny_ckpt, hang_guard):
    llm = tp_llm(tiny_ckpt, 2)
    pids = llm.model_runner.worker_pids
    assert len(pids) == 1 and not pid_gone(pids[0], timeout_s=0)
    llm.close()
    assert all(pid_gone(p) for p in pids)
    with pytest.raises(RuntimeError, match="closed"):
        greedy(llm, [[5, 6, 7]], 2)
    llm.close()                                        # closing twice is harmless


@pytest.mark.slow
def test_workers_exit_when_the_llm_is_garbage_collected(tiny_ckpt, hang_guard):
    llm = tp_llm(tiny_ckpt, 2)
    pids = llm.model_runner.worker_pids
    del llm
    gc.collect()
    assert all(pid_gone(p) for p in pids)


@pytest.mark.slow
def test_workers_exit_when_the_parent_process_dies(tiny_ckpt, hang_guard):
    script = textwrap.dedent(f"""
        import os, signal
        from aios import LLM
        if __name__ == "__main__":
            llm = LLM({tiny_ckpt!r}, device="cpu", tensor_parallel_size=2)
            print(*llm.model_runner.worker_pids, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert all(pid_gone(int(p)) for p in out.stdout.split())


@pytest.mark.slow
def test_two_tp_engines_in_one_process_both_generate_correctly(tiny_ckpt, prompts, expected, hang_guard):
    with tp_llm(tiny_ckpt, 2) as a, tp_llm(tiny_ckpt, 2) as b:
        assert greedy(a, prompts[:3], MAX_TOKENS) == expected[:3]
        assert greedy(b, prompts, MAX_TOKENS) == expected
        assert greedy(a, prompts[3:], MAX_TOKENS) == expected[3:]


@pytest.mark.slow
@pytest.mark.parametrize("when", ["between-steps", "inside-a-step"])
def test_a_killed_worker_is_a_clear_error_not_a_hang(tiny_ckpt, when, hang_guard):
    llm = tp_llm(tiny_ckpt, 2)
    worker = llm.model_runner.workers[0]

    def kill():
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.join(10)

    if when == "between-steps":
        llm.add_request([5, 6, 7], SamplingParams(temperature=0, max_tokens=8))
        llm.step()
        kill()
        run = llm.step
    else:                       # rank 0 has passed layer 0's collectives; layer 1's find the peer gone
        layer = llm.model_runner.model.model.layers[1]
        forward = layer.forward
        layer.forward = lambda *a, **kw: (kill(), forward(*a, **kw))[1]
        run = lambda: greedy(llm, [[5, 6, 7], [8, 9]], 8)
    start = time.monotonic()
    with pytest.raises(TensorParallelError, match=r"worker rank 1 \(pid \d+\) died \(killed by signal 9\)"):
        run()
    assert time.monotonic() - start < 30
    with pytest.raises(TensorParallelError, match="cannot continue"):      # and it stays refused
        greedy(llm, [[5, 6, 7]], 2)
    llm.close()
    assert pid_gone(worker.process.pid)


@pytest.mark.slow
def test_an_error_inside_a_step_on_rank_0_stops_the_workers_for_good(tiny_ckpt, hang_guard):
    """The workers may be waiting in a collective that rank 0 left: running on would pair the
    wrong collectives, so the engine refuses and its workers are gone at once."""
    llm = tp_llm(tiny_ckpt, 2)
    pids = llm.model_runner.worker_pids
    layer = llm.model_runner.model.model.layers[1]

    def broken_forward(*args, **kwargs):
        raise ValueError("a bug on rank 0")

    layer.forward = broken_forward
    with pytest.raises(ValueError, match="a bug on rank 0"):
        greedy(llm, [[5, 6, 7]], 4)
    assert all(pid_gone(p, timeout_s=5) for p in pids)
    with pytest.raises(TensorParallelError, match="a step failed on rank 0 .*a bug on rank 0"):
        greedy(llm, [[5, 6, 7]], 4)
    assert_no_leaked_blocks(llm)


def test_tp_size_not_dividing_the_heads_is_a_value_error_before_any_process_starts(tiny_ckpt, monkeypatch):
    started = []
    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", lambda self: started.append(self))
    with pytest.raises(ValueError, match=r"attention heads \(4\) is not divisible by tensor_parallel_size \(3\)"):
        tp_llm(tiny_ckpt, 3)
    assert started == []


def test_tp_size_beyond_the_gpus_is_a_value_error(tiny_ckpt, monkeypatch):
    config = Config(tiny_ckpt, device="cpu", tensor_parallel_size=2)
    config.device = "cuda"                                 # as if on a one-GPU machine
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"tensor_parallel_size=2 needs GPUs cuda:0..cuda:1, but torch sees 1"):
        tp_devices(config)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_tp2_on_two_gpus_with_cuda_graphs_equals_one_gpu(tiny_ckpt, prompts):
    kw = dict(device="cuda", dtype="float32", gpu_memory_utilization=0.3, max_num_seqs=8)
    one = LLM(tiny_ckpt, **kw)
    want = greedy(one, prompts, MAX_TOKENS)
    del one
    gc.collect()
    torch.cuda.empty_cache()
    with LLM(tiny_ckpt, tensor_parallel_size=2, **kw) as llm:
        assert llm.model_runner.cuda_graphs.graphs                    # decode steps replay graphs on both ranks
        assert greedy(llm, prompts, MAX_TOKENS) == want
        assert greedy(llm, prompts[-3:], MAX_TOKENS) == want[-3:]
        assert_no_leaked_blocks(llm)


@pytest.mark.slow
def test_a_script_that_builds_a_tp_engine_at_import_time_is_told_in_one_line_what_to_do(tiny_ckpt, tmp_path):
    script = tmp_path / "no_main_guard.py"
    script.write_text(textwrap.dedent(f"""
        from aios import LLM
        llm = LLM({tiny_ckpt!r}, device="cpu", dtype="float32", tensor_parallel_size=2)
        print("built")
    """))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0 and "built" not in proc.stdout
    assert 'if __name__ == "__main__":' in proc.stderr.strip().splitlines()[-1]
    # the worker said it in one line, not a multiprocessing traceback
    assert "_fixup_main_from_path" not in proc.stderr

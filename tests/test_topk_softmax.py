"""The one-launch MoE router (aios/kernels/topk_softmax.py) against its reference and torch.topk's ties.
On a CPU the kernel runs under TRITON_INTERPRET=1 (tests/conftest.py); on a GPU natively."""

import pytest
import torch

from aios.kernels.topk_softmax import topk_softmax, topk_softmax_ref
from aios.layers.fused_moe import select_experts

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def in_kernel_order(weights: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A top-k listed by (weight descending, id ascending): torch.topk's CUDA result in the kernel's order."""
    by_id = ids.sort(dim=-1, stable=True).indices
    weights, ids = weights.gather(1, by_id), ids.gather(1, by_id)
    by_weight = weights.sort(dim=-1, descending=True, stable=True).indices
    return weights.gather(1, by_weight), ids.gather(1, by_weight)


def distinct_logits(num_tokens: int, num_experts: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """No two equal in a row, even in bf16 (steps of 0.05 from -3: bf16 spacing there is <= 1/32)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(num_experts, generator=g) * 0.05 - 3 for _ in range(num_tokens)]).to(dtype)


def lowest_id_on_ties(router_logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """The kernel's documented order: probability descending, equal ones by ascending expert id."""
    probs = torch.softmax(router_logits.float(), dim=-1)
    return torch.sort(probs, dim=-1, descending=True, stable=True).indices[:, :top_k].to(torch.int32)


@pytest.mark.parametrize("num_tokens, num_experts, top_k", [(1, 128, 8), (37, 128, 8), (5, 6, 2), (20, 60, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("renormalize", [False, True], ids=["plain", "norm_topk_prob"])
def test_triton_router_picks_the_reference_experts_and_weights(num_tokens, num_experts, top_k, dtype, renormalize):
    logits = distinct_logits(num_tokens, num_experts, dtype, seed=num_tokens).to(DEVICE)
    weights, ids = topk_softmax(logits, top_k, renormalize)
    want_weights, want_ids = topk_softmax_ref(logits, top_k, renormalize)
    assert weights.dtype == torch.float32 and ids.dtype == torch.int32 and ids.shape == (num_tokens, top_k)
    assert torch.equal(ids, want_ids)
    assert torch.allclose(weights, want_weights, rtol=1e-6, atol=1e-7), (weights - want_weights).abs().max()


def test_reference_is_the_engines_router_before_its_cast():
    logits = torch.randn(9, 16, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    ref_weights, ref_ids = topk_softmax_ref(logits, 4, True)
    weights, ids = select_experts(logits, 4, True)
    assert torch.equal(ids, ref_ids) and torch.equal(weights, ref_weights.to(torch.bfloat16))


def tied_logits() -> torch.Tensor:
    """Runs of equal logits inside the top-k and across its boundary (the k-th and (k+1)-th equal)."""
    rows = torch.zeros(5, 16)
    rows[1, [3, 9, 12]] = 2.0                     # three tie for first, the rest (all 0) tie at the boundary
    rows[2, [1, 2, 5, 6, 7, 14]] = 1.0            # six equal for top-4: which four is the tie rule's
    rows[3, :] = torch.arange(16.0) % 4           # four runs of four: two of the run of 3s and two 2s
    rows[4, [15, 0]] = 5.0
    rows[4, 8] = 4.0
    return rows


@pytest.mark.parametrize("top_k", [1, 4, 8])
def test_equal_probabilities_go_to_the_lowest_expert_id(top_k):
    logits = tied_logits().to(DEVICE)
    weights, ids = topk_softmax(logits, top_k, renormalize=False)
    assert torch.equal(ids.cpu(), lowest_id_on_ties(logits.cpu(), top_k))
    probs = torch.softmax(logits.float(), dim=-1)
    assert torch.allclose(weights, probs.gather(1, ids.long()), rtol=1e-6)
    if top_k == 8:
        assert ids[0].tolist() == list(range(8))   # all-equal logits: ids 0..7 (torch.topk on a CPU: not these)


@pytest.mark.parametrize("top_k", [1, 4, 8])
def test_ties_give_the_reference_weights_whichever_tied_expert_torch_topk_picks(top_k):
    """On a CPU torch.topk breaks ties in heap order; the chosen weights are the same values."""
    logits = tied_logits().to(DEVICE)
    for renormalize in (False, True):
        weights, ids = topk_softmax(logits, top_k, renormalize)
        want_weights, want_ids = topk_softmax_ref(logits, top_k, renormalize)
        assert torch.allclose(weights, want_weights, rtol=1e-6)
        above_boundary = want_weights > want_weights[:, -1:]       # strictly above the k-th: no choice
        for row in range(logits.shape[0]):
            assert set(want_ids[row][above_boundary[row]].tolist()) <= set(ids[row].tolist())


def test_every_id_is_an_expert_even_for_nan_logits():
    logits = torch.randn(3, 32, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    logits[1, 5] = float("nan")
    logits[2] = float("-inf")
    _, ids = topk_softmax(logits, 4, renormalize=True)
    assert ((ids >= 0) & (ids < 32)).all()


def test_no_tokens_give_empty_outputs():
    weights, ids = topk_softmax(torch.empty(0, 8, device=DEVICE), 2, True)
    assert weights.shape == ids.shape == (0, 2)


@pytest.mark.gpu
@pytest.mark.parametrize("num_tokens", [1, 32, 256, 8192])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_router_equals_reference_at_qwen3_30b_a3b_shape_on_the_gpu(num_tokens, dtype):
    """128 experts, top-8, norm_topk_prob, random logits (bf16 ones tie often): the same experts in
    the same order, up to the order within a run of equal weights; weights to an fp32 ulp or two."""
    g = torch.Generator(device="cuda").manual_seed(num_tokens)
    logits = torch.randn(num_tokens, 128, device="cuda", generator=g).to(dtype)
    weights, ids = topk_softmax(logits, 8, True)
    want_weights, want_ids = in_kernel_order(*topk_softmax_ref(logits, 8, True))
    top = torch.softmax(logits.float(), dim=-1).topk(9, dim=-1).values          # the 8 and the first left out
    gaps = top[:, :-1] - top[:, 1:]
    decided = ((gaps == 0) | (gaps > 1e-6 * top[:, :-1])).all(dim=-1)      # exact ties, or apart by > the sum's ulps
    assert decided.float().mean() > 0.99
    assert torch.equal(ids[decided], want_ids[decided])
    assert torch.allclose(weights, want_weights, rtol=1e-6, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.parametrize("top_k", [1, 4, 8])
def test_ties_choose_the_experts_torch_topk_chooses_on_cuda(top_k):
    """torch.topk on CUDA takes every value above the k-th, then the lowest ids equal to it: the same
    set as the kernel's; within a run of equal values its order may differ (an unstable sort)."""
    logits = tied_logits().cuda()
    weights, ids = topk_softmax(logits, top_k, renormalize=False)
    want_weights, want_ids = in_kernel_order(*topk_softmax_ref(logits, top_k, renormalize=False))
    assert torch.equal(ids, want_ids)
    assert torch.allclose(weights, want_weights, rtol=1e-6)


@pytest.mark.gpu
def test_router_replays_inside_a_cuda_graph():
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(8, 128, device="cuda", generator=g, dtype=torch.bfloat16)
    topk_softmax(logits, 8, True)                                       # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        weights, ids = topk_softmax(logits, 8, True)
    logits.copy_(torch.randn(8, 128, device="cuda", generator=g, dtype=torch.bfloat16))
    graph.replay()
    want_weights, want_ids = in_kernel_order(*topk_softmax_ref(logits, 8, True))
    assert torch.equal(ids, want_ids) and torch.allclose(weights, want_weights, rtol=1e-6)

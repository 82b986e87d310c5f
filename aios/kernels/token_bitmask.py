"""Apply a token bitmask to logits rows: disallowed tokens get -inf, in place (lesson 17).

The bitmask is the grammar library's format (xgrammar's, vLLM's): int32 words, bit j of word w of
a row set when token 32 * w + j is allowed, ceil(vocab / 32) words per row. Only the rows named in
`rows` (the logits rows of the sequences that have a constraint) are touched; the others are not
read or written, so a batch's free rows pay nothing and their tokens cannot change.

Invariants (tests/test_token_bitmask.py checks each):
- After the call, logits[rows[i], t] is -inf where bit t of bitmask[i] is clear and unchanged where
  it is set; every other row, and every column past the bitmask's vocab, is unchanged.
- The Triton kernel and `apply_token_bitmask_ref` give bit-equal logits (no arithmetic, only stores).
"""

import torch
import triton
import triton.language as tl


def apply_token_bitmask_ref(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor) -> None:
    """Plain-torch spec: logits [num_rows, vocab] (any float dtype), bitmask [n, ceil(vocab / 32)]
    int32, rows [n] int32 or int64 (which logits row each bitmask row masks). In place."""
    if len(rows) == 0:
        return
    vocab = logits.shape[-1]
    shifts = torch.arange(32, device=bitmask.device, dtype=torch.int32)
    allowed = ((bitmask.unsqueeze(-1) >> shifts) & 1).bool().reshape(len(rows), -1)[:, :vocab]
    rows = rows.long()
    logits[rows] = logits[rows].masked_fill(~allowed, float("-inf"))


@triton.jit
def _apply_token_bitmask_kernel(logits_ptr, bitmask_ptr, rows_ptr, vocab_size, stride_logits, stride_bitmask,
                                BLOCK: tl.constexpr):
    # One program per (masked row, block of BLOCK tokens): read BLOCK / 32 words, store -inf where a bit is clear.
    i = tl.program_id(0)
    tok = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    in_vocab = tok < vocab_size
    row = tl.load(rows_ptr + i).to(tl.int64)
    words = tl.load(bitmask_ptr + i.to(tl.int64) * stride_bitmask + tok // 32, mask=in_vocab, other=-1)
    disallowed = ((words >> (tok % 32)) & 1) == 0
    tl.store(logits_ptr + row * stride_logits + tok, tl.full([BLOCK], float("-inf"), tl.float32)
             .to(logits_ptr.dtype.element_ty), mask=in_vocab & disallowed)


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor) -> None:
    """Triton version of apply_token_bitmask_ref (same arguments, same result)."""
    n = len(rows)
    if n == 0:
        return
    vocab = logits.shape[-1]
    assert logits.stride(-1) == 1 and bitmask.stride(-1) == 1 and bitmask.dtype == torch.int32
    assert bitmask.shape[0] == n and bitmask.shape[1] * 32 >= vocab, (bitmask.shape, n, vocab)
    block = 4096 if logits.is_cuda else 256
    _apply_token_bitmask_kernel[(n, triton.cdiv(vocab, block))](
        logits, bitmask, rows, vocab, logits.stride(0), bitmask.stride(0), BLOCK=block, num_warps=4,
    )

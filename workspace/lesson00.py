"""Lesson 00: why an inference engine. The arithmetic of batching, before any code runs.

A decode step is one forward pass, and a forward pass reads every weight once, whatever the batch.
Check: python lessons/check.py 00
"""


def forward_passes(num_requests: int, max_tokens: int, batched: bool) -> int:
    """Forward passes to generate max_tokens new tokens for each of num_requests prompts, greedy,
    every prompt prefilled in one pass that also yields its first token.

    One at a time: each request needs its own max_tokens passes. Batched: every running request gets
    one token from each pass, so the batch needs only max_tokens. (The README's run: 16 x 64.)
    (lessons/00_introduction/README.md, "Build it")"""
    raise NotImplementedError("lesson 00: forward_passes (see README, 'Build it')")


def weight_bytes_per_token(num_parameters: int, dtype_bytes: int, batch_size: int) -> float:
    """Bytes of weights read from memory per generated token, when one decode step (which reads all
    num_parameters weights of dtype_bytes each once) yields one token for each of batch_size sequences."""
    raise NotImplementedError("lesson 00: weight_bytes_per_token (see README, 'Build it')")

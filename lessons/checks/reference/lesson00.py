"""Reference for lesson 00: the README's arithmetic (lessons/00_introduction/README.md, "The problem"
and "Why the numbers are what they are"); the engine that does it is aios/llm.py's LLM.generate,
which runs every prompt of one call in the same steps."""


def forward_passes(num_requests: int, max_tokens: int, batched: bool) -> int:
    return max_tokens if batched else num_requests * max_tokens


def weight_bytes_per_token(num_parameters: int, dtype_bytes: int, batch_size: int) -> float:
    return num_parameters * dtype_bytes / batch_size

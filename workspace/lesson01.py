"""Lesson 01: the transformer on paper. Count what a Qwen3 checkpoint holds, from its config.json.

`config` is the parsed config.json (a dict): vocab_size, hidden_size, intermediate_size,
num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, tie_word_embeddings.
Check: python lessons/check.py 01
"""


def count_parameters(config: dict) -> int:
    """Every parameter of Qwen3ForCausalLM: the embedding, per layer (q/k/v/o projections without
    biases, q_norm and k_norm of head_dim each, the MLP's gate/up/down, two RMSNorms of hidden_size),
    the final norm, and the LM head unless tie_word_embeddings shares the embedding's matrix.
    (lessons/01_transformer/README.md, "Build it")"""
    raise NotImplementedError("lesson 01: count_parameters (see README, 'Build it')")


def kv_bytes_per_token(config: dict, dtype_bytes: int = 2) -> int:
    """Bytes of K and V one token adds to the cache across all layers: the KV heads (not the query
    heads: grouped-query attention) times head_dim, for K and for V, in every layer."""
    raise NotImplementedError("lesson 01: kv_bytes_per_token (see README, 'Build it')")

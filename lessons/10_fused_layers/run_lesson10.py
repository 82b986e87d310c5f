#!/usr/bin/env python
"""Lesson 10: fused layers. Fewer, bigger kernels: one matmul for q/k/v, one for gate/up, and
Triton kernels that do a layer's small element-wise steps in one pass.

    unfused (lesson 09) : fused_kernels=False: RMSNorm, q/k-norm + RoPE and SiLU*mul run as
                          chains of torch ops (the references in aios/kernels)
    fused   (lesson 10) : fused_kernels=True: one Triton kernel each (on a GPU)

The q/k/v and gate/up fusions are always on in aios (the loader writes q_proj, k_proj, v_proj into
one qkv_proj weight: the model's packed_modules_mapping); here they are measured against
separate matmuls with the same weights.
"""

from __future__ import annotations

from lessons import common


def time_per_call(fn, device: str, repeat: int, *args) -> float:
    fn(*args)
    with common.Timer(device) as t:
        for _ in range(repeat):
            fn(*args)
    return t.seconds / repeat


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--mine", action="store_true",
                    help="load the model with your load_model and shard loaders (workspace/lesson10.py)")
    args = common.setup(ap.parse_args())

    import torch
    import torch.nn.functional as F

    from aios.kernels import qk_norm_rope_ref, rms_norm_ref, rope_ref, silu_and_mul_ref

    loop = common.load_module("03_own_the_model/no_cache_loop.py")
    print(common.describe(args))
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    model = loop.load(args.model, args.device, dtype)
    if args.mine:
        from workspace import lesson10 as mine

        yours = loop.load(args.model, args.device, dtype)
        for p in yours.parameters():
            p.data.fill_(float("nan"))
        mine.load_model(yours, args.model)
        same = all(torch.equal(a, b) for a, b in zip(model.parameters(), yours.parameters()))
        print(f"--mine: YOUR load_model (workspace/lesson10.py) filled every fused weight "
              f"{'exactly as' if same else 'DIFFERENTLY from'} aios's loader; the rest of this run uses it")
        model = yours
    layer = model.model.layers[0]
    attn, mlp = layer.self_attn, layer.mlp
    print(f"packed_modules_mapping: {type(model).packed_modules_mapping}")

    common.heading("separate matmuls vs fused ones, layer 0's weights, microseconds per call")
    w_qkv = attn.qkv_proj.weight
    w_q, w_k, w_v = w_qkv.split([attn.q_size, attn.kv_size, attn.kv_size])
    w_gu = mlp.gate_up_proj.weight
    w_gate, w_up = w_gu.chunk(2)
    rows = []
    for num_tokens in ([1, 64] if args.quick else [1, 16, 256, 2048]):
        repeat = 20 if args.quick else max(20, 20_000 // num_tokens)
        x = torch.randn(num_tokens, w_qkv.shape[1], device=args.device, dtype=dtype)
        separate = time_per_call(lambda x: (F.linear(x, w_q), F.linear(x, w_k), F.linear(x, w_v)), args.device,
                                 repeat, x)
        fused = time_per_call(lambda x: F.linear(x, w_qkv), args.device, repeat, x)
        rows.append([num_tokens, "q, k, v: 3 matmuls", 1e6 * separate, "qkv_proj: 1 matmul", 1e6 * fused,
                     separate / fused])
        separate = time_per_call(lambda x: (F.linear(x, w_gate), F.linear(x, w_up)), args.device, repeat, x)
        fused = time_per_call(lambda x: F.linear(x, w_gu), args.device, repeat, x)
        rows.append([num_tokens, "gate, up: 2 matmuls", 1e6 * separate, "gate_up_proj: 1 matmul", 1e6 * fused,
                     separate / fused])
    print(common.table(["tokens", "unfused", "us", "fused", "us", "speed-up"], rows))
    if args.quick:
        print("(--quick is a smoke test: 20 calls are too few to time, so a speed-up here can point either way; "
              "run without --quick to measure)")

    # counted in bf16, the dtype a GPU runs: there the references cast to fp32 and back (2 ops of
    # RMSNorm's 9); in fp32 those casts are no-ops that launch nothing (lesson 05 counted 7)
    bf16 = torch.bfloat16
    common.heading("element-wise steps of one decoder layer: torch ops (the references, bf16) vs Triton kernels")
    n = 16
    x = torch.randn(n, model.config.hidden_size, device=args.device, dtype=bf16)
    q = torch.randn(n, attn.num_heads, attn.head_dim, device=args.device, dtype=bf16)
    k = torch.randn(n, attn.num_kv_heads, attn.head_dim, device=args.device, dtype=bf16)
    pos = torch.arange(n, device=args.device)
    gu = torch.randn(n, 2 * model.config.intermediate_size, device=args.device, dtype=bf16)
    w = layer.input_layernorm.weight.to(bf16)
    cos_sin_cache = model.model.rotary_emb.cos_sin_cache

    def add_and_norm():
        s = x + x
        return rms_norm_ref(s, w, 1e-6), s

    if getattr(attn, "q_norm", None) is not None:          # Qwen3: one kernel norms, rotates and stores
        q_w, k_w = attn.q_norm.weight.to(bf16), attn.k_norm.weight.to(bf16)
        rope = ("q/k RMSNorm + RoPE", lambda: qk_norm_rope_ref(q, k, q_w, k_w, pos, cos_sin_cache, 1e-6), 1, 1)
    else:                      # Llama, Qwen2, Mistral: one kernel rotates and stores (rope_store_kvcache)
        rope = ("RoPE of q, k (no q/k norm)",
                lambda: (rope_ref(q, pos, cos_sin_cache), rope_ref(k, pos, cos_sin_cache)), 1, 1)
    pieces = [                                             # (step, fn, per layer, fused kernels; None: unfused too)
        ("RMSNorm + residual add (x2 per layer)", add_and_norm, 2, 1),
        rope,
        ("SiLU(gate) * up", lambda: silu_and_mul_ref(gu), 1, 1),
    ]
    rows, total_ref, total_fused = [], 0, 0
    for name, fn, per_layer, fused in pieces:
        _, ops = common.count_kernels(fn)
        fused = ops if fused is None else fused
        rows.append([name, ops * per_layer, fused * per_layer])
        total_ref += ops * per_layer
        total_fused += fused * per_layer
    rows.append(["per decoder layer", total_ref, total_fused])
    layers = model.config.num_hidden_layers
    rows.append([f"per forward ({layers} layers)", total_ref * layers, total_fused * layers])
    print(common.table(["step", "kernels, unfused (torch ops)", "kernels, fused (Triton)"], rows))

    common.heading("the engine: fused_kernels=False (lesson 09) vs True (lesson 10)")
    common.compare_rungs(args, ("09", "10"),
                         lambda llm, lesson: f"fused_kernels={llm.config.fused_kernels} (lesson {lesson})")
    if args.device == "cpu":
        print("(on a CPU both settings run the torch references: the Triton kernels run on CUDA tensors only)")


if __name__ == "__main__":
    try:
        main()
    except NotImplementedError as e:          # --mine with a stub still in workspace/
        while isinstance(e.__context__, NotImplementedError):   # the first stub hit, not a later one
            e = e.__context__
        raise SystemExit(f"{e}\nwrite it in workspace/lesson10.py; check it with: python lessons/check.py 10") from None

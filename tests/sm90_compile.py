"""Compile Triton launches for the H200 (sm_90) instead of running them, on a machine without a GPU.

`compile_instead_of_launching()` replaces `JITFunction.run` (what `kernel[grid](...)` calls): each
launch is bound with Triton's own binder for the CUDA backend, so the signature is the one a GPU
launch gets (tensors -> "*bf16", "*i32", ...; ints -> "i32"/"i64" with their divisibility by 16, or
a constexpr when == 1; constexprs as given), compiled with `triton.compile` for GPUTarget("cuda",
90, 32) down to a cubin (TTIR, TTGIR, LLVM IR, PTX, then the ptxas bundled with Triton), checked
against the H200's shared memory, recorded, and not launched. It also makes the wrappers choose
what they would choose on the H200 (`as_on_the_h200`): their config functions are asked about a
CUDA device with its 132 SMs, tensors answer `is_cuda` with True, and the constexprs that tell the
interpreter from the GPU get the GPU's values (`GPU_CONSTEXPRS`).

Needs triton without TRITON_INTERPRET (so @triton.jit gives JITFunctions): run it in a subprocess
of the test suite, whose conftest turns the interpreter on (tests/test_triton_compiles_for_hopper.py).
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

H200 = GPUTarget("cuda", 90, 32)
H200_SM_COUNT = 132
H200_MAX_SHARED = 232448             # bytes of shared memory one block may opt into on sm_90 (227 KB)
GPU_CONSTEXPRS = {"USE_PDL": True, "UPCAST": False, "PRECISE_EXP": True}   # their values on the H200
CONFIG_FUNCTIONS = [                 # (module, function): the wrappers' device-dependent tile choices
    ("aios.kernels.gemv", "gemv_config"), ("aios.kernels.fused_gemv", "gemv_config"),
    ("aios.kernels.gemv_silu_and_mul", "gemv_config"),
    ("aios.kernels.decode_attention", "_decode_config"), ("aios.kernels.decode_attention", "_decode_num_splits"),
    ("aios.kernels.prefill_attention", "_prefill_config"), ("aios.kernels.prefill_attention_tma", "_tma_config"),
    ("aios.kernels.fused_moe", "fused_moe_config"), ("aios.kernels.fused_moe_tma", "fused_moe_tma_config"),
    ("aios.kernels.moe_gemv", "moe_gemv_config"), ("aios.kernels.skinny_gemm", "skinny_gemm_config"),
]


def error_text(error: BaseException) -> str:
    """The error and what caused it: the error inside a @triton.jit helper is the cause of its caller's."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        parts.append(f"{type(error).__name__}: {error}".strip()[-1500:])
        error = error.__cause__ or error.__context__
    return "\ncaused by ".join(parts)


class Sm90Compiler:
    """Compiles each distinct specialization once; `records` holds one dict per compile, in order."""

    def __init__(self) -> None:
        self.backend = make_backend(H200)
        self.binders: dict[int, object] = {}
        self.seen: set[tuple] = set()
        self.records: list[dict] = []                   # filled in by the pool's threads: read after wait()
        self.case = ""                                  # the name of the case launching now
        self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
        self.pending: list[Future] = []

    def compile(self, jit_fn: JITFunction, args: tuple, kwargs: dict) -> dict | None:
        """Bind one launch as JITFunction.run does, with GPU_CONSTEXPRS, and queue its compile for sm_90;
        the record returned is complete after wait()."""
        kwargs = dict(kwargs)
        for name, value in GPU_CONSTEXPRS.items():
            if name in kwargs:
                kwargs[name] = value
        if "launch_pdl" in kwargs:
            kwargs["launch_pdl"] = True
        kwargs.setdefault("debug", False)
        if id(jit_fn) not in self.binders:
            self.binders[id(jit_fn)] = create_function_from_signature(jit_fn.signature, jit_fn.params, self.backend)
        bound_args, specialization, options = self.binders[id(jit_fn)](*args, **kwargs)
        options, signature, constexprs, attrs = jit_fn._pack_args(self.backend, kwargs, bound_args, specialization,
                                                                  options)
        key = (jit_fn.fn.__module__, jit_fn.__name__, repr(signature), repr(constexprs), repr(attrs), repr(options))
        if key in self.seen:
            return None
        self.seen.add(key)
        record = {"case": self.case, "kernel": f"{jit_fn.fn.__module__}.{jit_fn.__name__}",
                  "constexprs": repr({jit_fn.arg_names[path[0]]: v for path, v in constexprs.items()}),
                  "num_warps": options.num_warps, "num_stages": options.num_stages}
        self.records.append(record)
        self.pending.append(self.pool.submit(self._compile_into, record, jit_fn, signature, constexprs, attrs,
                                             options))
        return record

    @staticmethod
    def _compile_into(record: dict, jit_fn: JITFunction, signature, constexprs, attrs, options) -> None:
        start = time.perf_counter()
        try:
            compiled = triton.compile(ASTSource(jit_fn, signature, constexprs, attrs), target=H200,
                                      options=options.__dict__)
            if compiled.metadata.shared > H200_MAX_SHARED:
                raise RuntimeError(f"needs {compiled.metadata.shared} bytes of shared memory; a block of the H200 "
                                   f"gets at most {H200_MAX_SHARED}")
            # warps: what the kernel runs with (warp specialization adds warp groups to num_warps)
            record.update(ok=True, stages=sorted(compiled.asm), shared=compiled.metadata.shared,
                          warps=compiled.metadata.num_warps)
        except Exception as e:                          # noqa: BLE001  (the record carries it)
            record.update(ok=False, error=error_text(e))
        record["seconds"] = round(time.perf_counter() - start, 3)

    def wait(self) -> None:
        """Every record filled in: the compiles run on a thread per core (ptxas and much of Triton's
        pipeline let go of the GIL), so a record is complete only after this."""
        for future in self.pending:
            future.result()
        self.pending.clear()


def compile_instead_of_launching(compiler: Sm90Compiler) -> None:
    """From now on, in this process, `kernel[grid](...)` compiles for sm_90 and launches nothing."""
    def run(self, *args, grid, warmup, **kwargs):
        compiler.compile(self, args, kwargs)
    JITFunction.run = run


def as_on_the_h200() -> None:
    """From now on, in this process, the kernels' wrappers choose their tiles as on the H200."""
    import aios.kernels.device

    h200 = torch.device("cuda", 0)
    aios.kernels.device._cuda_sm_count = lambda index: H200_SM_COUNT
    aios.kernels.device._cuda_capability = lambda index: (H200.arch // 10, H200.arch % 10)
    for module_name, function_name in CONFIG_FUNCTIONS:
        module = importlib.import_module(module_name)
        config = getattr(module, function_name)

        def on_h200(*args, _config=config, **kwargs):
            args = [h200 if isinstance(a, torch.device) else a for a in args]
            kwargs = {k: h200 if isinstance(v, torch.device) else v for k, v in kwargs.items()}
            return _config(*args, **kwargs)
        setattr(module, function_name, on_h200)
    torch.Tensor.is_cuda = property(lambda self: True)


def kernel_functions() -> dict[str, bool]:
    """{module.name: is_kernel} for every module-level JITFunction defined in aios/kernels. A kernel is
    launched (`name[` in a kernel file) or called by no other JITFunction; the rest are helpers."""
    import aios.kernels

    functions, sources = {}, []
    for info in pkgutil.iter_modules(aios.kernels.__path__):
        module = importlib.import_module(f"aios.kernels.{info.name}")
        sources.append(inspect.getsource(module))
        for name, value in vars(module).items():
            if isinstance(value, JITFunction) and value.fn.__module__ == module.__name__:
                functions[f"{module.__name__}.{name}"] = value
    kinds = {}
    for key, fn in functions.items():
        launched = any(re.search(rf"\b{fn.__name__}\[", source) for source in sources)
        called = any(re.search(rf"\b{fn.__name__}\(", other.src) for other_key, other in functions.items()
                     if other_key != key)
        kinds[key] = launched or not called
    return kinds

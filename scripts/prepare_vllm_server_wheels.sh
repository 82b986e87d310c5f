#!/usr/bin/env bash
# Wheels that vLLM 0.26.0's OpenAI server imports beyond what ../shared/peers/prepare_vllm.sh carries
# (fastapi[standard], uvicorn[standard], prometheus, aiohttp, anthropic, mcp, opentelemetry, ...),
# for `benchmarks/serve.py --launch "python3 -m vllm.entrypoints.openai.api_server ..."` on the GPU
# machine, which has no package registry. Writes .peer/vsrv/*.whl (py3.12, manylinux x86_64).
# On the GPU machine, after prepare_vllm.sh's three carry calls (p00..p02) and within 30 s of them:
#   run carry [".peer/p03", ".peer/deps"]: extract vLLM to /tmp/site as prepare_vllm.sh says, and
#     python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .peer/deps/*.whl
#   run carry [".peer/vsrv"] (a separate pip call: both folders hold some of the same wheels):
#     python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site --upgrade .peer/vsrv/*.whl
#     PYTHONPATH=/tmp/site VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 python benchmarks/serve.py \
#       --url http://127.0.0.1:8124 --launch-timeout 300 --num-requests 256 --num-clients 4 --launch \
#       "python3 -m vllm.entrypoints.openai.api_server --model DIR --load-format dummy --skip-tokenizer-init \
#        --max-model-len 2048 --port 8124"
# Budget for vLLM's start-up (torch.compile, CUDA graphs): over 100 s; it did not answer within 80 s
# in the one try (2026-11-25, H200, when the session's GPU time ran out).
set -euo pipefail
top=$(git rev-parse --show-toplevel); cd "$top"
grep -qx '/.peer/' .git/info/exclude 2>/dev/null || echo '/.peer/' >> .git/info/exclude
mkdir -p .peer/vsrv && rm -f .peer/vsrv/*.whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d .peer/vsrv \
  prometheus_client "prometheus-fastapi-instrumentator>=8.0.0" "aiohttp>=3.13.3" watchfiles "anthropic>=0.71.0" \
  mcp "model-hosting-container-standards<1.0.0,>=0.1.14" "fastapi[standard]<0.137.0,>=0.133.0" "uvicorn[standard]" \
  python-json-logger setproctitle ijson blake3 py-cpuinfo "opentelemetry-sdk>=1.27.0" "opentelemetry-api>=1.27.0" \
  "opentelemetry-semantic-conventions-ai>=0.4.1" lark==1.2.2
# vLLM pins setuptools<81; the others are not needed to serve
rm -f .peer/vsrv/setuptools-* .peer/vsrv/sentry_sdk-* .peer/vsrv/fastapi_cloud_cli-*
ls .peer/vsrv | wc -l

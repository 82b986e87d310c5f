#!/usr/bin/env bash
# Wheels for the HTTP server stack (lesson 15, aios/server, benchmarks/serve.py) on a GPU machine that
# has no package registry: its image has torch and transformers but not fastapi / uvicorn / openai.
# Writes .peer/server/*.whl (py3.12, manylinux x86_64; git-ignored): fastapi, uvicorn, openai, httpx and
# everything they need, as pip resolves it (fastapi 0.165 imports opentelemetry, openai 3.x httpx2;
# uvicorn[standard] brings httptools and uvloop, which uvicorn then picks over h11 and asyncio).
# Also what `pytest -m gpu` needs there beyond the image: jsonschema (tests/test_structured_output.py) and
# xgrammar (aios/structured_output) with apache-tvm-ffi, which it imports (--no-deps: its torch and triton
# are the machine's).
# Then, in one device call (run's carry argument: [".peer/server"]):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/srv .peer/server/*.whl &&
#   PYTHONPATH=/tmp/srv python lessons/15_server/run_lesson15.py --device cuda
#   (or: PYTHONPATH=/tmp/srv python -m pytest -m gpu --shard 1/2, then --shard 2/2)
# (on a checkpoint without a tokenizer, lesson 15 and the server run on token ids.)
set -euo pipefail
top=$(git rev-parse --show-toplevel); cd "$top"
grep -qx '/.peer/' .git/info/exclude 2>/dev/null || echo '/.peer/' >> .git/info/exclude
mkdir -p .peer/server
rm -f .peer/server/*.whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .peer/server fastapi 'uvicorn[standard]' openai httpx jsonschema
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d .peer/server xgrammar==0.2.7 'apache-tvm-ffi>=0.1.10'
ls -la .peer/server

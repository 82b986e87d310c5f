#!/usr/bin/env bash
# Wheels for the HTTP server stack (lesson 15, aios/server, benchmarks/serve.py) on a GPU machine that
# has no package registry: its image has torch, transformers, httpx, h11, anyio, click, uvloop but
# not fastapi / uvicorn / openai. Writes .peer/server/*.whl (py3.12, manylinux x86_64; git-ignored).
# Then, in one device call (run's carry argument: [".peer/server"]):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/srv .peer/server/*.whl &&
#   PYTHONPATH=/tmp/srv python lessons/15_server/run_lesson15.py --device cuda
# (lesson 15 compares streamed text, so it needs a checkpoint with a tokenizer: the bundled model,
# the default --model, has one; the random 0.6B-shape checkpoints do not.)
set -euo pipefail
top=$(git rev-parse --show-toplevel); cd "$top"
grep -qx '/.peer/' .git/info/exclude 2>/dev/null || echo '/.peer/' >> .git/info/exclude
mkdir -p .peer/server
for p in fastapi starlette pydantic pydantic-core annotated-types typing-inspection uvicorn \
         openai distro jiter sniffio; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .peer/server "$p"
done
ls -la .peer/server

"""OpenAI-compatible HTTP server (lesson 15): FastAPI routes over one engine loop, SSE streaming.

    python -m aios.server [--model DIR] [--port 8000]        # see --help

    app.py           routes and error handling; create_app(engine) builds a server
    guards.py        before any route: the API key (401) and the request-body bound (413)
    prompts.py       prompts to token ids in a thread of the API side (never in the engine loop)
    http_protocol.py uvicorn's HTTP protocol with a header-read timeout (slowloris)
    background.py    serve_in_background(app): uvicorn in a thread of this process, for tests
    async_engine.py  the event loop's end: submit requests, route the engine's events back by id
    engine_loop.py   EngineLoop: owns the LLMEngine, one continuous batch for every HTTP request
    engine_process.py  where the loop runs: a thread here, or a process of its own (the CLI)
    stream.py        a request's spec and events (Accepted, Delta, Failed), the handler's RequestStream
    protocol.py      request bodies -> SamplingParams: the one import of the request models below
    sampling_request.py  the fields both endpoints share (SamplingRequest) -> SamplingParams
    completion_request.py       the body of /v1/completions (CompletionRequest)
    chat_completion_request.py  the body of /v1/chat/completions (ChatCompletionRequest)
    errors.py        OpenAI error bodies; the checks that name the field at fault
    messages.py      chat messages (text, earlier tool calls, tool results) -> the template's dicts
    structured_outputs.py  response_format / structured_outputs / guided_* -> one output constraint
    tools.py         tools + tool_choice: the template's tools, the schema of required / named calls
    tool_calls.py    tool calls out of the text (Qwen's <tool_call>, the forced JSON), streamed
    tool_call_deltas.py  a streamed call's pieces (ToolCallDelta) and their merge into a whole response
    logprobs.py      scores of tokens in OpenAI's formats (completions' legacy, chat's) and vLLM's
    choices.py       one choice of a request that wants logprobs, tool calls or echo
    responses.py     response bodies and SSE chunks
    metrics.py       Prometheus text for GET /metrics
"""

__all__ = ["create_app", "serve_in_background"]


def __getattr__(name: str):
    # on first use, not at import: `python -m aios.server` imports this package before its
    # __main__ can say in one line that fastapi / uvicorn are missing
    if name == "create_app":
        from aios.server.app import create_app
        return create_app
    if name == "serve_in_background":
        from aios.server.background import serve_in_background
        return serve_in_background
    raise AttributeError(f"module 'aios.server' has no attribute {name!r}")

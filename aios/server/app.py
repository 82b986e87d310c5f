"""The HTTP routes: an OpenAI-compatible API over one AsyncEngine.

    POST /v1/completions         prompt: str | list[str] | list[int] | list[list[int]]
                                 (+ logprobs: N, echo, vLLM's prompt_logprobs)
    POST /v1/chat/completions    messages: [{"role", "content", "tool_calls", "tool_call_id"}]
                                 (+ logprobs, top_logprobs, tools, tool_choice, parallel_tool_calls)
    both: n, best_of, the penalties, logit_bias, min_tokens, bad_words, include_stop_str_in_output,
          response_format (json_object, json_schema), vLLM's structured_outputs and guided_*
          (aios/server/protocol.py maps each onto SamplingParams)
    GET  /v1/models, /health (and HEAD), /metrics

A request for text only is written by ResponseBuilder.delta_event, the fast path; one that wants
logprobs, tool calls or echo goes through aios/server/choices.py (the same chunks streamed or
merged into one body).

`create_app(engine)` builds everything a server needs and keeps it on the app (no module-level
state), so two servers can live in one process. The engine loop (a thread, or the engine's own
process: aios/server/engine_process.py) is started and stopped by the app's lifespan; the caller
that made an LLM closes it, an engine process closes its own.

An engine without a tokenizer (`LLM(..., skip_tokenizer_init=True)`, e.g. random weights for a
benchmark) is served too: prompts are token ids, texts are "", and every choice carries its
"token_ids" as if the request had asked with `return_token_ids`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from aios.llm import LLM
from aios.server.async_engine import DEFAULT_MAX_STREAM_BACKLOG, AsyncEngine
from aios.server.choices import ChoiceOutput, RequestOutputs
from aios.server.guards import DEFAULT_MAX_REQUEST_BYTES, Guards
from aios.server.logprobs import TokenTexts
from aios.server.metrics import ServerMetrics
from aios.server.prompts import PromptTokenizer
from aios.server.protocol import APIError, ChatCompletionRequest, CompletionRequest, validation_error
from aios.server.responses import DONE, ResponseBuilder, sse, usage
from aios.server.stream import Delta, RequestStream

CLIENT_CLOSED_REQUEST = 499      # nginx's status for "the client left first"; nobody reads it


def create_app(engine: LLM | AsyncEngine, served_model_name: str | None = None, max_waiting: int = 512,
               stream_interval: int = 1, max_stream_backlog: int = DEFAULT_MAX_STREAM_BACKLOG,
               api_key: str | None = None, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
               response_builder_cls: type[ResponseBuilder] = ResponseBuilder) -> FastAPI:
    """An app serving `engine` under `served_model_name` (default: the model dir's name). An aios.LLM
    gets an engine loop in a thread of this process (max_waiting, stream_interval and
    max_stream_backlog apply to it); an AsyncEngine (AsyncEngine.in_process: the engine in a
    process of its own) comes configured. With `api_key`, /v1/* needs `Authorization: Bearer <key>`;
    a body over `max_request_bytes` is a 413 (aios/server/guards.py). `response_builder_cls` makes
    every response body and SSE chunk (the seam lesson 15's exercise plugs the learner's into)."""
    async_engine = engine if isinstance(engine, AsyncEngine) else AsyncEngine.in_thread(
        engine, max_waiting, stream_interval, max_stream_backlog)
    info = async_engine.info
    prompt_tokenizer = PromptTokenizer(async_engine.tokenizer, info.vocab_size, info.max_model_len)
    token_texts = TokenTexts(async_engine.tokenizer)      # logprobs' token texts, on the API side
    model_name = served_model_name or os.path.basename(os.path.normpath(info.model))
    metrics = ServerMetrics(model_name)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async_engine.start()
        try:
            yield
        finally:
            async_engine.shutdown()
            prompt_tokenizer.close()

    app = FastAPI(title="AIOS", description="OpenAI-compatible server of the AIOS engine", lifespan=lifespan)
    app.add_middleware(Guards, api_key=api_key, max_request_bytes=max_request_bytes, on_error=metrics.count_error)
    app.state.async_engine = async_engine
    app.state.model_name = model_name

    def error_response(e: APIError) -> JSONResponse:
        metrics.count_error(e.status)
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(request: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(list(e.errors())))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return error_response(APIError(e.status_code, str(e.detail), type=kind))

    # ---- routes ----------------------------------------------------------------------------------

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> Response:
        return Response(status_code=200 if async_engine.is_alive else 503)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "aios", "max_model_len": info.max_model_len}]}

    @app.get("/metrics")
    async def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(async_engine.stats, async_engine.counters),
                                 media_type="text/plain; version=0.0.4")

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await generate(body, request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await generate(body, request, chat=True)

    # ---- one generation request ------------------------------------------------------------------

    async def generate(body: CompletionRequest | ChatCompletionRequest, request: Request, chat: bool) -> Response:
        arrival_time = time.perf_counter()
        if body.model is not None and body.model != model_name:
            raise APIError(404, f"the model {body.model!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        body.refuse_unimplemented()
        params = body.sampling_params(info.vocab_size)
        if not info.has_tokenizer:
            body.refuse_text_without_tokenizer()
        return_token_ids = body.return_token_ids or not info.has_tokenizer
        prompt_token_ids = await prompt_tokenizer.token_ids(body, chat)     # in a thread: no loop stalls
        outputs = RequestOutputs.of(body, chat, params, prompt_token_ids, token_texts)   # None: text only
        try:
            stream = await async_engine.generate(prompt_token_ids, params, chat=chat, arrival_time=arrival_time,
                                                 fill_max_tokens=body.requested_max_tokens() is None,
                                                 return_token_ids=return_token_ids)
        except APIError as e:
            if e.param == "structured_outputs":           # the engine's name: say which field set it
                e.param = body.constraint_field() or e.param
            raise
        builder = response_builder_cls(model_name, chat, return_token_ids)
        choices = None if outputs is None else [outputs.choice(i, keep=not body.stream)
                                                for i in range(stream.num_choices)]
        if body.stream:
            # background runs once the response ends, even if the client left before the first
            # chunk (then the generator below never started and its `finally` never runs)
            return StreamingResponse(sse_events(stream, builder, body.include_usage_in_stream, choices),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
                                     background=BackgroundTask(stream.abort))
        return await whole_response(stream, builder, request, choices)

    def rich_event(builder: ResponseBuilder, choice: ChoiceOutput, delta: Delta, include_usage: bool) -> str:
        chunk = choice.chunk(delta)
        if not (chunk.content or chunk.tool_calls or chunk.logprobs or chunk.finish_reason or chunk.prompt_logprobs
                or (builder.return_token_ids and chunk.token_ids)):
            return ""                         # the tool parser holds this text back: nothing to say yet
        return builder.choice_event(delta.index, chunk.chat_delta() if builder.chat else chunk.content,
                                    chunk.token_ids, chunk.finish_reason, include_usage, chunk.logprobs,
                                    chunk.prompt_logprobs)

    async def sse_events(stream: RequestStream, builder: ResponseBuilder, include_usage: bool,
                         choices: list[ChoiceOutput] | None) -> AsyncIterator[str]:
        # A client that disconnects cancels this generator (Starlette listens for http.disconnect):
        # `finally` then aborts its sequences, which frees their KV blocks at once.
        completion_tokens = [0] * stream.num_choices
        try:
            if builder.chat:
                for i in range(stream.num_choices):
                    yield sse(builder.role_chunk(i, include_usage))
            async for first in stream:
                events = []
                for delta in [first, *stream.ready()]:
                    if delta.finish_reason is not None:
                        completion_tokens[delta.index] = delta.num_output_tokens
                    if choices is None:
                        events.append(builder.delta_event(delta.index, delta.text, delta.token_ids,
                                                          delta.finish_reason, include_usage))
                    else:
                        events.append(rich_event(builder, choices[delta.index], delta, include_usage))
                if any(events):
                    yield "".join(events)
            if include_usage:
                yield sse(builder.usage_chunk(usage(stream.prompt_tokens, sum(completion_tokens))))
        except APIError as e:                 # headers are sent: the error travels as an event
            metrics.count_error(e.status)
            yield sse(e.body())
        finally:
            stream.abort()
        yield DONE

    async def whole_response(stream: RequestStream, builder: ResponseBuilder, request: Request,
                             choices: list[ChoiceOutput] | None) -> Response:
        async def collect() -> dict:
            texts, reasons = [""] * stream.num_choices, [None] * stream.num_choices
            token_ids: list[list[int]] = [[] for _ in range(stream.num_choices)]
            completion_tokens = 0
            async for delta in stream:
                token_ids[delta.index] += delta.token_ids
                if choices is not None:
                    choices[delta.index].chunk(delta)
                if delta.finish_reason is not None:
                    texts[delta.index], reasons[delta.index] = delta.final_text, delta.finish_reason
                    completion_tokens += delta.num_output_tokens
            extras = None
            if choices is not None:
                extras = [c.merged() for c in choices]
                reasons = [e["finish_reason"] for e in extras]
            return builder.response(texts, reasons, usage(stream.prompt_tokens, completion_tokens), token_ids,
                                    extras)

        async def client_gone() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        # Nothing is written until the end, so watch for a disconnect while waiting.
        collecting, watching = asyncio.ensure_future(collect()), asyncio.ensure_future(client_gone())
        try:
            done, _ = await asyncio.wait({collecting, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            if not collecting.done():
                collecting.cancel()
                stream.abort()
        if collecting not in done:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return JSONResponse(collecting.result())

    return app

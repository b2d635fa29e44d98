"""`SimServer`: one simulated vLLM replica — a real aiohttp server on a TCP port serving the
OpenAI API, /health and /metrics, backed by its own engine task. Every response names the
server and echoes what reached it, so tests can see where a gateway sent each request."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from dataclasses import replace

from aiohttp import web

from sluicegate.sim import faults
from sluicegate.sim.config import SimConfig
from sluicegate.sim.engine import DONE, Engine, SimRequest, SimStats
from sluicegate.errors import BadRequestError
from sluicegate.scheduling import request_block_hashes
from sluicegate.sim.kv_events import KvEventPublisher, binds, topic_for
from sluicegate.sim.kvcache import BlockSource, block_hashes, count_tokens
from sluicegate.sim.metrics import CONTENT_TYPE, SimMetrics
from sluicegate.sim.openai_api import (CHAT, COMPLETION, ApiError, FillerText, Generation,
                                       StreamFormat, full_response, parse_generation,
                                       parse_json, usage)
from sluicegate.sim.render import PromptTokens

ENDPOINT_HEADER = "x-sim-endpoint"
RECEIVED_MODEL_HEADER = "x-sim-received-model"
RECEIVED_LENGTH_HEADER = "x-sim-received-content-length"
ADDRESS_HEADER = "x-sim-endpoint-address"
# What the gateway told us about routing: tests check Envoy sent the request where the EPP said.
DESTINATION_HEADER = "x-gateway-destination-endpoint"
RECEIVED_DESTINATION_HEADER = "x-sim-received-destination"
SIM_TTFT_HEADER = "x-sim-ttft-ms"  # simulated-clock TTFT, on non-streamed answers
SIM_E2E_HEADER = "x-sim-e2e-ms"  # simulated-clock arrival to last token, on non-streamed answers
_MODEL_KEY = web.RequestKey("sim_model", str)


class SimServer:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.metrics = SimMetrics(self.config)
        self.engine = Engine(self.config, self.metrics)
        self.metrics.attach(self.engine)
        self.name = self.config.name
        self._fail_rng = random.Random(f"fail|{self.config.seed}")
        self._ids = itertools.count()
        self._runner: web.AppRunner | None = None
        self._engine_task: asyncio.Task[None] | None = None
        self._address = ""
        self._stopping = False
        self._kv_events: KvEventPublisher | None = None
        self._replay_task: asyncio.Task[None] | None = None
        self.tokens = PromptTokens(self.config) if self.config.tokenizer else None

    @property
    def address(self) -> str:
        """"host:port" once started."""
        if not self._address:
            raise RuntimeError("SimServer.address is known only after start()")
        return self._address

    @property
    def kv_events_address(self) -> str | None:
        """The bound ZMQ endpoint of the KV-event publisher ("tcp://host:port"), once started."""
        return self._kv_events.address if self._kv_events is not None else None

    @property
    def kv_events_replay_address(self) -> str:
        """The bound ZMQ ROUTER endpoint answering replay requests; "" without one."""
        return self._kv_events.replay_address if self._kv_events is not None else ""

    def stats(self) -> SimStats:
        return self.engine.stats()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        if self._runner is not None:
            raise RuntimeError("SimServer already started")
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=faults.middlewares(self.config))
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions/render", self._render_completions)
        app.router.add_post("/v1/chat/completions/render", self._render_chat)
        app.router.add_post("/tokenize", self._tokenize)
        app.on_response_prepare.append(self._stamp)
        # A client that leaves cancels its handler, as vLLM aborts a request whose client left;
        # a handler that never answers (faults.py) would otherwise outlive the server's stop.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, handler_cancellation=True)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if self.config.kv_events_endpoint:
            endpoint = self.config.kv_events_endpoint
            topic = self.config.kv_events_topic
            if not topic and not binds(endpoint):
                topic = topic_for(f"{host}:{runner.addresses[0][1]}", self.config.model)
            try:
                self._kv_events = KvEventPublisher(
                    endpoint, topic, self.config.kv_events_encoding, self.config.kv_events_replay_endpoint,
                    self.config.kv_events_loss, self.config.seed)
            except OSError:
                await runner.cleanup()
                self._runner = None
                raise
            self.engine.publish_kv_events = self._kv_events.publish
            if self._kv_events.replay_address:
                self._replay_task = asyncio.create_task(self._kv_events.serve_replay(), name="sim-kv-replay")
        bound = runner.addresses[0][1]
        self._address = f"{host}:{bound}"
        self.name = self.config.name or self._address
        self._engine_task = asyncio.create_task(self.engine.run(), name=f"sim-engine-{self.name}")
        return bound

    async def stop(self) -> None:
        self._stopping = True
        self.engine.close()  # lets every open handler finish before the runner waits on them
        if self._engine_task is not None:
            self._engine_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._engine_task
            self._engine_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
            self._replay_task = None
        if self._kv_events is not None:
            self._kv_events.close()
            self._kv_events = None

    async def _stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers[ENDPOINT_HEADER] = self.name
        response.headers[ADDRESS_HEADER] = self._address
        destination = request.headers.get(DESTINATION_HEADER)
        if destination is not None:
            response.headers[RECEIVED_DESTINATION_HEADER] = destination
        if request.method == "POST":
            model = request.get(_MODEL_KEY)
            if model is not None:
                response.headers[RECEIVED_MODEL_HEADER] = model
            length = request.headers.get("Content-Length")
            if length is None:
                chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
                length = "chunked" if chunked else "absent"
            response.headers[RECEIVED_LENGTH_HEADER] = length

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self._stopping else 200)

    async def _models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        data = [{"id": m, "object": "model", "created": created, "owned_by": "vllm",
                 "root": m, "parent": None if m == self.config.model else self.config.model,
                 "max_model_len": self.config.max_model_len}
                for m in self.config.served_models]
        return web.json_response({"object": "list", "data": data})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(COMPLETION, request)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(CHAT, request)

    async def _render_completions(self, request: web.Request) -> web.Response:
        return await self._tokens_endpoint(request, lambda t, body: t.render(COMPLETION, body))

    async def _render_chat(self, request: web.Request) -> web.Response:
        return await self._tokens_endpoint(request, lambda t, body: t.render(CHAT, body))

    async def _tokenize(self, request: web.Request) -> web.Response:
        return await self._tokens_endpoint(request, lambda t, body: t.tokenize(body))

    async def _tokens_endpoint(self, request: web.Request, answer) -> web.Response:
        try:
            if self.tokens is None:
                raise ApiError(404, "this simulated server has no tokenizer (SimConfig.tokenizer)")
            return web.json_response(answer(self.tokens, parse_json(await request.read())))
        except ApiError as exc:
            return web.json_response(exc.body(), status=exc.status)

    async def _generate(self, kind: str, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            gen, prompt_tokens, ids, body = self._accept(kind, request, raw)
        except ApiError as exc:
            return web.json_response(exc.body(), status=exc.status)
        lora = gen.model if gen.model != self.config.model else None
        if self.tokens is not None:
            hashes, source = self.tokens.source(ids, gen.model, body)
        else:
            source = BlockSource(lora=lora)
            # The EPP's byte scheme over the same body, so its precise index matches these blocks.
            try:
                hashes = request_block_hashes(request.path, raw, self.config.block_size)
            except BadRequestError:
                # A body the EPP would refuse (e.g. no "model"): hash the sim's own view of it.
                hashes = block_hashes(gen.prompt, self.config.block_size, gen.model)
        req = SimRequest(prompt_tokens, hashes, gen.max_tokens, lora, gen.finish_reason, source)
        self.engine.submit(req)
        try:
            if gen.stream:
                return await self._stream(request, gen, req)
            return await self._respond(gen, req)
        finally:
            self.engine.abort(req)  # a no-op unless the client left early

    def _accept(self, kind: str, request: web.Request,
                raw: bytes) -> tuple[Generation, int, list[int], dict]:
        if self._stopping:
            raise ApiError(503, "the simulated server is shutting down")
        body = parse_json(raw)
        if isinstance(body.get("model"), str):
            request[_MODEL_KEY] = body["model"]
        gen = parse_generation(kind, body, self.config)
        ids = self.tokens.token_ids(kind, body) if self.tokens is not None else []
        prompt_tokens = len(ids) if self.tokens is not None else count_tokens(gen.prompt)
        limit = self.config.max_model_len
        field = "messages" if kind == CHAT else "prompt"
        if prompt_tokens >= limit:
            raise ApiError(400, f"This model's maximum context length is {limit} tokens, "
                           f"but the prompt has {prompt_tokens} tokens.", field)
        if gen.finish_reason == "length" and prompt_tokens + gen.max_tokens > limit:
            raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, "
                           f"you requested {prompt_tokens + gen.max_tokens} tokens.", "max_tokens")
        if gen.max_tokens > limit - prompt_tokens:
            gen = replace(gen, max_tokens=limit - prompt_tokens)
        if self.config.fail_rate and self._fail_rng.random() < self.config.fail_rate:
            raise ApiError(500, "simulated server failure (fail_rate)")
        return gen, prompt_tokens, ids, body

    async def _respond(self, gen: Generation, req: SimRequest) -> web.Response:
        while req.state != DONE:
            await req.wait_beyond(req.produced)
        if req.aborted:
            exc = ApiError(503, "the simulated server stopped before the request finished")
            return web.json_response(exc.body(), status=exc.status)
        text = "".join(FillerText(self.config.seed, gen).take(req.produced))
        body = full_response(gen, self._request_id(gen), int(time.time()), text,
                             req.finish_reason, usage(req.prompt_tokens, req.produced, req.cached_tokens))
        return web.json_response(body, headers={SIM_TTFT_HEADER: f"{req.sim_ttft_ms:.3f}",
                                                SIM_E2E_HEADER: f"{req.sim_e2e_ms:.3f}"})

    async def _stream(self, request: web.Request, gen: Generation, req: SimRequest) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        fmt = StreamFormat(gen, self._request_id(gen), int(time.time()))
        filler = FillerText(self.config.seed, gen)
        pending, sent = fmt.opening(), 0
        try:
            while True:
                await req.wait_beyond(sent)
                if req.produced > sent:
                    await response.write(pending + fmt.tokens(filler.take(req.produced - sent)))
                    pending, sent = b"", req.produced
                if req.state == DONE:
                    break
            if req.aborted:
                await response.write(fmt.error(ApiError(503, "the simulated server stopped")))
            else:
                usage_body = usage(req.prompt_tokens, sent, req.cached_tokens) if gen.include_usage else None
                await response.write(fmt.closing(req.finish_reason, usage_body))
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client left; the caller aborts the engine request
        return response

    def _request_id(self, gen: Generation) -> str:
        prefix = "chatcmpl" if gen.kind == CHAT else "cmpl"
        return f"{prefix}-{next(self._ids)}"

"""Flow control in front of a plain aiohttp reverse proxy: at most N requests reach the upstream;
the rest wait by priority (x-priority) and fairness across tenants (x-tenant), or get 429/503.

    python -m sluicegate.flowcontrol.example_proxy --upstream http://127.0.0.1:8000 --port 8080
"""

import argparse

from aiohttp import ClientSession, web

from sluicegate.errors import SluicegateError
from sluicegate.flowcontrol import FlowController

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
SESSION = web.AppKey("session", ClientSession)


def build_app(upstream: str, controller: FlowController) -> web.Application:
    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            async with controller.admit(flow=request.headers.get("x-tenant", "default-flow"),
                                        priority=int(request.headers.get("x-priority", "0")), size=len(body)):
                headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
                async with request.app[SESSION].request(request.method, upstream + request.path_qs,
                                                          headers=headers, data=body) as up:
                    return web.Response(status=up.status, body=await up.read(), content_type=up.content_type)
        except SluicegateError as e:
            return web.json_response({"error": str(e)}, status=e.status, headers={"x-dropped-reason": e.reason})

    async def session(app: web.Application):
        async with ClientSession(auto_decompress=False) as app[SESSION]:
            yield
        controller.close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--upstream", required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-concurrency", type=int, default=4)
    args = p.parse_args()
    web.run_app(build_app(args.upstream, FlowController(max_concurrency=args.max_concurrency)), port=args.port)

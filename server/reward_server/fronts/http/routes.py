"""KServe v2 REST routes (Triton's HTTP API): decode the request, call KServeCore, encode the answer.

Nothing here scores or validates a tensor's meaning: that is KServeCore's (fronts/kserve/),
shared with gRPC."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reward_server.errors import InvalidArgument
from reward_server.fronts.http.codec import (
    HEADER_LENGTH,
    decode_infer,
    encode_infer,
    output_binary,
    parse_json,
)
from reward_server.fronts.kserve.service import KServeCore
from reward_server.metrics import ServerMetrics

# Extensions only this front implements, on top of those KServeCore lists for both.
HTTP_EXTENSIONS = ("binary_tensor_data",)

# aiohttp clients (tritonclient.http.aio among them) always accept gzip: a response this small gains
# nothing from it and would pay the compression on every request.
COMPRESS_MIN_BYTES = 1024

_MODEL = "/v2/models/{model}"
_VERSION = "/v2/models/{model}/versions/{version}"


def _ids(request: web.Request) -> tuple[str, str]:
    return request.match_info["model"], request.match_info.get("version", "")


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is {} (tritonclient sends none for some calls)."""
    body = await request.read()
    if not body.strip():
        return {}
    value = parse_json(body)
    if not isinstance(value, dict):
        raise InvalidArgument(f"the request body must be a JSON object, got {type(value).__name__}")
    return value


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidArgument("'parameters' must be a JSON object")
    return parameters


class KServeRoutes:
    def __init__(self, kserve: KServeCore, metrics: ServerMetrics) -> None:
        self._kserve = kserve
        self._metrics = metrics

    def add_to(self, app: web.Application) -> None:
        get, post = web.get, web.post
        routes = [
            get("/v2/health/live", self.live, name="ServerLive"),
            get("/v2/health/ready", self.ready, name="ServerReady"),
            get("/v2", self.server_metadata, name="ServerMetadata"),
            # Before /v2/models/{model}: "stats" is this route, not a model.
            get("/v2/models/stats", self.statistics, name="ModelStatisticsAll"),
            post("/v2/repository/index", self.repository_index, name="RepositoryIndex"),
            post("/v2/repository/models/{model}/load", self.load, name="RepositoryModelLoad"),
            post("/v2/repository/models/{model}/unload", self.unload, name="RepositoryModelUnload"),
            get("/metrics", self.prometheus, name="Metrics"),
        ]
        for prefix, suffix in ((_MODEL, ""), (_VERSION, "Version")):
            routes += [
                get(prefix, self.model_metadata, name="ModelMetadata" + suffix),
                get(prefix + "/ready", self.model_ready, name="ModelReady" + suffix),
                get(prefix + "/config", self.model_config, name="ModelConfig" + suffix),
                get(prefix + "/stats", self.statistics, name="ModelStatistics" + suffix),
                post(prefix + "/infer", self.infer, name="ModelInfer" + suffix),
            ]
        app.add_routes(routes)

    # --- health and metadata ------------------------------------------------------------------

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self._kserve.server_ready() else 503)

    async def model_ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self._kserve.model_ready(*_ids(request)) else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(self._kserve.server_metadata(HTTP_EXTENSIONS))

    async def model_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(self._kserve.model_metadata(*_ids(request)))

    async def model_config(self, request: web.Request) -> web.Response:
        return web.json_response(self._kserve.model_config(*_ids(request)))

    async def statistics(self, request: web.Request) -> web.Response:
        return web.json_response(
            self._kserve.model_statistics(
                request.match_info.get("model", ""), request.match_info.get("version", "")
            )
        )

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # --- inference ----------------------------------------------------------------------------

    async def infer(self, request: web.Request) -> web.Response:
        start = time.monotonic()
        body = decode_infer(await request.read(), request.headers.get(HEADER_LENGTH))
        # Triton's per-request timeout, in microseconds (0: none), is the request's deadline here.
        deadline = start + body.timeout_us / 1e6 if body.timeout_us else None
        requested = [o.name for o in body.outputs] or None
        model, version, outputs = await self._kserve.infer(*_ids(request), body.inputs, requested, deadline)
        data, header_length = encode_infer(
            model, version, body.id, outputs, output_binary(body, [t.name for t in outputs])
        )
        if header_length is None:
            response = web.Response(body=data, content_type="application/json")
        else:
            response = web.Response(
                body=data,
                content_type="application/octet-stream",
                headers={HEADER_LENGTH: str(header_length)},
            )
        if len(data) >= COMPRESS_MIN_BYTES and "Accept-Encoding" in request.headers:
            response.enable_compression()  # gzip or deflate, as the client accepts (tritonclient can ask)
        return response

    # --- repository ---------------------------------------------------------------------------

    async def repository_index(self, request: web.Request) -> web.Response:
        ready = (await _json_object(request)).get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidArgument(f"'ready' must be a boolean, got {ready!r}")
        return web.json_response(self._kserve.repository_index(ready))

    async def load(self, request: web.Request) -> web.Response:
        await self._kserve.load_model(request.match_info["model"], _parameters(await _json_object(request)))
        return web.Response(status=200)

    async def unload(self, request: web.Request) -> web.Response:
        parameters = _parameters(await _json_object(request))
        # tritonclient always sends unload_dependents (false by default); there are no ensembles here,
        # so false asks for nothing, and true is refused by KServeCore with the other parameters.
        if parameters.get("unload_dependents") is False:
            parameters = {k: v for k, v in parameters.items() if k != "unload_dependents"}
        await self._kserve.unload_model(request.match_info["model"], parameters)
        return web.Response(status=200)

"""gRPC status -> HTTP status, as Triton's HTTP front answers the same error, and the `{"error": ...}` body.

RESOURCE_EXHAUSTED is 429 (Too Many Requests), not 503: both are retryable, but 503 is what a draining or
loading server answers, and a load balancer that sees 503 takes the replica out of rotation, while 429
says "this replica is busy right now" (its concurrency limit, a full batch queue). A body over the size
limit is 413, decided by the HTTP layer before the body is read."""

from __future__ import annotations

import grpc
from aiohttp import web

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,  # load / unload outside explicit mode: Triton answers 400
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,  # the client went away (nginx's code; nobody reads the answer)
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.ABORTED: 409,
}

# The reverse, for metrics and logs of errors the HTTP layer itself raised (bad route, body too large).
_CODE_OF_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def grpc_code(status: int) -> grpc.StatusCode:
    """The gRPC code whose name the metrics and the access log show for an HTTP status."""
    if status < 400:
        return grpc.StatusCode.OK
    return _CODE_OF_STATUS.get(
        status, grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.INVALID_ARGUMENT
    )


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Triton's error body: `{"error": "<message>"}` (tritonclient raises it as InferenceServerException)."""
    return web.json_response({"error": message}, status=status, headers=headers)

"""Every error sluicegate raises on the request path, each with its HTTP status and the
upstream `x-llm-d-request-dropped-reason` value where upstream sends one."""


class SluicegateError(Exception):
    status = 500
    reason = ""


class BadRequestError(SluicegateError, ValueError):
    """The request body or headers cannot be routed as sent (HTTP 400)."""

    status = 400


class PayloadTooLargeError(SluicegateError):
    """The request body is larger than --max-request-body-bytes (HTTP 413)."""

    status = 413


class NoEndpointsError(SluicegateError):
    """No endpoint of the pool (or of the requested subset) can take the request (HTTP 503)."""

    status = 503
    reason = "rejected-no-endpoints"


class ModelNotServedError(SluicegateError):
    """The pool has a model allow-list and the request's model is not on it (HTTP 404)."""

    status = 404
    reason = ""


class SaturatedError(SluicegateError):
    """The pool is saturated and the request was shed (HTTP 429)."""

    status = 429
    reason = "rejected-saturated"


class ConfigError(SluicegateError, ValueError):
    """A configuration file or value is invalid; the message names the field and value."""


class TtlExpiredError(SluicegateError):
    """The request waited in the flow-control queue past its TTL (HTTP 429)."""

    status = 429
    reason = "rejected-ttl-expired"


class ShuttingDownError(SluicegateError):
    """The EPP is shutting down and evicted the queued request (HTTP 503)."""

    status = 503
    reason = "rejected-shutting-down"

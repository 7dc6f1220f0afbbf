"""The built-in request handlers, and loading others by dotted name.

Layer: ops (the operator surface).
"""

from __future__ import annotations

import importlib
from typing import Any

from blueprint_net._core.errors import ConfigurationError
from blueprint_net._core.messaging import IncomingRequest, Success


def echo(request: IncomingRequest) -> bytes:
    """``echo``: the payload back, as a ``Protocol`` response."""
    return request.payload


def ping(request: IncomingRequest) -> Success:
    """``ping``: an empty ``Success``, for round-trip times."""
    return Success()


BUILTINS = {"echo": echo, "ping": ping}


class HandlerError(ConfigurationError):
    """A ``--handler`` that cannot be loaded; one line, naming it."""


def load(spec: str) -> tuple[str, Any]:
    """``NAME=package.module.attribute``: the protocol name and the handler.

    The attribute may provide ``IRequestHandler``, be a class whose instances
    do (made with no arguments), or be a plain callable.
    """
    name, sep, dotted = spec.partition("=")
    module_name, _, attribute = dotted.strip().rpartition(".")
    if not sep or not name.strip() or not module_name:
        raise HandlerError(f"--handler {spec!r}: want NAME=package.module.attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise HandlerError(
            f"--handler {spec!r}: cannot import {module_name}: {error}"
        ) from None
    try:
        handler = getattr(module, attribute)
    except AttributeError:
        raise HandlerError(
            f"--handler {spec!r}: {module_name} has no {attribute!r}"
        ) from None
    if isinstance(handler, type):
        handler = handler()
    if not callable(handler) and not hasattr(handler, "handle"):
        raise HandlerError(f"--handler {spec!r}: {dotted} is not a request handler")
    return name.strip(), handler

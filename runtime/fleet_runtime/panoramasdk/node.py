"""``panoramasdk.node``: the base class of application code, wired to the graph by the runner."""

from __future__ import annotations

import threading
from typing import Any, Protocol


class ApplicationStopped(BaseException):
    """Raised from ``get()`` when the runtime stops the application (or its streams end).

    A BaseException, like SystemExit, so an application's ``except Exception``
    around its loop does not swallow it.
    """


class NodeContext(Protocol):
    """What the runner provides to one code node."""

    name: str
    media_inputs: list[str]
    media_outputs: list[str]
    params: dict[str, Any]

    def get_media(self, port: str, timeout: float | None) -> list[Any]: ...

    def put_media(self, port: str, streams: list[Any]) -> None: ...

    def call(self, inputs: dict[str, Any], model_node: str, timeout: float | None) -> Any: ...


_local = threading.local()
_default: list[NodeContext] = []


def bind(context: NodeContext | None) -> None:
    """Bind ``context`` to this thread (and as the default for threads the app starts)."""
    _local.context = context
    _default[:] = [context] if context is not None else []


def _current() -> NodeContext:
    context = getattr(_local, "context", None) or (_default[0] if _default else None)
    if context is None:
        raise RuntimeError(
            "panoramasdk.node created outside the runtime: run the app with `fleet-runtime run APP`"
        )
    return context


class _MediaInput:
    def __init__(self, context: NodeContext, port: str) -> None:
        self._context, self._port = context, port

    def get(self, timeout: float | None = None) -> list[Any]:
        """One media per bound camera; blocks until a new frame (``timeout`` in seconds)."""
        return list(self._context.get_media(self._port, timeout))


class _ParamInput:
    def __init__(self, value: Any) -> None:
        self._value = value

    def get(self, timeout: float | None = None) -> Any:
        return self._value


class _MediaOutput:
    def __init__(self, context: NodeContext, port: str) -> None:
        self._context, self._port = context, port

    def put(self, streams: Any) -> None:
        self._context.put_media(
            self._port, list(streams) if isinstance(streams, list | tuple) else [streams]
        )


class _Ports:
    """Attribute access to ports: ``self.inputs.video_in``; a missing port says which exist."""

    def __init__(self, kind: str, ports: dict[str, Any]) -> None:
        self.__dict__.update(ports)
        self._kind = kind

    def __getattr__(self, name: str) -> Any:
        known = ", ".join(k for k in self.__dict__ if not k.startswith("_")) or "none"
        raise AttributeError(f"no {self._kind} port {name!r} in graph.json (ports: {known})")


class node:  # noqa: N801 - Panorama's class name
    """Subclass this; ``inputs``, ``outputs`` and ``call`` are wired by the runtime.

    The ports are wired in ``__new__``, as on the appliance: applications that
    never call ``super().__init__()`` still find ``self.inputs`` in their own
    ``__init__``. Calling ``super().__init__()`` as well changes nothing.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> node:
        instance = super().__new__(cls)
        instance._wire(_current())
        return instance

    def __init__(self) -> None:
        if getattr(self, "_context", None) is None:  # built without __new__ (copy, pickle)
            self._wire(_current())

    def _wire(self, context: NodeContext) -> None:
        self._context = context
        inputs: dict[str, Any] = {p: _MediaInput(context, p) for p in context.media_inputs}
        inputs.update({p: _ParamInput(v) for p, v in context.params.items()})
        self.inputs = _Ports("input", inputs)
        self.outputs = _Ports(
            "output", {p: _MediaOutput(context, p) for p in context.media_outputs}
        )

    def call(
        self,
        inputs: dict[str, Any],
        model_node: str,
        timeout: float | None = None,
        time_out: float | None = None,
    ) -> Any:
        """Run ``model_node``: arrays in -> tuple of arrays; media in -> one result per media.

        ``time_out`` is the appliance SDK's spelling of ``timeout``.
        """
        return self._context.call(inputs, model_node, timeout if timeout is not None else time_out)

    def get_component_name(self) -> str:
        return self._context.name

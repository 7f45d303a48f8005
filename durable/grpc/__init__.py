"""The Durable Task sidecar protocol: durable's gRPC boundary.

Durable Task SDK workers and clients (Microsoft's ``durabletask``, Dapr Workflow,
durabletask-js) talk to durable through ``TaskHubSidecarService``; :class:`Sidecar`
serves it over a store (``durable sidecar`` on the command line). Its two wire dialects
are generated from ``protos/`` into ``durable.grpc._proto`` (``ms`` and ``dapr``) and
converted to and from durable's own model by ``durable.grpc._convert``; protobuf types
never leave this package.

:class:`RemoteWorker` runs a :class:`~durable.Registry`'s workflows and activities for
a sidecar on another machine, keeping suspended runs between turns (stateful
history); :class:`RemoteClient` is :class:`durable.Client`'s surface over a sidecar.
"""

from ._client import RemoteClient, RemoteWorkflowHandle
from ._sidecar import Sidecar
from ._worker import RemoteWorker

__all__ = ["RemoteClient", "RemoteWorker", "RemoteWorkflowHandle", "Sidecar"]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("durable.grpc._"):
        _obj.__module__ = "durable.grpc"
del _name, _obj

"""The Durable Task sidecar protocol: durable's gRPC boundary.

Durable Task SDK workers and clients (Microsoft's ``durabletask``, Dapr Workflow) talk
to durable through ``TaskHubSidecarService``. Its two wire dialects are generated from
``protos/`` into ``durable.grpc._proto`` (``ms`` and ``dapr``) and converted to and
from durable's own model by ``durable.grpc._convert``; protobuf types never leave this
package.

:class:`RemoteWorker` runs a :class:`~durable.Registry`'s workflows and activities for
a sidecar on another machine, keeping suspended runs between turns (stateful
history); :class:`RemoteClient` is :class:`durable.Client`'s surface over a sidecar.
"""

from ._client import RemoteClient, RemoteWorkflowHandle
from ._worker import RemoteWorker

__all__ = ["RemoteClient", "RemoteWorker", "RemoteWorkflowHandle"]

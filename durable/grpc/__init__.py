"""The Durable Task sidecar protocol: durable's gRPC boundary.

Durable Task SDK workers and clients (Microsoft's ``durabletask``, Dapr Workflow) talk
to durable through ``TaskHubSidecarService``. Its two wire dialects are generated from
``protos/`` into ``durable.grpc._proto`` (``ms`` and ``dapr``) and converted to and
from durable's own model by ``durable.grpc._convert``; protobuf types never leave this
package.
"""

from ._sidecar import Sidecar

__all__ = ["Sidecar"]

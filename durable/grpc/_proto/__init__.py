"""Generated protobuf stubs for the Durable Task sidecar protocol. DO NOT EDIT.

``ms``: the Microsoft dialect (``durabletask``); ``dapr``: the Dapr 1.19 dialect;
``ext``: durable's own worker stream (RemoteWorker to durable's sidecar). Regenerate
with ``protos/generate``; the sources are in ``protos/``. Protobuf types
never leave ``durable.grpc``: convert with ``durable.grpc._convert``.
"""

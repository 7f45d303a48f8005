"""The sans-I/O replay core: history events, actions, replay, context, futures, codec, retry.

Replay is a pure function of an instance's history and its new events: it runs the
workflow coroutine and returns the actions the turn asks for. Nothing here does I/O:
no anyio, no store, no clock reads (time comes from history). The engine above feeds
it and commits what it returns; ``tests/unit/test_layers.py`` checks the imports.
"""

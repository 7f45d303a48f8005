"""The storage layout over an ``ObjectStore``: turn records, meta, inbox, memo.

Everything an instance is lives under ``instances/{id}/``: ``log/{seq}`` records are
immutable and written once with put-if-absent, and that write is the commit (a second
writer of the same ``seq`` loses and drops its turn); ``meta`` is an index rebuilt by
rolling the log forward (:mod:`._reader`); ``inbox/{msg_id}`` holds accepted messages
until a turn consumes them. :mod:`._instances` creates, messages, purges and reruns
instances; :mod:`._memo` keeps activity memo under its own prefix.
"""

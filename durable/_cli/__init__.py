"""The ``durable`` command's verbs that read and steer instances (``durable.cli`` holds
the parser, the entry point and the long-running verbs): ``_output`` prints tables, JSON
and progress, ``_verbs`` does the work."""

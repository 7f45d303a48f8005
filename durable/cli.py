"""The ``durable`` command."""


def main() -> None:
    raise SystemExit("durable: not yet")

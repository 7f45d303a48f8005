"""``python -m durable`` runs the ``durable`` command."""

from .cli import main

main()

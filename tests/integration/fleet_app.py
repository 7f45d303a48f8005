"""The registry that ``durable worker fleet_app:registry`` runs in ``test_failover.py``:
the chain workflow of ``crash_worker.py``, its steps appended to ``$FLEET_ACTIVITY_LOG``."""

from __future__ import annotations

import os

import crash_worker

registry = crash_worker.build_registry(os.environ.get("FLEET_ACTIVITY_LOG"))

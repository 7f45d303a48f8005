"""``python -m benchmarks._child``: one measurement in a fresh process, printed as JSON.

Run by the suite (:func:`benchmarks._suite.run_child`), not by hand:

* ``timers STORE N [CAP]``: one ``timers`` measurement (durable; RSS of a fresh process;
  CAP is ``max_resident_workflows``);
* ``peer NAME PLAN``: a peer's measurements; PLAN is JSON
  ``{"repeat": R, "cells": [["sequential", 100], ...]}``. This imports only the peer's
  module and its SDK, never durable.
* ``sdk VARIANT N [PID]``: one ``sidecar-sdk`` run of the ``durabletask`` SDK (N
  concurrent 10-step orchestrations) on VARIANT (``in-memory`` or ``sidecar=HOST:PORT``),
  with the CPU time of this process and of PID (the sidecar) over the measured run.

The last line on stdout is the JSON result; lines on stderr starting with ``..`` are
progress.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _progress(message: str) -> None:
    print(f".. {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    if len(argv) in (3, 4) and argv[0] == "timers":
        from ._scale import timers_in_this_process

        cap = int(argv[3]) if len(argv) == 4 else None
        result: Any = timers_in_this_process(argv[1], int(argv[2]), cap)
    elif len(argv) == 3 and argv[0] == "peer":
        from ._peers import run_peer_in_this_process

        result = run_peer_in_this_process(argv[1], json.loads(argv[2]), _progress)
    elif len(argv) in (3, 4) and argv[0] == "sdk":
        from ._sidecar_sdk import sdk_run_in_this_process

        result = sdk_run_in_this_process(argv[1], int(argv[2]), int(argv[3]) if argv[3:] else None)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Benchmarks for durable: scripts that print figures and ratios, never timed assertions.

Run ``python -m benchmarks [--quick] [--json out.json] [--repeat 3]``; see
``python -m benchmarks --help`` and ``benchmarks/README.md``. Scenarios live in a
registry (:data:`benchmarks._suite.SCENARIOS`); add one with the
:func:`benchmarks._suite.scenario` decorator.
"""

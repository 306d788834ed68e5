"""Decisions, and nothing else: pure functions and small state machines of plain values.

Everything here runs in the resident process and in the worker alike. It imports the
standard library only, reads no clock, file or environment, and draws no random number:
``now`` and every draw in [0, 1) come in as parameters (docs/architecture.md,
"Invariants"; tests/unit/test_architecture.py holds it to that).
"""

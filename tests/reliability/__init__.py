"""Reliability harness: schema drift, SIGKILL interruption, injected faults, secret scans.

`python -m tests.reliability.report` runs the sweep and rewrites tests/RELIABILITY.md.
"""

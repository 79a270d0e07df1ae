"""Kept for the files that import it: the process helpers live in
tests/support/procs.py."""

from __future__ import annotations

from tests.support.procs import (
    describe,
    first_pid,
    group_members,
    kill_group,
    pid_gone,
    wait_until,
)

__all__ = ["describe", "first_pid", "group_members", "kill_group", "pid_gone", "wait_until"]

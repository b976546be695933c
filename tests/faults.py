"""Fault injection: stop a command at its n-th file-system write, as a kill at that instant would.

Every step by which mitp changes what is on disk goes through one of a few calls: a rename or replace
(atomic file writes, folder swaps), an atomic folder exchange, a copy, a removal. `killed_at(n)` makes the
n-th such call raise `Killed` (a BaseException, which mitp's error handling does not catch) before it runs;
once fired it stays quiet, so clean-up on the way out is not interrupted again. `count_writes` runs a
command with counting only, to learn how many write points it has.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from mitp.files import atomic


class Killed(BaseException):
    """The simulated kill."""


WRITE_CALLS = ((os, "replace"), (os, "rename"), (shutil, "rmtree"), (shutil, "copy2"), (atomic, "_exchange"))


@contextmanager
def _patched(on_write: Callable[[str], None]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for module, name in WRITE_CALLS:
            real = getattr(module, name)

            def wrapper(*args, _real=real, _name=name, **kwargs):
                on_write(_name)
                return _real(*args, **kwargs)

            patch.setattr(module, name, wrapper)
        yield


def count_writes(command: Callable[[], object]) -> int:
    calls: list[str] = []
    with _patched(calls.append):
        command()
    return len(calls)


def run_killed_at(n: int, command: Callable[[], object]) -> bool:
    """Run `command`, killing it at its n-th write; True if the kill happened."""
    seen = [0]

    def on_write(name: str) -> None:
        seen[0] += 1
        if seen[0] == n:
            raise Killed(f"killed at write {n} ({name})")

    try:
        with _patched(on_write):
            command()
    except Killed:
        return True
    return False

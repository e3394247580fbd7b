"""A child's death signal for when its parent dies, even by SIGKILL (Linux: prctl with
PR_SET_PDEATHSIG). Used by the local backend's torchrun (SIGTERM, so that its agent stops the
workers) and by the sweep's report process (SIGKILL: stopped while a trial runs, it would not
see its pipe close). The standard library only: the report process is forked before anything
heavy is imported."""

from __future__ import annotations

import functools
import os
from typing import Any

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


@functools.cache
def libc() -> Any:
    """The running program's own symbols, the C library's among them (no ldconfig to find it);
    None where they cannot be loaded. Load it before forking a child that calls
    :func:`die_with_parent` before exec: until exec the child holds the parent's descriptors."""
    import ctypes  # here: not in the report process's path to its fork

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def die_with_parent(parent: int, signal: int) -> bool:
    """In the child: have ``signal`` sent to it when ``parent`` dies. False where prctl is
    missing (not Linux); the child exits at once if its parent died before prctl took effect."""
    lib = libc()
    if lib is None or not hasattr(lib, "prctl") or lib.prctl(PR_SET_PDEATHSIG, signal) != 0:
        return False
    if os.getppid() != parent:
        os._exit(1)
    return True

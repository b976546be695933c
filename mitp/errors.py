"""The one base of mitp's errors.

Every error caused by input, configuration, data, a bundle or the machine's limits derives from
`MitpError`: the CLI catches it in one place and prints its message as one line, with `exit_code` and no
traceback. Anything else that escapes is a bug in mitp, and keeps its traceback.
"""

from __future__ import annotations

import errno


class MitpError(Exception):
    """An error the user can act on; the message says what is wrong and what to do."""

    exit_code = 2


# The machine's limits: an OSError with one of these errnos is the disk or the file system, not a bug.
LIMITS = {
    errno.ENOSPC: "no space left on the device: free some space, then run the command again",
    errno.EDQUOT: "the disk quota is used up: free some space, then run the command again",
    errno.EROFS: "the file system is read-only: write the output somewhere else (--out)",
    errno.EACCES: "permission denied: write the output somewhere you may write (--out)",
}
LIMIT_EXIT_CODE = 74  # EX_IOERR


def machine_limit(err: BaseException) -> str | None:
    """One line for an OSError caused by the machine's limits (full disk, quota, read-only, permissions),
    naming the file; None for any other error. What was half-written is already gone: every output is
    built under a temporary name and removed when the build fails."""
    if not isinstance(err, OSError) or err.errno not in LIMITS:
        return None
    where = f" writing {err.filename}" if err.filename else ""
    return f"{err.strerror or 'error'}{where}: {LIMITS[err.errno]}"

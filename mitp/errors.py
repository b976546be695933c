"""The one base of mitp's errors.

Every error caused by input, configuration, data, a bundle or the machine's limits derives from
`MitpError`: the CLI catches it in one place and prints its message as one line, with `exit_code` and no
traceback. Anything else that escapes is a bug in mitp, and keeps its traceback.
"""

from __future__ import annotations


class MitpError(Exception):
    """An error the user can act on; the message says what is wrong and what to do."""

    exit_code = 2

"""``rshell -v`` / ``-vv`` / ``-vvv``: the client's debug log on stderr.

The library says what it does on the ``rshell.client`` logger
(client.options.debug, one level per ``-v``); this module gives that logger
its one handler, to stderr, in OpenSSH's style: ``rshell: debug1: ...``.
Never on stdout, which is the command's.  ``-vvv`` adds paramiko's own log
(``ssh://`` targets).  Only a ``-v`` run imports ``logging``: the cold
one-shot path never comes here.

Must not import click.
"""

from __future__ import annotations

import logging
import sys

from rshell.client.options import LOGGER
from rshell.client.screen import visible


class _Format(logging.Formatter):
    """``rshell: debugN: message``, the message made inert (it may quote a
    server's words or an agent key's comment)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)
        if record.name.startswith("paramiko"):
            return f"rshell: debug3: paramiko: {visible(text)}"
        return f"rshell: debug{max(1, 11 - record.levelno)}: {visible(text)}"


def configure(verbosity: int) -> None:
    """Say ``verbosity`` levels of debug lines on stderr (0: none)."""
    if verbosity <= 0:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    logger.setLevel(11 - min(verbosity, 3))
    logger.propagate = False
    if verbosity >= 3:
        paramiko = logging.getLogger("paramiko")
        paramiko.addHandler(handler)
        paramiko.setLevel(logging.DEBUG)

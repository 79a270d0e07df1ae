"""The environment a command starts with, as a login would give it.

Must not import rshell.protocol, sockets or paramiko.
"""

from __future__ import annotations

import os

from rshell.exec import sweep

#: Variables of the server's own environment that commands inherit, as sshd
#: passes its locale and time zone; everything else (the server's secrets, its
#: RSHELL_HOME, its OLDPWD) stays out.
_PASSED_ENV = frozenset({"PATH", "LANG", "LANGUAGE", "TZ"})
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def command_environment(home: str, shell: str, peer: str, marker: str) -> dict[str, str]:
    """A login-like environment: who, where, which shell, the locale; the client
    and the session marker (see sweep.py)."""
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV or k.startswith("LC_")}
    user = login_name()
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(HOME=home, USER=user, LOGNAME=user, SHELL=shell, RSHELL_CLIENT=peer)
    env[sweep.MARKER] = marker
    return env


def login_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def login_home() -> str:
    """The account's home from the password database, as sshd takes it: the
    server's own ``$HOME`` may be anything (a service manager's, a sudo's).
    Without a password entry, ``$HOME`` is all there is."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_dir or "/"
    except KeyError:
        return os.path.expanduser("~")

"""A lone ``export``/``unset`` (exec/variables.py): what it changes, and
what it leaves to the shell."""

from __future__ import annotations

import pytest

from rshell.exec.policy import Answer, Grant, Launch, Limits, Login, Request, Workspace, decide
from rshell.exec.variables import Change, change

ENV = {"HOME": "/home/u", "PATH": "/usr/bin", "EMPTY": ""}


@pytest.mark.parametrize(("command", "expected"), [
    ("export A=1", Change(set={"A": "1"})),
    ("  export A=1 B='two words' C=\"$HOME/x\"", Change(set={"A": "1", "B": "two words",
                                                             "C": "/home/u/x"})),
    ("export PATH=$PATH:/opt/bin", Change(set={"PATH": "/usr/bin:/opt/bin"})),
    ("export P=~/bin Q=~", Change(set={"P": "/home/u/bin", "Q": "/home/u"})),
    ("export Q='~/literal'", Change(set={"Q": "~/literal"})),
    ("export HOME", Change(set={"HOME": "/home/u"})),
    ("export NOPE", Change()),
    ("unset A B", Change(unset=("A", "B"))),
    ("export 9x=1", Change(exit_code=2, stderr="export: 9x: bad variable name\n")),
    ("unset a-b", Change(exit_code=2, stderr="unset: a-b: bad variable name\n")),
])
def test_what_a_lone_export_or_unset_changes(command: str, expected: Change) -> None:
    assert change(command, ENV, "/home/u") == expected


@pytest.mark.parametrize("command", [
    "export", "export -p", "export -n A", "unset -f f", "export A=$(date)", "export A=`date`",
    "export A=1; echo", "export A=1 && make", "export A=1 | cat", "exporter A=1",
    "export A=1 > /tmp/x", "echo export A=1", "export 'unbalanced",
])
def test_anything_more_is_the_shells(command: str) -> None:
    assert change(command, ENV, "/home/u") is None


def _answer(command: str, ws: Workspace) -> Answer:
    result = decide(Request(command), ws, Limits())
    assert isinstance(result, Answer), result
    return result


def _launch(command: str, ws: Workspace) -> Launch:
    result = decide(Request(command), ws, Limits())
    assert isinstance(result, Launch), result
    return result


def test_the_session_keeps_it_and_restrict_refuses_it() -> None:
    login = Login("/", "/bin/sh", "127.0.0.1:1", "1:1")
    ws = login.workspace()
    assert _answer("export GREETING=hi", ws).outcome.exit_code == 0
    assert _launch("env", ws).env["GREETING"] == "hi"
    assert "GREETING" not in _launch("env", login.workspace()).env  # another channel: its own
    assert _answer("unset GREETING", ws).outcome.exit_code == 0
    assert "GREETING" not in _launch("env", ws).env
    login.grant = Grant(restrict=True)
    assert _answer("export X=1", ws).outcome.reason == \
        "refused: environment not permitted for this key (restrict)"
    login.grant = Grant(forced="true")
    assert _launch("export X=1", ws).command == "true"

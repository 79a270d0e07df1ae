"""A lone ``export NAME=VALUE`` / ``unset NAME`` persists for the session's
later commands on every backend (issue 12, item 10): natively and on
rshell's SSH listener the engine keeps it (exec/variables.py); over
``ssh://`` to a real sshd, where every command is a fresh shell, the client
emulates it (ssh/client.py), as it emulates ``cd``.  The same scenario,
through the API and the CLI, against the ``target`` fixtures of
tests/test_client_contract.py.
"""

from __future__ import annotations

from tests.test_client_contract import Target, native, rshell_ssh, ssh, target

__all__ = ["native", "rshell_ssh", "ssh", "target"]  # fixtures, used by name


def test_export_then_unset_persist(target: Target) -> None:
    with target.connect() as conn:
        assert conn.run("export A=1").ok
        set_ = conn.run('echo "[$A]"')
        assert conn.run("unset A").ok
        gone = conn.run('echo "[$A]"; echo "${A-unset}"')
    assert set_.stdout == b"[1]\n"
    assert gone.stdout == b"[]\nunset\n"


def test_values_are_evaluated_once_in_the_session(target: Target) -> None:
    """``$NAME`` in a value is the session's at the time, as natively: an
    export that grows a variable twice grows it twice."""
    with target.connect() as conn:
        conn.run("export P=base")
        conn.run("export P=$P:x")
        conn.run("export P=$P:y Q='two words' R=\"$P\"")
        conn.run("cd /tmp")
        seen = conn.run('echo "$P|$Q|$R"; printenv Q')
        conn.run("export D=/")
        moved = conn.run("cd $D")
        where = conn.run("pwd")
    assert seen.stdout == b"base:x:y|two words|base:x\ntwo words\n"
    assert moved.ok and where.stdout == b"/\n"


def test_only_a_lone_statement_persists(target: Target) -> None:
    """With an operator, a command substitution or a bad name it is a
    command: it runs in its shell and changes nothing after it."""
    with target.connect() as conn:
        inline = conn.run("export B=1; echo \"[$B]\"")
        after = conn.run('echo "[${B-unset}]"')
        conn.run("export C=$(echo sub)")
        sub = conn.run('echo "[${C-unset}]"')
        bad = conn.run("export 1X=2")
        conn.run("export E=1 && true")
        chained = conn.run('echo "[${E-unset}]"')
    assert inline.stdout == b"[1]\n" and after.stdout == b"[unset]\n"
    assert sub.stdout == b"[unset]\n"
    assert not bad.ok and bad.stderr
    assert chained.stdout == b"[unset]\n"


def test_through_the_cli_batch(target: Target) -> None:
    proc = target.cli(input=b"export GREETING=hi\necho \"$GREETING\"\nunset GREETING\n"
                            b"echo \"[${GREETING-unset}]\"\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"hi\n[unset]\n"


def test_the_servers_own_names_are_refused_alike(target: Target) -> None:
    """RSHELL_ names are the server's (shellwords.reserved, one rule): a lone
    export or unset of one is refused, 126 with the engine's words, on every
    backend; nothing runs, and the session's own marker is untouched."""
    with target.connect() as conn:
        for statement in ("export RSHELL_SESSION=elsewhere", "unset RSHELL_CLIENT"):
            r = conn.run(statement)
            name = statement.split()[1].partition("=")[0]
            assert (r.exit_code, r.error) == (
                126, f"refused: environment variable {name} is reserved for the server"), r
        assert conn.run('printf %s "${RSHELL_SESSION-}"').stdout != b"elsewhere"

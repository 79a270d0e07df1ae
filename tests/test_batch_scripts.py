"""A batch is made of complete shell commands: a real script piped to the
real CLI prints what ``sh`` prints running it (here-documents, continued
lines, loops, ``if``, ``case``, braces, quotes across lines), ``cd``
persisting between commands."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.parity_support import SSH, start_both
from tests.support.cli import cli
from tests.support.servers import ServerProcess
from tests.test_ssh_server import ssh

SCRIPT = textwrap.dedent("""\
    #!/bin/sh
    # a deploy-ish script, as people write them
    cd {work}
    cat > notes.txt <<EOF
    release $((40 + 2))
      indented line
    EOF
    cat <<-'END' | tr a-z A-Z
    \tnot $expanded
    \tEND
    for f in notes.txt missing.txt; do
      if [ -e "$f" ]; then
        echo "have $f: $(wc -l < "$f") lines"
      else
        echo "no $f"
      fi
    done
    case "$(head -1 notes.txt)" in
      release*) echo "a release" ;;
      *) echo "something else" ;;
    esac
    { echo grouped; echo braces; } | sort
    show() { printf '[%s]\\n' "$@"; }; show one "two words"
    echo 'a quote
    across lines' \\
      and a continuation
    printf '%s\\n' c b a |
      sort |
      head -2
    """)


def _script(tmp_path: Path) -> tuple[str, bytes]:
    """The script run in a fresh directory, and what sh prints for it."""
    work = tmp_path / "work"
    work.mkdir()
    script = SCRIPT.replace("{work}", str(work))
    expected = subprocess.run(["sh", "-c", script], capture_output=True, timeout=30)
    assert expected.returncode == 0, expected.stderr
    (work / "notes.txt").unlink()
    return script, expected.stdout


def test_a_real_script_runs_as_sh_runs_it(
    home: Path, server: ServerProcess, tmp_path: Path
) -> None:
    script, expected_stdout = _script(tmp_path)
    work = tmp_path / "work"
    proc = cli(home, server.address, input=script.encode())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected_stdout
    assert proc.stderr == b""
    assert (work / "notes.txt").read_text() == "release 42\n  indented line\n"


@pytest.mark.skipif(SSH is None, reason="OpenSSH client missing (.ci/run installs it)")
def test_ssh_line_session_reads_the_script_as_sh_does(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """``ssh -T host < script`` against --ssh-bind: the same grouping, in the engine's
    line session (ssh/channel.py), as sshd's shell would read it."""
    script, expected_stdout = _script(tmp_path)
    account = tmp_path / "account"
    srv = start_both(start_server, account)
    proc = ssh(srv, input=script.encode(), extra=("-T",))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected_stdout, b""), proc


def test_an_unfinished_command_at_the_end_is_the_shells_to_refuse(
    home: Path, server: ServerProcess
) -> None:
    proc = cli(home, server.address, input=b"echo before\nif true; then\n  echo inside\n")
    assert proc.stdout == b"before\n"
    assert proc.returncode == 2, proc.stderr  # sh: syntax error, end of file unexpected
    assert b"Syntax error" in proc.stderr or b"syntax error" in proc.stderr

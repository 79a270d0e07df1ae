"""Grouping lines into complete shell commands (shellwords.CommandReader),
judged against the real ``sh``: every group it makes is a whole command to
``sh -n``, and running the groups one by one prints what running the script
at once prints."""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from rshell.shellwords import CommandReader


def groups(script: str) -> list[str]:
    reader = CommandReader()
    out = [c for line in script.splitlines() if (c := reader.add(line)) is not None]
    rest = reader.flush()
    return out + ([rest] if rest is not None else [])


SCRIPTS = {
    "heredocs": """\
        cat <<EOF
        one $((1 + 1))
          if this were code it would not count
        EOF
        cat <<-'END' | tr a-z A-Z
        \tquoted: $HOME stays
        \tEND
        cat <<A; cat <<"B"
        first
        A
        second
        B
        echo after
        """,
    "continuations": """\
        echo a \\
          b \\
          c
        printf '%s\\n' x y |
          sort -r |
          head -1
        true &&
          echo and
        false ||
          echo or
        echo 'single
        quoted' "double
        quoted" `echo back
        ticks`
        """,
    "compound": """\
        if true; then
          echo yes
        elif false; then
          echo no
        else
          echo never
        fi
        for i in 1 2 if fi done; do
          echo "$i"
        done
        n=0
        while [ $n -lt 2 ]; do n=$((n + 1)); echo "w$n"; done
        until true; do :; done
        case x in
          a|b) echo ab ;;
          (x)
            case y in y) echo nested;; esac
            ;;
          *) echo other ;;
        esac
        { echo brace; echo group; }
        ( echo sub
          echo shell )
        echo "$(echo one
        echo two)" ${HOME:+set}
        echo done esac fi }
        """,
    "functions": """\
        greet() {
          echo "hello $1"  # a comment with a ' quote
        }
        greet world
        twice() { greet "$1"; greet "$1"; }
        twice you
        # a comment line
        echo '#not a comment' a#b
        """,
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_group_is_a_whole_command_and_the_script_runs_the_same(name: str) -> None:
    script = textwrap.dedent(SCRIPTS[name])
    found = groups(script)
    assert "\n".join(found).split() == script.split()  # nothing lost, nothing added
    for group in found:
        check = subprocess.run(["sh", "-n", "-c", group], capture_output=True, timeout=10)
        assert check.returncode == 0, (group, check.stderr)
    whole = subprocess.run(["sh", "-c", script], capture_output=True, timeout=10)
    assert whole.returncode == 0, whole.stderr
    # Functions and variables must outlive their group, as in the remote session's shell.
    one_by_one = subprocess.run(
        ["sh", "-c", "\n".join(f"eval {_quoted(g)}" for g in found)],
        capture_output=True, timeout=10,
    )
    assert one_by_one.stdout == whole.stdout, found


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_groups_are_as_small_as_a_shell_reads_them() -> None:
    script = textwrap.dedent("""\
        echo one; echo two
        if true
        then echo three
        fi
        cat <<EOF
        EOF
        echo four |
        cat
        f() { echo; }
        """)
    assert groups(script) == [
        "echo one; echo two", "if true\nthen echo three\nfi", "cat <<EOF\nEOF",
        "echo four |\ncat", "f() { echo; }",
    ]


def test_pending_says_more_is_needed_and_blank_lines_between_are_nothing() -> None:
    reader = CommandReader()
    assert reader.add("") is None and not reader.pending
    assert reader.add("for x in a; do") is None and reader.pending
    assert reader.add("") is None and reader.pending  # inside: kept
    assert reader.add("done") == "for x in a; do\n\ndone"
    assert not reader.pending


def test_an_unfinished_command_is_sent_as_read_for_the_shell_to_judge() -> None:
    assert groups("echo 'never closed\nmore") == ["echo 'never closed\nmore"]
    assert groups("if true; then\necho x") == ["if true; then\necho x"]

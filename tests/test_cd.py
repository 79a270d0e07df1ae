"""``cd`` on its own (rshell.exec.cd): which commands it answers, where it
moves a session, and what it says when it cannot, as a POSIX shell would.

Real directories in ``tmp_path``; no server, no subprocess.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rshell.exec.cd import cd, might_be_cd


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in ("a", "a/b", "with space", "we$HOME"):
        (tmp_path / name).mkdir()
    (tmp_path / "file").write_text("not a directory\n")
    return tmp_path


@pytest.mark.parametrize("command", [
    "echo cd", "cd /x && make", "cd a b", "cdx", "cd 'unclosed", "ls; cd /", "",
])
def test_anything_but_cd_dir_is_left_to_the_shell(tree: Path, command: str) -> None:
    assert cd(command, str(tree), str(tree), str(tree)) is None


def test_might_be_cd_is_the_cheap_prefix_test() -> None:
    assert might_be_cd("  cd /tmp") and might_be_cd("cdx")
    assert not might_be_cd("echo cd")


def test_relative_absolute_and_dotdot(tree: Path) -> None:
    moved = cd("cd a/b", str(tree), "/prev", "/home")
    assert moved is not None
    assert (moved.cwd, moved.previous, moved.exit_code, moved.stderr) == (
        str(tree / "a" / "b"), str(tree), 0, "")
    up = cd("cd ../..", moved.cwd, moved.previous, "/home")
    assert up is not None and up.cwd == str(tree)
    absolute = cd(f"cd {tree / 'a'}", "/", "/", "/home")
    assert absolute is not None and absolute.cwd == str(tree / "a")


def test_no_argument_goes_home_and_dash_goes_back(tree: Path) -> None:
    home = cd("cd", str(tree / "a"), "/prev", str(tree))
    assert home is not None and (home.cwd, home.previous) == (str(tree), str(tree / "a"))
    back = cd("cd -", home.cwd, home.previous, str(tree))
    assert back is not None and (back.cwd, back.previous) == (str(tree / "a"), str(tree))


def test_quotes_and_escapes_keep_one_word(tree: Path) -> None:
    for command in ("cd 'with space'", 'cd "with space"', "cd with\\ space"):
        moved = cd(command, str(tree), str(tree), "/home")
        assert moved is not None and moved.cwd == str(tree / "with space"), command


def test_variables_expand_from_the_command_environment(tree: Path) -> None:
    env = {"D": "a", "SP": "with space"}
    for command, where in (("cd $D/b", "a/b"), ("cd ${D}", "a"), ('cd "$SP"', "with space"),
                           ("cd $SP", "with space")):
        moved = cd(command, str(tree), str(tree), "/home", env)
        assert moved is not None and moved.cwd == str(tree / where), command


def test_single_quotes_keep_a_dollar_literal(tree: Path) -> None:
    moved = cd("cd 'we$HOME'", str(tree), str(tree), "/home", {"HOME": "/elsewhere"})
    assert moved is not None and moved.cwd == str(tree / "we$HOME")


def test_an_unset_variable_is_empty_and_goes_home(tree: Path) -> None:
    moved = cd("cd $NOPE", str(tree / "a"), str(tree), str(tree), {})
    assert moved is not None and moved.cwd == str(tree)


def test_tilde_expands_unquoted_only(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tree))
    moved = cd("cd ~/a", "/", "/", "/home")
    assert moved is not None and moved.cwd == str(tree / "a")
    (tree / "~").mkdir()
    quoted = cd("cd '~'", str(tree), str(tree), "/home")
    assert quoted is not None and quoted.cwd == str(tree / "~")


@pytest.mark.parametrize(("target", "problem"), [
    ("missing", "No such file or directory"),
    ("file", "Not a directory"),
])
def test_a_failure_keeps_the_directory_and_says_why(tree: Path, target: str,
                                                    problem: str) -> None:
    failed = cd(f"cd {target}", str(tree), "/prev", "/home")
    assert failed is not None
    assert (failed.cwd, failed.previous, failed.exit_code) == (str(tree), "/prev", 1)
    assert failed.stderr == f"cd: {target}: {problem}\n"


def test_a_directory_without_search_permission_is_refused() -> None:
    """As a shell says it.  Root enters any directory, so as root the check
    runs in a forked child that has become ``nobody`` (the tree is made for it)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="rshell-cd-"))
    try:
        base.chmod(0o755)
        (base / "locked").mkdir(mode=0o600)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: no pytest, no exceptions past here
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                r = cd("cd locked", str(base), str(base), "/")
                os.write(write, f"{r.exit_code if r else None} {r.stderr if r else ''}".encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            said = f.read().decode()
        os.waitpid(pid, 0)
        assert said == "1 cd: locked: Permission denied\n"
    finally:
        shutil.rmtree(base)

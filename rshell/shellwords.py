"""How a command line reads to a POSIX shell, as far as rshell must know it.

Where one command ends (``CommandReader``): a batch or the prompt sends a
script's commands one at a time, and a command may span lines.

A lone ``cd [DIR]`` changes the session's directory, and a lone
``export NAME=VALUE`` / ``unset NAME`` its environment, natively (exec/cd.py,
exec/variables.py) and over ``ssh://`` (ssh/client.py); anything more
(``cd /x && make``, ``cd a;b``, ``export A=$(date)``) runs in the shell.
Both sides ask this module, so a line is never a builtin on one path and a
command on the other.

Must not import anything of rshell.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable


def _words(text: str) -> list[str] | None:
    """The words of a line as the shell splits them, each operator a word of
    its own (``;``, ``&&``, ``|``, ``>``...); None when its quoting is unbalanced."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:
        return None


def lone_cd(command: str) -> list[str] | None:
    """``["cd"]`` or ``["cd", DIR]`` when ``command`` is nothing but that
    (shell operators such as ``;``, ``&&`` or ``|`` make it a command); None
    otherwise, or when its quoting is unbalanced."""
    text = command.strip()
    if not text.startswith("cd"):
        return None  # the common case, without the cost of a lexer
    argv = _words(text)
    if not argv or argv[0] != "cd" or len(argv) > 2:
        return None
    return argv


def reserved(names: Iterable[str]) -> str | None:
    """Why a client may not set (or unset) these variables, if it may not: the
    server's own ``RSHELL_`` ones (the session marker the end-of-session sweep
    follows, the client's address).  One rule for the engine's ``env``,
    ``export`` and ``unset``, and the ``ssh://`` backend's emulation of them."""
    found = sorted(n for n in names if n.startswith("RSHELL_"))
    return f"environment variable {found[0]} is reserved for the server" if found else None


#: The verbs of a lone assignment to the session's environment.
ASSIGNMENT_VERBS = ("export", "unset")


def lone_assignment(command: str) -> list[str] | None:
    """The words (as typed, unexpanded) of a lone ``export WORD...`` or
    ``unset WORD...``; None for anything the shell alone can evaluate:
    command substitution (``$(...)``, backquotes), an operator (``;``,
    ``&&``, ``|``, a redirection), an option, a bare ``export``, unbalanced
    quotes."""
    text = command.strip()
    if not text.startswith(ASSIGNMENT_VERBS) or "`" in text or "$(" in text:
        return None  # the common case, without the cost of a lexer
    argv = _words(text)
    if argv is None or len(argv) < 2 or argv[0] not in ASSIGNMENT_VERBS:
        return None
    if any((w and set(w) <= set("();<>|&")) or w.startswith("-") for w in argv[1:]):
        return None
    return argv


# ---- complete commands ---------------------------------------------------------------

#: Reserved words that open a compound command, and the word that closes it.
_OPENERS = {"if": "fi", "case": "esac", "for": "done", "while": "done", "until": "done",
            "select": "done", "{": "}"}
#: Words after which the next word is again a command's first word.
_LEADERS = frozenset({"then", "do", "else", "elif", "!"})
#: Operators that end a line without ending the command.
_CONTINUED = ("|", "&&", "||")


class CommandReader:
    """Groups lines into complete shell commands, as ``sh`` reads a script:
    a command goes on past the end of a line inside quotes, after a
    backslash, after ``|``, ``&&`` or ``||``, inside ``if … fi``, loops,
    ``case … esac``, ``{ … }``, ``( … )``, ``$( … )`` and function bodies,
    and through here-documents.  ``add(line)`` returns the complete command
    a line finishes (its lines joined by newlines), or None while more is
    needed (``pending`` is then True: a prompt shows ``> ``).

    This reads only as far as grouping needs: the remote shell still parses
    what it is sent, and a script the shell would reject is sent as the
    shell would read it, for the shell to say why.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lines: list[str] = []
        self._quote = ""  # ', ", or ` while a quoted text spans lines
        self._stack: list[str] = []  # closing words and brackets still expected
        self._heredocs: list[tuple[str, bool]] = []  # (delimiter, strip tabs) still to read
        self._body: tuple[str, bool] | None = None  # the here-document being read
        self._continued = False  # the last line ended with \, |, && or ||

    @property
    def pending(self) -> bool:
        return bool(self._lines)

    def add(self, line: str) -> str | None:
        line = line.rstrip("\r\n")  # a script saved with CRLF reads as sh -c would want
        if not self._lines and not line.strip():
            return None  # a blank line between commands is nothing
        self._lines.append(line)
        if self._body is not None:
            delimiter, strip = self._body
            if (line.lstrip("\t") if strip else line) == delimiter:
                self._body = self._heredocs.pop(0) if self._heredocs else None
        else:
            self._scan(line)
            if self._heredocs:
                self._body = self._heredocs.pop(0)
        if self._quote or self._stack or self._body is not None or self._continued:
            return None
        return self.flush()

    def flush(self) -> str | None:
        """What has been read, complete or not (at the end of the input, or
        when the user gives up on a continued line)."""
        text = "\n".join(self._lines)
        self._reset()
        return text if text.strip() else None

    def _scan(self, line: str) -> None:
        """Follow one line's quotes, words and operators."""
        i, n = 0, len(line)
        self._continued = False
        leading = not self._quote  # is the next word a command's first word?
        word = self._quote  # a word that began in a quote on an earlier line
        last = ""  # the last operator or word, for a line that ends on |, && or ||
        while i < n:
            ch = line[i]
            if self._quote:
                i = self._in_quote(line, i)
                continue
            if ch == "\\":
                if i + 1 >= n:
                    self._continued = True
                    return
                word += line[i : i + 2]
                i += 2
                continue
            if ch in "'\"`":
                self._quote = ch
                word += ch
                i += 1
                continue
            if ch == "$" and line.startswith("$(", i):
                self._stack.append(")")
                word, leading = "", True
                i += 2
                continue
            if ch == "$" and line.startswith("${", i):
                self._stack.append("}$")
                i += 2
                continue
            if ch == "}" and self._stack and self._stack[-1] == "}$":
                self._stack.pop()
                i += 1
                continue
            if ch == "#" and not word:
                break  # a comment, to the end of the line
            if ch in " \t;&|()<>":
                leading, last = self._end_word(word, leading, last)
                word = ""
                if ch in " \t":
                    i += 1
                    continue
                op = self._operator(line, i)
                i += len(op)
                if op == "(":
                    self._stack.append(")")
                elif op == ")":
                    if self._stack and self._stack[-1] == ")":
                        self._stack.pop()
                    # a case pattern's ")" closes nothing: the arm's command follows
                elif op in ("<<", "<<-"):
                    i = self._heredoc(line, i, strip=op == "<<-")
                    last = "word"
                    continue
                leading = op in (";", "&", "|", "&&", "||", "(", ")", ";;", ";&")
                last = op
                continue
            word += ch
            i += 1
        if not self._quote:
            leading, last = self._end_word(word, leading, last)
            self._continued = last in _CONTINUED

    def _in_quote(self, line: str, i: int) -> int:
        """Inside a quote: find its end (a backslash escapes in " and `)."""
        quote = self._quote
        while i < len(line):
            ch = line[i]
            if ch == "\\" and quote != "'":
                i += 2
                continue
            i += 1
            if ch == quote:
                self._quote = ""
                break
        return i

    def _end_word(self, word: str, leading: bool, last: str) -> tuple[bool, str]:
        """A finished word: a reserved word at a command's start opens or
        closes a compound command."""
        if not word:
            return leading, last
        if leading:
            if word in _OPENERS:
                self._stack.append(_OPENERS[word])
            elif self._stack and word == self._stack[-1]:
                self._stack.pop()
                return False, word
            elif word == "esac" and "esac" in self._stack:
                while self._stack and self._stack.pop() != "esac":
                    pass
                return False, word
            # for NAME / select NAME / case WORD: a word, not a command, comes next
            return word in _LEADERS or word in ("while", "until", "if", "{"), word
        if word == "in" and self._stack and self._stack[-1] == "esac":
            return True, word  # case WORD in: patterns follow
        return False, word

    @staticmethod
    def _operator(line: str, i: int) -> str:
        for op in ("&&", "||", ";;", ";&", "<<-", "<<", ">>", "<&", ">&", "<>", ">|"):
            if line.startswith(op, i):
                return op
        return line[i]

    def _heredoc(self, line: str, i: int, *, strip: bool) -> int:
        """``<<WORD``: WORD (its quotes removed) ends the body that starts on
        the next line."""
        n = len(line)
        while i < n and line[i] in " \t":
            i += 1
        start = i
        while i < n and line[i] not in " \t;&|()<>":
            if line[i] in "'\"":
                end = line.find(line[i], i + 1)
                i = n if end < 0 else end + 1
            else:
                i += 1
        delimiter = line[start:i].replace("'", "").replace('"', "").replace("\\", "")
        if delimiter:
            self._heredocs.append((delimiter, strip))
        return i

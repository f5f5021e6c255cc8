"""How a ``sudo: true`` step runs as root, and how the preflight proves sudo will let it.

Sites grant sudo per command (``deploy ALL=(root) NOPASSWD: /usr/local/bin/install-callserver *``),
and such a rule matches only the command itself, never ``sh -c '...'``. So a step that is one
simple command runs as written, ``sudo -n -- COMMAND ARGS``; only a step that needs a shell
(pipes, redirections, ``;``, ``&&``, variables, globs, builtins) runs as
``sudo -n -- sh -c '...'``, which needs a rule for ``/bin/sh``. Either way ``-n``: sudo fails
rather than prompts. The preflight asks ``sudo -n -l`` the same words before anything is touched.
"""

from __future__ import annotations

import shlex

# The preflight's question, before the argv it asks about.
SUDO_CHECK = "sudo -n -l -- "

# Characters that make the shell do something beyond splitting words: expansions, globs,
# comments, line breaks. Conservative on purpose: a false "needs a shell" only costs the form.
_SHELL_CHARACTERS = frozenset("$`*?[~#\n\\{}")
# Words that are the shell's own, not programs sudo could run.
_SHELL_WORDS = frozenset(
    {"cd", "export", "exec", "source", ".", "set", "unset", "eval", "ulimit", "umask", "alias",
     "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
     "!", "{", "}", "function", "trap", "read", "wait", "shift", "return", "exit", "local"}
)  # fmt: skip


def simple_words(command: str) -> list[str] | None:
    """The words of ``command`` when it is one simple command a shell would run as an argv;
    None when it needs a shell."""
    if any(character in _SHELL_CHARACTERS for character in command):
        return None
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:  # an unclosed quote: let the shell say so
        return None
    if not words or words[0] in _SHELL_WORDS or "=" in words[0].split("/")[0]:
        return None  # empty, a shell keyword, or a variable assignment (FOO=bar cmd)
    if any(word and set(word) <= set("();<>|&") for word in words):
        return None  # an operator: a pipe, a redirection, a list
    return words


def form(command: str) -> list[str]:
    """The argv sudo is asked to run for ``command``: its own words, or ``sh -c COMMAND``."""
    return simple_words(command) or ["sh", "-c", command]


def wrap_sudo(command: str) -> str:
    """``command`` run as root through non-interactive sudo: it fails rather than prompting."""
    return "sudo -n -- " + shlex.join(form(command))


def sudo_check(command: str) -> str:
    """The command that exits 0 only when sudo would run ``command`` (as ``wrap_sudo`` words it)
    without a password: ``sudo -n -l ARGV``."""
    return SUDO_CHECK + shlex.join(form(command))

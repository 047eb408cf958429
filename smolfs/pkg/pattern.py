"""pkgsrc package patterns, matched as pkg_install's ``lib/opattern.c`` matches them:
alternatives, relational patterns, globs, full names, then ``PATTERN-[0-9]*``; the best
match is the newest (the order and the tie rule: ``smolfs/pkg/README.md``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from smolfs.errors import UsageError
from smolfs.pkg import dewey


def split_name(pkgname: str) -> tuple[str, str]:
    """``nginx-1.24.0nb2`` → ``("nginx", "1.24.0nb2")`` (the version follows the last ``-``)."""
    base, dash, version = pkgname.rpartition("-")
    if not dash or not base:
        return pkgname, ""
    return base, version


def match(pattern: str, pkgname: str) -> bool:
    """True when *pattern* matches the package name *pkgname* (``name-version``)."""
    if not _quick(pattern, pkgname):
        return False
    if "{" in pattern:
        return any(match(alt, pkgname) for alt in _alternatives(pattern))
    if "<" in pattern or ">" in pattern:
        return dewey.match(pattern, pkgname)
    if any(c in pattern for c in "*?[]") and _glob(pattern).fullmatch(pkgname):
        return True
    if pattern == pkgname:
        return True
    return bool(_glob(pattern + "-[0-9]*").fullmatch(pkgname))


def best(pattern: str, pkgnames: Iterable[str]) -> str | None:
    """The best package *pattern* matches among *pkgnames*: newest version, then first name."""
    found: str | None = None
    for name in pkgnames:
        if not match(pattern, name):
            continue
        if found is None or _better(name, found):
            found = name
    return found


def _better(a: str, b: str) -> bool:
    c = dewey.compare(split_name(a)[1], split_name(b)[1])
    return c > 0 or (c == 0 and a < b)


def base_name(pattern: str) -> str:
    """A readable package name for a pattern, for messages: ``nginx>=1.24`` → ``nginx``."""
    m = re.match(r"[^<>{}*?\[\]]*", pattern)
    head = m.group(0) if m else pattern
    return split_name(head)[0] if re.search(r"-[0-9]", head) else head.rstrip("-") or pattern


def check(pattern: str) -> str:
    """*pattern*, or :class:`UsageError` when its braces do not pair."""
    depth = 0
    for c in pattern:
        depth += (c == "{") - (c == "}")
        if depth < 0:
            break
    if depth != 0 or not pattern.strip():
        raise UsageError(f"malformed package pattern {pattern!r}",
                         hint="e.g. nginx, 'nginx>=1.24', 'py3*-flask', '{curl,wget}'")
    return pattern


def _quick(pattern: str, pkgname: str) -> bool:
    """pkg_install's shortcut: two leading plain characters must agree."""
    for i in range(2):
        c = pattern[i] if i < len(pattern) else ""
        if not (c.isalnum() or c == "-"):
            return True
        if i >= len(pkgname) or c != pkgname[i]:
            return False
    return True


def _alternatives(pattern: str) -> list[str]:
    """Expand the first ``{...}`` group of *pattern* (one level; the results recurse)."""
    start = pattern.index("{")
    depth, end = 0, -1
    for i in range(start, len(pattern)):
        if pattern[i] == "{":
            depth += 1
        elif pattern[i] == "}":
            depth -= 1
            if depth == 0:
                end = i
                break
    if end < 0:
        check(pattern)
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    alts, depth, cur = [], 0, ""
    for c in body:
        if c == "," and depth == 0:
            alts.append(cur)
            cur = ""
            continue
        depth += (c == "{") - (c == "}")
        cur += c
    alts.append(cur)
    return [head + a + tail for a in alts]


@lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    """A compiled shell glob: ``*``, ``?``, ``[...]``/``[!...]``, ``\\`` escapes; a name
    that starts with ``.`` matches only a pattern that starts with ``.`` (FNM_PERIOD)."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("(?!\\.)" if i == 0 else "")
            out.append(".*")
        elif c == "?":
            out.append("(?!\\.)" if i == 0 else "")
            out.append(".")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                neg = body[:1] in ("!", "^")
                if neg:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("[", "\\[")
                cls = f"[{'^' if neg else ''}{body}]"
                out.append(("(?!\\.)" if i == 0 else "") + cls)
                i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)

"""pkgsrc's version order ("dewey" comparison), as pkg_install's ``lib/dewey.c`` defines it
(``1.0rc1 < 1.0``, ``1.2nb3 < 1.10``; the rules: ``smolfs/pkg/README.md``)."""

from __future__ import annotations

from dataclasses import dataclass

ALPHA, BETA, RC, DOT = -3, -2, -1, 0

#: Words that stand for a number, tried in this order (pkg_install's table).
MODIFIERS: tuple[tuple[str, int], ...] = (
    ("alpha", ALPHA), ("beta", BETA), ("pre", RC), ("rc", RC), ("pl", DOT), ("_", DOT),
    (".", DOT),
)

#: Comparison operators, longest first where one is a prefix of another.
OPERATORS: tuple[str, ...] = ("<=", "<", ">=", ">", "==", "!=")


@dataclass(frozen=True)
class Version:
    numbers: tuple[int, ...]
    nb: int  # the pkgsrc revision (``nb`` suffix)


def parse(text: str) -> Version:
    """The comparable form of a version string (never fails: unknown bytes are skipped)."""
    out: list[int] = []
    nb = 0
    i, n = 0, len(text)
    low = text.lower()
    while i < n:
        c = text[i]
        if c.isascii() and c.isdigit():
            j = i
            while j < n and text[j].isascii() and text[j].isdigit():
                j += 1
            out.append(int(text[i:j]))
            i = j
            continue
        for word, value in MODIFIERS:
            if low.startswith(word, i):
                out.append(value)
                i += len(word)
                break
        else:
            if low.startswith("nb", i):
                j = i + 2
                while j < n and text[j].isascii() and text[j].isdigit():
                    j += 1
                nb = int(text[i + 2 : j]) if j > i + 2 else 0
                i = j
            elif c.isascii() and c.isalpha():
                out.extend((DOT, ord(low[i]) - ord("a") + 1))
                i += 1
            else:
                i += 1
    return Version(tuple(out), nb)


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as version *a* is older than, equal to or newer than *b*."""
    va, vb = parse(a), parse(b)
    for i in range(max(len(va.numbers), len(vb.numbers))):
        x = va.numbers[i] if i < len(va.numbers) else 0
        y = vb.numbers[i] if i < len(vb.numbers) else 0
        if x != y:
            return -1 if x < y else 1
    return (va.nb > vb.nb) - (va.nb < vb.nb)


def test(a: str, op: str, b: str) -> bool:
    """``a OP b`` for one of :data:`OPERATORS`."""
    c = compare(a, b)
    return {"<": c < 0, "<=": c <= 0, ">": c > 0, ">=": c >= 0, "==": c == 0,
            "!=": c != 0}[op]


def operator_at(text: str, at: int) -> str | None:
    """The operator that starts at *at* in *text*, if any."""
    for op in OPERATORS:
        if text.startswith(op, at):
            return op
    return None


def match(pattern: str, pkgname: str) -> bool:
    """A relational pattern (``nginx>=1.24``, ``php>=8.1<8.3``) against ``name-version``.

    As pkg_install: the name before the first ``<`` or ``>`` must equal the package's
    name (all before its last ``-``); a lower bound may be followed by an upper bound
    starting with ``<``."""
    dash = pkgname.rfind("-")
    if dash < 0:
        return False
    sep = min((i for i in (pattern.find("<"), pattern.find(">")) if i >= 0), default=-1)
    if sep < 0 or pattern[:sep] != pkgname[:dash]:
        return False
    version = pkgname[dash + 1 :]
    op = operator_at(pattern, sep)
    if op is None:
        return False
    rest = pattern[sep + len(op) :]
    if op in (">", ">="):
        upper = rest.find("<")
        if upper >= 0:
            op2 = operator_at(rest, upper)
            if op2 is None or not test(version, op2, rest[upper + len(op2) :]):
                return False
            rest = rest[:upper]
    return test(version, op, rest)

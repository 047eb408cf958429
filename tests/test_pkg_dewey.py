"""pkgsrc's version order and patterns, case by case as pkg_install's dewey.c/opattern.c
define them, and the pkg_summary reader."""

from __future__ import annotations

import pytest

from smolfs.errors import InputError, UsageError
from smolfs.pkg import dewey, pattern, summary


@pytest.mark.parametrize(("older", "newer"), [
    ("1.2nb3", "1.10"),        # numbers, not strings; nb compared last
    ("1.0rc1", "1.0"),         # rc is -1 against the missing 0
    ("1.0alpha1", "1.0beta1"),
    ("1.0beta2", "1.0pre1"),
    ("1.0", "1.0pl1"),         # pl is 0, then 1 beats nothing
    ("1.0", "1.0nb1"),
    ("1.0nb1", "1.0nb10"),
    ("1.0", "1.0a"),           # a letter is 0 then its place in the alphabet
    ("1.0a", "1.0b"),
    ("2.9", "2.10"),
    ("1.0pre3", "1.0rc4"),     # pre and rc are the same value: 3 < 4
    ("0.9", "1"),
])
def test_dewey_order(older: str, newer: str) -> None:
    assert dewey.compare(older, newer) == -1
    assert dewey.compare(newer, older) == 1


@pytest.mark.parametrize(("a", "b"), [
    ("1_2", "1.2"), ("1.0pre1", "1.0rc1"), ("1.0", "1.0.0"), ("1.0pl0", "1.0"),
    ("1.0ALPHA", "1.0alpha"),
])
def test_dewey_equal(a: str, b: str) -> None:
    assert dewey.compare(a, b) == 0


@pytest.mark.parametrize(("pat", "name", "hit"), [
    ("nginx>=1.24", "nginx-1.24.0", True),
    ("nginx>=1.24", "nginx-1.22.1nb3", False),
    ("nginx>=1.24<1.26", "nginx-1.25.3", True),
    ("nginx>=1.24<1.26", "nginx-1.26.0", False),
    ("nginx>1.24", "nginx-1.24", False),
    ("nginx<=1.24", "nginx-1.24nb2", False),   # nb2 is newer than 1.24
    ("nginx<1.24", "nginx-1.24rc1", True),
    ("foo>=1.0", "foo-bar-1.0", False),       # the name must be equal, not a prefix
    ("py3*-flask", "py311-flask-3.0.0", True),
    ("py3*-flask-[0-9]*", "py311-flask-3.0.0", True),
    ("py3*-flask", "py311-flask-sqlalchemy-3.1", False),
    ("{curl,wget}", "wget-1.21", True),
    ("{curl,wget}", "curl-8.5.0", True),
    ("{curl,wget}", "wcurl-1", False),
    ("{curl,wget}>=8", "curl-8.5.0", True),
    ("{curl,wget}>=8", "wget-1.21", False),
    ("p5-{Foo,Bar{1,2}}-[0-9]*", "p5-Bar2-1.0", True),
    ("curl", "curl-8.5.0", True),             # a bare name means any version
    ("curl", "curl-devel-8", False),
    ("curl-8.5.0", "curl-8.5.0", True),
    ("curl-8.5.0", "curl-8.5.1", False),
    ("*", ".hidden-1", False),                # FNM_PERIOD
    ("foo-[!0-8]*", "foo-9.1", True),
    ("foo-[!0-8]*", "foo-1.1", False),
])
def test_pattern(pat: str, name: str, hit: bool) -> None:
    assert pattern.match(pat, name) is hit


def test_best_prefers_newest_then_first_name() -> None:
    names = ["foo-1.2nb3", "foo-1.10", "foo-1.0rc1", "foo-1.9"]
    assert pattern.best("foo>=1", names) == "foo-1.10"
    assert pattern.best("foo<1.5", names) == "foo-1.2nb3"
    assert pattern.best("foo<1.0", names) == "foo-1.0rc1"
    assert pattern.best("{foo,bar}", ["bar-2.0", "foo-2.0"]) == "bar-2.0"
    assert pattern.best("baz", names) is None


def test_malformed_pattern() -> None:
    with pytest.raises(UsageError, match="malformed"):
        pattern.check("{curl,wget")


def test_summary_multiline_and_lists() -> None:
    text = ("PKGNAME=foo-1.0\nDEPENDS=bar>=1\nDEPENDS=baz-[0-9]*\nDESCRIPTION=one\n"
            "DESCRIPTION=two\nFILE_CKSUM=SHA256 ABCD\nFILE_SIZE=123\n\n"
            "PKGNAME=bar-1.1\nCOMMENT=x=y\n")
    pkgs = summary.parse(text)
    assert [p.name for p in pkgs] == ["foo-1.0", "bar-1.1"]
    assert pkgs[0].depends == ["bar>=1", "baz-[0-9]*"]
    assert pkgs[0].get("DESCRIPTION") == "one\ntwo"
    assert pkgs[0].file_cksum == ("sha256", "abcd")
    assert pkgs[0].file_size == 123
    assert pkgs[0].file_name == "foo-1.0.tgz"
    assert pkgs[1].comment == "x=y"


def test_summary_rejects_garbage_by_line() -> None:
    with pytest.raises(InputError, match=r"pkg_summary:2: expected VARIABLE=value"):
        summary.parse("PKGNAME=a-1\n<html>\n")
    with pytest.raises(InputError, match="without PKGNAME"):
        summary.parse("COMMENT=x\n")

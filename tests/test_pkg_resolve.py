"""Resolution: the closure of what is asked for, and every refusal, named."""

from __future__ import annotations

import pytest

from smolfs.pkg.resolve import (
    Index,
    Platform,
    ResolveError,
    check_requires,
    os_compatible,
    resolve,
)
from smolfs.pkg.summary import Package

AMD64_10 = Platform("x86_64", "10.1")


def pkg(name: str, depends: tuple[str, ...] = (), conflicts: tuple[str, ...] = (),
        arch: str = "x86_64", osv: str = "10.0", opsys: str = "NetBSD",
        requires: tuple[str, ...] = (), provides: tuple[str, ...] = ()) -> Package:
    v = {"PKGNAME": [name], "MACHINE_ARCH": [arch], "OS_VERSION": [osv], "OPSYS": [opsys]}
    for key, vals in (("DEPENDS", depends), ("CONFLICTS", conflicts), ("REQUIRES", requires),
                      ("PROVIDES", provides)):
        if vals:
            v[key] = list(vals)
    return Package(v)


def names(pkgs: list[Package]) -> list[str]:
    return [p.name for p in pkgs]


def test_chain_and_diamond_dependencies_first() -> None:
    idx = Index([pkg("app-1.0", ("libA>=1", "libB>=1")), pkg("libA-1.2", ("base>=2",)),
                 pkg("libB-2.0", ("base>=1",)), pkg("base-2.1"), pkg("base-1.9")])
    out = names(resolve(["app"], idx, AMD64_10))
    assert out == ["base-2.1", "libA-1.2", "libB-2.0", "app-1.0"]  # one base for both


def test_best_match_uses_dewey_order() -> None:
    idx = Index([pkg("foo-1.2nb3"), pkg("foo-1.10"), pkg("foo-1.0rc1"),
                 pkg("app-1", ("foo>=1.0<1.5",))])
    assert names(resolve(["foo"], idx)) == ["foo-1.10"]
    assert names(resolve(["app"], idx)) == ["foo-1.2nb3", "app-1"]
    assert names(resolve(["foo<1.0"], idx)) == ["foo-1.0rc1"]


def test_alternatives_prefer_what_is_chosen_already() -> None:
    idx = Index([pkg("curl-8.5"), pkg("wget-1.21"), pkg("app-1", ("{wget,curl}-[0-9]*",))])
    assert names(resolve(["wget", "app"], idx)) == ["wget-1.21", "app-1"]
    assert names(resolve(["curl", "app"], idx)) == ["curl-8.5", "app-1"]


def test_missing_dependency_named() -> None:
    idx = Index([pkg("app-1.0", ("libssl>=3",)), pkg("libssl-1.1")], "REPO")
    with pytest.raises(ResolveError, match=r"app-1.0 depends on 'libssl>=3', which no package "
                                           r"in REPO matches"):
        resolve(["app"], idx)


def test_unknown_request_suggests() -> None:
    idx = Index([pkg("nginx-1.24.0")], "REPO")
    with pytest.raises(ResolveError, match="no package in REPO matches 'nginx>=2'") as e:
        resolve(["nginx>=2"], idx)
    assert "nginx-1.24.0" in (e.value.hint or "")


def test_cycle_named() -> None:
    idx = Index([pkg("a-1", ("b>=1",)), pkg("b-1", ("c>=1",)), pkg("c-1", ("a>=1",))])
    with pytest.raises(ResolveError, match="dependency cycle: a-1 -> b-1 -> c-1 -> a-1"):
        resolve(["a"], idx)


def test_conflict_named() -> None:
    idx = Index([pkg("mysql-client-8.0", conflicts=("mariadb-client-[0-9]*",)),
                 pkg("mariadb-client-10.6"), pkg("app-1", ("mariadb-client>=10",))])
    with pytest.raises(ResolveError, match=r"mysql-client-8.0 conflicts with mariadb-client-10.6"):
        resolve(["mysql-client", "app"], idx)


def test_two_versions_refused() -> None:
    idx = Index([pkg("foo-1.0"), pkg("foo-2.0"), pkg("app-1", ("foo>=2",))])
    with pytest.raises(ResolveError, match="two versions of foo"):
        resolve(["foo<2", "app"], idx)


@pytest.mark.parametrize(("kw", "msg"), [
    ({"arch": "i386"}, "built for i386, but the image is x86_64"),
    ({"opsys": "Linux"}, "built for Linux"),
    ({"osv": "9.0"}, "built for NetBSD 9.0, which NetBSD 10.1 cannot run"),
    ({"osv": "10.2"}, "built for NetBSD 10.2"),
])
def test_wrong_platform_refused(kw: dict, msg: str) -> None:
    idx = Index([pkg("app-1", ("dep>=1",)), pkg("dep-1", **kw)])
    with pytest.raises(ResolveError, match=msg):
        resolve(["app"], idx, AMD64_10)


def test_os_compatibility() -> None:
    assert os_compatible("10.1", "10.0")
    assert os_compatible("10.0", "10.0")
    assert not os_compatible("10.0", "10.1")
    assert not os_compatible("9.4", "10.0")
    assert not os_compatible("10.1", "9.0")
    assert os_compatible("HEAD", "11.0")  # a daily build: no number to check against
    assert os_compatible("netbsd-10", "10.0") and not os_compatible("netbsd-10", "9.0")


def test_requires_against_provides_and_files() -> None:
    pkgs = [pkg("openssl-3.0", provides=("/usr/pkg/lib/libssl.so.3",)),
            pkg("nginx-1.24", requires=("/usr/pkg/lib/libssl.so.3", "/usr/lib/libc.so.12"))]
    check_requires(pkgs, {"/usr/lib/libc.so.12"}.__contains__)
    with pytest.raises(ResolveError, match=r"nginx-1.24 needs /usr/lib/libc.so.12, which the "
                                           r"image lacks") as e:
        check_requires(pkgs, lambda p: False, sets=["rescue"])
    assert "base" in (e.value.hint or "")

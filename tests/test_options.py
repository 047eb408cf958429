"""Build options are declared once (smolfs.image.options.OPTIONS): parser, service.conf keys,
README table, request and startnb's forwarding are derived from that declaration."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from smolfs.image import options, service
from smolfs.image.options import OPTIONS, STARTNB, BuildOptions

REPO = Path(__file__).resolve().parent.parent


def build_parser():  # type: ignore[no-untyped-def]
    from smolfs.cli import Parser
    from smolfs.cli.build import add_arguments

    parser = Parser(prog="smolfs build")
    add_arguments(parser)
    return parser


def test_readme_table_is_the_declaration() -> None:
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- build-options:[^>]*-->\n(.*?)<!-- /build-options -->", text, re.S)
    assert m is not None, "README.md lost its build options table"
    assert m.group(1) == options.markdown_table(), \
        "README.md's table is stale: paste smolfs.image.options.markdown_table()"


def test_every_option_is_a_flag_and_an_api_keyword() -> None:
    parser = build_parser()
    flags = {f for a in parser._actions for f in a.option_strings}
    for o in OPTIONS:
        assert set(o.flags) <= flags, o.name
    args = parser.parse_args([])
    assert BuildOptions.from_args(args) == BuildOptions()  # the CLI's defaults: the API's


def test_cli_and_keywords_give_the_same_options() -> None:
    args = build_parser().parse_args(["-s", "base", "-m", "64", "-x", "base", "-x", "etc",
                                      "--rw", "--no-fast-copy", "--postinst-timeout", "9",
                                      "--pkg", "caddy", "--offline"])
    assert BuildOptions.from_args(args) == BuildOptions(
        service="base", size_mb=64, sets=["base", "etc"], ro=False, fast_copies=False,
        postinst_timeout=9.0, pkgs=["caddy"], offline=True)


def test_cli_values_are_checked_by_the_declared_parser() -> None:
    from smolfs.errors import UsageError

    with pytest.raises(UsageError) as err:
        build_parser().parse_args(["-m", "0"])
    assert "expected a whole number of megabytes, e.g. 64" in err.value.message
    with pytest.raises(UsageError) as err:
        build_parser().parse_args(["--postinst-timeout", "-3"])
    assert "expected a number of seconds" in err.value.message


def test_options_are_frozen_and_names_are_checked() -> None:
    opts = BuildOptions(service="web")
    with pytest.raises(AttributeError):
        opts.service = "other"  # type: ignore[misc]
    assert opts.replace(fs="ext2").fs == "ext2" and opts.fs is None
    with pytest.raises(TypeError):
        BuildOptions(no_such=1)


def test_service_conf_keys_are_the_declared_ones() -> None:
    keys = {s.key for s in service.SETTINGS}
    assert {o.key for o in OPTIONS if o.key} <= keys
    assert keys - {o.key for o in OPTIONS if o.key} == {s.key for s in service.SERVICE_ONLY}
    readme = (REPO / "services" / "README.md").read_text()
    for key in keys:
        assert f"| `{key}` |" in readme, f"services/README.md lacks {key}"


def test_request_names_each_deciding_option(tmp_path: Path) -> None:
    asked = options.request(BuildOptions(service="web", services_dir="rel", sets="base"))
    assert list(asked) == [o.name for o in OPTIONS if o.decides]
    assert asked["image"].endswith("/web-amd64.img") and asked["services_dir"].startswith("/")
    assert asked["sets"] == ["base"]


def test_startnb_forwards_the_declared_options() -> None:
    from launcher.__main__ import _boot_parser

    parser = _boot_parser()
    dests = {a.dest for a in parser._actions}
    assert set(STARTNB) <= dests
    r = subprocess.run([sys.executable, "-m", "launcher", "--help"], capture_output=True,
                       text=True, timeout=60, check=True)
    for name in STARTNB:
        assert options.BY_NAME[name].flags[-1] in r.stdout

"""``smolfs pkg``: look packages up in a pkgsrc binary repository."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Look up pkgsrc binary packages in the repository an image build would use.

  search PATTERN   packages whose name matches the pattern, or contains it, or whose
                   one-line comment contains it (exit status 1 when none does)
  info NAME        what the best match of NAME is: version, file, size, dependencies,
                   conflicts, shared libraries required and provided, description
  deps NAME...     the packages 'smolfs build --pkg NAME...' would install, dependencies
                   first, after the same checks (conflicts, arch, OS version, cycles)

NAME may be a pkgsrc pattern: nginx, 'nginx>=1.24', 'py3*-flask', '{curl,wget}'."""

EPILOG = """\
examples:
  smolfs pkg search caddy
  smolfs pkg info 'nginx>=1.24'
  smolfs pkg deps --arch i386 --release 9.4 tmux
  smolfs pkg deps --pkg-repo ~/packages/All myapp      # a directory of your own .tgz

environment:
  MKSMOLNB_PKG_REPO  package repository (default: the official one of the release and arch:
                     <mirror>/pub/pkgsrc/packages/NetBSD/<x86_64|i386>/<N>.0/All)
  MKSMOLNB_MIRROR    mirror URL (default https://cdn.netbsd.org)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("search", "info", "deps"), help="what to look up")
    parser.add_argument("names", nargs="+", metavar="NAME", help="package name or pattern")
    parser.add_argument("--pkg-repo", metavar="URL",
                        help="repository: https, http, file URL or a directory")
    parser.add_argument("--arch", default="amd64", choices=("amd64", "i386", "aarch64"),
                        help="architecture of the image (default: %(default)s)")
    parser.add_argument("--release", help="NetBSD release of the image (default: 10.1)")
    parser.add_argument("--mirror", metavar="URL", help="mirror of the official repository")
    parser.add_argument("--offline", action="store_true", help="use only the cached index")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    import json

    from smolfs.errors import UsageError
    from smolfs.pkg import pattern
    from smolfs.pkg.repo import open_repository
    from smolfs.pkg.resolve import Index, Platform, resolve
    from smolfs.sets.release import DEFAULT_RELEASE

    release = args.release or DEFAULT_RELEASE
    repo = open_repository(args.pkg_repo, args.arch, release, args.mirror, args.offline)
    index = Index(repo.index(), repo.url)
    if args.action == "search":
        found = []
        for name, p in sorted(index.by_name.items()):
            if any(pattern.match(pattern.check(q), name) or q.lower() in name.lower()
                   or q.lower() in p.comment.lower() for q in args.names):
                found.append(p)
        if args.json:
            print(json.dumps([{"name": p.name, "comment": p.comment} for p in found], indent=2))
        else:
            width = max((len(p.name) for p in found), default=0)
            for p in found:
                print(f"{p.name:{width}}  {p.comment}")
        return 0 if found else 1
    if args.action == "info":
        out = []
        for q in args.names:
            p = index.best(pattern.check(q))
            if p is None:
                raise UsageError(f"no package in {repo.url} matches {q!r}",
                                 hint="look with 'smolfs pkg search'")
            out.append(p)
        if args.json:
            print(json.dumps([p.vars for p in out], indent=2))
            return 0
        for p in out:
            size = p.file_size
            print(f"{p.name}: {p.comment}")
            print(f"  file:      {p.file_name}" + (f" ({size} bytes)" if size else ""))
            for label, key in (("built for", "MACHINE_ARCH"), ("OS", "OS_VERSION")):
                if p.get(key):
                    print(f"  {label + ':':10} {p.get(key)}")
            for label, values in (("depends", p.depends), ("conflicts", p.conflicts),
                                  ("requires", p.requires), ("provides", p.provides)):
                for i, v in enumerate(values):
                    print(f"  {(label + ':') if i == 0 else '':10} {v}")
            desc = p.get("DESCRIPTION")
            if desc:
                print("\n" + "\n".join(f"  {line}" for line in desc.splitlines()))
        return 0
    pkgs = resolve(args.names, index, Platform.for_image(args.arch, release))
    if args.json:
        print(json.dumps([{"name": p.name, "file": p.file_name, "size": p.file_size}
                          for p in pkgs], indent=2))
    else:
        for p in pkgs:
            print(p.name)
    return 0

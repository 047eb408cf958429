"""pkgsrc binary packages installed into an image, as any user, on any host.

- :mod:`~smolfs.pkg.dewey`, :mod:`~smolfs.pkg.pattern`: pkgsrc's version order and
  package patterns (``nginx>=1.24``, ``py3*-flask``, ``{curl,wget}``), as pkg_install
  compares and matches them;
- :mod:`~smolfs.pkg.summary`: the ``pkg_summary`` index of a repository;
- :mod:`~smolfs.pkg.resolve`: the dependency closure and the checks made before anything
  is downloaded;
- :mod:`~smolfs.pkg.repo`: where packages come from (a mirror, a URL, a directory of
  ``.tgz``), cached and verified;
- :mod:`~smolfs.pkg.archive`, :mod:`~smolfs.pkg.plist`: a package file and its packing
  list, ``+CONTENTS``;
- :mod:`~smolfs.pkg.install`, :mod:`~smolfs.pkg.installscript`: ``+CONTENTS`` obeyed,
  files streamed into the image tree, the package database written as ``pkg_add``
  writes it, the declarative lines of ``+INSTALL`` applied;
- :mod:`~smolfs.pkg.users`, :mod:`~smolfs.pkg.pwdb`: the image's users and groups, and
  ``/etc/pwd.db``/``/etc/spwd.db`` as ``pwd_mkdb`` makes them;
- :mod:`~smolfs.pkg.build`: the one place ``smolfs build`` calls into this package.

Nothing here is imported by ``smolfs --help`` or by a build without packages.
"""

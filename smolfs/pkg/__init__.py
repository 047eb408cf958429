"""pkgsrc binary packages installed into an image, as any user, on any host.

The modules and the rules they follow (pkg_install's version order, patterns, packing
lists, ``pwd_mkdb``'s files): ``smolfs/pkg/README.md``. :mod:`smolfs.pkg.build` is the one
place ``smolfs build`` calls; nothing here is imported by ``smolfs --help``."""

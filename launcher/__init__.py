"""launcher: boot a NetBSD kernel and image under QEMU and report readiness (``startnb``)."""

#: The package version (``pyproject.toml``); part of every cached plan's key.
VERSION = "0.1.0"

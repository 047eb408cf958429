"""launcher: boot a NetBSD kernel and image under QEMU and report readiness (``startnb``)."""

"""kstrip: switch off the drivers a VM does not need in a NetBSD kernel ELF."""

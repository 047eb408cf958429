"""The drivers kstrip keeps by default (no imports: ``kstrip --help`` shows them)."""

#: Drivers a QEMU VM needs; every other entry of the kernel's table is disabled.
#:
#: ``-M pc`` / ``q35`` with a GENERIC kernel: ``mainbus``; ``cpu`` and ``ioapic`` (found in
#: the MP table, since ``acpi`` is off); ``pci`` with ``pchb`` (host bridge) and ``pcib``
#: (PCI-ISA bridge) under which ``isa`` hangs; ``com`` (serial console, on isa); ``virtio``
#: (virtio-pci); ``ld`` (virtio-blk disks) and ``vioif`` (virtio-net).
#: ``-M microvm`` with a MICROVM-style kernel adds ``pv`` (the bus virtio-mmio hangs from);
#: ``viocon`` (virtio console) and ``viornd`` (entropy, which key generation waits for)
#: attach only when QEMU is given those devices and cost nothing otherwise.
#: Left out on purpose: ``acpi`` (slow to probe; the MP table suffices), ``hypervisor``
#: (Xen only), ``vio9p`` and ``vioscsi`` (the launcher uses neither).
#: A name the kernel lacks is skipped silently when it comes from this list.
DEFAULT_KEEP: tuple[str, ...] = (
    "mainbus", "cpu", "ioapic", "pci", "pchb", "pcib", "isa", "com",
    "virtio", "ld", "vioif", "pv", "viocon", "viornd",
)

#: The default for AArch64 kernels (evbarm GENERIC64) on QEMU's ``-M virt``: the device
#: tree root ``armfdt`` and the ``simplebus`` nodes hang from it; ``cpus``/``cpu``; ``psci``
#: (CPU power and the machine's power-off); ``fclock`` (the fixed clock the PL011 names);
#: the generic timer ``gtmr`` with ``armgtmr``; the interrupt controller, ``gic``/``armgic``
#: (GICv2) and ``gicvthree`` (GICv3); ``plcom`` (the PL011 UART, the console); ``virtio``
#: (virtio-mmio, ``virtio* at fdt?``) with ``ld``, ``vioif``, ``viocon``, ``viornd``.
#: Left out: ``pcihost``/``acpifdt`` (the launcher uses virtio-mmio, no PCI or ACPI),
#: ``plrtc``, ``plgpio``, ``qemufwcfg``.
VIRT_KEEP: tuple[str, ...] = (
    "armfdt", "simplebus", "cpus", "cpu", "psci", "fclock", "gtmr", "armgtmr",
    "gic", "armgic", "gicvthree", "plcom", "virtio", "ld", "vioif", "viocon", "viornd",
)


def default_keep(machine: str) -> tuple[str, ...]:
    """The default keep list for an ELF machine (``X86_64``, ``386``, ``AARCH64``)."""
    return VIRT_KEEP if machine == "AARCH64" else DEFAULT_KEEP

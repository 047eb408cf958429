/*
 * smoltest: a tiny freestanding i386 kernel for the launcher's end-to-end tests.
 *
 * It reports on COM1 what it received from the loader (boot protocol, kernel
 * command line, RAM size) and which virtio devices it finds, then prints the
 * lines a NetBSD boot would print at its stages, then halts, exits QEMU
 * through isa-debug-exit, or triple-faults, as its command line asks.
 * The protocol is documented in tests/kernels/README.md.
 */
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef int int32_t;
typedef unsigned long long uint64_t;

#define COM1		0x3f8
#define PCI_ADDR	0xcf8
#define PCI_DATA	0xcfc
#define DEBUG_EXIT	0xf4
#define VIRTIO_MMIO_BASE	0xfeb00000u
#define VIRTIO_MMIO_STRIDE	0x200u
#define VIRTIO_MMIO_SLOTS	32
#define VIRTIO_MMIO_MAGIC	0x74726976u	/* "virt" */
#define VIRTIO_PCI_VENDOR	0x1af4
#define HVM_START_MAGIC		0x336ec578u
#define MULTIBOOT_LOADER_MAGIC	0x2badb002u
#define MEMMAP_RAM		1

/* struct hvm_start_info, Xen public/arch-x86/hvm/start_info.h */
struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;		/* version >= 1 */
	uint32_t memmap_entries;	/* version >= 1 */
	uint32_t reserved;
};

struct hvm_memmap_table_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};

/* The start of struct multiboot_info (Multiboot Specification 0.6.96, section 3.3). */
struct multiboot_info {
	uint32_t flags;
	uint32_t mem_lower;
	uint32_t mem_upper;
	uint32_t boot_device;
	uint32_t cmdline;
	uint32_t mods_count;
	uint32_t mods_addr;
	uint32_t syms[4];
	uint32_t mmap_length;
	uint32_t mmap_addr;
};

#define MBI_MEM		(1u << 0)
#define MBI_CMDLINE	(1u << 2)
#define MBI_MMAP	(1u << 6)

struct multiboot_mmap_entry {
	uint32_t size;		/* of the rest of the entry */
	uint64_t addr;
	uint64_t len;
	uint32_t type;
} __attribute__((packed));

/* Port I/O. */

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline void outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint16_t inw(uint16_t port)
{
	uint16_t v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline uint32_t mmio_read32(uint32_t addr)
{
	return *(volatile uint32_t *)addr;
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

/* Serial console: 115200 8N1, no interrupts, polled. */

static void uart_init(void)
{
	outb(COM1 + 1, 0x00);	/* IER: no interrupts */
	outb(COM1 + 3, 0x80);	/* LCR: divisor latch access */
	outb(COM1 + 0, 0x01);	/* divisor 1: 115200 baud */
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03);	/* LCR: 8N1 */
	outb(COM1 + 2, 0x07);	/* FCR: enable and clear FIFOs */
	outb(COM1 + 4, 0x03);	/* MCR: DTR, RTS */
}

static void serial_putc(char c)
{
	/* Wait (boundedly) for the transmit holding register to empty. */
	for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
		;
	outb(COM1, (uint8_t)c);
}

static void serial_puts(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

static void endl(void)
{
	serial_puts("\r\n");
}

static void putdec(uint32_t v)
{
	char buf[11];
	int i = sizeof(buf) - 1;

	buf[i] = 0;
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	serial_puts(&buf[i]);
}

static void puthex(uint32_t v, int digits)
{
	static const char hex[] = "0123456789abcdef";

	while (digits--)
		serial_putc(hex[(v >> (digits * 4)) & 0xf]);
}

/* Command line words. */

static const char *cmdline = "";

/* Whether `word` starts at p and ends at a space, '=' or the end. */
static const char *match_word(const char *p, const char *word)
{
	while (*word)
		if (*p++ != *word++)
			return 0;
	return p;
}

/* Finds word as a whole word (or as "word=VALUE"); returns what follows it. */
static const char *find_option(const char *word)
{
	const char *p = cmdline;

	while (*p) {
		while (*p == ' ')
			p++;
		const char *end = match_word(p, word);
		if (end && (*end == 0 || *end == ' ' || *end == '='))
			return end;
		while (*p && *p != ' ')
			p++;
	}
	return 0;
}

static int has_option(const char *word)
{
	const char *end = find_option(word);
	return end && *end != '=';
}

/* The decimal value of word=N, or -1 when absent or not a number. */
static int32_t option_value(const char *word)
{
	const char *p = find_option(word);
	uint32_t v = 0;

	if (!p || *p++ != '=' || *p < '0' || *p > '9')
		return -1;
	while (*p >= '0' && *p <= '9')
		v = v * 10 + (uint32_t)(*p++ - '0');
	return (int32_t)(v & 0x7fffffff);
}

/* Virtio device discovery. */

static const char *virtio_pci_name(uint16_t device)
{
	switch (device) {
	case 0x1000: case 0x1041: return "net";
	case 0x1001: case 0x1042: return "blk";
	case 0x1003: case 0x1043: return "console";
	case 0x1005: case 0x1044: return "rng";
	default: return "other";
	}
}

static const char *virtio_mmio_name(uint32_t id)
{
	switch (id) {
	case 1: return "net";
	case 2: return "blk";
	case 3: return "console";
	case 4: return "rng";
	default: return "other";
	}
}

static uint32_t pci_read(uint32_t bus, uint32_t slot, uint32_t fn, uint32_t reg)
{
	outl(PCI_ADDR, 0x80000000u | bus << 16 | slot << 11 | fn << 8 | (reg & 0xfc));
	return inl(PCI_DATA);
}

/* Lists virtio functions on PCI bus 0; returns whether a host bridge answered. */
static int scan_pci(void)
{
	if ((pci_read(0, 0, 0, 0) & 0xffff) == 0xffff)
		return 0;
	for (uint32_t slot = 0; slot < 32; slot++) {
		uint32_t nfn = 1;
		for (uint32_t fn = 0; fn < nfn; fn++) {
			uint32_t id = pci_read(0, slot, fn, 0);
			if ((id & 0xffff) == 0xffff)
				continue;
			if (fn == 0 && (pci_read(0, slot, 0, 0x0c) >> 16) & 0x80)
				nfn = 8;	/* multi-function device */
			if ((id & 0xffff) != VIRTIO_PCI_VENDOR)
				continue;
			serial_puts("SMOLTEST virtio pci 00:");
			puthex(slot, 2);
			serial_putc('.');
			puthex(fn, 1);
			serial_putc(' ');
			puthex(id & 0xffff, 4);
			serial_putc(':');
			puthex(id >> 16, 4);
			serial_putc(' ');
			serial_puts(virtio_pci_name((uint16_t)(id >> 16)));
			endl();
		}
	}
	return 1;
}

/* Lists the populated virtio-mmio transports of the microvm window. */
static void scan_mmio(void)
{
	for (uint32_t n = 0; n < VIRTIO_MMIO_SLOTS; n++) {
		uint32_t base = VIRTIO_MMIO_BASE + n * VIRTIO_MMIO_STRIDE;
		if (mmio_read32(base) != VIRTIO_MMIO_MAGIC)
			continue;
		uint32_t id = mmio_read32(base + 8);
		if (id == 0)
			continue;	/* transport without a device */
		serial_puts("SMOLTEST virtio mmio 0x");
		puthex(base, 8);
		serial_putc(' ');
		putdec(id);
		serial_putc(' ');
		serial_puts(virtio_mmio_name(id));
		endl();
	}
}

/* Busy-waiting on the PIT (1193182 Hz), with rdtsc when there is no PIT. */

#define PIT_HZ		1193182u
#define ASSUMED_TSC_KHZ	2000000u

static uint16_t pit_count(void)
{
	outb(0x43, 0x00);	/* latch channel 0 */
	uint8_t lo = inb(0x40);
	uint8_t hi = inb(0x40);
	return (uint16_t)(lo | hi << 8);
}

/* Returns "pit" or "tsc": the clock that timed the wait. */
static const char *spin_ms(uint32_t ms)
{
	outb(0x43, 0x34);	/* channel 0, lobyte/hibyte, mode 2 (rate generator) */
	outb(0x40, 0x00);
	outb(0x40, 0x00);	/* count 65536 */

	/*
	 * A PIT ticks every 838 ns; 2000 latched reads take far longer than that.
	 * Without a PIT (microvm,pit=off) the reads return 0xffff forever.
	 * (The bound matters under KVM, where each port access is an exit.)
	 */
	uint16_t last = pit_count();
	int moved = 0;
	for (int i = 0; i < 2000 && !moved; i++)
		moved = pit_count() != last;
	if (moved) {
		uint64_t want = (uint64_t)ms * (PIT_HZ / 1000) + ms * (PIT_HZ % 1000) / 1000;
		uint64_t elapsed = 0;
		last = pit_count();
		while (elapsed < want) {
			uint16_t now = pit_count();
			elapsed += (uint16_t)(last - now);	/* counts down, wraps */
			last = now;
		}
		return "pit";
	}
	uint64_t end = rdtsc() + (uint64_t)ms * ASSUMED_TSC_KHZ;
	while (rdtsc() < end)
		;
	return "tsc";
}

/*
 * ACPI power button on the PIIX4 power-management function of QEMU's pc machine
 * (PCI 8086:7113). Its I/O base (PMBA, config register 0x40) is where the firmware put
 * it; PM1 status at +0, enable at +2, control at +4. The guest enables the power
 * button event, polls its status bit and then asks for soft-off: SLP_TYP 0 (what
 * QEMU's PM1 control register takes as S5) with SLP_EN.
 */
void smoltest_halt(void) __attribute__((noreturn));

#define PIIX4_PM_ID		0x71138086u
#define PM1_PWRBTN		(1u << 8)
#define PM1_SLP_EN		(1u << 13)

static uint16_t acpi_pm_base(void)
{
	for (uint32_t slot = 0; slot < 32; slot++)
		for (uint32_t fn = 0; fn < 8; fn++)
			if (pci_read(0, slot, fn, 0) == PIIX4_PM_ID) {
				uint32_t misc = pci_read(0, slot, fn, 0x80);
				if (!(misc & 1))
					return 0;	/* PM I/O space not enabled */
				return (uint16_t)(pci_read(0, slot, fn, 0x40) & 0xffc0);
			}
	return 0;
}

static void __attribute__((noreturn)) acpi_wait_power_button(void)
{
	uint16_t base = acpi_pm_base();

	if (!base) {
		serial_puts("SMOLTEST acpi none\r\n");
		smoltest_halt();
	}
	outw(base, PM1_PWRBTN);			/* clear a stale status (write 1) */
	outw(base + 2, inw(base + 2) | PM1_PWRBTN);
	serial_puts("acpi0 at mainbus0: Intel ACPICA (smoltest)\r\n"); /* as NetBSD's */
	serial_puts("SMOLTEST acpi pm 0x");
	puthex(base, 4);
	endl();
	while (!(inw(base) & PM1_PWRBTN))
		__asm__ volatile("pause");
	serial_puts("SMOLTEST acpi power button\r\n");
	outw(base + 4, (uint16_t)(inw(base + 4) & ~0x1c00u) | PM1_SLP_EN);
	serial_puts("SMOLTEST acpi soft-off failed\r\n");
	smoltest_halt();
}

/*
 * Every smoltest.say=TEXT word, in order, as a console line ('_' prints as a space),
 * after smoltest.saywait=MS milliseconds.
 */
static void say_lines(void)
{
	static const char word[] = "smoltest.say=";
	const char *p = cmdline;
	int32_t wait = option_value("smoltest.saywait");

	if (wait > 0 && find_option("smoltest.say"))
		spin_ms((uint32_t)wait);

	while (*p) {
		while (*p == ' ')
			p++;
		const char *text = match_word(p, word);
		if (text) {
			for (p = text; *p && *p != ' '; p++)
				serial_putc(*p == '_' ? ' ' : *p);
			endl();
		}
		while (*p && *p != ' ')
			p++;
	}
}

/* The end of a run. */

void smoltest_halt(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

static void __attribute__((noreturn)) triple_fault(void)
{
	static const struct { uint16_t limit; uint32_t base; } __attribute__((packed)) idt = { 0, 0 };

	__asm__ volatile("lidt %0; int3" : : "m"(idt));
	smoltest_halt();
}

static void run(const char *protocol, uint32_t mem_kib)
{
	serial_puts("SMOLTEST boot ");
	serial_puts(protocol);
	endl();
	serial_puts("SMOLTEST cmdline ");
	serial_puts(cmdline);
	endl();
	if (mem_kib) {
		serial_puts("SMOLTEST mem ");
		putdec(mem_kib);
		endl();
	}
	if (!scan_pci())
		scan_mmio();

	serial_puts("NetBSD 10.1 (SMOLTEST) #0: Mon Jan  1 00:00:00 UTC 2024\r\n");
	if (has_option("smoltest.panic")) {
		serial_puts("panic: smoltest\r\n");
		triple_fault();
	}
	serial_puts("root file system type: ffs\r\n");
	serial_puts("Starting smoltest service.\r\n");
	int32_t spin = option_value("smoltest.spin");
	if (spin >= 0) {
		serial_puts("SMOLTEST spin ");
		putdec((uint32_t)spin);
		serial_putc(' ');
		serial_puts(spin_ms((uint32_t)spin));
		endl();
	}
	if (!has_option("smoltest.noready"))
		serial_puts("SERVICE READY\r\n");

	say_lines();

	int32_t code = option_value("smoltest.exit");
	if (code >= 0 && !has_option("smoltest.noready")) {
		outl(DEBUG_EXIT, (uint32_t)code);
		serial_puts("SMOLTEST exit failed: no isa-debug-exit at 0xf4\r\n");
	}
	if (has_option("smoltest.acpi"))
		acpi_wait_power_button();
	smoltest_halt();
}

/* Entry points, called from pvh.S and multiboot.S. */

void smoltest_pvh(const struct hvm_start_info *si);
void smoltest_pvh(const struct hvm_start_info *si)
{
	uint32_t mem_kib = 0;

	uart_init();
	if (si->magic != HVM_START_MAGIC) {
		serial_puts("SMOLTEST bad hvm_start_info magic 0x");
		puthex(si->magic, 8);
		endl();
		smoltest_halt();
	}
	if (si->cmdline_paddr)
		cmdline = (const char *)(uint32_t)si->cmdline_paddr;
	if (si->version >= 1 && si->memmap_paddr) {
		const struct hvm_memmap_table_entry *e =
			(const void *)(uint32_t)si->memmap_paddr;
		uint64_t total = 0;
		for (uint32_t i = 0; i < si->memmap_entries; i++)
			if (e[i].type == MEMMAP_RAM)
				total += e[i].size;
		mem_kib = (uint32_t)(total >> 10);
	}
	run("pvh", mem_kib);
}

void smoltest_multiboot(uint32_t magic, const struct multiboot_info *mbi);
void smoltest_multiboot(uint32_t magic, const struct multiboot_info *mbi)
{
	uint32_t mem_kib = 0;

	uart_init();
	if (magic != MULTIBOOT_LOADER_MAGIC) {
		serial_puts("SMOLTEST bad multiboot magic 0x");
		puthex(magic, 8);
		endl();
		smoltest_halt();
	}
	if (mbi->flags & MBI_CMDLINE)
		cmdline = (const char *)mbi->cmdline;
	if (mbi->flags & MBI_MMAP) {
		uint64_t total = 0;
		uint32_t p = mbi->mmap_addr, end = mbi->mmap_addr + mbi->mmap_length;
		while (p < end) {
			const struct multiboot_mmap_entry *e = (const void *)p;
			if (e->type == MEMMAP_RAM)
				total += e->len;
			p += e->size + sizeof(e->size);
		}
		mem_kib = (uint32_t)(total >> 10);
	} else if (mbi->flags & MBI_MEM) {
		mem_kib = mbi->mem_lower + mbi->mem_upper;
	}
	run("multiboot", mem_kib);
}

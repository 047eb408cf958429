/*
 * A fake NetBSD kernel for kstrip's tests: a driver table ("cfdata") shaped like the one
 * config(1) generates, and the version strings a kernel carries.
 *
 *   -DLAYOUT=9      struct cfdata as in NetBSD <= 9 (short cf_unit, short cf_fstate)
 *   -DLAYOUT=10     struct cfdata as in NetBSD >= 10 (cf_unit:24, unsigned char cf_fstate)
 *   -DRELEASE='"10.1"'   what the version strings say
 *   -DNO_VERSION_SYMBOLS  keep the banner text but not the 'version'/'osrelease' symbols
 *   -DNO_VERSION    no version text at all
 *   -DNO_CFDATA     name the table differently (a kernel without 'cfdata')
 *   -DALL_NOTFOUND  every state NOTFOUND (reads the same in both layouts)
 *   -DBAD_STATE     one more entry, with a state no NetBSD release defines
 *   -DNO_START      no _start: the data alone (compiled to assembly for another CPU)
 *
 * The tests read the table and what kstrip must do to each entry under its default keep
 * list from the E(...) lines and their TABLE comments below: keep one entry per line.
 */

#define NOTFOUND 0
#define FOUND 1
#define STAR 2
#define DSTAR 3
#define DNOTFOUND 4

#ifdef ALL_NOTFOUND
#define S(x) NOTFOUND
#else
#define S(x) x
#endif

#if LAYOUT == 9
struct cfdata {
	const char *cf_name;
	const char *cf_atname;
	short cf_unit;
	short cf_fstate;
	int *cf_loc;
	int cf_flags;
	const void *cf_pspec;
};
#elif LAYOUT == 10
struct cfdata {
	const char *cf_name;
	const char *cf_atname;
	unsigned int cf_unit:24;
	unsigned char cf_fstate;
	int *cf_loc;
	int cf_flags;
	const void *cf_pspec;
};
#else
#error "LAYOUT must be 9 or 10"
#endif

static int loc[16] = { -1, -1, 0x3f8, 4 };
static const int parent[3] = { 0, 0, -1 };

#define E(name, at, unit, state, flags) \
	{ name, at, unit, S(state), loc, flags, parent }

#ifdef NO_CFDATA
#define CFDATA other_table
#else
#define CFDATA cfdata
#endif

struct cfdata CFDATA[] = {
	E("mainbus", "mainbus", 0, NOTFOUND, 0),	/* TABLE keep */
	E("cpu", "cpu", 0, STAR, 0),			/* TABLE keep */
	E("ioapic", "ioapic", 0, STAR, 0),		/* TABLE keep */
	E("acpi", "acpi", 0, NOTFOUND, 0),		/* TABLE disable */
	E("hypervisor", "hypervisor", 0, STAR, 0),	/* TABLE disable */
	E("pci", "pci", 0, STAR, 0),			/* TABLE keep */
	E("pchb", "pchb", 0, STAR, 0),			/* TABLE keep */
	E("pcib", "pcib", 0, STAR, 0),			/* TABLE keep */
	E("isa", "isa", 0, NOTFOUND, 0),		/* TABLE keep */
	E("com", "com_isa", 0, NOTFOUND, 0),		/* TABLE keep */
	E("com", "com_isa", 1, NOTFOUND, 0),		/* TABLE keep */
	E("com", "com_puc", 2, STAR, 0),		/* TABLE keep */
	E("vga", "vga_pci", 0, STAR, 0),		/* TABLE disable */
	E("wsdisplay", "wsdisplay_emul", 0, STAR, 0),	/* TABLE disable */
	E("pckbc", "pckbc_isa", 0, NOTFOUND, 0),	/* TABLE disable */
	E("ahcisata", "ahcisata_pci", 0, STAR, 0),	/* TABLE disable */
	E("atabus", "atabus", 0, STAR, 0),		/* TABLE disable */
	E("wd", "wd", 0, STAR, 0),			/* TABLE disable */
	E("atapibus", "atapibus", 0, STAR, 0),		/* TABLE disable */
	E("cd", "cd", 0, STAR, 0),			/* TABLE disable */
	E("uhci", "uhci_pci", 0, STAR, 0),		/* TABLE disable */
	E("ehci", "ehci_pci", 0, STAR, 0),		/* TABLE disable */
	E("xhci", "xhci_pci", 0, STAR, 0),		/* TABLE disable */
	E("usb", "usb", 0, STAR, 0),			/* TABLE disable */
	E("uhub", "uroothub", 0, STAR, 0),		/* TABLE disable */
	E("wm", "wm", 0, STAR, 0),			/* TABLE disable */
	E("re", "re_pci", 0, STAR, 0),			/* TABLE disable */
	E("virtio", "virtio_pci", 0, STAR, 0),		/* TABLE keep */
	E("ld", "ld_virtio", 0, STAR, 0),		/* TABLE keep */
	E("ld", "ld_aac", 300, STAR, 0),		/* TABLE keep */
	E("vioif", "vioif", 0, STAR, 0),		/* TABLE keep */
	E("viornd", "viornd", 0, STAR, 0),		/* TABLE keep */
	E("vioscsi", "vioscsi", 0, STAR, 0),		/* TABLE disable */
	E("scsibus", "scsibus", 0, STAR, 0),		/* TABLE disable */
	E("sd", "sd", 0, STAR, 0),			/* TABLE disable */
	E("fdc", "fdc_isa", 0, DNOTFOUND, 0),		/* TABLE already */
	E("fd", "fd", 0, DSTAR, 0),			/* TABLE already */
	E("lpt", "lpt_isa", 0, DNOTFOUND, 0),		/* TABLE already */
	E("pcppi", "pcppi", 0, FOUND, 0),		/* TABLE found */
	E("sb", "sb_isa", 1000, NOTFOUND, 0x1),		/* TABLE disable */
#ifdef BAD_STATE
	E("odd", "odd", 0, 7, 0),
#endif
	{ 0, 0, 0, 0, 0, 0, 0 }
};

#ifndef NO_VERSION
#ifdef NO_VERSION_SYMBOLS
#define version banner_text
static __attribute__((used))
#endif
const char version[] = "NetBSD " RELEASE " (GENERIC) #0: Mon Dec 16 13:08:11 UTC 2024\n"
	"\tmkrepro@mkrepro.NetBSD.org:/usr/src/sys/arch/amd64/compile/GENERIC\n";
#ifndef NO_VERSION_SYMBOLS
const char osrelease[] = RELEASE;
#endif
const char ostype[] = "NetBSD";
#endif

/* Decoys: strings that mention NetBSD but are not the banner. */
const char copyright[] = "Copyright (c) 1996-2024 The NetBSD Foundation, Inc.  All rights "
	"reserved.\nNetBSD is a registered trademark.\n";

#ifndef NO_START	/* the aarch64 fixture brings its own _start (see test_kstrip_aarch64.py) */
void _start(void);
void
_start(void)
{
	for (;;)
		continue;
}
#endif

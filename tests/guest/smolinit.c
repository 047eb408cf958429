/*
 * smolinit: /sbin/init for a NetBSD guest without any userland (i386 or amd64, no libc).
 * Opens /dev/console (init has no descriptors), prints its ready line, then reboots:
 * under QEMU's -no-reboot that ends the VM.
 */
#include "netbsd.h"

NETBSD_IDENT_NOTE;
__asm__(START_ASM);

void start(void);
void start(void)
{
	long fd = sys2(SYS_open, "/dev/console", O_RDWR);

	if (fd < 0)
		sys1(SYS_exit, 1);	/* the kernel then says init died: seen on the console */
#if defined(__i386__)
	say((int)fd, "smolinit: i386 userland runs\n");
#else
	say((int)fd, "smolinit: amd64 userland runs\n");
#endif
	say((int)fd, "SERVICE READY\n");
	sys2(SYS_reboot, RB_AUTOBOOT, 0);
	die((int)fd, "smolinit: reboot", -1);
}

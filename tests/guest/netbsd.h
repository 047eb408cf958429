/*
 * Freestanding NetBSD userland for our guest programs: raw system calls, no libc.
 *
 * amd64: `syscall`, number in rax, arguments in rdi rsi rdx r10 r8 r9, the carry flag set
 * on error (rax then holds errno). i386: `int $0x80`, number in eax, arguments on the
 * stack above a return-address slot, carry on error. Numbers and constants from NetBSD's
 * sys/kern/syscalls.master and headers (the same on both architectures).
 *
 * The kernel runs an ELF as a NetBSD program only when it carries the NetBSD ident note
 * (name "NetBSD", type 1, the OS version), in a PT_NOTE segment: NETBSD_IDENT_NOTE below.
 */
#ifndef NETBSD_H
#define NETBSD_H

#define SYS_exit	1
#define SYS_read	3
#define SYS_write	4
#define SYS_open	5
#define SYS_close	6
#define SYS_accept	30
#define SYS_bind	104
#define SYS_setsockopt	105
#define SYS_listen	106
#define SYS_reboot	208
#define SYS_poll	209
#define SYS_socket	394	/* __socket30 */

#define O_RDWR		2
#define AF_INET		2
#define SOCK_STREAM	1
#define SOL_SOCKET	0xffff
#define SO_REUSEADDR	0x0004
#define POLLIN		0x0001
#define RB_AUTOBOOT	0

typedef unsigned long size_t;

/* A NetBSD note section: "NetBSD\0" padded to 8, version 7.0 (700000000). */
#define NETBSD_IDENT_NOTE						\
	__asm__(".section .note.netbsd.ident,\"a\",@note\n"		\
		".p2align 2\n"						\
		".long 7, 4, 1\n"					\
		".ascii \"NetBSD\\0\\0\"\n"				\
		".long 700000000\n"					\
		".previous\n")

#if defined(__x86_64__)
static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	unsigned char err;

	__asm__ volatile("syscall; setc %1"
			 : "+a"(n), "=r"(err), "+d"(c), "+r"(r10), "+r"(r8), "+r"(r9)
			 : "D"(a), "S"(b)
			 : "rcx", "r11", "memory", "cc");
	return err ? -n : n;
}
#define START_ASM ".globl _start\n_start:\n and $-16, %rsp\n call start\n hlt\n"
#elif defined(__i386__)
static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	long args[7] = { 0, a, b, c, d, e, f };	/* [0]: the return-address slot */
	unsigned char err;

	__asm__ volatile("mov %%esp, %%edi\n\t"
			 "mov %3, %%esp\n\t"
			 "int $0x80\n\t"
			 "setc %1\n\t"
			 "mov %%edi, %%esp"
			 : "+a"(n), "=q"(err)
			 : "m"(args), "r"(args)
			 : "edi", "edx", "ecx", "memory", "cc");
	return err ? -n : n;
}
#define START_ASM ".globl _start\n_start:\n and $-16, %esp\n call start\n hlt\n"
#else
#error "amd64 or i386 only"
#endif

#define sys1(n, a)		sys6(n, (long)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b)		sys6(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c)	sys6(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)

static size_t slen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

static void say(int fd, const char *s)
{
	sys3(SYS_write, fd, s, slen(s));
}

static void __attribute__((noreturn)) die(int fd, const char *what, long err)
{
	char num[24];
	int i = sizeof(num) - 1;
	unsigned long v = (unsigned long)-err;

	num[i] = 0;
	do {
		num[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v && i > 0);
	say(fd, what);
	say(fd, " failed: errno ");
	say(fd, num + i);
	say(fd, "\n");
	sys1(SYS_exit, 1);
	for (;;)
		;
}

/* The gcc of the host may emit calls to these even freestanding. */
void *memset(void *d, int c, size_t n);
void *memset(void *d, int c, size_t n)
{
	unsigned char *p = d;

	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n);
void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *p = d;
	const unsigned char *q = s;

	while (n--)
		*p++ = *q++;
	return d;
}

#endif

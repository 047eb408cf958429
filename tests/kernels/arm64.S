/*
 * smoltest-arm64: a tiny AArch64 kernel for the launcher's end-to-end tests on
 * qemu-system-aarch64 -M virt. It starts with an arm64 Image header, so QEMU's
 * -kernel loads it at the start of RAM and enters it with the device tree's
 * address in x0 (MMU off, EL1).
 *
 * It walks the flattened device tree and reports on the PL011 (the UART QEMU's
 * virt machine has at 0x09000000, the one /chosen/stdout-path names) what it
 * received: /chosen/bootargs, the RAM size of /memory, the PSCI conduit of
 * /psci (method "hvc" or "smc"), and every virtio,mmio node whose transport
 * has a device plugged in. Then it prints the lines a NetBSD boot prints at
 * its stages and powers the machine off with PSCI SYSTEM_OFF through that
 * conduit (QEMU exits with status 0), or waits forever with smoltest.halt.
 * The console protocol is the x86 smoltest's: tests/kernels/README.md.
 *
 * The MMU is off, so every memory access is a Device access: loads from the
 * device tree (big-endian) are aligned 32-bit words or bytes, never unaligned.
 * The code is position-independent (adr only): linked at 0, run where loaded.
 */

	.equ	UART,		0x09000000	/* PL011 of QEMU's virt machine */
	.equ	UART_FR,	0x18		/* flag register */
	.equ	UART_TXFF,	(1 << 5)	/* transmit FIFO full */
	.equ	FDT_MAGIC,	0xd00dfeed
	.equ	FDT_BEGIN_NODE,	1
	.equ	FDT_END_NODE,	2
	.equ	FDT_PROP,	3
	.equ	FDT_NOP,	4
	.equ	FDT_END,	9
	.equ	VIRTIO_MAGIC,	0x74726976	/* "virt" */
	.equ	MAX_VIRTIO,	64

	.text
	.globl	_head
_head:
	b	start				/* code0 */
	.long	0				/* code1 */
	.quad	0				/* text_offset */
	.quad	_image_size			/* image_size (from kernel-arm64.ld) */
	.quad	0x2				/* flags: little-endian, 4 KiB pages */
	.quad	0				/* res2 */
	.quad	0				/* res3 */
	.quad	0				/* res4 */
	.ascii	"ARM\x64"			/* magic, at byte 56 */
	.long	0				/* res5 */

start:
	mov	x19, x0				/* the device tree */
	adr	x1, stack_top
	mov	sp, x1
	adr	x0, s_boot
	bl	puts
	bl	walk_fdt
	/* SMOLTEST cmdline <bootargs> */
	adr	x0, s_cmdline
	bl	puts
	adr	x1, v_bootargs
	ldr	x0, [x1]
	cbz	x0, 1f
	mov	w1, #' '
	bl	putc_w1
	adr	x1, v_bootargs
	ldr	x0, [x1]
	bl	puts
1:	bl	crlf
	/* SMOLTEST mem <KiB> */
	adr	x0, s_mem
	bl	puts
	adr	x1, v_memsize
	ldr	x0, [x1]
	lsr	x0, x0, #10
	bl	putdec
	bl	crlf
	/* SMOLTEST psci hvc|smc|none */
	adr	x0, s_psci
	bl	puts
	adr	x1, v_method
	ldr	x0, [x1]
	adr	x2, s_none
	cmp	x0, #0
	csel	x0, x2, x0, eq
	bl	puts
	bl	crlf
	bl	report_virtio
	/* the stage lines */
	adr	x0, s_stages
	bl	puts
	/* smoltest.halt: stay up; else power off through PSCI */
	adr	x1, v_bootargs
	ldr	x0, [x1]
	cbz	x0, 2f
	adr	x1, s_word_halt
	bl	contains
	cbnz	x0, halt
2:	adr	x1, v_method
	ldr	x0, [x1]
	cbz	x0, no_psci
	ldrb	w2, [x0]
	movz	w0, #0x0008
	movk	w0, #0x8400, lsl #16		/* PSCI 0.2 SYSTEM_OFF */
	cmp	w2, #'h'
	b.ne	3f
	hvc	#0
	b	off_failed
3:	smc	#0
off_failed:
	adr	x0, s_off_failed
	bl	puts
	b	halt
no_psci:
	adr	x0, s_no_psci
	bl	puts
halt:
	wfi
	b	halt

/* walk_fdt: fill v_bootargs, v_memsize, v_method and the virtio table from x19. */
walk_fdt:
	stp	x29, x30, [sp, #-16]!
	ldr	w0, [x19]
	rev	w0, w0
	movz	w1, #(FDT_MAGIC & 0xffff)
	movk	w1, #(FDT_MAGIC >> 16), lsl #16
	cmp	w0, w1
	b.eq	1f
	adr	x0, s_no_fdt
	bl	puts
	b	halt
1:	ldr	w0, [x19, #8]			/* off_dt_struct */
	rev	w0, w0
	add	x20, x19, x0			/* cursor */
	ldr	w0, [x19, #12]			/* off_dt_strings */
	rev	w0, w0
	add	x21, x19, x0
	mov	x23, xzr			/* current node's name */
	mov	x24, xzr			/* current node is a virtio,mmio transport */
	mov	x25, xzr			/* current node's first reg address */
next_token:
	ldr	w0, [x20], #4
	rev	w0, w0
	cmp	w0, #FDT_BEGIN_NODE
	b.eq	begin_node
	cmp	w0, #FDT_END_NODE
	b.eq	end_node
	cmp	w0, #FDT_PROP
	b.eq	prop
	cmp	w0, #FDT_NOP
	b.eq	next_token
	ldp	x29, x30, [sp], #16		/* FDT_END or anything unknown */
	ret
begin_node:
	mov	x23, x20
	mov	x24, xzr
	mov	x25, xzr
1:	ldrb	w0, [x20], #1			/* skip the name and its NUL */
	cbnz	w0, 1b
	add	x20, x20, #3
	and	x20, x20, #~3
	b	next_token
end_node:
	cbz	x24, 1f
	adr	x1, v_nvirtio
	ldr	x2, [x1]
	cmp	x2, #MAX_VIRTIO
	b.hs	1f
	adr	x3, v_virtio
	str	x25, [x3, x2, lsl #3]
	add	x2, x2, #1
	str	x2, [x1]
1:	mov	x24, xzr
	b	next_token
prop:
	ldr	w26, [x20], #4			/* value length */
	rev	w26, w26
	ldr	w0, [x20], #4			/* name offset */
	rev	w0, w0
	add	x27, x21, x0			/* property name */
	mov	x28, x20			/* value */
	add	x20, x20, x26
	add	x20, x20, #3
	and	x20, x20, #~3
	mov	x0, x27
	adr	x1, s_p_bootargs
	bl	streq
	cbz	x0, 1f
	adr	x1, v_bootargs
	str	x28, [x1]
	b	next_token
1:	mov	x0, x27
	adr	x1, s_p_compatible
	bl	streq
	cbz	x0, 2f
	mov	x0, x28
	adr	x1, s_virtio_mmio
	bl	prefix
	orr	x24, x24, x0
	b	next_token
2:	mov	x0, x27
	adr	x1, s_p_reg
	bl	streq
	cbz	x0, 3f
	ldr	w0, [x28]			/* #address-cells = 2: two words of address */
	rev	w0, w0
	ldr	w1, [x28, #4]
	rev	w1, w1
	orr	x25, x1, x0, lsl #32
	mov	x0, x23
	adr	x1, s_memory
	bl	prefix
	cbz	x0, next_token
	ldr	w0, [x28, #8]			/* #size-cells = 2 */
	rev	w0, w0
	ldr	w1, [x28, #12]
	rev	w1, w1
	orr	x0, x1, x0, lsl #32
	adr	x1, v_memsize
	str	x0, [x1]
	b	next_token
3:	mov	x0, x27
	adr	x1, s_p_method
	bl	streq
	cbz	x0, next_token
	mov	x0, x23
	adr	x1, s_psci_node
	bl	prefix
	cbz	x0, next_token
	adr	x1, v_method
	str	x28, [x1]
	b	next_token

/* report_virtio: a line per transport with a device (its magic, a device id != 0). */
report_virtio:
	stp	x29, x30, [sp, #-16]!
	stp	x21, x22, [sp, #-16]!
	mov	x21, xzr
1:	adr	x1, v_nvirtio
	ldr	x1, [x1]
	cmp	x21, x1
	b.hs	9f
	adr	x2, v_virtio
	ldr	x22, [x2, x21, lsl #3]
	add	x21, x21, #1
	ldr	w0, [x22]
	movz	w1, #(VIRTIO_MAGIC & 0xffff)
	movk	w1, #(VIRTIO_MAGIC >> 16), lsl #16
	cmp	w0, w1
	b.ne	1b
	ldr	w0, [x22, #8]			/* device id; 0: nothing plugged in */
	cbz	w0, 1b
	adr	x0, s_virtio
	bl	puts
	mov	x0, x22
	bl	puthex32
	mov	w1, #' '
	bl	putc_w1
	ldr	w0, [x22, #8]
	bl	putdec
	mov	w1, #' '
	bl	putc_w1
	ldr	w0, [x22, #8]
	adr	x1, s_other
	adr	x2, s_net
	cmp	w0, #1
	csel	x1, x2, x1, eq
	adr	x2, s_blk
	cmp	w0, #2
	csel	x1, x2, x1, eq
	adr	x2, s_console
	cmp	w0, #3
	csel	x1, x2, x1, eq
	adr	x2, s_rng
	cmp	w0, #4
	csel	x1, x2, x1, eq
	mov	x0, x1
	bl	puts
	bl	crlf
	b	1b
9:	ldp	x21, x22, [sp], #16
	ldp	x29, x30, [sp], #16
	ret

/* streq(x0, x1): 1 when the NUL-terminated strings are equal. Uses w2, w3. */
streq:
1:	ldrb	w2, [x0], #1
	ldrb	w3, [x1], #1
	cmp	w2, w3
	b.ne	2f
	cbnz	w2, 1b
	mov	x0, #1
	ret
2:	mov	x0, xzr
	ret

/* prefix(x0, x1): 1 when string x0 starts with string x1. Uses w2, w3. */
prefix:
1:	ldrb	w3, [x1], #1
	cbz	w3, 2f
	ldrb	w2, [x0], #1
	cmp	w2, w3
	b.eq	1b
	mov	x0, xzr
	ret
2:	mov	x0, #1
	ret

/* contains(x0, x1): 1 when string x1 occurs in string x0. Uses x2-x5. */
contains:
1:	mov	x4, x0
	mov	x5, x1
2:	ldrb	w3, [x5], #1
	cbz	w3, 3f
	ldrb	w2, [x4], #1
	cmp	w2, w3
	b.eq	2b
	ldrb	w2, [x0], #1
	cbnz	w2, 1b
	mov	x0, xzr
	ret
3:	mov	x0, #1
	ret

/* putc_w1: one byte to the PL011, once its FIFO has room. Uses x2, w3. */
putc_w1:
	movz	x2, #(UART >> 16), lsl #16
1:	ldr	w3, [x2, #UART_FR]
	tst	w3, #UART_TXFF
	b.ne	1b
	strb	w1, [x2]
	ret

/* puts(x0): a NUL-terminated string; "\n" goes out as "\r\n". Uses x0-x4. */
puts:
	mov	x4, x30
	mov	x5, x0
1:	ldrb	w1, [x5], #1
	cbz	w1, 2f
	cmp	w1, #'\n'
	b.ne	3f
	mov	w1, #'\r'
	bl	putc_w1
	mov	w1, #'\n'
3:	bl	putc_w1
	b	1b
2:	mov	x30, x4
	ret

crlf:
	mov	x4, x30
	mov	w1, #'\r'
	bl	putc_w1
	mov	w1, #'\n'
	bl	putc_w1
	mov	x30, x4
	ret

/* puthex32(x0): 0x and 8 hex digits. Uses x0-x7. */
puthex32:
	mov	x7, x30
	mov	x6, x0
	mov	w1, #'0'
	bl	putc_w1
	mov	w1, #'x'
	bl	putc_w1
	mov	x5, #28
1:	lsr	x1, x6, x5
	and	x1, x1, #0xf
	cmp	x1, #10
	add	x2, x1, #'0'
	add	x3, x1, #('a' - 10)
	csel	x1, x2, x3, lo
	bl	putc_w1
	subs	x5, x5, #4
	b.ge	1b
	mov	x30, x7
	ret

/* putdec(x0): unsigned decimal. Uses x0-x9 and 24 bytes of stack. */
putdec:
	mov	x9, x30
	sub	sp, sp, #32
	mov	x6, sp
	mov	x8, #10
	mov	x7, #0
1:	udiv	x2, x0, x8
	msub	x3, x2, x8, x0
	add	x3, x3, #'0'
	strb	w3, [x6, x7]
	add	x7, x7, #1
	mov	x0, x2
	cbnz	x0, 1b
2:	sub	x7, x7, #1
	ldrb	w1, [x6, x7]
	bl	putc_w1
	cbnz	x7, 2b
	add	sp, sp, #32
	mov	x30, x9
	ret

s_boot:		.asciz	"SMOLTEST boot arm64-image\n"
s_cmdline:	.asciz	"SMOLTEST cmdline"
s_mem:		.asciz	"SMOLTEST mem "
s_psci:		.asciz	"SMOLTEST psci "
s_none:		.asciz	"none"
s_virtio:	.asciz	"SMOLTEST virtio mmio "
s_net:		.asciz	"net"
s_blk:		.asciz	"blk"
s_console:	.asciz	"console"
s_rng:		.asciz	"rng"
s_other:	.asciz	"other"
s_stages:	.ascii	"NetBSD 10.1 (SMOLTEST) #0: Mon Jan  1 00:00:00 UTC 2024\n"
		.ascii	"root file system type: ffs\n"
		.ascii	"Starting smoltest service.\n"
		.asciz	"SERVICE READY\n"
s_no_fdt:	.asciz	"SMOLTEST no device tree in x0\n"
s_no_psci:	.asciz	"SMOLTEST poweroff failed: no PSCI method\n"
s_off_failed:	.asciz	"SMOLTEST poweroff failed: PSCI SYSTEM_OFF returned\n"
s_word_halt:	.asciz	"smoltest.halt"
s_p_bootargs:	.asciz	"bootargs"
s_p_compatible:	.asciz	"compatible"
s_p_reg:	.asciz	"reg"
s_p_method:	.asciz	"method"
s_virtio_mmio:	.asciz	"virtio,mmio"
s_memory:	.asciz	"memory"
s_psci_node:	.asciz	"psci"

	.balign	8
v_bootargs:	.quad	0
v_memsize:	.quad	0
v_method:	.quad	0
v_nvirtio:	.quad	0
v_virtio:	.space	8 * MAX_VIRTIO
	.balign	16
		.space	4096
stack_top:

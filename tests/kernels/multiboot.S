/*
 * Multiboot (version 1) entry for the smoltest kernel.
 *
 * The header sits at the start of .text, well within the first 8 KiB of the
 * file. Without the a.out kludge (flag bit 16) the loader reads the ELF program
 * headers, whose addresses are physical. On entry %eax holds 0x2BADB002 and
 * %ebx the physical address of the multiboot information structure.
 */
#define MB_MAGIC	0x1BADB002
#define MB_FLAGS	0x00000003	/* bit 0: page-align modules; bit 1: memory info */

	.section .multiboot, "a"
	.balign 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.text
	.code32
	.globl multiboot_start
multiboot_start:
	cli
	cld
	movl $stack_top, %esp
	pushl %ebx		/* struct multiboot_info * */
	pushl %eax		/* loader magic */
	call smoltest_multiboot
	jmp smoltest_halt

	.bss
	.balign 16
stack:
	.skip 16384
stack_top:

	.section .note.GNU-stack, "", @progbits

/*
 * PVH entry for the smoltest kernel.
 *
 * The loader (qboot on microvm, pvh.bin option ROM on pc) enters at the address
 * named by the XEN_ELFNOTE_PHYS32_ENTRY note, in 32-bit protected mode with
 * paging off and flat segments, and %ebx holding the physical address of
 * struct hvm_start_info.
 */
/*
 * Built three ways: the PVH kernel (ELF32); with -DPVH_NOTE64, for conversion to
 * ELF64, where loaders read the note's value as 8 bytes; with -DNO_PVH_NOTE, an
 * ELF that no boot protocol can load (for the launcher's error path).
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

#ifndef NO_PVH_NOTE
	.section .note.Xen, "a", @note
	.balign 4
	.long 2f - 1f		/* namesz */
	.long 4f - 3f		/* descsz */
	.long XEN_ELFNOTE_PHYS32_ENTRY
1:	.asciz "Xen"
2:	.balign 4
#ifdef PVH_NOTE64
3:	.long pvh_start, 0	/* the entry point as a 64-bit value */
#else
3:	.long pvh_start		/* 32-bit physical entry point */
#endif
4:	.balign 4
#endif

	.text
	.code32
	.globl pvh_start
pvh_start:
	cli
	cld
	movl $stack_top, %esp
	pushl %ebx		/* struct hvm_start_info * */
	call smoltest_pvh
	jmp smoltest_halt

	.bss
	.balign 16
stack:
	.skip 16384
stack_top:

	.section .note.GNU-stack, "", @progbits

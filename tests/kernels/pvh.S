/*
 * PVH entry for the smoltest kernel.
 *
 * The loader (qboot on microvm, pvh.bin option ROM on pc) enters at the address
 * named by the XEN_ELFNOTE_PHYS32_ENTRY note, in 32-bit protected mode with
 * paging off and flat segments, and %ebx holding the physical address of
 * struct hvm_start_info.
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

	.section .note.Xen, "a", @note
	.balign 4
	.long 2f - 1f		/* namesz */
	.long 4f - 3f		/* descsz */
	.long XEN_ELFNOTE_PHYS32_ENTRY
1:	.asciz "Xen"
2:	.balign 4
3:	.long pvh_start		/* 32-bit physical entry point */
4:	.balign 4

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

/*
 * Entry of the xenft test guest through the Xen PVH boot convention: the ELF note
 * XEN_ELFNOTE_PHYS32_ENTRY names a 32-bit protected-mode entry point with paging off. From
 * there we build identity page tables for the low 4 GiB (2 MiB pages, so the LAPIC and the
 * device registers near 4 GiB are reachable), enter long mode and call guest_main().
 */
    .section .note.Xen, "a"
    .align 4
    .long 4                 /* name size: "Xen\0" */
    .long 4                 /* descriptor size */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .align 4
    .long pvh_start

    .section .text.boot, "ax"
    .code32
    .globl pvh_start
pvh_start:
    cli
    movl $boot_stack_top, %esp

    /* PML4[0] -> PDPT; PDPT[0..3] -> four page directories of 2 MiB pages. */
    movl $pdpt, %eax
    orl $0x3, %eax
    movl %eax, pml4
    movl $0, %ecx
1:  movl %ecx, %eax
    shll $12, %eax
    addl $pd, %eax
    orl $0x3, %eax
    movl %eax, pdpt(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne 1b
    movl $0, %ecx           /* 2048 entries, 2 MiB each: 4 GiB */
2:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax         /* present, writable, 2 MiB page */
    movl %eax, pd(,%ecx,8)
    movl %ecx, %eax
    shrl $11, %eax          /* bits 32+ of the physical address */
    movl %eax, pd+4(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 2b

    movl %cr4, %eax
    orl $0x20, %eax         /* PAE */
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx  /* EFER.LME */
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax   /* PG | PE */
    movl %eax, %cr0

    lgdt gdt_ptr
    ljmp $0x08, $long_mode

    .code64
long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp
    movl %ebx, %edi         /* hvm_start_info, untouched since the PVH entry */
    call guest_main
3:  hlt
    jmp 3b

/* Interrupt entry: save the caller-saved registers, call the C handler with the vector. */
    .macro isr vector
    .globl isr_\vector
isr_\vector:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    movq $\vector, %rdi
    call guest_interrupt
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    iretq
    .endm

    isr 236                 /* 0xec: the LAPIC timer */
    isr 80                  /* 0x50: virtio-net */
    isr 81                  /* 0x51: virtio-blk */

    .globl isr_fault
isr_fault:
    movq $255, %rdi
    call guest_fault
4:  hlt
    jmp 4b

    .section .data
    .align 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt

    .section .bss
    .align 4096
pml4:   .skip 4096
pdpt:   .skip 4096
pd:     .skip 4 * 4096
boot_stack:
    .skip 16384
boot_stack_top:

/*
 * Entry of the xenft test guest through the Xen PVH boot convention: the ELF note
 * XEN_ELFNOTE_PHYS32_ENTRY names a 32-bit protected-mode entry point with paging off. From
 * there we build identity page tables for the low 4 GiB (2 MiB pages, so the LAPIC and the
 * device registers near 4 GiB are reachable), enter long mode and call guest_main().
 * Every page is also user-accessible: the service runs in user mode (see guest.c).
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
    orl $0x7, %eax          /* present, writable, user */
    movl %eax, pml4
    movl $0, %ecx
1:  movl %ecx, %eax
    shll $12, %eax
    addl $pd, %eax
    orl $0x7, %eax
    movl %eax, pdpt(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne 1b
    movl $0, %ecx           /* 2048 entries, 2 MiB each: 4 GiB */
2:  movl %ecx, %eax
    shll $21, %eax
    orl $0x87, %eax         /* present, writable, user, 2 MiB page */
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

/* The registers a C function may change (System V ABI), around a call from an interrupt. */
    .macro save_caller_saved
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    .endm
    .macro restore_caller_saved
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    .endm

/* Interrupt entry: save the caller-saved registers, call the C handler with the vector. */
    .macro isr vector
    .globl isr_\vector
isr_\vector:
    save_caller_saved
    cld                     /* the C ABI's direction flag, whatever the interrupted code had */
    movq $\vector, %rdi
    call guest_interrupt
    restore_caller_saved
    iretq
    .endm

    isr 236                 /* 0xec: the LAPIC timer */
    isr 80                  /* 0x50: virtio-net */
    isr 81                  /* 0x51: virtio-blk */

/* #UD. User mode's system call is UD2 with the number in %rdi and the argument in %rsi (the
 * software KVM of the build machines answers INT n from user mode with #UD, and SYSCALL would
 * need MSRs that VM checkpoints do not carry). guest_invalid_opcode() serves it and returns
 * 0, having stepped RIP past the UD2; anything else is a real fault: it reports it and we stop. */
    .globl isr_invalid_opcode
isr_invalid_opcode:
    save_caller_saved
    cld
    leaq 72(%rsp), %rdx     /* the CPU's frame: RIP, CS, RFLAGS, RSP, SS */
    call guest_invalid_opcode
    testq %rax, %rax
    jnz 5f
    restore_caller_saved
    iretq
5:  hlt
    jmp 5b

/* enter_user(entry, stack): IRET to user mode (CPL 3) with interrupts enabled. */
    .globl enter_user
enter_user:
    pushq $0x1b             /* SS: user data */
    pushq %rsi              /* RSP */
    pushq $0x202            /* RFLAGS: IF */
    pushq $0x23             /* CS: user code */
    pushq %rdi              /* RIP */
    iretq

/* Exceptions: guest_fault(vector, error code, frame) reports and stops. One stub per vector,
 * pushing a zero where the CPU pushes no error code, so every frame looks the same. */
    .macro fault vector, has_error
    .globl fault_\vector
fault_\vector:
    .if \has_error == 0
    pushq $0
    .endif
    movq $\vector, %rdi
    movq (%rsp), %rsi       /* error code */
    leaq 8(%rsp), %rdx      /* RIP, CS, RFLAGS, RSP, SS */
    cld
    call guest_fault
4:  hlt
    jmp 4b
    .endm
    fault 0, 0
    fault 1, 0
    fault 2, 0
    fault 3, 0
    fault 4, 0
    fault 5, 0
    fault 6, 0
    fault 7, 0
    fault 8, 1
    fault 9, 0
    fault 10, 1
    fault 11, 1
    fault 12, 1
    fault 13, 1
    fault 14, 1
    fault 15, 0
    fault 16, 0
    fault 17, 1
    fault 18, 0
    fault 19, 0
    fault 20, 0
    fault 21, 1
    fault 22, 0
    fault 23, 0
    fault 24, 0
    fault 25, 0
    fault 26, 0
    fault 27, 0
    fault 28, 0
    fault 29, 1
    fault 30, 1
    fault 31, 0

    .section .rodata
    .align 8
    .globl fault_stubs
fault_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad fault_\v
    .endr

    .section .data
    .align 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
    .quad 0x00cff2000000ffff    /* 0x18: user data */
    .quad 0x00affa000000ffff    /* 0x20: user 64-bit code */
    .globl gdt_tss
gdt_tss:
    .quad 0, 0                  /* 0x28: the TSS, filled in by guest.c */
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

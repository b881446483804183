/*
 * The xenft test guest: a freestanding, integer-only x86-64 program (kernel-mode code is
 * emulated on the build machines' software KVM: keep it small). It runs the same on the KVM
 * backend and, through the PVH entry, on Xen.
 *
 * Devices it uses, all served by xenft's device models: the 16550 UART at port 0x3f8 (output
 * only), the local APIC timer at 0xfee00000 (periodic 1 kHz, vector 0xec), the clock register
 * at 0xfeb00000 (nanoseconds), and if present virtio-net at 0xfeb01000 (vector 0x50) and
 * virtio-blk at 0xfeb02000 (vector 0x51).
 *
 * The command line (hvm_start_info, Xen's cmdline=) picks the mode:
 *   mode=service (default)  in user mode: lwIP on ip= (default 10.0.2.15, a /24), the UDP
 *                           key-value service on port 7000 and the HTTP service on port 80,
 *                           with background work and clock reads between sleeps
 *   mode=cpu                integer work with a clock read every 4,096 steps (the only
 *                           exits); prints "work N" every 16 units of 4,096 steps
 *   mode=idle               HLT; the timer interrupt reads the clock and returns
 *   mode=replay-check       a finite run for the lab's record/replay check (units=N, default
 *                           64): integer work, RDTSC and clock reads, a HLT every fourth unit;
 *                           then prints "replay-check digest HEX ticks N tsc-back N" (the
 *                           times RDTSC went backwards) and stops with
 *                           CLI; HLT (Xen powers the domain off at that exit)
 * Every clock value and the point where each timer tick arrived go into a running hash, so a
 * replay that delivers anything differently ends with a different memory state.
 */
#include "guest.h"

#define UART_PORT 0x3f8
#define TIMER_PERIOD_TICKS 100000u /* 1 ms at the APIC's 100 MHz bus clock, divide by 1 */

extern char isr_236[], isr_80[], isr_81[], isr_invalid_opcode[], gdt_tss[];
extern void* const fault_stubs[32];
void enter_user(void (*entry)(void), void* stack) __attribute__((noreturn));

static volatile uint64_t ticks;
static volatile uint32_t pending_events; /* set by interrupts, taken by take_events() */
static volatile uint64_t state = 0xcbf29ce484222325ull;
static uint64_t work_counter;

struct idt_entry {
    uint16_t offset_low, selector;
    uint8_t ist, type;
    uint16_t offset_mid;
    uint32_t offset_high, zero;
} __attribute__((packed));

static struct idt_entry idt[256] __attribute__((aligned(16)));

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/*
 * Under Xen (the lab), what the guest prints also goes to Xen's debug port 0xe9, which Xen
 * shows in `xl dmesg` as "(dN) ..." whether or not a device model serves the UART.
 */
#define XEN_DEBUG_PORT 0xe9
static int on_xen;

static void detect_xen(void)
{
    uint32_t eax = 0x40000000, ebx, ecx, edx;
    __asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx));
    on_xen = ebx == 0x566e6558 && ecx == 0x65584d4d && edx == 0x4d4d566e; /* "XenVMMXenVMM" */
}

static int in_user_mode(void)
{
    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    return cs & 3;
}

static void putc(char c)
{
    if (in_user_mode()) { /* port I/O is kernel work */
        __asm__ volatile("ud2" : : "D"((uint64_t)SYSCALL_PUTC), "S"((uint64_t)(uint8_t)c) : "memory");
        return;
    }
    if (on_xen)
        outb(XEN_DEBUG_PORT, (uint8_t)c);
    while (!(inb(UART_PORT + 5) & 0x20)) /* transmit holding register empty */
        ;
    outb(UART_PORT, (uint8_t)c);
}

void puts(const char* s)
{
    while (*s)
        putc(*s++);
}

void put_hex(uint64_t v)
{
    for (int i = 60; i >= 0; i -= 4)
        putc("0123456789abcdef"[(v >> i) & 15]);
}

uint32_t format_dec(char out[20], uint64_t v)
{
    char reversed[20];
    uint32_t n = 0;
    do {
        reversed[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (uint32_t i = 0; i < n; ++i)
        out[i] = reversed[n - 1 - i];
    return n;
}

void put_dec(uint64_t v)
{
    char buf[20];
    const uint32_t n = format_dec(buf, v);
    for (uint32_t i = 0; i < n; ++i)
        putc(buf[i]);
}

uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v;
    h *= 0x100000001b3ull;
    return h ^ (h >> 29);
}

static void set_gate(int vector, void* handler)
{
    uint64_t a = (uint64_t)handler;
    idt[vector] = (struct idt_entry){(uint16_t)a, 0x08, 0, 0x8e, (uint16_t)(a >> 16), (uint32_t)(a >> 32), 0};
}

/* ----- User mode --------------------------------------------------------------------------
 * The service runs at CPL 3 because the build machines' software KVM emulates kernel-mode
 * code (about a million instructions a second) but runs user-mode code natively: TCP, HTTP and
 * the stream's bytes are user-mode work. MMIO (virtio, the clock) works from user mode; port
 * I/O (the UART) and HLT are privileged, so user mode asks the kernel: UD2 with a number in
 * RDI (see isr_invalid_opcode in boot.S).
 * Interrupts taken in user mode switch to the kernel stack named in the TSS. */

static struct {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1, ist[7], reserved2;
    uint16_t reserved3, iomap_base;
} __attribute__((packed)) tss;
static uint8_t kernel_stack[16384] __attribute__((aligned(16)));
static uint8_t user_stack[65536] __attribute__((aligned(16)));

static void load_tss(void)
{
    const uint64_t base = (uint64_t)&tss, limit = sizeof tss - 1;
    tss.rsp[0] = (uint64_t)(kernel_stack + sizeof kernel_stack);
    tss.iomap_base = sizeof tss; /* no I/O permission bitmap */
    uint64_t* d = (uint64_t*)gdt_tss;
    d[0] = (limit & 0xffff) | (base & 0xffffff) << 16 | 0x89ull << 40 /* present 64-bit TSS */ |
           ((limit >> 16) & 0xf) << 48 | ((base >> 24) & 0xff) << 56;
    d[1] = base >> 32;
    __asm__ volatile("ltr %w0" : : "r"(0x28) : "memory");
}

static void guest_syscall(uint64_t number, uint64_t argument)
{
    if (number == SYSCALL_PUTC) {
        putc((char)argument);
    } else if (number == SYSCALL_WAIT) {
        /* Entered with interrupts off (interrupt gate): sleep only if nothing arrived since
         * user mode last looked; STI's one-instruction shadow keeps the wake-up from slipping
         * in before the HLT. */
        if (!pending_events)
            __asm__ volatile("sti; hlt; cli" : : : "memory");
    }
}

uint32_t take_events(void) { return __atomic_exchange_n(&pending_events, 0, __ATOMIC_SEQ_CST); }

void wait_for_event(void)
{
    if (in_user_mode())
        __asm__ volatile("ud2" : : "D"((uint64_t)SYSCALL_WAIT), "S"(0ull) : "memory");
    else
        __asm__ volatile("hlt" : : : "memory");
}

uint64_t uptime_ms(void) { return ticks; }

/*
 * Interrupts. In the service mode (user mode), where every kernel-mode instruction costs
 * about a microsecond, a handler only counts the tick or notes the event for the service loop
 * and ends the interrupt: xenft's virtio devices signal like MSI (one delivery per event), so
 * their interrupt status needs no acknowledgement. The other modes also fold the clock and the
 * point each interrupt came into the state digest.
 */
static int lean_interrupts;

void guest_interrupt(uint64_t vector)
{
    pending_events |= vector == TIMER_VECTOR ? EVENT_TIMER : vector == NET_VECTOR ? EVENT_NET : EVENT_BLK;
    if (vector == TIMER_VECTOR)
        ticks++;
    if (!lean_interrupts) {
        if (vector == TIMER_VECTOR) {
            state = mix(mix(state, mmio_read64(CLOCK_BASE)), work_counter);
        } else {
            virtio_interrupt(vector);
            state = mix(state, vector);
        }
    }
    mmio_write32(LAPIC_BASE + 0xb0, 0); /* EOI */
}

/* Kernel mode, interrupts off: prints the exception and the interrupted context; the stub
 * then halts with interrupts off, which ends the VM (xenftd reports it). */
void guest_fault(uint64_t vector, uint64_t error_code, const uint64_t* frame)
{
    uint64_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    puts("xenft guest: exception ");
    put_dec(vector);
    puts(" error ");
    put_hex(error_code);
    puts(" rip ");
    put_hex(frame[0]);
    puts(" cs ");
    put_hex(frame[1]);
    puts(" rsp ");
    put_hex(frame[3]);
    puts(" cr2 ");
    put_hex(cr2);
    puts("\n");
}

/* 0: a system call from user mode, served; otherwise a real #UD, reported. */
uint64_t guest_invalid_opcode(uint64_t number, uint64_t argument, uint64_t* frame)
{
    if ((frame[1] & 3) == 3 && *(const uint16_t*)frame[0] == 0x0b0f /* UD2 */) {
        frame[0] += 2;
        guest_syscall(number, argument);
        return 0;
    }
    guest_fault(6, 0, frame);
    return 1;
}

/* ----- Command line ------------------------------------------------------------------------ */

static const char* cmdline = "";

/* The value of key= on the command line, copied into buf; 0 if absent. */
static int option(const char* key, char* buf, int size)
{
    for (const char* p = cmdline; *p;) {
        while (*p == ' ')
            ++p;
        const char* k = key;
        const char* q = p;
        while (*k && *q == *k)
            ++q, ++k;
        if (!*k && *q == '=') {
            int n = 0;
            for (++q; *q && *q != ' ' && n < size - 1; ++q)
                buf[n++] = *q;
            buf[n] = 0;
            return 1;
        }
        while (*p && *p != ' ')
            ++p;
    }
    return 0;
}

static int streq(const char* a, const char* b)
{
    while (*a && *a == *b)
        ++a, ++b;
    return *a == *b;
}

/* ----- Modes -------------------------------------------------------------------------------- */

void background_work(void)
{
    /* Work with one clock read (an exit the recorder logs) before each sleep: enough to keep
     * time-dependent reads in every round, few enough not to double the exits of a request. */
    for (int i = 0; i < 256; ++i)
        work_counter = mix(work_counter, (uint64_t)i);
    state = mix(state, mmio_read64(CLOCK_BASE));
}

uint64_t clock_ns(void) { return mmio_read64(CLOCK_BASE); }

static uint64_t random_state;

uint32_t guest_random(void)
{
    if (!random_state)
        random_state = clock_ns() | 1;
    random_state ^= random_state << 13; /* xorshift64 */
    random_state ^= random_state >> 7;
    random_state ^= random_state << 17;
    return (uint32_t)(random_state >> 32);
}

void guest_panic(const char* why)
{
    puts("xenft guest: panic: ");
    puts(why);
    puts("\n");
    for (;;)
        wait_for_event();
}

/* The service mode's start: user mode, on its own stack. */
static void service_entry(void)
{
    static char ip[32];
    if (!option("ip", ip, sizeof ip))
        ip[0] = 0;
    run_service(ip);
}

static void run_cpu(void)
{
    for (uint64_t units = 1;; ++units) {
        for (uint64_t i = 0; i < 4096; ++i)
            work_counter = mix(work_counter, i);
        state = mix(state, mmio_read64(CLOCK_BASE));
        if (units % 16 == 0) {
            puts("work ");
            put_dec(units);
            puts("\n");
        }
    }
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

static uint64_t parse_dec(const char* s)
{
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (uint64_t)(*s++ - '0');
    return v;
}

/*
 * Every kind of non-determinism the hypervisor logs, in a run that ends: TSC values, device
 * reads (the clock register; the UART's status register while printing), timer interrupts
 * arriving during work and waking HLT. The digest covers them all and where each tick came.
 */
static void run_replay_check(void)
{
    char buf[12];
    uint64_t units = option("units", buf, sizeof buf) ? parse_dec(buf) : 64;
    uint64_t last_tsc = 0, tsc_back = 0; /* a backup gone live must not turn the clock back */
    for (uint64_t unit = 1; unit <= units; ++unit) {
        for (uint64_t i = 0; i < 1024; ++i)
            work_counter = mix(work_counter, i);
        const uint64_t tsc = rdtsc();
        tsc_back += tsc < last_tsc;
        last_tsc = tsc;
        state = mix(state, tsc);
        state = mix(state, mmio_read64(CLOCK_BASE));
        if (unit % 4 == 0)
            __asm__ volatile("hlt");
        if (unit % 16 == 0) {
            puts("replay-check unit ");
            put_dec(unit);
            puts("\n");
        }
    }
    __asm__ volatile("cli");
    puts("replay-check digest ");
    put_hex(mix(state, work_counter));
    puts(" ticks ");
    put_dec(ticks);
    puts(" tsc-back ");
    put_dec(tsc_back);
    puts("\n");
    for (;;)
        __asm__ volatile("hlt");
}

static void run_idle(void)
{
    for (;;)
        __asm__ volatile("hlt");
}

void guest_main(uint32_t start_info)
{
    /* hvm_start_info: magic, version, flags, nr_modules, modlist_paddr, cmdline_paddr. */
    const volatile uint32_t* si = (const volatile uint32_t*)(uint64_t)start_info;
    if (start_info && si[0] == 0x336ec578 && (si[6] | si[7]))
        cmdline = (const char*)((uint64_t)si[6] | (uint64_t)si[7] << 32);

    detect_xen();
    for (int v = 0; v < 32; ++v)
        set_gate(v, v == 6 ? (void*)isr_invalid_opcode : fault_stubs[v]);
    set_gate(TIMER_VECTOR, isr_236);
    set_gate(NET_VECTOR, isr_80);
    set_gate(BLK_VECTOR, isr_81);
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) idtr = {sizeof idt - 1, (uint64_t)idt};
    __asm__ volatile("lidt %0" : : "m"(idtr));

    char mode[16] = "service";
    option("mode", mode, sizeof mode);
    puts("xenft test guest: ready, mode ");
    puts(mode);
    puts("\n");
    mmio_write32(LAPIC_BASE + 0xf0, 0x1ff);                     /* software enable, spurious 0xff */
    mmio_write32(LAPIC_BASE + 0x3e0, 0xb);                      /* divide by 1 */
    mmio_write32(LAPIC_BASE + 0x320, TIMER_VECTOR | (1u << 17)); /* periodic */
    mmio_write32(LAPIC_BASE + 0x380, TIMER_PERIOD_TICKS);
    __asm__ volatile("sti");

    if (streq(mode, "cpu"))
        run_cpu();
    else if (streq(mode, "idle"))
        run_idle();
    else if (streq(mode, "replay-check"))
        run_replay_check();
    else {
        lean_interrupts = 1;
        load_tss();
        enter_user(service_entry, user_stack + sizeof user_stack);
    }
}

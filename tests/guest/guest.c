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
 *   mode=service (default)  the key-value service of service.c on ip= (default 10.0.2.15),
 *                           with background work and clock reads between HLTs
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

extern char isr_236[], isr_80[], isr_81[], isr_fault[];

static volatile uint64_t ticks;
static volatile uint64_t state = 0xcbf29ce484222325ull;
static uint64_t work_counter;

struct idt_entry {
    uint16_t offset_low, selector;
    uint8_t ist, type;
    uint16_t offset_mid;
    uint32_t offset_high, zero;
} __attribute__((packed));

static struct idt_entry idt[256] __attribute__((aligned(16)));

void* memcpy(void* dst, const void* src, size_t n)
{
    uint8_t* d = dst;
    const uint8_t* s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void* memset(void* dst, int c, size_t n)
{
    uint8_t* d = dst;
    while (n--)
        *d++ = (uint8_t)c;
    return dst;
}

int memcmp(const void* a, const void* b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (; n; --n, ++x, ++y)
        if (*x != *y)
            return *x < *y ? -1 : 1;
    return 0;
}

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

static void putc(char c)
{
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

void put_dec(uint64_t v)
{
    char buf[24];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        putc(buf[--n]);
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

void guest_interrupt(uint64_t vector)
{
    if (vector == TIMER_VECTOR) {
        ticks++;
        state = mix(mix(state, mmio_read64(CLOCK_BASE)), work_counter);
    } else {
        virtio_interrupt(vector);
        state = mix(state, vector);
    }
    mmio_write32(LAPIC_BASE + 0xb0, 0); /* EOI */
}

void guest_fault(uint64_t vector)
{
    puts("xenft guest: unexpected exception ");
    put_dec(vector);
    puts("\n");
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

static int parse_ip(const char* s, uint8_t ip[4])
{
    for (int i = 0; i < 4; ++i) {
        unsigned v = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 4)
            v = v * 10 + (unsigned)(*s++ - '0'), ++digits;
        if (!digits || v > 255 || (i < 3 && *s++ != '.'))
            return -1;
        ip[i] = (uint8_t)v;
    }
    return *s ? -1 : 0;
}

static int streq(const char* a, const char* b)
{
    while (*a && *a == *b)
        ++a, ++b;
    return *a == *b;
}

/* ----- Modes -------------------------------------------------------------------------------- */

static void background_work(void)
{
    /* Work that exits now and then (a clock read every 64 steps). */
    for (int i = 0; i < 256; ++i) {
        work_counter = mix(work_counter, (uint64_t)i);
        if ((i & 63) == 0)
            state = mix(state, mmio_read64(CLOCK_BASE));
    }
}

static void run_service(void)
{
    uint8_t mac[6], ip[4] = {10, 0, 2, 15};
    char buf[32];
    if (option("ip", buf, sizeof buf) && parse_ip(buf, ip) != 0)
        puts("xenft test guest: ignoring a malformed ip= option\n");
    uint64_t sectors = 0;
    const int have_disk = blk_init(&sectors) == 0 && sectors >= 3;
    if (net_init(mac) == 0) {
        service_init(mac, ip, have_disk);
        puts("service: udp port 7000 on ");
        for (int i = 0; i < 4; ++i) {
            put_dec(ip[i]);
            puts(i < 3 ? "." : have_disk ? ", persistent\n" : ", not persistent (no disk)\n");
        }
    }
    for (uint64_t round = 1;; ++round) {
        net_poll(service_frame);
        background_work();
        __asm__ volatile("hlt");
        if (round % 1000 == 0) {
            puts("ticks ");
            put_dec(ticks);
            puts(" requests ");
            put_dec(service_requests());
            puts(" state ");
            put_hex(state);
            puts("\n");
        }
    }
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
        set_gate(v, isr_fault);
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
    else
        run_service();
}

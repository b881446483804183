/*
 * The xenft test guest: a freestanding, integer-only x86-64 program (kernel-mode code is
 * emulated on the build machines' software KVM: keep it small). It runs the same on the KVM
 * backend and, through the PVH entry, on Xen.
 *
 * Devices it uses, all served by xenft's device models:
 *   16550 UART at port 0x3f8 (output only), the local APIC timer at 0xfee00000 (periodic,
 *   vector 0xec), and a clock register at 0xfeb00000 (nanoseconds, 64-bit).
 * It interleaves work that exits (clock reads) with HLT, and folds every clock value and the
 * point where each timer tick arrived into a running hash, so a replay that delivers anything
 * differently ends with a different memory state.
 */
#include <stdint.h>

#define UART_PORT 0x3f8
#define LAPIC_BASE 0xfee00000ul
#define CLOCK_BASE 0xfeb00000ul
#define TIMER_VECTOR 0xec
#define TIMER_PERIOD_TICKS 100000u /* 1 ms at the APIC's 100 MHz bus clock, divide by 1 */

extern char isr_236[], isr_fault[];

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

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t*)a; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t*)a = v; }
static inline uint64_t mmio_read64(uint64_t a) { return *(volatile uint64_t*)a; }

static void putc(char c)
{
    while (!(inb(UART_PORT + 5) & 0x20)) /* transmit holding register empty */
        ;
    outb(UART_PORT, (uint8_t)c);
}

static void puts(const char* s)
{
    while (*s)
        putc(*s++);
}

static void put_hex(uint64_t v)
{
    for (int i = 60; i >= 0; i -= 4)
        putc("0123456789abcdef"[(v >> i) & 15]);
}

static void put_dec(uint64_t v)
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

static uint64_t mix(uint64_t h, uint64_t v)
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
    (void)vector;
    ticks++;
    state = mix(mix(state, mmio_read64(CLOCK_BASE)), work_counter);
    mmio_write32(LAPIC_BASE + 0xb0, 0); /* EOI */
}

void guest_fault(uint64_t vector)
{
    puts("xenft guest: unexpected exception ");
    put_dec(vector);
    puts("\n");
}

void guest_main(void)
{
    for (int v = 0; v < 32; ++v)
        set_gate(v, isr_fault);
    set_gate(TIMER_VECTOR, isr_236);
    struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) idtr = {sizeof idt - 1, (uint64_t)idt};
    __asm__ volatile("lidt %0" : : "m"(idtr));

    puts("xenft test guest: ready\n");
    mmio_write32(LAPIC_BASE + 0xf0, 0x1ff);                     /* software enable, spurious 0xff */
    mmio_write32(LAPIC_BASE + 0x3e0, 0xb);                      /* divide by 1 */
    mmio_write32(LAPIC_BASE + 0x320, TIMER_VECTOR | (1u << 17)); /* periodic */
    mmio_write32(LAPIC_BASE + 0x380, TIMER_PERIOD_TICKS);
    __asm__ volatile("sti");

    for (uint64_t round = 1;; ++round) {
        /* Work that exits now and then (a clock read every 64 steps), then sleep till the tick. */
        for (int i = 0; i < 256; ++i) {
            work_counter = mix(work_counter, (uint64_t)i);
            if ((i & 63) == 0)
                state = mix(state, mmio_read64(CLOCK_BASE));
        }
        __asm__ volatile("hlt");
        if (round % 1000 == 0) {
            puts("ticks ");
            put_dec(ticks);
            puts(" state ");
            put_hex(state);
            puts("\n");
        }
    }
}

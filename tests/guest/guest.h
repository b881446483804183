/*
 * Shared declarations of the xenft test guest (guest.c: boot, modes, console, user mode;
 * virtio.c: the virtio-mmio drivers; net.c: lwIP on the virtio NIC; service.c: the service
 * mode and its UDP key-value service; http.c: the HTTP/1.1 service; libc.c: memcpy & co.).
 */
#ifndef XENFT_GUEST_H
#define XENFT_GUEST_H

#include <stddef.h>
#include <stdint.h>

#define LAPIC_BASE 0xfee00000ul
#define CLOCK_BASE 0xfeb00000ul
#define VIRTIO_NET_BASE 0xfeb01000ul
#define VIRTIO_BLK_BASE 0xfeb02000ul
#define TIMER_VECTOR 0xec
#define NET_VECTOR 0x50
#define BLK_VECTOR 0x51

static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t*)a; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t*)a = v; }
static inline uint64_t mmio_read64(uint64_t a) { return *(volatile uint64_t*)a; }
static inline uint8_t mmio_read8(uint64_t a) { return *(volatile uint8_t*)a; }
/* The device models write guest memory while the guest is stopped at an exit: make the
 * compiler reload memory after every device access that may have done so. */
static inline void barrier(void) { __asm__ volatile("" : : : "memory"); }

#include <string.h> /* include/string.h: libc.c's memcpy, memset, ... */

/* guest.c: the console (from either mode), user mode's system calls, time. */
#define SYSCALL_PUTC 1
#define SYSCALL_WAIT 2
#define EVENT_TIMER 1u
#define EVENT_NET 2u
#define EVENT_BLK 4u
void puts(const char* s);
void put_dec(uint64_t v);
uint32_t format_dec(char out[20], uint64_t v); /* the digits of v; returns how many */
void put_hex(uint64_t v);
uint64_t mix(uint64_t h, uint64_t v);
uint32_t take_events(void);  /* the EVENT_* that arrived since the last call */
void wait_for_event(void);   /* sleeps until an interrupt unless one came since take_events */
uint64_t uptime_ms(void);    /* LAPIC timer ticks (1 kHz) since boot */
uint64_t clock_ns(void);     /* the clock register */
void guest_panic(const char* why) __attribute__((noreturn));
uint32_t guest_random(void); /* deterministic: seeded from the clock register */
void background_work(void);  /* integer work and a clock read, between sleeps */

/* virtio.c */
int net_init(uint8_t mac[6]);
uint8_t* net_tx_frame(void);            /* where to build the next frame (NET_MAX_FRAME bytes) */
int net_tx_commit(uint32_t len);         /* sends it; 0: handed to the device */
#define NET_MAX_FRAME 1514
typedef void (*frame_handler)(uint8_t* frame, uint32_t len);
int net_poll(frame_handler handle); /* frames handled */
int blk_init(uint64_t* sectors);
int blk_io(int write, uint64_t sector, void* buf, uint32_t len); /* 0: done */
void virtio_interrupt(uint64_t vector);

/* net.c: lwIP on the virtio NIC */
int stack_init(const uint8_t ip[4]); /* 0: the NIC is up with this address (/24) */
int stack_poll(void);                /* frames taken in; runs lwIP's timers */

/* service.c */
void run_service(const char* ip_option); /* user mode; never returns */
uint64_t udp_requests(void);

/* http.c */
#define HTTP_PORT 80
void http_init(int have_disk, uint64_t disk_sectors);
uint64_t http_requests(void);
uint32_t http_keys(void);

#endif

/*
 * Shared declarations of the xenft test guest (guest.c: boot, modes, console; virtio.c: the
 * virtio-mmio drivers; service.c: Ethernet/ARP/IPv4/ICMP/UDP and the key-value service).
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

void* memcpy(void* dst, const void* src, size_t n);
void* memset(void* dst, int c, size_t n);
int memcmp(const void* a, const void* b, size_t n);

void puts(const char* s);
void put_dec(uint64_t v);
void put_hex(uint64_t v);
uint64_t mix(uint64_t h, uint64_t v);

/* virtio.c */
int net_init(uint8_t mac[6]);
int net_send(const uint8_t* frame, uint32_t len);
typedef void (*frame_handler)(uint8_t* frame, uint32_t len);
int net_poll(frame_handler handle); /* frames handled */
int blk_init(uint64_t* sectors);
int blk_io(int write, uint64_t sector, void* buf, uint32_t len); /* 0: done */
void virtio_interrupt(uint64_t vector);

/* service.c */
void service_init(const uint8_t mac[6], const uint8_t ip[4], int have_disk);
void service_frame(uint8_t* frame, uint32_t len);
uint64_t service_requests(void);

#endif

/*
 * lwIP's port header for the test guest: a freestanding x86-64 program without a C library,
 * so no limits.h, inttypes.h, ctype.h or unistd.h, no printf. Assertions print through the guest's
 * console and stop the guest's service; random numbers come from the guest's deterministic
 * generator (seeded from the clock register, whose reads are logged and replayed).
 */
#ifndef XENFT_GUEST_LWIP_CC_H
#define XENFT_GUEST_LWIP_CC_H

#include <stdint.h>

/* gcc's limits.h wants the C library's under -nostdinc: take the compiler's constants. */
#define LWIP_NO_LIMITS_H 1
#define INT_MAX __INT_MAX__
#define LWIP_NO_INTTYPES_H 1
#define LWIP_NO_CTYPE_H 1
#define LWIP_NO_UNISTD_H 1

/* Only lwIP's debug output (off) formats with these. */
#define X8_F "02x"
#define U16_F "u"
#define S16_F "d"
#define X16_F "x"
#define U32_F "u"
#define S32_F "d"
#define X32_F "x"
#define SZT_F "lu"

void guest_panic(const char* why) __attribute__((noreturn));
uint32_t guest_random(void);

#define LWIP_PLATFORM_DIAG(x) \
    do {                      \
    } while (0)
#define LWIP_PLATFORM_ASSERT(x) guest_panic(x)
#define LWIP_RAND() guest_random()

#endif

/* The test guest's stdlib.h: what lwIP uses of it (atoi, in netif_find); no heap from the C
 * library (lwIP has its own, MEM_LIBC_MALLOC 0). Implemented in tests/guest/libc.c. */
#ifndef XENFT_GUEST_STDLIB_H
#define XENFT_GUEST_STDLIB_H

#include <stddef.h>

int atoi(const char* s);

#endif

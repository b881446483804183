/*
 * The test guest's string.h: the few C library functions lwIP and the guest use, implemented
 * in tests/guest/libc.c (the guest is freestanding: no C library).
 */
#ifndef XENFT_GUEST_STRING_H
#define XENFT_GUEST_STRING_H

#include <stddef.h>

void* memcpy(void* dst, const void* src, size_t n);
void* memmove(void* dst, const void* src, size_t n);
void* memset(void* dst, int c, size_t n);
int memcmp(const void* a, const void* b, size_t n);
size_t strlen(const char* s);
int strncmp(const char* a, const char* b, size_t n);

#endif

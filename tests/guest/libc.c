/*
 * The few C library functions of the freestanding test guest (declared in include/string.h
 * and include/stdlib.h).
 * REP MOVSB/STOSB: one instruction whether the software KVM emulates it (kernel mode) or the
 * CPU runs it (user mode).
 */
#include <stdlib.h>
#include <string.h>

void* memcpy(void* dst, const void* src, size_t n)
{
    void* d = dst;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
    return dst;
}

void* memmove(void* dst, const void* src, size_t n)
{
    if ((const char*)dst <= (const char*)src || (const char*)dst >= (const char*)src + n)
        return memcpy(dst, src, n);
    /* Overlapping, destination above: copy backwards. */
    char* d = (char*)dst + n - 1;
    const char* s = (const char*)src + n - 1;
    __asm__ volatile("std; rep movsb; cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return dst;
}

void* memset(void* dst, int c, size_t n)
{
    void* d = dst;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return dst;
}

int memcmp(const void* a, const void* b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; --n, ++x, ++y)
        if (*x != *y)
            return *x < *y ? -1 : 1;
    return 0;
}

size_t strlen(const char* s)
{
    size_t n = 0;
    while (s[n])
        ++n;
    return n;
}

int strncmp(const char* a, const char* b, size_t n)
{
    for (; n; --n, ++a, ++b) {
        if (*a != *b)
            return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
        if (!*a)
            return 0;
    }
    return 0;
}

int atoi(const char* s)
{
    int v = 0, negative = *s == '-';
    for (s += negative || *s == '+'; *s >= '0' && *s <= '9'; ++s)
        v = v * 10 + (*s - '0');
    return negative ? -v : v;
}

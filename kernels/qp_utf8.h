// qp_utf8.h — well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above
// U+10FFFF), the one validator every layer uses. Depends on libc only.
#ifndef QP_UTF8_H
#define QP_UTF8_H

#include <stddef.h>
#include <stdint.h>

// Length (1..4) of the well-formed sequence at s[0..len), or 0 when there is none (len 0, a
// stray continuation byte, a truncated, overlong or surrogate sequence). *cp, if not NULL, gets
// the code point.
size_t qp_utf8_seq(const unsigned char *s, size_t len, uint32_t *cp);

// Offset of the first byte of s[0..n) that does not start a well-formed sequence, or n.
size_t qp_utf8_bad_at(const char *s, size_t n);

// 1 when all of s[0..n) is well-formed, else 0.
static inline int qp_utf8_valid(const char *s, size_t n) { return qp_utf8_bad_at(s, n) == n; }

// Writes code point cp (at most U+10FFFF, no surrogate) as UTF-8 into out (4 bytes room);
// returns the byte count, or 0 for a value that is not a scalar value.
size_t qp_utf8_put(uint32_t cp, char *out);

#endif

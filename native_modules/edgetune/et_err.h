/*
 * The engine's one error convention (docs/reliability.md §7).
 *
 * Every engine function that can refuse its input returns `const char *`: NULL when it
 * succeeded, else a message that is never NULL. A message with details is formatted by
 * et_fail() into the caller's buffer (err, err_len); without a buffer (err == NULL or
 * err_len == 0) et_fail() returns its format string itself, so a failure is reported even
 * then. Messages are plain C text without the "edgetune: " prefix and without MicroPython
 * types: the bindings raise them as MP_ERROR_TEXT("edgetune: %s") (bindings/et_bind.h,
 * et_raise_engine_error). No engine message formats a double (%f/%g): the xtensawin native
 * module's vsnprintf has none.
 */
#ifndef EDGETUNE_ET_ERR_H
#define EDGETUNE_ET_ERR_H

#include <stddef.h>

/* Format a failure into err (err_len bytes) and return err; without a buffer return fmt.
 * Never returns NULL (fmt must not be NULL). */
const char *et_fail(char *err, size_t err_len, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif /* EDGETUNE_ET_ERR_H */

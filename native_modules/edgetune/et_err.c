/*
 * et_fail: the engine's failure report (et_err.h). The only place that writes an error buffer.
 */
#include <stdarg.h>
#include <stdio.h>

#include "et_err.h"

const char *et_fail(char *err, size_t err_len, const char *fmt, ...) {
    if (err == NULL || err_len == 0) {
        return fmt; /* no buffer: the format string itself is the (static) message */
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return err;
}

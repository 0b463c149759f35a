"""`@et {json}` log lines (docs/device-app.md §4): one JSON object per line on stdout.

The prefix lets the host monitor (`edgetune monitor`) pick log lines out of ordinary REPL
output. Keys come out in a fixed order (t_ms, ev, then the caller's keys in the order given),
built by hand because MicroPython dicts do not keep insertion order.

    import log
    log.event("train", step=3, loss=0.41, acc=0.8)   # -> @et {"t_ms":..., "ev":"train", ...}
"""

import json
import hal

PREFIX = "@et "
_t0 = hal.ticks_ms()
# Where lines go: print (stdout: the USB/UART REPL on a board, the pty in emulation).
_out = print


def set_output(fn):
    """Send log lines to fn(line) instead of print (tests, or a file on the board)."""
    global _out
    _out = fn or print


def t_ms():
    """Milliseconds since this module was imported (boot), wrapping like ticks_ms."""
    return hal.ticks_diff(hal.ticks_ms(), _t0)


def _value(v):
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return "null"  # JSON has no NaN/inf
        return json.dumps(v)
    return json.dumps(v)


def line(ev, pairs):
    """The log line (without newline) for event ev and a sequence of (key, value) pairs."""
    parts = ['"t_ms": %d' % t_ms(), '"ev": ' + json.dumps(ev)]
    for k, v in pairs:
        parts.append(json.dumps(k) + ": " + _value(v))
    return PREFIX + "{" + ", ".join(parts) + "}"


def emit(ev, pairs=()):
    """Write one log line for event ev with (key, value) pairs in order."""
    _out(line(ev, pairs))


def event(ev, **kw):
    """Write one log line; keyword order is not guaranteed on MicroPython (use emit for that)."""
    emit(ev, sorted(kw.items()))


def warn(msg):
    """A human-readable warning line plus an `@et` warning event."""
    print("warning: " + msg)
    emit("warning", (("msg", msg),))

"""A minimal `time` for the qemu firmware (the MPS2-AN385 port has no time module).

ticks_ms/ticks_us/ticks_add/ticks_diff/sleep_ms/sleep_us/sleep, counted by the Cortex-M
SysTick timer through machine.mem32 (docs/firmware.md). SysTick is a 24-bit down
counter clocked at 25 MHz of guest time (real time normally; guest instructions under
`-icount shift=0`); each call folds the ticks elapsed since the previous call into a running
total, so time only advances correctly if something calls it at least every 0.67 s of guest
time -- enough for the device app's elapsed-time fields and pacing. Boards with a real time
module never see this file.
"""

from machine import mem32

_CSR, _RVR, _CVR = 0xE000E010, 0xE000E014, 0xE000E018
_HZ = 25_000_000
_MASK = 0xFFFFFF
_MS = 1 << 29  # ticks_* wrap like MicroPython's (TICKS_PERIOD)

if not mem32[_CSR] & 1:
    mem32[_RVR] = _MASK
    mem32[_CVR] = 0
    mem32[_CSR] = 5  # enable, processor clock, no interrupt
_last = _MASK - (mem32[_CVR] & _MASK)
_total = 0


def _ticks():
    global _last, _total
    now = _MASK - (mem32[_CVR] & _MASK)
    _total += (now - _last) & _MASK
    _last = now
    return _total


def ticks_us():
    return (_ticks() // (_HZ // 1_000_000)) % _MS


def ticks_ms():
    return (_ticks() // (_HZ // 1000)) % _MS


def ticks_cpu():
    return _ticks() % _MS


def ticks_add(t, delta):
    return (t + delta) % _MS


def ticks_diff(a, b):
    d = (a - b) % _MS
    return d - _MS if d >= _MS // 2 else d


def sleep_us(us):
    t = ticks_us()
    while ticks_diff(ticks_us(), t) < us:
        pass


def sleep_ms(ms):
    sleep_us(ms * 1000)


def sleep(s):
    sleep_us(int(s * 1_000_000))

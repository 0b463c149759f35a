"""The device app's only contact with the platform: ticks, sleep, I2C, ADC, a button.

On MicroPython these are `time.ticks_*`, `machine.I2C` / `machine.ADC` / `machine.Pin`. On
CircuitPython (no `machine`, no `time.ticks_ms`) they are `supervisor.ticks_ms`, `busio.I2C`,
`analogio.AnalogIn` behind the same small interface, so nothing else in firmware/ knows which
it runs on. `PLATFORM` is "micropython" or "circuitpython".

The CircuitPython side is tested on CPython against stand-ins of those modules (no CircuitPython
interpreter runs here); the MicroPython side runs for real on the unix and qemu ports.
"""

import time

if hasattr(time, "ticks_ms"):  # MicroPython
    PLATFORM = "micropython"
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    sleep_ms = time.sleep_ms
else:  # CircuitPython: supervisor.ticks_ms() wraps at 2**29 like its adafruit_ticks
    import supervisor

    PLATFORM = "circuitpython"
    _PERIOD = 1 << 29
    _HALF = _PERIOD // 2

    def ticks_ms():
        return supervisor.ticks_ms()

    def ticks_add(t, delta):
        return (t + delta) % _PERIOD

    def ticks_diff(a, b):
        return ((a - b + _HALF) % _PERIOD) - _HALF

    def sleep_ms(ms):
        time.sleep(ms / 1000)


class BusioI2C:
    """busio.I2C with machine.I2C's scan / readfrom_mem / writeto_mem (what sensors.py uses)."""

    def __init__(self, bus):
        self.bus = bus

    def _locked(self, fn, *args):
        while not self.bus.try_lock():
            pass
        try:
            return fn(*args)
        finally:
            self.bus.unlock()

    def scan(self):
        return self._locked(self.bus.scan)

    def readfrom_mem(self, addr, reg, n):
        buf = bytearray(n)
        self._locked(self.bus.writeto_then_readfrom, addr, bytes((reg,)), buf)
        return bytes(buf)

    def writeto_mem(self, addr, reg, data):
        self._locked(self.bus.writeto, addr, bytes((reg,)) + bytes(data))


class AnalogIn16:
    """analogio.AnalogIn (value 0..65535) with machine.ADC's read_u16()."""

    def __init__(self, pin):
        self.ain = pin

    def read_u16(self):
        return self.ain.value


def _board_pin(name):
    import board

    try:
        return getattr(board, str(name))
    except AttributeError:
        raise ValueError("board has no pin %r; see dir(board)" % (name,))


def i2c(config):
    """The I2C bus of a board config's "imu" section: sda, scl, i2c_id, freq."""
    freq = config.get("freq", 400000)
    if PLATFORM == "micropython":
        from machine import I2C, Pin

        return I2C(config.get("i2c_id", 0), sda=Pin(config["sda"]), scl=Pin(config["scl"]), freq=freq)
    import busio

    return BusioI2C(busio.I2C(_board_pin(config["scl"]), _board_pin(config["sda"]), frequency=freq))


def adcs(pins):
    """One object with read_u16() per analog pin."""
    if PLATFORM == "micropython":
        from machine import ADC

        return [ADC(p) for p in pins]
    import analogio

    return [AnalogIn16(analogio.AnalogIn(_board_pin(p))) for p in pins]


def button(pin, handler):
    """Call handler() (outside the interrupt) when the button on `pin` (to GND) is pressed.

    MicroPython only: CircuitPython has no pin interrupts; call app.collect() from the REPL."""
    if PLATFORM != "micropython":
        raise OSError("buttons need pin interrupts (MicroPython); on CircuitPython call collect() from the REPL")
    import micropython
    from machine import Pin

    p = Pin(pin, Pin.IN, Pin.PULL_UP)
    p.irq(trigger=Pin.IRQ_FALLING, handler=lambda _p: micropython.schedule(lambda _: handler(), 0))
    return p

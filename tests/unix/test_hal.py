"""firmware/hal.py: the device app's platform interface.

MicroPython side on the real unix port. The CircuitPython side on CPython against stand-ins
for `supervisor`, `busio`, `board` and `analogio`, written from CircuitPython's documented
API: no CircuitPython interpreter is available here, so this checks the adapter logic
(locking, register reads through writeto_then_readfrom, tick wraparound, pin lookup), not
CircuitPython itself.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


def test_micropython_side(micropython, tmp_path):
    (tmp_path / "t.py").write_text(textwrap.dedent("""
        import time, hal
        print(hal.PLATFORM, hal.ticks_ms is time.ticks_ms, hal.ticks_diff is time.ticks_diff,
              hal.ticks_add is time.ticks_add, hal.sleep_ms is time.sleep_ms)
        t = hal.ticks_ms(); hal.sleep_ms(5)
        print('slept', hal.ticks_diff(hal.ticks_ms(), t) >= 5)
    """))
    proc = subprocess.run([str(micropython), str(tmp_path / "t.py")], capture_output=True, text=True, timeout=60,
                          env={"MICROPYPATH": str(FIRMWARE)})
    assert proc.stdout.split() == ["micropython", "True", "True", "True", "True", "slept", "True"], proc.stderr


STANDINS = {
    "supervisor.py": """
        NOW = [0]
        def ticks_ms():
            return NOW[0]
    """,
    "board.py": """
        class _Pin:
            def __init__(self, name):
                self.name = name
        SCL, SDA, A0, A1, A2 = _Pin('SCL'), _Pin('SDA'), _Pin('A0'), _Pin('A1'), _Pin('A2')
    """,
    "analogio.py": """
        VALUES = {'A0': 32768 + 6554, 'A1': 32768, 'A2': 0}
        class AnalogIn:
            def __init__(self, pin):
                self.pin = pin
            @property
            def value(self):
                return VALUES[self.pin.name]
    """,
    "busio.py": """
        LOG = []
        class I2C:
            # busio.I2C: the caller must hold the lock for every transfer
            def __init__(self, scl, sda, frequency=100000):
                LOG.append(('init', scl.name, sda.name, frequency))
                self.locked = False
                self.regs = {0x68: bytearray(256)}
                self.regs[0x68][0x75] = 0x68  # MPU-6050 WHO_AM_I
                # ax = 1 g at +-4 g (8192 LSB/g), big-endian, gz = 65.5 LSB = 1 deg/s
                self.regs[0x68][0x3B:0x3D] = (8192).to_bytes(2, 'big')
                self.regs[0x68][0x47:0x49] = (66).to_bytes(2, 'big')
            def try_lock(self):
                if self.locked:
                    return False
                self.locked = True
                return True
            def unlock(self):
                self.locked = False
            def scan(self):
                assert self.locked
                return sorted(self.regs)
            def writeto(self, addr, buf):
                assert self.locked
                buf = bytes(buf)
                LOG.append(('w', addr, buf[0], buf[1:]))
                self.regs[addr][buf[0]:buf[0] + len(buf) - 1] = buf[1:]
            def writeto_then_readfrom(self, addr, out, into):
                assert self.locked and len(out) == 1
                into[:] = self.regs[addr][out[0]:out[0] + len(into)]
    """,
}

CP_SCRIPT = """
import math, hal, sensors, supervisor, busio
print('platform', hal.PLATFORM)
supervisor.NOW[0] = (1 << 29) - 10                      # 10 ms before the wrap
t = hal.ticks_ms()
supervisor.NOW[0] = hal.ticks_add(t, 25)                # 15 ms after it
print('wrap', supervisor.NOW[0], hal.ticks_diff(hal.ticks_ms(), t), hal.ticks_diff(t, hal.ticks_ms()))
imu = sensors.open_imu({'bus': 'i2c', 'sda': 'SDA', 'scl': 'SCL', 'freq': 400000})
v = imu.read()
print('imu', type(imu).__name__, round(v[0], 6), round(v[5], 6), round(66 / 65.5 * math.pi / 180, 6))
print('configured', any(e[0] == 'w' and e[1] == 0x68 for e in busio.LOG), busio.LOG[0])
adc = sensors.open_imu({'bus': 'adc', 'pins': ['A0', 'A1', 'A2'], 'scale': 1 / 6554, 'offset': 32768})
print('adc', [round(x, 6) for x in adc.read()])
try:
    hal.button('D5', lambda: None)
except OSError as e:
    print('button OSError')
try:
    sensors.open_imu({'bus': 'i2c', 'sda': 'GP4', 'scl': 'SCL'})
except ValueError as e:
    print('pin', e)
"""


def test_circuitpython_side(tmp_path):
    for name, src in STANDINS.items():
        (tmp_path / name).write_text(textwrap.dedent(src))
    (tmp_path / "run.py").write_text(CP_SCRIPT)
    # -I: no user site, no PYTHONPATH; the stand-ins and firmware/ are the only extra paths
    code = (f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {str(FIRMWARE)!r}]; "
            f"exec(open({str(tmp_path / 'run.py')!r}).read())")
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "platform circuitpython" in out
    assert "wrap 15 25 -25" in out  # ticks_add/ticks_diff across the 2**29 wrap of supervisor.ticks_ms
    assert "imu MPU6050 1.0 " in out
    imu_line = next(line for line in out.splitlines() if line.startswith("imu "))
    _, _, ax, gz, want_gz = imu_line.split()
    assert gz == want_gz
    assert "configured True ('init', 'SCL', 'SDA', 400000)" in out
    assert "adc [1.0, 0.0, -4.999695, 0.0, 0.0, 0.0]" in out  # (v - 32768) / 6554
    assert "button OSError" in out
    assert "pin board has no pin 'GP4'" in out

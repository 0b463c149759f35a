"""IMU drivers (firmware/sensors.py) on the real unix-port MicroPython against register-level fakes.

No IMU is attached to this machine and the unix port has no machine.I2C at all, so every I2C
test injects a fake bus class that models the chip's register file: reads auto-increment
through the registers, writes land in them. The expected register values, scale factors and
axis order below are written out from the datasheets (not imported from the driver):

- MPU-6050: WHO_AM_I 0x75 = 0x68; ACCEL_CONFIG 0x1C AFS_SEL<<3, GYRO_CONFIG 0x1B FS_SEL<<3;
  data 0x3B.. big-endian ax, ay, az, temp, gx, gy, gz; +-4 g = 8192 LSB/g, 500 dps = 65.5 LSB/dps.
- LSM6DS3 / LSM6DSOX: WHO_AM_I 0x0F = 0x69 / 0x6C; CTRL1_XL 0x10 = ODR 104 Hz (0100) | FS_XL
  (+-4 g = 10b) << 2 = 0x48; CTRL2_G 0x11 = 0100 | FS_G (500 dps = 01b) << 2 = 0x44; data 0x22..
  little-endian gx, gy, gz, ax, ay, az (gyro first); 0.122 mg/LSB, 17.5 mdps/LSB.
- QMI8658: WHO_AM_I 0x00 = 0x05; CTRL1 0x02 = 0x40 (auto-increment, little-endian); CTRL2 0x03
  = aFS (+-4 g = 001b) << 4 | aODR; CTRL3 0x04 = gFS (512 dps = 101b) << 4 | gODR; CTRL7 0x08
  = 0x03; data 0x35.. little-endian ax, ay, az, gx, gy, gz; 8192 LSB/g, 64 LSB/dps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
DEG = math.pi / 180

FAKE_BUS = r"""
import struct, json, sensors

class FakeI2C:
    # register-level fake of machine.I2C (the unix port has none): one 256-byte register
    # file per device address; multi-byte reads auto-increment like the real chips
    def __init__(self, devices):
        self.regs = {a: bytearray(256) for a in devices}
        for a, init in devices.items():
            for r, v in init.items():
                self.regs[a][r] = v
        self.writes = []
    def scan(self):
        return sorted(self.regs)
    def readfrom_mem(self, addr, reg, n):
        if addr not in self.regs:
            raise OSError(19)  # ENODEV, like a NACK
        return bytes(self.regs[addr][reg:reg + n])
    def writeto_mem(self, addr, reg, buf):
        if addr not in self.regs:
            raise OSError(19)
        self.regs[addr][reg:reg + len(buf)] = buf
        self.writes.append((addr, reg, bytes(buf)[0]))
    def put(self, addr, reg, fmt, *vals):
        self.regs[addr][reg:reg + struct.calcsize(fmt)] = struct.pack(fmt, *vals)

out = {}
"""

CASES = r"""
# MPU-6050 at 0x68, +-4 g / 500 dps: ax = 1 g, ay = -0.5 g, az = 0.25 g, gx = 10, gy = -20, gz = 50 dps
bus = FakeI2C({0x68: {0x75: 0x68}})
imu = sensors.MPU6050(bus, 0x68, accel_g=4, gyro_dps=500)
bus.put(0x68, 0x3B, ">7h", 8192, -4096, 2048, 1234, 655, -1310, 3275)
out["mpu"] = {"read": imu.read(), "regs": {r: bus.regs[0x68][r] for r in (0x6B, 0x1B, 0x1C)}}
# full-scale options: +-16 g (2048 LSB/g), 2000 dps (16.4 LSB/dps)
bus = FakeI2C({0x69: {0x75: 0x68}})
imu = sensors.MPU6050(bus, 0x69, accel_g=16, gyro_dps=2000)
bus.put(0x69, 0x3B, ">7h", 2048, 0, -2048, 0, 164, 0, -164)
out["mpu16"] = {"read": imu.read(), "regs": {r: bus.regs[0x69][r] for r in (0x1B, 0x1C)}}

for who in (0x69, 0x6C):
    bus = FakeI2C({0x6A: {0x0F: who}})
    imu = sensors.LSM6DS(bus, 0x6A, accel_g=4, gyro_dps=500)
    # registers 0x22..0x2D: gx, gy, gz, ax, ay, az little-endian
    bus.put(0x6A, 0x22, "<6h", 571, -1143, 2857, 8197, -4098, 16393)
    out["lsm%x" % who] = {"read": imu.read(), "chip": imu.chip,
                         "regs": {r: bus.regs[0x6A][r] for r in (0x10, 0x11, 0x12)}}

bus = FakeI2C({0x6B: {0x00: 0x05}})
imu = sensors.QMI8658(bus, 0x6B, accel_g=4, gyro_dps=512)
bus.put(0x6B, 0x35, "<6h", 8192, -4096, 2048, 640, -1280, 3200)
out["qmi"] = {"read": imu.read(), "regs": {r: bus.regs[0x6B][r] for r in (0x02, 0x03, 0x04, 0x08)}}

# detection by address + WHO_AM_I
kinds = {}
for name, devs in (("mpu", {0x68: {0x75: 0x68}}), ("lsm", {0x6B: {0x0F: 0x6C}}),
                   ("qmi", {0x6B: {0x00: 0x05}}), ("qmi_6a", {0x6A: {0x00: 0x05}})):
    kinds[name] = type(sensors.detect(FakeI2C(devs))).__name__
for name, devs in (("none", {}), ("wrong_id", {0x68: {0x75: 0x70}, 0x6A: {0x0F: 0x11}})):
    try:
        sensors.detect(FakeI2C(devs))
        kinds[name] = "found"
    except OSError:
        kinds[name] = "OSError"
try:
    sensors.MPU6050(FakeI2C({0x68: {0x75: 0x00}}))
    kinds["mpu_bad_whoami"] = "accepted"
except OSError:
    kinds["mpu_bad_whoami"] = "OSError"
out["detect"] = kinds

class FakeADC:
    def __init__(self, v):
        self.v = v
    def read_u16(self):
        return self.v
adc = sensors.ADCSource([FakeADC(32768 + 6554), FakeADC(32768), FakeADC(32768 - 6554)], 3.3 / 65535 / 0.33)
out["adc"] = adc.read()
print(json.dumps(out))
"""

REPLAY = r"""
import json, sensors
with open("s.csv", "w") as f:
    f.write("ax,ay,az,gx,gy,gz,label\n")
    for i in range(10):
        f.write("%d,0.5,-1,0.25,0,1e-3,%s\n" % (i, "PEN" if i < 4 else ("ABD" if i < 7 else "PEN")))
r = sensors.Replay("s.csv", ["PEN", "ABD"])
out = {"first": r.read(), "label0": r.label}
r.cue(1)
out["after_cue"] = [r.read()[0], r.label]
r.cue(1)  # already at ABD: stays
out["stay"] = [r.read()[0], r.label]
r.cue(0)
out["next_pen"] = [r.read()[0], r.label]
for _ in range(3):
    r.read()
out["wrap"] = [r.read()[0], r.wrapped]
r2 = sensors.Replay("s.csv", ["PEN", "ABD"], loop=False)
n = 0
while r2.read() is not None:
    n += 1
out["n_once"] = n
try:
    sensors.Replay("s.csv", ["PEN", "ABD"]).cue(5)
    out["missing"] = "found"
except ValueError:
    out["missing"] = "ValueError"
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def results(micropython) -> dict:
    from edgetune.device import emulate

    proc = emulate.run_unix(FAKE_BUS + CASES, timeout=60, extra_path=[str(FIRMWARE)])
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout.strip().splitlines()[-1])


def close(a, b, rel=2e-3):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x == pytest.approx(y, rel=rel, abs=1e-6), (a, b)


def test_mpu6050_registers_scale_axis_order(results):
    r = results["mpu"]
    assert r["regs"] == {str(0x6B): 0x01, str(0x1B): 1 << 3, str(0x1C): 1 << 3}
    close(r["read"], [1.0, -0.5, 0.25, 10 * DEG, -20 * DEG, 50 * DEG])
    r = results["mpu16"]
    assert r["regs"] == {str(0x1B): 3 << 3, str(0x1C): 3 << 3}
    close(r["read"], [1.0, 0.0, -1.0, 10 * DEG, 0.0, -10 * DEG])


@pytest.mark.parametrize("who,chip", [(0x69, "LSM6DS3"), (0x6C, "LSM6DSOX")])
def test_lsm6ds_registers_scale_gyro_first(results, who, chip):
    r = results["lsm%x" % who]
    assert r["chip"] == chip
    assert r["regs"] == {str(0x10): 0x48, str(0x11): 0x44, str(0x12): 0x44}
    # 8197 * 0.122 mg = 1.000 g; 571 * 17.5 mdps = 9.99 dps
    close(r["read"], [8197 * 0.122e-3, -4098 * 0.122e-3, 16393 * 0.122e-3,
                      571 * 17.5e-3 * DEG, -1143 * 17.5e-3 * DEG, 2857 * 17.5e-3 * DEG], rel=1e-6)


def test_qmi8658_registers_scale_axis_order(results):
    r = results["qmi"]
    assert r["regs"] == {str(0x02): 0x40, str(0x03): (0b001 << 4) | 0x6, str(0x04): (0b101 << 4) | 0x6,
                         str(0x08): 0x03}
    close(r["read"], [1.0, -0.5, 0.25, 10 * DEG, -20 * DEG, 50 * DEG], rel=1e-6)


def test_detect_by_address_and_whoami(results):
    assert results["detect"] == {"mpu": "MPU6050", "lsm": "LSM6DS", "qmi": "QMI8658", "qmi_6a": "QMI8658",
                                 "none": "OSError", "wrong_id": "OSError", "mpu_bad_whoami": "OSError"}


def test_adc_source(results):
    # ADXL335-style: 0.33 V/g at 3.3 V around mid-scale; missing channels read 0
    close(results["adc"], [6554 * 3.3 / 65535 / 0.33, 0.0, -6554 * 3.3 / 65535 / 0.33, 0, 0, 0], rel=1e-9)


def test_replay_streams_cues_and_wraps(micropython, tmp_path):
    from edgetune.device import emulate

    script = tmp_path / "replay.py"
    script.write_text(REPLAY)
    proc = emulate._run_binary(micropython, script, None, 60, tmp_path, [str(FIRMWARE)])
    assert proc.returncode == 0, proc.stderr + proc.stdout
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["first"] == [0.0, 0.5, -1.0, 0.25, 0.0, 1e-3] and r["label0"] == 0
    assert r["after_cue"] == [4.0, 1]
    assert r["stay"] == [5.0, 1]
    assert r["next_pen"] == [7.0, 0]
    assert r["wrap"] == [1.0, 1]  # rows 8, 9, then the file starts again: row 0, then row 1
    assert r["n_once"] == 10
    assert r["missing"] == "ValueError"

"""IMU sources behind one interface: I2C drivers, an ADC source and a session replay.

Every source has
    read() -> [ax, ay, az, gx, gy, gz]   accelerometer in g, gyroscope in rad/s, in the
                                          chip's own axis order (x, y, z as printed on it)
    label      class index of the last sample (replay), else None (a live sensor)
    cue(label) get ready to deliver samples of that class (replay: skip to them; live: no-op)
    realtime   True when read() must be paced at the model's sample rate (hardware)

Drivers talk to the bus only through `readfrom_mem(addr, reg, n)` and
`writeto_mem(addr, reg, buf)` (machine.I2C, hal.BusioI2C around CircuitPython's busio.I2C, or a
register-level fake in tests). Register maps, scale factors and axis order are the
datasheets': MPU-6050 (InvenSense RM-MPU-6000A), LSM6DS3/LSM6DS3TR-C/LSM6DSOX (ST),
QMI8658 (QST). `open_imu(config)` picks a source from the board config (boards/*/board.json
"imu" section, copied to the device as config.json by `edgetune deploy`).
"""

import struct

G_RAD = 3.141592653589793 / 180.0  # degrees -> radians


class Source:
    label = None
    realtime = True

    def read(self):
        raise NotImplementedError

    def cue(self, label):
        pass

    def close(self):
        pass


# ---------------------------------------------------------------------------- MPU-6050


class MPU6050(Source):
    """InvenSense MPU-6050 at 0x68 (AD0 low) or 0x69.

    ACCEL_XOUT_H (0x3B) .. GYRO_ZOUT_L (0x48): ax, ay, az, temperature, gx, gy, gz as
    big-endian int16. ACCEL_CONFIG (0x1C) AFS_SEL bits 4:3 -> +-2/4/8/16 g = 16384/8192/4096/2048
    LSB/g; GYRO_CONFIG (0x1B) FS_SEL bits 4:3 -> +-250/500/1000/2000 dps = 131/65.5/32.8/16.4
    LSB/(deg/s). PWR_MGMT_1 (0x6B) = 0x01 wakes it with the X gyro PLL as clock.
    """

    WHO_AM_I = 0x75
    ID = 0x68
    ACCEL_G = (2, 4, 8, 16)
    GYRO_DPS = (250, 500, 1000, 2000)
    GYRO_LSB = (131.0, 65.5, 32.8, 16.4)

    def __init__(self, i2c, addr=0x68, accel_g=4, gyro_dps=500):
        self.i2c, self.addr = i2c, addr
        who = i2c.readfrom_mem(addr, self.WHO_AM_I, 1)[0]
        if who != self.ID:
            raise OSError("MPU-6050 at 0x%02x: WHO_AM_I 0x%02x, expected 0x68" % (addr, who))
        a, g = self.ACCEL_G.index(accel_g), self.GYRO_DPS.index(gyro_dps)
        i2c.writeto_mem(addr, 0x6B, b"\x01")  # PWR_MGMT_1: wake, PLL on X gyro
        i2c.writeto_mem(addr, 0x19, b"\x00")  # SMPLRT_DIV 0: 1 kHz with the DLPF on
        i2c.writeto_mem(addr, 0x1A, b"\x03")  # CONFIG: DLPF 44 Hz (anti-aliasing for 50 Hz)
        i2c.writeto_mem(addr, 0x1B, bytes([g << 3]))
        i2c.writeto_mem(addr, 0x1C, bytes([a << 3]))
        self.a_scale = accel_g / 32768.0  # = 1 / (16384 >> a)
        self.g_scale = G_RAD / self.GYRO_LSB[g]

    def read(self):
        ax, ay, az, _t, gx, gy, gz = struct.unpack(">7h", self.i2c.readfrom_mem(self.addr, 0x3B, 14))
        a, g = self.a_scale, self.g_scale
        return [ax * a, ay * a, az * a, gx * g, gy * g, gz * g]


# ---------------------------------------------------------------------------- LSM6DS3 / DSOX


class LSM6DS(Source):
    """ST LSM6DS3 (WHO_AM_I 0x69), LSM6DS3TR-C/LSM6DSL (0x6A), LSM6DSOX (0x6C) at 0x6A or 0x6B.

    CTRL1_XL (0x10): ODR_XL bits 7:4, FS_XL bits 3:2 = 00 +-2 g, 01 +-16 g, 10 +-4 g, 11 +-8 g
    (0.061/0.488/0.122/0.244 mg/LSB). CTRL2_G (0x11): ODR_G bits 7:4, FS_G bits 3:2 = 00 250,
    01 500, 10 1000, 11 2000 dps (8.75/17.5/35/70 mdps/LSB). CTRL3_C (0x12): BDU (bit 6) and
    IF_INC (bit 2). Output: OUTX_L_G (0x22) .. OUTZ_H_XL (0x2D) = gx, gy, gz, ax, ay, az as
    little-endian int16 -- the GYRO comes first on this chip.
    """

    WHO_AM_I = 0x0F
    IDS = {0x69: "LSM6DS3", 0x6A: "LSM6DS3TR-C", 0x6C: "LSM6DSOX"}
    FS_XL = {2: 0, 16: 1, 4: 2, 8: 3}
    MG_LSB = {2: 0.061, 4: 0.122, 8: 0.244, 16: 0.488}
    FS_G = {250: 0, 500: 1, 1000: 2, 2000: 3}
    MDPS_LSB = {250: 8.75, 500: 17.5, 1000: 35.0, 2000: 70.0}
    ODR_104HZ = 0x4

    def __init__(self, i2c, addr=0x6A, accel_g=4, gyro_dps=500):
        self.i2c, self.addr = i2c, addr
        who = i2c.readfrom_mem(addr, self.WHO_AM_I, 1)[0]
        if who not in self.IDS:
            raise OSError("LSM6DS at 0x%02x: WHO_AM_I 0x%02x, expected 0x69/0x6a/0x6c" % (addr, who))
        self.chip = self.IDS[who]
        i2c.writeto_mem(addr, 0x12, b"\x44")  # CTRL3_C: BDU + IF_INC
        i2c.writeto_mem(addr, 0x10, bytes([(self.ODR_104HZ << 4) | (self.FS_XL[accel_g] << 2)]))
        i2c.writeto_mem(addr, 0x11, bytes([(self.ODR_104HZ << 4) | (self.FS_G[gyro_dps] << 2)]))
        self.a_scale = self.MG_LSB[accel_g] / 1000.0
        self.g_scale = self.MDPS_LSB[gyro_dps] / 1000.0 * G_RAD

    def read(self):
        gx, gy, gz, ax, ay, az = struct.unpack("<6h", self.i2c.readfrom_mem(self.addr, 0x22, 12))
        a, g = self.a_scale, self.g_scale
        return [ax * a, ay * a, az * a, gx * g, gy * g, gz * g]


# ---------------------------------------------------------------------------- QMI8658


class QMI8658(Source):
    """QST QMI8658 (WHO_AM_I register 0x00 = 0x05) at 0x6B (SA0 high) or 0x6A.

    CTRL1 (0x02) bit 6 ADDR_AI (auto-increment), bit 5 BE = 0 (little-endian data).
    CTRL2 (0x03) aFS bits 6:4 = +-2/4/8/16 g (2^15/FS LSB/g), aODR bits 3:0; CTRL3 (0x04) gFS
    bits 6:4 = +-16/32/64/128/256/512/1024/2048 dps (2^15/FS LSB/dps), gODR bits 3:0;
    CTRL7 (0x08) bit 0 aEN, bit 1 gEN. Data AX_L (0x35) .. GZ_H (0x40): ax, ay, az, gx, gy, gz
    little-endian int16.
    """

    ID = 0x05
    ACCEL_G = (2, 4, 8, 16)
    GYRO_DPS = (16, 32, 64, 128, 256, 512, 1024, 2048)
    ODR_117HZ = 0x6  # 6DOF mode: 117.5 Hz (>= the model's 50 Hz)

    def __init__(self, i2c, addr=0x6B, accel_g=4, gyro_dps=512):
        self.i2c, self.addr = i2c, addr
        who = i2c.readfrom_mem(addr, 0x00, 1)[0]
        if who != self.ID:
            raise OSError("QMI8658 at 0x%02x: WHO_AM_I 0x%02x, expected 0x05" % (addr, who))
        a, g = self.ACCEL_G.index(accel_g), self.GYRO_DPS.index(gyro_dps)
        i2c.writeto_mem(addr, 0x02, b"\x40")  # CTRL1: address auto-increment, little-endian
        i2c.writeto_mem(addr, 0x03, bytes([(a << 4) | self.ODR_117HZ]))
        i2c.writeto_mem(addr, 0x04, bytes([(g << 4) | self.ODR_117HZ]))
        i2c.writeto_mem(addr, 0x08, b"\x03")  # CTRL7: accel + gyro on
        self.a_scale = accel_g / 32768.0
        self.g_scale = gyro_dps / 32768.0 * G_RAD

    def read(self):
        ax, ay, az, gx, gy, gz = struct.unpack("<6h", self.i2c.readfrom_mem(self.addr, 0x35, 12))
        a, g = self.a_scale, self.g_scale
        return [ax * a, ay * a, az * a, gx * g, gy * g, gz * g]


def detect(i2c):
    """The first supported IMU found on the bus (by address and WHO_AM_I), or raise OSError."""
    found = set(i2c.scan())
    for addr in (0x68, 0x69):
        if addr in found and i2c.readfrom_mem(addr, 0x75, 1)[0] == MPU6050.ID:
            return MPU6050(i2c, addr)
    for addr in (0x6A, 0x6B):
        if addr not in found:
            continue
        if i2c.readfrom_mem(addr, 0x0F, 1)[0] in LSM6DS.IDS:
            return LSM6DS(i2c, addr)
        if i2c.readfrom_mem(addr, 0x00, 1)[0] == QMI8658.ID:
            return QMI8658(i2c, addr)
    raise OSError("no MPU-6050, LSM6DS3/DSOX or QMI8658 on the I2C bus (found %s)" % sorted(found))


# ---------------------------------------------------------------------------- ADC


class ADCSource(Source):
    """Analog channels (e.g. an ADXL335 on three ADC pins): value = (read_u16() - offset) * scale.

    `adcs` are objects with read_u16() (machine.ADC); channels beyond the given ones read 0.
    ADXL335 at 3.3 V: offset 32768 (1.65 V), 330 mV/g -> scale = 3.3 / 65535 / 0.33 g/LSB.
    """

    def __init__(self, adcs, scale, offset=32768):
        self.adcs, self.scale, self.offset = list(adcs), scale, offset

    def read(self):
        out = [(a.read_u16() - self.offset) * self.scale for a in self.adcs]
        return out + [0.0] * (6 - len(out))


# ---------------------------------------------------------------------------- replay


class Replay(Source):
    """Stream a recorded session file (CSV `ax,ay,az,gx,gy,gz,label`, host/edgetune/learn/data.py
    write_session) sample by sample, without loading it into RAM. `label` is the class index
    of the last sample read (class_names gives the name -> index map; integers pass through).
    At the end of the file it starts again (`wrapped` counts how often) unless loop=False,
    in which case read() returns None.
    """

    realtime = False

    def __init__(self, path, class_names=(), loop=True, skip=0):
        self.path, self.loop = path, loop
        self.names = list(class_names)
        self.wrapped = 0
        self.label = None
        self._f = None
        self._pending = None  # (line) read ahead by cue()
        self._rewind()
        for _ in range(skip):
            self._next_line()

    def _rewind(self):
        if self._f:
            self._f.close()
        try:
            self._f = open(self.path)
        except OSError as e:
            raise OSError(e.errno, "cannot open session file %s" % self.path)
        head = self._readline()
        head = head.strip().split(",")
        if head[:6] != ["ax", "ay", "az", "gx", "gy", "gz"] or "label" not in head:
            raise ValueError("%s: expected a header ax,ay,az,gx,gy,gz,label" % self.path)

    def _readline(self):
        try:
            return self._f.readline()
        except UnicodeError:
            self.close()
            raise ValueError("%s is not a session CSV (binary data, not text): pass a file written by "
                             "app.collect(label, n, path=...) or edgetune's data tools" % self.path)

    def _next_line(self):
        if self._pending is not None:
            s, self._pending = self._pending, None
            return s
        s = self._readline()
        if not s:
            if not self.loop:
                return None
            self.wrapped += 1
            self._rewind()
            s = self._readline()
            if not s:
                raise ValueError("%s: no samples" % self.path)
        return s

    def _label_of(self, field):
        field = field.strip()
        if field in self.names:
            return self.names.index(field)
        if field == "":
            return -1
        try:
            return int(field)
        except ValueError:
            raise ValueError("%s: label %r is not a class of the model (classes: %s)%s" % (
                self.path, field, ", ".join(self.names) or "none named",
                "" if [n for n in self.names if not n.isdigit()] else
                "; the model has no class names: export it with its MODEL.meta.json"))

    def read(self):
        s = self._next_line()
        if s is None:
            return None
        f = s.split(",")
        self.label = self._label_of(f[6])
        return [float(f[0]), float(f[1]), float(f[2]), float(f[3]), float(f[4]), float(f[5])]

    def cue(self, label):
        """Skip ahead (wrapping once) until the next sample has class `label`."""
        start_wraps = self.wrapped
        while True:
            s = self._next_line()
            if s is None:
                raise ValueError("%s: no more samples of class %r" % (self.path, label))
            if self._label_of(s.rsplit(",", 1)[1]) == label:
                self._pending = s
                return
            if self.wrapped - start_wraps > 1:
                raise ValueError("%s: no samples of class %r" % (self.path, label))

    def close(self):
        if self._f:
            self._f.close()
            self._f = None


def open_imu(config, class_names=()):
    """The source a board config asks for: {"bus": "i2c"|"replay"|"adc", ...}."""
    bus = config.get("bus", "replay")
    if bus == "replay":
        return Replay(config["path"], class_names, config.get("loop", True), config.get("skip", 0))
    if bus == "i2c":
        import hal

        return detect(hal.i2c(config))
    if bus == "adc":
        import hal

        return ADCSource(hal.adcs(config["pins"]), config["scale"], config.get("offset", 32768))
    raise ValueError("unknown imu bus %r (i2c, adc, replay)" % bus)

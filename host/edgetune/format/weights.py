"""The trained-weights file (docs/etm-format.md, docs/training.md §6.3, §7) of a `Trainer`'s state:
`params_region()`, `state_bytes()` / `load_state()`, `save()` / `load()`. The payload is the
params region of the C module's arena byte for byte; `load_state` checks everything before it
installs anything.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from .scheme import channel_weights, out_channels, per_channel

F32 = np.float32


class WeightsFile:
    """Mixed into twin/training.Trainer, whose arrays (bias, weight, sel, res_b, res_w, mom_b,
    mom_w, qscale) it serializes."""

    MAGIC = b"EDTW"
    VERSION = 2  # 2: the params region ends with the classifier-quantization item (§6.3)
    HEADER = struct.Struct("<4sHHIIIIII")

    def params_region(self) -> bytes:
        """The params region of docs/training.md §6.3 (little-endian, padding zero)."""
        out = bytearray()

        def put(b: bytes) -> None:
            out.extend(b)
            out.extend(b"\0" * (-len(b) % 4))

        m = self.model
        for e in self.scheme.entries:
            c_out = out_channels(m, e.layer)
            if e.bias:
                put(self.bias[e.layer].astype("<i4").tobytes())
            if e.channels:
                cmap = np.full(c_out, -1, np.int64)
                cmap[self.sel[e.layer]] = np.arange(len(e.channels))
                put(cmap.astype("<i2").tobytes())
                put(self.trained_weights(e.layer).astype(np.int8).tobytes())
            res = []
            if e.bias:
                res.append(self.res_b[e.layer].reshape(-1))
            if e.channels:
                res.append(self.res_w[e.layer].reshape(-1))
            put(np.concatenate(res).astype("<i2").tobytes())
            if self.momentum > 0:
                mom = []
                if e.bias:
                    mom.append(self.mom_b[e.layer].reshape(-1))
                if e.channels:
                    mom.append(self.mom_w[e.layer].reshape(-1))
                put(np.concatenate(mom).astype("<f4").tobytes())
        if self.refit_layer is not None:
            sw, sb, mult, shift = self.qscale
            put(sw.astype("<f4").tobytes() + sb.astype("<f4").tobytes() + np.asarray(mult).astype("<i4").tobytes()
                + np.asarray(shift).astype("<i4").tobytes())
        return bytes(out)

    def state_bytes(self) -> bytes:
        """The trained-weights file (§7)."""
        params = self.params_region()
        size = 32 + len(params)
        tail = struct.pack("<IIII", self.model_crc, self.scheme.crc(), len(params),
                           1 if self.momentum > 0 else 0) + params
        crc = zlib.crc32(tail) & 0xFFFFFFFF
        return struct.pack("<4sHHII", self.MAGIC, self.VERSION, 32, size, crc) + tail

    def state(self) -> bytes:
        """The device's m.state(): the trained-weights file's bytes (an in-RAM checkpoint)."""
        return self.state_bytes()

    def save(self, path: str) -> None:
        """Write the trained-weights file as path + ".tmp", then rename it over `path`."""
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(self.state_bytes())
        os.replace(tmp, path)

    def load(self, path: str) -> None:
        with open(path, "rb") as f:
            self.load_state(f.read())

    def load_state(self, data: bytes) -> None:
        """Check everything (§7), then install the state; ValueError leaves the state unchanged."""
        data = bytes(data)
        if len(data) < 32:
            raise ValueError(f"trained-weights file has {len(data)} bytes; the header alone is 32")
        magic, ver, hsize, size, crc, mcrc, scrc, p, flags = self.HEADER.unpack_from(data, 0)
        if magic != self.MAGIC:
            raise ValueError(f"not a trained-weights file: magic {magic!r}, expected {self.MAGIC!r}")
        if ver != self.VERSION or hsize != 32:
            raise ValueError(f"trained-weights file version {ver} / header size {hsize} not supported")
        if size != len(data):
            raise ValueError(f"trained-weights file says {size} bytes but has {len(data)} (truncated?)")
        if zlib.crc32(data[16:]) & 0xFFFFFFFF != crc:
            raise ValueError("trained-weights file CRC mismatch (corrupted)")
        if mcrc != self.model_crc:
            raise ValueError(f"trained-weights file belongs to another model (model CRC {mcrc:#010x}, "
                             f"this model {self.model_crc:#010x})")
        if scrc != self.scheme.crc():
            raise ValueError("trained-weights file was saved with a different scheme")
        mom = self.momentum > 0
        if flags != (1 if mom else 0):
            raise ValueError(f"trained-weights file flags {flags:#x}: momentum buffers "
                             f"{'present' if flags & 1 else 'absent'}, "
                             f"this model has momentum {'on' if mom else 'off'}")
        expect = len(self.params_region())
        if p != expect or size != 32 + p:
            raise ValueError(f"trained-weights params region is {p} bytes, this model + scheme needs {expect}")
        m = self.model
        off = 32
        new = []  # (kind, layer, array) installed only after every check passed

        def take(n: int, dt: str) -> np.ndarray:
            nonlocal off
            item = np.dtype(dt).itemsize
            arr = np.frombuffer(data, dt, n, off).copy()
            off += n * item + (-(n * item) % 4)
            return arr

        for e in self.scheme.entries:
            c_out = out_channels(m, e.layer)
            pc = per_channel(m, e.layer)
            n_sel = len(e.channels)
            if e.bias:
                new.append(("b", e.layer, take(c_out, "<i4").astype(np.int32)))
            if e.channels:
                cmap = take(c_out, "<i2")
                want = np.full(c_out, -1, np.int64)
                want[self.sel[e.layer]] = np.arange(n_sel)
                if not np.array_equal(cmap.astype(np.int64), want):
                    raise ValueError(f"trained-weights file: channel map of layer {e.layer} differs from the scheme")
                w = take(n_sel * pc, "i1").astype(np.int8)
                # Training keeps weights in [-127, 127]; a flashed -128 it never touched stays.
                flashed = channel_weights(m, e.layer)[self.sel[e.layer]].reshape(-1)
                if np.any((w == -128) & (flashed != -128)):
                    raise ValueError(f"trained-weights file: layer {e.layer} weight -128 outside [-127, 127]")
                new.append(("w", e.layer, w.reshape(n_sel, pc)))
            nb = c_out if e.bias else 0
            r = take(nb + n_sel * pc, "<i2").astype(np.int16)
            if np.any(r < -16384) or np.any(r > 16383):
                raise ValueError(f"trained-weights file: layer {e.layer} residual outside [-16384, 16383]")
            if e.bias:
                new.append(("rb", e.layer, r[:nb].copy()))
            if e.channels:
                new.append(("rw", e.layer, r[nb:].reshape(n_sel, pc).copy()))
            if mom:
                v = take(nb + n_sel * pc, "<f4").astype(F32)
                if not np.all(np.isfinite(v)):  # NaN freezes a parameter, +-inf pins it at +-127
                    raise ValueError(f"trained-weights file: layer {e.layer} momentum is not a finite number")
                if e.bias:
                    new.append(("mb", e.layer, v[:nb].copy()))
                if e.channels:
                    new.append(("mw", e.layer, v[nb:].reshape(n_sel, pc).copy()))
        if self.refit_layer is not None:
            c = out_channels(m, self.refit_layer)
            sw, sb = take(c, "<f4").astype(F32), take(c, "<f4").astype(F32)
            mult, shift = take(c, "<i4").astype(np.int32), take(c, "<i4").astype(np.int32)
            if not (np.all(np.isfinite(sw) & (sw > 0)) and np.all(np.isfinite(sb) & (sb > 0))):
                raise ValueError("trained-weights file: classifier scales must be positive numbers")
            if np.any(mult < 0) or np.any(shift < -31) or np.any(shift > 30):
                raise ValueError("trained-weights file: classifier multiplier/shift out of range")
            new.append(("q", self.refit_layer, (sw, sb, mult, shift)))
        for kind, layer, arr in new:
            if kind == "b":
                self.bias[layer].reshape(-1)[:] = arr
            elif kind == "w":
                channel_weights(m, layer, self.weight[layer])[self.sel[layer]] = arr
            elif kind == "rb":
                self.res_b[layer][:] = arr
            elif kind == "rw":
                self.res_w[layer][:] = arr
            elif kind == "mb":
                self.mom_b[layer][:] = arr
            elif kind == "mw":
                self.mom_w[layer][:] = arr
            elif kind == "q":
                self._set_qscale(layer, *arr)

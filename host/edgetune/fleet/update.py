"""The fleet update in real units, and how a global update goes back into int8 + residual state.

Every trained parameter p (a scheme entry's bias c, or weight k of a selected channel c) is held
on a board as an integer q (int32 bias / int8 weight) and an int16 residual r in 2^-15 LSB
(docs/training.md §4g). Its real value is s_p * (q + r / 32768) with s_p the .etm scale of its
channel (bias scale s_b[c], weight scale s_w[c]). An update between two states of the same
model (local after training, global before) is, per parameter, in float32:

    n   = (q_l - q_g) * 32768 + (r_l - r_g)      exact integer
    u_p = ((float)n * s_p) * 2^-15              two float32 roundings (the second is exact
                                                 unless subnormal)

`apply` adds a real-unit update v to a state, bit for bit as firmware/fleet.py does:

    a = round_sat(((v_p / s_p) * 32768.0f), 2^30);  t = a + r;  n = floor((t + 16384) / 32768)
    r = t - n * 32768;  q = clamp(q + n)  (weights [-127, 127], biases int32)

States are the trained-weights file bytes (`m.state()` on a board, `Trainer.state_bytes()` here);
`Layout` says where each parameter's value and residual sit in them (docs/training.md §6.3/§7).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..format.modelfile import NONE, EtmModel
from ..format.scheme import Scheme, out_channels, per_channel
from ..twin.qmath import channel_scales as _scales, round_sat

F32 = np.float32
HEADER = 32  # trained-weights file header (docs/training.md §7)


def _a4(n: int) -> int:
    return (n + 3) & ~3


@dataclass
class Segment:
    """One run of parameters: `kind` 'b' (int32 biases) or 'w' (int8 weights of the selected
    channels, slot by slot), `val` / `res` byte offsets in the state file, `n_ch` channels of
    `per` parameters each, their scales at `scale[sc: sc + n_ch]` of the layout."""

    kind: str
    val: int
    res: int
    n_ch: int
    per: int
    sc: int
    layer: int = -1

    @property
    def n(self) -> int:
        return self.n_ch * self.per


@dataclass
class Layout:
    segments: list[Segment]
    scale: np.ndarray  # float32 per channel of every segment, in order
    size: int  # params count D

    def span(self, layer: int, kind: str) -> slice | None:
        """Where layer's biases ('b') or weights ('w') sit in an update vector."""
        i = 0
        for s in self.segments:
            if s.layer == layer and s.kind == kind:
                return slice(i, i + s.n)
            i += s.n
        return None

    def per_param_scale(self) -> np.ndarray:
        return np.concatenate([np.repeat(self.scale[s.sc: s.sc + s.n_ch], s.per) for s in self.segments]).astype(F32)

    def to_device(self) -> tuple[list[list], list[float]]:
        """(segments as [kind, val, res, n_ch, per, sc] lists, scales as float32 values) for
        firmware/fleet.py's `Layout(segs, scales)`."""
        return [[s.kind, s.val, s.res, s.n_ch, s.per, s.sc] for s in self.segments], [float(v) for v in self.scale]


def layout(model: EtmModel, scheme: Scheme | None = None, momentum: bool = False) -> Layout:
    """Where the scheme's parameters sit in a trained-weights file of `model` (§6.3 order)."""
    scheme = scheme if scheme is not None else Scheme.for_model(model)
    off = HEADER
    segs: list[Segment] = []
    scales: list[np.ndarray] = []
    nsc = 0
    for e in scheme.entries:
        ly = model.layers[e.layer]
        c_out = out_channels(model, e.layer)
        bias_off = w_off = None
        if e.bias:
            bias_off = off
            off += _a4(4 * c_out)
        n_sel = len(e.channels)
        per = per_channel(model, e.layer) if n_sel else 0
        if n_sel:
            off += _a4(2 * c_out)  # channel map
            w_off = off
            off += _a4(n_sel * per)
        res = off
        count = (c_out if e.bias else 0) + n_sel * per
        off += _a4(2 * count)
        if momentum:
            off += _a4(4 * count)
        if e.bias:
            segs.append(Segment("b", bias_off, res, c_out, 1, nsc, e.layer))
            scales.append(_scales(model.tensors[ly.bias], c_out))
            nsc += c_out
            res += 2 * c_out
        if n_sel:
            segs.append(Segment("w", w_off, res, n_sel, per, nsc, e.layer))
            sw = _scales(model.tensors[ly.weight], c_out)
            scales.append(sw[np.asarray(e.channels, np.int64)])
            nsc += n_sel
    sc = np.concatenate(scales).astype(F32) if scales else np.zeros(0, F32)
    return Layout(segs, sc, sum(s.n for s in segs))


def unpack(lay: Layout, state: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(q int64, r int64) of every parameter, in layout order."""
    qs, rs = [], []
    for s in lay.segments:
        dt = "<i4" if s.kind == "b" else "i1"
        qs.append(np.frombuffer(state, dt, s.n, s.val).astype(np.int64))
        rs.append(np.frombuffer(state, "<i2", s.n, s.res).astype(np.int64))
    if not qs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(qs), np.concatenate(rs)


def real(lay: Layout, state: bytes) -> np.ndarray:
    """float32 real value of every parameter: (q * s) + (r * s) * 2^-15 (for the server's arrays)."""
    q, r = unpack(lay, state)
    s = lay.per_param_scale()
    return (q.astype(F32) * s + (r.astype(F32) * s) * F32(2.0 ** -15)).astype(F32)


def delta(lay: Layout, local: bytes, glob: bytes) -> np.ndarray:
    """The update u (float32, real units) from state `glob` to state `local`."""
    ql, rl = unpack(lay, local)
    qg, rg = unpack(lay, glob)
    n = (ql - qg) * 32768 + (rl - rg)
    s = lay.per_param_scale()
    return ((n.astype(F32) * s) * F32(2.0 ** -15)).astype(F32)


def apply(lay: Layout, state: bytes, v) -> bytes:
    """The state with the real-unit update v added (the module doc's rule); CRC refreshed."""
    v = np.asarray(v, F32).reshape(-1)
    if v.size != lay.size:
        raise ValueError(f"the update has {v.size} values, the layout {lay.size}: same model and scheme?")
    if not np.all(np.isfinite(v)):
        raise ValueError("the update holds a NaN or an infinity")
    q, r = unpack(lay, state)
    s = lay.per_param_scale()
    a = round_sat((v / s) * F32(32768.0))
    t = a + r
    n = (t + 16384) >> 15
    r = t - (n << 15)
    q = q + n
    out = bytearray(state)
    i = 0
    for sg in lay.segments:
        qq = q[i: i + sg.n]
        if sg.kind == "b":
            qq = np.clip(qq, -(1 << 31), (1 << 31) - 1)
            out[sg.val: sg.val + 4 * sg.n] = qq.astype("<i4").tobytes()
        else:
            qq = np.clip(qq, -127, 127)
            out[sg.val: sg.val + sg.n] = qq.astype(np.int8).tobytes()
        out[sg.res: sg.res + 2 * sg.n] = r[i: i + sg.n].astype("<i2").tobytes()
        i += sg.n
    return fix_crc(bytes(out))


def fix_crc(state: bytes) -> bytes:
    """Recompute the header CRC-32 over [16, size) (docs/training.md §7)."""
    b = bytearray(state)
    struct.pack_into("<I", b, 12, zlib.crc32(bytes(b[16:])) & 0xFFFFFFFF)
    return bytes(b)

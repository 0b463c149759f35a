"""edgetune in pure Python: the `Model` API of the C module, same arithmetic, same bits.

The fallback of firmware/core.py for stock MicroPython / CircuitPython firmware without our C
module, and the honest baseline of bench/training.py. It implements docs/etm-format.md (forward
kernels, TFLM integer arithmetic) and docs/training.md (training step, arena plan numbers,
trained-weights file) so that predict, train losses and saved state files are bit-identical to
the C module and to the numpy twin (host/edgetune/twin/training.py). Runs on MicroPython (unix port,
single-precision ports) and CPython; needs only `struct`, `array` (and `binascii.crc32` if
present), so CircuitPython should work too (not tested).

Float32: MicroPython's float is a C double on the unix port and a C float on most MCUs. Every
float operation of the spec is rounded to float32 right after it through a one-element
`array('f')` store (`F[0] = v; v = F[0]`), which is exact emulation: for + - * / of float32
operands the double result rounded once to float32 equals the float32 operation. Conversions
int -> float round to float32 too (`(float)M` of a 31-bit M is not exact). Constants are built
from their float32 bit patterns (MicroPython's decimal parser is not correctly rounded). On a
single-precision build the store is a no-op (tested on the Cortex-M3 qemu firmware). Ports built
with MICROPY_OBJ_REPR_C keep only 30 bits of a float and cannot be bit-exact.

Integers are Python ints (exact); int32 wrap-around is applied where C wraps. No
@micropython.native/viper: plain bytecode, so it runs wherever Python does (tests:
tests/unix/test_edgetune_py.py; cost: bench/training.py, about 50x the C module's instructions).

Heap (docs/device-app.md §6 has the figures measured on the qemu board): the model's weights
are copied into one int8 array per layer at Model() (the C module reads them in place from
the buffer; a bytes object reads unsigned); the training state is arrays (int32 biases, int16
residuals, float32 momentum), the layer outputs and gradient buffers are made once, so a
step allocates no large object; gc.collect() runs before long-lived objects are allocated
(MicroPython's GC does not move objects: allocated among garbage they split the free heap);
save()/load() stream the file instead of holding it. Freeze the module (or at least use a
.mpy): its bytecode is ~25 KB of heap when loaded from a filesystem. Little-endian machines
only (every MicroPython port). Validation of the .etm is a subset (header, CRC,
tables inside the file, chain, ops, shapes of weights, scheme and accumulator bounds);
info()['arena'] / ['peak'] report the C module's plan (docs/training.md §6), not this
implementation's own heap use. Error messages are not the C module's word for word; the
exception types of the tested refusals (bad label/lr/input/momentum/scheme/file) are the same.
"""

import struct
from array import array

from edgetune_py_num import (
    F32, FLT_MAX, I32_MAX, I32_MIN, ITEM_SIZE, LIM30, MPY, OP_AVERAGE_POOL_2D, OP_CONV_2D,
    OP_DEPTHWISE_CONV_2D, OP_FULLY_CONNECTED, OP_MAX_POOL_2D, OP_MEAN, commit, f32, from_bits,
    install_qscale, refit_scratch, round_sat, to_bits, to_float, zeros
)

if MPY:
    from gc import collect as _collect
else:
    _collect = None

try:
    from binascii import crc32 as _crc32
except ImportError:  # pragma: no cover - ports without binascii.crc32
    _crc32 = None

_OP_NAMES = ("?", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN")
_ACT_NAMES = ("NONE", "RELU", "RELU6")
_WEIGHT_OPS = (1, 2, 3)
NONE = 0xFFFF
if bytes(array("h", [1]))[0] != 1:  # save/load read and write the state arrays' bytes as they are
    raise ImportError("edgetune_py: needs a little-endian machine (the trained-weights file is little-endian)")


# float32 constants of docs/training.md §3, from their bit patterns
_LOG2E = from_bits(0x3FB8AA3B)
_LN2_HI = from_bits(0x3F317200)
_LN2_LO = from_bits(0x35BFBE8E)
_EXP_C = (from_bits(0x3C088889), from_bits(0x3D2AAAAB), from_bits(0x3E2AAAAB), from_bits(0x3F000000),
          from_bits(0x3F800000))
_EXP_C0 = from_bits(0x3AB60B61)
_SQRT2 = from_bits(0x3FB504F3)
_LOG_C = (from_bits(0x3E124925), from_bits(0x3E4CCCCD), from_bits(0x3EAAAAAB))
_LOG_C0 = from_bits(0x3DE38E39)
_LN2 = from_bits(0x3F317218)


def _crc(data, crc=0):
    if _crc32 is not None:
        return _crc32(data, crc) & 0xFFFFFFFF
    crc ^= 0xFFFFFFFF
    for b in bytes(data):  # the bytes of a buffer (an array's items may be wider)
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _a4(n):
    return (n + 3) & ~3


def _compact():
    """A collection before allocating what lives long (a model's tables, buffers, state): the
    MicroPython GC does not move objects, and long-lived ones allocated while the heap is full
    of garbage land scattered over it, splitting the free heap into pieces too small for the
    next large buffer. Collected first, they pack at the bottom. (Not on CPython.)"""
    if _collect:
        _collect()


def _rdiv(a, b):
    half = b >> 1
    if a >= 0:
        return (a + half) // b
    return -((half - a) // b)


def et_expf(x):
    """exp(x) for float32 x <= 0 (docs/training.md §3)."""
    F = F32
    if x < -87.0:
        return 0.0
    F[0] = x * _LOG2E
    k = round_sat(F[0], LIM30)
    kf = float(k)
    F[0] = kf * _LN2_HI
    F[0] = x - F[0]
    r = F[0]
    F[0] = kf * _LN2_LO
    F[0] = r - F[0]
    r = F[0]
    F[0] = r * _EXP_C0
    for c in _EXP_C:
        F[0] = c + F[0]
        F[0] = r * F[0]
    F[0] = 1.0 + F[0]
    if k < -126:
        return 0.0
    F[0] = F[0] * from_bits((k + 127) << 23)
    return F[0]


def et_logf(x):
    """ln(x) for float32 x >= 1 (docs/training.md §3)."""
    F = F32
    bits = to_bits(x)
    e = ((bits >> 23) & 255) - 127
    mf = from_bits((bits & 0x7FFFFF) | 0x3F800000)
    if mf > _SQRT2:
        F[0] = mf * 0.5
        mf = F[0]
        e += 1
    F[0] = mf - 1.0
    a = F[0]
    F[0] = mf + 1.0
    F[0] = a / F[0]
    t = F[0]
    F[0] = t * t
    t2 = F[0]
    F[0] = t2 * _LOG_C0
    for c in _LOG_C:
        F[0] = c + F[0]
        F[0] = t2 * F[0]
    F[0] = 1.0 + F[0]
    p = F[0]
    F[0] = 2.0 * t
    F[0] = F[0] * p
    ln_m = F[0]
    F[0] = float(e) * _LN2
    F[0] = F[0] + ln_m
    return F[0]


def _softmax_xent(y, scale, zp, label, want_grad):
    """§3: (loss, g) with g the float32 gradient list (None unless want_grad)."""
    F = F32
    z = []
    for q in y:
        F[0] = scale * float(q - zp)
        z.append(F[0])
    m = z[0]
    for v in z:
        if v > m:
            m = v
    s = 0.0
    e = []
    for v in z:
        F[0] = v - m
        ev = et_expf(F[0])
        e.append(ev)
        F[0] = s + ev
        s = F[0]
    F[0] = et_logf(s) + m
    F[0] = F[0] - z[label]
    loss = F[0]
    if not want_grad:
        return loss, None
    g = []
    for k in range(len(e)):
        F[0] = e[k] / s
        if k == label:
            F[0] = F[0] - 1.0
        g.append(F[0])
    return loss, g


def _mbqm(acc, m, left, right):
    """TFLM MultiplyByQuantizedMultiplier of an int (wrapped to int32 first); left/right are
    the left and right shifts (at most one is non-zero)."""
    if acc > I32_MAX or acc < I32_MIN:
        acc = ((acc + 0x80000000) & 0xFFFFFFFF) - 0x80000000
    if left:
        acc = (((acc << left) + 0x80000000) & 0xFFFFFFFF) - 0x80000000
    ab = acc * m
    if ab >= 0:
        hi = (ab + 0x40000000) >> 31
    else:
        hi = -((0x3FFFFFFF - ab) >> 31)
    if right:
        mask = (1 << right) - 1
        thr = (mask >> 1) + (1 if hi < 0 else 0)
        return (hi >> right) + (1 if (hi & mask) > thr else 0)
    return hi


def _shifted(x, off, out):
    """out[j] = x[j] + off for the len(x) items of x (out: a buffer at least that long)."""
    for j in range(len(x)):
        out[j] = x[j] + off
    return out


_SEQ = (list, tuple, bytes, bytearray, memoryview, array)  # train(): k labels


def _int8_copy(src):
    """array('b') with the bytes of the buffer src, one allocation on MicroPython (whose
    array.extend copies a buffer's bytes; CPython's converts items, so it gets bytes first)."""
    if MPY:
        a = array("b")
        try:
            a.extend(src)
            return a
        except TypeError:  # not a buffer (a list of ints): bytes() takes it
            pass
    return array("b", bytes(src))


class _Layer:
    pass


def _read_only(buf):
    """TypeError unless buf is read-only (bytes, a memoryview of bytes): the C module reads the
    model in place, and refuses a buffer that could change under it (docs/reliability.md §7)."""
    if isinstance(buf, (bytes, memoryview)):
        if isinstance(buf, bytes):
            return
        try:
            buf[0:0] = b""  # a no-op on a writable memoryview, TypeError on a read-only one
        except TypeError:
            return
    elif not isinstance(buf, (bytearray, array)):
        memoryview(buf)  # TypeError for a non-buffer
    raise TypeError("edgetune: Model() needs a read-only buffer (bytes, or a memoryview of bytes), not a "
                    "bytearray/array that could change under the model: Model(bytes(buf))")


def _seq_values(v, n):
    """The n items of v, v looked at again before each (an item's __float__/__int__, run by the
    caller, may change it): as the C module, a list whose length changed is refused."""
    for i in range(n):
        if len(v) != n:
            raise ValueError("edgetune: a list argument changed length while its items were converted")
        yield v[i]
    if len(v) != n:
        raise ValueError("edgetune: a list argument changed length while its items were converted")


def _path(path):
    if not isinstance(path, str):
        raise TypeError("edgetune: a path must be a str")
    if not path:
        raise ValueError("edgetune: the path is empty")


def _open(path, mode):
    """open(); its OSError again as OSError(errno, 'edgetune: cannot open|create PATH') (as the C module)."""
    try:
        return open(path, mode)
    except OSError as e:
        raise OSError(e.errno, "edgetune: cannot %s %s" % ("create" if mode[0] == "w" else "open", path))


class Model:
    """Model(buf, scheme=None, momentum=0.0, batch=False): an .etm model with its training state."""

    def __init__(self, buf, scheme=None, momentum=0.0, batch=False):
        mom = f32(to_float(momentum))
        if not (mom >= 0.0 and mom < 1.0):
            raise ValueError("edgetune: momentum must be in [0, 1)")
        self._momentum = mom
        self._batch = bool(batch)
        self._acc = False  # inside a batch: 4d/4e add to the accumulators (docs/training.md §5)
        if isinstance(buf, str):
            raise TypeError("edgetune: Model() takes the .etm file's bytes, not a path: "
                            "Model(open('%s', 'rb').read())" % buf)
        _read_only(buf)
        self._buf = buf
        _compact()
        mv = memoryview(buf)
        self._parse(mv)
        entries = self._scheme_from(scheme, mv)
        self._entries = entries
        self._first = entries[0][0] if entries else -1
        self._check_training()
        self._plan()
        self._buffers()
        self._peak = 0
        self._frame = None  # sensor frame (docs/training.md §9): edgetune_py_frame
        self.reset()

    # ------------------------------------------------------------------ parsing

    def _parse(self, mv):
        n = len(mv)
        if n < 64:
            raise ValueError("edgetune: buffer shorter than the 64-byte header")
        (magic, ver, hsize, fsize, crc, nt, nl, inp, outp, toff, loff, moff, mlen, soff,
         slen) = struct.unpack_from("<4sHHIIHHHHIIIIII", mv, 0)
        if bytes(magic) != b"EDTM":
            raise ValueError("edgetune: not an .etm file (bad magic)")
        if ver != 1 or hsize != 64:
            raise ValueError("edgetune: unsupported .etm version or header size")
        if fsize != n:
            raise ValueError("edgetune: file size field does not match the buffer length")
        if _crc(mv[16:]) != crc:
            raise ValueError("edgetune: CRC mismatch")
        if not (1 <= nt <= 1024 and 1 <= nl <= 256) or inp >= nt or outp >= nt:
            raise ValueError("edgetune: tensor/layer counts out of range")
        for off, ln in ((toff, 32 * nt), (loff, 48 * nl), (soff, slen)):
            if off % 4 or off + ln > n or (ln and off < 64):
                raise ValueError("edgetune: a table lies outside the file or is misaligned")
        self._crc_field = crc
        self._len = n
        ts = []
        for k in range(nt):
            (dt, kind, quant, axis, s0, s1, s2, s3, zp, scale, sc_off, d_off,
             d_len) = struct.unpack_from("<BBBB4HifIII", mv, toff + 32 * k)
            t = _Layer()
            t.dtype, t.kind, t.shape, t.zp, t.scale = dt, kind, (s0, s1, s2, s3), zp, scale
            t.size = s0 * s1 * s2 * s3
            if dt not in (1, 2) or kind not in (0, 1) or 0 in t.shape:
                raise ValueError("edgetune: tensor %d: bad dtype, kind or shape" % k)
            t.scales = None
            if quant == 1:
                if axis > 3:
                    raise ValueError("edgetune: tensor %d: bad quantized axis" % k)
                nc = t.shape[axis]
                if sc_off % 4 or sc_off + 4 * nc > n or sc_off < 64:
                    raise ValueError("edgetune: tensor %d: scales outside the file" % k)
                t.scales = array("f", struct.unpack_from("<%df" % nc, mv, sc_off))
                t.axis = axis
            t.d_off = d_off
            if kind == 1:
                if d_off % 4 or d_off < 64 or d_off + d_len > n or d_len != t.size * (1 if dt == 1 else 4):
                    raise ValueError("edgetune: tensor %d: data outside the file or of the wrong length" % k)
            ts.append(t)
        self._tensors = ts
        self._input, self._output = inp, outp
        layers = []
        prev = inp
        for i in range(nl):
            (op, act, _r, li, lo, lw, lb, sh, sw, fh, fw, ph, pw, dm, nmult, ioff, ooff, amin, amax, moff2,
             p0) = struct.unpack_from("<BBHHHHHBBBBhhHHiiiiIi", mv, loff + 48 * i)
            if op < 1 or op > 6 or act > 2:
                raise ValueError("edgetune: layer %d: unknown op or activation" % i)
            if li != prev or lo >= nt or ts[li].kind != 0 or ts[lo].kind != 0:
                raise ValueError("edgetune: layer %d does not continue the chain" % i)
            prev = lo
            L = _Layer()
            L.op, L.act, L.inp, L.out, L.weight, L.bias = op, act, li, lo, lw, lb
            L.sh, L.sw, L.fh, L.fw, L.ph, L.pw, L.dm = sh, sw, fh, fw, ph, pw, dm
            L.in_off, L.out_off, L.act_min, L.act_max, L.p0 = ioff, ooff, amin, amax, p0
            if not (-128 <= amin <= amax <= 127):
                raise ValueError("edgetune: layer %d: bad activation clamp" % i)
            _, L.ih, L.iw, L.ic = ts[li].shape
            _, L.oh, L.ow, L.oc = ts[lo].shape
            L.n_in, L.n_out = ts[li].size, ts[lo].size
            if nmult:
                if moff2 % 4 or moff2 < 64 or moff2 + 8 * nmult > n:
                    raise ValueError("edgetune: layer %d: multipliers outside the file" % i)
                mults = struct.unpack_from("<%di" % nmult, mv, moff2)
                shifts = struct.unpack_from("<%di" % nmult, mv, moff2 + 4 * nmult)
                for m_, s_ in zip(mults, shifts):
                    if m_ < 0 or s_ < -31 or s_ > 30:
                        raise ValueError("edgetune: layer %d: multiplier/shift out of range" % i)
                L.rm = array("i", mults)
                L.rl = array("b", [v if v > 0 else 0 for v in shifts])
                L.rr = array("b", [-v if v < 0 else 0 for v in shifts])
            if op in _WEIGHT_OPS:
                if lw >= nt or ts[lw].kind != 1 or ts[lw].dtype != 1 or nmult != L.oc:
                    raise ValueError("edgetune: layer %d: bad weight tensor or n_mult" % i)
                if lb != NONE and (lb >= nt or ts[lb].kind != 1 or ts[lb].dtype != 2 or ts[lb].size != L.oc):
                    raise ValueError("edgetune: layer %d: bad bias tensor" % i)
                # per-channel scales: one per output channel, along the output-channel axis
                w_axis = 3 if op == OP_DEPTHWISE_CONV_2D else 0
                if ts[lw].scales is not None and (ts[lw].axis != w_axis or ts[lw].shape[w_axis] != L.oc):
                    raise ValueError("edgetune: layer %d: weight scales must be one per output channel" % i)
                if lb != NONE and ts[lb].scales is not None and len(ts[lb].scales) != L.oc:
                    raise ValueError("edgetune: layer %d: bias scales must be one per output channel" % i)
                wsh = ts[lw].shape
                if op == OP_FULLY_CONNECTED:
                    L.kh = L.kw = 1
                    L.per = ts[lw].size // L.oc
                    if wsh[0] != L.oc or L.per != L.n_in:
                        raise ValueError("edgetune: layer %d: FC weight shape" % i)
                elif op == OP_CONV_2D:
                    L.kh, L.kw = wsh[1], wsh[2]
                    L.per = wsh[1] * wsh[2] * wsh[3]
                    if wsh[0] != L.oc or wsh[3] != L.ic:
                        raise ValueError("edgetune: layer %d: conv weight shape" % i)
                else:
                    L.kh, L.kw = wsh[1], wsh[2]
                    L.per = wsh[1] * wsh[2]
                    if wsh[0] != 1 or wsh[3] != L.oc or L.ic * dm != L.oc:
                        raise ValueError("edgetune: layer %d: depthwise weight shape" % i)
            else:
                L.kh, L.kw, L.per = fh, fw, 0
                if op == OP_MEAN:
                    if nmult != 1 or L.oc != L.ic or p0 != 0:
                        raise ValueError("edgetune: layer %d: MEAN parameters" % i)
                elif L.oc != L.ic or fh == 0 or fw == 0:
                    raise ValueError("edgetune: layer %d: pool parameters" % i)
            if op in (1, 2, 4, 5):
                if sh == 0 or sw == 0:
                    raise ValueError("edgetune: layer %d: zero stride" % i)
                L.tpo, L.tp = self._taps(L)
            layers.append(L)
        if prev != outp:
            raise ValueError("edgetune: the chain does not end at the output tensor")
        so = ts[outp].scale  # model.h ET_MAX_OUTPUT_SCALE: keeps the float32 loss finite
        if not (so >= 0.0 and so <= 4294967296.0):
            raise ValueError("edgetune: the output scale is outside [0, 2^32] (losses would not be finite)")
        self._layers = layers
        self._scheme_sec = bytes(mv[soff:soff + slen]) if soff else b""
        t_in, t_out = ts[inp], ts[outp]
        self._n_in, self._n_out = t_in.size, t_out.size

    def _taps(self, L):
        """The in-image taps of every output position p, in scan order (ky, then kx), as one
        flat array of pairs (tap index ky*kw+kx, input base (iy*W+ix)*C): position p's pairs
        are tp[tpo[p]:tpo[p+1]]. Returns (tpo, tp); uint16 arrays when the values fit (else
        int32), each allocated once at its size (a first pass counts)."""
        tpo = tp = None
        for fill in (False, True):
            n = 0
            if fill:
                tpo[0] = 0
            for oy in range(L.oh):
                for ox in range(L.ow):
                    start = n
                    for ky in range(L.kh):
                        iy = oy * L.sh - L.ph + ky
                        if iy < 0 or iy >= L.ih:
                            continue
                        for kx in range(L.kw):
                            ix = ox * L.sw - L.pw + kx
                            if 0 <= ix < L.iw:
                                if fill:
                                    tp[n] = ky * L.kw + kx
                                    tp[n + 1] = (iy * L.iw + ix) * L.ic
                                n += 2
                    if n == start and L.op == OP_AVERAGE_POOL_2D:
                        raise ValueError("edgetune: average pool window entirely in the padding")
                    if fill:
                        tpo[oy * L.ow + ox + 1] = n
            if not fill:
                tp = zeros("H" if L.n_in < 65536 and L.kh * L.kw < 65536 else "i", n)
                tpo = zeros("H" if n < 65536 else "i", L.oh * L.ow + 1)
        return tpo, tp

    # ------------------------------------------------------------------ scheme

    def _channel_scales(self, t, n):
        if t.scales is not None:
            return t.scales
        return array("f", [t.scale] * n)

    def _weights_of(self, i):
        """The flashed weights of layer i as per-channel rows (conv/FC) or the flat (KH*KW*C)
        array (depthwise), signed int8 arrays."""
        L = self._layers[i]
        off = self._tensors[L.weight].d_off
        per = L.per
        flat = _int8_copy(memoryview(self._buf)[off:off + per * L.oc])
        if L.op == OP_DEPTHWISE_CONV_2D:
            return flat
        fm = memoryview(flat)  # rows: views of one array (no object and no padding per row)
        return [fm[c * per:(c + 1) * per] for c in range(L.oc)]

    def _l1(self, i, n_sel):
        L = self._layers[i]
        w = memoryview(self._buf)
        off, oc, per = self._tensors[L.weight].d_off, L.oc, L.per
        score = [0] * oc
        for c in range(oc):
            s = 0
            if L.op == OP_DEPTHWISE_CONV_2D:
                idx = range(off + c, off + per * oc, oc)
            else:
                idx = range(off + c * per, off + (c + 1) * per)
            for k in idx:
                v = w[k]  # the int8 weight's byte: |int8| is v or 256 - v
                s += v if v < 128 else 256 - v
            score[c] = s
        order = sorted(range(L.oc), key=lambda c: (-score[c], c))
        return tuple(sorted(order[:n_sel]))

    def _build(self, n_bias, den):
        layers = self._layers
        wl = [i for i, L in enumerate(layers) if L.op in _WEIGHT_OPS]
        if n_bias < 0 or n_bias > len(wl):
            raise ValueError("edgetune: scheme n_bias=%d but the model has %d layers with weights" % (n_bias, len(wl)))
        bias = set(i for i in wl[len(wl) - n_bias:] if layers[i].bias != NONE)
        chans = {}
        for i, d in den.items():
            if layers[i].op not in _WEIGHT_OPS:
                raise ValueError("edgetune: scheme layer %d has no weights" % i)
            c_out = layers[i].oc
            chans[i] = self._l1(i, max(1, c_out // d))
        last = len(layers) - 1
        if layers[last].op == OP_FULLY_CONNECTED:
            chans[last] = tuple(range(layers[last].oc))
            if layers[last].bias != NONE:
                bias.add(last)
        return [(i, i in bias, chans.get(i, ())) for i in sorted(bias | set(chans))]

    def _scheme_from(self, scheme, mv):
        if scheme is None:
            if self._scheme_sec:
                return self._decode_scheme(self._scheme_sec)
            return self._build(len([L for L in self._layers if L.op in _WEIGHT_OPS]), {})
        if not isinstance(scheme, dict):
            raise TypeError("edgetune: scheme must be None or a dict")
        # one pass over the items, only str keys compared (a key's __eq__ could change the dict)
        n_bias, ws = 0, ()
        for key, val in list(scheme.items()):
            if type(key) is not str:
                raise ValueError("edgetune: scheme keys must be 'n_bias' and 'weights'")
            if key == "n_bias":
                n_bias = val
            elif key == "weights":
                ws = val
            else:
                raise ValueError("edgetune: unknown scheme key %r; the valid keys are 'n_bias' and 'weights'" % (key,))
        if isinstance(n_bias, (str, float)):
            raise TypeError("edgetune: scheme n_bias must be an int")
        n_bias = int(n_bias)
        if not isinstance(ws, (list, tuple)):
            raise TypeError("edgetune: scheme weights must be a list/tuple of (layer, den) pairs")
        n = len(ws)
        if n > 256:
            raise ValueError("edgetune: scheme weights need (layer, 1|2|4|8) pairs, each layer once")
        pairs = []
        for k in range(n):  # every __int__ first; the list is looked at again after each one
            if len(ws) != n:
                raise ValueError("edgetune: a list argument changed length while its items were converted")
            layer, d = ws[k]
            pairs.append((int(layer), int(d)))
        if len(ws) != n:
            raise ValueError("edgetune: a list argument changed length while its items were converted")
        den = {}
        nl = len(self._layers)
        for layer, d in pairs:
            if layer < 0:
                layer += nl
            if layer < 0 or layer >= nl or d not in (1, 2, 4, 8) or layer in den:
                raise ValueError("edgetune: scheme weights need (layer, 1|2|4|8) pairs, each layer once")
            den[layer] = d
        if n_bias < 0 or n_bias > 256:
            raise ValueError("edgetune: scheme n_bias must be >= 0 and at most the model's layers with weights")
        return self._build(n_bias, den)

    def _decode_scheme(self, data):
        if len(data) < 4:
            raise ValueError("edgetune: scheme section shorter than its 4-byte header")
        ver, n = struct.unpack_from("<HH", data, 0)
        if ver != 1:
            raise ValueError("edgetune: scheme section version %d is not supported" % ver)
        off, prev, out = 4, -1, []
        for e in range(n):
            if off + 8 > len(data):
                raise ValueError("edgetune: scheme entry %d lies outside the scheme section" % e)
            layer, flags, r0, n_sel, r1 = struct.unpack_from("<HBBHH", data, off)
            off += 8
            if r0 or r1:
                raise ValueError("edgetune: scheme entry %d: reserved bytes are not zero" % e)
            if layer <= prev or layer >= len(self._layers):
                raise ValueError("edgetune: scheme entry %d: layer %d out of range or not increasing" % (e, layer))
            prev = layer
            L = self._layers[layer]
            if L.op not in _WEIGHT_OPS:
                raise ValueError("edgetune: scheme entry %d: layer %d has no weights" % (e, layer))
            if flags not in (1, 2, 3) or (flags & 1 and L.bias == NONE):
                raise ValueError("edgetune: scheme entry %d: bad flags %d for layer %d" % (e, flags, layer))
            if (n_sel == 0) != (not flags & 2) or n_sel > L.oc:
                raise ValueError("edgetune: scheme entry %d: %d channels selected of %d" % (e, n_sel, L.oc))
            padded = n_sel + (n_sel & 1)
            if off + 2 * padded > len(data):
                raise ValueError("edgetune: scheme entry %d: channel list lies outside the scheme section" % e)
            ch = struct.unpack_from("<%dH" % padded, data, off)
            off += 2 * padded
            if n_sel & 1 and ch[-1]:
                raise ValueError("edgetune: scheme entry %d: pad after the channel list is not zero" % e)
            ch = ch[:n_sel]
            for a, b in zip(ch, ch[1:]):
                if b <= a:
                    raise ValueError("edgetune: scheme entry %d: channel list must be ascending, unique and < %d" %
                                     (e, L.oc))
            if ch and ch[-1] >= L.oc:
                raise ValueError("edgetune: scheme entry %d: channel list must be ascending, unique and < %d" %
                                 (e, L.oc))
            out.append((layer, bool(flags & 1), tuple(ch)))
        if off != len(data):
            raise ValueError("edgetune: scheme section length does not match its entries")
        return out

    def _scheme_bytes(self):
        out = bytearray(struct.pack("<HH", 1, len(self._entries)))
        for layer, b, ch in self._entries:
            out += struct.pack("<HBBHH", layer, (1 if b else 0) | (2 if ch else 0), 0, len(ch), 0)
            ch = list(ch) + ([0] if len(ch) % 2 else [])
            out += struct.pack("<%dH" % len(ch), *ch)
        return bytes(out)

    # ------------------------------------------------------------------ plan

    def _check_training(self):
        first = self._first
        layers, ts = self._layers, self._tensors
        self._entry = {}
        for e in self._entries:
            self._entry[e[0]] = e
        for L in layers:
            L.s_w = None
        for i, e in self._entry.items():  # the C channel map holds int16 channel numbers
            if e[2] and layers[i].oc > 32767:
                raise ValueError("edgetune: layer %d: %d output channels; training handles at most 32767"
                                 % (i, layers[i].oc))
        if first < 0:
            return

        def ok(v):
            return v > 0.0 and v <= FLT_MAX

        for i in range(first, len(layers)):
            L = layers[i]
            bound = 0
            if L.op in _WEIGHT_OPS:
                s_w = self._channel_scales(ts[L.weight], L.oc)
                for v in s_w:
                    if not ok(v):
                        raise ValueError("edgetune: layer %d: weight scale is not a positive number" % i)
                L.s_w = s_w
                mx = 0.0
                for v in s_w:
                    if v > mx:
                        mx = v
                L.s_wmax = mx
                L.r_c = array("f", [v / mx for v in s_w])  # the store rounds to float32
                e = self._entry.get(i)
                if e is not None and e[1]:
                    L.s_b = self._channel_scales(ts[L.bias], L.oc)
                    for v in L.s_b:
                        if not ok(v):
                            raise ValueError("edgetune: layer %d: bias scale is not a positive number" % i)
                if e is not None and e[2]:
                    if not ok(ts[L.inp].scale):
                        raise ValueError("edgetune: layer %d: input scale is not a positive number" % i)
                if L.op == OP_FULLY_CONNECTED:
                    fan = L.oc
                elif L.op == OP_CONV_2D:
                    fan = L.oc * L.kh * L.kw
                else:
                    fan = L.dm * L.kh * L.kw
                bound = 32768 * 128 * fan  # |g| <= 32768 (int16), |w| <= 128 (a flashed -128)
            elif L.op == OP_AVERAGE_POOL_2D:
                bound = 32768 * 1024 * L.fh * L.fw
            elif L.op == OP_MAX_POOL_2D:
                bound = 32768 * L.fh * L.fw
            if i > first and bound >= (1 << 31):
                raise ValueError("edgetune: layer %d: its input gradient could overflow int32 (train fewer layers)" % i)
        so = ts[self._output].scale
        if not (so >= 0.0 and so <= FLT_MAX):
            raise ValueError("edgetune: the output scale is not a finite number")

    def _plan(self):
        """Arena sizes of the C module (docs/memory.md, docs/training.md §6)."""
        ts, layers = self._tensors, self._layers
        chain = [self._input] + [L.out for L in layers]
        sizes = [ts[t].size for t in chain]
        inf = 0
        for a, b in zip(sizes, sizes[1:]):
            if _a4(a) + _a4(b) > inf:
                inf = _a4(a) + _a4(b)
        self._inference_arena = inf
        first = self._first
        self._trainable = 0
        self._params_size = 0
        self._rl = -1
        if first < 0:
            self._arena = inf
            self._params_end = 0
            return
        nl = len(layers)
        pp = _a4(2 * sizes[first + 1])  # int16 gradient ping-pong: largest consecutive pair
        for j in range(first + 1, nl):
            if _a4(2 * sizes[j]) + _a4(2 * sizes[j + 1]) > pp:
                pp = _a4(2 * sizes[j]) + _a4(2 * sizes[j + 1])
        h = 0  # fold buffer: layers above first that train weights keep g apart from h
        cmax = 0  # l1 channel selection at init: C_out int32
        for i in range(first, nl):
            e = self._entry.get(i)
            if e is not None and e[2]:
                if i > first and sizes[i + 1] > h:
                    h = sizes[i + 1]
                if layers[i].oc > cmax:
                    cmax = layers[i].oc
        off = max(inf, pp + _a4(2 * h), 4 * cmax)
        for i in range(first, nl):
            e = self._entry.get(i)
            if e is not None and e[2]:  # input copy of a weight-trained layer
                off += _a4(sizes[i])
            if layers[i].op == OP_MAX_POOL_2D and i > first:  # arg-max indices, ceil(log2(KH*KW)) bits
                bits = 0
                while (1 << bits) < layers[i].fh * layers[i].fw:
                    bits += 1
                off += _a4((sizes[i + 1] * bits + 7) // 8)
            off += _a4((sizes[i + 1] + 7) // 8)
        p0 = off
        mom = self._momentum > 0
        for layer, b, ch in self._entries:
            L = layers[layer]
            nb = L.oc if b else 0
            nw = len(ch) * L.per
            if b:
                off += _a4(4 * L.oc)
            if ch:
                off += _a4(2 * L.oc) + _a4(nw)
            off += _a4(2 * (nb + nw))
            if mom:
                off += _a4(4 * (nb + nw))
            self._trainable += nb + nw
        L, e = layers[-1], self._entry.get(nl - 1)  # the item a refit writes (§6.3, §9)
        self._rl = nl - 1 if (L.op == OP_FULLY_CONNECTED and L.bias != NONE and e is not None and e[1]
                              and len(e[2]) == L.oc) else -1
        if self._rl >= 0:
            off += 16 * L.oc
        self._params_size = off - p0
        self._params_end = off
        if self._batch:  # float32 batch accumulator per trainable parameter (§6)
            off += 4 * self._trainable
        self._arena = off + _a4(4 * self._n_out)

    def _buffers(self):
        """The working buffers, made once (a step allocates no large object: on a small heap a
        large allocation in the middle of a step is what fails first, by fragmentation): every
        layer's output, the offset input (int16) and a conv patch. The gradient buffers are
        made by the first train()."""
        layers = self._layers
        self._acts = [None] + [zeros("b", L.n_out) for L in layers]
        n_x = per = 0
        for L in layers:
            if L.op in _WEIGHT_OPS:
                n_x = max(n_x, L.n_in)
                if L.op == OP_CONV_2D:
                    per = max(per, L.per)
        self._xo = zeros("h", n_x)
        self._patch = zeros("h", per)
        self._gbuf = None

    def _grad_buffers(self):
        """Two int32 input-gradient buffers (ping-pong: one layer's input gradient is the next
        layer's output gradient) and the int16 h of §4b, sized for the layers above first."""
        if self._gbuf is None:
            _compact()
            n_acc = n_h = 1
            for L in self._layers[self._first + 1:]:
                n_acc = max(n_acc, L.n_in)
                if L.op in _WEIGHT_OPS:
                    n_h = max(n_h, L.n_out)
            self._gbuf = (zeros("i", n_acc), zeros("i", n_acc))
            self._h = zeros("h", n_h)
        return self._gbuf

    # ------------------------------------------------------------------ state

    def reset(self):
        """Back to the flashed parameters; residuals and momentum zero."""
        ts = self._tensors
        mv = memoryview(self._buf)
        mom = self._momentum > 0
        _compact()
        for i, L in enumerate(self._layers):
            if L.op in _WEIGHT_OPS:
                L.w = None  # the old copy is garbage before the new one is made
                L.w = self._weights_of(i)
                if L.bias != NONE:
                    off = ts[L.bias].d_off
                    L.b = array("i", bytes(mv[off:off + 4 * L.oc]))
                else:
                    L.b = None
            e = self._entry.get(i)
            if e is not None:
                nb = L.oc if e[1] else 0
                n_sel = len(e[2])
                L.res_b = zeros("h", nb)
                L.res_w = [zeros("h", L.per) for _ in range(n_sel)]
                L.mom_b = zeros("f", nb) if mom else None
                L.mom_w = [zeros("f", L.per) for _ in range(n_sel)] if mom else None
            q0 = getattr(L, "q0", None)
            if q0 is not None:  # undo a refit's scales and multipliers (install_qscale)
                L.s_w, L.s_b, L.s_wmax, L.r_c, L.rm, L.rl, L.rr = q0
        if self._first >= 0 and self._params_end > self._peak:
            self._peak = self._params_end

    def _channel(self, L, c):
        """Current int8 weights of channel c in storage order (a list)."""
        return self._channel_from(L, L.w, c)

    def _channel_from(self, L, w, c):
        """Channel c of weights `w` (rows, or the flat depthwise array) in storage order."""
        if L.op == OP_DEPTHWISE_CONV_2D:
            oc = L.oc
            return [w[t * oc + c] for t in range(L.per)]
        return list(w[c])

    def _params_pieces(self):
        """The params region of the trained-weights file (docs/training.md §7) as buffers in
        file order -- the state arrays themselves, small channel maps and zero pads: nothing
        the size of the region is built (save() streams them twice: CRC, then write)."""
        mom = self._momentum > 0
        for layer, b, ch in self._entries:
            L = self._layers[layer]
            if b:
                yield L.b
            if ch:
                cmap = zeros("h", L.oc)
                for c in range(L.oc):
                    cmap[c] = -1
                for s, c in enumerate(ch):
                    cmap[c] = s
                yield cmap
                yield bytes(-2 * L.oc % 4)
                if L.op == OP_DEPTHWISE_CONV_2D:
                    for c in ch:
                        yield array("b", self._channel(L, c))
                else:
                    for c in ch:
                        yield L.w[c]
                yield bytes(-len(ch) * L.per % 4)
            if b:
                yield L.res_b
            for row in L.res_w:
                yield row
            yield bytes(-2 * ((L.oc if b else 0) + len(ch) * L.per) % 4)
            if mom:
                if b:
                    yield L.mom_b
                for row in L.mom_w:
                    yield row
        if self._rl >= 0:  # the classifier's scales and multipliers (§6.3): s_w, s_b, mult, shift
            L = self._layers[self._rl]
            yield L.s_w
            yield L.s_b
            yield L.rm
            sh = zeros("i", L.oc)
            for c in range(L.oc):
                sh[c] = L.rl[c] - L.rr[c]
            yield sh

    def _trailer(self):
        """The 44-byte frame trailer (flags bit1, docs/training.md §7), b'' without a frame."""
        if self._frame is None:
            return b""
        from edgetune_py_frame import trailer

        return trailer(self._frame)

    def _state_parts(self, tail):
        """The trained-weights file from byte 16 on (the part its CRC covers), as buffers."""
        yield struct.pack("<IIII", self._crc_field, _crc(self._scheme_bytes()), self._params_size,
                          (1 if self._momentum > 0 else 0) | (2 if tail else 0))
        for piece in self._params_pieces():
            yield piece
        if tail:
            yield tail

    def _header(self, tail):
        crc = 0
        for piece in self._state_parts(tail):
            crc = _crc(piece, crc)
        return struct.pack("<4sHHII", b"EDTW", 2, 32, 32 + self._params_size + len(tail), crc)

    def save(self, path):
        """The trained-weights file (docs/training.md §7): path + '.tmp', then renamed. Written
        piece by piece from the state arrays (no copy of the state in RAM)."""
        import os

        _path(path)
        tail = self._trailer()
        head = self._header(tail)
        tmp = path + ".tmp"
        f = _open(tmp, "wb")
        try:
            with f:
                f.write(head)
                for piece in self._state_parts(tail):
                    f.write(piece)
        except OSError:  # a full filesystem: path keeps the old weights, no tmp left behind
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise
        try:
            os.rename(tmp, path)  # as the C module: atomic where the filesystem's rename is
        except OSError:  # path names a directory: the tmp goes, the old file stays
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise

    def load(self, path):
        """Read a trained-weights file; everything is checked before the model changes. Three
        passes over the file, none holding it in RAM: the CRC in 256-byte chunks, the values
        (through one small scratch array per size), then straight into the state arrays."""
        _path(path)
        with _open(path, "rb") as f:
            self._load_from(f)

    def state(self):
        """The trained-weights file's bytes (docs/training.md §7): an in-RAM checkpoint that
        m.load_state() restores. A bytearray of the file's size is filled piece by piece (no
        growing buffer; temporaries of one piece), then returned as bytes like the C module's
        (for a moment two copies)."""
        tail = self._trailer()
        _compact()
        out = bytearray(32 + self._params_size + len(tail))
        out[0:16] = self._header(tail)  # magic .. CRC; _state_parts is the rest
        o = 16
        for piece in self._state_parts(tail):
            if not isinstance(piece, (bytes, bytearray)):
                piece = bytes(piece)  # an array's bytes (MicroPython assigns only same-size items)
            k = len(piece)
            out[o:o + k] = piece
            o += k
        return bytes(out)

    def load_state(self, data):
        """Install the bytes of m.state() / a trained-weights file, with load()'s checks (the
        same streaming reader over the bytes; MicroPython's BytesIO refers to a bytes object
        without copying it)."""
        from io import BytesIO

        mv = memoryview(data)  # TypeError for what is not a buffer, as the C module
        self._load_from(BytesIO(data if isinstance(data, bytes) else bytes(mv)))

    def _load_from(self, f):
        """load()/load_state() from a stream f (seek, read, readinto)."""
        n = f.seek(0, 2)
        f.seek(0)
        head = f.read(32)
        if len(head) < 32:
            raise ValueError("edgetune: trained-weights file shorter than its 32-byte header")
        magic, ver, hsize, size, crc, mcrc, scrc, p, flags = struct.unpack_from("<4sHHIIIIII", head, 0)
        if bytes(magic) != b"EDTW" or ver != 2 or hsize != 32:
            raise ValueError("edgetune: not a trained-weights file (magic/version)")
        if size != n:
            raise ValueError("edgetune: trained-weights file size mismatch (truncated?)")
        chunk = bytearray(256)
        mv = memoryview(chunk)
        c = _crc(memoryview(head)[16:])
        left = n - 32
        while left:
            k = f.readinto(mv[:min(left, 256)])
            if not k:
                raise ValueError("edgetune: trained-weights file size mismatch (truncated?)")
            c = _crc(mv[:k], c)
            left -= k
        chunk = mv = None
        if c != crc:
            raise ValueError("edgetune: trained-weights file CRC mismatch")
        if mcrc != self._crc_field:
            raise ValueError("edgetune: trained-weights file belongs to another model")
        if scrc != _crc(self._scheme_bytes()):
            raise ValueError("edgetune: trained-weights file was saved with a different scheme")
        if flags & ~2 != (1 if self._momentum > 0 else 0):
            raise ValueError("edgetune: trained-weights file momentum flag does not match the model")
        if p != self._params_size or size != 32 + p + (44 if flags & 2 else 0):
            raise ValueError("edgetune: trained-weights params region has the wrong size")
        frame = None
        if flags & 2:  # the sensor-frame trailer, checked before anything changes
            from edgetune_py_frame import from_trailer

            f.seek(32 + p)
            frame = from_trailer(self._tensors[self._input].shape[3], f.read(44))
        f.seek(32)
        self._read_params(f, False)
        f.seek(32)
        self._read_params(f, True)
        self._frame = frame
        self._peak = max(self._peak, self._params_end)

    def _read_params(self, f, live):
        """The params region: checked (live False; read through scratch arrays), or read into
        the state arrays (live True; only after a checking pass)."""
        mom = self._momentum > 0
        scratch = {}

        def get(tc, n, into=None):
            if into is None:
                into = scratch.get((tc, n))
                if into is None:
                    into = scratch[(tc, n)] = zeros(tc, n)
            if n and f.readinto(into) != ITEM_SIZE[tc] * n:
                raise ValueError("edgetune: trained-weights file size mismatch (truncated?)")
            return into

        def pad(k):
            if k % 4:
                f.read(-k % 4)

        for layer, b, ch in self._entries:
            L = self._layers[layer]
            nb = L.oc if b else 0
            per, n_sel = L.per, len(ch)
            if b:
                get("i", L.oc, L.b if live else None)
            if ch:
                cmap = get("h", L.oc)
                pad(2 * L.oc)
                for c in range(L.oc):
                    if cmap[c] != (ch.index(c) if c in ch else -1):
                        raise ValueError("edgetune: trained-weights file: channel map of layer %d differs" % layer)
                dw = L.op == OP_DEPTHWISE_CONV_2D
                for s in range(n_sel):
                    c = ch[s]
                    row = get("b", per, L.w[c] if live and not dw else None)
                    if live and dw:
                        for t in range(per):
                            L.w[t * L.oc + c] = row[t]
                    if not live:
                        for v in row:
                            if v == -128:  # allowed only where the flashed weight is -128 (never updated yet)
                                self._check_minus_128(L, layer, c, row)
                                break
                pad(n_sel * per)
            for s in range(-1, n_sel):
                n, into = (nb, L.res_b) if s < 0 else (per, L.res_w[s])
                r = get("h", n, into if live else None)
                if not live:
                    for v in r:
                        if v < -16384 or v > 16383:
                            raise ValueError("edgetune: trained-weights file: layer %d residual out of range" % layer)
            pad(2 * (nb + n_sel * per))
            if mom:
                for s in range(-1, n_sel):
                    v = get("f", nb, L.mom_b if live else None) if s < 0 else get("f", per, L.mom_w[s] if live else None)
                    if not live:
                        for x in v:  # NaN freezes a parameter, +-inf pins it at +-127
                            if not (x - x == 0.0):
                                raise ValueError("edgetune: trained-weights file: layer %d momentum is not a finite number" % layer)
        if self._rl >= 0:  # the classifier's scales and multipliers (§6.3)
            L = self._layers[self._rl]
            C = L.oc
            qf = get("f", 2 * C)
            qi = get("i", 2 * C)
            if not live:
                for v in qf:
                    if not (v > 0.0 and v <= FLT_MAX):
                        raise ValueError("edgetune: trained-weights file: classifier scales must be positive numbers")
                for c in range(C):
                    if qi[c] < 0 or not -31 <= qi[C + c] <= 30:
                        raise ValueError("edgetune: trained-weights file: classifier multiplier/shift out of range")
            else:
                install_qscale(L, qf, qi)

    def _check_minus_128(self, L, layer, c, row):
        """A -128 in channel c's trained weights is allowed only where the flashed one is -128."""
        buf = self._buf
        off = self._tensors[L.weight].d_off
        for k in range(L.per):
            if row[k] == -128:
                idx = off + (k * L.oc + c if L.op == OP_DEPTHWISE_CONV_2D else c * L.per + k)
                if buf[idx] != 0x80:
                    raise ValueError("edgetune: trained-weights file: layer %d weight outside [-127, 127]" % layer)

    # ------------------------------------------------------------------ forward

    def _fwd_layer(self, L, x, out):
        """One layer on x (array('b')) into out (array('b') of L.n_out); returns out."""
        op = L.op
        lo, hi, ooff = L.act_min, L.act_max, L.out_off
        if op == OP_CONV_2D or op == OP_FULLY_CONNECTED:
            ioff = L.in_off
            xo = _shifted(x, ioff, self._xo)
            rows, b, per, oc = L.w, L.b, L.per, L.oc
            rm, rl, rr = L.rm, L.rl, L.rr
            if op == OP_FULLY_CONNECTED:
                patches = (xo,)
            else:
                patches = self._patches(L, xo)
            o = 0
            for patch in patches:
                for c in range(oc):
                    acc = b[c] if b is not None else 0
                    j = 0
                    for wv in rows[c]:  # iterating the int8 row and indexing the list: fastest
                        acc += patch[j] * wv
                        j += 1
                    v = _mbqm(acc, rm[c], rl[c], rr[c]) + ooff
                    out[o] = lo if v < lo else (hi if v > hi else v)
                    o += 1
            return out
        if op == OP_DEPTHWISE_CONV_2D:
            ioff = L.in_off
            xo = _shifted(x, ioff, self._xo)
            w, b, oc, dm = L.w, L.b, L.oc, L.dm
            rm, rl, rr = L.rm, L.rl, L.rr
            tpo, tp = L.tpo, L.tp
            crng = range(oc)
            cin = [c // dm for c in crng]
            o = 0
            for p in range(len(tpo) - 1):
                acc = list(b) if b is not None else [0] * oc
                for q in range(tpo[p], tpo[p + 1], 2):
                    wt = tp[q] * oc
                    xb = tp[q + 1]
                    if dm == 1:
                        for c in crng:
                            acc[c] += xo[xb + c] * w[wt + c]
                    else:
                        for c in crng:
                            acc[c] += xo[xb + cin[c]] * w[wt + c]
                for c in crng:
                    v = _mbqm(acc[c], rm[c], rl[c], rr[c]) + ooff
                    out[o] = lo if v < lo else (hi if v > hi else v)
                    o += 1
            return out
        if op == OP_MAX_POOL_2D or op == OP_AVERAGE_POOL_2D:
            crng = range(L.oc)
            o = 0
            is_max = op == OP_MAX_POOL_2D
            tpo, tp = L.tpo, L.tp
            for p in range(len(tpo) - 1):
                q0, q1 = tpo[p] + 1, tpo[p + 1]
                n = (q1 - q0 + 1) >> 1
                half = n >> 1
                for c in crng:
                    if is_max:
                        v = -1000
                        for q in range(q0, q1, 2):
                            if x[tp[q] + c] > v:
                                v = x[tp[q] + c]
                    else:
                        acc = 0
                        for q in range(q0, q1, 2):
                            acc += x[tp[q] + c]
                        v = (acc + half) // n if acc > 0 else -((half - acc) // n)
                    out[o] = lo if v < lo else (hi if v > hi else v)
                    o += 1
            return out
        # MEAN over H*W
        c_n = L.ic
        n_pos = L.ih * L.iw
        rm, rl, rr = L.rm[0], L.rl[0], L.rr[0]
        for c in range(c_n):
            total = 0
            for k in range(c, n_pos * c_n, c_n):
                total += x[k]
            v = _mbqm(total + L.in_off * n_pos, rm, rl, rr) + ooff
            out[c] = lo if v < lo else (hi if v > hi else v)
        return out

    def _patches(self, L, xo):
        """Per output position the (KH*KW*C_in) input patch of xo, zeros in the padding."""
        per, cin = L.per, L.ic
        tpo, tp = L.tpo, L.tp
        full = 2 * L.kh * L.kw
        patch = self._patch  # one buffer, refilled per position (zeros in the padding)
        for p in range(len(tpo) - 1):
            if tpo[p + 1] - tpo[p] != full:
                for k in range(per):
                    patch[k] = 0
            for q in range(tpo[p], tpo[p + 1], 2):
                pb = tp[q] * cin
                xb = tp[q + 1]
                patch[pb:pb + cin] = xo[xb:xb + cin]
            yield patch

    def _forward(self, x, keep):
        """The activations (a list of arrays that the next forward pass overwrites: the input,
        then each layer's output), or the output alone."""
        acts = self._acts
        acts[0] = x
        for i, L in enumerate(self._layers):
            x = self._fwd_layer(L, x, acts[i + 1])
        p = self._inference_arena
        if self._first >= 0 and keep:
            p = self._arena
        if p > self._peak:
            self._peak = p
        return acts if keep else x

    def _x(self, x):
        if isinstance(x, str):
            raise TypeError("edgetune: an input must be bytes-like int8 data, not a str")
        xb = _int8_copy(x)
        if len(xb) != self._n_in:
            raise ValueError("edgetune: input has %d bytes, the model expects %d" % (len(xb), self._n_in))
        return xb

    def _label(self, label):
        if isinstance(label, (str, float)):
            raise TypeError("edgetune: a label must be an int")
        label = int(label)
        if label < 0 or label >= self._n_out:
            raise ValueError("edgetune: label %d out of range 0..%d" % (label, self._n_out - 1))
        return label

    def predict(self, x):
        """int8 logits as bytes."""
        return bytes(self._forward(self._x(x), False))

    def predict_class(self, x):
        y = self._forward(self._x(x), False)
        best = 0
        for i in range(1, len(y)):
            if y[i] > y[best]:
                best = i
        return best

    def evaluate(self, xs, labels):
        """(mean loss, accuracy) over the samples (docs/training.md §5)."""
        xs = list(xs)
        labels = list(labels)
        n = len(xs)
        if n == 0 or n != len(labels):
            raise ValueError("edgetune: evaluate needs as many labels as inputs (at least one)")
        for x in xs:  # every input and label checked before any is used; each converted when used
            if len(x) != self._n_in:
                self._x(x)
        labels = [self._label(lb) for lb in labels]
        t_out = self._tensors[self._output]
        total = 0.0
        correct = 0
        F = F32
        for k in range(n):
            y = self._forward(self._x(xs[k]), False)
            loss, _ = _softmax_xent(y, t_out.scale, t_out.zp, labels[k], False)
            if k == 0:
                total = loss
            else:
                F[0] = total + loss
                total = F[0]
            best = 0
            for c in range(1, len(y)):
                if y[c] > y[best]:
                    best = c
            correct += 1 if best == labels[k] else 0
        F[0] = total / float(n)
        loss = F[0]
        F[0] = float(correct) / float(n)
        return (loss, F[0])

    def refit(self, xs, labels, l2=None, alpha=None):
        """Closed-form classifier refit (docs/training.md §9) -> dict; edgetune_py_refit.py."""
        from edgetune_py_refit import refit

        return refit(self, xs, labels, l2, alpha)

    def refit_stats(self, xs, labels):
        """The refit's integer statistics under the current parameters, packed (docs/training.md §8)."""
        from edgetune_py_refit import refit_stats

        return refit_stats(self, xs, labels)

    # ------------------------------------------------------------------ training

    def train(self, x, label, lr=0.01, qas=True):
        """One SGD step on one sample (docs/training.md §2-§4); returns the float32 loss. With
        k labels (bytes-like/list/tuple) on a batch=True model: one mini-batch step (§5)."""
        if type(label) is not int and isinstance(label, _SEQ):
            from edgetune_py_batch import train_batch  # only loaded when used

            return train_batch(self, x, label, lr, qas)
        xb = self._x(x)
        label = self._label(label)
        lr = f32(to_float(lr))
        if not (lr > 0.0 and lr <= 1.0):  # as the C module's lr_of (docs/training.md §8)
            raise ValueError("edgetune: lr must be a finite number in (0, 1], e.g. 0.01")
        qas = bool(qas)
        F = F32
        acts = self._forward(xb, True)
        t_out = self._tensors[self._output]
        first = self._first
        loss, g = _softmax_xent(acts[-1], t_out.scale, t_out.zp, label, first >= 0)
        if first < 0:
            return loss
        gbuf = self._grad_buffers()
        big = 0.0
        for v in g:
            a = -v if v < 0 else v
            if a > big:
                big = a
        if big == 0.0:
            return loss
        F[0] = big / 32767.0
        s_g = F[0]
        gq = []
        for v in g:
            F[0] = v / s_g
            gq.append(round_sat(F[0], 32767))
        layers = self._layers
        nl = len(layers)
        for i in range(nl - 1, first - 1, -1):
            L = layers[i]
            if i < nl - 1:
                y = acts[i + 1]
                lo, hi = L.act_min, L.act_max
                for j in range(L.n_out):
                    v = y[j]
                    if v <= lo or v >= hi:
                        gq[j] = 0
            stop = False
            if i > first:
                acc = gbuf[1] if gq is gbuf[0] else gbuf[0]
                s_acc = self._input_grad(L, gq, s_g, acts[i], acc)
                m = 0
                for j in range(L.n_in):
                    v = acc[j]
                    if v > m:
                        m = v
                    elif -v > m:
                        m = -v
                if m == 0:
                    stop = True
                else:
                    g_next = acc  # in place, as the C module does
                    for j in range(L.n_in):
                        v = acc[j]
                        if v:
                            g_next[j] = _rdiv(v * 32767, m)
                    F[0] = float(m)  # (float)M rounds first: M may exceed 2^24
                    F[0] = s_acc * F[0]
                    F[0] = F[0] / 32767.0
                    s_next = F[0]
            e = self._entry.get(i)
            if e is not None:
                self._update(L, e, gq, s_g, acts[i], lr, qas)
            if stop or i == first:
                break
            gq, s_g = g_next, s_next
        return loss

    def _input_grad(self, L, g, s_g, x, acc):
        """§4b: the input gradient into acc[:L.n_in] (an int32 buffer); returns s_acc."""
        F = F32
        op = L.op
        for j in range(L.n_in):
            acc[j] = 0
        oc = L.oc
        if op in _WEIGHT_OPS:
            r_c = L.r_c
            h = self._h
            c = 0
            for j in range(L.n_out):
                v = g[j]
                h[j] = 0
                if v:
                    F[0] = float(v) * r_c[c]
                    h[j] = round_sat(F[0], 32767)
                c += 1
                if c == oc:
                    c = 0
            F[0] = s_g * L.s_wmax
            s_acc = F[0]
            if op == OP_FULLY_CONNECTED:
                rows = L.w
                rng = range(L.per)
                for c in range(oc):
                    hv = h[c]
                    if hv:
                        row = rows[c]
                        for k in rng:
                            acc[k] += row[k] * hv
                return s_acc
            if op == OP_CONV_2D:
                rows, cin = L.w, L.ic
                crng = range(cin)
                tpo, tp = L.tpo, L.tp
                p = 0
                for pos in range(len(tpo) - 1):
                    q0, q1 = tpo[pos], tpo[pos + 1]
                    for c in range(oc):
                        hv = h[p + c]
                        if hv:
                            row = rows[c]
                            for q in range(q0, q1, 2):
                                wb = tp[q] * cin
                                xb = tp[q + 1]
                                for k in crng:
                                    acc[xb + k] += row[wb + k] * hv
                    p += oc
                return s_acc
            w, dm = L.w, L.dm
            tpo, tp = L.tpo, L.tp
            p = 0
            for pos in range(len(tpo) - 1):
                for q in range(tpo[pos], tpo[pos + 1], 2):
                    wt = tp[q] * oc
                    xb = tp[q + 1]
                    for c in range(oc):
                        hv = h[p + c]
                        if hv:
                            acc[xb + c // dm] += w[wt + c] * hv
                p += oc
            return s_acc
        if op == OP_MEAN:
            n_pos = L.ih * L.iw
            j = 0
            for k in range(n_pos):
                for c in range(oc):
                    acc[j] = g[c]
                    j += 1
            F[0] = float(n_pos)
            F[0] = s_g / F[0]
            return F[0]
        p = 0
        tpo, tp = L.tpo, L.tp
        if op == OP_AVERAGE_POOL_2D:
            for pos in range(len(tpo) - 1):
                q0, q1 = tpo[pos] + 1, tpo[pos + 1]
                R = _rdiv(1024, (q1 - q0 + 1) >> 1)
                for c in range(oc):
                    gv = g[p + c]
                    if gv:
                        gv *= R
                        for q in range(q0, q1, 2):
                            acc[tp[q] + c] += gv
                p += oc
            F[0] = s_g / 1024.0
            return F[0]
        # MAX_POOL_2D: the first in-window position holding the maximum of the saved input
        for pos in range(len(tpo) - 1):
            q0, q1 = tpo[pos] + 1, tpo[pos + 1]
            for c in range(oc):
                gv = g[p + c]
                if gv:
                    best = -1000
                    a = 0
                    for q in range(q0, q1, 2):
                        xb = tp[q]
                        v = x[xb + c]
                        if v > best:
                            best = v
                            a = xb + c
                    acc[a] += gv
            p += oc
        return s_g

    def _update(self, L, e, g, s_g, x, lr, qas):
        """§4d-g for one layer with the masked output gradient g."""
        F = F32
        oc = L.oc
        F[0] = -lr
        F[0] = F[0] * s_g
        neg = F[0]
        beta = self._momentum
        if e[1]:
            G = [0] * oc
            c = 0
            for j in range(L.n_out):
                G[c] += g[j]
                c += 1
                if c == oc:
                    c = 0
            s_b = L.s_b
            b = L.b
            res = L.res_b
            mom = L.mom_b
            acc = L.acc_b if self._acc else None
            for c in range(oc):
                F[0] = (neg / s_b[c]) if qas else (neg * s_b[c])
                f = F[0]
                F[0] = float(G[c])
                F[0] = f * F[0]
                if acc is not None:
                    F[0] = acc[c] + F[0]
                    acc[c] = F[0]
                    continue
                F[0] = F[0] * 32768.0
                n = commit(round_sat(F[0], LIM30), beta, mom, res, c)
                if n:
                    nb = b[c] + n
                    b[c] = I32_MIN if nb < I32_MIN else (I32_MAX if nb > I32_MAX else nb)
        ch = e[2]
        if not ch:
            return
        t_in = self._tensors[L.inp]
        zp = t_in.zp
        F[0] = neg * t_in.scale
        base = F[0]
        xc = _shifted(x, -zp, self._xo)  # the forward pass is over: its buffer is free
        op, per = L.op, L.per
        A = self._weight_grad(L, ch, g, xc)
        s_w = L.s_w
        for s in range(len(ch)):
            c = ch[s]
            F[0] = (base / s_w[c]) if qas else (base * s_w[c])
            f = F[0]
            As = A[s]
            res = L.res_w[s]
            mom = L.mom_w[s] if beta > 0 else None
            if op == OP_DEPTHWISE_CONV_2D:
                w, wstep, wb = L.w, oc, c
            else:
                w, wstep, wb = L.w[c], 1, 0
            if self._acc:
                acc = L.acc_w[s]
                for k in range(per):
                    F[0] = float(As[k])
                    F[0] = f * F[0]
                    F[0] = acc[k] + F[0]
                    acc[k] = F[0]
                continue
            for k in range(per):
                av = As[k]
                if av:
                    F[0] = float(av)
                    F[0] = f * F[0]
                    F[0] = F[0] * 32768.0
                    d = round_sat(F[0], LIM30)
                else:
                    d = 0
                n = commit(d, beta, mom, res, k)
                idx = wb + k * wstep
                nw = w[idx] + n  # clamped even when n == 0: a flashed -128 becomes -127
                w[idx] = -127 if nw < -127 else (127 if nw > 127 else nw)

    def _weight_grad(self, L, ch, g, xc):
        """§4e: A[slot][k] (ints) for the selected channels."""
        op, oc, per = L.op, L.oc, L.per
        if op == OP_FULLY_CONNECTED:
            out = []
            for c in ch:
                gv = g[c]
                out.append([gv * xc[k] for k in range(per)] if gv else [0] * per)
            return out
        A = [[0] * per for _ in ch]
        nsel = len(ch)
        if op == OP_CONV_2D:
            cin = L.ic
            crng = range(cin)
            tpo, tp = L.tpo, L.tp
            p = 0
            for pos in range(len(tpo) - 1):
                q0, q1 = tpo[pos], tpo[pos + 1]
                for s in range(nsel):
                    gv = g[p + ch[s]]
                    if gv:
                        As = A[s]
                        for q in range(q0, q1, 2):
                            wb = tp[q] * cin
                            xb = tp[q + 1]
                            for k in crng:
                                As[wb + k] += gv * xc[xb + k]
                p += oc
            return A
        dm = L.dm
        tpo, tp = L.tpo, L.tp
        p = 0
        for pos in range(len(tpo) - 1):
            q0, q1 = tpo[pos], tpo[pos + 1]
            for s in range(nsel):
                c = ch[s]
                gv = g[p + c]
                if gv:
                    As = A[s]
                    ci = c // dm
                    for q in range(q0, q1, 2):
                        As[tp[q]] += gv * xc[tp[q + 1] + ci]
            p += oc
        return A

    # ------------------------------------------------------------------ info

    def quantize(self, samples, scale=None, zero_point=None):
        """Raw samples -> int8 model input as bytes (docs/data.md §2), as et_quantize_f32:
        value i of channel c = i % C (C the input's last dimension), in float32:
        inv = 1/scale[c]; v = x * inv; v = v + zero_point[c]; round half to even; clamp to int8.
        samples: a list/tuple of numbers or a float32 array (any other non-bytes sequence of
        numbers is accepted too, the C module refuses it); scale/zero_point: C numbers or None
        (the input tensor's own). Wrong lengths, a bad scale or zero point, a NaN sample ->
        ValueError; bytes or a non-number -> TypeError, like the C module."""
        t = self._tensors[self._input]
        C = t.shape[3]
        if isinstance(samples, (bytes, bytearray, str)):
            raise TypeError("edgetune: samples must be a list/tuple of numbers or a float32 ('f') buffer")
        n = len(samples)
        if n % C:
            raise ValueError("edgetune: %d samples are not a multiple of the input's %d channels" % (n, C))
        sc = self._quant_param(scale, "scale", C, t.scale)
        zp = self._quant_param(zero_point, "zero_point", C, t.zp)
        F = F32
        inv = []
        for c in range(C):
            s = sc[c]
            if not (s > 0.0) or s - s != 0.0:
                raise ValueError("edgetune: scale of channel %d must be positive and finite with a finite 1/scale" % c)
            F[0] = 1.0 / s
            i = F[0]
            if i - i != 0.0:
                raise ValueError("edgetune: scale of channel %d must be positive and finite with a finite 1/scale" % c)
            inv.append(i)
            if zp[c] - zp[c] != 0.0:
                raise ValueError("edgetune: zero_point of channel %d must be finite" % c)
        if self._frame is not None:  # the sensor frame first (docs/training.md §9)
            from edgetune_py_frame import apply

            samples = apply(self._frame, samples, C)
        out = bytearray(n)
        c = 0
        for i in range(n):
            if len(samples) != n:  # a __float__ (of a scale or a sample) changed the list
                raise ValueError("edgetune: a list argument changed length while its items were converted")
            F[0] = samples[i]
            x = F[0]
            if x != x:
                raise ValueError("edgetune: sample %d is NaN" % i)
            F[0] = x * inv[c]
            F[0] = F[0] + zp[c]
            v = F[0]
            if v >= 127.0:
                q = 127
            elif v <= -128.0:
                q = -128
            else:
                q = int(v)  # toward zero; v - q is exact (|v| < 128)
                f = v - q
                if f > 0.5 or (f == 0.5 and q & 1):
                    q += 1
                elif f < -0.5 or (f == -0.5 and q & 1):
                    q -= 1
            out[i] = q & 0xFF
            c += 1
            if c == C:
                c = 0
        return bytes(out)

    def calibrate(self, xs, labels, stats, scale=None, zero_point=None, accel=(0, 1, 2), gyro=(3, 4, 5)):
        """Sensor-frame fit (docs/training.md §9); edgetune_py_frame, loaded when used."""
        from edgetune_py_frame import calibrate

        return calibrate(self, xs, labels, stats, scale, zero_point, accel, gyro)

    def frame(self, *args, **kw):
        """frame() -> None or dict; frame(None) clears; frame(R, accel=, gyro=) sets (§9)."""
        from edgetune_py_frame import frame

        return frame(self, *args, **kw)

    @staticmethod
    def _quant_param(v, what, C, dflt):
        """C float32 values of a scale/zero_point argument (None: the input tensor's own)."""
        if v is None:
            return [f32(dflt)] * C
        if isinstance(v, (bytes, bytearray, str)):
            raise TypeError("edgetune: %s must be a list/tuple of numbers or a float32 ('f') buffer" % what)
        if len(v) != C:
            raise ValueError("edgetune: %s has %d values, the input has %d channels" % (what, len(v), C))
        return [f32(x) for x in _seq_values(v, C)]

    def info(self):
        ts = self._tensors
        layers = []
        for L in self._layers:
            d = {"op": _OP_NAMES[L.op], "input_shape": ts[L.inp].shape, "output_shape": ts[L.out].shape,
                 "activation": _ACT_NAMES[L.act]}
            if L.weight != NONE:
                d["weight_shape"] = ts[L.weight].shape
            d["bias"] = L.bias != NONE
            layers.append(d)
        t_in, t_out = ts[self._input], ts[self._output]
        return {
            "layers": layers,
            "input_shape": t_in.shape,
            "output_shape": t_out.shape,
            "input_scale": t_in.scale,
            "input_zero_point": t_in.zp,
            "output_scale": t_out.scale,
            "output_zero_point": t_out.zp,
            "arena": self._arena,
            "inference_arena": self._inference_arena,
            "peak": self._peak,
            "trainable": self._trainable,
            "scheme": [(layer, b, len(ch)) for layer, b, ch in self._entries],
            "batch": self._batch,
            "refit_scratch": None if self._rl < 0 else refit_scratch(self._layers[self._rl]),
            "model_bytes": self._len,
        }

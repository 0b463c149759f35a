"""The refit statistics, quantized on the board (docs/fleet-refit.md §7): bit for bit the numpy
twin host/edgetune/fleet/refit_quant.py. Pure MicroPython integer arithmetic (struct only).

    wire = quantize(m.refit_stats(xs, labels), centre, bits)

`stats` is m.refit_stats' int32 upload (cnt C, S1 K, G's lower triangle row by row, B C*K);
`centre` the server's K integers m. The statistics move to v = u - m exactly, every row (G's
lower-triangle rows, then B's rows) gets the smallest exponent e with |v| < 2^(bits-1+e), each
value becomes (v + 2^(e-1)) >> e saturated to `bits` signed bits, and the wire is the counts
(uint16), the exponents (uint8) and the values packed least significant bit first.
"""

import struct


def quantize(stats, centre, bits):
    K = len(centre)
    T = K * (K + 1) // 2
    if bits < 4 or bits > 16:
        raise ValueError("bits must be 4..16")
    if len(stats) % 4:
        raise ValueError("refit statistics are int32 values")
    L = len(stats) // 4
    C = (L - K - T) // (K + 1)
    if C < 1 or C + K + T + C * K != L:
        raise ValueError("refit statistics of %d values do not fit a centre of %d" % (L, K))
    v = struct.unpack("<%di" % L, stats)
    cnt = v[:C]
    s1 = v[C:C + K]
    n = 0
    for c in cnt:
        if c < 0 or c > 65535:
            raise ValueError("class counts must be 0..65535")
        n += c
    m = centre
    out = bytearray(struct.pack("<%dH" % C, *cnt))
    hi = 1 << (bits - 1)
    mask = (1 << bits) - 1
    rows = []
    g0 = C + K
    for j in range(K):
        sj, mj = s1[j], m[j]
        base = g0 + j * (j + 1) // 2
        rows.append([v[base + k] - sj * m[k] - mj * s1[k] + n * mj * m[k] for k in range(j + 1)])
    b0 = g0 + T
    for c in range(C):
        cc = cnt[c]
        rows.append([v[b0 + c * K + k] - cc * m[k] for k in range(K)])
    qrows = []
    for row in rows:
        mx = 0
        for x in row:
            a = -x if x < 0 else x
            if a > mx:
                mx = a
        e = 0
        while (mx >> e) >= hi:
            e += 1
        out.append(e)
        qrows.append((row, e))
    acc = 0
    nb = 0
    for row, e in qrows:
        half = (1 << (e - 1)) if e else 0
        for x in row:
            q = (x + half) >> e
            if q > hi - 1:
                q = hi - 1
            acc |= (q & mask) << nb
            nb += bits
            while nb >= 8:
                out.append(acc & 255)
                acc >>= 8
                nb -= 8
    if nb:
        out.append(acc & 255)
    return bytes(out)

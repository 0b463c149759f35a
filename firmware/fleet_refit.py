"""A board's answer to a fleet refit query (driven by host/edgetune/fleet/board.py through files
in the cwd; docs/fleet-refit.md §1, §6).

Reads model.etm, global.bin (the global state the server sent) and the board's windows.bin /
labels.bin (int8 windows of the model's input size, one label byte each); writes stats.bin, the
refit's integer statistics of every window under the global state (m.refit_stats: int32 cnt, S1,
G lower triangle, B, little-endian), and prints `stats <bytes>`. With quant.bin (one byte `bits`,
then the server's integer centre as int16 little-endian) it writes the quantized upload of
firmware/refit_quant.py instead.
"""

import struct

try:
    import edgetune
except ImportError:  # stock firmware: the pure-Python fallback
    import edgetune_py as edgetune


def main():
    with open("model.etm", "rb") as f:
        m = edgetune.Model(f.read())
    with open("global.bin", "rb") as f:
        m.load_state(f.read())
    with open("labels.bin", "rb") as f:
        labels = f.read()
    with open("windows.bin", "rb") as f:
        raw = f.read()
    n_in = 1
    for d in m.info()["input_shape"]:
        n_in *= d
    if len(raw) != n_in * len(labels):
        raise ValueError("windows.bin has %d bytes, expected %d windows of %d" % (len(raw), len(labels), n_in))
    v = memoryview(raw)
    st = m.refit_stats([v[i * n_in:(i + 1) * n_in] for i in range(len(labels))], labels)
    try:
        with open("quant.bin", "rb") as f:
            q = f.read()
    except OSError:
        q = None
    if q is not None:
        from refit_quant import quantize

        st = quantize(st, struct.unpack("<%dh" % ((len(q) - 1) // 2), q[1:]), q[0])
    with open("stats.bin", "wb") as f:
        f.write(st)
    print("stats", len(st))


main()

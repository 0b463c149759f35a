"""The training core behind ONE import, the first that is there: the C module `edgetune` built
into the firmware (IMPL "c"), the same C code as a native module /lib/edgetune.mpy that
`edgetune install` put on a stock board (IMPL "mpy"; a built-in module has no __file__), else
a pure-Python implementation with the same API (`edgetune_py`, bit-identical, slower) for
stock MicroPython or CircuitPython (IMPL "py"). app.boot() logs IMPL in its boot event.
Nothing else in firmware/ imports the core directly.

Model(buf, scheme=None, momentum=0.0) with predict, predict_class, train(x, label, lr=, qas=),
evaluate(xs, labels), save(path), load(path), reset(), info() -- docs/training.md.
"""

try:
    import edgetune
    from edgetune import Model

    IMPL = "mpy" if hasattr(edgetune, "__file__") else "c"
    del edgetune
except ImportError:
    from edgetune_py import Model  # noqa: F401  (pure-Python fallback: firmware/edgetune_py.py)

    IMPL = "py"


def metadata(buf):
    """The metadata JSON object embedded in a .etm (docs/etm-format.md header offsets 32/36)."""
    import json
    import struct

    off, n = struct.unpack_from("<II", buf, 32)
    if off == 0 or n == 0:
        return {}
    return json.loads(bytes(memoryview(buf)[off:off + n]))

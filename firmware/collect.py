"""Labelled collection: sensor samples -> int8 model-input windows in a RAM ring buffer.

A window is `window` consecutive samples of the 6 channels, quantized straight from raw units
to the model's int8 input with the per-channel `raw_input_quant` of the .etm metadata
(docs/data.md section 2: q = clamp(round(x / scale[c] + zero_point[c]), -128, 127), the
normalization folded in), stored NHWC (sample-major) like the model's (1, 1, T, 6) input.
Windows are cut every `step` samples inside one label run (a label change of a replay starts
over), as the host's make_windows cuts them.
"""

import hal


class Quantizer:
    """Raw sample (6 floats) -> 6 int8 model-input values (as unsigned bytes 0..255).

    With `model` (an edgetune Model, C or edgetune_py) this is `model.quantize`: one float32
    recipe (docs/training.md §8), so a sample gives the same bytes on the unix port, a
    single-precision board and the host's quantize_input. Without it, Python's own float
    arithmetic, which can differ by one step at an exact tie."""

    def __init__(self, scale, zero_point, model=None):
        self.scale = list(scale)
        self.inv = [1.0 / s for s in scale]
        self.zp = list(zero_point)
        self.m = model if model is not None and hasattr(model, "quantize") else None

    def into(self, sample, buf, off):
        if self.m is not None:
            n = len(self.zp)  # the model's channels: a 6-axis sample may feed fewer
            buf[off:off + n] = self.m.quantize(sample if len(sample) == n else sample[:n], self.scale, self.zp)
            return
        inv, zp = self.inv, self.zp
        for c in range(len(inv)):
            q = round(sample[c] * inv[c] + zp[c])
            if q > 127:
                q = 127
            elif q < -128:
                q = -128
            buf[off + c] = q & 0xFF


class Ring:
    """Fixed-capacity store of int8 windows with labels; the oldest is overwritten when full."""

    def __init__(self, capacity, nbytes):
        self.capacity, self.nbytes = capacity, nbytes
        self.data = bytearray(capacity * nbytes)
        self.labels = bytearray(capacity)
        self.held = bytearray(capacity)  # 1 = held back for evaluation
        self.start = 0
        self.count = 0

    def add(self, window, label, held=False):
        slot = (self.start + self.count) % self.capacity
        if self.count == self.capacity:
            self.start = (self.start + 1) % self.capacity
        else:
            self.count += 1
        n = self.nbytes
        self.data[slot * n:(slot + 1) * n] = window
        self.labels[slot] = label
        self.held[slot] = 1 if held else 0
        return slot

    def clear(self):
        self.start = self.count = 0

    def window(self, i):
        """i-th oldest window as a memoryview (no copy)."""
        slot = (self.start + i) % self.capacity
        return memoryview(self.data)[slot * self.nbytes:(slot + 1) * self.nbytes]

    def split(self):
        """(train, held) lists of (window memoryview, label), oldest first."""
        train, held = [], []
        for i in range(self.count):
            slot = (self.start + i) % self.capacity
            (held if self.held[slot] else train).append((self.window(i), self.labels[slot]))
        return train, held

    def per_label(self):
        counts = {}
        for i in range(self.count):
            k = self.labels[(self.start + i) % self.capacity]
            counts[k] = counts.get(k, 0) + 1
        return counts


class Windower:
    """Cuts a sample stream into windows of `window` samples every `step` samples."""

    def __init__(self, quant, window, step, channels=6):
        self.q, self.window, self.step, self.ch = quant, window, step, channels
        self.buf = bytearray(window * channels)
        self.filled = 0

    def reset(self):
        self.filled = 0

    def push(self, sample):
        """Add one sample; returns the window (bytes) when one completes, else None."""
        ch, w = self.ch, self.window
        if self.filled == w:
            # keep the last window - step samples
            keep = (w - self.step) * ch
            self.buf[0:keep] = self.buf[self.step * ch:w * ch]
            self.filled = w - self.step
        self.q.into(sample, self.buf, self.filled * ch)
        self.filled += 1
        if self.filled == w:
            return bytes(self.buf)
        return None


class Recorder:
    """Appends raw samples to a session CSV the host reads with data.load_session."""

    def __init__(self, path, class_names):
        self.names = class_names
        try:
            import os

            os.stat(path)
            self.f = open(path, "a")
        except OSError:
            self.f = open(path, "w")
            self.f.write("ax,ay,az,gx,gy,gz,label\n")

    def write(self, sample, label):
        self.f.write(",".join("%.6g" % v for v in sample) + "," + self.names[label] + "\n")

    def close(self):
        self.f.close()


def windows(source, windower, label, n, rate_hz, recorder=None):
    """Yield n labelled windows of class `label` from `source`.

    A live source is read every 1000/rate_hz ms; a replay source is cued to the class and read
    as fast as possible, and a label change inside it restarts the window.
    """
    source.cue(label)
    windower.reset()
    period = 1000 // rate_hz
    due = hal.ticks_ms()
    got = 0
    while got < n:
        if source.realtime:
            wait = hal.ticks_diff(due, hal.ticks_ms())
            if wait > 0:
                hal.sleep_ms(wait)
            due = hal.ticks_add(due, period)
        s = source.read()
        if s is None:
            raise ValueError("the source ended before %d windows of class %d" % (n, label))
        if source.label is not None and source.label != label:
            source.cue(label)
            windower.reset()
            continue
        if recorder:
            recorder.write(s, label)
        w = windower.push(s)
        if w is not None:
            got += 1
            yield w

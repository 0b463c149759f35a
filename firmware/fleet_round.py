"""One fleet round on a board (driven by host/edgetune/fleet/board.py through files in the cwd).

Reads model.etm, global.bin (the global state), round.json (layout, lr, clip, k, sigma, seed,
number of windows and the visiting order), windows.bin / labels.bin (the board's int8 windows,
read one at a time) and fleet.mem (error feedback + PRNG, if a round ran before); writes
wire.bin (what the board sends) and fleet.mem, and prints `loss <mean>`.
"""

import json

import fleet

try:
    import edgetune
except ImportError:  # stock firmware: the pure-Python fallback
    import edgetune_py as edgetune


def main():
    with open("round.json") as f:
        cfg = json.load(f)
    with open("model.etm", "rb") as f:
        m = edgetune.Model(f.read())
    with open("global.bin", "rb") as f:
        g = f.read()
    m.load_state(g)
    n_in = cfg["n_in"]
    with open("labels.bin", "rb") as f:
        labels = f.read()
    x = bytearray(n_in)
    total = 0.0
    with open("windows.bin", "rb") as f:
        for i in cfg["order"]:
            f.seek(i * n_in)
            f.readinto(x)
            total += m.train(x, labels[i], cfg["lr"], True)
    lay = fleet.Layout(cfg["segs"], cfg["scales"])
    c = fleet.Compressor(lay.size, cfg["clip"], cfg["k"], cfg["sigma"], cfg["seed"])
    try:
        with open("fleet.mem", "rb") as f:
            c.restore(f.read())
    except OSError:
        pass
    wire = c.compress(fleet.delta(lay, m.state(), g))
    with open("wire.bin", "wb") as f:
        f.write(wire)
    with open("fleet.mem", "wb") as f:
        f.write(c.save())
    print("loss", total / max(1, len(cfg["order"])))


main()

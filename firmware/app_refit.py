"""app.refit(): the closed-form classifier refit of the collected windows (docs/training.md §9).

Its own module, imported by app.refit() when used: the app's bytecode stays as small as before
for the ring buffer that boot() sizes from the free heap.
"""

import hal

import app
import log


def refit(s, l2, alpha):
    data, held = s.ring.split()
    if not data:
        raise RuntimeError("nothing collected: app.collect(label, n) first")
    t0 = hal.ticks_ms()
    r = s.model.refit([w for w, _ in data], [k for _, k in data], l2=l2, alpha=alpha)
    log.emit("refit", (("l2", r["l2"]), ("alpha", r["alpha"]), ("cv_acc", r["cv_accuracy"]), ("n", r["n"]),
                       ("scratch", r["scratch"]), ("elapsed_ms", hal.ticks_diff(hal.ticks_ms(), t0)))
             + app._mem(True))
    if held:
        app.evaluate()
    return r

"""Atomic save and boot-time restore of the trained weights.

The core writes the trained-weights file itself as PATH.tmp and renames it over PATH
(docs/training.md section 7), so a power cut leaves either the old or the new file. restore()
validates through Model.load, which checks magic, sizes, CRCs and that the file belongs to this
model and scheme before it touches anything: a corrupted or foreign file is set aside as
PATH.bad with a warning, and the flashed weights stay in use.
"""

import gc
import os

import log


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def save(model, path):
    """Write the trained weights atomically; returns the file size."""
    model.save(path)
    return os.stat(path)[6]


def restore(model, path):
    """Load saved weights if there are any. True if restored; False (flashed weights) if the
    file is missing or unusable (with a warning)."""
    if _exists(path + ".tmp"):  # an interrupted save: the old file (if any) is still whole
        os.remove(path + ".tmp")
    if not _exists(path):
        return False
    try:
        gc.collect()  # load() reads the whole file into one heap block
        model.load(path)
        return True
    except MemoryError:
        # The file may be fine; the heap is too fragmented/small right now. Keep it for a later
        # boot (load() changed nothing), run on the flashed weights.
        log.warn("not enough heap to load %s now; using the flashed weights" % path)
        return False
    except (ValueError, OSError) as e:
        model.reset()
        try:
            if _exists(path + ".bad"):
                os.remove(path + ".bad")
            os.rename(path, path + ".bad")
        except OSError:
            pass
        log.warn("ignored saved weights %s (%s); using the flashed weights" % (path, e))
        return False


def forget(model, path):
    """Delete the saved weights and go back to the flashed ones."""
    if _exists(path):
        os.remove(path)
    model.reset()

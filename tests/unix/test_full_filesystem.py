"""A save on a full filesystem, on the real unix port (docs/reliability.md).

The power-cut test stops the process; this one lets the filesystem refuse a write (ENOSPC on a
small RAM LittleFS, the file system of the boards) and the program go on. For the C module and
the pure-Python fallback: `m.save` raises OSError, the old weights file is untouched and still
loads, no `.tmp` is left, no open file is left behind for the garbage collector (a LittleFS
file finalised after its name was replaced hangs the next file operation), and once space is
freed the next save and load work.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.relhelp import REPO, reference_etm, run_script

SCRIPT = r'''
import gc, os, vfs, edgetune, edgetune_py

class RAMBlockDev:
    def __init__(self, blocks):
        self.data = bytearray(blocks * 256)
    def readblocks(self, n, buf, off=0):
        a = n * 256 + off
        buf[:] = memoryview(self.data)[a:a + len(buf)]
    def writeblocks(self, n, buf, off=0):
        a = n * 256 + off
        self.data[a:a + len(buf)] = buf
    def ioctl(self, op, arg):
        return {{4: len(self.data) // 256, 5: 256, 6: 0}}.get(op)

buf = open({etm!r}, 'rb').read()
x = open({x!r}, 'rb').read()
for tag, mod in (('C', edgetune), ('P', edgetune_py)):
    dev = RAMBlockDev({blocks})
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), '/fs')
    m = mod.Model(buf)
    m.train(x, 0, lr=0.05)
    m.save('/fs/w')
    with open('/fs/w', 'rb') as f:
        old = f.read()
    n = 0
    try:  # take every free block, in whole files (a file whose write failed keeps nothing)
        while True:
            with open('/fs/fill%d' % n, 'wb') as f:
                n += 1
                f.write(bytes(512))
    except OSError:
        pass
    m.train(x, 1, lr=0.05)
    try:
        m.save('/fs/w')
        print(tag, 'SAVED ON A FULL FS')
    except OSError as e:
        print(tag, 'FULL', e.errno == 28)
    gc.collect()  # finalises anything the failed save left open
    print(tag, 'TMP', [f for f in os.listdir('/fs') if not f.startswith('fill')])
    with open('/fs/w', 'rb') as f:
        print(tag, 'OLD KEPT', f.read() == old)
    m2 = mod.Model(buf)
    m2.load('/fs/w')
    for i in range(n):
        os.remove('/fs/fill%d' % i)
    m.save('/fs/w')
    m2.load('/fs/w')
    with open('/fs/w', 'rb') as f:
        new = f.read()
    print(tag, 'NEW SAVED', new != old and m2.predict(x) == m.predict(x))
    vfs.umount('/fs')
print('DONE')
'''


def test_save_on_full_filesystem(tmp_path: Path):
    etm = reference_etm()
    from edgetune.format.modelfile import read_etm

    model = read_etm(etm.read_bytes())
    x = tmp_path / "x"
    x.write_bytes(bytes((i * 37) & 0xFF for i in range(model.input_tensor.size)))
    proc = run_script(SCRIPT.format(etm=str(etm), x=str(x), blocks=24), tmp_path, timeout=120,
                      extra_path=(str(REPO / "firmware"),))
    out = proc.stdout
    assert proc.returncode == 0 and "DONE" in out, out + proc.stderr
    for tag in ("C", "P"):
        assert f"{tag} FULL True" in out, out  # ENOSPC reached the caller
        assert f"{tag} TMP ['w']" in out, out  # no w.tmp left behind
        assert f"{tag} OLD KEPT True" in out, out
        assert f"{tag} NEW SAVED True" in out, out


if __name__ == "__main__":
    pytest.main([__file__, "-q"])

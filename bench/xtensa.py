"""Guest instructions per MAC and per training step on the emulated Xtensa LX7 (ESP32-S3 class):
the xtensawin edgetune.mpy (upstream LLVM, build/natmod/xtensawin-qemu: the ESP32-S3 build
without MUL32_HIGH) on boards/qemu-xtensa, counted EXACTLY: around each measured region the
QEMU monitor switches `singlestep on` and `log exec,nochain` (one trace line per executed
instruction, streamed through a FIFO and counted, never stored), then off again.

Each region is `for _ in range(R): f()` sent through mpremote's raw REPL; two repetition counts
R1 < R2 give instructions per call = (n(R2) - n(R1)) / (R2 - R1) (the REPL and loop overhead
cancel). The models are bench/mcu.py's: per forward kernel two single-layer models that differ
only in the reduction length, so marginal = delta instructions / delta MACs (the inner loop);
gross = instructions per predict / MACs; training steps of the app model and a conv model.

    python -m bench.xtensa [--out build/bench/xtensa.json]     (make bench-xtensa)

Needs make firmware BOARD=qemu-xtensa and make natmod ARCH=xtensawin. Takes a few minutes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from edgetune.device.emulate_xtensa import XtensaBoard  # noqa: E402
from edgetune.format.modelfile import write_etm  # noqa: E402

MPY = REPO / "build" / "natmod" / "xtensawin-qemu" / "edgetune.mpy"
R1, R2 = 2, 6


def _mcu():
    spec = importlib.util.spec_from_file_location("bench_mcu", REPO / "bench" / "mcu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Counter:
    """Counts the trace lines QEMU writes into a FIFO (a reader thread)."""

    def __init__(self, fifo: str):
        self.n = 0
        self.last = time.monotonic()
        self._fifo = fifo
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        with open(self._fifo, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    return
                self.n += chunk.count(b"Trace ")
                self.last = time.monotonic()

    def settle(self, quiet: float = 0.5) -> int:
        while time.monotonic() - self.last < quiet:
            time.sleep(0.1)
        return self.n


class Monitor:
    def __init__(self, path: str):
        for _ in range(100):
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.1)
        self._read()

    def _read(self) -> str:
        buf = b""
        while not buf.endswith(b"(qemu) "):
            buf += self.s.recv(4096)
        return buf.decode(errors="replace")

    def cmd(self, line: str) -> str:
        self.s.sendall(line.encode() + b"\n")
        return self._read()


def measure(t, mon: Monitor, counter: Counter, body: str, reps: int) -> int:
    counter.settle()
    before = counter.n
    mon.cmd("singlestep on")
    mon.cmd("log exec,nochain")
    t.exec(f"for _ in range({reps}):\n {body}\n")
    mon.cmd("log none")
    mon.cmd("singlestep off")
    return counter.settle() - before


def per_call(t, mon, counter, body: str) -> float:
    a = measure(t, mon, counter, body, R1)
    b = measure(t, mon, counter, body, R2)
    return (b - a) / (R2 - R1)


def setup_code(model, scheme: str) -> str:
    etm = write_etm(model)
    x = bytes(np.random.default_rng(1).integers(0, 256, model.input_tensor.size, dtype=np.uint8))
    return (f"import edgetune, binascii, gc\nbuf = binascii.unhexlify({etm.hex()!r})\n"
            f"m = edgetune.Model(buf, scheme={scheme})\nx = {x!r}\ngc.collect()\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "build" / "bench" / "xtensa.json")
    ap.add_argument("--firmware", type=Path, default=None)
    args = ap.parse_args(argv)
    from mpremote.transport_serial import SerialTransport

    mcu = _mcu()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetune-xtensa-bench-") as tmp:
        fifo, sock = os.path.join(tmp, "trace"), os.path.join(tmp, "mon")
        os.mkfifo(fifo)
        counter = Counter(fifo)
        with XtensaBoard(args.firmware, monitor=sock, log=fifo) as board:
            mon = Monitor(sock)
            import subprocess

            from edgetune.device import emulate

            subprocess.run(emulate.mpremote_command(board.pty, "cp", str(MPY), ":edgetune.mpy"), check=True,
                           capture_output=True, timeout=120)
            t = SerialTransport(board.pty, baudrate=115200)
            t.enter_raw_repl(soft_reset=False)
            for name, (kernel, small, large, scheme) in mcu.forward_pairs().items():
                calls = []
                for model in (small, large):
                    t.exec(setup_code(model, scheme))
                    calls.append((per_call(t, mon, counter, "m.predict(x)"), mcu._macs(model)[kernel]))
                (c_s, m_s), (c_l, m_l) = calls
                rows.append({"kind": "forward", "kernel": name, "macs": [m_s, m_l],
                             "instructions_per_predict": [c_s, c_l],
                             "gross_per_mac": round(c_l / m_l, 2),
                             "marginal_per_mac": round((c_l - c_s) / (m_l - m_s), 2)})
                print(f"xtensa: {name}: marginal {rows[-1]['marginal_per_mac']} instructions/MAC", file=sys.stderr)
            for name, model in mcu.train_models().items():
                t.exec(setup_code(model, "None"))
                fwd = per_call(t, mon, counter, "m.predict(x)")
                step = per_call(t, mon, counter, "m.train(x, 1, lr=0.01, qas=True)")
                macs = sum(mcu._macs(model).values())
                rows.append({"kind": "train", "model": name, "forward_macs": macs,
                             "instructions_per_predict": fwd, "instructions_per_train_step": step})
                print(f"xtensa: {name}: {step:.0f} instructions per training step", file=sys.stderr)
            t.exit_raw_repl()
            t.close()
    result = {"board": "qemu-xtensa (qemu-system-xtensa -M sim -cpu de233_fpu, LX7)",
              "module": str(MPY.relative_to(REPO)),
              "compiler": "clang-22/llvm-mc-22 via scripts/xtensa/xtensawin-gcc, kernels -O2",
              "method": "exact instruction trace (singlestep + log exec,nochain via the QEMU monitor), "
                        f"per call = (n(R={R2}) - n(R={R1})) / {R2 - R1}",
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"xtensa: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A board process for a fleet node: the unix-port MicroPython with the C module
(build/unix/micropython) running firmware/fleet_round.py in the board's own directory (its
"flash": the model, its windows, the fleet memory that survives between rounds), and
firmware/fleet_refit.py for the refit mode's query (m.refit_stats under the global state).

Every round's inputs and outputs are kept as `r<N>-global.bin`, `r<N>-mem.bin` (memory before
the round) and `r<N>-wire.bin`, so a test can replay the round on the numpy twin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..device import emulate

FIRMWARE = Path(__file__).resolve().parents[3] / "firmware"


class UnixBoard:
    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_partition(cls, partition: int, directory: str | None = None) -> "UnixBoard":
        base = directory or os.environ.get("EDGETUNE_FLEET_BOARDS", os.path.join("build", "fleet-boards"))
        return cls(os.path.join(base, f"board{partition}") if directory is None else directory)

    def round(self, model_path: str, lay, glob: bytes, x: np.ndarray, y: np.ndarray, idx: np.ndarray, lr: float,
              comp, memory: bytes | None, server_round: int = 0) -> tuple[bytes, float, bytes]:
        d = self._inputs(model_path, glob, x, y)
        segs, scales = lay.to_device()
        mem_file = d / "fleet.mem"
        before = mem_file.read_bytes() if mem_file.exists() else b""
        cfg = {"segs": segs, "scales": scales, "lr": float(lr), "clip": float(comp.clip), "k": int(comp.k),
               "sigma": float(comp.sigma), "seed": int(comp.seed), "n_in": int(x.shape[1]),
               "order": [int(i) for i in idx]}
        (d / "round.json").write_text(json.dumps(cfg))
        proc = self._run("fleet_round.py")
        wire = (d / "wire.bin").read_bytes()
        tag = f"r{server_round}"
        (d / f"{tag}-global.bin").write_bytes(glob)
        (d / f"{tag}-mem.bin").write_bytes(before)
        (d / f"{tag}-wire.bin").write_bytes(wire)
        (d / f"{tag}-round.json").write_text(json.dumps(cfg))
        loss = float(proc.stdout.split()[-1])
        return wire, loss, mem_file.read_bytes()

    def refit_stats(self, model_path: str, glob: bytes, x: np.ndarray, y: np.ndarray,
                    quant: tuple[int, np.ndarray] | None = None) -> bytes:
        """The board's answer to a refit query (firmware/fleet_refit.py): m.refit_stats of its
        windows x (n, n_in int8) with labels y under the global state glob, the packed int32
        statistics of refit_stats.pack; with quant = (bits, integer centre) the quantized upload
        of refit_quant.quantize. Kept as `refit-global.bin` and `refit-stats.bin`."""
        d = self._inputs(model_path, glob, x, y)
        qf = d / "quant.bin"
        if quant is None:
            qf.unlink(missing_ok=True)
        else:
            bits, m = quant
            qf.write_bytes(bytes([int(bits)]) + np.asarray(m, "<i2").tobytes())
        self._run("fleet_refit.py")
        stats = (d / "stats.bin").read_bytes()
        (d / "refit-global.bin").write_bytes(glob)
        (d / "refit-stats.bin").write_bytes(stats)
        return stats

    def _inputs(self, model_path: str, glob: bytes, x: np.ndarray, y: np.ndarray) -> Path:
        """Put the model, the board's windows and labels and the global state into its directory."""
        d = self.dir
        shutil.copyfile(model_path, d / "model.etm")
        (d / "windows.bin").write_bytes(np.ascontiguousarray(x, np.int8).tobytes())
        (d / "labels.bin").write_bytes(np.asarray(y, np.uint8).tobytes())
        (d / "global.bin").write_bytes(glob)
        return d

    def _run(self, script: str) -> subprocess.CompletedProcess:
        """Run firmware/<script> on the unix port in the board's directory; RuntimeError if it fails."""
        binary = emulate.find_micropython()
        env = dict(os.environ, MICROPYPATH=str(FIRMWARE))
        proc = subprocess.run([str(binary), str(FIRMWARE / script)], cwd=self.dir, env=env, capture_output=True,
                              text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"board {self.dir} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

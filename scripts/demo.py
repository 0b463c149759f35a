#!/usr/bin/env python3
"""`make demo`: the whole story of on-device fine-tuning, on this machine, in about a minute.

1. a pre-trained reference model (Keras `small`, rotation scenario) -> int8 .tflite -> .etm,
   built with the `edgetune pretrain/quantize/export` verbs and cached in build/demo/model/;
2. the *shifted* domain: the test subjects' recordings as seen by a sensor mounted turned by
   90 degrees, written with data.write_session as two replay sessions: adapt.csv (the first
   30 % of every recording: what the user records on the device) and eval.csv (the last 50 %);
3. the device app (firmware/*.py) on the unix-port MicroPython with our C module, under the
   RP2040 heap budget (-X heapsize= from boards/rp2040/board.json), its stdout wired to a REAL
   pseudo-terminal like a board's UART (QEMU's -serial pty does the same);
4. `edgetune monitor` reads that pty with pyserial: live progress, CSV and a PNG plot;
5. device run 1: accuracy on eval.csv before adaptation -> collect n windows per class from the
   adapt replay -> app.train(), the default recipe (calibrate the sensor frame -> refit the
   classifier -> SGD with rollback -> do-no-harm guard, each step's check accuracy printed) ->
   accuracy after -> save;
   device run 2 (a new process, i.e. a reboot): restore at boot -> accuracy again;
6. a summary computed from the CSV that came through the serial port.

    python scripts/demo.py [--n 12] [--epochs 8] [--lr 0.01] [--seed 0] [--out build/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
DEFAULT_OUT = REPO / "build" / "demo"
PRETRAIN = {"scenario": "rotation", "variant": "small", "epochs": 30, "seed": 0}


def _python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _edgetune(*args: str) -> None:
    cmd = [_python(), "-m", "edgetune.cli", *args]
    print("$ edgetune " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def _source_hash(*modules: str) -> str:
    import hashlib

    h = hashlib.sha256()
    for m in modules:
        h.update((REPO / "host" / "edgetune" / f"{m}.py").read_bytes())
    return h.hexdigest()[:16]


def ensure_model(out: Path = DEFAULT_OUT, pretrain: dict | None = None) -> Path:
    """build/demo/model/model.etm from the pretrain/quantize/export verbs. Cached: pre-training
    and quantization rerun when their settings or code change, the export when its code does."""
    cfg = dict(PRETRAIN, **(pretrain or {}))
    d = out / "model"
    etm, stamp = d / "model.etm", d / "demo-config.json"
    want = {"config": cfg, "train": _source_hash("learn/data", "learn/zoo", "learn/pretrain", "convert/quantize"),
            "export": _source_hash("convert/export", "convert/prepare", "format/modelfile", "format/scheme")}
    have = json.loads(stamp.read_text()) if stamp.exists() else {}
    if etm.exists() and have == want:
        return etm
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "model.tflite").exists() or {k: have.get(k) for k in ("config", "train")} != \
            {k: want[k] for k in ("config", "train")}:
        _edgetune("pretrain", "--scenario", cfg["scenario"], "--variant", cfg["variant"], "--epochs",
                  str(cfg["epochs"]), "--seed", str(cfg["seed"]), "--out", str(d), "--no-progress")
        _edgetune("quantize", str(d), "--out", str(d / "model.tflite"))
    _edgetune("export", str(d / "model.tflite"), "-o", str(etm), "--meta", str(d / "model.meta.json"))
    stamp.write_text(json.dumps(want))
    return etm


def write_sessions(model_dir: Path, out: Path) -> tuple[Path, Path]:
    """adapt.csv / eval.csv: the shifted domain of the model's scenario, split in time per
    recording exactly like data.build_scenario (fit region / eval region)."""
    from edgetune.learn import data

    split = json.loads((model_dir / "split.json").read_text())
    cfg, info = split["config"], split["info"]
    adapt, evalp = out / "adapt.csv", out / "eval.csv"
    stamp = out / "sessions.json"
    if adapt.exists() and evalp.exists() and stamp.exists() and json.loads(stamp.read_text()) == cfg:
        return adapt, evalp
    ds = data.load_watch()
    test = ds.select(cfg["test_subjects"])
    if cfg["name"] == "rotation":
        import numpy as np

        shifted = data.rotate(test, np.asarray(info["rotation"]))
    elif cfg["name"] == "side":
        shifted = ds.select(cfg["test_subjects"], (1 - cfg["train_side"],))
    else:
        shifted = test
    # recording order: subject, arm, class -> neighbouring recordings never share a label, so
    # the replay's label runs are exactly the recordings
    shifted = sorted(shifted, key=lambda r: (r.subject, r.side, r.label))
    f0, f1, _ = cfg["fractions"]

    def cut(a: float, b: float) -> list[data.Recording]:
        recs = []
        for r in shifted:
            n = len(r.x)
            recs.append(data.Recording(r.x[int(round(a * n)):int(round(b * n))], r.label, r.subject, r.side))
        return recs

    out.mkdir(parents=True, exist_ok=True)
    data.write_session(str(adapt), cut(0.0, f0), split["class_names"])
    data.write_session(str(evalp), cut(f0 + f1, 1.0), split["class_names"])
    stamp.write_text(json.dumps(cfg))
    return adapt, evalp


def heap_budget(board: str = "rp2040") -> int:
    return int(json.loads((REPO / "boards" / board / "board.json").read_text())["heap_bytes"])


def adapt_script(etm: Path, adapt: Path, evalp: Path, weights: Path, n: int, epochs: int, lr: float,
                 seed: int, target: float | None = None, holdout: int = 4) -> str:
    """MicroPython code of device run 1: score before, collect, train, score after, save."""
    return f"""
import app, store
app.boot({str(etm)!r}, weights={str(weights)!r}, config=None, restore=False, holdout={holdout}, capacity=128,
         source={{"bus": "replay", "path": {str(adapt)!r}, "skip": {seed * 37}}})
store.forget(app.S.model, {str(weights)!r})
app.score({str(evalp)!r})
for name in app.S.names:
    app.collect(name, n={n})
app.train(epochs={epochs}, lr={lr}, target={target!r}, seed={seed})
app.score({str(evalp)!r})
app.save()
"""


def restart_script(etm: Path, evalp: Path, weights: Path, done: bool = True) -> str:
    """MicroPython code of device run 2 (after a reboot): boot restores, score again."""
    return f"""
import app, log
app.boot({str(etm)!r}, weights={str(weights)!r}, config=None)
app.score({str(evalp)!r})
{"log.emit('done')" if done else ""}
"""


def device_cmd(micropython: Path, script: Path, heap: int) -> tuple[list[str], dict]:
    env = dict(os.environ, MICROPYPATH=f"{FIRMWARE}{os.pathsep}.frozen")
    return [str(micropython), "-X", f"heapsize={heap}", str(script)], env


def start_monitor(args: list[str], stderr_lines: list[str] | None = None) -> tuple[subprocess.Popen, "threading.Event"]:
    """`edgetune monitor ARGS` as a subprocess; the event is set once it has opened the port
    (pyserial flushes pending input on open, as a board's USB port loses what was sent before
    anyone listened). Its stderr is forwarded (and collected into stderr_lines)."""
    import threading

    proc = subprocess.Popen([_python(), "-m", "edgetune.cli", "monitor", *args], cwd=REPO,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    connected = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if stderr_lines is not None:
                stderr_lines.append(line)
            sys.stderr.write(line)
            sys.stderr.flush()
            if line.startswith("monitor: connected to"):
                connected.set()

    threading.Thread(target=pump, daemon=True).start()
    return proc, connected


def summary(rows: list[dict]) -> dict:
    """before/after/restored accuracy, arena, peak heap use, steps and time from the log rows."""
    scores = [r for r in rows if r.get("ev") == "score"]
    boots = [r for r in rows if r.get("ev") == "boot"]
    trains = [r for r in rows if r.get("ev") == "train"]
    end = [r for r in rows if r.get("ev") == "end"]
    used = [r["heap_used"] for r in rows if isinstance(r.get("heap_used"), int)]
    return {
        "before": scores[0]["acc"] if scores else None,
        "after": scores[1]["acc"] if len(scores) > 1 else None,
        "restored": scores[2]["acc"] if len(scores) > 2 else None,
        "eval_windows": scores[0]["n"] if scores else None,
        "arena": end[-1]["arena"] if end else None,
        "peak": end[-1]["peak"] if end else None,
        "peak_heap_used": max(used) if used else None,
        "heap_total": boots[0].get("heap_total") if boots else None,
        "steps": len(trains),
        "train_ms": end[-1]["elapsed_ms"] if end else None,
        "restored_at_boot": [b.get("restored") for b in boots],
        "early_stop": end[-1].get("early_stop") if end else None,
        # the recipe's steps: (stage, check-set accuracy or None when skipped, what it logged)
        "recipe": [(r["stage"], r.get("acc"), r.get("skipped") or r.get("chosen") or "")
                   for r in rows if r.get("ev") == "recipe"],
        "guards": [(r.get("stage"), r.get("before"), r.get("after"), r.get("kept"))
                   for r in rows if r.get("ev") == "guard"],
        "kept": end[-1].get("kept") if end else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--n", type=int, default=18, help="windows collected per class (18 x 7 classes fill the default 128-window ring; the last 1 in 4 are the check set)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=None, help="early stop at this held-back accuracy")
    p.add_argument("--board", default="rp2040", help="heap budget of this board (boards/*/board.json)")
    a = p.parse_args(argv)

    from edgetune.device import emulate

    t_start = time.monotonic()
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print("== 1. reference model (cached in build/demo/model)", flush=True)
    etm = ensure_model(out)
    print(f"   {etm} ({etm.stat().st_size} bytes)")
    print("== 2. shifted-domain replay sessions (rotation 90 deg, test subjects)", flush=True)
    adapt, evalp = write_sessions(etm.parent, out)
    print(f"   {adapt} and {evalp}")
    micropython = emulate.find_micropython()
    heap = heap_budget(a.board)
    weights = out / "weights.etw"
    s1, s2 = out / "device_adapt.py", out / "device_restart.py"
    s1.write_text(adapt_script(etm, adapt, evalp, weights, a.n, a.epochs, a.lr, a.seed, a.target))
    s2.write_text(restart_script(etm, evalp, weights))
    csv_path, png_path = out / "log.csv", out / "log.png"

    print(f"== 3. device app on {micropython.relative_to(REPO) if micropython.is_relative_to(REPO) else micropython}"
          f" with -X heapsize={heap} ({a.board} budget), serial over a pty", flush=True)
    master, slave = os.openpty()
    import tty

    tty.setraw(slave)  # a UART carries bytes: no echo, no newline translation
    port = out / "ttyDEVICE"  # a stable name for the port, like /dev/serial/by-id/...
    if port.is_symlink() or port.exists():
        port.unlink()
    port.symlink_to(os.ttyname(slave))
    os.close(slave)
    mon, connected = start_monitor(["--port", str(port), "--csv", str(csv_path), "--plot", str(png_path),
                                    "--until", "done", "--reconnect-timeout", "30"])
    rc = 0
    try:
        if not connected.wait(60):
            raise RuntimeError("the monitor did not open the port")
        for label, script in (("adapt: score, collect, train, score, save", s1), ("reboot: restore, score", s2)):
            print(f"-- device run: {label}", flush=True)
            cmd, env = device_cmd(micropython, script, heap)
            proc = subprocess.run(cmd, env=env, stdout=master, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                  cwd=out, timeout=600)
            if proc.returncode != 0:
                print(proc.stderr.decode(errors="replace"), file=sys.stderr)
                rc = 1
                os.write(master, b'@et {"ev": "done"}\n')
                break
        mon.wait(timeout=120)
    finally:
        if mon.poll() is None:
            mon.terminate()
        os.close(master)
        port.unlink()
    if rc or mon.returncode:
        print("demo: FAILED", file=sys.stderr)
        return 1

    from edgetune.device.monitor import read_csv

    s = summary(read_csv(csv_path))
    (out / "summary.json").write_text(json.dumps(s, indent=1))
    print("== summary (from the log stream received over the pty)")
    print("   the recipe (app.train): accuracy on the check windows (per class the last collected) after each step")
    for stage, acc, note in s["recipe"]:
        print(f"     {stage:<10} " + (f"{acc:.3f}" if isinstance(acc, (int, float)) else "  -  ")
              + (f"  ({note})" if note else ""))
    for stage, b, a_, kept in s["guards"]:
        if b is not None:
            print(f"     guard ({stage}): {b:.3f} -> {a_:.3f}: {'kept' if kept else 'rolled back'}")
    print(f"   accuracy on the shifted eval windows ({s['eval_windows']}): before {s['before']:.3f}"
          f"  ->  after {s['after']:.3f}  ->  after reboot (restored) {s['restored']:.3f}")
    print(f"   training: {s['steps']} steps in {s['train_ms']} ms on the unix port; arena {s['arena']} bytes,"
          f" arena peak {s['peak']} bytes; peak live heap {s['peak_heap_used']} of {s['heap_total']} bytes"
          f" (-X heapsize={heap})")
    print(f"   log: {csv_path}  plot: {png_path}  total {time.monotonic() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

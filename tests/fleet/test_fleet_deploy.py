"""Flower's Deployment Engine on localhost, real processes (docs/fleet.md §7).

One SuperLink (`flower-superlink`, TLS with a CA and server certificate generated here by the
`cryptography` package, `--enable-supernode-auth`), three registered SuperNodes
(`flower-supernode` with their P-384 keys), each driving a unix-port MicroPython board process
with the C module (firmware/fleet_round.py + fleet.py), 3 rounds of `flwr run` of the fleet app,
after the refit round of the product's recipe (`refit-l2`, `refit-bits` 12: every board answers
the refit query with m.refit_stats quantized by firmware/refit_quant.py, firmware/fleet_refit.py;
docs/fleet-refit.md §7). Checked: every board's refit upload equals the twin's quantized statistics
at the flashed state about the server's centre, and the server's refit state is the solve of their
exact dequantized sum, the first SGD round starts from it; every round aggregated 3 clients; every board's upload of every round equals the numpy
twin's replay of that round bit for bit (global state, error-feedback memory and visiting order
as the board had them); the global state moved. A SuperNode with an unregistered key and one
that speaks plaintext are refused (non-zero exit, never part of a round).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgetune.fleet import client, compress, deploy, refit_quant as rq, refit_stats as rs
from edgetune.fleet.data import fleet_data, server_windows

ROUNDS = 3
NODES = 3
REFIT_L2 = 0.01
REFIT_BITS = 12


@pytest.fixture(scope="module")
def demo_model() -> Path:
    from tests.support import deviceapp

    out = Path(__file__).resolve().parents[2] / "build" / "demo"
    return deviceapp.demo.ensure_model(out)


def _log(p: Path) -> str:
    return p.read_text(errors="replace") if p.exists() else ""


def test_superlink_three_boards_tls_and_auth(micropython, demo_model, tmp_path):
    d = tmp_path
    certs = deploy.certificates(d / "certs")
    port = deploy.free_port()
    home = deploy.flwr_home(d, port, certs["ca"])
    link = deploy.superlink(str(d), port, certs, str(d / "superlink.log"))
    procs: list[subprocess.Popen] = []
    try:
        deploy.wait_port(port)
        for i in range(NODES):
            priv, pub = deploy.node_key(d / "keys", f"node{i}")
            r = deploy.register(home, pub)
            assert r.returncode == 0, r.stdout + r.stderr
            b = d / "boards" / f"board{i}"
            b.mkdir(parents=True)
            procs.append(deploy.supernode(port, certs["ca"], priv, f'partition-id={i} driver="unix" board-dir="{b}"',
                                          deploy.free_port(), str(d / f"node{i}.log"), str(b)))
        # an unknown key and a plaintext client
        spriv, _ = deploy.node_key(d / "strangers", "stranger")
        stranger = deploy.supernode(port, certs["ca"], spriv, "partition-id=5", deploy.free_port(),
                                    str(d / "stranger.log"), str(d))
        plain = deploy.supernode(port, None, None, "partition-id=6", deploy.free_port(), str(d / "plain.log"), str(d))
        procs += [stranger, plain]
        assert stranger.wait(120) != 0, _log(d / "stranger.log")
        assert "Failed to activate SuperNode" in _log(d / "stranger.log")
        assert plain.wait(120) != 0, _log(d / "plain.log")
        assert "Failed to initialize the connection" in _log(d / "plain.log")

        r = deploy.submit(home, {"model": str(demo_model), "rounds": ROUNDS, "nodes": NODES, "lr": 0.01, "clip": 8.0,
                                 "topk": 0.05, "sigma": 0.25, "refit-l2": REFIT_L2, "refit-alpha": 1.0,
                                 "refit-bits": REFIT_BITS, "out": str(d / "result.json")}, str(d))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        t = time.time()
        while not (d / "result.json").exists() and time.time() - t < 60:
            time.sleep(0.5)
        res = json.loads((d / "result.json").read_text())
    finally:
        for p in procs:
            deploy.stop(p)
        deploy.stop(link)
    assert [x["clients"] for x in res["rounds"]] == [NODES] * ROUNDS
    assert all(0 < x["bytes_sent"] * 10 < x["bytes_dense"] for x in res["rounds"])

    # replay every board's every round on the numpy twin
    path = str(demo_model)
    _, tw, lay = client._model(path)
    fd = fleet_data(tw.model.meta)
    # the refit round: the boards' quantized statistics at the flashed state, solved by the server
    flashed = tw.state_bytes()
    centre = rq.centre(tw, server_windows(tw.model.meta))
    K, C = rs.dims(tw)
    ups = []
    for i in range(NODES):
        b = d / "boards" / f"board{i}"
        assert (b / "refit-global.bin").read_bytes() == flashed
        up = (b / "refit-stats.bin").read_bytes()
        want = rq.quantize(rs.client_stats(tw, fd.clients[i].x, fd.clients[i].y), centre, REFIT_BITS)
        assert up == want, f"board {i}'s refit statistics"
        ups.append(rq.unpack(up, K, C, REFIT_BITS, centre))
    assert res["refit_bytes_up"] == [rq.wire_bytes(K, C, REFIT_BITS)] * NODES
    refit_state = rs.global_state(tw, rq.pooled(ups)[0], REFIT_L2, 1.0)
    assert bytes.fromhex(res["refit_state"]) == refit_state != flashed
    assert (d / "boards" / "board0" / "r1-global.bin").read_bytes() == refit_state
    globs = []
    for i in range(NODES):
        b = d / "boards" / f"board{i}"
        c = fd.clients[i]
        for rnd in range(1, ROUNDS + 1):
            cfg = json.loads((b / f"r{rnd}-round.json").read_text())
            glob = (b / f"r{rnd}-global.bin").read_bytes()
            mem = (b / f"r{rnd}-mem.bin").read_bytes()
            comp = compress.Compressor(lay.size, cfg["clip"], cfg["k"], cfg["sigma"], cfg["seed"])
            if mem:
                comp.restore(mem)
            wire, _ = client.twin_round(path, glob, c.x, c.y, np.asarray(cfg["order"]), cfg["lr"], comp)
            assert wire == (b / f"r{rnd}-wire.bin").read_bytes(), f"board {i} round {rnd} differs from the twin"
            assert (mem != b"") == (rnd > 1)
            if i == 0:
                globs.append(glob)
            else:
                assert glob == globs[rnd - 1], "every board got the same global state"
    assert len(set(globs)) == ROUNDS, "the global state changed every round"
    assert bytes.fromhex(res["state"]) not in globs


@pytest.mark.parametrize("args,word", [(["--refit-l2", "-1"], "refit_l2"), (["--refit-alpha", "2"], "refit_alpha"),
                                       (["--lr", "0"], "lr"), (["--refit-l2", "0.01", "--refit-bits", "3"], "bits=3"),
                                       (["--refit-bits", "12"], "refit_bits needs the refit round")])
def test_serve_refuses_bad_settings_before_starting(tmp_path, args, word):
    """`edgetune fleet serve` checks the ServerApp's settings before it starts any process or
    writes its directory."""
    import argparse

    p = argparse.ArgumentParser()
    deploy.add_parsers(p.add_subparsers(dest="cmd"))
    model = tmp_path / "model.etm"  # the checks only need it to exist; the bad setting is refused first
    model.write_bytes(b"")
    a = p.parse_args(["serve", "--dir", str(tmp_path / "d"), "--model", str(model), *args])
    with pytest.raises(ValueError, match=word):
        deploy.run_cli(a)
    assert not (tmp_path / "d").exists()

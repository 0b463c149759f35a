"""The fleet refit mode with real boards (docs/fleet-refit.md §1, §6): a unix-port board process
with the C module (board.UnixBoard.refit_stats, firmware/fleet_refit.py: m.refit_stats under the
global state it was sent) answers a refit query with exactly the twin's
refit_stats.pack(refit_stats.client_stats(...)) bytes, on random models with a global state that is
not the flashed one; the boards' uploads summed and solved give the centralized refit's state; a
Flower query message to a node with driver "unix" is answered by its board (the demo model's
fleet partition), and a board with bad windows fails loudly."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from edgetune.fleet import client, refit_stats as rs
from edgetune.fleet.board import UnixBoard
from edgetune.format.modelfile import write_etm
from edgetune.twin.training import Trainer

from tests.support.trainingcases import refittable_models, stepped_state

N_MODELS = 6


def _twin(etm: bytes, state: bytes) -> Trainer:
    t = Trainer(etm)
    t.load_state(state)
    return t


@pytest.mark.parametrize("seed,model", refittable_models(N_MODELS))
def test_unix_boards_send_the_twins_statistics(micropython, tmp_path, seed, model):
    rng = np.random.default_rng([41, seed])
    etm, glob = stepped_state(model, rng)
    (tmp_path / "m.etm").write_bytes(etm)
    n_in, n_cls = model.input_tensor.size, model.output_tensor.size
    K, C = rs.dims(Trainer(etm))
    ups, xs, ys = [], [], []
    for b in range(3):
        n = int(rng.integers(2, 20))
        x = rng.integers(-128, 128, (n, n_in)).astype(np.int8)
        y = rng.integers(0, n_cls, n)
        got = UnixBoard(tmp_path / f"board{b}").refit_stats(str(tmp_path / "m.etm"), glob, x, y)
        assert got == rs.pack(rs.client_stats(_twin(etm, glob), x, y)), (seed, b)
        assert len(got) == 4 * rs.upload_values(K, C)
        ups.append(rs.unpack(got, K, C))
        xs.append(x)
        ys.append(y)
    state = rs.global_state(_twin(etm, glob), rs.aggregate(ups), 0.1, 1.0)
    cen = _twin(etm, glob)
    cen.refit(np.concatenate(xs), np.concatenate(ys), l2=0.1, alpha=1.0)
    assert state == cen.state_bytes(), seed


def test_refit_query_answered_by_a_unix_board(micropython, tmp_path, monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name, v in (("_run_id", 7), ("_node_id", 0), ("_task_id", 1)):  # a message outside a Flower run
        monkeypatch.setattr(TaskIdentity, name, v)
    from tests.support import deviceapp
    from edgetune.fleet.data import fleet_data

    from pathlib import Path

    path = str(deviceapp.demo.ensure_model(Path(__file__).resolve().parents[2] / "build" / "demo"))
    _, t, _ = client._model(path)
    c = fleet_data(t.model.meta).clients[0]
    t.step(c.x[0], int(c.y[0]), 0.05)  # a global state that is not the flashed one
    glob = t.state_bytes()
    msg = Message(content=RecordDict({"config": ConfigRecord({"model": path, "state": glob, "splits": 1})}),
                  dst_node_id=1, message_type="query")
    node = {"driver": "unix", "board-dir": str(tmp_path / "b0")}
    board = client.refit_answer(msg, 0, node).content["arrays"]["stats"].numpy().tobytes()
    twin = client.refit_answer(msg, 0).content["arrays"]["stats"].numpy().tobytes()
    assert board == twin == rs.pack(rs.client_stats(_twin(client._model(path)[0], glob), c.x, c.y))
    assert (tmp_path / "b0" / "refit-stats.bin").read_bytes() == board
    with pytest.raises(ValueError, match="driver 'qemu'"):
        client.refit_answer(msg, 0, {"driver": "qemu"})


def test_a_board_with_bad_windows_fails(micropython, tmp_path):
    _, model = refittable_models(1)[0]
    etm = write_etm(model)
    (tmp_path / "m.etm").write_bytes(etm)
    glob = Trainer(etm).state_bytes()
    n_in = model.input_tensor.size
    board = UnixBoard(tmp_path / "b")
    with pytest.raises(RuntimeError, match="expected 3 windows"):
        board.refit_stats(str(tmp_path / "m.etm"), glob, np.zeros((3, n_in + 1), np.int8), [0, 0, 0])
    with pytest.raises(RuntimeError, match="refit needs 2..32767 windows"):
        board.refit_stats(str(tmp_path / "m.etm"), glob, np.zeros((1, n_in), np.int8), [0])

"""The server's step from the aggregate (fleet/server.py ServerOpt: server learning rate and
server momentum, FedAvgM): lr 1 / momentum 0 is update.apply itself, bit for bit; the momentum
buffer carries over rounds; bad settings are a ValueError naming the setting. Many random
models (tests.support.trainingcases.train_model)."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.fleet import update
from edgetune.fleet.server import ServerOpt
from edgetune.fleet.simulate import Settings
from edgetune.twin.training import Trainer

from tests.support.trainingcases import train_model


@pytest.mark.parametrize("seed", range(6))
def test_server_step_is_apply_of_the_momentum_buffer(seed):
    rng = np.random.default_rng([31, seed])
    t = Trainer(train_model(seed))
    lay = update.layout(t.model, t.scheme)
    s0 = t.state_bytes()
    d1 = (rng.standard_normal(lay.size) * 0.05).astype(np.float32)
    d2 = (rng.standard_normal(lay.size) * 0.05).astype(np.float32)
    plain = ServerOpt(1.0, 0.0, lay.size)
    assert plain.step(lay, s0, d1) == update.apply(lay, s0, d1)
    lr, mom = np.float32(2.5), np.float32(0.75)
    opt = ServerOpt(float(lr), float(mom), lay.size)
    s1 = opt.step(lay, s0, d1)
    assert s1 == update.apply(lay, s0, (lr * d1).astype(np.float32))
    s2 = opt.step(lay, s1, d2)
    m2 = (mom * d1 + d2).astype(np.float32)
    assert s2 == update.apply(lay, s1, (lr * m2).astype(np.float32))
    assert s2 != plain.step(lay, s1, d2)


@pytest.mark.parametrize("lr,mom,word", [(0.0, 0.0, "server lr"), (float("nan"), 0.0, "server lr"),
                                         (1.0, 1.0, "momentum"), (1.0, -0.1, "momentum")])
def test_bad_server_settings(lr, mom, word, tmp_path):
    with pytest.raises(ValueError, match=word):
        ServerOpt(lr, mom, 3)
    p = tmp_path / "m.etm"
    p.write_bytes(b"x")
    with pytest.raises(ValueError, match=word.replace(" ", "_")):
        Settings(model=str(p), server_lr=lr, server_momentum=mom).check()

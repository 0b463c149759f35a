"""The search space of one model (docs/scheme-search.md §2): candidates (biases of the last k
layers, a channel ratio per weight layer, a channel criterion) and the device scheme of each.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from ..format.modelfile import EtmModel
from ..format.scheme import Scheme, classifier, l1_channels, out_channels, weight_layers


DENS = (0, 8, 4, 2, 1)  # ratio 1/den of the output channels; 0 = weights frozen
CRITERIA = ("l1", "fisher")
LR_GRID = (0.003, 0.01, 0.03)


def parse_bytes(s: str | int) -> int:
    """'96K' -> 98304, '1M' -> 1048576, '12000' -> 12000."""
    if isinstance(s, int):
        return s
    t = str(s).strip().upper().rstrip("B")
    mul = 1
    if t and t[-1] in "KM":
        mul = 1024 if t[-1] == "K" else 1 << 20
        t = t[:-1]
    try:
        return int(float(t) * mul)
    except ValueError:
        raise ValueError(f"byte count {s!r} not understood (e.g. 96K, 1M, 20000)") from None


@dataclass(frozen=True)
class Candidate:
    """k = biases of the last k non-classifier weight layers; dens[j] = 1/den of layer j's
    output channels trains (0 = frozen), j over `Space.layers`; crit[j] = channel criterion."""

    k: int
    dens: tuple[int, ...]
    crit: tuple[str, ...] = ()

    def text(self, space: "Space") -> str:
        parts = [f"bias={self.k + (1 if space.clf is not None else 0)}"]
        for j, d in enumerate(self.dens):
            if d:
                c = self.crit[j] if self.crit else "l1"
                parts.append(f"w{space.layers[j]}=1/{d}" + ("" if c == "l1" else f"({c})"))
        return ",".join(parts)


@dataclass
class Space:
    """The search space of one model: non-classifier weight layers, their channel choices."""

    model: EtmModel
    layers: list[int]
    clf: int | None
    fisher: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> per-channel score

    @classmethod
    def of(cls, model: EtmModel) -> "Space":
        clf = classifier(model)
        return cls(model, [i for i in weight_layers(model) if i != clf], clf)

    @property
    def size(self) -> int:
        return (len(self.layers) + 1) * len(DENS) ** len(self.layers)

    def channels(self, layer: int, den: int, crit: str) -> tuple[int, ...]:
        n_sel = max(1, out_channels(self.model, layer) // den)
        if crit == "l1":
            return l1_channels(self.model, layer, n_sel)
        score = self.fisher[layer]
        order = np.lexsort((np.arange(score.size), -score))
        return tuple(int(c) for c in np.sort(order[:n_sel]))

    def scheme(self, c: Candidate) -> Scheme:
        """The device scheme (classifier always included) with explicit channel lists."""
        w = {}
        for j, d in enumerate(c.dens):
            if d:
                w[self.layers[j]] = list(self.channels(self.layers[j], d, c.crit[j] if c.crit else "l1"))
        return Scheme.build(self.model, c.k + (1 if self.clf is not None else 0), w)

    def all(self) -> list[Candidate]:
        L = len(self.layers)
        return [Candidate(k, dens) for k in range(L + 1) for dens in itertools.product(DENS, repeat=L)]

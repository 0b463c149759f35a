"""Exact price of a candidate (docs/scheme-search.md §3): the training arena from the planner
(twin/memory.py), its additive form for the DP, and each board's fixed cost.
"""

from __future__ import annotations

import json
import os

from ..format.modelfile import EtmModel
from ..format.scheme import out_channels
from ..twin import memory
from .space import Candidate, Space


class Pricer:
    """Exact price of a candidate: memory.training_arena + the fixed cost; None if the device
    would refuse the scheme (accumulator bounds). Memoized; counts distinct evaluations."""

    def __init__(self, space: Space, fixed: int = 0, momentum: bool = False):
        self.space, self.fixed, self.momentum = space, fixed, momentum
        self.memo: dict[tuple, int | None] = {}

    def arena(self, c: Candidate) -> int | None:
        key = (c.k, c.dens)
        if key not in self.memo:
            try:
                s = self.space.scheme(Candidate(c.k, c.dens))
                # nothing trains (a model without classifier, k = 0, no weights): not a scheme
                self.memo[key] = memory.training_arena(self.space.model, s, self.momentum) if s.entries else None
            except ValueError:
                self.memo[key] = None
        return self.memo[key]

    def price(self, c: Candidate) -> int | None:
        a = self.arena(c)
        return None if a is None else a + self.fixed


def layer_cost(space: Space, layer: int, bias: bool, den: int) -> int:
    """memory.entry_cost of layer `layer` training its bias and 1/den of its output channels."""
    ch = tuple(range(max(1, out_channels(space.model, layer) // den))) if den else ()
    return memory.entry_cost(space.model, layer, bias, ch, space_momentum(space))


def space_momentum(space: Space) -> bool:
    return getattr(space, "momentum", False)


def out_size(space: Space, layer: int) -> int:
    return space.model.tensors[space.model.layers[layer].output].size


def base_cost(space: Space, first: int, fold: int | None = None) -> int | None:
    """memory.base_cost for the space's model."""
    return memory.base_cost(space.model, first, fold, space_momentum(space))


def additive_arena(space: Space, c: Candidate) -> int | None:
    """The arena as the DP sees it: base(first) + one exact cost per trained layer. Equal to
    memory.training_arena for every valid candidate (tests/test_search.py checks the whole
    space of the tiny model); None when `first` violates the accumulator bounds."""
    L = len(space.layers)
    trained = [j for j in range(L) if c.dens[j] or j >= L - c.k]
    first = space.layers[trained[0]] if trained else space.clf
    if first is None:
        return None
    above = [space.layers[j] for j in trained if c.dens[j] and space.layers[j] > first]
    if space.clf is not None and space.clf > first:
        above.append(space.clf)
    fold = max(above, key=lambda i: out_size(space, i)) if above else None
    base = base_cost(space, first, fold)
    if base is None:
        return None
    total = base + sum(layer_cost(space, space.layers[j], j >= L - c.k, c.dens[j]) for j in trained)
    if space.clf is not None:
        total += layer_cost(space, space.clf, True, 1)
    return total


def board_fixed(board: str | None, model: EtmModel | None = None, repo: str | None = None
                ) -> tuple[int, int | None, str]:
    """(fixed bytes, heap bytes, source text) for a board config (boards/NAME/board.json).

    The fixed cost is the device app's own live heap besides the training arena: the board
    config's `app_heap_bytes` if it states one, else our measurement (APP_HEAP_BASE + the
    collection ring buffer of APP_RING_WINDOWS windows of the model's input size)."""
    if not board:
        return 0, None, "no board: the budget is for the training arena alone"
    root = repo or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    path = os.path.join(root, "boards", board, "board.json")
    with open(path) as f:
        cfg = json.load(f)
    heap = int(cfg["heap_bytes"])
    if "app_heap_bytes" in cfg:
        return int(cfg["app_heap_bytes"]), heap, f"{path}: app_heap_bytes"
    n_in = model.tensors[model.input].size if model is not None else 600
    fixed = APP_HEAP_BASE + APP_RING_WINDOWS * n_in
    return fixed, heap, (f"device app heap besides the arena = {APP_HEAP_BASE} B + ring buffer "
                         f"{APP_RING_WINDOWS} x {n_in} B = {fixed} B (measured: {APP_HEAP_SOURCE}); "
                         f"heap {heap} B from {path}")


# Measured on the 32-bit QEMU board (MPS2-AN385 firmware, frozen device app incl. hal, C module,
# at ec25ebd): gc.mem_alloc() after gc.collect() rose by 92 256 B across `import app;
# app.boot(model=buf)` with the small model (arena 6 564 B, input 100 x 6 = 600 B, ring capacity
# 128 windows = 76 800 B), i.e. 85 692 B besides the arena = 8 892 B of app objects + the ring.
APP_HEAP_BASE = 8892
APP_RING_WINDOWS = 128
APP_HEAP_SOURCE = ("qemu MPS2-AN385 firmware, gc.mem_alloc() across import app + app.boot() with the small "
                   "model, ring capacity 128 (docs/scheme-search.md)")

"""Sparse-update scheme search under an SRAM budget (docs/scheme-search.md).

Three steps, all on the host, all with the bit-exact numpy training twin (twin/training.py,
twin/lockstep.py):

1. **Contribution analysis** (contributions.py) on personalization data of the shifted domain
   (data.py): the *adapt* split fine-tunes, a separate *selection* split measures accuracy (the
   scenario's final evaluation split is never touched). Measured: accuracy of the classifier alone
   (k = 0), the gain of the biases of the last k weight layers (k = 1..L), and the gain of each
   weight layer at channel ratios 1/8, 1/4, 1/2, 1 on top of all biases + classifier, with the
   channels chosen by the device's l1 criterion and by a Fisher criterion (sum over the adapt
   samples of the squared weight gradients of each output channel, at the pre-trained weights).
   Measurements are cached on disk (JSON), keyed by model CRC, data, learning rate, steps and the
   encoded scheme.
2. **Pricing** (pricing.py): every candidate (k, ratio per layer; space.py) is priced exactly
   with the arena planner `twin/memory.training_arena` plus the board's fixed cost (heap the app
   itself uses).
3. **Search** (solvers.py): maximize the predicted accuracy acc(0) + gain_b[k] + sum gain_w[l, r]
   (additive assumption) with price <= budget. Exact dynamic programme: for a fixed k, a fixed
   `first` layer and a fixed bound on the fold buffer (the largest output of the weight-trained
   layers above `first`) the arena is exactly additive over layers (work + masks depend only on
   those; each entry's params and saved input only on its own layer: memory.base_cost and
   memory.entry_cost), so a group knapsack per (k, first, fold) in 4-byte units is exact; every
   answer is re-priced with training_arena. Exhaustive enumeration (when the space is small), an
   evolutionary search and random search at equal evaluations are run and reported alongside.

Output (run.py, report.py): a Pareto table (arena -> scheme, predicted accuracy), JSON + PNG, and
the chosen scheme (explicit channel lists) written into a .etm. `edgetune export --scheme
auto[:opts]` and `--scheme @scheme.json` use `attach_spec`. The verb is commands/scheme.py.

The names below are the package's API (bench/scheme.py, tests/test_search.py use them).
"""

from .contributions import Contributions, Runner, analyze, finetune, finetune_many, fisher_scores, without_scheme
from .data import SearchData, load_data
from .pricing import APP_HEAP_BASE, APP_RING_WINDOWS, Pricer, additive_arena, board_fixed
from .run import Report, attach_spec, check_budget, measure_actual, search, top_candidates, verify_top
from .solvers import Result, dp, evolution, exhaustive, pareto, random_search
from .space import CRITERIA, DENS, LR_GRID, Candidate, Space, parse_bytes

__all__ = ["APP_HEAP_BASE", "APP_RING_WINDOWS", "CRITERIA", "DENS", "LR_GRID", "Candidate", "Contributions",
           "Pricer", "Report", "Result", "Runner", "SearchData", "Space", "additive_arena", "analyze",
           "attach_spec", "board_fixed", "check_budget", "dp", "evolution", "exhaustive", "finetune",
           "finetune_many", "fisher_scores", "load_data", "measure_actual", "pareto", "parse_bytes",
           "random_search", "search", "top_candidates", "verify_top", "without_scheme"]

"""The search's report for people: the contribution table, the Pareto front, the plot."""

from __future__ import annotations

import sys

from .run import Report
from .space import DENS


def print_table(rep: Report, file=sys.stdout) -> None:
    c = rep.contrib
    sp = rep.space
    print(f"selection accuracy: no training {c.acc_none:.3f}, classifier only {c.acc_bias[0]:.3f}, "
          f"lr {c.lr:g} ({c.runs} runs, {c.cached} cached, {c.seconds:.1f} s)", file=file)
    print("  biases of the last k layers: " + ", ".join(f"k={k}: {a - c.acc_bias[0]:+.3f}"
                                                         for k, a in enumerate(c.acc_bias)), file=file)
    for j, layer in enumerate(sp.layers):
        row = []
        for den in DENS[1:]:
            row.append(f"1/{den} " + "/".join(f"{c.gain_w(j, den, cr):+.3f}" for cr in rep.criteria))
        print(f"  layer {layer} weights ({'/'.join(rep.criteria)}): " + ", ".join(row), file=file)
    print(f"\nPareto front (price = arena + fixed {rep.pricer.fixed} B):", file=file)
    print(f"  {'price':>8} {'arena':>8} {'pred.acc':>8} {'params':>7}  scheme", file=file)
    for p in rep.front:
        print(f"  {p['price']:>8} {p['arena']:>8} {p['predicted_acc']:>8.3f} {p['trainable']:>7}  {p['scheme']}",
              file=file)
    for v in rep.extra.get("verify", []):
        print(f"  verify: predicted {v['predicted_acc']:.3f} measured {v['measured_acc']:.3f}  price {v['price']}  "
              f"{v['scheme']}", file=file)
    print(f"\nbudget {rep.budget} B:", file=file)
    for name, r in rep.results.items():
        s = "-" if r.cand is None else r.cand.text(sp)
        print(f"  {name:<10} pred.acc {r.predicted:.3f}  price {r.price}  evals {r.evaluations:>5}  "
              f"{r.seconds:.3f} s  {s}", file=file)


def plot(rep: Report, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sp, c = rep.space, rep.contrib
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    xs = [p["arena"] for p in rep.front]
    ys = [p["predicted_acc"] for p in rep.front]
    a1.step(xs, ys, where="post", marker="o", ms=3)
    a1.axvline(rep.budget - rep.pricer.fixed, ls="--", color="r", lw=1, label="budget (arena)")
    if rep.chosen.cand is not None:
        a1.plot([rep.chosen.price - rep.pricer.fixed], [rep.chosen.predicted], "r*", ms=12, label="chosen")
    act = rep.extra.get("additivity", {})
    if "actual_acc" in act:
        a1.plot([rep.chosen.price - rep.pricer.fixed], [act["actual_acc"]], "kx", ms=9, label="chosen, measured")
    a1.set_xscale("log")
    a1.set_xlabel("training arena bytes")
    a1.set_ylabel("predicted selection accuracy")
    a1.set_title("Pareto front (additive prediction)")
    a1.legend(fontsize=7)
    labels, vals = [], []
    for k in range(1, len(c.acc_bias)):
        labels.append(f"b{k}")
        vals.append(c.acc_bias[k] - c.acc_bias[0])
    a2.bar(range(len(vals)), vals, color="#999")
    x = len(vals)
    ticks = list(range(len(vals)))
    for j, layer in enumerate(sp.layers):
        for den in DENS[1:]:
            for ci, cr in enumerate(rep.criteria):
                a2.bar(x + 0.4 * ci, c.gain_w(j, den, cr), width=0.4, color=["#4c72b0", "#dd8452"][ci % 2],
                       label=cr if (j == 0 and den == DENS[1]) else None)
            ticks.append(x)
            labels.append(f"L{layer}\n1/{den}")
            x += 1
    a2.set_xticks(ticks, labels, fontsize=6)
    a2.set_ylabel("accuracy gain (selection split)")
    a2.set_title("contributions: biases of last k layers; weights on top of all biases")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

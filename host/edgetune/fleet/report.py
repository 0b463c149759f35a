"""build/bench/fleet.json and the PNG (accuracy, bytes, ε per round) of a fleet run."""

from __future__ import annotations

import json
import os


def write_json(path: str, result: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1, sort_keys=False)
        f.write("\n")


def plot(path: str, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"compressed": result}
    runs.update({k: v for k, v in (result.get("variants") or {}).items()})
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for name, r in runs.items():
        acc = r["global_acc"]
        ax[0].plot(range(len(acc)), acc, marker=".", label=f"{name} ({r['clients']} clients)")
        sent = [0]
        for b in r.get("bytes_per_round", []):
            sent.append(sent[-1] + b)
        line = ax[1].plot(range(len(sent)), [s / 1024 for s in sent], marker=".", label=f"{name}: sent")[0]
        per = r["bytes_up_dense"] / max(1, r["rounds"])
        ax[1].plot(range(len(sent)), [i * per / 1024 for i in range(len(sent))], ls="--", color=line.get_color(),
                   label=f"{name}: dense float32")
        eps = [e for e in r.get("epsilon_per_round", []) if e is not None]
        if eps:
            ax[2].plot(range(len(eps)), eps, marker=".", label=name)
    if result.get("centralized_acc") is not None:
        ax[0].axhline(result["centralized_acc"], color="k", ls="--", label="centralized")
    ax[0].set(xlabel="round", ylabel="held-out accuracy", title="global model")
    ax[1].set(xlabel="round", ylabel="KiB uploaded (all clients)", title="bytes up", yscale="log")
    ax[2].set(xlabel="round", ylabel="epsilon (delta %g)" % (result.get("delta") or 1e-5), title="central DP")
    for a in ax:
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:  # a panel with nothing drawn (no DP) has no legend
            a.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)

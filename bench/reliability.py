"""Gather the reliability figures (docs/reliability.md) into build/bench/reliability.json.

Sources (each written by the run that measured it; missing ones are reported as not run):
- build/bench/fuzz.json             `make fuzz` (scripts/fuzz.sh run): executions, crashes per target
- build/bench/sanitize.json         `make test-sanitize` (scripts/sanitize.sh): pytest exit, reports
- build/bench/reliability.d/*.json  the reliability tests of `make test`: bad-input cases,
                                    hostile-object cases (C module and edgetune_py), power-cut
                                    points, memory pressure, monitor garbage

    python -m bench.reliability [--check]   (--check: exit 1 unless every figure is clean)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "build" / "bench"


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def gather() -> dict:
    out: dict = {}
    fuzz = _load(BENCH / "fuzz.json")
    if fuzz:
        out["fuzz"] = {t: {"executions": v["executions"], "crashes": v["crashes"], "exit_code": v["exit_code"],
                           "corpus": v["corpus"], "seeds": v["seeds"]} for t, v in fuzz["targets"].items()}
        out["fuzz_runs_per_target"] = fuzz["runs_per_target"]
    else:
        out["fuzz"] = "not run (make fuzz)"
    parts = {p.stem: _load(p) for p in sorted((BENCH / "reliability.d").glob("*.json"))}
    bad = parts.get("bad_inputs")
    out["bad_inputs"] = {
        "api_cases_tried": bad["api_cases_tried"], "api_cases_passing": bad["api_cases_passing"],
        "file_cases_tried": bad["file_cases_tried"], "file_cases_passing": bad["file_cases_passing"],
    } if bad else "not run (tests/unix/test_bad_inputs.py)"
    out["hostile_objects"] = {
        mod: ({"cases_tried": h["cases"], "cases_passing": h["passing"], "methods": h["methods"]}
              if (h := parts.get(f"hostile_{mod}")) else "not run (tests/unix/test_hostile.py)")
        for mod in ("edgetune", "edgetune_py")
    }
    pc = parts.get("power_cut")
    out["power_cut"] = {"points_tried": pc["cut_points_tried"], "points_recovering": pc["cut_points_recovering"],
                        "steps_per_save": pc["steps_per_save"]} if pc else "not run (tests/unix/test_power_cut.py)"
    mp = parts.get("memory_pressure_boards")
    ms = parts.get("memory_pressure_session")
    out["memory_pressure"] = {
        "boards": mp["boards"] if mp else "not run",
        "session": ms if ms else "not run",
    }
    san = _load(BENCH / "sanitize.json")
    out["sanitizers"] = {
        "unix_port_asan_ubsan": {"sanitizer_errors": san["sanitizer_reports"], "pytest_exit": san["pytest_exit"],
                                 "tests": san["tests"]} if san else "not run (make test-sanitize)",
        "fuzz_harnesses_asan_ubsan": sum(v["crashes"] for v in out["fuzz"].values())
        if isinstance(out["fuzz"], dict) else "not run",
    }
    hm = parts.get("host_monitor_garbage")
    out["host_monitor"] = hm if hm else "not run (tests/host/test_host_robustness.py)"
    return out


def clean(r: dict) -> list[str]:
    """Reasons the figures are not clean (empty: all clean)."""
    why = []
    if isinstance(r["fuzz"], dict):
        for t, v in r["fuzz"].items():
            if v["crashes"] or v["exit_code"] or v["executions"] < 1_000_000:
                why.append(f"fuzz {t}: {v}")
    else:
        why.append("fuzz not run")
    b = r["bad_inputs"]
    if not isinstance(b, dict) or b["api_cases_tried"] != b["api_cases_passing"] \
            or b["file_cases_tried"] != b["file_cases_passing"]:
        why.append(f"bad inputs: {b}")
    for mod, h in r["hostile_objects"].items():
        if not isinstance(h, dict) or h["cases_tried"] != h["cases_passing"]:
            why.append(f"hostile objects ({mod}): {h}")
    p = r["power_cut"]
    if not isinstance(p, dict) or p["points_tried"] != p["points_recovering"]:
        why.append(f"power cut: {p}")
    s = r["sanitizers"]["unix_port_asan_ubsan"]
    if not isinstance(s, dict) or s["sanitizer_errors"] or s["pytest_exit"]:
        why.append(f"sanitizers: {s}")
    return why


def main(argv: list[str]) -> int:
    r = gather()
    BENCH.mkdir(parents=True, exist_ok=True)
    tmp = BENCH / ".reliability.json.tmp"
    tmp.write_text(json.dumps(r, indent=1))
    tmp.replace(BENCH / "reliability.json")
    print(json.dumps(r, indent=1))
    print(f"reliability: wrote {BENCH / 'reliability.json'}", file=sys.stderr)
    if "--check" in argv:
        why = clean(r)
        for w in why:
            print(f"reliability: NOT CLEAN: {w}", file=sys.stderr)
        return 1 if why else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

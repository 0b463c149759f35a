"""scripts/setup.sh's apt configuration (run against scratch apt directories, never /etc/apt),
and the Makefile's refusal of unknown boards."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

BOOKWORM_DEB822 = """\
Types: deb
# a comment inside the stanza
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
"""


def run_setup_fn(repo_root: Path, apt_etc: Path, script: str) -> subprocess.CompletedProcess:
    """Source scripts/setup.sh (defines functions only) and run `script` with APT_ETC set."""
    cmd = f'set -euo pipefail; APT_ETC="{apt_etc}"; source "{repo_root}/scripts/setup.sh"; SUDO=(); {script}'
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60)


@pytest.fixture
def apt_etc(tmp_path: Path) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "preferences.d").mkdir()
    return tmp_path


def parse_deb822(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.strip().splitlines())


def test_trixie_source_derived_from_deb822_bookworm_entry(repo_root, apt_etc):
    (apt_etc / "sources.list.d" / "debian.sources").write_text(BOOKWORM_DEB822)
    proc = run_setup_fn(repo_root, apt_etc, "configure_trixie; echo changed=$TRIXIE_CHANGED")
    assert proc.returncode == 0, proc.stderr
    assert "changed=1" in proc.stdout
    src = parse_deb822((apt_etc / "sources.list.d" / "trixie.sources").read_text())
    assert src["Types"] == "deb deb-src"
    assert src["URIs"] == "http://mirror.invalid/debian"  # the bookworm entry's, not -security
    assert src["Suites"] == "trixie"
    pref = parse_deb822((apt_etc / "preferences.d" / "trixie.pref").read_text())
    assert pref == {"Package": "*", "Pin": "release n=trixie", "Pin-Priority": "100"}

    # Idempotent: a second run writes nothing.
    before = {p: p.read_text() for p in apt_etc.rglob("*") if p.is_file()}
    proc = run_setup_fn(repo_root, apt_etc, "configure_trixie; echo changed=$TRIXIE_CHANGED")
    assert proc.returncode == 0 and "changed=0" in proc.stdout
    assert {p: p.read_text() for p in apt_etc.rglob("*") if p.is_file()} == before


def test_trixie_source_derived_from_one_line_sources_list(repo_root, apt_etc):
    (apt_etc / "sources.list").write_text(
        "deb http://mirror.invalid/debian-security bookworm-security main\n"
        "deb [signed-by=/usr/share/keyrings/x.gpg] http://other.invalid/debian bookworm main contrib\n"
    )
    proc = run_setup_fn(repo_root, apt_etc, "bookworm_uri")
    assert proc.stdout.strip() == "http://other.invalid/debian"


def test_existing_trixie_binary_entry_only_gets_deb_src(repo_root, apt_etc):
    (apt_etc / "sources.list.d" / "debian.sources").write_text(BOOKWORM_DEB822)
    (apt_etc / "sources.list").write_text("deb http://mirror.invalid/debian trixie main\n")
    (apt_etc / "preferences.d" / "pin").write_text("Package: *\nPin: release n=trixie\nPin-Priority: 100\n")
    proc = run_setup_fn(repo_root, apt_etc, "configure_trixie")
    assert proc.returncode == 0, proc.stderr
    assert parse_deb822((apt_etc / "sources.list.d" / "trixie.sources").read_text())["Types"] == "deb-src"
    assert not (apt_etc / "preferences.d" / "trixie.pref").exists()  # the existing pin is kept


def test_no_bookworm_entry_is_a_clear_error(repo_root, apt_etc):
    proc = run_setup_fn(repo_root, apt_etc, "configure_trixie")
    assert proc.returncode != 0
    assert "no Debian bookworm entry" in proc.stderr
    assert not any((apt_etc / "sources.list.d").iterdir())


def test_unknown_board_is_refused(repo_root):
    proc = subprocess.run(["make", "--no-print-directory", "firmware", "BOARD=nosuchboard"], cwd=repo_root,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown BOARD=nosuchboard" in proc.stderr

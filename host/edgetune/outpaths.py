"""Check where a verb will write before it does the work (a search or a training run that ends
in "No such file or directory" on a temp file wastes minutes and says nothing useful).

Both checks raise ValueError with a message that names the path and what to do.
"""

from __future__ import annotations

import os


def check_file(path: str | os.PathLike, what: str = "output") -> None:
    """`path` can be created or replaced: its directory exists and is writable, and it is not a
    directory itself."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise ValueError(f"{what} {p} is a directory; give a file name")
    d = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(d):
        if os.path.exists(d):
            raise ValueError(f"cannot write {what} {p}: {d} is not a directory")
        raise ValueError(f"cannot write {what} {p}: the directory {d} does not exist (create it: mkdir -p {d})")
    if not os.access(d, os.W_OK):
        raise ValueError(f"cannot write {what} {p}: the directory {d} is not writable")


def check_dir(path: str | os.PathLike, what: str = "output directory") -> None:
    """`path` is, or can be created (makedirs) as, a writable directory."""
    p = os.path.abspath(os.fspath(path))
    if os.path.exists(p):
        if not os.path.isdir(p):
            raise ValueError(f"{what} {path} exists and is not a directory")
        if not os.access(p, os.W_OK):
            raise ValueError(f"{what} {path} is not writable")
        return
    parent = p
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"cannot create {what} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"cannot create {what} {path}: {parent} is not writable")

"""`edgetune export MODEL.tflite -o MODEL.etm [--meta META.json] [--scheme TEXT]`: the converter
(convert/export.py) plus metadata and a sparse-update scheme: given, or searched (search/,
docs/scheme-search.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..convert.export import tflite_to_etm
from ..format.modelfile import write_etm
from ..format.scheme import attach
from ..outpaths import check_file
from ..search import attach_spec


def _write_atomic(path: str, data: bytes) -> None:
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def sidecar_meta(model_path: str) -> str:
    """MODEL.meta.json beside MODEL.tflite (what `edgetune quantize` writes)."""
    base = model_path[:-7] if model_path.endswith(".tflite") else os.path.splitext(model_path)[0]
    return base + ".meta.json"


def cli(argv: list[str]) -> int:
    """`edgetune export MODEL.tflite -o MODEL.etm [--meta META.json] [--scheme TEXT]`."""
    p = argparse.ArgumentParser(prog="edgetune export",
                                description="Convert a full-integer int8 .tflite model to a .etm model file.")
    p.add_argument("model", help="input .tflite (int8 input/output, full-integer quantized)")
    p.add_argument("-o", "--output", help="output .etm (default: MODEL with the .etm suffix)")
    p.add_argument("--meta", help="JSON file with a metadata object to embed (class names, sample rate, ...); "
                                  "default: MODEL.meta.json beside the model if there is one")
    p.add_argument("--no-meta", action="store_true", help="embed no metadata even if MODEL.meta.json exists")
    p.add_argument("--scheme", help="sparse-update scheme to embed, e.g. 'default' or 'bias=2,w-3=1/4' "
                                    "(see edgetune.format.scheme), 'auto[:budget=96K,board=rp2040,...]' or "
                                    "'@scheme.json' (edgetune scheme)")
    args = p.parse_args(argv)
    if args.meta and args.no_meta:
        p.error("--meta and --no-meta exclude each other")
    out = args.output or os.path.splitext(args.model)[0] + ".etm"
    try:
        check_file(out, "output")  # before the conversion and a scheme search that can take minutes
        with open(args.model, "rb") as f:
            data = f.read()
        meta = None
        notes = []  # printed once the export succeeded (a failure prints its one error line)
        meta_file = args.meta
        if meta_file is None and not args.no_meta and os.path.isfile(sidecar_meta(args.model)):
            meta_file = sidecar_meta(args.model)
            notes.append(f"using metadata {meta_file} (class names, sample rate, ...; "
                         "--meta FILE for another, --no-meta for none)")
        if meta_file:
            with open(meta_file, encoding="utf-8") as f:
                meta = json.load(f)
            if not isinstance(meta, dict):
                raise ValueError(f"{meta_file}: metadata must be a JSON object")
        elif not args.no_meta:
            notes.append(f"note: no metadata ({sidecar_meta(args.model)} does not exist and no --meta): "
                         "the .etm has no class names, so the device names classes 0..N-1 and session files "
                         "must label samples by index")
        etm = tflite_to_etm(data, meta)
        if args.scheme and args.scheme.startswith(("auto", "@")):
            attach_spec(etm, args.scheme)
        elif args.scheme:
            attach(etm, args.scheme)
        blob = write_etm(etm)
        _write_atomic(out, blob)
    except (OSError, ValueError) as e:
        msg = " ".join(str(e).split())
        print(f"edgetune export: error: {msg}", file=sys.stderr)
        return 1
    for n in notes:
        print(f"edgetune export: {n}", file=sys.stderr)
    print(f"{out}: {len(etm.layers)} layers ({', '.join(etm.meta['ops'])}), {len(blob)} bytes")
    return 0

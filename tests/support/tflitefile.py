"""Editing a .tflite file: its flatbuffer as tflite-micro's object tree (schema_py_generated),
changed by a function and packed again (tests/host/test_export*.py)."""

from __future__ import annotations


def edit_tflite(tflite: bytes, edit) -> bytes:
    """Apply `edit(model, subgraph, S)` to the flatbuffer object tree and re-serialize it."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as S

    model = S.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    edit(model, model.subgraphs[0], S)
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())

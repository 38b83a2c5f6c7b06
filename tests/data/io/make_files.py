#!/usr/bin/env python3
"""Writes the safetensors test files: corpus/ (valid files, the fuzzer's seeds)
and malformed/ (one defect each, with the error each must produce in
malformed/expected.tsv). Run from anywhere; the files are committed."""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def image(header, data=b"", length=None):
    text = header if isinstance(header, bytes) else header.encode("utf-8")
    n = len(text) if length is None else length
    return struct.pack("<Q", n) + text + data


def valid(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes); 8-byte aligned header like the reference writer."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)
    return image(text, data)


def write(folder, name, content):
    os.makedirs(os.path.join(HERE, folder), exist_ok=True)
    with open(os.path.join(HERE, folder, name), "wb") as f:
        f.write(content)


f32 = struct.pack("<2f", 1.5, -2.0)
corpus = {
    "empty_header.safetensors": valid([]),
    "one_f32.safetensors": valid([("w", "F32", [2], f32)]),
    "mixed.safetensors": valid(
        [("a", "BF16", [2, 2], bytes(range(8))), ("ids", "I64", [1], struct.pack("<q", -3)), ("m", "BOOL", [3], b"\x01\x00\x01")],
        {"format": "pt", "note": "caf\u00e9"}),
    "scalar_and_empty.safetensors": valid([("s", "F16", [], b"\x00\x3c"), ("z", "F32", [0, 4], b"")]),
    "subbyte.safetensors": valid([("q", "F4", [2, 3], b"\x12\x34\x56")]),
    "unpadded_header.safetensors": image('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', f32),
}
for name, content in corpus.items():
    write("corpus", name, content)

ok = '"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
malformed = [
    ("empty.safetensors", b"", "too short"),
    ("truncated_length.safetensors", b"\x10\x00\x00", "too short"),
    ("huge_header_length.safetensors", image("{}", length=1 << 62), "exceeds the limit"),
    ("header_past_end.safetensors", image("{}", length=1000), "exceeds the 2 bytes"),
    ("zero_header.safetensors", image("", length=0), "not valid JSON"),
    ("truncated_data.safetensors", image("{" + ok + "}", f32[:5]), "past the 5 bytes"),
    ("bad_json.safetensors", image('{"w":{"dtype":"F32",'), "not valid JSON"),
    ("bad_utf8.safetensors", image(b'{"w\xc3\x28":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', f32), "not valid JSON"),
    ("trailing_text.safetensors", image("{" + ok + "} x", f32), "not valid JSON"),
    ("not_object.safetensors", image("[1,2]"), "not a JSON object"),
    ("negative_offset.safetensors", image('{"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}', f32), "non-negative integers"),
    ("float_offset.safetensors", image('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0.5,8]}}', f32), "non-negative integers"),
    ("reversed_offsets.safetensors", image('{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}', f32), "before begin"),
    ("overlapping.safetensors",
     image('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"v":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', f32), "overlaps tensor 'w'"),
    ("gap.safetensors", image('{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', f32), "gap of 4 bytes"),
    ("trailing_bytes.safetensors", image("{" + ok + "}", f32 + b"\x00" * 4), "4 bytes after the last tensor"),
    ("wrong_size.safetensors", image('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', f32), "needs 12 bytes"),
    ("unknown_dtype.safetensors", image('{"w":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}}', f32), "unknown dtype 'F12'"),
    ("negative_shape.safetensors", image('{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', f32), "not a non-negative integer"),
    ("shape_overflow.safetensors", image('{"w":{"dtype":"F32","shape":[4294967296,4294967296,64],"data_offsets":[0,8]}}', f32), "overflows"),
    ("duplicate_name.safetensors", image("{" + ok + "," + ok + "}", f32), "appears twice"),
    ("metadata_not_string.safetensors", image('{"__metadata__":{"a":1}}'), "is not a string"),
    ("missing_offsets.safetensors", image('{"w":{"dtype":"F32","shape":[2]}}', f32), "data_offsets"),
    ("entry_not_object.safetensors", image('{"w":[1]}'), "not an object"),
    ("subbyte_partial.safetensors", image('{"q":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', b"\x00\x00"), "whole number of bytes"),
]
for name, content, _ in malformed:
    write("malformed", name, content)
with open(os.path.join(HERE, "malformed", "expected.tsv"), "w") as f:
    f.write("# file\terror message must contain\n")
    for name, _, expected in malformed:
        f.write(f"{name}\t{expected}\n")

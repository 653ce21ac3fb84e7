"""Compressed and streamed inputs: every compression (gzip, xz, bzip2, zstd) of
every container (JSON array, JSONL, Parquet) loads as the same records as the
plain file, the records know the sha256 of the stored (compressed) bytes, a
corrupt or truncated file is a one-line error naming it (exit 2 from the CLI),
and JSONL is parsed line by line without holding the file's text. No model is
loaded."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from cherrybench.cli import main
from cherrybench.outputs import write_subset
from cherrybench.records import DataError, load_dataset

ROWS = [{"id": f"r{i}", "instruction": f"Question {i}: caf\u00e9 \U0001F600?", "input": "" if i % 2 else f"ctx {i}",
         "output": f"answer {i} with a line\u2028separator"} for i in range(40)]
COMPRESS = {
    "gz": gzip.compress,
    "xz": lzma.compress,
    "bz2": bz2.compress,
    "zst": lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data),  # as the zstd CLI writes
}


def plain_bytes(container: str, rows=ROWS) -> bytes:
    if container == "json":
        return json.dumps(rows, ensure_ascii=False, indent=1).encode()
    if container == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("container", ["json", "jsonl", "parquet"])
@pytest.mark.parametrize("ext", sorted(COMPRESS))
def test_every_compression_loads_the_same_records_as_the_plain_file(tmp_path, container, ext):
    plain = write(tmp_path / f"d.{container}", plain_bytes(container))
    stored = COMPRESS[ext](plain.read_bytes())
    packed = write(tmp_path / f"d.{container}.{ext}", stored)
    want, got = load_dataset(plain), load_dataset(packed)
    assert [r.raw for r in got.records] == [r.raw for r in want.records] == ROWS
    assert (got.format, got.container, got.fingerprint) == (want.format, want.container, want.fingerprint)
    source = got.records[0].source
    assert all(r.source is source for r in got.records) and got.sources == [source]
    assert source.sha256 == hashlib.sha256(stored).hexdigest() and source.size == len(stored)
    assert source.compression == {"gz": "gzip", "xz": "xz", "bz2": "bzip2", "zst": "zstd"}[ext]
    assert want.records[0].source.sha256 == hashlib.sha256(plain.read_bytes()).hexdigest()


def test_concatenated_members_and_frames_are_read_whole(tmp_path):
    """gzip members and zstd frames written one after another (as `cat a.gz b.gz`) are one stream."""
    half = len(ROWS) // 2
    first, second = plain_bytes("jsonl", ROWS[:half]), plain_bytes("jsonl", ROWS[half:])
    for ext in ("gz", "zst"):
        path = write(tmp_path / f"cat.jsonl.{ext}", COMPRESS[ext](first) + COMPRESS[ext](second))
        assert [r.raw for r in load_dataset(path).records] == ROWS


def test_compression_is_recognised_by_content_and_a_wrong_suffix_is_named(tmp_path):
    sniffed = write(tmp_path / "no_suffix.jsonl", gzip.compress(plain_bytes("jsonl")))
    assert [r.raw for r in load_dataset(sniffed).records] == ROWS
    liar = write(tmp_path / "liar.jsonl.xz", plain_bytes("jsonl"))
    with pytest.raises(DataError, match=r"liar\.jsonl\.xz: named \.xz but is not xz data \(it starts with bytes 7b"):
        load_dataset(liar)
    empty = write(tmp_path / "empty.json.gz", b"")
    with pytest.raises(DataError, match=r"empty\.json\.gz: named \.gz but is not gzip data \(it is empty\)"):
        load_dataset(empty)


def damaged(ext: str, how: str) -> bytes:
    data = COMPRESS[ext](plain_bytes("jsonl", ROWS * 50))
    if how == "truncated":
        return data[: len(data) // 2]
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle: middle + 64]) + data[middle + 64:]


@pytest.mark.parametrize("how", ["truncated", "garbled"])
@pytest.mark.parametrize("ext", sorted(COMPRESS))
def test_a_corrupt_compressed_file_is_a_clear_error(tmp_path, ext, how):
    """Named as damage, even where the decompressor first emits garbage that is not JSON or UTF-8
    (gzip and bzip2 check their CRC only at the end of a block or member)."""
    path = write(tmp_path / f"bad.jsonl.{ext}", damaged(ext, how))
    with pytest.raises(DataError) as error:
        load_dataset(path)
    message = str(error.value)
    assert message.startswith(f"{path}: cannot decompress it as ") and "\n" not in message
    assert message.endswith("the file is corrupt or truncated")


@pytest.mark.parametrize("ext", sorted(COMPRESS))
def test_truncation_at_a_line_boundary_is_still_an_error(tmp_path, ext):
    """The decompressed prefix is a valid JSONL file: only the stream's missing end tells."""
    data = COMPRESS[ext](plain_bytes("jsonl"))
    path = write(tmp_path / f"cut.jsonl.{ext}", data[:-4])
    with pytest.raises(DataError, match=rf"cut\.jsonl\.{ext}: cannot decompress it as \w+ .*corrupt or truncated"):
        load_dataset(path)


def test_corrupt_compressed_data_exits_2_from_the_cli(tmp_path, capsys):
    path = write(tmp_path / "pool.jsonl.gz", damaged("gz", "truncated"))
    code = main(["select", "--data", str(path), "--selector", "random", "--budget", "2",
                 "--out", str(tmp_path / "sub.json"), "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"cherrybench: error: {path}: cannot decompress it as gzip") and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "sub.json").exists()


def test_errors_in_a_compressed_jsonl_name_the_line(tmp_path):
    lines = plain_bytes("jsonl").splitlines(keepends=True)
    bad_json = write(tmp_path / "j.jsonl.zst", COMPRESS["zst"](b"".join(lines[:3]) + b'{"instruction": "x",\n'))
    with pytest.raises(DataError, match=r"j\.jsonl\.zst:4: malformed JSON line"):
        load_dataset(bad_json)
    text = b"".join(lines[:2]) + b'{"instruction": "caf\xe9", "output": "b"}\n'
    latin = write(tmp_path / "u.jsonl.bz2", COMPRESS["bz2"](text))
    offset = text.index(b"\xe9")
    with pytest.raises(DataError, match=rf"u\.jsonl\.bz2:3: not valid UTF-8 \(byte 0xe9 at byte offset {offset}\)"):
        load_dataset(latin)


def test_a_subset_of_compressed_parquet_keeps_its_schema(tmp_path):
    table = pa.Table.from_pylist(ROWS).append_column("when", pa.array([i * 1000 for i in range(len(ROWS))],
                                                                     type=pa.timestamp("ms")))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    path = write(tmp_path / "t.parquet.xz", lzma.compress(sink.getvalue().to_pybytes()))
    dataset = load_dataset(path)
    out = write_subset(dataset, ["r3", "r1"], tmp_path / "sub.parquet")
    back = pq.read_table(out)
    assert back.schema == table.schema
    assert back.column("id").to_pylist() == ["r1", "r3"]  # input order


def _retained_and_peak(path: Path) -> tuple[int, int, object]:
    tracemalloc.start()
    try:
        dataset = load_dataset(path)
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return retained, peak, dataset


@pytest.mark.parametrize("name", ["big.jsonl", "big.jsonl.gz"])
def test_jsonl_is_streamed_not_held_as_text(tmp_path, name):
    """Reading allocates little beyond the records it returns: peak minus what the records
    keep stays far below the file's size (reading the whole text first would cost about
    three times the file: the bytes, the decoded text and its split lines)."""
    rows = [{"id": f"r{i}", "instruction": f"Q{i} " + "w" * 200, "output": "x" * 1800} for i in range(6000)]
    text = plain_bytes("jsonl", rows)
    path = write(tmp_path / name, gzip.compress(text) if name.endswith(".gz") else text)
    retained, peak, dataset = _retained_and_peak(path)
    assert len(dataset) == len(rows)
    assert peak - retained < 0.25 * len(text), (peak, retained, len(text))

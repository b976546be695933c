"""`mitp score`'s inputs: every kind of collection read as shards of rows, a bad row carried with its reason."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from mitp.score.inputs import ScoreInputError, input_shards, shard_rows

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402


def _rows(source):
    root = source if source.is_dir() else source.parent
    return [(shard.name, row) for shard in input_shards(source) for row in shard_rows(shard, root)]


def test_a_table_file_of_each_kind_is_one_shard_with_ids_given_or_by_place(tmp_path):
    records = [{"id": "007", "image": "img/a.jpg", "caption": "red"}, {"id": "", "image": "img/b.jpg", "caption": "blue"}]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "pairs.parquet")
    (tmp_path / "pairs.csv").write_text("id,image,caption\n007,img/a.jpg,red\n,img/b.jpg,blue\n")
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for name in ("pairs.parquet", "pairs.csv", "pairs.jsonl"):
        rows = _rows(tmp_path / name)
        assert [(shard, r.id, r.image, r.caption, r.problem) for shard, r in rows] == [
            ("pairs", "007", tmp_path / "img" / "a.jpg", "red", None),  # "007" stays as written (CSV read as text)
            ("pairs", "pairs:1", tmp_path / "img" / "b.jpg", "blue", None),
        ], name


def test_a_folder_of_parquet_shards_reads_each_in_order_and_image_bytes_and_text_columns_work(tmp_path):
    (tmp_path / "part" / "b").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"image": b"\xff\xd8 jpeg", "text": "one"}]), tmp_path / "part" / "b" / "0.parquet")
    pq.write_table(pa.Table.from_pylist([{"image": b"\x89PNG", "text": "two"}, {"image": None, "text": "three"}]), tmp_path / "part" / "a.parquet")
    rows = _rows(tmp_path / "part")
    assert [(shard, r.id, r.image, r.caption, r.problem) for shard, r in rows] == [
        ("a", "a:0", b"\x89PNG", "two", None),
        ("a", "a:1", None, "three", "no image (neither a path nor the image's bytes)"),
        ("b__0", "b__0:0", b"\xff\xd8 jpeg", "one", None),
    ]


def _tar(path, samples):
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_group_members_by_key_and_name_what_is_missing(tmp_path):
    (tmp_path / "shards").mkdir()
    _tar(tmp_path / "shards" / "00000.tar", [
        ("x/000.jpg", b"jpeg0"), ("x/000.txt", b"a red plate"),
        ("x/001.png", b"png1"), ("x/001.json", json.dumps({"caption": "noodles"}).encode()),
        ("x/002.jpg", b"jpeg2"),
        ("x/003.txt", b"no image"),
        ("x/004.jpg", b"jpeg4"), ("x/004.txt", b"\xff\xfe"),
    ])
    rows = [r for _, r in _rows(tmp_path / "shards")]
    assert [(r.id, r.image, r.caption, r.problem) for r in rows] == [
        ("x/000", b"jpeg0", "a red plate", None),
        ("x/001", b"png1", "noodles", None),
        ("x/002", b"jpeg2", None, "no caption in the sample"),
        ("x/003", None, "no image", "no image in the sample"),
        ("x/004", b"jpeg4", None, "the caption is not UTF-8 text"),
    ]


def test_a_bad_line_is_a_row_with_its_reason_and_a_bad_input_is_one_line(tmp_path):
    (tmp_path / "pairs.jsonl").write_text('{"image": "a.jpg", "caption": "ok"}\nnot json\n[1]\n{"image": "b.jpg"}\n')
    rows = [r for _, r in _rows(tmp_path / "pairs.jsonl")]
    assert [r.problem for r in rows] == [None, "line 2 is not JSON (Expecting value)", "line 3 is not a JSON object", "no caption"]
    (tmp_path / "cols.csv").write_text("path,label\na.jpg,1\n")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.tar").write_bytes(b"")
    pq.write_table(pa.Table.from_pylist([{"image": "a", "caption": "b"}]), tmp_path / "mixed" / "b.parquet")
    (tmp_path / "broken.tar").write_bytes(b"not a tar at all" * 100)
    for source, reason in ((tmp_path / "cols.csv", "needs an `image` column"), (tmp_path / "nothing", "neither a file nor a folder"),
                           (tmp_path / "pairs.txt", "not a parquet, CSV"), (tmp_path / "mixed", "mixes parquet and tar"),
                           (tmp_path / "broken.tar", "cannot be read as a tar shard")):
        if source.suffix == ".txt":
            source.write_text("x")
        with pytest.raises(ScoreInputError, match=reason):
            _rows(source)

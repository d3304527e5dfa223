"""Readers and writers of Quick, Draw! formats: exactness on real data, every bad-input reason."""

from __future__ import annotations

import csv
import gzip
import json
import struct

import numpy as np
import pytest

from nnlab.errors import DataError
from nnlab.ingest.chunks import iter_chunks, read_drawings
from nnlab.ingest.reasons import MISSING_TIMESTAMP, REASONS, SkipStats
from nnlab.ingest.writers import (
    csv_row,
    format_timestamps,
    ndjson_line,
    parse_timestamps,
    write_bin,
    write_csv,
    write_ndjson,
)
from nnlab.strokes.drawing import Drawing
from nnlab.strokes.vocabulary import Vocabulary, label_to_word, sort_words, word_to_label

SIMPLIFIED_LINE = ('{"word":"cat","countrycode":"VE","timestamp":"2017-03-02 23:25:10.07453 UTC",'
                   '"recognized":true,"key_id":"5201136883597312","drawing":[[[130,113,99],[72,40,27]],'
                   '[[76,28,7],[136,128,128]]]}')


def _ndjson(tmp_path, lines, name="data.ndjson"):
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return p


def _line(**overrides) -> str:
    rec = json.loads(SIMPLIFIED_LINE)
    for k, v in overrides.items():
        if v is None:
            rec.pop(k, None)
        else:
            rec[k] = v
    return json.dumps(rec)


def _skips(path, **kw) -> tuple[list[Drawing], dict]:
    stats = SkipStats()
    drawings = list(read_drawings(path, stats=stats, **kw))
    return drawings, dict(stats.counts)


# ---- real data -------------------------------------------------------------------------------


def test_simplified_ndjson_matches_json_exactly(shared_data):
    files = sorted((shared_data / "quickdraw" / "simplified").glob("*.ndjson"))
    assert len(files) == 344
    n = 0
    for f in files[::7]:
        ref = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()]
        got = list(read_drawings(f))
        assert len(got) == len(ref)
        for d, r in zip(got, ref):
            assert (d.word, d.key_id, d.countrycode, d.recognized, d.timestamp) == (
                r["word"], int(r["key_id"]), r["countrycode"], r["recognized"], r["timestamp"])
            assert [s.T.tolist() for s in d.strokes] == r["drawing"]
            assert all(s.dtype == np.int32 for s in d.strokes)
            n += 1
    assert n > 1000


def test_raw_ndjson_values_are_the_exact_doubles(shared_data):
    files = sorted((shared_data / "quickdraw" / "raw").glob("*.ndjson"))
    checked = 0
    for f in files[::9]:
        ref = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()]
        got = list(read_drawings(f))
        assert len(got) == len(ref)
        for d, r in zip(got, ref):
            assert d.has_time
            for s, rs in zip(d.strokes, r["drawing"]):
                np.testing.assert_array_equal(s, np.array(rs, dtype=np.float64).T)  # bit-exact
            checked += 1
    assert checked > 500


def test_ndjson_writer_reproduces_google_lines_byte_for_byte(shared_data):
    f = shared_data / "quickdraw" / "simplified" / "The Eiffel Tower.ndjson"
    lines = f.read_text(encoding="utf-8").splitlines()
    assert [ndjson_line(d) for d in read_drawings(f)] == lines


def test_number_parser_round_trips_doubles(tmp_path):
    # 17 significant digits, one exactly half-way between two float32 values, exponents
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(-3000, 3000, 2000), [215.94998931884766, 1.5e-7, 123456.78901234567,
                                                         0.1, 2.5e-12, 999999.9999999999]])
    ts = np.arange(len(xs), dtype=float)
    line = json.dumps({"word": "x", "key_id": "1", "drawing": [[xs.tolist(), xs[::-1].tolist(), ts.tolist()]]})
    (d,) = read_drawings(_ndjson(tmp_path, [line]))
    np.testing.assert_array_equal(d.strokes[0][:, 0], xs)
    np.testing.assert_array_equal(d.strokes[0][:, 1], xs[::-1])


# ---- Kaggle CSV, shards, test file, .bin, gzip -----------------------------------------------


KAGGLE_ROW = ('US,"[[[167, 109, 80, 69], [140, 194, 227, 232]], [[207, 207, 210], [74, 103, 114]]]",'
              '5152802093400064,True,2017-03-08 21:12:07.266040,airplane')


def test_kaggle_train_csv_row(tmp_path):
    p = tmp_path / "airplane.csv"
    p.write_text("countrycode,drawing,key_id,recognized,timestamp,word\n" + KAGGLE_ROW + "\n")
    (d,) = read_drawings(p)
    assert d.word == "airplane" and d.key_id == 5152802093400064 and d.countrycode == "US" and d.recognized
    assert d.timestamp == "2017-03-08 21:12:07.26604 UTC"
    assert d.strokes[0].tolist() == [[167, 140], [109, 194], [80, 227], [69, 232]]
    assert csv_row(d) == KAGGLE_ROW  # the writer spells rows the way Kaggle does


def test_kaggle_csv_round_trip_of_real_drawings(shared_data, tmp_path):
    src = shared_data / "quickdraw" / "simplified" / "The Great Wall of China.ndjson"
    drawings = list(read_drawings(src))
    out = tmp_path / "The Great Wall of China.csv"
    assert write_csv(drawings, out) == 25
    back = list(read_drawings(out))
    assert [ndjson_line(d) for d in back] == [ndjson_line(d) for d in drawings]


def test_kaggle_shard_with_y_column_gzip(tmp_path):
    classes = ["The Eiffel Tower", "airplane", "cat"]
    vocab = Vocabulary(classes)
    rows = [KAGGLE_ROW + ",1",
            KAGGLE_ROW.replace("5152802093400064", "7").replace("airplane", "cat") + ",2",
            KAGGLE_ROW.replace("5152802093400064", "8").replace("airplane", "The Eiffel Tower") + ",0",
            KAGGLE_ROW.replace("5152802093400064", "9") + ",2"]  # y says cat, word says airplane
    p = tmp_path / "train_k0.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write("countrycode,drawing,key_id,recognized,timestamp,word,y\n" + "\n".join(rows) + "\n")
    stats = SkipStats()
    chunks = list(iter_chunks(p, classes=vocab, stats=stats))
    words = [classes[w] for c in chunks for w in c.words]
    assert words == ["airplane", "cat", "The Eiffel Tower"]
    assert dict(stats.counts) == {"label_mismatch": 1}
    # without a class list the word column alone labels the rows
    assert [d.word for d in read_drawings(p)] == ["airplane", "cat", "The Eiffel Tower", "airplane"]


def test_y_only_needs_a_class_list(tmp_path):
    p = tmp_path / "shard.csv"
    p.write_text('countrycode,drawing,key_id,y\nUS,"[[[1, 2], [3, 4]]]",5,1\nUS,"[[[1, 2], [3, 4]]]",6,9\n')
    with pytest.raises(DataError, match="no 'word' column"):
        list(read_drawings(p))
    d, skips = _skips(p, classes=["a", "b"])
    assert [x.word for x in d] == ["b"] and skips == {"unknown_word": 1}


def test_kaggle_test_csv_is_unlabelled(tmp_path):
    p = tmp_path / "test_simplified.csv"
    p.write_text('key_id,countrycode,drawing\n9000003627287624,DE,"[[[17, 18, 20], [48, 41, 36]]]"\n')
    (d,) = read_drawings(p)
    assert d.word is None and d.key_id == 9000003627287624 and d.countrycode == "DE"
    out = tmp_path / "again.csv"
    write_csv([d], out, test=True)
    assert out.read_text() == p.read_text()


def test_bin_round_trip_and_word_from_file_name(shared_data, tmp_path):
    src = shared_data / "quickdraw" / "simplified" / "cat.ndjson"
    drawings = list(read_drawings(src))
    p = tmp_path / "full_binary_cat.bin"
    assert write_bin(drawings, p) == 25
    back = list(read_drawings(p))
    assert len(back) == 25
    for a, b in zip(drawings, back):
        assert b.word == "cat" and b.key_id == a.key_id and b.countrycode == a.countrycode
        assert b.recognized == a.recognized
        assert b.timestamp[:19] == a.timestamp[:19]  # .bin stores whole seconds
        assert [s.tolist() for s in b.strokes] == [s.tolist() for s in a.strokes]


def test_gzip_is_detected_by_content_not_name(tmp_path, shared_data):
    src = shared_data / "quickdraw" / "simplified" / "cat.ndjson"
    p = tmp_path / "cat.ndjson"  # gzip bytes under a plain name
    p.write_bytes(gzip.compress(src.read_bytes()))
    assert [ndjson_line(d) for d in read_drawings(p)] == src.read_text().splitlines()


def test_multi_member_gzip(tmp_path):
    p = tmp_path / "two.ndjson.gz"
    p.write_bytes(gzip.compress((SIMPLIFIED_LINE + "\n").encode())
                  + gzip.compress((_line(key_id="2") + "\n").encode()))
    assert [d.key_id for d in read_drawings(p)] == [5201136883597312, 2]


def test_small_blocks_give_the_same_result(tmp_path, shared_data):
    src = shared_data / "quickdraw" / "raw" / "cat.ndjson"
    big = [ndjson_line(d) for d in read_drawings(src)]
    chunks = list(iter_chunks(src, chunk_bytes=4096))
    assert len(chunks) > 3
    small = [ndjson_line(d) for c in chunks for d in c.drawings()]
    assert small == big


def test_writers_round_trip_raw_drawings(tmp_path, shared_data):
    src = shared_data / "quickdraw" / "raw" / "cat.ndjson"
    drawings = list(read_drawings(src))
    for name, writer in (("a.ndjson.gz", write_ndjson), ("a.csv", write_csv)):
        writer(drawings, tmp_path / name)
        back = list(read_drawings(tmp_path / name))
        assert len(back) == len(drawings)
        for a, b in zip(drawings, back):
            assert all(np.array_equal(x, y) for x, y in zip(a.strokes, b.strokes))
            assert (a.word, a.key_id, a.timestamp) == (b.word, b.key_id, b.timestamp)


# ---- vocabulary and timestamps ---------------------------------------------------------------


def test_vocabulary_kaggle_order_and_labels(tmp_path):
    words = ["zebra", "The Eiffel Tower", "apple", "teddy-bear", "The Mona Lisa", "tent"]
    assert sort_words(words) == ["apple", "teddy-bear", "tent", "The Eiffel Tower", "The Mona Lisa", "zebra"]
    assert sort_words(["b", "B", "a"]) == ["a", "B", "b"]
    v = Vocabulary.from_words(words + ["The_Eiffel_Tower"])  # a Kaggle label is the same class
    assert len(v) == 6
    assert v.index("The_Eiffel_Tower") == v.index("The Eiffel Tower") == 3
    assert v.labels[3] == "The_Eiffel_Tower" and word_to_label("hot dog") == "hot_dog"
    assert label_to_word("hot_dog") == "hot dog" and v.index("nope") == -1
    v.save(tmp_path / "classes.txt")
    assert Vocabulary.load(tmp_path / "classes.txt").words == v.words
    with pytest.raises(DataError, match="repeats"):
        Vocabulary(["cat", "cat"])


def test_timestamps_round_trip():
    texts = ["2017-03-02 23:25:10.07453 UTC", "2017-01-27 18:31:47.1 UTC", "2017-01-27 18:31:47 UTC", ""]
    us = parse_timestamps(texts)
    assert us[3] == MISSING_TIMESTAMP
    assert format_timestamps(us, "google") == texts
    assert format_timestamps(us, "kaggle")[:3] == ["2017-03-02 23:25:10.074530", "2017-01-27 18:31:47.100000",
                                                   "2017-01-27 18:31:47"]
    assert parse_timestamps(["2017-03-02 23:25:10.074530"])[0] == us[0]
    assert parse_timestamps(["2000-02-29T00:00:00Z"])[0] == 951782400 * 10**6
    with pytest.raises(DataError):
        parse_timestamps(["2017-03-02 23:25:10.1234567 UTC"])  # finer than a microsecond: refused


# ---- bad input: one test per reason ---------------------------------------------------------


def test_malformed_json(tmp_path):
    p = _ndjson(tmp_path, [SIMPLIFIED_LINE, SIMPLIFIED_LINE[:-20], "not json", '{"word":"cat",}'])
    d, skips = _skips(p)
    assert len(d) == 1 and skips == {"malformed_json": 3}
    c = tmp_path / "cat.csv"
    c.write_text('countrycode,drawing,key_id,recognized,timestamp,word\nUS,"[[[1, 2], [3, 4]]",1,True,,cat\n'
                 'US,"[[[1, 2], [3, x]]]",2,True,,cat\n')
    assert _skips(c)[1] == {"malformed_json": 2}


def test_malformed_csv_row(tmp_path):
    c = tmp_path / "cat.csv"
    c.write_text('countrycode,drawing,key_id,recognized,timestamp,word\nUS,"[[[1, 2], [3, 4]]]",1,True\n'
                 'US,"[[[1, 2], [3, 4]]]",2,True,,cat,extra\nUS,"[[[1, 2], [3, 4]]],3,True,,cat\n'
                 'US,"[[[1, 2], [3, 4]]]",4,True,,cat\n')
    d, skips = _skips(c)
    # RFC 4180 (issue 14): the quote left open on line 4 runs on into line 5, so both are one bad
    # row, as Python's csv module reads them
    assert len(list(csv.reader(c.open(newline="")))) == 4
    assert [x.key_id for x in d] == [] and skips == {"malformed_row": 3}


def test_missing_fields(tmp_path):
    p = _ndjson(tmp_path, [_line(drawing=None), _line(key_id=None), _line(word=None), _line(countrycode=None),
                           _line(key_id="3", timestamp=None, recognized=None)])
    d, skips = _skips(p)
    assert skips == {"missing_field": 3}
    assert [x.countrycode for x in d] == ["", "VE"] and d[1].timestamp == "" and d[1].recognized
    c = tmp_path / "cat.csv"
    c.write_text('countrycode,drawing,key_id,recognized,timestamp,word\nUS,"[[[1, 2], [3, 4]]]",,True,,cat\n'
                 'US,,5,True,,cat\nUS,"[[[1, 2], [3, 4]]]",6,True,,\n')
    assert _skips(c)[1] == {"missing_field": 3}
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("countrycode,key_id,word\nUS,1,cat\n")
    with pytest.raises(DataError, match="no 'drawing' column"):
        list(read_drawings(bad_header))


def test_bad_values(tmp_path):
    p = _ndjson(tmp_path, [_line(key_id="12x"), _line(recognized="yes"), _line(timestamp="yesterday"),
                           _line(countrycode="USA"), _line(key_id="-4"), _line(key_id="99999999999999999999")])
    assert _skips(p) == ([], {"bad_value": 6})


def test_length_mismatch(tmp_path):
    p = _ndjson(tmp_path, [_line(drawing=[[[1, 2, 3], [4, 5]]]), _line(drawing=[[[1, 2], [4, 5], [0, 1, 2]]])])
    assert _skips(p) == ([], {"length_mismatch": 2})


def test_empty_drawings_and_strokes(tmp_path):
    p = _ndjson(tmp_path, [_line(drawing=[]), _line(drawing=[[[], []]]), _line(drawing=[[[1], [2]], []])])
    assert _skips(p)[1] == {"empty_drawing": 1, "empty_stroke": 2}
    c = tmp_path / "cat.csv"
    c.write_text('countrycode,drawing,key_id,recognized,timestamp,word\nUS,"[]",1,True,,cat\n')
    assert _skips(c)[1] == {"empty_drawing": 1}


def test_nan_and_inf(tmp_path):
    p = _ndjson(tmp_path, ['{"word":"cat","key_id":"1","drawing":[[[NaN,1],[2,3]]]}',
                           '{"word":"cat","key_id":"2","drawing":[[[1,2],[Infinity,3]]]}',
                           '{"word":"cat","key_id":"3","drawing":[[[1,2],[3,-Infinity]]]}',
                           '{"word":"cat","key_id":"4","drawing":[[[1,2],[3,4],[0,1e999]]]}'])
    assert _skips(p) == ([], {"non_finite": 4})


def test_coordinates_outside_the_format_range(tmp_path):
    p = _ndjson(tmp_path, [_line(drawing=[[[0, 256], [1, 2]]]), _line(drawing=[[[-1, 2], [1, 2]]]),
                           _line(drawing=[[[1.5, 2], [1, 2]]]), _line(drawing=[[[0, 255], [0, 255]]])])
    d, skips = _skips(p)
    assert len(d) == 1 and skips == {"out_of_range": 3}
    raw = _ndjson(tmp_path, [_line(drawing=[[[0.5, 2], [1, 2], [0, 5]]]), _line(drawing=[[[0.5, 2], [1, 2], [-1, 5]]]),
                             _line(drawing=[[[2e6, 2], [1, 2], [0, 5]]])], "raw.ndjson")
    d, skips = _skips(raw)
    assert len(d) == 1 and d[0].has_time and skips == {"out_of_range": 2}


def test_mixed_formats(tmp_path):
    p = _ndjson(tmp_path, [_line(drawing=[[[1, 2], [1, 2]]]), _line(drawing=[[[1, 2], [1, 2], [0, 5]]]),
                           _line(drawing=[[[1, 2], [1, 2]], [[1, 2], [1, 2], [0, 5]]])])
    d, skips = _skips(p)
    assert len(d) == 1 and skips == {"mixed_format": 2}


def test_unknown_words(tmp_path):
    p = _ndjson(tmp_path, [_line(), _line(word="dog", key_id="2"), _line(word="The_Eiffel_Tower", key_id="3")])
    d, skips = _skips(p, classes=["cat", "The Eiffel Tower"])
    assert [x.word for x in d] == ["cat", "The Eiffel Tower"] and skips == {"unknown_word": 1}


def test_duplicate_key_ids(tmp_path):
    p = _ndjson(tmp_path, [_line(), _line(), _line(key_id="2")])
    d, skips = _skips(p)
    assert [x.key_id for x in d] == [5201136883597312, 2] and skips == {"duplicate_key_id": 1}
    with pytest.raises(DataError, match=r"data\.ndjson: line 2: duplicate_key_id"):
        list(read_drawings(p, on_bad="error"))


def test_truncated_gzip(tmp_path, shared_data):
    src = (shared_data / "quickdraw" / "simplified" / "cat.ndjson").read_bytes()
    p = tmp_path / "cat.ndjson.gz"
    blob = gzip.compress(src)
    p.write_bytes(blob[: len(blob) * 2 // 3])
    d, skips = _skips(p)
    assert 0 < len(d) < 25 and skips == {"truncated_file": 1}
    assert [ndjson_line(x) for x in d] == src.decode().splitlines()[:len(d)]  # nothing shifted
    with pytest.raises(DataError, match=rf"cat\.ndjson\.gz: line {len(d) + 1}: truncated_file"):
        list(read_drawings(p, on_bad="error"))


def test_truncated_bin(tmp_path):
    d = Drawing(strokes=[np.array([[1, 2], [3, 4]])], key_id=7, countrycode="US")
    p = tmp_path / "cat.bin"
    write_bin([d, d], p)
    p.write_bytes(p.read_bytes()[:-3])
    got, skips = _skips(p)
    assert len(got) == 1 and skips == {"truncated_file": 1}
    with pytest.raises(DataError, match=r"cat\.bin: record 2: truncated_file"):
        list(read_drawings(p, on_bad="error"))
    empty = tmp_path / "dog.bin"
    empty.write_bytes(struct.pack("<Q2sBIH", 5, b"US", 1, 0, 0))
    assert _skips(empty)[1] == {"empty_drawing": 1}


def test_on_bad_error_names_file_line_and_reason(tmp_path):
    p = _ndjson(tmp_path, [SIMPLIFIED_LINE, "", _line(drawing=[[[1, 2, 3], [4, 5]]], key_id="5")], "bad.ndjson")
    with pytest.raises(DataError) as err:
        list(read_drawings(p, on_bad="error"))
    msg = str(err.value)
    assert str(p) in msg and "line 3" in msg and "length_mismatch" in msg
    c = tmp_path / "bad.csv"
    c.write_text('countrycode,drawing,key_id,recognized,timestamp,word\nUS,"[[[1, 2], [3, 4]]]",1,True,,cat\n'
                 'US,"[[[1, 2], [3, 4]]]",2,maybe,,cat\n')
    with pytest.raises(DataError, match=r"bad\.csv: line 3: bad_value"):
        list(read_drawings(c, on_bad="error"))


def test_every_reason_is_described():
    assert all(REASONS[k] for k in REASONS if k != "ok")

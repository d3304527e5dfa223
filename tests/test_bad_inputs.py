"""A generated folder of bad stroke files through every reader, `prepare` and `predict`: each ends
with exit 0 and its bad rows counted, or exit 2 and one line on stderr; never a traceback. Every
submission written has the input's rows, in the input's order (checked against Python's csv and
json modules), and the targeted cases of issue 14 keep their promises."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sys
import zlib
from pathlib import Path

import pytest
from doodle_model import tiny_run

from nnlab.cli import main
from nnlab.errors import DataError
from nnlab.ingest.chunks import iter_chunks, read_drawings
from nnlab.ingest.reasons import SkipStats
from nnlab.strokes.drawing import Drawing

HEADER = "countrycode,drawing,key_id,recognized,timestamp,word"


def _lines(shared_data: Path, n: int = 20) -> list[str]:
    with open(shared_data / "quickdraw" / "simplified" / "cat.ndjson", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def _csv_text(shared_data: Path, n: int = 20) -> str:
    rows = [json.loads(x) for x in _lines(shared_data, n)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER.split(","))
    for r in rows:
        w.writerow([r["countrycode"], json.dumps(r["drawing"], separators=(",", ":")), r["key_id"],
                    r["recognized"], r["timestamp"], r["word"]])
    return buf.getvalue()


def make_corpus(shared_data: Path, folder: Path) -> dict[str, Path]:
    """name -> file: the bad inputs of issue 14 and the kinds the readers already count."""
    folder.mkdir(parents=True, exist_ok=True)
    nd = "\n".join(_lines(shared_data)) + "\n"
    text = _csv_text(shared_data)
    csv_lines = text.splitlines(keepends=True)
    files: dict[str, bytes] = {
        "truncated.ndjson.gz": gzip.compress(nd.encode())[:-40],
        "truncated.csv.gz": gzip.compress(text.encode())[:-40],
        "quoted_newline.csv": "".join(csv_lines[:5] + [re.sub(r"^(\w\w),", '"A\nB",', csv_lines[5])]
                                      + csv_lines[6:]).encode(),
        "quoted_comma_word.csv": "".join(csv_lines[:3] + [csv_lines[3].rsplit(",", 1)[0] + ',"cat, big"\n']
                                         + csv_lines[4:]).encode(),
        "bom_key_first.csv": b"\xef\xbb\xbf" + _key_first(text, bad_row=4).encode(),
        "bom.ndjson": b"\xef\xbb\xbf" + nd.encode(),
        "bad_utf8_word.ndjson": nd.replace('"word":"cat"', '"word":"c\udcffat"', 1)
        .encode("utf-8", "surrogateescape"),
        "empty.ndjson": b"",
        "empty.bin": b"",
        "empty.ndjson.gz": gzip.compress(b""),
        "header_only.csv": (HEADER + "\n").encode(),
        "corrupt.ndjson.gz": _corrupt_gzip(nd.encode()),
        "deep.ndjson": (nd + '{"key_id":"5","drawing":' + "[" * 10_000 + "]" * 10_000 + "}\n").encode(),
        "malformed_lines.ndjson": (nd.replace("\n", "\n{not json\n", 1) + '{"word":"cat"}\n'
                                   + '{"word":"cat","key_id":"7","drawing":[[[1,2],[3]]]}\n').encode(),
        "binary_garbage.ndjson": bytes(range(256)) * 8,
        "not_utf8.csv": (HEADER + "\n").encode() + b"\xff\xfe,\x80,\x81\n",
        "no_drawing_column.csv": b"a,b,c\n1,2,3\n",
        "nan_and_range.ndjson": (nd + '{"word":"cat","key_id":"8","drawing":[[[NaN,2],[3,4]]]}\n'
                                 + '{"word":"cat","key_id":"9","drawing":[[[999,2],[3,4]]]}\n').encode(),
        "truncated.bin": _bin_bytes()[:-3],
    }
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out


def _key_first(text: str, bad_row: int) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    order = [2, 0, 1, 3, 4, 5]
    rows = [[r[k] for k in order] for r in rows]
    rows[bad_row][2] = "[[[1,2],[3]]]"  # length mismatch: a bad row whose key_id is still readable
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _corrupt_gzip(data: bytes) -> bytes:
    z = bytearray(gzip.compress(data * 20))
    for k in range(len(z) // 2, len(z) // 2 + 40):
        z[k] ^= 0x5A
    return bytes(z)


def _bin_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        import numpy as np

        from nnlab.ingest.writers import write_bin

        d = [Drawing([np.array([[0, 0], [10, 20]])], word="cat", key_id=k, countrycode="US") for k in (1, 2, 3)]
        write_bin(d, Path(tmp) / "x.bin")
        return (Path(tmp) / "x.bin").read_bytes()


def reference_keys(path: Path) -> list[str] | None:
    """The key_id of every row as Python's csv / json modules read it ("" when unreadable), or
    None for formats without rows to check (.bin) and unreadable files."""
    raw = path.read_bytes()
    cut = False
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error):
            d = zlib.decompressobj(wbits=31)
            try:
                raw = d.decompress(raw)
            except Exception:  # noqa: BLE001 - corrupt: no reference
                return None
            cut = True
    text = raw.decode("utf-8-sig", "replace")
    if ".csv" in path.name:
        if cut:
            text = text[:text.rfind("\n") + 1]
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or "key_id" not in rows[0]:
            return None
        col = rows[0].index("key_id")
        return [r[col] if col < len(r) else "" for r in rows[1:] if any(c.strip() for c in r)]
    if ".ndjson" in path.name:
        keys = []
        lines = text.split("\n")
        if cut:  # the row a truncated stream cuts off is the warning's, not a row
            lines = lines[:-1]
        for line in lines:
            if not line.strip(" \t\r"):
                continue
            m = re.search(r'"key_id"\s*:\s*"?(-?\d+)', line)
            keys.append(m.group(1) if m else "")
        return keys
    return None


def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["nnlab", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> dict[str, Path]:
    return make_corpus(shared_data, tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def run_dir() -> Path:
    return tiny_run()


NAMES = sorted(make_corpus.__doc__ and [
    "truncated.ndjson.gz", "truncated.csv.gz", "quoted_newline.csv", "quoted_comma_word.csv", "bom_key_first.csv",
    "bom.ndjson", "bad_utf8_word.ndjson", "empty.ndjson", "empty.bin", "empty.ndjson.gz", "header_only.csv",
    "corrupt.ndjson.gz", "deep.ndjson", "malformed_lines.ndjson", "binary_garbage.ndjson", "not_utf8.csv",
    "no_drawing_column.csv", "nan_and_range.ndjson", "truncated.bin"])


@pytest.mark.parametrize("name", NAMES)
def test_readers_count_or_refuse(corpus, name):
    path = corpus[name]
    for reader in (lambda: list(iter_chunks(path, stats=SkipStats())), lambda: list(read_drawings(path)),
                   lambda: list(read_drawings(path, on_bad="error"))):
        try:
            reader()
        except DataError as exc:
            assert "\n" not in str(exc) and str(path.name) in str(exc)


@pytest.mark.parametrize("name", NAMES)
def test_prepare_and_predict_exit_0_or_2_with_one_line(corpus, run_dir, name, tmp_path, capsys, monkeypatch):
    path = corpus[name]
    code, err = run_cli(["data", "prepare", str(path), "--out", str(tmp_path / "store"), "--workers", "1"],
                        capsys, monkeypatch)
    assert code in (0, 2), err
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    sub = tmp_path / "sub.csv"
    code, err = run_cli(["predict", str(run_dir), str(path), "--out", str(sub)], capsys, monkeypatch)
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
        assert not sub.exists()
    else:
        with open(sub, newline="") as fh:
            got = [r[0] for r in list(csv.reader(fh))[1:]]
        want = reference_keys(path)
        if want is not None:
            assert len(got) == len(want), (got, want)
            assert [g for g, w in zip(got, want) if w] == [w for w in want if w]
    assert not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------------ the targeted cases of issue 14


def test_truncated_gzip_warns_with_the_last_line_and_strict_exits_2(corpus, run_dir, tmp_path, capsys, monkeypatch):
    for name in ("truncated.ndjson.gz", "truncated.csv.gz"):
        path = corpus[name]
        code, err = run_cli(["predict", str(run_dir), str(path), "--out", str(tmp_path / "s.csv")], capsys,
                            monkeypatch)
        # before: exit 0 and no warning
        assert code == 0 and "truncated" in err and path.name in err and re.search(r"after line \d+", err), err
        code, err = run_cli(["predict", str(run_dir), str(path), "--out", str(tmp_path / "t.csv"), "--strict"],
                            capsys, monkeypatch)
        assert code == 2 and "truncated" in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "t.csv").exists()


def test_csv_quoted_newline_follows_rfc_4180(corpus, run_dir, tmp_path, capsys, monkeypatch):
    path = corpus["quoted_newline.csv"]
    rows = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    assert len(rows) == 20 and rows[4]["countrycode"] == "A\nB"
    stats = SkipStats()
    chunks = list(iter_chunks(path, stats=stats))
    got = [int(k) for c in chunks for k in c.key_ids]
    # the row with "A\nB" is a bad value (country codes have 2 letters); every other row as csv reads it
    assert got == [int(r["key_id"]) for r in rows if r["countrycode"] != "A\nB"]
    assert stats.as_dict() == {"bad_value": 1} and stats.examples[0]["line"] == 6
    code, err = run_cli(["predict", str(run_dir), str(path), "--out", str(tmp_path / "s.csv")], capsys, monkeypatch)
    sub = list(csv.reader(open(tmp_path / "s.csv", newline="")))[1:]
    # before: 21 rows, one with key_id 'B"'
    assert code == 0 and [r[0] for r in sub] == [r["key_id"] for r in rows], err


def test_csv_scanner_matches_pythons_csv_on_quoting(shared_data, tmp_path):
    text = _csv_text(shared_data, 24)
    lines = text.splitlines(keepends=True)
    # quoted fields everywhere, a quoted word with a newline and with doubled quotes
    out = [lines[0]]
    for k, line in enumerate(lines[1:]):
        r = next(csv.reader([line]))
        if k % 3 == 0:
            r[5] = "cat"
        out.append(",".join('"' + c.replace('"', '""') + '"' for c in r) + ("\r\n" if k % 2 else "\n"))
    path = tmp_path / "quoted.csv"
    path.write_text("".join(out), newline="")
    want = [(int(r["key_id"]), r["word"], r["countrycode"]) for r in csv.DictReader(open(path, newline=""))]
    got = [(d.key_id, d.word, d.countrycode) for d in read_drawings(path, on_bad="error")]
    assert got == want
    for chunk_bytes in (1 << 10, 1 << 12):  # quoted newlines across block boundaries
        word = 'big\n"cat"'
        rows = list(csv.reader(io.StringIO(text)))
        for r in rows[1::2]:
            r[5] = word
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        path.write_text(buf.getvalue())
        want = [(int(r["key_id"]), r["word"]) for r in csv.DictReader(open(path, newline=""))]
        got = [(int(k), c.word_list[w]) for c in iter_chunks(path, on_bad="error", chunk_bytes=chunk_bytes)
               for k, w in zip(c.key_ids, c.words)]
        assert got == want


def test_bom_csv_keeps_the_key_id_of_a_bad_row(corpus, run_dir, tmp_path, capsys, monkeypatch):
    path = corpus["bom_key_first.csv"]
    code, err = run_cli(["predict", str(run_dir), str(path), "--out", str(tmp_path / "s.csv")], capsys, monkeypatch)
    sub = list(csv.reader(open(tmp_path / "s.csv", newline="")))[1:]
    want = reference_keys(path)
    # before: the bad row's key_id was empty in the submission
    assert code == 0 and [r[0] for r in sub] == want and all(want), (sub, err)


def test_ndjson_bom_and_invalid_utf8_word(corpus):
    stats = SkipStats()
    assert len(list(read_drawings(corpus["bom.ndjson"], stats=stats))) == 20 and stats.total() == 0
    stats = SkipStats()
    drawings = list(read_drawings(corpus["bad_utf8_word.ndjson"], stats=stats))
    # before: line 1 was malformed_json / a class named "c\ufffdat"
    assert len(drawings) == 19 and {d.word for d in drawings} == {"cat"}
    assert stats.as_dict() == {"invalid_utf8": 1} and stats.examples[0]["line"] == 1


def test_corrupt_gzip_and_deep_nesting_are_counted(corpus, run_dir, tmp_path, capsys, monkeypatch):
    for name, reason in (("corrupt.ndjson.gz", "is corrupt"), ("deep.ndjson", "malformed_json")):
        code, err = run_cli(["predict", str(run_dir), str(corpus[name]), "--out", str(tmp_path / "s.csv")], capsys,
                            monkeypatch)
        # before: zlib.error / RecursionError tracebacks
        assert code == 0 and reason in err and "Traceback" not in err, err


def test_a_line_over_the_cap_is_line_too_long(tmp_path, shared_data, monkeypatch):
    import nnlab.ingest.sources as sources

    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 1 << 16)
    lines = _lines(shared_data, 5)
    long = '{"word":"cat","key_id":"3","drawing":[[[' + ",".join(["1"] * 40_000) + "]]]}"
    path = tmp_path / "long.ndjson.gz"
    path.write_bytes(gzip.compress(("\n".join(lines[:2] + [long] + lines[2:]) + "\n").encode()))
    stats = SkipStats()
    got = [int(k) for c in iter_chunks(path, stats=stats, chunk_bytes=1 << 12) for k in c.key_ids]
    assert got == [int(json.loads(x)["key_id"]) for x in lines]
    assert stats.as_dict() == {"line_too_long": 1} and stats.examples[0]["line"] == 3
    with pytest.raises(DataError, match="line 3: line_too_long"):
        list(iter_chunks(path, on_bad="error", chunk_bytes=1 << 12))

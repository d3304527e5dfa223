"""Byte sources: which files to read, their format, and their bytes (plain or gzip, whole lines at a
time, truncation and corruption detected)."""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from nnlab.errors import DataError
from nnlab.fileio import is_gzip
from nnlab.ingest.scan_csv import _csv_cut
from nnlab.ingest.scan_values import _newlines
from nnlab.strokes.vocabulary import label_to_word

CHUNK_BYTES = 8 << 20
# A line (a drawing) longer than this is skipped as line_too_long: a 200 MB line of zeros gzips to
# 200 KB, and would otherwise take gigabytes once parsed.
MAX_LINE_BYTES = 16 << 20


class _ByteSource:
    """Reads a file (plain or gzip, by magic bytes) in blocks of about `chunk_bytes`.

    `blocks()` yields the bytes as they come, `text_blocks()` whole lines. After the iteration,
    `trouble` is None or (reason, where): "truncated_file" or "corrupt_file", and for text the
    line of the row cut off."""

    def __init__(self, path: Path, chunk_bytes: int = CHUNK_BYTES):
        self.path = path
        self.chunk_bytes = chunk_bytes
        self.trouble: tuple[str, object] | None = None
        self.long_lines: list[int] = []
        self.gzip = is_gzip(path)

    def text_blocks(self, quoted: bool = False) -> Iterator[tuple[np.ndarray, int, int]]:
        """Whole lines: (uint8 block, lines before it, newlines in it). A block is a view of a
        buffer reused for the next one: use it before asking for the next. quoted: a CSV, whose
        rows end only at a newline outside RFC 4180 quotes (a quoted field may hold newlines).

        A line (a quoted CSV row) longer than MAX_LINE_BYTES is skipped up to its next newline,
        and its line number added to `long_lines` (the parser counts it as line_too_long)."""
        cut_at = _csv_cut if quoted else _newlines
        buf = np.empty(self.chunk_bytes + 16, np.uint8)
        fill = 0
        lines_before = 0
        skipping = False
        for raw in self.blocks():
            piece = np.frombuffer(raw, np.uint8)
            off = 0
            while off < len(piece):
                if skipping:  # drop the rest of a line over the cap
                    nl_at = np.flatnonzero(piece[off:] == 10)
                    if not len(nl_at):
                        break
                    off += int(nl_at[0]) + 1
                    lines_before += 1
                    skipping = False
                    continue
                k = min(len(buf) - fill, len(piece) - off)
                buf[fill:fill + k] = piece[off:off + k]
                fill += k
                off += k
                if fill < len(buf):
                    continue
                nl, cut = cut_at(buf, fill)
                if cut == 0:  # one line longer than the buffer: grow it, up to the cap
                    if fill >= MAX_LINE_BYTES:
                        self.long_lines.append(lines_before + 1)
                        skipping, fill = True, 0
                        buf = np.empty(self.chunk_bytes + 16, np.uint8)
                    else:
                        buf = np.concatenate([buf, np.empty_like(buf)])
                    continue
                yield buf[:cut], lines_before, nl
                lines_before += nl
                buf[:fill - cut] = buf[cut:fill]
                fill -= cut
        nl, cut = cut_at(buf, fill)
        if self.trouble is not None:
            # The row cut off by the end of the stream is counted as the trouble, never parsed.
            if cut:
                yield buf[:cut], lines_before, nl
            self.trouble = (self.trouble[0], lines_before + nl + 1)
            return
        if fill:
            yield buf[:fill], lines_before, nl

    def blocks(self) -> Iterator[bytes]:
        """Decompressed blocks; marks a gzip stream that ends before its end-of-stream marker."""
        with open(self.path, "rb") as f:
            if not self.gzip:
                while block := f.read(self.chunk_bytes):
                    yield block
                return
            d = zlib.decompressobj(wbits=31)
            fed = False
            while True:
                comp = f.read(1 << 20)
                if not comp:
                    break
                while comp:
                    fed = True
                    try:
                        out = d.decompress(comp)
                    except zlib.error as exc:
                        self.trouble = ("corrupt_file", f"gzip data is corrupt ({exc})")
                        return
                    if out:
                        yield out
                    if d.eof:
                        comp = d.unused_data
                        d = zlib.decompressobj(wbits=31)
                        fed = False
                    else:
                        comp = b""
            if fed and not d.eof:
                self.trouble = ("truncated_file", 0)



def detect_format(path: Path) -> str:
    """"ndjson", "csv", "bin" or "sketchrnn" (.npz), from the name (a .gz suffix is ignored), else
    from the content."""
    name = path.name.lower()
    if name.endswith(".npz"):
        return "sketchrnn"
    if name.endswith(".gz"):
        name = name[:-3]
    for ext, fmt in ((".ndjson", "ndjson"), (".jsonl", "ndjson"), (".json", "ndjson"),
                     (".csv", "csv"), (".bin", "bin")):
        if name.endswith(ext):
            return fmt
    src = _ByteSource(path, chunk_bytes=1 << 16)
    head = b""
    for block, _, _ in src.text_blocks():
        head = bytes(block[:4096])
        break
    text = head.lstrip()
    if text.startswith(b"{"):
        return "ndjson"
    if b"drawing" in text.split(b"\n", 1)[0]:
        return "csv"
    raise DataError(f"{path}: cannot tell its format; name it *.ndjson, *.csv or *.bin (optionally .gz)")


def word_of_bin_file(path: Path) -> str:
    """The word of a Google .bin file: 'cat.bin' or 'full_binary_cat.bin' -> 'cat'."""
    name = path.name
    for suffix in (".gz", ".bin"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    if name.startswith("full_binary_"):
        name = name[len("full_binary_"):]
    return label_to_word(name)



def find_sources(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into the data files they hold, in a deterministic order
    (arguments in the given order; a folder's files sorted by path)."""
    out: list[Path] = []
    pattern = re.compile(r"(\.(ndjson|jsonl|json|csv|bin)(\.gz)?|\.npz)$", re.IGNORECASE)
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and pattern.search(f.name))
            if not found:
                raise DataError(f"{p}: no .ndjson, .csv or .bin files (optionally .gz) or sketch-rnn .npz "
                                "files in this folder")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for p in out:
        rp = p.resolve()
        if rp not in seen:
            seen.add(rp)
            unique.append(p)
    return unique

"""numba scanner for Kaggle CSVs (RFC 4180 quoting), one block of whole lines at a time."""

from __future__ import annotations

import numba

from nnlab.ingest.reasons import R_BAD_VALUE, R_MALFORMED_JSON, R_MALFORMED_ROW, R_MISSING, R_OK
from nnlab.ingest.scan_values import (
    _COMMA,
    _NO_INT,
    _Q,
    F_CL,
    F_CS,
    F_FLAGS,
    F_KEY,
    F_REC,
    F_TS,
    F_WL,
    F_WS,
    F_Y,
    FLAG_WORD_ESC,
    _bool_literal,
    _finish_row,
    _new_row,
    _parse_drawing,
    _parse_int,
    _parse_timestamp,
    _ws,
)

# CSV column roles
ROLE_IGNORE, ROLE_COUNTRY, ROLE_DRAWING, ROLE_KEY, ROLE_REC, ROLE_TS, ROLE_WORD, ROLE_Y = range(8)
_CSV_ROLES = {"countrycode": ROLE_COUNTRY, "drawing": ROLE_DRAWING, "key_id": ROLE_KEY,
              "recognized": ROLE_REC, "timestamp": ROLE_TS, "word": ROLE_WORD, "y": ROLE_Y}


@numba.njit(cache=True)
def _csv_cut(buf, n):
    """(newlines in buf[:cut], cut): cut is just after the last newline that ends a row, i.e.
    outside RFC 4180 quotes, 0 if none. Fast path: when buf[:last newline] holds an even number
    of quotes, that newline is outside quotes (doubled quotes count twice); otherwise the exact
    scan `_csv_cut_exact` decides. (A stray quote inside an unquoted field, which RFC 4180 does not
    allow, makes the count odd and takes the exact scan; only two stray quotes plus a quoted
    newline across the block's last line would fool the fast path.)"""
    last = n
    while last > 0 and buf[last - 1] != 10:
        last -= 1
    quotes = 0
    count = 0
    for k in range(last):
        quotes += buf[k] == _Q  # branch-free, so that it vectorises
        count += buf[k] == 10
    if quotes % 2 == 0:
        return count, last
    return _csv_cut_exact(buf, n)


@numba.njit(cache=True)
def _csv_cut_exact(buf, n):
    """`_csv_cut` by a scan of the quoting (a quote opens a quoted field only at the field's start)."""
    count = 0
    at_cut = 0
    cut = 0
    start = True
    k = 0
    while k < n:
        c = buf[k]
        if c == _Q and start:  # a quoted field: tight loop to its closing quote
            k += 1
            while k < n:
                while k < n and buf[k] != _Q:
                    count += buf[k] == 10
                    k += 1
                if k + 1 < n and buf[k + 1] == _Q:  # a doubled quote
                    k += 2
                    continue
                break
            start = False
        elif c == _COMMA:
            start = True
        elif c == 10:
            count += 1
            start = True
            cut = k + 1
            at_cut = count
        else:
            start = False
        k += 1
    return at_cut, cut


@numba.njit(cache=True)
def _scan_csv(buf, roles, expect, line0, px, py, pt, slen, rows, bad):
    """Parse the CSV rows of buf (whole lines), in one pass over the bytes.

    Returns (rows kept, bad rows, points, strokes, expect)."""
    n = len(buf)
    ncols = len(roles)
    R = B = P = S = 0  # rows kept, bad rows, points, strokes
    line = line0 - 1
    s = 0
    while s < n:
        line += 1
        i = _ws(buf, s, n)
        if i >= n or buf[i] == 10:  # blank line
            s = i + 1
            continue
        i = s
        status = R_OK
        inner = 0  # newlines inside quoted fields
        npts = 0
        nstr = 0
        narr = 0
        plain = False
        drawn = False
        _new_row(rows, R)
        for c in range(ncols):
            role = roles[c]
            dq = False
            if i < n and buf[i] == _Q:
                found = False
                if role == ROLE_DRAWING and status == R_OK:
                    # parse the drawing straight from the bytes; its closing quote must follow
                    j, npts, nstr, narr, plain, st = _parse_drawing(buf, i + 1, n, px, py, pt, P, slen, S)
                    if st == R_OK:
                        j = _ws(buf, j, n)
                        if j < n and buf[j] == _Q:
                            fs = i + 1
                            fe = j
                            i = j + 1
                            found = True
                            drawn = True
                if not found:
                    j = i + 1
                    closed = False
                    while j < n:  # RFC 4180: a quoted field may hold newlines
                        if buf[j] == _Q:
                            if j + 1 < n and buf[j + 1] == _Q:
                                dq = True
                                j += 2
                                continue
                            closed = True
                            break
                        if buf[j] == 10:
                            inner += 1
                        j += 1
                    if not closed:
                        status = R_MALFORMED_ROW
                        i = j
                        break
                    fs = i + 1
                    fe = j
                    i = j + 1
            else:
                j = i
                while j < n and buf[j] != _COMMA and buf[j] != 10:
                    j += 1
                fs = i
                fe = j
                i = j
                if c == ncols - 1:
                    while fe > fs and buf[fe - 1] == 13:
                        fe -= 1
            if c < ncols - 1:
                if i >= n or buf[i] != _COMMA:
                    status = R_MALFORMED_ROW
                    break
                i += 1
            else:
                k = i
                while k < n and buf[k] == 13:
                    k += 1
                if k < n and buf[k] != 10:
                    status = R_MALFORMED_ROW
                    break
                i = k
            if status != R_OK:
                continue  # keep splitting: a malformed row wins over a semantic error
            if role == ROLE_DRAWING:
                if drawn:
                    continue
                if _ws(buf, fs, fe) == fe:
                    status = R_MISSING
                    continue
                j, npts, nstr, narr, plain, st = _parse_drawing(buf, fs, fe, px, py, pt, P, slen, S)
                if st == R_OK and _ws(buf, j, fe) != fe:
                    st = R_MALFORMED_JSON
                status = st
            elif role == ROLE_KEY:
                if fs == fe:
                    status = R_MISSING
                else:
                    v = _parse_int(buf, fs, fe)
                    if v == _NO_INT or v < 0:
                        status = R_BAD_VALUE
                    rows[R, F_KEY] = v
            elif role == ROLE_REC:
                if fs < fe:
                    b = _bool_literal(buf, fs, fe)
                    if b < 0:
                        status = R_BAD_VALUE
                    rows[R, F_REC] = b
            elif role == ROLE_TS:
                if fs < fe:
                    v = _parse_timestamp(buf, fs, fe)
                    if v == _NO_INT:
                        status = R_BAD_VALUE
                    rows[R, F_TS] = v
            elif role == ROLE_WORD:
                if fs == fe:
                    status = R_MISSING
                rows[R, F_WS] = fs
                rows[R, F_WL] = fe - fs
                if dq:
                    rows[R, F_FLAGS] |= FLAG_WORD_ESC
            elif role == ROLE_COUNTRY:
                if fe - fs > 2:
                    status = R_BAD_VALUE
                rows[R, F_CS] = fs
                rows[R, F_CL] = fe - fs
            elif role == ROLE_Y:
                if fs < fe:
                    v = _parse_int(buf, fs, fe)
                    if v == _NO_INT or v < 0:
                        status = R_BAD_VALUE
                    rows[R, F_Y] = v
        while i < n and buf[i] != 10:  # the rest of a malformed row
            i += 1
        s = i + 1
        R, B, P, S, expect = _finish_row(status, narr, plain, expect, px, py, pt, P, S, npts, nstr,
                                         rows, R, bad, B, line)
        line += inner
    return R, B, P, S, expect

"""numba scanners, part 1: values and drawings inside a row, and the row layout the scanners fill.

One pass over the bytes, no per-row ``json.loads``: numbers (exact integers and decimals),
timestamps, strings, and Google's ``[[[x...], [y...](, [t...])], ...]`` drawing arrays. The
format-specific row scanners are in `scan_csv`, `scan_ndjson` and `scan_bin`.
"""

from __future__ import annotations

import numba
import numpy as np

from nnlab.ingest.reasons import (
    R_EMPTY_DRAWING,
    R_EMPTY_STROKE,
    R_LENGTH,
    R_MALFORMED_JSON,
    R_MIXED,
    R_NON_FINITE,
    R_OK,
    R_RANGE,
    RAW_LIMIT,
    TIME_LIMIT,
)

_POW10 = np.array([10.0**k for k in range(23)])
_NO_INT = np.iinfo(np.int64).min

_Q, _COMMA, _LBR, _RBR, _LBRACE, _RBRACE, _COLON, _BSL = 34, 44, 91, 93, 123, 125, 58, 92


@numba.njit(cache=True, inline="always")
def _ws(buf, i, end):
    while i < end and (buf[i] == 32 or buf[i] == 9 or buf[i] == 13):
        i += 1
    return i


@numba.njit(cache=True)
def _parse_number(buf, i, end):
    """A JSON-like number at buf[i]: (value, next index, 0 ok / 1 syntax / 2 not finite)."""
    neg = False
    if i < end and (buf[i] == 45 or buf[i] == 43):  # - +
        neg = buf[i] == 45
        i += 1
    if i < end and (buf[i] == 78 or buf[i] == 110 or buf[i] == 73 or buf[i] == 105):  # NaN, Infinity
        j = i
        while j < end and ((65 <= buf[j] <= 90) or (97 <= buf[j] <= 122)):
            j += 1
        return 0.0, j, 2
    mant = 0
    exp10 = 0
    ndig = 0
    while i < end and 48 <= buf[i] <= 57:
        if mant < 100000000000000000:
            mant = mant * 10 + (buf[i] - 48)
        else:
            exp10 += 1
        ndig += 1
        i += 1
    if i < end and buf[i] == 46:  # .
        i += 1
        nfrac = 0
        while i < end and 48 <= buf[i] <= 57:
            if mant < 100000000000000000:
                mant = mant * 10 + (buf[i] - 48)
                exp10 -= 1
            nfrac += 1
            i += 1
        if nfrac == 0:
            return 0.0, i, 1
        ndig += nfrac
    if ndig == 0:
        return 0.0, i, 1
    if i < end and (buf[i] == 101 or buf[i] == 69):  # e E
        i += 1
        eneg = False
        if i < end and (buf[i] == 45 or buf[i] == 43):
            eneg = buf[i] == 45
            i += 1
        e = 0
        nd = 0
        while i < end and 48 <= buf[i] <= 57:
            if e < 100000:
                e = e * 10 + (buf[i] - 48)
            nd += 1
            i += 1
        if nd == 0:
            return 0.0, i, 1
        exp10 += -e if eneg else e
    v = float(mant)
    if mant != 0:
        if exp10 > 308:
            return 0.0, i, 2
        if exp10 > 0:
            while exp10 > 22:
                v *= 1e22
                exp10 -= 22
            v *= _POW10[exp10]
        elif exp10 < 0:
            k = -exp10
            while k > 22 and v != 0.0:
                v /= 1e22
                k -= 22
            if mant <= 9007199254740992 or k < -exp10:
                v /= _POW10[k]  # exact operands: the quotient is correctly rounded
            else:
                v = _div_exact(mant, _POW10[k])
    if v == np.inf:
        return 0.0, i, 2
    return (-v if neg else v), i, 0


@numba.njit(cache=True, inline="always")
def _split(a):
    c = 134217729.0 * a  # Veltkamp split: a == hi + lo with 26-bit halves
    hi = c - (c - a)
    return hi, a - hi


@numba.njit(cache=True)
def _div_exact(mant, p):
    """mant / p for an integer mant above 2**53 and an exact power of ten p, rounded once.

    float(mant) alone rounds first; raw coordinates printed with 17 digits can sit exactly
    half-way between two float32 values, where that first rounding flips the float32 result."""
    hi = float(mant)
    lo = float(mant - np.int64(hi))
    q = hi / p
    # exact q * p as prod + err (Dekker's product)
    prod = q * p
    qh, ql = _split(q)
    ph, pl = _split(p)
    err = ((qh * ph - prod) + qh * pl + ql * ph) + ql * pl
    r = (hi - prod) - err + lo
    return q + r / p


@numba.njit(cache=True)
def _parse_int(buf, s, e):
    """An integer in buf[s:e] (optional quotes stripped by the caller): value or _NO_INT."""
    neg = False
    if s < e and buf[s] == 45:
        neg = True
        s += 1
    if s >= e or e - s > 19:
        return _NO_INT
    v = 0
    for k in range(s, e):
        c = buf[k]
        if c < 48 or c > 57:
            return _NO_INT
        if v > 922337203685477580:  # next step would overflow int64
            return _NO_INT
        v = v * 10 + (c - 48)
        if v < 0:
            return _NO_INT
    return -v if neg else v


@numba.njit(cache=True)
def _digits(buf, s, n):
    v = 0
    for k in range(s, s + n):
        c = buf[k]
        if c < 48 or c > 57:
            return -1
        v = v * 10 + (c - 48)
    return v


@numba.njit(cache=True)
def _parse_timestamp(buf, s, e):
    """'YYYY-MM-DD HH:MM:SS[.f{1,6}][ UTC]' (or 'T' / 'Z') -> microseconds since the epoch, or
    _NO_INT when malformed. An empty span is MISSING_TIMESTAMP, which equals _NO_INT, so the
    caller tells them apart by the span length."""
    if e - s < 19 or buf[s + 4] != 45 or buf[s + 7] != 45 or buf[s + 13] != 58 or buf[s + 16] != 58:
        return _NO_INT
    if buf[s + 10] != 32 and buf[s + 10] != 84:
        return _NO_INT
    y = _digits(buf, s, 4)
    mo = _digits(buf, s + 5, 2)
    d = _digits(buf, s + 8, 2)
    hh = _digits(buf, s + 11, 2)
    mi = _digits(buf, s + 14, 2)
    ss = _digits(buf, s + 17, 2)
    if y < 0 or mo < 1 or mo > 12 or d < 1 or d > 31 or hh < 0 or hh > 23 or mi < 0 or mi > 59 \
            or ss < 0 or ss > 60:
        return _NO_INT
    i = s + 19
    us = 0
    if i < e and buf[i] == 46:
        i += 1
        nd = 0
        while i < e and 48 <= buf[i] <= 57:
            if nd == 6:
                return _NO_INT  # finer than microseconds: refuse rather than truncate
            us = us * 10 + (buf[i] - 48)
            nd += 1
            i += 1
        if nd == 0:
            return _NO_INT
        for _ in range(6 - nd):
            us *= 10
    if i < e and buf[i] == 90:  # Z
        i += 1
    elif e - i == 4 and buf[i] == 32 and buf[i + 1] == 85 and buf[i + 2] == 84 and buf[i + 3] == 67:
        i += 4  # " UTC"
    if i != e:
        return _NO_INT
    # days from the civil date (H. Hinnant's algorithm)
    yy = y - 1 if mo <= 2 else y
    era = yy // 400
    yoe = yy - era * 400
    mp = mo - 3 if mo > 2 else mo + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return ((days * 24 + hh) * 60 + mi) * 60 * 1000000 + ss * 1000000 + us


@numba.njit(cache=True)
def _skip_value(buf, i, end):
    """Skip one JSON value at buf[i] (string, literal, number, nested array/object): next index or -1."""
    if i >= end:
        return -1
    c = buf[i]
    if c == _Q:
        i += 1
        while i < end:
            if buf[i] == _BSL:
                i += 2
                continue
            if buf[i] == _Q:
                return i + 1
            i += 1
        return -1
    if c == _LBR or c == _LBRACE:
        depth = 0
        while i < end:
            c = buf[i]
            if c == _Q:
                i = _skip_value(buf, i, end)
                if i < 0:
                    return -1
                continue
            if c == _LBR or c == _LBRACE:
                depth += 1
            elif c == _RBR or c == _RBRACE:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return -1
    j = i
    while j < end and (buf[j] == 45 or buf[j] == 43 or buf[j] == 46 or 48 <= buf[j] <= 57
                       or 65 <= buf[j] <= 90 or 97 <= buf[j] <= 122):
        j += 1
    return j if j > i else -1


@numba.njit(cache=True, inline="always")
def _separator(buf, i, end):
    """After a list item: (index after ',' and blanks, 0), (index after ']', 1) or (i, -1)."""
    i = _ws(buf, i, end)
    if i < end and buf[i] == _COMMA:
        return _ws(buf, i + 1, end), 0
    if i < end and buf[i] == _RBR:
        return i + 1, 1
    return i, -1


@numba.njit(cache=True)
def _parse_drawing(buf, i, end, px, py, pt, p0, slen, s0):
    """Parse ``[[[x...],[y...](,[t...])], ...]`` at buf[i] into px/py/pt from p0 and slen from s0.

    Returns (next index, points, strokes, arrays per stroke, all numbers plain integers <= 255,
    status). Errors return at once; the caller skips the rest of the value when it needs to."""
    i = _ws(buf, i, end)
    if i >= end or buf[i] != _LBR:
        return i, 0, 0, 0, False, R_MALFORMED_JSON
    i = _ws(buf, i + 1, end)
    if i < end and buf[i] == _RBR:
        return i + 1, 0, 0, 0, False, R_EMPTY_DRAWING
    npts = 0
    nstr = 0
    narr_d = 0
    plain = True  # every number a plain integer <= 255: no range pass needed for simplified data
    cap_p = len(px)
    cap_s = len(slen)
    while True:
        if i >= end or buf[i] != _LBR:
            return i, 0, 0, 0, False, R_MALFORMED_JSON
        i = _ws(buf, i + 1, end)
        if i < end and buf[i] == _RBR:
            return i, 0, 0, 0, False, R_EMPTY_STROKE
        a = 0
        n_first = 0
        base = p0 + npts
        while True:
            if i >= end or buf[i] != _LBR:
                return i, 0, 0, 0, False, R_MALFORMED_JSON
            i = _ws(buf, i + 1, end)
            if a == 0:
                tgt = px
                lim = cap_p - base
            elif a == 1:
                tgt = py
                lim = n_first
            else:
                tgt = pt
                lim = n_first if a == 2 else 0
            cnt = 0
            if i < end and buf[i] == _RBR:
                i += 1
            else:
                while True:
                    # fast path: a plain integer (every simplified coordinate, most raw times)
                    start = i
                    iv = 0
                    c = 0
                    while i < end:
                        c = buf[i]
                        if c < 48 or c > 57:
                            break
                        iv = iv * 10 + (c - 48)
                        i += 1
                    if i == end:
                        c = 0
                    if i > start and i - start <= 15 and c != 46 and c != 101 and c != 69:
                        v = float(iv)
                        if iv > 255:
                            plain = False
                    else:
                        plain = False
                        v, i, st = _parse_number(buf, start, end)
                        if st == 1:
                            return i, 0, 0, 0, False, R_MALFORMED_JSON
                        if st == 2:
                            return i, 0, 0, 0, False, R_NON_FINITE
                        c = buf[i] if i < end else 0
                    if cnt < lim:
                        tgt[base + cnt] = v
                    cnt += 1
                    if c == _COMMA:
                        i += 1
                        while i < end and buf[i] == 32:
                            i += 1
                        continue
                    if c == _RBR:
                        i += 1
                        break
                    i, sep = _separator(buf, i, end)
                    if sep == 0:
                        continue
                    if sep < 0:
                        return i, 0, 0, 0, False, R_MALFORMED_JSON
                    break
            if a == 0:
                n_first = cnt
                if cnt > lim:  # cannot happen with the caller's capacity bound; be safe
                    return i, 0, 0, 0, False, R_MALFORMED_JSON
            elif cnt != n_first:
                return i, 0, 0, 0, False, R_LENGTH
            a += 1
            i, sep = _separator(buf, i, end)
            if sep == 0:
                continue
            if sep < 0:
                return i, 0, 0, 0, False, R_MALFORMED_JSON
            break
        if a < 2 or a > 3:
            return i, 0, 0, 0, False, R_MALFORMED_JSON
        if narr_d == 0:
            narr_d = a
        elif a != narr_d:
            return i, 0, 0, 0, False, R_MIXED
        if n_first == 0:
            return i, 0, 0, 0, False, R_EMPTY_STROKE
        if s0 + nstr >= cap_s:
            return i, 0, 0, 0, False, R_MALFORMED_JSON
        slen[s0 + nstr] = n_first
        nstr += 1
        npts += n_first
        i, sep = _separator(buf, i, end)
        if sep == 0:
            continue
        if sep < 0:
            return i, 0, 0, 0, False, R_MALFORMED_JSON
        return i, npts, nstr, narr_d, plain, R_OK


@numba.njit(cache=True)
def _check_points(px, py, pt, p0, n, narr):
    """Range check of one drawing's points: simplified integers 0..255, raw |xy| and t limits."""
    if narr == 2:
        for k in range(p0, p0 + n):
            x = px[k]
            y = py[k]
            if x < 0.0 or x > 255.0 or y < 0.0 or y > 255.0 or x != np.floor(x) or y != np.floor(y):
                return R_RANGE
    else:
        for k in range(p0, p0 + n):
            if abs(px[k]) > RAW_LIMIT or abs(py[k]) > RAW_LIMIT or pt[k] < 0.0 or pt[k] >= TIME_LIMIT:
                return R_RANGE
    return R_OK


@numba.njit(cache=True)
def _newlines(buf, n):
    """(newlines in buf[:n], index just after the last one, 0 if none)."""
    count = 0
    for k in range(n):
        count += buf[k] == 10  # branch-free, so that it vectorises
    last = n
    while last > 0 and buf[last - 1] != 10:
        last -= 1
    return count, last


@numba.njit(cache=True)
def _interleave(px, py, out):
    """(x, y) columns -> (P, 2) rows of out's dtype (simplified values are checked integers 0..255)."""
    for k in range(len(px)):
        out[k, 0] = px[k]
        out[k, 1] = py[k]
    return out


@numba.njit(cache=True)
def _word_changes(buf, ws, wl, esc):
    """True where a row's word differs from the previous row's (or either is escaped)."""
    n = len(ws)
    out = np.ones(n, np.bool_)
    for r in range(1, n):
        if wl[r] != wl[r - 1] or esc[r] or esc[r - 1]:
            continue
        same = True
        a = ws[r]
        b = ws[r - 1]
        for k in range(wl[r]):
            if buf[a + k] != buf[b + k]:
                same = False
                break
        out[r] = not same
    return out


# Row fields, in the order of the `rows` int64 matrix the scanners fill (one row per kept drawing).
F_LINE, F_NPTS, F_NSTR, F_KEY, F_REC, F_TS, F_Y, F_WS, F_WL, F_CS, F_CL, F_FLAGS = range(12)
N_FIELDS = 12
FLAG_WORD_ESC, FLAG_COUNTRY_ESC = 1, 2


@numba.njit(cache=True)
def _bool_literal(buf, s, e):
    """true/True/1 -> 1, false/False/0 -> 0, otherwise -1."""
    n = e - s
    if n == 1:
        return 1 if buf[s] == 49 else (0 if buf[s] == 48 else -1)
    if n == 4 and (buf[s] == 116 or buf[s] == 84) and buf[s + 1] == 114 and buf[s + 2] == 117 \
            and buf[s + 3] == 101:
        return 1
    if n == 5 and (buf[s] == 102 or buf[s] == 70) and buf[s + 1] == 97 and buf[s + 2] == 108 \
            and buf[s + 3] == 115 and buf[s + 4] == 101:
        return 0
    return -1


@numba.njit(cache=True)
def _new_row(rows, R):
    """Defaults of a row's fields: no key_id, recognized, no timestamp, no y, no word, no country."""
    rows[R, F_KEY] = _NO_INT
    rows[R, F_REC] = 1
    rows[R, F_TS] = _NO_INT
    rows[R, F_Y] = -1
    rows[R, F_WS] = 0
    rows[R, F_WL] = -1
    rows[R, F_CS] = 0
    rows[R, F_CL] = 0
    rows[R, F_FLAGS] = 0


@numba.njit(cache=True)
def _finish_row(status, narr, plain, expect, px, py, pt, P, S, npts, nstr, rows, R, bad, B, line):
    """Shared end of a row: format and range checks, then the row kept or counted as bad.
    Returns the new (rows, bad rows, points, strokes, expect)."""
    if status == R_OK:
        if expect != 0 and narr != expect:
            status = R_MIXED
        elif not (plain and narr == 2):
            status = _check_points(px, py, pt, P, npts, narr)
    if status != R_OK:
        bad[B, 0] = line
        bad[B, 1] = status
        return R, B + 1, P, S, expect
    rows[R, F_LINE] = line
    rows[R, F_NPTS] = npts
    rows[R, F_NSTR] = nstr
    return R + 1, B, P + npts, S + nstr, narr if expect == 0 else expect

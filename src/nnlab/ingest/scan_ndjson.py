"""numba scanner for Google ndjson (simplified or raw), one block of whole lines at a time."""

from __future__ import annotations

import numba
import numpy as np

from nnlab.ingest.reasons import R_BAD_VALUE, R_MALFORMED_JSON, R_MISSING, R_OK
from nnlab.ingest.scan_values import (
    _BSL,
    _COLON,
    _COMMA,
    _LBR,
    _LBRACE,
    _NO_INT,
    _Q,
    _RBRACE,
    F_CL,
    F_CS,
    F_FLAGS,
    F_KEY,
    F_REC,
    F_TS,
    F_WL,
    F_WS,
    FLAG_COUNTRY_ESC,
    FLAG_WORD_ESC,
    _bool_literal,
    _finish_row,
    _new_row,
    _parse_drawing,
    _parse_int,
    _parse_timestamp,
    _skip_value,
    _ws,
)

# ndjson keys (bytes) the scanner knows
_K_WORD, _K_COUNTRY, _K_TS, _K_REC, _K_KEY, _K_DRAWING = range(1, 7)
_KEYS = np.frombuffer(b"word\0countrycode\0timestamp\0recognized\0key_id\0drawing\0", dtype=np.uint8)


@numba.njit(cache=True)
def _key_id(buf, s, e):
    """Which known key buf[s:e] is (1..6), 0 for any other."""
    k = 1
    start = 0
    for j in range(len(_KEYS)):
        if _KEYS[j] == 0:
            if j - start == e - s:
                same = True
                for t in range(e - s):
                    if buf[s + t] != _KEYS[start + t]:
                        same = False
                        break
                if same:
                    return k
            k += 1
            start = j + 1
    return 0


@numba.njit(cache=True)
def _scan_string(buf, i, end):
    """A JSON string at buf[i] == '"': (content start, content end, next index, has escape) or -1."""
    j = i + 1
    esc = False
    while j < end:
        c = buf[j]
        if c == _BSL:
            esc = True
            j += 2
            continue
        if c == _Q:
            return i + 1, j, j + 1, esc
        if c < 32:
            return -1, -1, -1, esc
        j += 1
    return -1, -1, -1, esc


@numba.njit(cache=True)
def _scan_ndjson(buf, expect, line0, px, py, pt, slen, rows, bad):
    """Parse the ndjson lines of buf. Returns (rows kept, bad rows, points, strokes, expect)."""
    n = len(buf)
    R = B = P = S = 0  # rows kept, bad rows, points, strokes
    line = line0 - 1
    s = 0
    while s < n:
        e = s
        while e < n and buf[e] != 10:
            e += 1
        nxt = e + 1
        line += 1
        i = _ws(buf, s, e)
        if i == e:
            s = nxt
            continue
        syntax = False
        status = R_OK
        npts = 0
        nstr = 0
        narr = 0
        plain = False
        seen = 0
        _new_row(rows, R)
        if buf[i] != _LBRACE:
            syntax = True
        else:
            i = _ws(buf, i + 1, e)
            if i < e and buf[i] == _RBRACE:
                i += 1
            else:
                while True:
                    if i >= e or buf[i] != _Q:
                        syntax = True
                        break
                    ks, ke, i, kesc = _scan_string(buf, i, e)
                    if ks < 0:
                        syntax = True
                        break
                    key = 0 if kesc else _key_id(buf, ks, ke)
                    i = _ws(buf, i, e)
                    if i >= e or buf[i] != _COLON:
                        syntax = True
                        break
                    i = _ws(buf, i + 1, e)
                    if i >= e:
                        syntax = True
                        break
                    c = buf[i]
                    if key == _K_DRAWING and c == _LBR:
                        j, npts, nstr, narr, plain, st = _parse_drawing(buf, i, e, px, py, pt, P, slen, S)
                        if st == R_MALFORMED_JSON:
                            syntax = True
                            break
                        if st != R_OK:
                            j = _skip_value(buf, i, e)
                            if j < 0:
                                syntax = True
                                break
                            if status == R_OK:
                                status = st
                        i = j
                        seen |= 1 << key
                    elif c == _Q:
                        vs, ve, j, vesc = _scan_string(buf, i, e)
                        if vs < 0:
                            syntax = True
                            break
                        i = j
                        if key != 0:
                            seen |= 1 << key
                        if key == _K_WORD:
                            rows[R, F_WS] = vs
                            rows[R, F_WL] = ve - vs
                            if vesc:
                                rows[R, F_FLAGS] |= FLAG_WORD_ESC
                        elif key == _K_COUNTRY:
                            rows[R, F_CS] = vs
                            rows[R, F_CL] = ve - vs
                            if vesc:
                                rows[R, F_FLAGS] |= FLAG_COUNTRY_ESC
                            elif ve - vs > 2 and status == R_OK:
                                status = R_BAD_VALUE
                        elif key == _K_TS:
                            if ve > vs:
                                v = _parse_timestamp(buf, vs, ve)
                                if v == _NO_INT and status == R_OK:
                                    status = R_BAD_VALUE
                                rows[R, F_TS] = v
                        elif key == _K_KEY:
                            v = _parse_int(buf, vs, ve)
                            if (v == _NO_INT or v < 0) and status == R_OK:
                                status = R_BAD_VALUE
                            rows[R, F_KEY] = v
                        elif key != 0 and status == R_OK:  # recognized or drawing as a string
                            status = R_BAD_VALUE
                    else:
                        j = _skip_value(buf, i, e)
                        if j < 0:
                            syntax = True
                            break
                        if key != 0:
                            seen |= 1 << key
                        lit = -1
                        isnull = j - i == 4 and c == 110 and buf[i + 1] == 117 and buf[i + 2] == 108 \
                            and buf[i + 3] == 108
                        if c == 116 or c == 102:
                            lit = _bool_literal(buf, i, j)
                            if lit < 0:
                                syntax = True
                                break
                        if key == _K_KEY and (c == 45 or 48 <= c <= 57):
                            v = _parse_int(buf, i, j)
                            if (v == _NO_INT or v < 0) and status == R_OK:
                                status = R_BAD_VALUE
                            rows[R, F_KEY] = v
                        elif key == _K_REC and lit >= 0:
                            rows[R, F_REC] = lit
                        elif key == _K_WORD and isnull:
                            rows[R, F_WL] = -1  # null word: an unlabelled drawing
                        elif key == _K_TS and isnull:
                            pass
                        elif key == _K_KEY or key == _K_DRAWING:
                            if isnull:
                                seen &= ~(1 << key)  # null key_id / drawing: missing
                            elif status == R_OK:
                                status = R_BAD_VALUE
                        elif key != 0 and status == R_OK:
                            status = R_BAD_VALUE
                        i = j
                    i = _ws(buf, i, e)
                    if i < e and buf[i] == _COMMA:
                        i = _ws(buf, i + 1, e)
                        continue
                    if i < e and buf[i] == _RBRACE:
                        i += 1
                        break
                    syntax = True
                    break
            if not syntax and _ws(buf, i, e) != e:
                syntax = True
        if syntax:
            status = R_MALFORMED_JSON
        elif status == R_OK:
            need = (1 << _K_WORD) | (1 << _K_KEY) | (1 << _K_DRAWING)
            if seen & need != need:
                status = R_MISSING
        R, B, P, S, expect = _finish_row(status, narr, plain, expect, px, py, pt, P, S, npts, nstr,
                                         rows, R, bad, B, line)
        s = nxt
    return R, B, P, S, expect

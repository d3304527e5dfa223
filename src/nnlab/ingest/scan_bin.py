"""numba scanner for Google's binary .bin drawings (length-prefixed records)."""

from __future__ import annotations

import numba
import numpy as np

from nnlab.ingest.reasons import R_BAD_VALUE, R_EMPTY_DRAWING, R_EMPTY_STROKE, R_OK
from nnlab.ingest.scan_values import F_CL, F_CS, F_FLAGS, F_KEY, F_LINE, F_NPTS, F_NSTR, F_REC, F_TS, F_WL, F_WS, F_Y


@numba.njit(cache=True)
def _scan_bin(buf, rec0, px, py, slen, rows, bad):
    """Parse whole Google .bin records from buf: (rows, bad, points, strokes, bytes used, records)."""
    n = len(buf)
    R = 0
    B = 0
    P = 0
    S = 0
    i = 0
    rec = rec0
    while True:
        if i + 17 > n:
            break
        key = 0
        for k in range(8):
            key |= np.int64(buf[i + k]) << (8 * k)
        # a key_id >= 2**63 shows up negative: it cannot be stored as int64
        ts = np.int64(buf[i + 11]) | (np.int64(buf[i + 12]) << 8) | (np.int64(buf[i + 13]) << 16) \
            | (np.int64(buf[i + 14]) << 24)
        ns = np.int64(buf[i + 15]) | (np.int64(buf[i + 16]) << 8)
        j = i + 17
        complete = True
        status = R_OK
        npts = 0
        for k in range(ns):
            if j + 2 > n:
                complete = False
                break
            m = np.int64(buf[j]) | (np.int64(buf[j + 1]) << 8)
            if j + 2 + 2 * m > n:
                complete = False
                break
            if m == 0 and status == R_OK:
                status = R_EMPTY_STROKE
            if status == R_OK:
                for t in range(m):
                    px[P + npts + t] = buf[j + 2 + t]
                    py[P + npts + t] = buf[j + 2 + m + t]
                slen[S + k] = m
                npts += m
            j += 2 + 2 * m
        if not complete:
            break
        rec += 1
        if ns == 0:
            status = R_EMPTY_DRAWING
        elif key < 0 or buf[i + 10] > 1:
            status = R_BAD_VALUE
        if status != R_OK:
            bad[B, 0] = rec
            bad[B, 1] = status
            B += 1
        else:
            rows[R, F_LINE] = rec
            rows[R, F_NPTS] = npts
            rows[R, F_NSTR] = ns
            rows[R, F_KEY] = key
            rows[R, F_REC] = buf[i + 10]
            rows[R, F_TS] = ts * 1000000
            rows[R, F_Y] = -1
            rows[R, F_WS] = 0
            rows[R, F_WL] = -1
            rows[R, F_CS] = i + 8
            rows[R, F_CL] = 2
            rows[R, F_FLAGS] = 0
            R += 1
            P += npts
            S += ns
        i = j
    return R, B, P, S, i, rec

#!/usr/bin/python3
"""Reads a file written by tests/io/test_h5.cpp the way a results notebook would: h5py into pandas,
no helpers. Exits non-zero with a message on the first mismatch.

Usage: /usr/bin/python3 tests/io/h5_pandas_check.py FILE.h5
"""
import math
import sys

import h5py
import numpy as np
import pandas as pd

LABEL = "h\u00e9llo \u65e5\u672c \U0001F600"
NAMES = ["plain", "", LABEL, 'with "quotes", commas\nand a newline']
I64 = np.iinfo(np.int64)


def check(cond, what):
    if not cond:
        print(f"h5_pandas_check: {sys.argv[1]}: {what}", file=sys.stderr)
        sys.exit(1)


def decoded(series):
    # h5py hands variable-length strings inside compound datasets back as bytes.
    return [v.decode("utf-8") if isinstance(v, bytes) else v for v in series]


def main():
    with h5py.File(sys.argv[1], "r") as f:
        attrs = dict(f["/"].attrs)
        check(attrs.get("schema") == "vlmlab-test" and isinstance(attrs["schema"], str),
              f"root attr schema: {attrs.get('schema')!r}")
        check(attrs.get("label") == LABEL, f"root attr label: {attrs.get('label')!r}")
        check(isinstance(attrs.get("seed"), np.integer) and attrs["seed"] == 1234,
              f"root attr seed: {attrs.get('seed')!r}")
        check(isinstance(attrs.get("scale"), np.floating) and attrs["scale"] == 0.5,
              f"root attr scale: {attrs.get('scale')!r}")

        df = pd.DataFrame(f["/summary"][()])
        check(list(df.columns) == ["id", "latency_ms", "name"], f"columns {list(df.columns)}")
        check(df["id"].dtype == np.int64, f"id dtype {df['id'].dtype}")
        check(df["latency_ms"].dtype == np.float64, f"latency_ms dtype {df['latency_ms'].dtype}")
        check(df["name"].dtype == object, f"name dtype {df['name'].dtype}")
        check(list(df["id"]) == [0, -1, I64.max, I64.min], f"id values {list(df['id'])}")
        lat = list(df["latency_ms"])
        check(lat[0] == 1.5 and lat[1] == 0.0 and math.copysign(1.0, lat[1]) < 0
              and lat[2] == 1e-300 and math.isinf(lat[3]) and lat[3] > 0, f"latency values {lat}")
        names = decoded(df["name"])
        check(all(isinstance(n, str) for n in names), f"names not str: {names!r}")
        check(names == NAMES, f"name values {names!r}")
        # Marked UTF-8 and variable-length, so h5py knows how to decode it.
        info = h5py.check_string_dtype(f["/summary"].dtype["name"])
        check(info is not None and info.encoding == "utf-8" and info.length is None,
              f"name string dtype {info}")

        empty = pd.DataFrame(f["/empty"][()])
        check(len(empty) == 0, f"empty table has {len(empty)} rows")
        check(list(empty.columns) == ["id", "latency_ms", "name"], f"empty columns {list(empty.columns)}")
        check(empty["id"].dtype == np.int64 and empty["latency_ms"].dtype == np.float64,
              f"empty dtypes {dict(empty.dtypes)}")

        samples = f["/runs/r1/samples"][()]
        check(samples.dtype == np.float64 and list(samples) == [0.5, 1.5, 2.5], f"samples {samples!r}")
    print("h5_pandas_check: ok")


if __name__ == "__main__":
    main()

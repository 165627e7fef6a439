#!/usr/bin/env python3
"""Extraction time of one layer holding a chain of N nested directories.

    python bench/deeptree.py [--depths 400,1000,1500] [--rounds 3]

Why: a layer is untrusted input, and extraction time must grow linearly with the depth of
its tree. Resolving each entry's parent by a realpath of its whole path made it quadratic
(400 levels 1 s, 1,500 levels 29 s), and removing such a tree recursed once per level.

How: builds an uncompressed tar layer in memory (N directory entries `d/d/.../d` and one
file at the bottom), then times `Extractor.apply` + `finish` into a fresh directory, and
the removal of the tree again, with the project's own code. Prints the median of the rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

from wrapresolver.core import oci_image
from wrapresolver.core.values import Descriptor
from wrapresolver.transfer.apply import Extractor
from wrapresolver.transfer.deeptree import empty_directory


def layer(depth: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for level in range(1, depth + 1):
            info = tarfile.TarInfo("/".join(["d"] * level))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = b"bottom\n"
        info = tarfile.TarInfo("/".join(["d"] * depth) + "/bottom.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def one_round(blob: bytes) -> tuple[float, float]:
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    desc = Descriptor(oci_image.LAYER_TAR, digest, len(blob))
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "ws"
        dest.mkdir()
        started = time.perf_counter()
        extractor = Extractor(dest)
        extractor.apply(iter([blob]), oci_image.Layer(desc, digest), "bench")
        extractor.finish()
        extracted = time.perf_counter() - started
        started = time.perf_counter()
        empty_directory(dest)
        removed = time.perf_counter() - started
    return extracted, removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="400,1000,1500")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'depth':>6} {'extract s':>10} {'remove s':>9}  (median of {args.rounds})")
    for depth in (int(d) for d in args.depths.split(",")):
        blob = layer(depth)
        rounds = [one_round(blob) for _ in range(args.rounds)]
        print(f"{depth:>6} {statistics.median(r[0] for r in rounds):>10.3f} "
              f"{statistics.median(r[1] for r in rounds):>9.3f}")


if __name__ == "__main__":
    main()

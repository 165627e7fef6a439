"""A layer blob read, hashed and decompressed in a thread of its own, for the extractor.

Apart from apply.py because it knows nothing of the workspace: it turns a blob's chunks into
the plain tar stream the extractor parses, with the two digests the extractor checks.
"""

from __future__ import annotations

import gzip
import hashlib
import queue
import threading
from typing import IO, cast

import zstandard

from wrapresolver.core import oci_image
from wrapresolver.transfer.layers import CHUNK
from wrapresolver.transfer.streams import BoundedPipe, HashingChunks, PipeClosed


class Inflater:
    """Reads, hashes and decompresses a layer blob in its own thread.

    zstd, gzip and sha256 release the GIL, so this runs on a second core while the calling
    thread parses tar headers and writes files: on two cores a fetch takes about the
    time of the slower half instead of the sum. The pipe between them holds a few MiB.
    The digest of the uncompressed tar (the diff_id) is computed on a third thread: with it
    here, this thread was the slower half of a fetch of large files.
    """

    def __init__(self, blob: HashingChunks, media_type: str) -> None:
        self.blob, self.media_type = blob, media_type
        self.pipe = BoundedPipe()
        self._plain = hashlib.sha256()
        self._to_hash: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, name="wrap-layer-reader", daemon=True)
        self._hasher = threading.Thread(target=self._hash, name="wrap-layer-hasher", daemon=True)

    def start(self) -> None:
        self._hasher.start()
        self._thread.start()

    def _hash(self) -> None:
        while (data := self._to_hash.get()) is not None:
            self._plain.update(data)

    def _run(self) -> None:
        try:
            source = decompressor(self.media_type, self.blob)
            while True:
                data = source.read(CHUNK)
                if not data:
                    break
                self._to_hash.put(data)
                self.pipe.write(data)
            while self.blob.read(CHUNK):  # bytes after the compressed stream count too
                pass
            self.pipe.finish()
        except PipeClosed:
            pass
        except BaseException as exc:  # raised on the reading side
            self.pipe.finish(exc)
        finally:
            self._to_hash.put(None)

    def stop(self) -> None:
        """Wait for the threads; if the reader gave up early, make the thread give up too."""
        self.pipe.close_reader()
        self._thread.join()
        self._hasher.join()

    @property
    def plain_digest(self) -> str:
        return "sha256:" + self._plain.hexdigest()


def decompressor(media_type: str, blob: HashingChunks):
    """The plain tar stream of a blob of `media_type` (zstd, gzip or uncompressed)."""
    if media_type == oci_image.LAYER_ZSTD:
        # A RawIOBase is the file-like object zstandard reads; its stubs only name IO[bytes].
        return zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], blob), read_size=CHUNK, read_across_frames=True, closefd=False)
    if media_type == oci_image.LAYER_GZIP:
        return gzip.GzipFile(fileobj=blob, mode="rb")
    return blob

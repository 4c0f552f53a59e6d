"""Reading the shards in Ray Data's tasks: a shard file to a block of decoded images, with pyarrow and NumPy only;
and the block format every split reaches the workers in (`as_block`, `block_view`).

This module imports neither torch nor Ray Train: Ray's worker processes run its functions (`read_shards`, a
`map_batches` over the shard files' paths), and a worker that had to import torch to unpickle them would spend
seconds doing so before its first block (6.3 s to a cold pass's first batch, 2.3 s without, on 2 cores).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cnnjobs import storage


def decode_images(batch: pa.Table, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Raw HWC bytes per row -> one uint8 array of shape (N, C, H, W); the label columns pass through.

    The pixels are read in place from the Arrow column's data buffer (every value has the same length), so the
    only copy is the HWC -> CHW transpose.
    """
    h, w, c = shape
    column = batch.column("image").combine_chunks()  # a copy only when the batch spans several chunks
    width = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    offsets = np.frombuffer(column.buffers()[1], dtype=width)[column.offset:column.offset + len(column) + 1]
    raw = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    out = {name: batch.column(name).to_numpy() for name in batch.column_names if name != "image"}
    out["image"] = np.ascontiguousarray(raw.reshape(len(column), h, w, c).transpose(0, 3, 1, 2))
    return out


def read_table(location: str, columns: list[str]) -> pa.Table:
    """One shard file's columns, through the storage layer (a local path or a URI)."""
    fs, path = storage.resolve(location)
    return storage.retried("read", location, lambda: pq.read_table(path, filesystem=fs, columns=columns))


def read_shards(batch: dict[str, np.ndarray], shape: tuple[int, int, int], columns: list[str]) -> pa.Table:
    """Ray Data map over shard paths: the decoded rows of every file named in `batch["path"]`, in order, as a
    block (`as_block`)."""
    tables = [read_table(str(location), columns) for location in batch["path"]]
    return as_block(decode_images(pa.concat_tables(tables) if len(tables) > 1 else tables[0], shape))


def as_block(decoded: dict[str, np.ndarray]) -> pa.Table:
    """Decoded rows as a Ray Data block: each image's C*H*W bytes (NCHW order) as one fixed-size binary value,
    wrapping the array's memory without a copy, and the label columns. Ray moves such a block ~20% faster than one
    holding a 4-D tensor column (its tensor extension type); `block_view` reads it back without a copy."""
    images = np.ascontiguousarray(decoded["image"])
    size = int(np.prod(images.shape[1:]))
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(size), len(images), [None, pa.py_buffer(images)])
    return pa.table({"image": column, **{name: values for name, values in decoded.items() if name != "image"}})


def block_view(block: pa.Table, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """A block of `as_block` as NumPy: `image` uint8 (N, C, H, W) over the block's own memory, the labels."""
    h, w, c = shape
    column = block.column("image")
    chunk = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)  # a copy only for several
    size = h * w * c
    raw = np.frombuffer(chunk.buffers()[1], dtype=np.uint8)[chunk.offset * size:(chunk.offset + len(chunk)) * size]
    out = {name: block.column(name).to_numpy() for name in block.column_names if name != "image"}
    out["image"] = raw.reshape(len(chunk), c, h, w)
    return out


def passes_through(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A map that changes nothing: what `warm_up` runs, to import this module in Ray's workers."""
    return batch

"""TFRecord files read record by record, recovering every intact record around a corrupt one.

A TFRecord is framed as: length (uint64, little-endian), masked CRC-32C of those 8 bytes, the data, masked
CRC-32C of the data. tf.data's reader checks both CRCs and stops the whole file at the first failure; here
`records(path, on_fault)` reads with it while the file is sound and, from the first fault on, walks the framing
itself: a record whose data fails its CRC is skipped (its length was verified, so the next record starts right
after it), and bytes that hold no verified header are scanned, one offset at a time, for the next offset whose
length CRC verifies and whose record fits in the file.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from tasks.quiet_tensorflow import tf


_HEADER = 12  # length (8) and its CRC (4)
_FOOTER = 4  # the data's CRC
_MASK_DELTA = 0xA282EAD8
_CRC32C_POLYNOMIAL = 0x82F63B78  # Castagnoli, bit-reversed


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ _CRC32C_POLYNOMIAL if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
  """TFRecord's checksum: CRC-32C, rotated right by 15 bits and offset (so that CRCs of CRCs stay strong).

  Pure Python, so only the recovery path (after a fault) uses it on record data.
  """
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
  """One record as TFRecord writes it (tests build damaged files from it)."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data)))


def _record_length(data: bytes, pos: int) -> int | None:
  """The data length of the record whose header starts at `pos`, or None if the header is cut short, fails its
  CRC, or names a record longer than what is left."""
  if pos + _HEADER > len(data):
    return None
  (length,) = struct.unpack_from("<Q", data, pos)
  if pos + _HEADER + length + _FOOTER > len(data):  # checked first: cheap, and false for most garbage
    return None
  (crc,) = struct.unpack_from("<I", data, pos + 8)
  return length if masked_crc32c(data[pos:pos + 8]) == crc else None


def _walk(data: bytes, start: int, path: str, on_fault: Callable[[str, str], None]) -> Iterator[bytes]:
  """The intact records of `data`, the file's bytes from offset `start` on; faults reported to on_fault."""
  pos = 0
  while pos < len(data):
    length = _record_length(data, pos)
    if length is None:
      found = next((p for p in range(pos + 1, len(data)) if _record_length(data, p) is not None), len(data))
      on_fault("corrupt_file", f"{path}: bytes {start + pos}..{start + found - 1} hold no complete record")
      pos = found
      continue
    end = pos + _HEADER + length
    (crc,) = struct.unpack_from("<I", data, end)
    if masked_crc32c(data[pos + _HEADER:end]) == crc:
      yield data[pos + _HEADER:end]
    else:
      on_fault("bad_record", f"{path}: the record at byte {start + pos} fails its checksum")
    pos = end + _FOOTER


def records(path: str, on_fault: Callable[[str, str], None]) -> Iterator[bytes]:
  """The intact records of one (uncompressed) TFRecord file, in order.

  Args:
    path: the file.
    on_fault: called with ("bad_record", detail) for a record whose data fails its CRC, and with
      ("corrupt_file", detail) for each run of bytes holding no complete record (a damaged header, a file cut
      short).

  Yields:
    Each intact record's data.

  Raises:
    tf.errors.OpError: the file cannot be opened or read.
  """
  offset = 0
  try:
    for record in tf.data.TFRecordDataset(path):
      record = record.numpy()
      offset += _HEADER + len(record) + _FOOTER
      yield record
  except tf.errors.DataLossError:
    pass  # the record at `offset` is damaged: the walk below reports it and goes on
  # tf.data also takes a file cut inside a header for a clean end: what is left after its last record is walked.
  with tf.io.gfile.GFile(path, "rb") as f:
    f.seek(offset)
    yield from _walk(f.read(), offset, path, on_fault)

"""A TensorBoard event-file writer with a vectorised path for scalar rows.

TensorBoard's own writer builds a protobuf per event and checksums each record with a pure-
Python CRC32C loop (~40 µs for one step's scalars) — more than the whole distance computation
of a training step. Per-step scalars have a fixed layout (the same tags every step), so a chunk
of steps is encoded here at once with numpy: the record bytes are filled into a template and the
CRC32C runs byte-serially but vectorised across the records. The bytes are exactly those
TensorBoard's writer would produce (a test checks it), so every reader reads them.

Rare events (the file header, hparams, a purge marker) go through the protobuf classes.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary


def _crc32c_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table[i] = crc
    return table


_TABLE = _crc32c_table()


def masked_crc32c(rows: np.ndarray) -> np.ndarray:
    """The masked CRC32C (TFRecord framing) of every row of a (n, L) uint8 array."""
    crc = np.full(rows.shape[0], 0xFFFFFFFF, dtype=np.uint32)
    for j in range(rows.shape[1]):
        crc = _TABLE[(crc ^ rows[:, j]) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)).astype(np.uint32)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    rows = np.frombuffer(header, np.uint8)[None], np.frombuffer(data, np.uint8)[None]
    return header + masked_crc32c(rows[0]).tobytes() + data + masked_crc32c(rows[1]).tobytes()


class EventWriter:
    """Appends events to one ``events.out.tfevents.*`` file in ``log_dir``."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self.path = log_dir / name
        self._file = open(self.path, "ab")  # noqa: SIM115 (kept open for the run)
        self.write_event(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:  # readers drop the events at or past this step from older files
            self.write_event(
                Event(wall_time=time.time(), step=purge_step, session_log=SessionLog(status=SessionLog.START))
            )

    def write_event(self, event: Event) -> None:
        self._file.write(_record(event.SerializeToString()))

    def write_summary(self, summary: Summary, step: int = 0) -> None:
        self.write_event(Event(wall_time=time.time(), step=step, summary=summary))

    def write_scalars(self, tags: list[str], steps: np.ndarray, walls: np.ndarray, values: np.ndarray) -> None:
        """One event per row: ``values[i, j]`` is tag j at ``steps[i]`` (wall time ``walls[i]``)."""
        steps = np.asarray(steps, dtype=np.int64)
        if steps.size and steps.min() < 0:
            raise ValueError("steps must be >= 0")
        values = np.asarray(values, dtype="<f4").reshape(len(steps), len(tags))
        walls = np.asarray(walls, dtype="<f8")
        # Split into runs of equal varint length of the step (the only field of variable size).
        widths = np.ones(len(steps), dtype=np.int64)
        for k in range(1, 10):
            widths += steps >= (1 << (7 * k))
        cuts = np.flatnonzero(np.diff(widths)) + 1
        for part in np.split(np.arange(len(steps)), cuts):
            if part.size:
                self._file.write(self._encode(tags, int(widths[part[0]]), steps[part], walls[part], values[part]))

    @staticmethod
    def _encode(tags: list[str], width: int, steps: np.ndarray, walls: np.ndarray, values: np.ndarray) -> bytes:
        n = len(steps)
        # Summary: for each tag a Value {tag = 1 (string), simple_value = 2 (float)}.
        parts, value_at = [], []
        offset = 0
        for tag in tags:
            t = tag.encode()
            value = b"\x0a" + _varint(len(t)) + t + b"\x15"
            head = b"\x0a" + _varint(len(value) + 4)
            value_at.append(offset + len(head) + len(value))
            parts.append(head + value + b"\x00\x00\x00\x00")
            offset += len(head) + len(value) + 4
        summary = b"".join(parts)
        # Event: wall_time = 1 (double), step = 2 (varint), summary = 5 (message).
        prefix = b"\x09" + b"\x00" * 8 + b"\x10" + b"\x00" * width + b"\x2a" + _varint(len(summary))
        data = np.tile(np.frombuffer(prefix + summary, np.uint8), (n, 1))
        data[:, 1:9] = walls.view(np.uint8).reshape(n, 8)
        for j in range(width):
            data[:, 10 + j] = ((steps >> (7 * j)) & 0x7F) | (0x80 if j < width - 1 else 0)
        raw = values.view(np.uint8).reshape(n, len(tags), 4)
        for j, at in enumerate(value_at):
            data[:, len(prefix) + at : len(prefix) + at + 4] = raw[:, j]
        header = np.frombuffer(struct.pack("<Q", data.shape[1]), np.uint8)
        header_crc = masked_crc32c(header[None]).view(np.uint8)
        framed = np.empty((n, 12 + data.shape[1] + 4), dtype=np.uint8)
        framed[:, :8] = header
        framed[:, 8:12] = header_crc
        framed[:, 12:-4] = data
        framed[:, -4:] = masked_crc32c(data).view(np.uint8).reshape(n, 4)
        return framed.tobytes()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


# --- reading back: is an event file whole? -------------------------------------------------------


@dataclass(frozen=True)
class EventFileCheck:
    """How much of an event file TensorBoard's reader gets: ``records`` intact records from the start.

    Its reader (``tf_record_iterator``) stops silently at the first record that is cut short or
    fails a CRC, so everything after it is lost to every tool; ``problem`` says where and why (None:
    the whole file is intact). ``is_events``: the first record is an event file's header.
    """

    records: int
    problem: str | None
    is_events: bool


def check_event_file(path: str | Path) -> EventFileCheck:
    """Walk the TFRecord framing of ``path`` and check every CRC (vectorised per record length)."""
    data = Path(path).read_bytes()
    size = len(data)
    if not size:
        return EventFileCheck(0, "it is empty", False)
    starts, lengths, pos = [], [], 0
    while size - pos >= 16:
        (length,) = struct.unpack_from("<Q", data, pos)
        if length > size - pos - 16:
            break
        starts.append(pos)
        lengths.append(length)
        pos += 16 + length
    buf = np.frombuffer(data, np.uint8)
    first_bad = len(starts)
    if starts:
        at, lens = np.array(starts, dtype=np.int64), np.array(lengths, dtype=np.int64)
        bad = np.flatnonzero(masked_crc32c(buf[at[:, None] + np.arange(8)]) != _stored_crc(buf, at + 8))
        first_bad = int(bad[0]) if bad.size else first_bad
        for length in np.unique(lens[:first_bad]):
            idx = np.flatnonzero(lens[:first_bad] == length)
            body = buf[at[idx, None] + 12 + np.arange(length)]
            bad = idx[masked_crc32c(body) != _stored_crc(buf, at[idx] + 12 + length)]
            first_bad = min(first_bad, int(bad[0])) if bad.size else first_bad
    is_events = first_bad > 0 and _is_header(data[starts[0] + 12 : starts[0] + 12 + lengths[0]])
    if first_bad < len(starts):
        problem = f"record {first_bad + 1} (at byte {starts[first_bad]} of {size}) fails its CRC check"
    elif pos < size:
        header_ok = size - pos >= 12 and bool(
            masked_crc32c(buf[None, pos : pos + 8])[0] == _stored_crc(buf, np.array([pos + 8]))[0]
        )
        problem = (
            f"it ends inside record {first_bad + 1}: truncated ({size - pos} of its bytes at the end of {size})"
            if header_ok or size - pos < 12
            else f"record {first_bad + 1} (at byte {pos} of {size}) has a damaged header"
        )
    else:
        problem = None
    return EventFileCheck(first_bad, problem, is_events)


def _stored_crc(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    return buf[at[:, None] + np.arange(4)].copy().view("<u4").ravel()


def _is_header(record: bytes) -> bool:
    try:
        return Event.FromString(record).file_version.startswith("brain.Event")
    except Exception:  # noqa: BLE001  (protobuf's DecodeError, or anything a foreign record makes it raise)
        return False

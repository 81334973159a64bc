"""The vectorised event-file writer produces records any TensorBoard reader accepts."""

import io
import math

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference_crc
from tensorboard.summary.writer.record_writer import RecordWriter

from eqtrain.run.events import EventWriter, masked_crc32c

TAGS = ["loss/data", "dist_to_E/total", "dist_to_E_rel/total"]
# Steps across every varint width boundary, in order, as a run writes them.
STEPS = np.array([0, 1, 127, 128, 129, 16383, 16384, 2_097_151, 2_097_152, 2**35])


def test_crc_matches_tensorboards():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, size=(20, 37), dtype=np.uint8)
    assert masked_crc32c(rows).tolist() == [reference_crc(r.tobytes()) for r in rows]


def test_records_parse_to_the_events_tensorboard_would_write(tmp_path):
    rng = np.random.default_rng(1)
    walls = rng.random(len(STEPS)) * 2e9
    values = rng.standard_normal((len(STEPS), len(TAGS))).astype(np.float32)
    values[2, 1], values[3, 2] = np.nan, np.inf
    writer = EventWriter(tmp_path)
    writer.write_scalars(TAGS, STEPS, walls, values)
    writer.close()
    records = list(RawEventFileLoader(str(writer.path)).Load())  # checks every record's CRCs
    assert Event.FromString(records[0]).file_version == "brain.Event:2"
    for record, step, wall, row in zip(records[1:], STEPS, walls, values, strict=True):
        event = Event.FromString(record)
        expected = Event(
            wall_time=wall,
            step=int(step),
            summary=Summary(value=[Summary.Value(tag=t, simple_value=float(v)) for t, v in zip(TAGS, row)]),
        )
        # Same fields (NaN compares unequal, so compare the serialised floats' bytes).
        assert (event.step, event.wall_time) == (expected.step, expected.wall_time)
        got = [(v.tag, np.float32(v.simple_value).tobytes()) for v in event.summary.value]
        want = [(v.tag, np.float32(v.simple_value).tobytes()) for v in expected.summary.value]
        assert got == want
    # ... and the framing is TensorBoard's own: re-framing a record's payload gives the same bytes.
    buffer = io.BytesIO()
    RecordWriter(buffer).write(records[5])
    assert buffer.getvalue() in writer.path.read_bytes()


def test_accumulator_reads_scalars_and_honours_purge(tmp_path):
    first = EventWriter(tmp_path)
    first.write_scalars(TAGS[:1], np.arange(10), np.full(10, 1.0), np.arange(10.0)[:, None])
    first.close()
    resumed = EventWriter(tmp_path, purge_step=6)  # a resumed run: steps >= 6 are dropped from the old file
    resumed.write_scalars(TAGS[:1], np.arange(6, 12), np.full(6, 2.0), -np.arange(6.0, 12.0)[:, None])
    resumed.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    events = acc.Scalars(TAGS[0])
    assert [e.step for e in events] == list(range(12))
    assert [e.value for e in events] == [*range(6), *(-s for s in range(6, 12))]
    assert not any(math.isnan(e.value) for e in events)

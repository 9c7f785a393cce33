"""`prepare --runner beam`: the prepared TFRecords of `prepared.py`, built by an Apache Beam
pipeline, so that DirectRunner on one machine, or Dataflow, Flink or Spark on many, decode the
videos (Beam is the engine TensorFlow Datasets builds large datasets with).

The pipeline: the listing (paths, labels, groups; no video opened on the launching machine) ->
`EncodeClip`, a DoFn that probes and decodes each video and JPEG-encodes its frames (a video
that fails goes to the `skipped` output, named and counted) -> each kept clip numbered by its
place among the kept clips in listing order, as the local `prepare` numbers it -> Beam's
TFRecord sink, `clips-SSSSS-of-NNNNN.tfrecord` -> a last step that writes `prepared.json`. The
records and the index are those the local `prepare` writes (tested); which shard holds which
clip is the sink's choice. Beam is an optional extra: `pip install -e ".[beam]"`.
"""
import json
import logging
import math
import os

from sora_tf.atomic import atomic_dir, check_replaceable
from sora_tf.data.prepared import FORMAT, MANIFEST, _encode, _example
from sora_tf.data.sources import _probe, clip_group, list_items

log = logging.getLogger("sora_tf.data")


def _beam():
    try:
        import apache_beam as beam
    except ImportError:
        raise ValueError("--runner beam needs Apache Beam: pip install -e \".[beam]\" (make setup installs it)") from None
    return beam


class EncodeClip:
    """(place, path) -> (place, jpegs, count, fps), or on the `skipped` output (place, path, reason)."""

    def __init__(self, size, quality):
        self.size, self.quality = size, quality

    def __call__(self, element):
        from apache_beam import pvalue

        from sora_tf.data.video import VideoError

        place, path = element
        count, fps, reason = _probe(path)  # the reason a listing gives
        if reason is not None:
            yield pvalue.TaggedOutput("skipped", (place, path, reason))
            return
        try:
            jpegs = _encode(path, count, self.size, self.quality)
        except VideoError as e:
            yield pvalue.TaggedOutput("skipped", (place, path, str(e)))
            return
        yield place, jpegs, len(jpegs), fps


def prepare_beam(source, out, size=128, shard_clips=64, quality=90, beam_args=()):
    """Write the prepared form of every clip of `source` to the local folder `out` through a Beam
    pipeline run with `beam_args` (pipeline options; none: DirectRunner); returns `out`."""
    beam = _beam()
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    if size < 8 or not 1 <= quality <= 100 or shard_clips < 1:
        raise ValueError(f"bad prepare settings: size={size}, quality={quality}, shard_clips={shard_clips}")
    check_replaceable(out, MANIFEST, "prepared data")
    items, classes, _, _ = list_items(source)
    grouped = any(g is not None for _, _, g in items)
    shards = max(1, math.ceil(len(items) / shard_clips))
    names = [f"clips-{s:05d}-of-{shards:05d}.tfrecord" for s in range(shards)]

    def record(clip, ranks):
        place, jpegs, _, _ = clip
        return _example(ranks[place], items[place][1], jpegs)

    def manifest(_, kept, skipped, folder):
        clips = [{"path": items[p][0], "label": items[p][1], "count": count, "fps": fps,
                  "group": clip_group(items[p][0], items[p][2]) if grouped else None}
                 for p, count, fps in sorted(kept)]
        text = json.dumps({"format": FORMAT, "classes": classes, "size": size, "quality": quality,
                           "shards": names, "clips": clips,
                           "skipped": [{"path": path, "reason": r} for _, path, r in sorted(skipped)]}, indent=1)
        with FileSystems.create(os.path.join(folder, MANIFEST)) as f:
            f.write(text.encode())

    with atomic_dir(out) as tmp:
        with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
            encoded = (p | "list" >> beam.Create([(i, path) for i, (path, _, _) in enumerate(items)])
                       | "decode and encode" >> beam.FlatMap(EncodeClip(size, quality)).with_outputs(
                           "skipped", main="clips"))
            kept = encoded.clips | "places" >> beam.Map(lambda c: (c[0], c[2], c[3])) | "kept" >> beam.combiners.ToList()
            ranks = kept | "number" >> beam.Map(lambda k: {place: r for r, (place, _, _) in enumerate(sorted(k))})
            _ = (encoded.clips | "records" >> beam.Map(record, ranks=beam.pvalue.AsSingleton(ranks))
                 | "shards" >> beam.io.WriteToTFRecord(os.path.join(tmp, "clips"), file_name_suffix=".tfrecord",
                                                       num_shards=shards, shard_name_template="-SSSSS-of-NNNNN"))
            skipped = encoded.skipped | "skipped" >> beam.combiners.ToList()
            _ = (p | "index" >> beam.Create([None])
                 | "write index" >> beam.Map(manifest, kept=beam.pvalue.AsSingleton(kept),
                                             skipped=beam.pvalue.AsSingleton(skipped), folder=tmp))
        with open(os.path.join(tmp, MANIFEST)) as f:
            written = json.load(f)
        for s in written["skipped"]:
            log.warning("skipping %s: %s", s["path"], s["reason"])
    log.info("prepared %d clips in %d shards at %s with Beam (%d skipped)", len(written["clips"]), shards, out,
             len(written["skipped"]))
    return out

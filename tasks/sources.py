"""Real-format data sources, each registered as a seqio Task by one gin-configurable call.

Formats (every path may be local or any filesystem tf.io.gfile reads, such as gs://):
  WebDataset   tar shards (a glob); the members of a sample share a key (the name up to the first '.' of its
               base name) and sit next to each other: an image (jpg, jpeg, png or webp) and a caption, from a
               txt member or a field of a json member.
  TFRecord     tf.train.Example records: the image bytes under `image/encoded`, the texts under configurable
               keys (every value of a caption's bytes list is a reference; a VQA record has a question and
               a list of answers).
  jsonl        one object a line, {"image": path relative to the image folder, "caption": ... or "captions":
               [...]} or {"image": ..., "question": ..., "answers": [...] (or "answer": ...)}, "id" optional.
  COCO         annotations/captions_<split>.json ({"images": [{"id", "file_name"}], "annotations":
               [{"image_id", "caption"}]}) and the image folder.
  VQAv2        the official questions file ({"data_subtype", "questions": [{"image_id", "question",
               "question_id"}]}) and annotations file ({"annotations": [{"question_id", "answers": 10 x
               {"answer", "answer_confidence"}, "multiple_choice_answer"}]}); images named
               COCO_<data_subtype>_<image_id:012d>.jpg (configurable).
  TextVQA / DocVQA  {"data": [{"question", "answers", "image" or "image_name" or "image_id", "question_id" or
               "questionId"}]}.

Every source yields raw examples of one of two schemas (all tf.string; the plural features have shape [n]):
  captions  {"id", "image/encoded", "caption", "captions"}           caption: the training target (COCO's
                                                                      training splits have one example per
                                                                      caption); captions: every reference
  vqa       {"id", "image/encoded", "question", "answer", "answers"}  answer: the most frequent reference (VQAv2:
                                                                      its multiple_choice_answer); answers:
                                                                      every reference, repeats kept
and the registered Task turns them into PaLI examples with tasks.preprocessors' prompts:
  captions  inputs "caption en"             targets the caption
  vqa       inputs "answer en <question>"   targets the answer
"inputs" / "targets" tokenised with tasks.vocab (their strings kept as "inputs_pretokenized" /
"targets_pretokenized", as seqio does), "image" float32 [H, W, 3] in [-1, 1] (decoded here, then
tasks.preprocessors.normalize_image and resize_image: squashed to the size, antialiased), and the raw texts
("id", "captions" / "answers", ...) kept for evaluation. Examples are shuffled by the sources, while their
images are still encoded (a task-level buffer would hold decoded images). Splits named in `inference_splits`
(default: "test") may come without references (COCO's image_info_test files, VQAv2 test questions, DocVQA's
test json): their references are empty and their targets "".

Selecting a source from gin: each `register_*` function registers its Task and returns the task's name, so
binding the run's task macro to a call of it both registers the task and selects it. For VQAv2:

  import tasks.sources
  tasks.sources.register_vqav2:
    name = 'vqav2'
    questions = {'train': '/data/vqa/v2_OpenEnded_mscoco_train2014_questions.json',
                 'validation': '/data/vqa/v2_OpenEnded_mscoco_val2014_questions.json'}
    annotations = {'train': '/data/vqa/v2_mscoco_train2014_annotations.json',
                   'validation': '/data/vqa/v2_mscoco_val2014_annotations.json'}
    images = {'train': '/data/coco/train2014', 'validation': '/data/coco/val2014'}
    image_size = 224
  MIXTURE_OR_TASK_NAME = @tasks.sources.register_vqav2()

and the other formats the same way, then MIXTURE_OR_TASK_NAME = @tasks.sources.register_<format>():

  tasks.sources.register_coco_captions:
    name = 'coco_captions'
    annotations = {'train': '/data/coco/annotations/captions_train2017.json',
                   'validation': '/data/coco/annotations/captions_val2017.json'}
    images = {'train': '/data/coco/train2017', 'validation': '/data/coco/val2017'}
  tasks.sources.register_webdataset:
    name = 'web_captions'
    shards = {'train': '/data/web/train-*.tar', 'validation': '/data/web/val-*.tar'}
    caption_field = None  # the txt member; 'caption' would read that field of the json member
  tasks.sources.register_tfrecord:
    name = 'tfrecord_vqa'
    files = {'train': '/data/tfrecord/train-*.tfrecord'}
    kind = 'vqa'  # bytes features image/encoded, question, answers (image_key, question_key, answers_key)
  tasks.sources.register_jsonl:
    name = 'jsonl_captions'
    files = {'train': '/data/jsonl/train.jsonl', 'validation': '/data/jsonl/val.jsonl'}
    images = '/data/jsonl/images'
    kind = 'caption'
  tasks.sources.register_vqa_json:
    name = 'docvqa'
    annotations = {'train': '/data/docvqa/train/train_v1.0.json', 'validation': '/data/docvqa/val/val_v1.0.json'}
    images = {'train': '/data/docvqa/train', 'validation': '/data/docvqa/val'}
    image_size = 1064

An `images` folder is one string for every split or a {split: folder} dict. Gin calls
`@tasks.sources.register_x()` each time a configurable receiving the macro is called: registering the same
arguments again is a no-op, and new arguments under the same name replace the task this module registered.

Bad data never stops the pipeline and is never dropped silently: the example is skipped (an over-long text is
truncated) and counted in `tasks.data_health` under "<task name>/<reason>":
  corrupt_file         a tar shard that is cut short or fails its checks (the examples before the fault are
                       kept; the rest of the file is lost, counted once); in a TFRecord file, each run of bytes
                       holding no complete record (a damaged length, a file cut short): the records after it
                       are recovered (tasks.tfrecords)
  bad_record           a json line, json member or record that does not parse or fails its checksum, or a field
                       of the wrong type
  unsafe_path          an image path or tar member that is absolute, climbs out with '..', or is not a file
                       (a tar member that is a link; an image path that is a symlink to outside its folder)
  missing_image        no image named, or the file cannot be read
  undecodable_image    image bytes that do not decode
  missing_caption / missing_question / missing_answers   a record without its text
  inputs_truncated / targets_truncated                   a text longer than its feature length (kept, cut)
A missing or unparseable annotations file, or a glob that matches nothing, is an error naming the file.
Faults found when an annotations file is parsed (once per split and process) are counted then; faults of
image files and shards are counted each time they are read.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import os
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import gin
import numpy as np
from tasks.quiet_tensorflow import tf  # first: TensorFlow without its start-up lines (seqio imports it)
import seqio
from google.protobuf import message as protobuf_message
from PIL import Image

from tasks import data_health
from tasks import image_modes
from tasks import preprocessors as pali_preprocessors
from tasks import tfrecords
from tasks import vocab

KINDS: tuple[str, ...] = ("caption", "vqa")

# The raw schema of each kind: feature -> shape (every feature is tf.string).
SCHEMAS: dict[str, dict[str, list[int | None]]] = {
    "caption": {"id": [], "image/encoded": [], "caption": [], "captions": [None]},
    "vqa": {"id": [], "image/encoded": [], "question": [], "answer": [], "answers": [None]},
}
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")

_AUTOTUNE = tf.data.AUTOTUNE
_SHUFFLE_BUFFER = 1000  # raw (still encoded) examples a sharded source shuffles over, as seqio's default
_TAR_CHUNK = 1 << 16  # bytes read at a time when checking a tar shard's end


# ----------------------------------------------------------------------------------------------------------------
# Fields and paths
# ----------------------------------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
  """A non-empty string stripped of surrounding whitespace, or None for anything else."""
  if isinstance(value, str) and value.strip():
    return value.strip()
  return None


def _texts(value: Any) -> list[str]:
  """The usable strings of a reference list: a string, a list of strings, or VQAv2's [{"answer": ...}].

  Answers repeat heavily across a dataset ("yes", "2"), so they are interned to keep one copy of each.
  """
  items = value if isinstance(value, list) else [value]
  texts = (_text(item.get("answer") if isinstance(item, dict) else item) for item in items)
  return [sys.intern(t) for t in texts if t is not None]


def _most_frequent(answers: Sequence[str]) -> str:
  """The answer given most often; ties go to the one given first."""
  return collections.Counter(answers).most_common(1)[0][0]


def _safe_join(root: str, relative: str) -> str | None:
  """root/relative, or None if `relative` is absolute or climbs out with '..'.

  Annotations are untrusted input: a path in them must not make the pipeline read files outside its folder.
  """
  if relative.startswith(("/", "\\")) or "://" in relative or ".." in relative.replace("\\", "/").split("/"):
    return None
  return os.path.join(root, relative)


def _per_split(value: str | Mapping[str, str], splits: Iterable[str], what: str) -> dict[str, str]:
  """A {split: value} dict from one value for every split, or a dict that must name every split."""
  if isinstance(value, str):
    return {split: value for split in splits}
  missing = [split for split in splits if split not in value]
  if missing:
    raise ValueError(f"{what} names no entry for split(s) {', '.join(missing)}")
  return dict(value)


def _glob(pattern: str | Sequence[str], what: str) -> list[str]:
  """The sorted files matching a glob (or several), or FileNotFoundError naming the pattern."""
  patterns = [pattern] if isinstance(pattern, str) else list(pattern)
  files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
  if not files:
    raise FileNotFoundError(f"{what}: no file matches {pattern!r}")
  return files


def load_json(path: str) -> Any:
  """A whole json file; a missing or malformed one is an error naming it (a split cannot go on without it)."""
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      return json.load(f)
  except tf.errors.NotFoundError:
    raise FileNotFoundError(f"annotations file {path!r} not found") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"annotations file {path!r} is not valid json: {e}") from None


# ----------------------------------------------------------------------------------------------------------------
# Raw examples
# ----------------------------------------------------------------------------------------------------------------


def _caption_example(source: str, id_: str, image: Any, captions: list[str], need_text: bool) -> dict | None:
  """A captions example (image: bytes, or a path to read later), or None, counted, without a caption."""
  if need_text and not captions:
    data_health.record(source, "missing_caption", id_)
    return None
  return {"id": id_, "image/encoded": image, "caption": captions[0] if captions else "", "captions": captions}


def _vqa_example(source: str, id_: str, image: Any, question: str | None, answers: list[str], need_text: bool,
                 answer: str | None = None) -> dict | None:
  """A VQA example whose target is `answer` or else the most frequent answer; None, counted, if text is missing."""
  if question is None:
    data_health.record(source, "missing_question", id_)
    return None
  if need_text and not answers:
    data_health.record(source, "missing_answers", id_)
    return None
  target = answer or (_most_frequent(answers) if answers else "")
  return {"id": id_, "image/encoded": image, "question": question, "answer": target, "answers": answers}


_VALID = "_valid"  # the flag a tf.data stage sets on an example it could not produce, before filtering it out


def _keep_valid(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Drops the examples whose _VALID flag is false (their fault is already counted) and the flag itself."""
  def valid(example: dict[str, tf.Tensor]) -> tf.Tensor:
    return example[_VALID]

  def without_flag(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {k: v for k, v in example.items() if k != _VALID}

  return dataset.filter(valid).map(without_flag)


def _signature(kind: str) -> dict[str, tf.TensorSpec]:
  return {k: tf.TensorSpec(shape, tf.string) for k, shape in SCHEMAS[kind].items()}


# ----------------------------------------------------------------------------------------------------------------
# File-sharded sources: WebDataset tar shards and TFRecords
# ----------------------------------------------------------------------------------------------------------------


class ShardedFiles(seqio.FileDataSource):
  """Examples read from shard files by a Python generator per file.

  seqio.FileDataSource lists, shards, shuffles and interleaves the files; each file is read by
  `read_file(path)`, which yields raw examples and counts what it skips. (seqio's TFExampleDataSource parses in
  tf.data, where one truncated file or malformed record ends the whole pipeline.) The examples are shuffled
  here, while their images are still encoded: a buffer of decoded images would be many times larger.
  """

  def __init__(self, read_file: Callable[[str], Iterator[dict]], kind: str,
               split_to_filepattern: Mapping[str, str | Sequence[str]]):
    """Builds the source.

    Args:
      read_file: path -> raw examples of `kind`.
      kind: one of KINDS.
      split_to_filepattern: split -> glob (or list of globs) of its files.
    """
    signature = _signature(kind)

    def generate(path: bytes) -> Iterator[dict]:
      yield from read_file(path.decode())

    def read_file_fn(path: tf.Tensor) -> tf.data.Dataset:
      return tf.data.Dataset.from_generator(generate, output_signature=signature, args=(path,))

    super().__init__(read_file_fn=read_file_fn, split_to_filepattern=split_to_filepattern,
                     performs_internal_shuffling=True)

  def list_shards(self, split: str) -> Sequence[str]:
    return _glob(self._split_to_filepattern[split], f"split {split!r}")

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length: Mapping[str, int] | None = None,
                  use_cached: bool = False, num_epochs: int | None = 1) -> tf.data.Dataset:
    """The split's raw examples, files and examples shuffled if asked; the arguments after `*` are unused."""
    del sequence_length, use_cached, num_epochs
    dataset = super().get_dataset(split, shuffle=shuffle, seed=seed, shard_info=shard_info)
    return dataset.shuffle(_SHUFFLE_BUFFER, seed=seed) if shuffle else dataset


def _member_key(name: str) -> tuple[str, str]:
  """WebDataset's (key, extension): the extension starts at the first '.' of the base name."""
  directory, base = os.path.split(name)
  stem, _, extension = base.partition(".")
  return os.path.join(directory, stem), extension.lower()


def _tar_files(tar: tarfile.TarFile, source: str) -> Iterator[tarfile.TarInfo]:
  """The regular-file members with safe names; links, devices and unsafe names are counted and skipped."""
  for member in tar:
    if member.isdir():
      continue
    if not member.isfile() or _safe_join("", member.name) is None:
      data_health.record(source, "unsafe_path", member.name)
      continue
    yield member


def _tar_samples(tar: tarfile.TarFile, source: str,
                 wanted: Iterable[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
  """(key, {extension: bytes}) of each sample, a run of consecutive members sharing a key.

  Only the `wanted` extensions are read (into memory: nothing is extracted to disk). A sample is yielded as soon
  as the next key shows, before that member is read, so a shard cut short keeps every sample before the cut.
  """
  key, sample = None, {}
  for member in _tar_files(tar, source):
    member_key, extension = _member_key(member.name)
    if member_key != key:
      if key is not None:
        yield key, sample
      key, sample = member_key, {}
    if extension in wanted and extension not in sample:
      sample[extension] = tar.extractfile(member).read()
  if key is not None:
    yield key, sample


def _ends_cleanly(tar: tarfile.TarFile) -> bool:
  """Whether the archive ends in its end-of-archive zero blocks.

  tarfile stops without an error at a header cut short or corrupted after the first member, so a shard cut at a
  member boundary would otherwise lose its tail silently; what follows the last member must be zeros.
  """
  tar.fileobj.seek(tar.offset)
  seen = 0
  while chunk := tar.fileobj.read(_TAR_CHUNK):
    if chunk.count(0) != len(chunk):
      return False
    seen += len(chunk)
  return seen >= tarfile.BLOCKSIZE


def _webdataset_caption(sample: dict[str, bytes], caption_field: str | None) -> str | None:
  """The sample's caption: its txt member, or `caption_field` of its json member.

  Raises:
    ValueError: the text is not UTF-8, or the json member is malformed (UnicodeDecodeError and
      json.JSONDecodeError are ValueErrors).
  """
  if caption_field is None:
    return _text(sample["txt"].decode("utf-8")) if "txt" in sample else None
  if "json" not in sample:
    return None
  meta = json.loads(sample["json"])
  if not isinstance(meta, dict):
    raise ValueError("json member is not an object")
  return _text(meta.get(caption_field))


def read_webdataset(path: str, source: str, caption_field: str | None = None) -> Iterator[dict]:
  """Caption examples from one WebDataset tar shard (plain or compressed).

  Args:
    path: the shard.
    source: the name faults are counted under.
    caption_field: None to read the caption from the txt member, or the field of the json member holding it.

  Yields:
    Raw examples of the "caption" schema, id = the sample key.
  """
  wanted = IMAGE_EXTENSIONS + ("txt" if caption_field is None else "json",)
  try:
    with tf.io.gfile.GFile(path, "rb") as f, tarfile.open(fileobj=f, mode="r:*") as tar:
      for key, sample in _tar_samples(tar, source, wanted):
        image = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
        if image is None:
          data_health.record(source, "missing_image", f"{path}:{key}")
          continue
        try:
          caption = _webdataset_caption(sample, caption_field)
        except ValueError as e:
          data_health.record(source, "bad_record", f"{path}:{key}: {e}")
          continue
        example = _caption_example(source, key, image, [caption] if caption else [], True)
        if example is not None:
          yield example
      if not _ends_cleanly(tar):
        data_health.record(source, "corrupt_file", f"{path}: no end-of-archive marker after the last member")
  except (tarfile.TarError, EOFError, zlib.error, OSError, tf.errors.OpError) as e:
    data_health.record(source, "corrupt_file", f"{path}: {e}")


def _bytes_values(example: tf.train.Example, key: str | None) -> list[bytes]:
  """The values of a bytes feature, [] if it is absent (or key is None); ValueError if it holds another type."""
  if key is None or key not in example.features.feature:
    return []
  feature = example.features.feature[key]
  if feature.WhichOneof("kind") != "bytes_list":
    raise ValueError(f"feature {key!r} is not a bytes list")
  return list(feature.bytes_list.value)


def _strings(values: list[bytes]) -> list[str]:
  """The non-empty texts among UTF-8 values (UnicodeDecodeError, a ValueError, if one is not UTF-8)."""
  return [t for t in (_text(v.decode("utf-8")) for v in values) if t is not None]


def _from_tfexample(example: tf.train.Example, source: str, fallback_id: str, kind: str,
                    keys: Mapping[str, str | None]) -> dict | None:
  """A raw example from a parsed record; None (counted) if it lacks a field, ValueError if one is malformed."""
  def strings(field: str) -> list[str]:
    return _strings(_bytes_values(example, keys[field]))

  ids = strings("id")
  id_ = ids[0] if ids else fallback_id
  images = _bytes_values(example, keys["image"])
  if not images or not images[0]:
    data_health.record(source, "missing_image", id_)
    return None
  if kind == "caption":
    return _caption_example(source, id_, images[0], strings("caption"), True)
  questions = strings("question")
  return _vqa_example(source, id_, images[0], questions[0] if questions else None, strings("answers"), True)


def read_tfrecord(path: str, source: str, kind: str, image_key: str = "image/encoded",
                  caption_key: str = "caption", question_key: str = "question", answers_key: str = "answers",
                  id_key: str | None = None) -> Iterator[dict]:
  """Raw examples from one TFRecord file of tf.train.Example.

  Args:
    path: the file.
    source: the name faults are counted under.
    kind: one of KINDS.
    image_key: the bytes feature holding the encoded image.
    caption_key: (captions) the bytes feature whose values are the references.
    question_key: (vqa) the bytes feature holding the question.
    answers_key: (vqa) the bytes feature holding the answers.
    id_key: the bytes feature holding an id, or None for "<file>:<record number>".

  Yields:
    Raw examples of the `kind` schema.
  """
  keys = {"id": id_key, "image": image_key, "caption": caption_key, "question": question_key,
          "answers": answers_key}

  def on_fault(reason: str, detail: str) -> None:
    data_health.record(source, reason, detail)

  try:
    # Read eagerly, so that a damaged file is handled here, where its faults are counted and its intact records
    # recovered, rather than inside the tf.data pipeline, which it would end.
    for number, serialized in enumerate(tfrecords.records(path, on_fault)):
      fallback_id = f"{path}:{number}"
      try:
        example = _from_tfexample(tf.train.Example.FromString(serialized), source, fallback_id, kind, keys)
      except (protobuf_message.DecodeError, ValueError) as e:
        data_health.record(source, "bad_record", f"{fallback_id}: {e}")
        continue
      if example is not None:
        yield example
  except tf.errors.OpError as e:
    data_health.record(source, "corrupt_file", f"{path}: {e.message}")


# ----------------------------------------------------------------------------------------------------------------
# Annotation-file sources: jsonl, COCO captions, VQAv2, TextVQA / DocVQA
# ----------------------------------------------------------------------------------------------------------------


def _read_image_file(path: str, source: str) -> bytes | None:
  """A whole image file, or None (counted as missing_image) if it cannot be read."""
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read()
  except (OSError, tf.errors.OpError) as e:
    data_health.record(source, "missing_image", f"{path}: {e}")
    return None


class AnnotatedImages(seqio.DataSource):
  """Examples listed in annotation files, with their images as files in a folder.

  A split's annotations are parsed once per process, on first use, into raw examples whose "image/encoded" is
  still the image's path; tf.data then reads them by index, so a shuffle covers the whole split, sharding is by
  example, and image files are read in parallel. Like tasks.registry.GeneratorSource, the source is
  index-addressable (`num_examples`, `examples_at`), which tasks.pipeline uses for resumable, per-process
  batches: there "train" is an endless stream of epochs, each in its own order drawn from the data seed.
  """

  def __init__(self, name: str, kind: str, parsers: Mapping[str, Callable[[], list[dict]]]):
    """Builds the source.

    Args:
      name: the name faults are counted under.
      kind: one of KINDS.
      parsers: split -> a function parsing its annotations into raw examples.
    """
    super().__init__(splits=parsers.keys(), performs_internal_shuffling=True)
    self._name = name
    self._kind = kind
    self._parsers = dict(parsers)
    self._examples: dict[str, list[dict]] = {}

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def examples(self, split: str) -> list[dict]:
    """The split's raw examples (image paths, not bytes), parsed on first use."""
    if split not in self._examples:
      self._examples[split] = self._parsers[split]()
    return self._examples[split]

  def num_examples(self, split: str) -> int | None:
    """The split's size; None for "train", an endless stream of shuffled epochs (see examples_at)."""
    return None if split == "train" else len(self.examples(split))

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length: Mapping[str, int] | None = None,
                  use_cached: bool = False, num_epochs: int | None = 1) -> tf.data.Dataset:
    """The split's raw examples, shuffled if asked; the arguments after `*` are unused."""
    del sequence_length, use_cached, num_epochs
    examples = self.examples(split)
    indices = tf.data.Dataset.range(len(examples))
    if shard_info:
      indices = indices.shard(shard_info.num_shards, shard_info.index)
    if shuffle:
      indices = indices.shuffle(max(1, len(examples)), seed=seed)
    return self._read(examples, indices)

  def examples_at(self, split: str, indices: tf.data.Dataset, seed: int | None) -> tf.data.Dataset:
    """The examples at a stream of int64 positions, in order, one for each position.

    In "train", position g is example order_e[g mod n] of epoch e = g // n, order_e a permutation drawn from
    (seed, e): every epoch visits each example once, in an order that depends on nothing but the seed; in the
    other splits position g is example g mod n. An example whose image cannot be read or decoded is counted and
    replaced by the one at the next position (and so on): skipping it would shift every later row, so that a
    resumed run, which starts reading at its step's rows, would read other rows than the uninterrupted run.

    Raises:
      ValueError: the split has no example (the stream would never yield).
    """
    examples = self.examples(split)
    if not examples:
      raise ValueError(f"{self._name}: the {split} split has no usable example")
    n = len(examples)

    @functools.lru_cache(maxsize=2)  # the epoch being read, and the next while a batch straddles the two
    def order(epoch: int) -> np.ndarray:
      return np.random.default_rng([int(seed or 0) % 2 ** 63, epoch]).permutation(n)

    def at(position: int) -> dict:
      return examples[order(position // n)[position % n] if split == "train" else position % n]

    def usable(g: np.int64) -> list[np.ndarray]:
      for position in range(int(g), int(g) + n):
        example = at(position)
        data = self._usable_image(example)
        if data is not None:
          return self._row({**example, "image/encoded": data})
      raise ValueError(f"{self._name}: no image of the {split} split can be read and decoded "
                       f"(see the counts of {self._name}/missing_image and undecodable_image)")

    schema = SCHEMAS[self._kind]

    def fetch(g: tf.Tensor) -> dict[str, tf.Tensor]:
      outputs = tf.numpy_function(usable, [g], [tf.string] * len(schema))
      return {k: tf.ensure_shape(v, shape) for (k, shape), v in zip(schema.items(), outputs)}

    return indices.map(fetch, num_parallel_calls=_AUTOTUNE)

  def _usable_image(self, example: dict) -> bytes | None:
    """The bytes of the example's image file, or None (counted) if it cannot be read or does not decode.

    The check decodes at the smallest scale a JPEG allows, a fraction of the cost of the decode that follows.
    """
    data = _read_image_file(example["image/encoded"], self._name)
    if data is None or not _decode(data, example["id"].encode(), 1, 1, self._name)[1]:
      return None
    return data

  def _row(self, example: dict) -> list[np.ndarray]:
    """The example's features in schema order, as numpy_function returns them."""
    return [np.array(example[k], dtype=object) for k in SCHEMAS[self._kind]]

  def _read(self, examples: list[dict], indices: tf.data.Dataset) -> tf.data.Dataset:
    """The examples at `indices` with their image files' bytes, in order; unreadable files are skipped."""
    schema = SCHEMAS[self._kind]

    def read(i: np.int64) -> list[np.ndarray]:
      example = examples[i]
      data = _read_image_file(example["image/encoded"], self._name)
      return self._row({**example, "image/encoded": data or b""}) + [np.bool_(data is not None)]

    def fetch(index: tf.Tensor) -> dict[str, tf.Tensor]:
      outputs = tf.numpy_function(read, [index], [tf.string] * len(schema) + [tf.bool])
      example = {k: tf.ensure_shape(v, shape) for (k, shape), v in zip(schema.items(), outputs)}
      return {**example, _VALID: outputs[-1]}

    return _keep_valid(indices.map(fetch, num_parallel_calls=_AUTOTUNE))


def _image_path(name: Any, root: str, source: str, id_: str) -> str | None:
  """The path of an image named by an annotation, or None (counted) if it names none or an unsafe one."""
  name = _text(name)
  if name is None:
    data_health.record(source, "missing_image", id_)
    return None
  path = _safe_join(root, name)
  if path is None or _links_outside(root, path):
    data_health.record(source, "unsafe_path", f"{id_}: {name}")
    return None
  return path


def _links_outside(root: str, path: str) -> bool:
  """Whether a local `path` under `root` resolves, through symlinks, to a file outside `root`.

  A name inside the folder must not read a file outside it any more than '..' may (the tar reader skips every
  link for the same reason); remote filesystems (a '://' path) have no symlinks.
  """
  if "://" in root:
    return False
  real_root = os.path.realpath(root)
  return os.path.commonpath([real_root, os.path.realpath(path)]) != real_root


def _named_image(pattern: str, fields: Mapping[str, Any]) -> str | None:
  """`pattern` formatted with a record's fields, or None if the record lacks one (or it does not fit)."""
  try:
    return pattern.format(**fields)
  except (KeyError, IndexError, ValueError, TypeError):
    return None


def _bad_record(source: str, where: str) -> None:
  data_health.record(source, "bad_record", where)


def parse_jsonl(files: Sequence[str], images: str, kind: str, source: str, need_text: bool) -> list[dict]:
  """Raw examples (image paths) from jsonl files, one object a line.

  Args:
    files: the jsonl files.
    images: the folder image paths are relative to.
    kind: one of KINDS: lines carry "caption" / "captions", or "question" and "answers" / "answer".
    source: the name faults are counted under.
    need_text: whether a line without its caption (answers) is a fault (False for inference splits).

  Returns:
    The examples, in file and line order; id = the line's "id", or "<file>:<line number>".
  """
  examples = []
  for path in files:
    with tf.io.gfile.GFile(path, "rb") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        where = f"{path}:{number}"
        try:
          record = json.loads(line)  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        except ValueError:
          record = None
        if not isinstance(record, dict):
          _bad_record(source, where)
          continue
        id_ = str(record.get("id", where))
        image = _image_path(record.get("image"), images, source, id_)
        if image is None:
          continue
        if kind == "caption":
          example = _caption_example(source, id_, image, _texts(record.get("captions", record.get("caption"))),
                                     need_text)
        else:
          example = _vqa_example(source, id_, image, _text(record.get("question")),
                                 _texts(record.get("answers", record.get("answer"))), need_text)
        if example is not None:
          examples.append(example)
  return examples


def json_list(data: Any, key: str, path: str) -> list:
  """data[key], which must be a list: a file without it is not of the expected format (an error naming it)."""
  if not isinstance(data, dict) or not isinstance(data.get(key), list):
    raise ValueError(f"annotations file {path!r} has no {key!r} list")
  return data[key]


def parse_coco_captions(path: str, images: str, source: str, per_caption: bool, need_text: bool) -> list[dict]:
  """Raw caption examples (image paths) from a COCO captions file.

  Args:
    path: annotations/captions_<split>.json; a file without "annotations" (image_info_test) lists images only.
    images: the image folder.
    source: the name faults are counted under.
    per_caption: one example per (image, caption), for training; else one per image, its first caption the
      target.
    need_text: whether an image without captions is a fault (False for inference splits).

  Returns:
    The examples in the file's image order; id = the image id; "captions" always holds all of an image's.
  """
  data = load_json(path)
  listed = json_list(data, "images", path)
  # Only an inference split's file (image_info_test) may lack captions altogether.
  annotations = json_list(data, "annotations", path) if need_text else data.get("annotations", [])
  captions: dict[Any, list[str]] = collections.defaultdict(list)
  for number, annotation in enumerate(annotations if isinstance(annotations, list) else []):
    if not isinstance(annotation, dict):
      _bad_record(source, f"{path}: annotation {number}")
    elif _text(annotation.get("caption")) is None:
      data_health.record(source, "missing_caption", f"{path}: annotation {number}")
    else:  # ids are matched as strings: json gives ints, and a malformed one may be unhashable
      captions[str(annotation.get("image_id"))].append(_text(annotation["caption"]))
  examples = []
  for number, image in enumerate(listed):
    if not isinstance(image, dict) or "id" not in image:
      _bad_record(source, f"{path}: image {number}")
      continue
    id_ = str(image["id"])
    image_path = _image_path(image.get("file_name"), images, source, id_)
    refs = captions.pop(id_, [])
    if image_path is None:
      continue
    example = _caption_example(source, id_, image_path, refs, need_text)
    if example is not None:
      targets = refs if per_caption and refs else [example["caption"]]
      examples.extend({**example, "caption": c} for c in targets)
  orphans = sum(len(c) for c in captions.values())
  if orphans:  # captions of image ids the file does not list
    data_health.record(source, "missing_image", f"{path}: {orphans} captions of unlisted images", n=orphans)
  return examples


def parse_vqav2(questions: str, annotations: str | None, images: str, image_pattern: str, source: str) -> list[dict]:
  """Raw VQA examples (image paths) from VQAv2's questions and annotations files.

  Args:
    questions: the questions file.
    annotations: the annotations file, or None (test questions: no references).
    images: the image folder.
    image_pattern: the image file name, formatted with the question's fields and the file's data_subtype.
    source: the name faults are counted under.

  Returns:
    The examples in question order; id = the question id; the target is the multiple_choice_answer (else the
    most frequent answer); "answers" holds the 10 human answers.
  """
  question_data = load_json(questions)
  subtype = question_data.get("data_subtype", "") if isinstance(question_data, dict) else ""
  answered = {}  # question id (as a string: a malformed id may be unhashable) -> annotation
  if annotations is not None:
    for number, annotation in enumerate(json_list(load_json(annotations), "annotations", annotations)):
      if isinstance(annotation, dict) and "question_id" in annotation:
        answered[str(annotation["question_id"])] = annotation
      else:
        _bad_record(source, f"{annotations}: annotation {number}")
  examples = []
  for number, question in enumerate(json_list(question_data, "questions", questions)):
    if not isinstance(question, dict) or "question_id" not in question:
      _bad_record(source, f"{questions}: question {number}")
      continue
    id_ = str(question["question_id"])
    image = _image_path(_named_image(image_pattern, {"data_subtype": subtype, **question}), images, source, id_)
    if image is None:
      continue
    annotation = answered.get(id_, {})
    example = _vqa_example(source, id_, image, _text(question.get("question")), _texts(annotation.get("answers", [])),
                           annotations is not None, _text(annotation.get("multiple_choice_answer")))
    if example is not None:
      examples.append(example)
  return examples


def _vqa_json_image(record: Mapping[str, Any], image_pattern: str | None) -> Any:
  """The image a TextVQA / DocVQA record names: by `image_pattern`, else its "image" or "image_name" field,
  else "<image_id>.jpg"."""
  if image_pattern is not None:
    return _named_image(image_pattern, record)
  for field in ("image", "image_name"):
    if field in record:
      return record[field]
  return _named_image("{image_id}.jpg", record)


def parse_vqa_json(path: str, images: str, image_pattern: str | None, source: str, need_text: bool) -> list[dict]:
  """Raw VQA examples (image paths) from a TextVQA / DocVQA-style file, {"data": [record, ...]}.

  Args:
    path: the json file.
    images: the folder image names are relative to.
    image_pattern: None, or the image file name formatted with the record's fields ("{image_id}.jpg").
    source: the name faults are counted under.
    need_text: whether a record without answers is a fault (False for inference splits).

  Returns:
    The examples in file order; id = "question_id" or "questionId"; the target is the most frequent answer.
  """
  examples = []
  for number, record in enumerate(json_list(load_json(path), "data", path)):
    if not isinstance(record, dict):
      _bad_record(source, f"{path}: record {number}")
      continue
    id_ = str(record.get("question_id", record.get("questionId", f"{path}:{number}")))
    image = _image_path(_vqa_json_image(record, image_pattern), images, source, id_)
    if image is None:
      continue
    example = _vqa_example(source, id_, image, _text(record.get("question")), _texts(record.get("answers", [])),
                           need_text)
    if example is not None:
      examples.append(example)
  return examples


# ----------------------------------------------------------------------------------------------------------------
# Task preprocessors
# ----------------------------------------------------------------------------------------------------------------


def _decode(data: bytes, id_: bytes, height: int, width: int, source: str) -> tuple[np.ndarray, np.bool_]:
  """Encoded bytes -> (uint8 [h, w, 3], True), or (a black pixel, False), counted under the example's id_, if
  they do not decode.

  A JPEG much larger than height x width decodes at a reduced scale (1/2, 1/4 or 1/8, never below the
  size): several times faster, and the resize that follows would discard those pixels anyway.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.draft("RGB", (width, height))
      return image_modes.to_rgb(image), np.True_
  # PIL reports bad bytes with many types (OSError, SyntaxError, ValueError, DecompressionBombError, ...); any
  # failure here is one bad example, never a reason to end the pipeline.
  except Exception as e:  # pylint: disable=broad-except
    data_health.record(source, "undecodable_image", f"{id_.decode(errors='replace')}: {e}")
    return np.zeros((1, 1, 3), np.uint8), np.False_


def decode_image_or_skip(dataset: tf.data.Dataset, source: str, image_size: int | Sequence[int]) -> tf.data.Dataset:
  """Replaces "image/encoded" by "image", uint8 [h, w, 3]; skips (and counts) images that do not decode.

  tasks.preprocessors.decode_image uses tf.io.decode_image, which raises on bad bytes and so ends the whole
  pipeline; here PIL decodes inside tf.data (it releases the GIL while decoding, so parallel calls run in
  parallel) and a failure drops only its example. tasks.preprocessors.normalize_image and resize_image follow.

  Args:
    dataset: examples with "image/encoded".
    source: the name faults are counted under.
    image_size: the side, or (height, width), the image will be resized to: large JPEGs decode at a reduced
      scale no smaller than it.

  Returns:
    The examples whose image decoded.
  """
  height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
  decode = functools.partial(_decode, height=height, width=width, source=source)

  def fn(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    id_ = example["id"] if "id" in example else tf.constant("")  # names the example in the first warning
    pixels, valid = tf.numpy_function(decode, [example["image/encoded"], id_], [tf.uint8, tf.bool])
    pixels.set_shape([None, None, 3])
    out = {k: v for k, v in example.items() if k != "image/encoded"}
    return {**out, "image": pixels, _VALID: valid}

  return _keep_valid(dataset.map(fn, num_parallel_calls=_AUTOTUNE))


def count_truncated(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
                    sequence_length: Mapping[str, int] | None, source: str) -> tf.data.Dataset:
  """Counts tokenised "inputs" / "targets" too long for their feature length (EOS included), as
  "<feature>_truncated"; the example is kept, and cut to length later in the task's pipeline.

  Args:
    dataset: tokenised examples.
    output_features: the task's features (their add_eos says whether an EOS will be appended).
    sequence_length: feature -> length, or None (nothing is cut, so nothing is counted).
    source: the name counts go under.

  Returns:
    The same examples.
  """
  limits = {k: sequence_length[k] - int(output_features[k].add_eos)
            for k in ("inputs", "targets") if sequence_length and sequence_length.get(k)}
  if not limits:
    return dataset

  def note(*lengths: np.int32) -> np.bool_:
    for (key, limit), length in zip(limits.items(), lengths):
      if length > limit:
        data_health.record(source, f"{key}_truncated", f"{length} tokens, {limit} kept")
    return np.True_

  def fn(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    # A stateful op whose output nothing uses still runs inside tf.data's map.
    tf.numpy_function(note, [tf.size(example[k]) for k in limits], tf.bool)
    return example

  return dataset.map(fn, num_parallel_calls=_AUTOTUNE)


# ----------------------------------------------------------------------------------------------------------------
# Task registration (gin)
# ----------------------------------------------------------------------------------------------------------------

# name -> the arguments this module registered the task with: gin calls a registering function each time a
# binding that names it is used, and the same arguments must then be a no-op, not a duplicate-name error.
_REGISTERED: dict[str, dict[str, Any]] = {}


def _register(arguments: dict[str, Any], kind: str, source: seqio.DataSource) -> str:
  """Registers (or re-registers) the seqio Task reading `source`; returns its name.

  Args:
    arguments: the registering function's arguments: name, image_size, vocabulary and the source's.
    kind: one of KINDS.
    source: the raw examples.

  Returns:
    arguments["name"].

  Raises:
    ValueError: another module already registered a task under this name.
  """
  name = arguments["name"]
  if name in seqio.TaskRegistry.names():
    if _REGISTERED.get(name) == arguments:
      return name
    if name not in _REGISTERED:
      raise ValueError(f"task name {name!r} is already registered by another module; choose another name")
    seqio.TaskRegistry.remove(name)
  vocabulary = arguments["vocabulary"] or vocab.PaliVocabulary()
  text_features = {k: seqio.Feature(vocabulary, add_eos=True) for k in ("inputs", "targets")}
  output_features = {**text_features, "image": seqio.ContinuousFeature(dtype=tf.float32, rank=3)}
  preprocessors = [
      pali_preprocessors.caption_prompt if kind == "caption" else pali_preprocessors.vqa_prompt,
      # Only the texts are tokenised: seqio would otherwise also keep an "image_pretokenized" copy.
      functools.partial(pali_preprocessors.tokenize, output_features=text_features),
      functools.partial(count_truncated, source=name),
      seqio.preprocessors.append_eos_after_trim,
      # Images last, so that only the examples certain to be kept are decoded.
      functools.partial(decode_image_or_skip, source=name, image_size=arguments["image_size"]),
      pali_preprocessors.normalize_image,
      functools.partial(pali_preprocessors.resize_image, image_size=arguments["image_size"]),
  ]
  # No shuffle buffer in the task: it would hold decoded images; the sources shuffle before decoding.
  seqio.TaskRegistry.add(name, source=source, output_features=output_features, preprocessors=preprocessors,
                         shuffle_buffer_size=None)
  _REGISTERED[name] = arguments
  return name


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")


@gin.configurable(module="tasks.sources")
def register_webdataset(name: str, shards: Mapping[str, str | Sequence[str]], caption_field: str | None = None,
                        image_size: int | Sequence[int] = 224, vocabulary: seqio.Vocabulary | None = None) -> str:
  """Registers a captioning Task over WebDataset tar shards.

  Args:
    name: the task name (also the name its bad data is counted under).
    shards: split -> glob (or list of globs) of .tar shards (.tar.gz and other compressions tarfile reads too).
    caption_field: None to take the caption from each sample's txt member, or the field of its json member.
    image_size: the side, or (height, width), images are resized to.
    vocabulary: the texts' vocabulary; None follows the gin-configured tasks.vocab.vocabulary().

  Returns:
    The task name.
  """
  arguments = dict(locals())
  read = functools.partial(read_webdataset, source=name, caption_field=caption_field)
  return _register(arguments, "caption", ShardedFiles(read, "caption", shards))


@gin.configurable(module="tasks.sources")
def register_tfrecord(name: str, files: Mapping[str, str | Sequence[str]], kind: str = "caption",
                      image_key: str = "image/encoded", caption_key: str = "caption", question_key: str = "question",
                      answers_key: str = "answers", id_key: str | None = None, image_size: int | Sequence[int] = 224,
                      vocabulary: seqio.Vocabulary | None = None) -> str:
  """Registers a Task over TFRecord files of tf.train.Example.

  Args:
    name: the task name (also the name its bad data is counted under).
    files: split -> glob (or list of globs) of TFRecord files.
    kind: "caption" or "vqa".
    image_key: the bytes feature holding the encoded image.
    caption_key: (captions) the bytes feature whose values are the references (the first is the target).
    question_key: (vqa) the bytes feature holding the question.
    answers_key: (vqa) the bytes feature holding the answers (the most frequent is the target).
    id_key: the bytes feature holding an example id, or None.
    image_size: the side, or (height, width), images are resized to.
    vocabulary: the texts' vocabulary; None follows the gin-configured tasks.vocab.vocabulary().

  Returns:
    The task name.
  """
  arguments = dict(locals())
  _check_kind(kind)
  read = functools.partial(read_tfrecord, source=name, kind=kind, image_key=image_key, caption_key=caption_key,
                           question_key=question_key, answers_key=answers_key, id_key=id_key)
  return _register(arguments, kind, ShardedFiles(read, kind, files))


@gin.configurable(module="tasks.sources")
def register_jsonl(name: str, files: Mapping[str, str | Sequence[str]], images: str | Mapping[str, str],
                   kind: str = "caption", inference_splits: Sequence[str] = ("test",),
                   image_size: int | Sequence[int] = 224, vocabulary: seqio.Vocabulary | None = None) -> str:
  """Registers a Task over jsonl files whose lines name images in a folder.

  Args:
    name: the task name (also the name its bad data is counted under).
    files: split -> glob (or list of globs) of .jsonl files.
    images: the folder image paths are relative to, or split -> folder.
    kind: "caption" (lines with "caption" or "captions") or "vqa" (lines with "question" and "answers" or
      "answer").
    inference_splits: splits whose lines may lack the caption / answers (their targets are then "").
    image_size: the side, or (height, width), images are resized to.
    vocabulary: the texts' vocabulary; None follows the gin-configured tasks.vocab.vocabulary().

  Returns:
    The task name.
  """
  arguments = dict(locals())
  _check_kind(kind)
  folders = _per_split(images, files, "images")
  parsers = {split: functools.partial(_parse_jsonl_split, pattern, folders[split], kind, name,
                                      split not in inference_splits)
             for split, pattern in files.items()}
  return _register(arguments, kind, AnnotatedImages(name, kind, parsers))


def _parse_jsonl_split(pattern: str | Sequence[str], images: str, kind: str, source: str,
                       need_text: bool) -> list[dict]:
  return parse_jsonl(_glob(pattern, f"{source} jsonl files"), images, kind, source, need_text)


@gin.configurable(module="tasks.sources")
def register_coco_captions(name: str, annotations: Mapping[str, str], images: str | Mapping[str, str],
                           per_caption_splits: Sequence[str] = ("train",),
                           inference_splits: Sequence[str] = ("test",), image_size: int | Sequence[int] = 224,
                           vocabulary: seqio.Vocabulary | None = None) -> str:
  """Registers a captioning Task over COCO captions files.

  Args:
    name: the task name (also the name its bad data is counted under).
    annotations: split -> captions json (captions_train2017.json, ...; image_info_test2017.json for a test split).
    images: the image folder, or split -> folder.
    per_caption_splits: splits with one example per (image, caption) (training); the others have one per image.
    inference_splits: splits whose files may list images without captions (their targets are then "").
    image_size: the side, or (height, width), images are resized to.
    vocabulary: the texts' vocabulary; None follows the gin-configured tasks.vocab.vocabulary().

  Returns:
    The task name.
  """
  arguments = dict(locals())
  folders = _per_split(images, annotations, "images")
  parsers = {split: functools.partial(parse_coco_captions, path, folders[split], name, split in per_caption_splits,
                                      split not in inference_splits)
             for split, path in annotations.items()}
  return _register(arguments, "caption", AnnotatedImages(name, "caption", parsers))


@gin.configurable(module="tasks.sources")
def register_vqav2(name: str, questions: Mapping[str, str], annotations: Mapping[str, str],
                   images: str | Mapping[str, str], image_pattern: str = "COCO_{data_subtype}_{image_id:012d}.jpg",
                   inference_splits: Sequence[str] = ("test",), image_size: int | Sequence[int] = 224,
                   vocabulary: seqio.Vocabulary | None = None) -> str:
  """Registers a VQA Task over VQAv2's questions and annotations files.

  Args:
    name: the task name (also the name its bad data is counted under).
    questions: split -> questions file (v2_OpenEnded_mscoco_<subtype>_questions.json).
    annotations: split -> annotations file (v2_mscoco_<subtype>_annotations.json); every split but the
      inference ones needs one.
    images: the image folder, or split -> folder.
    image_pattern: an image's file name, formatted with its question's fields and the questions file's
      data_subtype.
    inference_splits: splits that may have no annotations (test-dev, test: their targets are "").
    image_size: the side, or (height, width), images are resized to.
    vocabulary: the texts' vocabulary; None follows the gin-configured tasks.vocab.vocabulary().

  Returns:
    The task name.

  Raises:
    ValueError: a split that is not an inference split has no annotations file.
  """
  arguments = dict(locals())
  unanswered = [split for split in questions if split not in annotations and split not in inference_splits]
  if unanswered:
    raise ValueError(f"register_vqav2({name!r}): split(s) {', '.join(unanswered)} need an annotations file "
                     "(or list them in inference_splits)")
  folders = _per_split(images, questions, "images")
  parsers = {split: functools.partial(parse_vqav2, path, annotations.get(split), folders[split], image_pattern, name)
             for split, path in questions.items()}
  return _register(arguments, "vqa", AnnotatedImages(name, "vqa", parsers))


@gin.configurable(module="tasks.sources")
def register_vqa_json(name: str, annotations: Mapping[str, str], images: str | Mapping[str, str],
                      image_pattern: str | None = None, inference_splits: Sequence[str] = ("test",),
                      image_size: int | Sequence[int] = 224, vocabulary: seqio.Vocabulary | None = None) -> str:
  """Registers a VQA Task over TextVQA / DocVQA-style json files ({"data": [...]}).

  Args:
    name: the task name (also the name its bad data is counted under).
    annotations: split -> json file (TextVQA_0.5.1_train.json, DocVQA's train_v1.0.json, ...).
    images: the folder image names are relative to, or split -> folder.
    image_pattern: None (a record's "image" or "image_name", else "<image_id>.jpg"), or the file name formatted
      with the record's fields.
    inference_splits: splits whose records may lack answers (their targets are then "").
    image_size: the side, or (height, width), images are resized to (documents: 1064 in PaLI-3's transfer).
    vocabulary: the texts' vocabulary; None follows the gin-configured tasks.vocab.vocabulary().

  Returns:
    The task name.
  """
  arguments = dict(locals())
  folders = _per_split(images, annotations, "images")
  parsers = {split: functools.partial(parse_vqa_json, path, folders[split], image_pattern, name,
                                      split not in inference_splits)
             for split, path in annotations.items()}
  return _register(arguments, "vqa", AnnotatedImages(name, "vqa", parsers))


__all__ = ["KINDS", "SCHEMAS", "IMAGE_EXTENSIONS", "ShardedFiles", "AnnotatedImages", "read_webdataset",
           "read_tfrecord", "parse_jsonl", "parse_coco_captions", "parse_vqav2", "parse_vqa_json",
           "decode_image_or_skip", "count_truncated", "register_webdataset", "register_tfrecord", "register_jsonl",
           "register_coco_captions", "register_vqav2", "register_vqa_json"]

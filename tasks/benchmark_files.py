"""Readers of the transfer benchmarks' own evaluation files, for `vlm.eval`.

Each reader returns the examples of one benchmark file in file order, as dicts
  {"id": str, "image": path, "references": [str, ...]}
plus "question" (VQA, ChartQA; the referring phrase for RefCOCO), for RefCOCO "bbox" [x, y, w, h] in pixels and for
XM3600 "language".
Layouts:
  coco_captions  annotations/captions_val2017.json: {"images": [{"id", "file_name"}], "annotations":
                 [{"image_id", "caption"}]}
  coco_karpathy  dataset_coco.json: {"images": [{"filepath", "filename", "split", "sentences": [{"raw"}],
                 "cocoid"}]}; the images of one split (Karpathy's "test" by default)
  vqav2          the questions json and the annotations json (tasks.sources.parse_vqav2 describes them)
  vqa_json       TextVQA / DocVQA: {"data": [{"question", "answers", "image" or "image_name" or "image_id"}]}
  named_vqa_json ST-VQA task 3 / InfographicVQA: {"data": [{"question", "answers", <image field>}]}, the image
                 field "file_path" (ST-VQA) or "image_local_name" (InfographicVQA)
  chartqa        [{"imgname", "query", "label"}]
  refcoco        [{"file_name", "bbox": [x, y, w, h], "sentences": [str or {"sent": str}, ...]}], one example a
                 sentence (every referring expression is scored, as papers count them)
  xm3600         Crossmodal-3600's captions.jsonl, one image a line: {"image/key", "image/locale", "<lang>":
                 {"caption": [...], "caption/tokenized": [...], ...} for each language}; images/<image/key>.jpg;
                 one example an (image, language), "language" the language code
  image_folder   root/<class name>/<image>, ImageNet-style (for SigLIP zero-shot classification and few-shot probes)
The COCO, VQAv2 and TextVQA / DocVQA layouts are parsed by tasks.sources, as training reads them. A file of
another layout is a ValueError naming the file and the field; so is an example without references, since
nothing could score it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from tasks import data_health, sources

SOURCE = "transfer_eval"  # the name tasks.data_health counts skipped records under


def _examples(raw: list[dict], path: str) -> list[dict]:
  """tasks.sources' raw examples as evaluation examples; each must have references."""
  examples = []
  for ex in raw:
    references = ex.get("captions", ex.get("answers"))
    _check_references(references, ex["id"], path)
    examples.append({"id": ex["id"], "image": ex["image/encoded"], "references": list(references),
                     **({"question": ex["question"]} if "question" in ex else {})})
  return examples


def _check_references(references: Any, id_: str, path: str) -> None:
  if not references:
    raise ValueError(f"{path}: example {id_} has an empty references list; every evaluated example needs at "
                     "least one reference")


def _field(record: Any, field: str, path: str, where: str, layout: str) -> Any:
  """record[field], or a ValueError naming the file, the record and the field the layout needs."""
  if not isinstance(record, dict) or field not in record:
    raise ValueError(f"{path}: {where} has no {field!r} field (expected {layout})")
  return record[field]


def coco_captions(annotations: str, images: str) -> list[dict]:
  """One example an image of a COCO captions file, its captions the references."""
  return _examples(sources.parse_coco_captions(annotations, images, SOURCE, per_caption=False, need_text=False),
                   annotations)


def coco_karpathy(path: str, images: str, split: str = "test") -> list[dict]:
  """One example an image of Karpathy's dataset_coco.json split `split`; images at images/filepath/filename."""
  layout = "Karpathy's dataset_coco.json: images [{filepath, filename, split, sentences: [{raw}]}]"
  examples = []
  records = sources.json_list(sources.load_json(path), "images", path)
  for number, record in enumerate(records):
    where = f"images[{number}]"
    if _field(record, "split", path, where, layout) != split:
      continue
    sentences = _field(record, "sentences", path, where, layout)
    id_ = str(record.get("cocoid", record.get("imgid", number)))
    references = [s["raw"].strip() for s in sentences if isinstance(s, dict) and isinstance(s.get("raw"), str)]
    _check_references(references, id_, path)
    name = os.path.join(record.get("filepath", ""), _field(record, "filename", path, where, layout))
    examples.append({"id": id_, "image": os.path.join(images, name), "references": references})
  return examples


def vqav2(questions: str, annotations: str, images: str,
          image_pattern: str = "COCO_{data_subtype}_{image_id:012d}.jpg") -> list[dict]:
  """One example a question of VQAv2's questions and annotations files, its 10 human answers the references."""
  unanswered = data_health.counts().get(f"{SOURCE}/missing_answers", 0)
  examples = sources.parse_vqav2(questions, annotations, images, image_pattern, SOURCE)
  # parse_vqav2 skips (and counts) a question without answers, as training must; nothing could score it here.
  unanswered = data_health.counts().get(f"{SOURCE}/missing_answers", 0) - unanswered
  if unanswered:
    raise ValueError(f"{annotations}: {unanswered} question(s) of {questions} have an empty answers list (or no "
                     "annotation); every evaluated question needs its answers")
  return _examples(examples, annotations)


def vqa_json(path: str, images: str, image_pattern: str | None = None) -> list[dict]:
  """One example a record of a TextVQA / DocVQA-style file, its answers the references."""
  return _examples(sources.parse_vqa_json(path, images, image_pattern, SOURCE, need_text=False), path)


def named_vqa_json(path: str, images: str, image_field: str) -> list[dict]:
  """One example a record of a {"data": [...]} file whose image path (relative to `images`) is the record's
  `image_field`: ST-VQA task 3 ("file_path") and InfographicVQA ("image_local_name"); its answers the references."""
  layout = f'{{"data": [{{"question", "answers", "{image_field}"}}]}}'
  records = sources.json_list(sources.load_json(path), "data", path)
  for number, record in enumerate(records):
    for field in ("question", "answers", image_field):
      _field(record, field, path, f"data[{number}]", layout)
  return vqa_json(path, images, f"{{{image_field}}}")


def chartqa(path: str, images: str) -> list[dict]:
  """One example a record of a ChartQA file; its label the one reference."""
  data = sources.load_json(path)
  if not isinstance(data, list):
    raise ValueError(f"{path}: expected a json list of ChartQA records [{{imgname, query, label}}]")
  examples = []
  for number, record in enumerate(data):
    fields = [_field(record, f, path, f"record {number}", "[{imgname, query, label}]")
              for f in ("imgname", "query", "label")]
    label = str(fields[2]).strip()
    _check_references([label] if label else [], f"record {number}", path)
    examples.append({"id": str(number), "image": os.path.join(images, fields[0]), "question": fields[1],
                     "references": [label]})
  return examples


def refcoco(path: str, images: str) -> list[dict]:
  """One example a referring expression of a RefCOCO-style file; the referred box the reference."""
  layout = "[{file_name, bbox: [x, y, w, h], sentences}]"
  data = sources.load_json(path)
  if not isinstance(data, list):
    raise ValueError(f"{path}: expected a json list of referring expressions {layout}")
  examples = []
  for number, record in enumerate(data):
    where = f"record {number}"
    name = _field(record, "file_name", path, where, layout)
    box = _field(record, "bbox", path, where, layout)
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(c, (int, float)) for c in box)
            and box[2] > 0 and box[3] > 0):
      raise ValueError(f"{path}: {where} 'bbox' must be [x, y, w, h] in pixels with w, h > 0; got {box!r}")
    sentences = _field(record, "sentences", path, where, layout)
    phrases = [s.get("sent") if isinstance(s, dict) else s for s in sentences] if isinstance(sentences, list) else []
    phrases = [p.strip() for p in phrases if isinstance(p, str) and p.strip()]
    if not phrases:
      raise ValueError(f"{path}: {where} has an empty 'sentences' list; give at least one referring expression")
    for i, phrase in enumerate(phrases):
      examples.append({"id": f"{number}.{i}", "image": os.path.join(images, name), "question": phrase,
                       "bbox": [float(c) for c in box], "references": [_box_text(box)]})
  return examples


def _jsonl(path: str) -> list[tuple[int, Any]]:
  """(line number, object) of each non-blank line of a jsonl file; a missing file or a bad line is an error."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"annotations file {path!r} not found")
  records = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          records.append((number, json.loads(line)))
        except ValueError:
          raise ValueError(f"{path}: line {number} is not valid json (expected one JSON object a line)") from None
  if not records:
    raise ValueError(f"{path} is empty; expected one JSON object an image")
  return records


def xm3600(path: str, images: str, languages: Sequence[str] | None = None) -> list[dict]:
  """One example an (image, language) of Crossmodal-3600's captions.jsonl; the language's captions the references.

  Args:
    path: captions.jsonl.
    images: the folder of <image/key>.jpg.
    languages: the language codes to read; None: every language of the file (its first line's), sorted.

  Returns:
    The examples language by language (in `languages` order), each language's in file order; "id" is
    "<image/key>/<language>", "references" the raw "caption"s (transfer_tasks.xm3600 tokenises them).
  """
  layout = 'one JSON object an image: {"image/key", "<language>": {"caption": [...]}, ...}'
  records = _jsonl(path)
  first = records[0][1]
  known = sorted(k for k in first if not k.startswith("image/")) if isinstance(first, dict) else []
  if not known:
    raise ValueError(f"{path}: line {records[0][0]} names no language (expected {layout})")
  languages = known if languages is None else list(languages)
  unknown = [lang for lang in languages if lang not in known]
  if unknown:
    raise ValueError(f"{path} has no captions in language {unknown[0]!r}; its languages are {', '.join(known)}")
  examples = {lang: [] for lang in languages}
  for number, record in records:
    where = f"line {number}"
    key = _field(record, "image/key", path, where, layout)
    for lang in languages:
      captions = _field(_field(record, lang, path, where, layout), "caption", path, f"{where} {lang!r}", layout)
      captions = captions if isinstance(captions, list) else []
      references = [c.strip() for c in captions if isinstance(c, str) and c.strip()]
      _check_references(references, f"{key} ({lang})", path)
      examples[lang].append({"id": f"{key}/{lang}", "image": os.path.join(images, f"{key}.jpg"),
                             "references": references, "language": lang})
  return [ex for lang in languages for ex in examples[lang]]


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def image_folder(root: str) -> tuple[list[str], list[int], list[str]]:
  """An ImageNet-style folder: one subfolder a class, named by it ("golden_retriever" reads "golden retriever").

  Returns:
    (image paths, sorted by class then name; their class indices; the class names).
  """
  if not os.path.isdir(root):
    raise ValueError(f"image folder {root} does not exist; give a folder with one subfolder of images a class")
  classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  if not classes:
    raise ValueError(f"image folder {root} has no class subfolders; put each class's images in a folder named by it")
  paths, labels = [], []
  for label, name in enumerate(classes):
    files = sorted(f for f in os.listdir(os.path.join(root, name)) if f.lower().endswith(IMAGE_EXTENSIONS))
    paths += [os.path.join(root, name, f) for f in files]
    labels += [label] * len(files)
  return paths, labels, [c.replace("_", " ") for c in classes]


def _box_text(box: list[float]) -> str:
  x, y, w, h = box
  return f"[{x:g}, {y:g}, {w:g}, {h:g}]"


__all__ = ["coco_captions", "coco_karpathy", "vqav2", "vqa_json", "named_vqa_json", "chartqa", "refcoco", "xm3600",
           "image_folder"]

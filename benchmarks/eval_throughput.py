"""Transfer-evaluation speed: examples/s of vlm.eval's PaLI decoding against the decode loop alone.

Writes held-out generated scenes (tasks.scene_tasks, validation split) as benchmark files in their own layouts
(every PaLI benchmark's: the paths gin_configs/runs/transfer_task_files.gin names, under --data_dir),
then times, on one task, best of --repeats after a warm-up (which compiles):
  - eval: what vlm.eval runs for a PaLI task (vlm.transfer_eval.Decoder: plan = prompts tokenised and
    bucketed; decode = images read and fitted, this process's rows fed to the mesh, answers gathered and
    detokenised);
  - loop: the jitted predict_batch alone, on the same global batches (same batch size and shapes), built on
    the devices beforehand;
  - eval with the plan and images kept (TransferEvaluation from its second call): the evaluator's machinery;
and prints the ratios: what the evaluator costs beyond decoding; and, for scale, the time to read and fit the
images alone (which eval overlaps with decoding, in two threads), a cost no evaluator of image files avoids.

  python benchmarks/eval_throughput.py --checkpoint PALI_MODEL_DIR [--task coco_captions] [--examples 128]
      [--batch_size 32] [--num_partitions 1] [--repeats 3] [--data_dir DIR]

The same files serve a real `python -m vlm.eval` run (README, "Transfer evaluation"); --write_only also writes
the SigLIP tasks' files (an ImageNet-style folder of single-object scenes, captioned scenes for retrieval):
  python benchmarks/eval_throughput.py --data_dir DIR --write_only
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
from PIL import Image

from timing import best_times, machine  # benchmarks/timing.py (scripts run from this folder)
from tasks import locations, scene_tasks, scenes


def _save(image: np.ndarray, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.round((image + 1) * 127.5).astype(np.uint8)).save(path, quality=100)


def _json(obj, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def write_scene_benchmarks(root: str, examples: int, image_size: int = 32, seed: int = 0) -> None:
  """`examples` held-out scenes per task kind, written in every PaLI benchmark's layout under root (the paths of
  transfer_task_files.gin): the caption scenes as COCO captions, Karpathy's split and XM3600 (English), the
  VQA scenes as VQAv2, OK-VQA, TextVQA, DocVQA, InfographicVQA, ST-VQA and ChartQA, the refexp scenes as
  RefCOCO, RefCOCO+ and RefCOCOg. One reference a caption; a VQA answer given by all ten "annotators"."""
  caption = [scene_tasks.example(seed, i, "validation", "caption", image_size) for i in range(examples)]
  vqa = [scene_tasks.example(seed, i, "validation", "vqa", image_size) for i in range(examples)]
  refexp = [scene_tasks.example(seed, i, "validation", "refexp", image_size) for i in range(examples)]
  question = [ex["inputs"].removeprefix("answer en ") for ex in vqa]

  for i, ex in enumerate(caption):
    for path in (f"coco/val2017/{i:012d}.jpg", f"coco/karpathy/k{i}.jpg", f"xm3600/images/x{i}.jpg"):
      _save(ex["image"], f"{root}/{path}")
  _json({"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(examples)],
         "annotations": [{"image_id": i, "caption": ex["targets"]} for i, ex in enumerate(caption)]},
        f"{root}/coco/annotations/captions_val2017.json")
  _json({"images": [{"filepath": "karpathy", "filename": f"k{i}.jpg", "split": "test", "cocoid": i,
                     "sentences": [{"raw": ex["targets"]}]} for i, ex in enumerate(caption)]},
        f"{root}/coco/dataset_coco.json")
  os.makedirs(f"{root}/xm3600", exist_ok=True)
  with open(f"{root}/xm3600/captions.jsonl", "w") as f:
    for i, ex in enumerate(caption):
      f.write(json.dumps({"image/key": f"x{i}", "image/locale": "en", "en": {"caption": [ex["targets"]]}}) + "\n")

  for i, ex in enumerate(vqa):
    for path in (f"coco/val2014/COCO_val2014_{i:012d}.jpg", f"textvqa/train_images/t{i}.jpg",
                 f"docvqa/val/documents/d{i}.png", f"infovqa/images/i{i}.png", f"stvqa/train_images/s{i}.jpg",
                 f"chartqa/test/png/c{i}.png"):
      _save(ex["image"], f"{root}/{path}")
  vqav2_questions = {"data_subtype": "val2014", "questions": [
      {"image_id": i, "question": q, "question_id": i} for i, q in enumerate(question)]}
  vqav2_answers = {"annotations": [{"question_id": i, "multiple_choice_answer": ex["targets"], "answers": [
      {"answer": ex["targets"], "answer_confidence": "yes"}] * 10} for i, ex in enumerate(vqa)]}
  _json(vqav2_questions, f"{root}/vqav2/v2_OpenEnded_mscoco_val2014_questions.json")
  _json(vqav2_answers, f"{root}/vqav2/v2_mscoco_val2014_annotations.json")
  _json(vqav2_questions, f"{root}/okvqa/OpenEnded_mscoco_val2014_questions.json")
  _json(vqav2_answers, f"{root}/okvqa/mscoco_val2014_annotations.json")
  answers = [[ex["targets"]] * 10 for ex in vqa]
  _json({"data": [{"question": q, "answers": a, "image_id": f"t{i}", "question_id": i}
                  for i, (q, a) in enumerate(zip(question, answers))]}, f"{root}/textvqa/TextVQA_0.5.1_val.json")
  _json({"data": [{"question": q, "answers": a[:1], "image": f"documents/d{i}.png", "questionId": i}
                  for i, (q, a) in enumerate(zip(question, answers))]}, f"{root}/docvqa/val/val_v1.0.json")
  _json({"data": [{"question": q, "answers": a[:1], "image_local_name": f"i{i}.png", "questionId": i}
                  for i, (q, a) in enumerate(zip(question, answers))]},
        f"{root}/infovqa/infographicsVQA_val_v1.0_withQT.json")
  _json({"dataset_name": "scenes", "data": [{"question": q, "answers": a[:1], "file_path": f"s{i}.jpg",
                                             "question_id": i} for i, (q, a) in enumerate(zip(question, answers))]},
        f"{root}/stvqa/train_task_3.json")
  _json([{"imgname": f"c{i}.png", "query": q, "label": ex["targets"]} for i, (q, ex) in enumerate(zip(question, vqa))],
        f"{root}/chartqa/test/test_human.json")

  refs = []
  for i, ex in enumerate(refexp):
    _save(ex["image"], f"{root}/coco/train2014/r{i}.jpg")
    y0, x0, y1, x1 = locations.tokens_to_boxes(ex["targets"], image_size, image_size)[0]
    refs.append({"file_name": f"r{i}.jpg", "bbox": [x0, y0, x1 - x0, y1 - y0],
                 "sentences": [{"sent": ex["inputs"].removeprefix("refexp ")}]})
  for path in ("refcoco/refcoco_val.json", "refcoco+/refcoco+_val.json", "refcocog/refcocog_val.json"):
    _json(refs, f"{root}/{path}")


def write_siglip_scene_benchmarks(root: str, per_class: int, image_size: int = 32, seed: int = 0) -> None:
  """Single-object scenes of every (colour, shape) as ImageNet-style folders (imagenet/val/<colour>_<shape>, and
  imagenet/train from another seed, for few-shot probes), and held-out scenes with two captions each as
  Karpathy's layout (split "test") in coco/dataset_coco_pairs.json (coco/dataset_coco.json holds the PaLI
  caption scenes): vlm.eval's SigLIP tasks read them with --gin.coco_retrieval.annotations pointing there."""
  combos = scenes.all_combos()
  for split, split_seed in (("val", seed), ("train", seed + 1)):
    batch = scenes.zero_shot_batch(split_seed, combos, per_class, image_size)
    for i, (image, label) in enumerate(zip(batch["image"], batch["label"])):
      _save(image, f"{root}/imagenet/{split}/{'_'.join(combos[label])}/{i}.png")
  batch = scenes.sample_batch(seed, 0, per_class * 32, image_size, "eval", with_scenes=True)
  rng = np.random.default_rng(seed)
  records = []
  for i, (image, text, objects) in enumerate(zip(batch["image"], batch["text"], batch["scenes"])):
    _save(image, f"{root}/coco/val2014/scene_{i}.png")
    records.append({"filepath": "val2014", "filename": f"scene_{i}.png", "split": "test", "cocoid": i,
                    "sentences": [{"raw": text}, {"raw": scenes.caption(objects, rng)}]})
  _json({"images": records}, f"{root}/coco/dataset_coco_pairs.json")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", help="a PaLI MODEL_DIR")
  p.add_argument("--task", default="coco_captions", choices=("coco_captions", "vqav2", "refcoco"))
  p.add_argument("--examples", type=int, default=128)
  p.add_argument("--image_size", type=int, default=32, help="side of the generated scenes")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--num_partitions", type=int, default=1, help="the 'model' mesh axis")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--data_dir", help="where the files go (default: a temporary folder)")
  p.add_argument("--write_only", action="store_true", help="write the files and stop")
  args = p.parse_args()
  data_dir = args.data_dir or tempfile.mkdtemp(prefix="eval_throughput_")
  write_scene_benchmarks(data_dir, args.examples, args.image_size)
  if args.write_only:
    write_siglip_scene_benchmarks(data_dir, max(args.examples // 32, 1), args.image_size)
    print(f"benchmark files written under {data_dir}")
    return
  if not args.checkpoint:
    p.error("--checkpoint is required unless --write_only")
  import gin  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from vlm import model as model_lib, pali as pali_lib, partitioning, transfer_eval, transfer_tasks  # pylint: disable=import-outside-toplevel
  gin.parse_config_file(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     "gin_configs/runs/transfer_task_files.gin"), skip_unknown=False)
  evaluator = transfer_tasks.TASKS[args.task](data_dir)
  partitioner = partitioning.Partitioner(num_partitions=args.num_partitions)
  model, params = model_lib.load(args.checkpoint)
  params = transfer_eval.sharded_params(model, params, partitioner)
  decoder = transfer_eval.Decoder(pali_lib.PaLIInputs(model, args.checkpoint), partitioner, args.batch_size)
  greedy = {"method": "greedy"}
  plan = decoder.plan(evaluator)
  # The loop alone: the same global batches, on the devices before the clock starts.
  predict = decoder.predict_fn(greedy)  # the very function eval runs
  with partitioner.context():
    batches = [partitioning.global_batch(partitioner, {**decoder.features(plan, i, indices[decoder.rows])[0],
                                                       "encoder_input_tokens": plan.tokens[indices[decoder.rows], :length]},
                                         args.batch_size) for i, (length, indices) in enumerate(plan.batches)]

  def loop():
    with partitioner.context():
      jax.block_until_ready([predict(params, batch).tokens for batch in batches])

  def run_eval():
    decoder.decode(params, decoder.plan(evaluator), greedy)

  cached = transfer_eval.Decoder(decoder.inputs, partitioner, args.batch_size, cache_images=True)

  cached_plan = cached.plan(evaluator)

  def run_cached():  # as TransferEvaluation runs in training from its second call: plan and images kept
    cached.decode(params, cached_plan, greedy)

  def images():  # what eval must do beyond the loop, in one thread: read and fit every batch's images
    for i, (_, indices) in enumerate(plan.batches):
      decoder.features(plan, i, indices[decoder.rows])

  print(machine())
  print(f"{args.task}: {len(plan.examples)} examples, {args.image_size} px scenes, batch {args.batch_size}, "
        f"mesh {dict(partitioner.mesh.shape)}, prompt lengths {sorted({n for n, _ in plan.batches})}, "
        f"{len(plan.batches)} batches; checkpoint {args.checkpoint}")
  for run in (run_eval, loop, run_cached):  # warm-up: compiles every prompt length, fills the cache
    run()
  eval_s, loop_s, cached_s, images_s = best_times([run_eval, loop, run_cached, images], args.repeats)
  n = len(plan.examples)
  print(f"  vlm.eval decoding:          {n / eval_s:8.1f} examples/s")
  print(f"  decode loop alone:          {n / loop_s:8.1f} examples/s")
  print(f"  eval, plan + images kept:   {n / cached_s:8.1f} examples/s (TransferEvaluation from its 2nd call)")
  print(f"  images read + fitted alone: {n / images_s:8.1f} examples/s (one thread)")
  print(f"  eval / loop time:           {eval_s / loop_s:.3f}")
  print(f"  eval kept / loop time:      {cached_s / loop_s:.3f}")


if __name__ == "__main__":
  main()

"""Transfer-evaluation speed: examples/s of vlm.eval's PaLI decoding against the decode loop alone.

Writes held-out generated scenes (tasks.scene_tasks, validation split) as benchmark files in their own layouts
(COCO captions, VQAv2, RefCOCO; the paths gin_configs/runs/transfer_task_files.gin names, under --data_dir),
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
  """`examples` held-out scenes per task as COCO captions, VQAv2 and RefCOCO files under root."""
  captions, questions, answers, refs = [], [], [], []
  for i in range(examples):
    caption = scene_tasks.example(seed, i, "validation", "caption", image_size)
    _save(caption["image"], f"{root}/coco/val2017/{i:012d}.jpg")
    captions.append({"image_id": i, "caption": caption["targets"]})
    vqa = scene_tasks.example(seed, i, "validation", "vqa", image_size)
    _save(vqa["image"], f"{root}/coco/val2014/COCO_val2014_{i:012d}.jpg")
    questions.append({"image_id": i, "question": vqa["inputs"].removeprefix("answer en "), "question_id": i})
    answers.append({"question_id": i, "multiple_choice_answer": vqa["targets"],
                    "answers": [{"answer": vqa["targets"], "answer_confidence": "yes"}] * 10})
    refexp = scene_tasks.example(seed, i, "validation", "refexp", image_size)
    _save(refexp["image"], f"{root}/coco/train2014/r{i}.jpg")
    y0, x0, y1, x1 = locations.tokens_to_boxes(refexp["targets"], image_size, image_size)[0]
    refs.append({"file_name": f"r{i}.jpg", "bbox": [x0, y0, x1 - x0, y1 - y0],
                 "sentences": [{"sent": refexp["inputs"].removeprefix("refexp ")}]})
  _json({"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(examples)], "annotations": captions},
        f"{root}/coco/annotations/captions_val2017.json")
  _json({"data_subtype": "val2014", "questions": questions},
        f"{root}/vqav2/v2_OpenEnded_mscoco_val2014_questions.json")
  _json({"annotations": answers}, f"{root}/vqav2/v2_mscoco_val2014_annotations.json")
  _json(refs, f"{root}/refcoco/refcoco_val.json")


def write_siglip_scene_benchmarks(root: str, per_class: int, image_size: int = 32, seed: int = 0) -> None:
  """Single-object scenes of every (colour, shape) as an ImageNet-style folder (imagenet/val/<colour>_<shape>),
  and held-out scenes with two captions each as Karpathy's dataset_coco.json (split "test")."""
  combos = scenes.all_combos()
  zero_shot = scenes.zero_shot_batch(seed, combos, per_class, image_size)
  for i, (image, label) in enumerate(zip(zero_shot["image"], zero_shot["label"])):
    _save(image, f"{root}/imagenet/val/{'_'.join(combos[label])}/{i}.png")
  batch = scenes.sample_batch(seed, 0, per_class * 32, image_size, "eval", with_scenes=True)
  rng = np.random.default_rng(seed)
  records = []
  for i, (image, text, objects) in enumerate(zip(batch["image"], batch["text"], batch["scenes"])):
    _save(image, f"{root}/coco/val2014/scene_{i}.png")
    records.append({"filepath": "val2014", "filename": f"scene_{i}.png", "split": "test", "cocoid": i,
                    "sentences": [{"raw": text}, {"raw": scenes.caption(objects, rng)}]})
  _json({"images": records}, f"{root}/coco/dataset_coco.json")


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

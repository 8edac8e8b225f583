"""The tiny PaLI-3 curriculum end to end, on generated data, on a CPU in minutes.

  python -m vlm.curriculum [--gin.KEY=VALUE ...]

Stages, each an ordinary `vlm.train` run of its gin file (so each can also be run, resumed or changed alone):
  0. siglip_locca_tiny_synthetic.gin  SigLIP at 32 px: the sigmoid loss and SigLIP 2's LocCa decoder (captions,
                                  boxes of phrases, phrases of boxes), which teaches the ViT's tokens where
                                  things are; the PaLI takes the ViT, the decoder stays behind
  1. pali_tiny_stage1.gin         PaLI: that ViT frozen, the stage-1 mixture (captions, OCR, VQA, VQG,
                                  detection, refexp, documents, charts, multilingual) at 32 px
  2. pali_tiny_stage2.gin         resolution up to 48 px, ViT unfrozen, OCR and documents upweighted
  3. pali_tiny_transfer_vqa.gin   fine-tune on VQA, ViT frozen
  4. pali_tiny_transfer_refexp.gin fine-tune on referring expressions, ViT frozen (PaLI-3's RefCOCO transfer)
Every stage reads seqio tasks through tasks.pipeline with the shipped sentencepiece vocabulary, as a real run
does. Each warm-starts from the previous one's MODEL_DIR and evaluates at its end; re-running the command
resumes (finished stages are skipped by the trainer). The summary prints every stage's evaluation, then the
headline results (VQA, captions, referring expressions, detection, OCR, documents) stage by stage beside their
baselines, and writes a grid of the last pretraining stage's predictions (the last stage that is not a
transfer) drawn on held-out images.
"""

from __future__ import annotations

import argparse
import os
import sys

import gin

STAGES = ("gin_configs/runs/siglip_locca_tiny_synthetic.gin", "gin_configs/runs/pali_tiny_stage1.gin",
          "gin_configs/runs/pali_tiny_stage2.gin", "gin_configs/runs/pali_tiny_transfer_vqa.gin",
          "gin_configs/runs/pali_tiny_transfer_refexp.gin")


def main(argv=None) -> None:
  from vlm import gin_cli  # pylint: disable=import-outside-toplevel
  p = gin_cli.OneLineErrorParser(prog="vlm.curriculum", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--stages", default=",".join(STAGES), help="comma-separated gin files, run in order")
  p.add_argument("--debug", action="store_true", help="full tracebacks instead of one-line errors")
  args, bindings = p.parse_known_args(argv)
  unknown = [b for b in bindings if not b.startswith("--gin.")]
  if unknown:  # the rest go to every stage's vlm.train, which only takes gin bindings from here
    p.error(f"unrecognised argument {unknown[0]!r}; the curriculum takes --stages, --debug and --gin.KEY=VALUE")
  from vlm import train  # pylint: disable=import-outside-toplevel
  model_dirs = []
  for number, stage in enumerate(args.stages.split(",")):
    print(f"\n=== stage {number}: {stage} ===", flush=True)
    gin.clear_config()
    train.main([f"--gin_file={stage}", *bindings, *(["--debug"] if args.debug else [])])
    model_dirs.append(gin.query_parameter("%MODEL_DIR"))
  summarize(list(zip(args.stages.split(","), model_dirs)))


# What the curriculum is there to show, each beside what it must beat: (label, metric key, (baseline key,
# baseline label) ...). A stage's last evaluation is read for every metric it reports.
HEADLINES = (
    ("VQA accuracy, %", "vqa_accuracy", (("vqa_majority_baseline", "majority answer"),)),
    ("caption CIDEr", "caption_cider", ()),
    ("refexp, IoU >= 0.5, %", "refexp_accuracy",
     (("refexp_centre_baseline", "centre box"), ("refexp_shuffled_images_baseline", "shuffled images"))),
    ("detection box F1, %", "detect_f1", (("detect_f1_centre_baseline", "centre box"),)),
    ("OCR exact match, %", "webli_ocr_synthetic_accuracy", ()),
    ("document ANLS", "documents_synthetic_anls", ()),
)


def summarize(stages: list[tuple[str, str]]) -> None:
  from vlm import summaries  # pylint: disable=import-outside-toplevel
  print("\n=== curriculum summary ===")
  finals = []
  for number, (stage, model_dir) in enumerate(stages):
    evals = [r for r in summaries.read_metrics(model_dir) if r.get("split") == "eval"]
    finals.append(evals[-1] if evals else {})
    shown = ", ".join(f"{k}={v:.4g}" for k, v in finals[-1].items() if k not in ("step", "split"))
    print(f"{number} {os.path.basename(stage):<32s} {model_dir}\n    {shown}")
  print("\n" + "\n".join(headline_lines(finals)))
  final_dir = stages[-1][1]
  grid = draw_predictions(predictions_source(stages), os.path.join(final_dir, "predictions.png"))
  if grid:
    print(f"\npredictions on held-out scenes: {grid}")
  print(f"loss curves: {', '.join(os.path.join(d, summaries.LOSS_PLOT) for _, d in stages)}")


def headline_lines(finals: list[dict]) -> list[str]:
  """HEADLINES as a table, one line per stage that reports the metric (its number in the curriculum), so a
  skill's progress through the stages and the resolution increase's effect read down a column."""
  lines = ["held-out results beside their baselines (stage: result  baselines):"]
  for label, key, baselines in HEADLINES:
    first = True
    for number, final in enumerate(finals):
      if key not in final:
        continue
      beside = ", ".join(f"{name} {final[b]:.1f}" for b, name in baselines if b in final)
      lines.append(f"  {label if first else '':<24s} {number}: {final[key]:6.1f}  {beside}".rstrip())
      first = False
  return lines


def predictions_source(stages: list[tuple[str, str]]) -> str:
  """The MODEL_DIR whose answers predictions.png draws: the last stage that is not a transfer (its gin file's
  name says 'transfer'), which learnt every task of the mixture; the last stage if all are transfers."""
  pretrained = [model_dir for stage, model_dir in stages if "transfer" not in os.path.basename(stage)]
  return (pretrained or [stages[-1][1]])[-1]


# What predictions.png shows: held-out examples of the scene tasks, four each, boxes drawn.
PREDICTION_TASKS = ("vqa_synthetic", "webli_captions_synthetic", "refexp_synthetic", "detection_synthetic")


def draw_predictions(model_dir: str, path: str, per_task: int = 4) -> str | None:
  """Greedy answers of a PaLI MODEL_DIR on held-out examples of PREDICTION_TASKS, drawn to `path`."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from tasks import pipeline, registry  # pylint: disable=import-outside-toplevel
  from vlm import checkpoints, decoding, model as model_lib, summaries  # pylint: disable=import-outside-toplevel
  try:
    model, params = model_lib.load(model_dir)
  except checkpoints.CheckpointError:
    return None  # not a PaLI run (a SigLIP-only curriculum)
  lengths = {"inputs": model.prompt_length, "targets": model.max_decode_len}
  with registry.image_size_bound(model.config.vit.image_size):  # the examples at the resolution its stage read
    batches = [pipeline.SeqioBatches(task, lengths, split="validation").batch(0, per_task)
               for task in PREDICTION_TASKS]
  batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  tokens = decoding.jit(model.predict_batch)(params, {k: batch[k] for k in ("image", "encoder_input_tokens")}).tokens
  texts = lambda rows: [model.detokenize(row) for row in rows]  # noqa: E731
  return summaries.plot_predictions(batch["image"], texts(batch["encoder_input_tokens"]),
                                    texts(jax.device_get(tokens)), texts(batch["decoder_target_tokens"]), path)


if __name__ == "__main__":
  main(sys.argv[1:])

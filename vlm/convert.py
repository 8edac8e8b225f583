"""Converts SigLIP and UL2 / T5 checkpoints between HF transformers, big_vision and this project's format.

  python -m vlm.convert --from hf_siglip_dir --to runs/siglip_import --format project
  python -m vlm.convert --from runs/siglip_b16 --to exported_siglip --format hf
  python -m vlm.convert --from runs/siglip2_naflex --to exported_siglip2 --format hf --naflex
  python -m vlm.convert --from siglip.npz --to runs/siglip_import --format project
  python -m vlm.convert --from runs/siglip_b16 --to siglip_b16.npz --format big_vision
  python -m vlm.convert --from hf_t5_dir --to runs/ul2_import --format project
  python -m vlm.convert --from runs/ul2_run --to exported_t5 --format hf

--from is any checkpoint `encoders.siglip.load` or `vlm.ul2.load` reads: a HF directory (SigLIP, SigLIP 2,
T5 / UL2), a big_vision .npz (SigLIP, both towers) or a training MODEL_DIR; what it holds is read off it. --to is
written in --format:
  project     a MODEL_DIR (model_config.json + one orbax checkpoint of the parameters): what `load`, warm starts
              (siglip_checkpoint, ul2_checkpoint) and this command read. It holds no optimizer state, so it is
              not a run to resume: train in another MODEL_DIR that warm-starts from it.
  hf          a HF transformers directory (SiglipModel / SiglipVisionModel, or T5ForConditionalGeneration);
              with --naflex, SigLIP 2's Siglip2Model / Siglip2VisionModel.
  big_vision  a SigLIP .npz with big_vision's names; with --naflex, in its NaFlex ViT's layout.
An existing, non-empty --to is only replaced with --overwrite. The output is written next to --to under a
temporary name and renamed into place once complete, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from typing import Any, Iterator, Sequence

from vlm import checkpoints
from vlm import gin_cli

FORMATS = ("project", "hf", "big_vision")


def parser() -> argparse.ArgumentParser:
  p = gin_cli.OneLineErrorParser(prog="vlm.convert", description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--from", dest="source", required=True, metavar="PATH", help="the checkpoint to convert")
  p.add_argument("--to", dest="target", required=True, metavar="PATH",
                 help="where to write it (a directory; a .npz file for big_vision)")
  p.add_argument("--format", required=True, choices=FORMATS, help="the format of --to")
  p.add_argument("--naflex", action="store_true",
                 help="SigLIP 2 NaFlex: hf writes Siglip2Model, big_vision its NaFlex ViT layout")
  p.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --to")
  p.add_argument("--debug", action="store_true", help="full tracebacks instead of one-line errors")
  return p


def read(kind: str, path: str) -> tuple[Any, Any]:
  """(config, params) of the `kind` ('siglip' or 'ul2') checkpoint at `path`."""
  if kind == "ul2":
    from vlm import ul2_checkpoints  # pylint: disable=import-outside-toplevel
    return ul2_checkpoints.read(path)
  from encoders import siglip_checkpoints  # pylint: disable=import-outside-toplevel
  return siglip_checkpoints.read(path)


def _kind(path: str) -> str:
  """'ul2' for a T5 / UL2 checkpoint, else 'siglip' (whose reader says what a path that is neither lacks)."""
  project = os.path.join(path, checkpoints.MODEL_CONFIG_FILE)
  if os.path.isfile(project):
    model = checkpoints.read_json(project).get("model")
    if model not in ("siglip", "ul2"):
      raise checkpoints.CheckpointError(f"{project}: a {model!r} model; this command converts SigLIP and UL2 "
                                        "checkpoints only")
    return model
  hf = os.path.join(path, "config.json")
  if os.path.isfile(hf) and checkpoints.read_json(hf).get("model_type") in ("t5", "mt5"):
    return "ul2"
  return "siglip"


def write(kind: str, config: Any, params: Any, path: str, fmt: str, naflex: bool = False) -> None:
  """Writes `params` of a `kind` model at `path` (which must not exist yet) in format `fmt`."""
  if fmt == "project":
    checkpoints.write_model_dir(path, config.to_json(), params)
  elif kind == "ul2":
    from vlm import ul2_checkpoints  # pylint: disable=import-outside-toplevel
    ul2_checkpoints.write_hf(config, params, path)
  else:
    from encoders import siglip_checkpoints  # pylint: disable=import-outside-toplevel
    if fmt == "hf":
      siglip_checkpoints.write_hf(config, params, path, model_type="siglip2" if naflex else "siglip")
    else:
      siglip_checkpoints.write_big_vision(config, params, path, naflex=naflex)


def check_target(kind: str, target: str, fmt: str, naflex: bool, overwrite: bool, source: str) -> None:
  """Refuses, before anything is read or written, what this conversion cannot or must not do."""
  if fmt == "big_vision" and kind == "ul2":
    raise ValueError(f"{source} is a UL2 / T5 checkpoint; big_vision holds SigLIP ones: use --format hf or project")
  if naflex and (kind == "ul2" or fmt == "project"):
    raise ValueError("--naflex applies to SigLIP exports only (--format hf or big_vision)")
  if fmt == "big_vision" and not target.endswith(".npz"):
    raise ValueError(f"--to {target}: a big_vision checkpoint is one .npz file; name it *.npz")
  if os.path.realpath(target) == os.path.realpath(source):
    raise ValueError(f"--to {target} is --from; write the conversion elsewhere")
  if _non_empty(target) and not overwrite:
    raise ValueError(f"--to {target} exists and is not empty; pass --overwrite to replace it, or choose "
                     "another path")


def _non_empty(path: str) -> bool:
  return os.path.isfile(path) or (os.path.isdir(path) and bool(os.listdir(path)))


@contextlib.contextmanager
def _staged(target: str) -> Iterator[str]:
  """A path next to `target` to write into; renamed onto `target` (replacing it) once the block completes,
  removed if it fails."""
  target = os.path.abspath(target)  # also drops a trailing '/', which would leave basename empty
  parent = os.path.dirname(target)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(target)}.tmp-")
  try:
    written = os.path.join(staging, os.path.basename(target))
    yield written
    _replace(written, target, staging)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _replace(written: str, target: str, staging: str) -> None:
  """Moves `written` onto `target`; an old `target` goes into `staging` first (deleted with it)."""
  if os.path.lexists(target):
    os.rename(target, os.path.join(staging, "replaced"))
  os.rename(written, target)


def convert(source: str, target: str, fmt: str, naflex: bool = False, overwrite: bool = False) -> str:
  """Converts the checkpoint at `source` to `fmt` at `target`; returns what it wrote, in words."""
  if fmt not in FORMATS:
    raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
  if not os.path.exists(source):
    raise ValueError(f"--from {source} does not exist")
  kind = _kind(source)
  check_target(kind, target, fmt, naflex, overwrite, source)
  config, params = read(kind, source)
  with _staged(target) as staging:
    write(kind, config, params, staging, fmt, naflex)
  return f"{'SigLIP' if kind == 'siglip' else 'UL2'} {source} -> {target} ({fmt}{', NaFlex' if naflex else ''})"


def main(argv: Sequence[str] | None = None) -> None:
  args = parser().parse_args(argv)
  try:
    print(convert(args.source, args.target, args.format, naflex=args.naflex, overwrite=args.overwrite))
  except (ValueError, OSError) as e:  # bad input of every kind, CheckpointError included
    if args.debug:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  main(sys.argv[1:])

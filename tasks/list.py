"""Lists every registered seqio task and mixture with its splits and output features.

  python -m tasks.list

Importing tasks.registry registers the synthetic tasks; tasks registered by other modules imported before
(sources of real data) are listed too.
"""

from __future__ import annotations

import sys

from tasks import quiet_tensorflow  # noqa: F401  first: TensorFlow without its start-up lines (seqio imports it)
import seqio

from tasks import registry  # registers the synthetic tasks and mixtures


def _feature(name: str, feature: seqio.Feature) -> str:
  if isinstance(feature, seqio.ContinuousFeature):
    return f"{name} ({feature.dtype.name}, rank {feature.rank})"
  return f"{name} (token ids{' + EOS' if feature.add_eos else ''})"


def _features(features) -> str:
  return ", ".join(_feature(name, f) for name, f in features.items())


def describe() -> list[str]:
  """One block of lines per task and mixture, sorted by name."""
  lines = []
  for name in sorted(seqio.TaskRegistry.names()):
    task = seqio.TaskRegistry.get(name)
    lines.append(f"task     {name}")
    lines.append(f"  splits    {', '.join(task.splits)}")
    lines.append(f"  features  {_features(task.output_features)}")
  for name in sorted(seqio.MixtureRegistry.names()):
    mixture = seqio.MixtureRegistry.get(name)
    total = sum(mixture.get_rate(t) for t in mixture.tasks)
    lines.append(f"mixture  {name}")
    lines.append(f"  splits    {', '.join(sorted(mixture.splits))}")
    lines.append(f"  features  {_features(mixture.output_features)}")
    lines.extend(f"  {mixture.get_rate(t) / total:6.1%}  {t.name}" for t in mixture.tasks)
  return lines


def main(argv: list[str] | None = None) -> None:
  from vlm import gin_cli  # pylint: disable=import-outside-toplevel  (the project's one-line CLI errors)
  gin_cli.OneLineErrorParser(prog="tasks.list", description=__doc__.splitlines()[0]).parse_args(argv)
  print(f"image size {registry.image_size()} (gin: tasks.registry.image_size.size)")
  print("\n".join(describe()))


if __name__ == "__main__":
  main(sys.argv[1:])

"""Transfer metrics, as the benchmarks define them. Inputs are numpy; outputs are the percentages papers print.

So far the embedding metrics SigLIP is judged by (retrieval and zero-shot classification); the captioning,
VQA and document metrics of DESIGN.md come with the evaluation issue.
"""

from __future__ import annotations

import numpy as np


def recall_at_k(similarity: np.ndarray, k: int = 1) -> float:
  """Percent of queries whose own item (the same index) ranks in the top k.

  Args:
    similarity: [num_queries, num_items], query i's match is item i (paired image / text sets).
  """
  similarity = np.asarray(similarity, np.float64)
  if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
    raise ValueError(f"recall_at_k needs a square [N, N] similarity of paired sets; got {similarity.shape}")
  own = np.diagonal(similarity)[:, None]
  # Rank = number of items scoring strictly higher; ties are counted against the query (no lucky ties).
  rank = np.sum(similarity > own, axis=1) + np.sum(similarity == own, axis=1) - 1
  return float(100.0 * np.mean(rank < k))


def retrieval(image_embeddings: np.ndarray, text_embeddings: np.ndarray, ks=(1, 5)) -> dict[str, float]:
  """Image->text and text->image R@k for paired, L2-normalised embeddings [N, D]."""
  sim = np.asarray(image_embeddings) @ np.asarray(text_embeddings).T
  out = {}
  for k in ks:
    out[f"i2t_R@{k}"] = recall_at_k(sim, k)
    out[f"t2i_R@{k}"] = recall_at_k(sim.T, k)
  return out


def zero_shot_accuracy(image_embeddings: np.ndarray, class_embeddings: np.ndarray, labels: np.ndarray) -> float:
  """Percent of images whose most similar class embedding is their label.

  Args:
    image_embeddings: [N, D] L2-normalised; class_embeddings: [C, D] L2-normalised (a prompt ensemble is
      averaged and re-normalised by the caller); labels: int [N] in [0, C).
  """
  predictions = np.argmax(np.asarray(image_embeddings) @ np.asarray(class_embeddings).T, axis=1)
  return float(100.0 * np.mean(predictions == np.asarray(labels)))

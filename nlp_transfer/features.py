"""Frozen-feature cache: run the frozen backbone once, train the head on stored vectors.

In ``feature_extraction`` the backbone never changes, so encoding every example each
epoch is wasted work. ``encode_features`` runs it once (no grad, length-sorted batches,
mixed precision) and the head trains on ``FeatureDataset`` for as many epochs as asked.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


class FeatureDataset(torch.utils.data.Dataset):
    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        assert len(features) == len(labels)
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[i], "labels": self.labels[i]}


@torch.inference_mode()
def encode_features(model, loader, accelerator, desc: str = "encoding") -> FeatureDataset:
    """Pooled float32 features for every example of a prepared ``loader`` (all processes)."""
    model.eval()
    feats, labels = [], []
    for batch in tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process, leave=False):
        with accelerator.autocast():
            f = model.encode(**batch)
        f, y = accelerator.gather_for_metrics((f.float(), batch["labels"]))
        feats.append(f.cpu())
        labels.append(y.cpu())
    return FeatureDataset(torch.cat(feats), torch.cat(labels))

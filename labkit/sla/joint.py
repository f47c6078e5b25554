"""Joint labels and the N×M table: the arithmetic of SLA's joint head.

Layout (the official SLA code's, kept everywhere): an expanded batch is sample-major, row b*M + j is view j of
sample b, and the joint head's column i*M + j is the label (class i, transformation j).

| function                  | shape                          | the paper                                   |
|---------------------------|--------------------------------|---------------------------------------------|
| joint_labels(y, M)        | (B,) -> (B*M,)                 | view j of a sample of class y gets (y, j)   |
| joint_probabilities       | (..., N*M) -> (..., N, M)      | P(i, j | x̃)                                |
| conditional_probabilities | (B*M, N*M) -> (B, M, N)        | P(i | x̃_j, j), view j read in its column    |
| aggregate                 | (B*M, N*M) -> (B, N)           | SLA+AG: s_i = 1/M Σ_j w_ij·z̃_j (logits)     |
| identity_logits           | (B, N*M) -> (B, N)             | SLA+SI: the identity column                 |
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["joint_labels", "view_labels", "joint_probabilities", "conditional_logits", "conditional_probabilities",
           "aggregate", "identity_logits"]


def joint_labels(y: Tensor, M: int) -> Tensor:
    """(B,) class labels -> (B*M,) joint labels y*M + j, sample-major."""
    return (y[:, None] * M + torch.arange(M, device=y.device)).reshape(-1)


def view_labels(B: int, M: int, device: torch.device | str = "cpu") -> Tensor:
    """(B*M,) transformation labels 0..M-1 repeated for each sample."""
    return torch.arange(M, device=device).repeat(B)


def joint_probabilities(joint_logits: Tensor, M: int) -> Tensor:
    """(..., N*M) joint logits -> P(i, j | x̃) as (..., N, M)."""
    probs = joint_logits.float().softmax(dim=-1)
    return probs.unflatten(-1, (probs.shape[-1] // M, M))


def conditional_logits(joint_logits: Tensor, M: int) -> Tensor:
    """(B*M, N*M) sample-major -> (B, M, N): for view j, the logits w_ij·z̃_j of the labels (i, j)."""
    BM, NM = joint_logits.shape
    grid = joint_logits.view(BM // M, M, NM // M, M)  # (B, view j, class i, label transform j')
    return grid.diagonal(dim1=1, dim2=3).transpose(1, 2)  # keep j' == j: (B, N, M) -> (B, M, N)


def conditional_probabilities(joint_logits: Tensor, M: int) -> Tensor:
    """P(i | x̃_j, j) as (B, M, N): a softmax over classes within view j's own column."""
    return conditional_logits(joint_logits, M).float().softmax(dim=-1)


def aggregate(joint_logits: Tensor, M: int) -> Tensor:
    """SLA+AG: s_i = 1/M Σ_j w_ij·z̃_j. (B*M, N*M) sample-major -> (B, N) aggregated logits."""
    return conditional_logits(joint_logits, M).mean(dim=1)


def identity_logits(joint_logits: Tensor, M: int) -> Tensor:
    """SLA+SI: the identity column of an unexpanded batch. (B, N*M) -> (B, N)."""
    return joint_logits.unflatten(-1, (joint_logits.shape[-1] // M, M))[..., 0]

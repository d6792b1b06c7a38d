"""Classification metrics from a confusion matrix: accuracy, F1 of the positive class.

Accuracy alone hides a model that always answers "positive" on a skewed sample; F1 (the harmonic mean of
precision and recall on class 1) and the confusion matrix show it. Everything derives from the confusion
matrix, a table of counts: counts from several processes (torchrun ranks) simply add up.
"""

import torch


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()  # one bin per (true, predicted) pair
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def metrics_from_confusion(cm: torch.Tensor) -> dict:
    """accuracy, f1 (of class 1, the "positive" sentiment) and the confusion matrix as nested lists."""
    true_pos = cm[1, 1].item()
    predicted_pos, actual_pos = cm[:, 1].sum().item(), cm[1, :].sum().item()
    precision = true_pos / predicted_pos if predicted_pos else 0.0
    recall = true_pos / actual_pos if actual_pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = cm.diagonal().sum().item() / max(cm.sum().item(), 1)
    return {"accuracy": accuracy, "f1": f1, "confusion": cm.tolist()}

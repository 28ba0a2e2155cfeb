"""`BertTask`: a BERT backbone with one of BertVision's task heads, as a
keras-hub ``Task`` (keras-hub keeps its tasks beside their backbones, e.g.
``keras_hub/models/bert/bert_text_classifier.py``).

Fine-tuning (`bertvision.training.finetune`) trains it; serving
(`bertvision.inference.serving`) loads a fine-tuning checkpoint as one
(``BertTask.from_preset(checkpoint)``). Neither imports the other.
"""

from __future__ import annotations

import keras
import keras_hub

from bertvision.models.config import BERT_POOLINGS
from bertvision.models.layers import Dropout, MaskedMeanPooling, SpanHead, TaskHead

__all__ = ["BertTask"]


@keras.saving.register_keras_serializable(package="bertvision")
class BertTask(keras_hub.models.Task):
    """A BERT backbone with one of BertVision's task heads, as a keras-hub Task.

    Inputs ``token_ids``, ``segment_ids``, ``padding_mask`` ``[B, T]``;
    outputs as the adapters': logits ``[B, C]`` (classification; multi-label:
    one independent logit per label, for a sigmoid and binary cross-entropy), a score
    ``[B]`` (regression), ``{"start_logits", "end_logits"}`` ``[B, T]``
    (span, padding masked) or logits ``[B, T, C]`` (token classification:
    a dense head over every token's last hidden state, as keras-hub-style
    token classifiers and BERT's NER recipe do). Heads are initialised as BERT's (truncated
    normal, stddev 0.02).

    Args:
        backbone: a `keras_hub.models.BertBackbone`.
        task_kind: ``classification``, ``multi_label``, ``regression``,
            ``span`` or ``token_classification``.
        num_labels: classes (classification, per token for token
            classification) or labels (multi-label).
        dropout: dropout rate before the head.
        pooling: what a sentence-level head (classification, multi-label,
            regression) reads: ``"cls"``, BERT's pooler over the ``[CLS]``
            token (``pooled_output``), or ``"mean"``, the mean of the last
            layer over real tokens, which is what a sentence-transformers
            backbone such as all-MiniLM-L6-v2 was trained to make meaningful
            (its pooler was never trained). Span and per-token heads read
            every token and ignore it.

    Example:
        >>> from bertvision.models.backbone import load_backbone, resolve_backbone
        >>> task = BertTask(load_backbone(resolve_backbone(None)), "classification", num_labels=2)
        >>> task(batch).shape  # (batch, 2)  # doctest: +SKIP
    """

    backbone_cls = keras_hub.models.BertBackbone

    def __init__(self, backbone, task_kind: str, num_labels: int = 2, dropout: float = 0.1, pooling: str = "cls",
                 **kwargs):
        if pooling not in BERT_POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(BERT_POOLINGS)}; got {pooling!r}")
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.backbone = backbone
        self.preprocessor = None
        self.output_dropout = Dropout(dropout, name="dropout")
        if task_kind == "span":
            self.head = SpanHead(kernel_initializer=init, name="span_head")
        else:
            head_kind = "classification" if task_kind == "token_classification" else task_kind
            self.head = TaskHead(head_kind, 1 if task_kind == "regression" else num_labels,
                                 kernel_initializer=init, name="head")
        inputs = backbone.input
        outputs = backbone(inputs)
        if task_kind == "span":
            x = self.output_dropout(outputs["sequence_output"])
            start, end = self.head(x, padding_mask=inputs["padding_mask"])
            out = {"start_logits": start, "end_logits": end}
        elif task_kind == "token_classification":
            out = self.head(self.output_dropout(outputs["sequence_output"]))
        elif pooling == "mean":
            pooled = MaskedMeanPooling(name="token_mean")(outputs["sequence_output"],
                                                          padding_mask=inputs["padding_mask"])
            out = self.head(self.output_dropout(pooled))
        else:
            out = self.head(self.output_dropout(outputs["pooled_output"]))
        super().__init__(inputs=inputs, outputs=out, compile=False, **kwargs)
        self.task_kind, self.num_labels, self.dropout = task_kind, int(num_labels), float(dropout)
        self.pooling = pooling

    def get_config(self):
        return {**super().get_config(), "task_kind": self.task_kind, "num_labels": self.num_labels,
                "dropout": self.dropout, "pooling": self.pooling}

    def save_task_weights(self, filepath):
        """Save the head's weights (``task.weights.h5`` of a preset), as
        keras-hub does, but without the optimizer's moments: a checkpoint is
        a model, and the moments (twice the backbone's size) belong to the
        training state the trainer keeps in ``state/``."""
        if not str(filepath).endswith(".weights.h5"):
            raise ValueError(f"The filename must end in `.weights.h5`. Received: filepath={filepath}")
        skip = [self.backbone] + ([self.optimizer] if self.optimizer is not None else [])
        keras.saving.save_weights(self, filepath=filepath, objects_to_skip=skip)

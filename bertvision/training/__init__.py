"""Training: everything that fits weights and writes a run folder.

Contract: `trainer` is the one Keras training loop (optimizer, losses,
evaluation marks, early stopping, resumable state); `fit` trains an adapter
on a store, `finetune` trains BERT itself on text, `answerability` trains
SQuAD 2.0's answerable-vs-not decision (the `tf.distribute` strategy comes
from `bertvision.distribute`, below the store, which extraction uses too).
Run folders are read and written through `bertvision.runs` only.
"""

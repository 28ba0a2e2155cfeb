"""Data: from a user's files or a benchmark to plain examples and BERT inputs.

Contract: `tasks` describes what a task is (kind, labels, fields, metrics,
file layout); `readers` turns files (or TFDS) into `Example`s with
validation, naming file, row and field on bad input, and never tokenizes;
`features` tokenizes (pairs, SQuAD windows with character offsets);
`squad` decodes spans. Nothing here runs a model or writes a store.
"""

"""The store: per-layer activations in sharded TFRecords plus `manifest.json`.

Contract: `format` owns the on-disk format (writer pieces and the `tf.data`
reader, `open_store`); `extract` runs a backbone over featurized examples and
writes shards atomically and resumably; `beam` runs the same shard writer as
an Apache Beam pipeline. Reading a store never needs BERT or the tokenizer.
"""

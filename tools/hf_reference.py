"""Reference per-layer BERT hidden states from Hugging Face's own model code.

Runs ONLY inside tools/.hf-venv (see tools/make_backbone_reference.sh): it uses
transformers' FlaxBertModel on JAX/CPU and must never share a process with
TensorFlow or torch. Writes tests/fixtures/backbone_reference.npz with

  token_ids, segment_ids, padding_mask   int32   [batch, seq_len]
  hidden_states                          float32 [batch, 7, seq_len, hidden]
      (index 0 = embeddings output after LayerNorm, 1..6 = transformer layers)
  texts                                  str     [batch, 2]  ("" = no 2nd segment)
  versions                               str     ["name==version", ...]
  config_sha256, weights_sha256          str     scalar
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np

SEQ_LEN = 32
# (first segment, second segment or None). Fixed: the test relies on them.
INPUTS = [
    ("BERTVision keeps every layer.", None),
    (
        "How old is the Rhine?",
        "The Rhine is a European river that begins in the Swiss canton of Graubünden.",
    ),
    (
        "Every transformer layer of the backbone is stored on disk, so small "
        "vision-style adapters can learn from the full stack.",
        None,
    ),
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_flax_bert(model_dir: Path):
    import jax.numpy as jnp
    from transformers import FlaxBertModel

    try:
        # transformers reads model.safetensors with safetensors' flax backend
        # and converts the PyTorch-layout state dict with its own code.
        model = FlaxBertModel.from_pretrained(
            str(model_dir), from_pt=True, dtype=jnp.float32, add_pooling_layer=False
        )
        return model, "from_pretrained(from_pt=True)"
    except Exception as exc:  # pragma: no cover - fallback path
        print(f"from_pretrained(from_pt=True) failed: {exc!r}; converting by hand",
              file=sys.stderr)
    from safetensors.numpy import load_file
    from transformers import BertConfig
    from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax

    config = BertConfig.from_pretrained(str(model_dir))
    model = FlaxBertModel(config, dtype=jnp.float32, add_pooling_layer=False, _do_init=True)
    state = load_file(str(model_dir / "model.safetensors"))
    model.params = convert_pytorch_state_dict_to_flax(state, model)
    return model, "convert_pytorch_state_dict_to_flax(safetensors.numpy)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(args.model_dir), use_fast=True)
    firsts = [a for a, _ in INPUTS]
    seconds = [b for _, b in INPUTS]
    # Encode one by one so single sentences and pairs can share a batch.
    rows = [
        tok(a, b, padding="max_length", truncation=True, max_length=SEQ_LEN,
            return_tensors="np")
        for a, b in zip(firsts, seconds)
    ]
    token_ids = np.concatenate([r["input_ids"] for r in rows]).astype(np.int32)
    segment_ids = np.concatenate([r["token_type_ids"] for r in rows]).astype(np.int32)
    padding_mask = np.concatenate([r["attention_mask"] for r in rows]).astype(np.int32)

    model, how = load_flax_bert(args.model_dir)
    out = model(
        input_ids=token_ids,
        attention_mask=padding_mask,
        token_type_ids=segment_ids,
        output_hidden_states=True,
        train=False,
    )
    hidden = np.stack([np.asarray(h, dtype=np.float32) for h in out.hidden_states], axis=1)
    assert hidden.shape == (len(INPUTS), 7, SEQ_LEN, model.config.hidden_size), hidden.shape
    assert np.isfinite(hidden).all()
    assert "tensorflow" not in sys.modules and "torch" not in sys.modules

    versions = [f"{p}=={version(p)}" for p in
                ("transformers", "tokenizers", "safetensors", "flax", "jax", "jaxlib", "numpy")]
    versions.append(f"load={how}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        token_ids=token_ids,
        segment_ids=segment_ids,
        padding_mask=padding_mask,
        hidden_states=hidden,
        texts=np.array([[a, b or ""] for a, b in INPUTS]),
        versions=np.array(versions),
        config_sha256=np.array(sha256(args.model_dir / "config.json")),
        weights_sha256=np.array(sha256(args.model_dir / "model.safetensors")),
    )
    real = padding_mask.astype(bool)
    print("lengths:", real.sum(1).tolist())
    for i, r in enumerate(rows):
        print(i, tok.convert_ids_to_tokens(r["input_ids"][0][: real[i].sum()]))
    print("max |h| per layer (real tokens):",
          [round(float(np.abs(hidden[:, l][real]).max()), 3) for l in range(hidden.shape[1])])
    print("max |h| overall:", float(np.abs(hidden).max()))
    print("versions:", versions)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

"""Token classification data: CoNLL/JSONL readers, tag schemes, sub-word
alignment round trips and the entity-level metrics on a written CoNLL file.

Real sentences come from ``../shared/data/conll2003/eng.testa`` (tens of them).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from seqeval.metrics import f1_score

from bertvision.data.conll import (bio_label_names, check_tags, conll_text, detect_scheme, entity_types,
                                   read_tagged, to_bio)
from bertvision.data.features import IGNORE, Featurizer, word_predictions
from bertvision.data.readers import Example
from bertvision.errors import DataError
from bertvision.metrics import tagging_metrics

BIO = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "B-ORG", "I-ORG"]]
IOB1 = [["I-PER", "I-PER", "O", "I-LOC"], ["O", "I-ORG", "B-ORG", "I-ORG"]]
IOBES = [["B-PER", "E-PER", "O", "S-LOC"], ["O", "S-ORG", "B-ORG", "E-ORG"]]
WORDS = [["Ada", "Lovelace", "in", "London"], ["at", "IBM", "Bank", "Corp"]]


@pytest.fixture(scope="module")
def tokenizer():
    from bertvision.models.backbone import load_tokenizer, resolve_backbone

    return load_tokenizer(resolve_backbone(None))


@pytest.fixture(scope="module")
def conll(shared_data):
    return read_tagged(shared_data / "conll2003" / "eng.testa", limit=40)


class _Task:
    kind = "token_classification"
    text_fields = ("tokens",)
    name = "ner"

    def __init__(self, label_names):
        self.label_names = tuple(label_names)


def _conll_file(path, words, tags, columns=("POS",), docstart=False):
    lines = ["-DOCSTART- -X- -X- O", ""] if docstart else []
    for ws, ts in zip(words, tags):
        lines += [" ".join([w, *columns, t]) for w, t in zip(ws, ts)] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def _examples(tagged):
    return [Example(uid=str(i), texts=(" ".join(s.words),), words=s.words, tags=s.tags) for i, s in enumerate(tagged)]


# ------------------------------------------------------------ schemes


@pytest.mark.parametrize("scheme,tags", [("BIO", BIO), ("IOB1", IOB1), ("IOBES", IOBES)])
def test_every_scheme_is_read_and_converted_to_bio(tmp_path, scheme, tags):
    path = _conll_file(tmp_path / "x.conll", WORDS, tags, docstart=True)
    for given in ("auto", scheme):
        tagged = read_tagged(path, scheme=given)
        assert tagged.scheme == scheme
        assert [list(s.tags) for s in tagged] == BIO
        assert [list(s.words) for s in tagged] == WORDS
    assert [s.line for s in tagged] == [3, 8]  # -DOCSTART- and its blank line are no sentence
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text("".join(json.dumps({"tokens": w, "tags": t}) + "\n" for w, t in zip(WORDS, tags)))
    assert [list(s.tags) for s in read_tagged(jsonl)] == BIO
    assert read_tagged(jsonl).scheme == scheme


def test_scheme_helpers():
    assert detect_scheme(BIO) == "BIO" and detect_scheme(IOB1) == "IOB1" and detect_scheme(IOBES) == "IOBES"
    assert to_bio(IOB1[1], "IOB1") == BIO[1]
    assert check_tags(["B-PER", "I-LOC"], "BIO") == (1, "I-LOC after B-PER (BIO starts an entity with B-)")
    assert check_tags(["B-PER", "O"], "IOBES")[0] == 0
    assert check_tags(["B-XYZ"], "BIO", types=["PER"])[1].startswith("unknown tag 'B-XYZ'")
    assert bio_label_names(entity_types(t for s in BIO for t in s)) == (
        "O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER")


def test_the_shared_conll_file_is_bio(conll):
    assert conll.scheme == "BIO" and len(conll) == 40
    assert conll[0].words[:3] == ("CRICKET", "-", "LEICESTERSHIRE") and conll[0].tags[2] == "B-ORG"
    assert entity_types(t for s in conll for t in s.tags) == ["LOC", "MISC", "ORG", "PER"]


def test_bad_files_are_refused_with_file_and_line(tmp_path):
    ragged = tmp_path / "ragged.conll"
    ragged.write_text("EU NNP B-ORG\nrejects VBZ\n\n")
    with pytest.raises(DataError, match=r"ragged.conll:2: 2 columns, but the file's first line has 3"):
        read_tagged(ragged)
    unknown = _conll_file(tmp_path / "unknown.conll", [["EU", "rejects"]], [["B-ORG", "X-FOO"]])
    with pytest.raises(DataError, match=r"unknown.conll:2: unknown tag 'X-FOO'"):
        read_tagged(unknown)
    with pytest.raises(DataError, match=r"unknown.conll:1: unknown tag 'B-ORG': entity type 'ORG' is not one of PER"):
        read_tagged(unknown, scheme="BIO", types=["PER"])
    after_o = _conll_file(tmp_path / "after_o.conll", [["EU", "rejects", "German"], ["x"]],
                          [["B-ORG", "O", "I-MISC"], ["O"]])
    with pytest.raises(DataError, match=r"after_o.conll:3: I-MISC after O \(BIO starts an entity with B-\)"):
        read_tagged(after_o, scheme="BIO")
    with pytest.raises(DataError, match=r"after_o.conll:3: I-MISC after O .*valid in none of IOB1, BIO, IOBES"):
        read_tagged(after_o)  # B-ORG at a sentence start is not IOB1 either
    iob1 = _conll_file(tmp_path / "iob1.conll", [["EU", "rejects", "German"]], [["I-ORG", "O", "I-MISC"]])
    assert read_tagged(iob1).scheme == "IOB1"  # auto: I- after O is IOB1, whose entities start with I-
    with pytest.raises(DataError, match=r"iob1.conll:1: I-ORG after the sentence start"):
        read_tagged(iob1, scheme="BIO")
    mixed = _conll_file(tmp_path / "mixed.conll", [["a", "b"], ["c", "d"]], [["O", "I-PER"], ["O", "B-PER"]])
    with pytest.raises(DataError, match=r"mixed.conll:2: I-PER after O.*mixes BIO and IOB1"):
        read_tagged(mixed)
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(json.dumps({"tokens": ["a"], "tags": ["O"]}) + "\n" + json.dumps({"tokens": ["a", "b"],
                                                                                        "tags": ["O"]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: 2 tokens but 1 tags"):
        read_tagged(jsonl)


# ----------------------------------------------------------- alignment


@pytest.mark.parametrize("max_seq_len,stride", [(128, 128), (12, 4), (5, 1)])
def test_words_to_subwords_to_words_round_trip(tokenizer, conll, max_seq_len, stride):
    """Every word is predicted exactly once, in windows as short as 3 sub-words."""
    names = bio_label_names(entity_types(t for s in conll for t in s.tags))
    examples = _examples(conll)
    feats = Featurizer(tokenizer, max_seq_len=max_seq_len, doc_stride=stride).encode(_Task(names), examples)
    assert feats.is_token and feats.token_labels.shape == feats.token_ids.shape
    assert np.all((feats.word_ids == IGNORE) == (feats.token_labels == IGNORE))
    assert np.all(feats.padding_mask[feats.word_ids >= 0] == 1)
    per_word = word_predictions(feats.word_ids, feats.example_index, feats.token_labels,
                                [len(ex.words) for ex in examples])
    assert [tuple(names[k] for k in p) for p in per_word] == [ex.tags for ex in examples]
    # the position carrying a word is its first sub-word: it starts the word's WordPieces
    rows, cols = np.nonzero(feats.word_ids >= 0)
    for r, c in zip(rows[:200], cols[:200]):
        word = examples[feats.example_index[r]].words[feats.word_ids[r, c]]
        piece = tokenizer.convert_ids_to_tokens(int(feats.token_ids[r, c]))
        assert not piece.startswith("##") and (piece == "[UNK]" or word.lower().startswith(piece.lower()[:1]))
    if max_seq_len < 128:  # long sentences really were split
        assert len(feats) > len(examples)


def test_words_without_subwords_still_carry_a_tag(tokenizer):
    examples = [Example(uid="z", texts=("Ada \u200b London",), words=("Ada", "\u200b", "London"),
                        tags=("B-PER", "O", "B-LOC"))]
    names = ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    feats = Featurizer(tokenizer, max_seq_len=16).encode(_Task(names), examples)
    back = word_predictions(feats.word_ids, feats.example_index, feats.token_labels, [3])[0]
    assert [names[k] for k in back] == ["B-PER", "O", "B-LOC"]


def test_word_predictions_refuses_a_word_predicted_twice():
    word_ids = np.array([[-1, 0, 1, 1]])
    with pytest.raises(ValueError, match="each must be predicted once"):
        word_predictions(word_ids, np.array([0]), np.zeros((1, 4)), [2])


def test_a_tag_outside_the_label_names_is_refused(tokenizer):
    ex = [Example(uid="q", texts=("a b",), words=("a", "b"), tags=("O", "B-FOO"))]
    with pytest.raises(DataError, match="example 'q': tag 'B-FOO' of word 1"):
        Featurizer(tokenizer).encode(_Task(("O", "B-PER", "I-PER")), ex)


# ------------------------------------------------------------- metrics


def test_seqeval_on_the_written_conll_file_equals_the_printed_score(tmp_path, conll):
    gold = [list(s.tags) for s in conll]
    rng = np.random.default_rng(0)
    names = bio_label_names(["LOC", "MISC", "ORG", "PER"])
    # a noisy tagger: a fifth of the words get a random tag (ill-formed BIO included)
    predicted = [[names[rng.integers(len(names))] if rng.random() < 0.2 else t for t in s] for s in gold]
    scores = tagging_metrics(gold, predicted)
    assert 0.3 < scores["f1"] < 0.95 and scores["strict_f1"] != scores["f1"]
    assert {"f1_PER", "precision_LOC", "recall_ORG", "token_accuracy"} <= set(scores)
    path = tmp_path / "preds.conll"
    path.write_text(conll_text([s.words for s in conll], predicted, gold))
    file_gold, file_pred, sentence = [], [], ([], [])
    for line in path.read_text().splitlines():
        if not line:
            file_gold.append(sentence[0])
            file_pred.append(sentence[1])
            sentence = ([], [])
            continue
        _, g, p = line.split(" ")
        sentence[0].append(g)
        sentence[1].append(p)
    assert f1_score(file_gold, file_pred) == pytest.approx(scores["f1"], abs=1e-12)
    assert tagging_metrics(gold, gold)["f1"] == 1.0

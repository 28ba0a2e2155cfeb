"""Tests for bertvision.data.features: sequence encoding, SQuAD windows, span round trips.

The SQuAD round trip runs on the real dev subsets in the shared data folder
(``pytest -s`` prints the counts).
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from bertvision.data.readers import Answer, Example, load_examples
from bertvision.data.features import Features, Featurizer, FeaturizerConfig, span_text
from bertvision.data.tasks import get_task

SQUAD_FILES = ("dev-v2.0.Normans_CCT", "dev-v2.0.Rhine")


@pytest.fixture(scope="module")
def tokenizer():
    from bertvision.models.backbone import load_tokenizer, resolve_backbone

    return load_tokenizer(resolve_backbone(None))


@pytest.fixture(scope="module")
def squad_examples(shared_data) -> dict[str, list[Example]]:
    folder = shared_data / "squad2"
    out = {}
    for name in SQUAD_FILES:
        result = load_examples("squad_v2", name, folder)
        # Every question of the file made it through the data layer.
        raw = json.loads((folder / f"{name}.json").read_text())
        n_raw = sum(len(p["qas"]) for a in raw["data"] for p in a["paragraphs"])
        assert (len(result.examples), result.skipped) == (n_raw, [])
        out[name] = result.examples
    return out


def _tokens(tokenizer, ids) -> list[str]:
    return tokenizer.convert_ids_to_tokens([int(i) for i in ids])


# --------------------------------------------------------------- config


def test_config_json_round_trip_and_validation(tokenizer):
    featurizer = Featurizer(tokenizer, max_seq_len=384, doc_stride=100, max_query_len=32)
    text = json.dumps(featurizer.get_config())
    assert json.loads(text) == {"max_seq_len": 384, "doc_stride": 100, "max_query_len": 32}
    again = Featurizer.from_config(tokenizer, json.loads(text))
    assert again.config == featurizer.config == FeaturizerConfig.from_dict(json.loads(text))
    with pytest.raises(ValueError, match="doc_stride"):
        FeaturizerConfig(doc_stride=0)
    with pytest.raises(ValueError, match="max_seq_len must be an integer|must be an integer"):
        FeaturizerConfig(max_seq_len=12.5)
    with pytest.raises(ValueError, match="unknown FeaturizerConfig field\\(s\\) \\['stride'\\]"):
        FeaturizerConfig.from_dict({"stride": 3})
    with pytest.raises(ValueError, match="exceeds the model's maximum of 512"):
        Featurizer(tokenizer, max_seq_len=513)


# ----------------------------------------------------- single and pairs


def test_single_sentence_layout(tokenizer):
    featurizer = Featurizer(tokenizer, max_seq_len=12)
    examples = [Example("a", ("Hello world",), 0), Example("b", ("A much longer sentence, truly!",), 1)]
    feats = featurizer.encode("sst2", examples)
    assert feats.token_ids.shape == feats.segment_ids.shape == feats.padding_mask.shape == (2, 12)
    assert all(a.dtype == np.int32 for a in feats.inputs().values())
    assert feats.example_index.tolist() == [0, 1] and not feats.is_span and feats.offsets is None
    assert _tokens(tokenizer, feats.token_ids[0][:5]) == ["[CLS]", "hello", "world", "[SEP]", "[PAD]"]
    assert feats.padding_mask[0].tolist() == [1] * 4 + [0] * 8
    assert feats.token_ids[0][4:].tolist() == [tokenizer.pad_token_id] * 8
    assert not feats.segment_ids.any()
    toks = _tokens(tokenizer, feats.token_ids[1])
    assert toks[:8] == ["[CLS]", "a", "much", "longer", "sentence", ",", "truly", "!"] and toks[8] == "[SEP]"


def test_single_sentence_truncation_keeps_final_sep(tokenizer):
    featurizer = Featurizer(tokenizer, max_seq_len=8)
    feats = featurizer.encode("sst2", [Example("x", ("one two three four five six seven eight nine",), 0)])
    assert _tokens(tokenizer, feats.token_ids[0]) == ["[CLS]", "one", "two", "three", "four", "five", "six", "[SEP]"]
    assert feats.padding_mask.all()


def test_pair_layout_segments_and_longest_first_truncation(tokenizer):
    featurizer = Featurizer(tokenizer, max_seq_len=16)
    short = Example("p0", ("The cat sat.", "A cat was sitting."), 1)
    long_a = Example("p1", ("w " * 40, "short one"), 0)
    feats = featurizer.encode("mrpc", [short, long_a])
    toks = _tokens(tokenizer, feats.token_ids[0])
    assert toks[:11] == ["[CLS]", "the", "cat", "sat", ".", "[SEP]", "a", "cat", "was", "sitting", "."]
    assert toks[11] == "[SEP]" and feats.padding_mask[0].tolist() == [1] * 12 + [0] * 4
    assert feats.segment_ids[0].tolist() == [0] * 6 + [1] * 6 + [0] * 4
    # longest_first: the long first text is cut, the short second text survives whole.
    toks = _tokens(tokenizer, feats.token_ids[1])
    assert toks[-4:] == ["[SEP]", "short", "one", "[SEP]"] and toks.count("w") == 16 - 5
    assert feats.padding_mask[1].all() and feats.segment_ids[1].tolist() == [0] * 13 + [1] * 3


def test_separate_pair_mode_encodes_each_text_on_its_own(tokenizer):
    featurizer = Featurizer(tokenizer, max_seq_len=16)
    pairs = [Example("p0", ("The cat sat.", "A cat was sitting."), 1), Example("p1", ("w " * 40, "short one"), 0)]
    feats = featurizer.encode("mrpc", pairs, pair_mode="separate")
    assert len(feats) == 4 and feats.example_index.tolist() == [0, 0, 1, 1]
    # row 2i is text a alone, row 2i + 1 text b alone: what a one-text task gives for them
    alone = featurizer.encode("sst2", [Example(f"{e.uid}{k}", (e.texts[k],), 0) for e in pairs for k in (0, 1)])
    for name in ("token_ids", "segment_ids", "padding_mask"):
        np.testing.assert_array_equal(getattr(feats, name), getattr(alone, name))
    assert _tokens(tokenizer, feats.token_ids[1])[:7] == ["[CLS]", "a", "cat", "was", "sitting", ".", "[SEP]"]
    assert not feats.segment_ids.any()  # no second segment anywhere
    with pytest.raises(Exception, match="not a sentence-pair task"):
        featurizer.encode("sst2", [Example("s", ("one text",), 0)], pair_mode="separate")
    with pytest.raises(Exception, match="pair_mode must be one of"):
        featurizer.encode("mrpc", pairs, pair_mode="both")


def test_sequence_encoding_is_deterministic_and_works_on_real_glue(tokenizer, shared_data):
    glue = shared_data / "glue"
    featurizer = Featurizer(tokenizer)
    for task, folder in (("sst2", "SST-2"), ("mrpc", "MRPC")):
        examples = load_examples(task, "dev", glue / folder).examples
        first, second = featurizer.encode(get_task(task), examples), featurizer.encode(task, examples)
        for name, array in first.inputs().items():
            assert np.array_equal(array, second.inputs()[name]), name
        assert first.token_ids.shape == (len(examples), 128)
        assert (first.token_ids[:, 0] == tokenizer.cls_token_id).all()
        n_sep = (first.token_ids == tokenizer.sep_token_id).sum(axis=1)
        assert (n_sep == (1 if task == "sst2" else 2)).all()
        # The last real token is always [SEP].
        last = first.padding_mask.sum(axis=1) - 1
        assert (first.token_ids[np.arange(len(examples)), last] == tokenizer.sep_token_id).all()


def test_bad_inputs_name_the_example(tokenizer):
    featurizer = Featurizer(tokenizer)
    with pytest.raises(ValueError, match="example 'dev-7': text 1 is empty"):
        featurizer.encode("mrpc", [Example("dev-7", ("fine", "  "), 1)])
    with pytest.raises(ValueError, match="example 'dev-8': expected 1 text"):
        featurizer.encode("sst2", [Example("dev-8", ("a", "b"), 1)])
    with pytest.raises(ValueError, match="Unknown task 'nope'"):
        featurizer.encode("nope", [])
    with pytest.raises(ValueError, match="leaves no room for context"):
        Featurizer(tokenizer, max_seq_len=64, max_query_len=64).encode("squad_v2", [])
    ctx = "Paris is in France."
    with pytest.raises(ValueError, match="example 'q9': answer 'Rome' is not at character 0"):
        featurizer.encode("squad_v2", [Example("q9", ("Where?", ctx), answers=(Answer("Rome", 0),))])


def test_select_and_shape_checks(tokenizer):
    feats = Featurizer(tokenizer, 8).encode("sst2", [Example(str(i), (f"text {i}",), 0) for i in range(5)])
    part = feats.select(slice(1, 3))
    assert len(part) == 2 and part.example_index.tolist() == [1, 2]
    with pytest.raises(ValueError, match="example_index has shape"):
        Features(feats.token_ids, feats.segment_ids, feats.padding_mask, feats.example_index[:2])


# --------------------------------------------------------------- SQuAD


CONTEXT = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to "
    "Normandy, a region in France. They were descended from Norse raiders and pirates "
    "from Denmark, Iceland and Norway who, under their leader Rollo, agreed to swear "
    "fealty to King Charles III of West Francia."
)


def _squad(uid, question, answer=None, impossible=False):
    answers = (Answer(answer, CONTEXT.index(answer)),) if answer else ()
    return Example(uid, (question, CONTEXT), answers=answers, is_impossible=impossible)


def test_span_windows_layout_labels_and_overlap(tokenizer):
    featurizer = Featurizer(tokenizer, max_seq_len=32, doc_stride=10, max_query_len=8)
    examples = [
        _squad("q0", "Who was the leader of the Norse raiders who swore fealty?", "Rollo"),
        _squad("q1", "What is the capital of Spain?", impossible=True),
        _squad("q2", "Who gave their name to Normandy?", "The Normans"),
    ]
    feats = featurizer.encode("squad_v2", examples)
    assert feats.is_span and feats.offsets.shape == (len(feats), 32, 2)
    n_ctx = len(tokenizer(CONTEXT, add_special_tokens=False)["input_ids"])
    for i, ex in enumerate(examples):
        rows = np.nonzero(feats.example_index == i)[0]
        assert len(rows) > 1 and np.all(np.diff(rows) == 1)  # several windows, contiguous
        q_len = min(8, len(tokenizer(ex.texts[0], add_special_tokens=False)["input_ids"]))
        covered, prev = [], None
        for r in rows:
            toks = _tokens(tokenizer, feats.token_ids[r])
            ctx_pos = np.nonzero(feats.offsets[r, :, 0] >= 0)[0]
            a, b = q_len + 2, q_len + 2 + len(ctx_pos)
            assert ctx_pos.tolist() == list(range(a, b))  # context follows [CLS] q [SEP]
            assert toks[0] == "[CLS]" and toks[a - 1] == "[SEP]" and toks[b] == "[SEP]"
            assert feats.segment_ids[r].tolist() == [0] * a + [1] * (b + 1 - a) + [0] * (31 - b)
            assert feats.padding_mask[r].tolist() == [1] * (b + 1) + [0] * (31 - b)
            assert (feats.offsets[r, :a] == -1).all() and (feats.offsets[r, b:] == -1).all()
            spans = [tuple(o) for o in feats.offsets[r, a:b]]
            if prev is not None:  # consecutive windows overlap: the step is min(doc_stride, capacity // 2)
                step = min(10, (32 - 3 - q_len) // 2)
                assert 0 < step < len(prev)
                assert spans[: len(prev) - step] == prev[step:]
            covered += [s for s in spans if s not in covered]
            prev = spans
        assert len(covered) == n_ctx  # every context token is in some window
    # Impossible question: every window is labelled CLS.
    impossible = feats.example_index == 1
    assert not feats.start_positions[impossible].any() and not feats.end_positions[impossible].any()
    # Answerable: windows holding the answer point at it, the others at CLS.
    for i, answer in ((0, "Rollo"), (2, "The Normans")):
        rows = np.nonzero(feats.example_index == i)[0]
        hits = [r for r in rows if feats.start_positions[r] > 0]
        assert hits and len(hits) < len(rows)
        for r in rows:
            if r in hits:
                assert span_text(CONTEXT, feats.offsets[r], feats.start_positions[r], feats.end_positions[r]) == answer
            else:
                assert feats.end_positions[r] == 0
                start = CONTEXT.index(answer)
                inside = feats.offsets[r][feats.offsets[r, :, 0] >= 0]
                assert inside[0, 0] > start or inside[-1, 1] < start + len(answer)  # really not in the window


def test_span_windows_match_hugging_face_overflow_recipe(tokenizer, squad_examples):
    """Our windows are HF run_qa's, with HF's overlap ``stride`` = capacity - our step."""
    cfg = FeaturizerConfig(max_seq_len=128, doc_stride=48, max_query_len=64)
    featurizer = Featurizer(tokenizer, **cfg.to_dict())
    examples = squad_examples["dev-v2.0.Rhine"][:40]
    feats = featurizer.encode("squad_v2", examples)
    for i, ex in enumerate(examples):
        q_len = len(tokenizer(ex.texts[0], add_special_tokens=False)["input_ids"])
        assert q_len <= cfg.max_query_len  # no question truncation here, so HF's call applies unchanged
        capacity = cfg.max_seq_len - 3 - q_len
        step = min(cfg.doc_stride, capacity // 2)
        hf = tokenizer(ex.texts[0], ex.texts[1], truncation="only_second", max_length=cfg.max_seq_len,
                       stride=capacity - step, return_overflowing_tokens=True, return_offsets_mapping=True,
                       padding="max_length", return_tensors=None)
        rows = np.nonzero(feats.example_index == i)[0]
        assert np.array_equal(feats.token_ids[rows], np.asarray(hf["input_ids"]))
        assert np.array_equal(feats.segment_ids[rows], np.asarray(hf["token_type_ids"]))
        assert np.array_equal(feats.padding_mask[rows], np.asarray(hf["attention_mask"]))
        for k, r in enumerate(rows):
            in_ctx = np.asarray([s == 1 for s in hf.sequence_ids(k)])
            assert np.array_equal(feats.offsets[r][in_ctx], np.asarray(hf["offset_mapping"][k])[in_ctx])
            assert (feats.offsets[r][~in_ctx] == -1).all()


def test_long_question_is_cut_to_max_query_len(tokenizer):
    featurizer = Featurizer(tokenizer, max_seq_len=48, doc_stride=16, max_query_len=5)
    question = "Which people, descended from Norse raiders and pirates, gave their name to a region?"
    feats = featurizer.encode("squad_v2", [_squad("q", question, "Normandy")])
    q_ids = tokenizer(question, add_special_tokens=False)["input_ids"][:5]
    assert feats.token_ids[:, 1:6].tolist() == [q_ids] * len(feats)
    assert (feats.token_ids[:, 6] == tokenizer.sep_token_id).all() and (feats.offsets[:, 7, 0] >= 0).all()


def test_span_text_token_boundary_and_errors():
    offsets = [[-1, -1], [0, 3], [4, 10], [10, 11], [-1, -1]]  # "The norman ##s"
    context = "The Normans"
    assert span_text(context, offsets, 1, 3) == "The Normans"
    assert span_text(context, offsets, 2, 2) == "Norman"
    with pytest.raises(ValueError, match="token 0 is not a context token"):
        span_text(context, offsets, 0, 2)
    with pytest.raises(ValueError, match="start <= end"):
        span_text(context, offsets, 3, 2)


def test_answer_inside_a_token_maps_to_the_whole_token(tokenizer):
    """An answer whose boundary falls inside a WordPiece comes back widened to token edges."""
    ex = Example("q", ("Who?", CONTEXT), answers=(Answer("ormans", 5),))
    feats = Featurizer(tokenizer, max_seq_len=64, max_query_len=16).encode("squad_v2", [ex])
    r = int(np.nonzero(feats.start_positions)[0][0])
    assert span_text(CONTEXT, feats.offsets[r], feats.start_positions[r], feats.end_positions[r]) == "Normans"


def _round_trip(tokenizer, examples, max_seq_len, doc_stride, every_answer):
    """Counts for the SQuAD round trip: exact matches, token-boundary widenings, lost questions."""
    if every_answer:  # each gold answer in turn as the training label
        examples = [Example(f"{e.uid}/{k}", e.texts, answers=(a,)) for e in examples for k, a in enumerate(e.answers)]
    feats = Featurizer(tokenizer, max_seq_len=max_seq_len, doc_stride=doc_stride).encode("squad_v2", examples)
    exact, boundary, found = 0, [], set()
    for r in np.nonzero(feats.start_positions)[0]:
        i = int(feats.example_index[r])
        ex, start, end = examples[i], int(feats.start_positions[r]), int(feats.end_positions[r])
        assert 0 < start <= end and not ex.is_impossible
        answer, context = ex.answers[0], ex.texts[1]
        got = span_text(context, feats.offsets[r], start, end)
        found.add(i)
        if got == answer.text:
            exact += 1
            continue
        # A mismatch must be a widening to token edges: the answer starts or ends inside a token.
        a, b = int(feats.offsets[r, start, 0]), int(feats.offsets[r, end, 1])
        assert a <= answer.start and answer.end <= b and (a < answer.start or answer.end < b), (ex.uid, got)
        assert got[answer.start - a: answer.start - a + len(answer.text)] == answer.text
        boundary.append((answer.text, got))
    lost = [e.uid for i, e in enumerate(examples) if not e.is_impossible and i not in found]
    impossible_rows = np.isin(feats.example_index, [i for i, e in enumerate(examples) if e.is_impossible])
    assert not feats.start_positions[impossible_rows].any() and not feats.end_positions[impossible_rows].any()
    return {"windows": len(feats), "labelled": exact + len(boundary), "exact": exact,
            "boundary": boundary, "lost": lost}


@pytest.mark.parametrize("max_seq_len,doc_stride", [(384, 128), (128, 128)])
def test_squad_round_trip_on_real_dev_files(tokenizer, squad_examples, max_seq_len, doc_stride):
    for name, examples in squad_examples.items():
        answerable = sum(not e.is_impossible for e in examples)
        for every_answer in (False, True):
            c = _round_trip(tokenizer, examples, max_seq_len, doc_stride, every_answer)
            what = "every gold answer" if every_answer else "answers[0]"
            print(f"\n{name} L={max_seq_len} stride={doc_stride} ({what}): {len(examples)} questions, "
                  f"{answerable} answerable, {c['windows']} windows, {c['labelled']} labelled windows, "
                  f"{c['exact']} exact, {len(c['boundary'])} token-boundary {c['boundary']}, "
                  f"{len(c['lost'])} lost {c['lost']}")
            assert c["exact"] >= 0.99 * c["labelled"]
            # Answers are at most a few dozen tokens; windows overlap by >= half a window, so none is lost.
            assert c["lost"] == []
            if not every_answer:
                # answers[0] of these files all sit on token edges; the one widening among the other
                # gold answers is "Finsteraarhorn, t" (an annotation cut inside "the").
                assert c["boundary"] == []
                windows_per_question = c["windows"] / len(examples)
        if max_seq_len == 384:  # BERT's setting: nearly every context fits one window
            assert 1.0 <= windows_per_question < 1.05
        else:  # ~110 context tokens a window, step ~55: several windows a question
            assert 1.5 < windows_per_question < 4


def test_threads_sharing_a_tokenizer_get_their_own_lengths(tokenizer):
    """A server tokenizes for two stores' featurizers over one tokenizer from
    several threads; the fast tokenizer's truncation/padding state must not
    leak from one call into another (it did: shape (4, 64), expected (4, 32))."""
    examples = [Example(uid=str(i), texts=("a fine and gorgeous film " * 3,)) for i in range(4)]
    errors = []

    def loop(featurizer, length):
        for _ in range(500):
            shape = featurizer.encode("sst2", examples).token_ids.shape
            if shape != (4, length):
                errors.append(shape)
                return

    threads = [threading.Thread(target=loop, args=(Featurizer(tokenizer, max_seq_len=n), n)) for n in (32, 64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

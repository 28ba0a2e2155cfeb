"""Token-tagging data: CoNLL column files and JSONL, tag schemes, checks.

A tagged sentence is a list of words and one tag per word. Files come as

- CoNLL column files (``--format conll``): one word a line, columns split on
  whitespace, the word in ``--token-column`` and its tag in ``--tag-column``
  (0-based indices, negative from the end; defaults 0 and -1); sentences end
  at a blank line or a ``-DOCSTART-`` line;
- JSONL: one sentence a line, ``{"tokens": [...], "tags": [...]}`` (the key
  names are the token and tag columns when they are names).

Tags are read in one of the schemes ``IOB1``, ``BIO`` (IOB2) and ``IOBES``
(``auto``: the scheme under which the whole file is valid, BIO first) and
converted to BIO, the one internal scheme (`INTERNAL_SCHEME`, recorded in a
store's manifest with the source scheme). A tag that is not ``O`` or
``PREFIX-TYPE`` with a prefix of the scheme, a type outside a given type list,
a tag sequence the scheme forbids (``I-PER`` after ``O`` in strict BIO), or a
line with another number of columns than the file's first is a `DataError`
naming the file and line.

Example:

>>> sentences = read_tagged(DATA / "conll2003" / "eng.testa")   # DATA: ../shared/data
>>> sentences.scheme, len(sentences), sentences[0].words[:3]
('BIO', 3250, ('CRICKET', '-', 'LEICESTERSHIRE'))
>>> to_bio(["I-PER", "I-PER", "O", "I-LOC"], "IOB1")
['B-PER', 'I-PER', 'O', 'B-LOC']
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from seqeval.metrics.sequence_labeling import get_entities

from bertvision.config import TAG_SCHEMES
from bertvision.data.readers import decode_utf8
from bertvision.errors import ConfigError, DataError

__all__ = ["INTERNAL_SCHEME", "TAG_FORMATS", "TAG_SCHEMES", "TaggedFile", "TaggedSentence", "bio_label_names",
           "check_tags", "conll_text", "detect_scheme", "entities", "entity_types", "guess_format", "jsonl_keys",
           "read_tagged", "split_tag",
           "to_bio"]

INTERNAL_SCHEME = "BIO"
"""The scheme every tag is converted to (IOB2: each entity starts with ``B-``)."""
TAG_FORMATS = ("conll", "jsonl")
DOCSTART = "-DOCSTART-"
_PREFIXES = {"IOB1": "BI", "BIO": "BI", "IOBES": "BIES"}


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
    """One sentence: its words, their tags (``()`` when the file has none) and
    the file line it starts on."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    line: int


@dataclasses.dataclass
class TaggedFile:
    """The sentences of one file, their tags already in BIO, and the scheme
    the file was written in."""

    path: str
    sentences: list[TaggedSentence]
    scheme: str | None  # None: the file has no tags

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, i: int) -> TaggedSentence:
        return self.sentences[i]

    def __iter__(self) -> Iterator[TaggedSentence]:
        return iter(self.sentences)


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or len(prefix) != 1 or not kind:
        return "", ""
    return prefix, kind


def entity_types(tags: Iterable[str]) -> list[str]:
    """The sorted entity types of some tags: ``["LOC", "PER"]``."""
    return sorted({split_tag(t)[1] for t in tags} - {""})


def bio_label_names(types: Sequence[str]) -> tuple[str, ...]:
    """The BIO tag set of entity types, in label-index order: ``O``, then
    ``B-X``, ``I-X`` for each type in order.

    >>> bio_label_names(["LOC", "PER"])
    ('O', 'B-LOC', 'I-LOC', 'B-PER', 'I-PER')
    """
    return ("O",) + tuple(f"{p}-{t}" for t in types for p in "BI")


def _violation(tags: Sequence[str], scheme: str) -> tuple[int, str] | None:
    """The first position where ``tags`` break ``scheme`` and why, or None."""
    allowed = _PREFIXES[scheme]
    n = len(tags)
    parts = [split_tag(t) for t in tags]
    for i, (prefix, kind) in enumerate(parts):
        if prefix == "O":
            continue
        if not prefix or prefix not in allowed:
            return i, f"unknown tag {tags[i]!r} for scheme {scheme} (tags are O or {'/'.join(allowed)}-TYPE)"
        prev = parts[i - 1] if i else ("O", "")
        nxt = parts[i + 1] if i + 1 < n else ("O", "")
        same_prev = prev[1] == kind
        if scheme == "BIO" and prefix == "I" and not (same_prev and prev[0] in "BI"):
            return i, f"{tags[i]} after {tags[i - 1] if i else 'the sentence start'} (BIO starts an entity with B-)"
        if scheme == "IOB1" and prefix == "B" and not (same_prev and prev[0] in "BI"):
            return i, f"{tags[i]} after {tags[i - 1] if i else 'the sentence start'} (IOB1 uses B- only between two " \
                      f"entities of one type)"
        if scheme == "IOBES":
            if prefix in "IE" and not (same_prev and prev[0] in "BI"):
                return i, f"{tags[i]} after {tags[i - 1] if i else 'the sentence start'} (IOBES)"
            if prefix in "BI" and not (nxt[1] == kind and nxt[0] in "IE"):
                return i, f"{tags[i]} not followed by I-{kind} or E-{kind} (IOBES)"
    return None


def check_tags(tags: Sequence[str], scheme: str, types: Iterable[str] | None = None) -> tuple[int, str] | None:
    """The first position (and why) where ``tags`` are not valid in
    ``scheme``, or with a type outside ``types``; None when all are valid.

    >>> check_tags(["O", "I-PER"], "BIO")
    (1, 'I-PER after O (BIO starts an entity with B-)')
    """
    if scheme not in TAG_SCHEMES:
        raise ConfigError(f"tag scheme must be one of {', '.join(TAG_SCHEMES)}, got {scheme!r}")
    if types is not None:
        known = set(types)
        for i, tag in enumerate(tags):
            kind = split_tag(tag)[1]
            if kind and kind not in known:
                return i, f"unknown tag {tag!r}: entity type {kind!r} is not one of {', '.join(sorted(known))}"
    return _violation(tags, scheme)


def detect_scheme(sequences: Sequence[Sequence[str]]) -> str:
    """The scheme of some tag sequences: IOBES when an ``E-``/``S-`` prefix
    appears, else BIO when every sequence is valid BIO, else IOB1 (raises
    `DataError` when they are valid in none; `read_tagged` names the line).

    >>> detect_scheme([["B-PER", "I-PER", "O"]]), detect_scheme([["I-PER", "O"]])
    ('BIO', 'IOB1')
    """
    prefixes = {split_tag(t)[0] for seq in sequences for t in seq}
    if prefixes & {"E", "S"}:
        return "IOBES"
    if all(_violation(seq, "BIO") is None for seq in sequences):
        return "BIO"
    if all(_violation(seq, "IOB1") is None for seq in sequences):
        return "IOB1"
    raise DataError("tags are valid in none of the schemes " + ", ".join(TAG_SCHEMES))


def to_bio(tags: Sequence[str], scheme: str) -> list[str]:
    """``tags`` (valid in ``scheme``) converted to BIO.

    >>> to_bio(["B-PER", "E-PER", "S-LOC"], "IOBES")
    ['B-PER', 'I-PER', 'B-LOC']
    """
    out = []
    prev_kind = ""
    for tag in tags:
        prefix, kind = split_tag(tag)
        if prefix == "O":
            out.append("O")
        elif scheme == "IOB1":
            out.append(f"{'I' if prefix == 'I' and kind == prev_kind else 'B'}-{kind}")
        elif scheme == "IOBES":
            out.append(f"{'B' if prefix in 'BS' else 'I'}-{kind}")
        else:
            out.append(tag)
        prev_kind = kind
    return out


def conll_text(words: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]],
               gold: Sequence[Sequence[str]] | None = None) -> str:
    """The CoNLL output conlleval reads: ``word gold predicted`` a line (``word
    predicted`` without gold tags), a blank line after each sentence.

    >>> print(conll_text([["EU", "rejects"]], [["B-ORG", "O"]], [["B-ORG", "O"]]), end="")
    EU B-ORG B-ORG
    rejects O O
    <BLANKLINE>
    """
    lines = []
    for i, (ws, ps) in enumerate(zip(words, predicted, strict=True)):
        gs = gold[i] if gold is not None else None
        if len(ps) != len(ws) or (gs is not None and len(gs) != len(ws)):
            raise ValueError(f"sentence {i}: {len(ws)} words but {len(ps)} predicted"
                             + ("" if gs is None else f" and {len(gs)} gold") + " tags")
        for j, (w, p) in enumerate(zip(ws, ps)):
            lines.append(f"{w} {p}" if gs is None else f"{w} {gs[j]} {p}")
        lines.append("")
    return "\n".join(lines) + ("\n" if lines else "")


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of BIO tags as ``(type, first word, last word)``, read as
    conlleval reads them (an ``I-X`` after ``O`` starts an entity).

    >>> entities(["B-PER", "I-PER", "O", "I-LOC"])
    [('PER', 0, 1), ('LOC', 3, 3)]
    """
    return [(kind, int(a), int(b)) for kind, a, b in get_entities(list(tags))]


# ----------------------------------------------------------------- readers


def _column_index(column: int | str, width: int, path: Path, line: int, what: str) -> int:
    try:
        index = int(column)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: {what} must be a column number for a CoNLL file, got {column!r}") from None
    if not -width <= index < width:
        raise DataError(f"{path}:{line}: {what} {index} is outside the line's {width} columns")
    return index % width


def _read_conll(path: Path, token_column, tag_column, tagged: bool) -> list[tuple[int, list[str], list[tuple[int, str]]]]:
    """``(first line, words, [(line, tag), ...])`` per sentence."""
    sentences = []
    words: list[str] = []
    tags: list[tuple[int, str]] = []
    start = 0
    width = None
    word_at = tag_at = None
    text = decode_utf8(path.read_bytes(), path)
    # lines end at "\n" only: str.splitlines also splits inside a word at \x1c, \x85, \u2028 ...
    for number, raw in enumerate(text.split("\n"), start=1):
        fields = raw.split()
        if not fields or fields[0] == DOCSTART:
            if words:
                sentences.append((start, words, tags))
            words, tags = [], []
            continue
        if width is None:
            width = len(fields)
            word_at = _column_index(token_column, width, path, number, "--token-column")
            if tagged:
                tag_at = _column_index(tag_column, width, path, number, "--tag-column")
                if tag_at == word_at:
                    raise ConfigError(f"{path}: --token-column and --tag-column are the same column {word_at}")
        elif len(fields) != width:
            raise DataError(f"{path}:{number}: {len(fields)} columns, but the file's first line has {width}")
        if not words:
            start = number
        words.append(fields[word_at])
        if tagged:
            tags.append((number, fields[tag_at]))
    if words:
        sentences.append((start, words, tags))
    return sentences


def jsonl_keys(token_column: int | str, tag_column: int | str) -> tuple[str, str]:
    """A JSONL file's words and tags keys: the columns given, or ``tokens`` and
    ``tags`` for column numbers (the CoNLL defaults 0 and -1).

    >>> jsonl_keys(0, "-1"), jsonl_keys("words", "ner")
    (('tokens', 'tags'), ('words', 'ner'))
    """
    def number(value) -> bool:
        return isinstance(value, int) or str(value).lstrip("-").isdigit()

    return ("tokens" if number(token_column) else str(token_column),
            "tags" if number(tag_column) else str(tag_column))


def _read_jsonl(path: Path, token_column, tag_column, tagged: bool):
    token_key, tag_key = jsonl_keys(token_column, tag_column)
    sentences = []
    # lines end at "\n" only; bytes that are not UTF-8 are one DataError naming the line
    for number, raw in enumerate(decode_utf8(path.read_bytes(), path).split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object with {token_key!r}")
        words = record.get(token_key)
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise DataError(f"{path}:{number}: field {token_key!r} must be a non-empty list of non-empty strings")
        tags: list = []
        if tagged:
            tags = record.get(tag_key)
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise DataError(f"{path}:{number}: field {tag_key!r} must be a list of tag strings")
            if len(tags) != len(words):
                raise DataError(f"{path}:{number}: {len(words)} {token_key} but {len(tags)} {tag_key}")
        sentences.append((number, [w.strip() for w in words], [(number, t) for t in tags]))
    return sentences


def guess_format(path: str | os.PathLike) -> str:
    """``jsonl`` for ``*.jsonl`` / ``*.json`` files, else ``conll``."""
    return "jsonl" if str(path).lower().endswith((".jsonl", ".json")) else "conll"


def read_tagged(path: str | os.PathLike, *, file_format: str | None = None, token_column: int | str = 0,
                tag_column: int | str = -1, scheme: str = "auto", types: Iterable[str] | None = None,
                tagged: bool | None = True, limit: int | None = None) -> TaggedFile:
    """Read a CoNLL column file or JSONL file of tagged sentences.

    Args:
        path: the file.
        file_format: ``conll`` or ``jsonl``; None: from the file name.
        token_column, tag_column: the word's and the tag's column (CoNLL:
            0-based index, negative from the end; JSONL: key names, an int
            means the default keys ``tokens`` / ``tags``).
        scheme: ``auto`` or one of `TAG_SCHEMES`; a named scheme is strict.
        types: the entity types allowed (None: any).
        tagged: False reads words only (files to predict); None: tags
            when the file has them (a CoNLL file of more than one column, a
            JSONL file whose first record has the tag key).
        limit: keep the first ``limit`` sentences.

    Returns:
        `TaggedFile` with tags converted to BIO.

    Raises:
        DataError: naming the file and line of a ragged line, an unknown tag
            or a tag the scheme forbids.
    """
    path = Path(path)
    file_format = file_format or guess_format(path)
    if file_format not in TAG_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(TAG_FORMATS)}, got {file_format!r}")
    if scheme != "auto" and scheme not in TAG_SCHEMES:
        raise ConfigError(f"--tag-scheme must be auto or one of {', '.join(TAG_SCHEMES)}, got {scheme!r}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    reader = _read_conll if file_format == "conll" else _read_jsonl
    if tagged is None:
        tagged = _has_tags(path, file_format, tag_column)
    raw = reader(path, token_column, tag_column, tagged)
    if limit is not None:
        raw = raw[:limit]
    if not raw:
        raise DataError(f"{path}: no sentences")
    if not tagged:
        return TaggedFile(str(path), [TaggedSentence(tuple(w), (), start) for start, w, _ in raw], None)
    tag_lists = [[t for _, t in tags] for _, _, tags in raw]
    if scheme == "auto":
        scheme = _detect_or_explain(path, raw, tag_lists)
    sentences = []
    for (start, words, tags), tag_list in zip(raw, tag_lists):
        bad = check_tags(tag_list, scheme, types)
        if bad is not None:
            raise DataError(f"{path}:{tags[bad[0]][0]}: {bad[1]}")
        sentences.append(TaggedSentence(tuple(words), tuple(to_bio(tag_list, scheme)), start))
    return TaggedFile(str(path), sentences, scheme)


def _has_tags(path: Path, file_format: str, tag_column) -> bool:
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for raw in handle:
            if not raw.strip() or raw.split()[0] == DOCSTART:
                continue
            if file_format == "conll":
                return len(raw.split()) > 1
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                return True  # the reader names the line
            return isinstance(record, dict) and jsonl_keys(0, tag_column)[1] in record
    return True


def _detect_or_explain(path: Path, raw, tag_lists) -> str:
    """The file's scheme, or a `DataError` naming the first line no scheme allows."""
    try:
        return detect_scheme(tag_lists)
    except DataError:
        pass
    iobes = any(split_tag(t)[0] in "ES" for seq in tag_lists for t in seq)
    for (_, _, tags), seq in zip(raw, tag_lists):
        bad = _violation(seq, "IOBES" if iobes else "BIO")
        if bad is not None and (iobes or _violation(seq, "IOB1") is not None):
            raise DataError(f"{path}:{tags[bad[0]][0]}: {bad[1]}; the tags are valid in none of "
                            f"{', '.join(TAG_SCHEMES)}")
    # Each sentence is valid BIO or valid IOB1, but the file is not valid in one of them.
    i = next(i for i, seq in enumerate(tag_lists) if _violation(seq, "BIO") is not None)
    where = raw[i][2][_violation(tag_lists[i], "BIO")[0]][0]
    raise DataError(f"{path}:{where}: {_violation(tag_lists[i], 'BIO')[1]}, yet other sentences are not IOB1 "
                    f"either; the file mixes BIO and IOB1 (give --tag-scheme to read it strictly)")

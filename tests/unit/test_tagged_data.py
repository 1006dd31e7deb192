"""Tagged sentences are read exactly (one tag per syntactic word, nothing duplicated), or refused naming the file
and line; their data section is the schema of its format."""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys

import conllu.parser
import pytest

from s2s.config import CONLLU_COLUMNS, ConlluTagged, TaggedData, TsvTagged, load_recipe, validate
from s2s.data.tagged import TaggedSentences, load_tagged, read_conllu, read_word_tag_tsv
from s2s.errors import DataError, RecipeError
from tests.helpers import ROOT, SHARED_DATA, conllu_text, tagged_tsv, write_recipe, write_text

# two sentences: a multiword token (don't = do + n't), an empty node (4.1), comments; the first words sit on
# lines 4 and 13
SENTENCES = [
    [
        "# newdoc id = doc1",
        "# sent_id = 1",
        "# text = I don't know.",
        "1 I I PRON PRP Case=Nom|Number=Sing 4 nsubj 4:nsubj _",
        "2-3 don't _ _ _ _ _ _ _ _",
        "2 do do AUX VBP Mood=Ind|Tense=Pres 4 aux 4:aux _",
        "3 n't not PART RB _ 4 advmod 4:advmod _",
        "4 know know VERB VB VerbForm=Inf 0 root 0:root SpaceAfter=No",
        "5 . . PUNCT . _ 4 punct 4:punct _",
    ],
    [
        "# sent_id = 2",
        "# text = Sue went and Bill too",
        "1 Sue Sue PROPN NNP Number=Sing 2 nsubj 2:nsubj _",
        "2 went go VERB VBD Tense=Past 0 root 0:root _",
        "3 and and CCONJ CC _ 4 cc 4:cc _",
        "4 Bill Bill PROPN NNP Number=Sing 2 conj 2:conj _",
        "4.1 went go VERB VBD _ _ _ 2:conj CopyOf=2",
        "5 too too ADV RB _ 4 advmod 4:advmod _",
    ],
]
WORDS = [["I", "do", "n't", "know", "."], ["Sue", "went", "and", "Bill", "too"]]


def sample(tmp_path, name="s.conllu", sentences=SENTENCES):
    return write_text(tmp_path / name, conllu_text(sentences))


@pytest.mark.parametrize("name", ["s.conllu", "s.conllu.gz"])
def test_conllu_tags_each_syntactic_word_once_and_skips_ranges_empty_nodes_and_comments(tmp_path, name):
    path = sample(tmp_path, name)
    sentences = read_conllu(path, "upos")
    assert sentences == TaggedSentences(
        words=WORDS,
        tags=[["PRON", "AUX", "PART", "VERB", "PUNCT"], ["PROPN", "VERB", "CCONJ", "PROPN", "ADV"]],
        places=[f"{path}:4", f"{path}:13"],
        skipped_empty=0,
    )


@pytest.mark.parametrize(
    ("column", "tags"),
    [
        ("xpos", [["PRP", "VBP", "RB", "VB", "."], ["NNP", "VBD", "CC", "NNP", "RB"]]),
        ("deprel", [["nsubj", "aux", "advmod", "root", "punct"], ["nsubj", "root", "cc", "conj", "advmod"]]),
        ("feats", [["Case=Nom|Number=Sing", "Mood=Ind|Tense=Pres", "_", "VerbForm=Inf", "_"], None]),
        ("lemma", [["I", "do", "not", "know", "."], ["Sue", "go", "and", "Bill", "too"]]),
    ],
)
def test_any_column_can_be_the_tag(tmp_path, column, tags):
    sentences = read_conllu(sample(tmp_path), column)
    assert sentences.words == WORDS
    assert sentences.tags[0] == tags[0]
    assert tags[1] is None or sentences.tags[1] == tags[1]


def test_the_columns_are_those_conllu_names_except_id_and_form():
    assert tuple(conllu.parser.DEFAULT_FIELDS[2:]) == CONLLU_COLUMNS


def test_an_unknown_column_is_refused_with_the_valid_ones(tmp_path):
    path = sample(tmp_path)
    with pytest.raises(DataError) as caught:
        read_conllu(path, "pos")
    assert str(caught.value) == (
        f"{path}: no CoNLL-U column 'pos' to tag with (columns: lemma, upos, xpos, feats, head, deprel, deps, misc)"
    )


# the word line "2 do do AUX ..." (line 6 of the sample) replaced by a broken one (columns between spaces here)
@pytest.mark.parametrize(
    ("line", "column", "problem"),
    [
        ("2 do do AUX", "upos", "4 tab-separated columns; a CoNLL-U word line has 10"),
        ("2 do do AUX VBP _ 4 aux 4:aux _ more", "upos", "11 tab-separated columns; a CoNLL-U word line has 10"),
        ("two do do AUX VBP _ 4 aux 4:aux _", "upos", "Failed parsing field 'id': 'two' is not a valid ID."),
        ("_ do do AUX VBP _ 4 aux 4:aux _", "upos", "the ID is '_'; a word line needs a number (or a range 3-4, an"),
        ("2 do do AUX VBP _ four aux 4:aux _", "upos", "Failed parsing field 'head': 'four' is not a valid value"),
        ("2 do do _ VBP _ 4 aux 4:aux _", "upos", "the word 'do' has no upos ('_')"),
        ("2 do do AUX _ _ 4 aux 4:aux _", "xpos", "the word 'do' has no xpos ('_')"),
    ],
)
def test_a_malformed_word_line_names_its_file_and_line(tmp_path, line, column, problem):
    broken = list(SENTENCES[0])
    broken[5] = line
    path = sample(tmp_path, "bad.conllu", [broken, SENTENCES[1]])
    with pytest.raises(DataError) as caught:
        read_conllu(path, column)
    assert str(caught.value).startswith(f"{path}:6: {problem}")


def test_two_spaces_in_a_row_are_refused_rather_than_read_as_a_column_break(tmp_path):
    path = write_text(tmp_path / "s.conllu", "1\tNew  York\tx\tPROPN\tNNP\t_\t0\troot\t_\t_\n")
    with pytest.raises(DataError, match=rf"^{path}:1: two spaces in a row"):
        read_conllu(path, "upos")


def test_a_sentence_without_words_is_skipped_and_counted(tmp_path):
    only_comments = ["# sent_id = empty", "# text ="]
    only_a_range = ["# sent_id = range", "1-2 cannot _ _ _ _ _ _ _ _"]
    path = sample(tmp_path, sentences=[SENTENCES[0], only_comments, only_a_range, SENTENCES[1]])
    sentences = read_conllu(path, "upos")
    assert sentences.words == WORDS
    assert sentences.skipped_empty == 2
    assert sentences.places[1] == f"{path}:19"


def test_blank_lines_in_a_row_and_crlf_line_ends_are_read_as_one_break(tmp_path):
    text = conllu_text(SENTENCES).replace("\n\n", "\n\n\n \n").replace("\n", "\r\n")
    sentences = read_conllu(write_text(tmp_path / "s.conllu", text), "upos")
    assert sentences.words == WORDS and sentences.skipped_empty == 0


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.conllu"
    path.write_bytes(conllu_text(SENTENCES).encode().replace(b"1\tSue", b"1\tS\xfce", 1))
    with pytest.raises(DataError, match=rf"^{path}:13: not valid UTF-8"):
        read_conllu(path, "upos")


@pytest.mark.parametrize("name", ["t.tsv", "t.tsv.gz"])
def test_word_tag_lines_are_read_as_sentences(tmp_path, name):
    text = "\n" + tagged_tsv([[("I", "PRON"), ("know", "VERB")], [("Sue", "PROPN")]]) + "\n"
    path = write_text(tmp_path / name, text)
    assert read_word_tag_tsv(path) == TaggedSentences(
        [["I", "know"], ["Sue"]], [["PRON", "VERB"], ["PROPN"]], [f"{path}:2", f"{path}:5"]
    )


@pytest.mark.parametrize(
    ("line", "found"),
    [("know", "1 tab-separated field"), ("know\tVERB\tVB", "3 tab-separated fields"), ("know\t", "an empty field")],
)
def test_a_malformed_word_tag_line_names_its_file_and_line(tmp_path, line, found):
    path = write_text(tmp_path / "t.tsv", f"I\tPRON\n{line}\n")
    with pytest.raises(DataError) as caught:
        read_word_tag_tsv(path)
    assert str(caught.value) == f"{path}:2: expected word<TAB>tag, found {found}"


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.conllu: file not found"):
        read_conllu(tmp_path / "nothing.conllu", "upos")


# ---------------------------------------------------------------- the data section


@pytest.mark.parametrize(
    ("keys", "schema"),
    [
        ({"train": {"path": "t.conllu"}}, ConlluTagged),
        ({"format": "conllu", "train": {"path": "t.conllu"}, "column": "xpos"}, ConlluTagged),
        ({"format": "tsv", "train": {"path": "t.tsv"}}, TsvTagged),
    ],
)
def test_a_tagged_data_section_is_the_schema_of_its_format(keys, schema):
    data = TaggedData.of(**keys)
    assert type(data) is schema and isinstance(data, TaggedData)
    assert type(TaggedData.of(**data.model_dump())) is schema


def recipe(data: dict) -> dict:
    return {"task": "tagging", "data": {"train": {"path": "t"}, "valid": {"path": "v"}, **data}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"format": "tsv", "column": "xpos"}, "data.column: does not apply to data.format 'tsv'"),
        ({"column": "pos"}, "data.column: 'pos' is not one of: lemma, upos, xpos, feats, head, deprel, deps, misc"),
        ({"max_length": 0}, "data.max_length: input should be greater than 0 (got 0)"),
        ({"format": "conll"}, "data.format: 'conll' is not one of: conllu, tsv"),
    ],
)
def test_a_bad_tagged_data_section_is_refused_at_load_with_its_key_path(data, message):
    with pytest.raises(RecipeError) as caught:
        validate(recipe(data), origin="r.yaml")
    assert str(caught.value) == f"r.yaml: {message}"


def test_a_missing_ud_ewt_file_names_the_tool_that_fills_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = recipe({"train": {"path": "data/ud-ewt/train.conllu.gz"}, "valid": {"path": "data/ud-ewt/dev.conllu.gz"}})
    with pytest.raises(RecipeError) as caught:
        load_recipe(write_recipe(tmp_path / "r.yaml", tree))
    assert str(caught.value).endswith(
        "data.train.path: file not found: data/ud-ewt/train.conllu.gz; fill it with: python tools/get_data.py ud-ewt"
    )


def test_load_tagged_reads_each_split_in_its_format(tmp_path):
    conll, tsv = sample(tmp_path), write_text(tmp_path / "t.tsv", tagged_tsv([[("Sue", "PROPN")]]))
    data = TaggedData.of(train={"path": str(conll)}, valid={"path": str(conll)}, column="xpos")
    assert load_tagged(data, "valid").tags[1] == ["NNP", "VBD", "CC", "NNP", "RB"]
    assert load_tagged(TaggedData.of(format="tsv", train={"path": str(tsv)}), "train").words == [["Sue"]]
    with pytest.raises(DataError, match=r"^data\.test: this recipe has no test split$"):
        load_tagged(data, "test")


def test_a_held_out_valid_split_comes_from_train_and_never_overlaps(tmp_path):
    path = write_text(tmp_path / "t.tsv", tagged_tsv([[(f"word{i}", "NOUN"), ("runs", "VERB")] for i in range(20)]))
    data = TaggedData.of(format="tsv", train={"path": str(path)}, holdout=5, holdout_seed=3)
    train, valid = load_tagged(data, "train"), load_tagged(data, "valid")
    assert (len(train.words), len(valid.words)) == (15, 5)
    first_word = {f"{path}:{1 + 3 * i}": f"word{i}" for i in range(20)}  # sentence i starts on line 1 + 3i
    assert sorted(train.places + valid.places) == sorted(first_word)
    for part in (train, valid):
        assert [words[0] for words in part.words] == [first_word[place] for place in part.places]
    assert load_tagged(data, "valid") == valid  # the same seed draws the same sentences


@pytest.mark.skipif(not (SHARED_DATA / "ud-ewt").is_dir(), reason="UD English EWT is not in ../shared/data")
def test_ud_english_ewt_dev_has_the_words_and_sentences_its_readme_counts():
    dev = read_conllu(SHARED_DATA / "ud-ewt" / "dev.conllu.gz", "upos")
    assert (len(dev.words), sum(map(len, dev.words)), dev.skipped_empty) == (2001, 25147, 0)
    assert len({tag for tags in dev.tags for tag in tags}) == 17


# ---------------------------------------------------------------- filling data/ud-ewt


def test_get_data_fills_ud_ewt_from_a_local_copy(tmp_path):
    source = tmp_path / "copy"
    source.mkdir()
    sample(source, "dev.conllu.gz")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "get_data.py"), "ud-ewt", "--from", source, "--to", tmp_path / "data"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert read_conllu(tmp_path / "data" / "ud-ewt" / "dev.conllu.gz", "upos").words == WORDS


def test_a_downloaded_conllu_file_is_compressed_on_arrival(tmp_path):
    spec = importlib.util.spec_from_file_location("get_data", ROOT / "tools" / "get_data.py")
    get_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(get_data)
    assert set(get_data.DATASETS["ud-ewt"]) == {"train.conllu.gz", "dev.conllu.gz"}
    url = sample(tmp_path).as_uri()  # what the release's en_ewt-ud-dev.conllu is: plain text
    get_data.download({"dev.conllu.gz": url}, tmp_path / "ud-ewt", "ud-ewt")
    assert gzip.decompress((tmp_path / "ud-ewt" / "dev.conllu.gz").read_bytes()).decode() == conllu_text(SENTENCES)

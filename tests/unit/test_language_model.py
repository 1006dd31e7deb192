"""Language models: the character tokenizer, streams read in segments with the state carried, the model, its
recipe rules, and sampling (which serves every generating model)."""

from __future__ import annotations

import pytest
import torch

from s2s.config import LanguageModelConfig, TextTokenizerConfig, load_recipe
from s2s.data.batching import TextBatch
from s2s.errors import RecipeError, UsageError
from s2s.inference import TextGenerator, TextIncrements
from s2s.models import LanguageModel
from s2s.pipelines import validation_loss
from s2s.pipelines.language_model import Documents, Streams
from s2s.search import Sampling, greedy_search, restrict, sample_search
from s2s.tokenizer import BOS, EOS, PAD, UNK, CharTokenizer, load_tokenizer
from tests.helpers import toy_language_model_recipe, toy_play, write_recipe, write_text

CPU = torch.device("cpu")


# --- the character tokenizer ---
def test_a_character_vocabulary_round_trips_every_text_made_of_its_characters(tmp_path):
    text = toy_play(20, 1)
    tokenizer = CharTokenizer.of(TextTokenizerConfig(type="char"), [text])
    assert tokenizer.vocab_size == 4 + len(set(text))
    assert tokenizer.decode(tokenizer.encode([text])) == [text]
    assert min(tokenizer.encode([text])[0]) >= 4  # no character takes a special id
    tokenizer.save(tmp_path / "text.chars")
    again = load_tokenizer(tmp_path / "text")
    assert again.encode(["ROMEO:\n"]) == tokenizer.encode(["ROMEO:\n"])


def test_characters_outside_the_vocabulary_are_unknown_and_counted():
    tokenizer = CharTokenizer(list("abc "))
    assert tokenizer.encode(["ab½c½"]) == [[4, 5, UNK, 6, UNK]]
    assert tokenizer.unknown(["ab½c½", "é"]) == {"½": 2, "é": 1}
    assert tokenizer.decode([[4, UNK, 5, EOS, 6]]) == ["ab"]  # unk is left out, EOS ends the text


def test_the_character_vocabulary_keeps_the_most_frequent_characters_within_its_limits():
    texts = ["aaaaaaaabbbc"]
    assert CharTokenizer.of(TextTokenizerConfig(type="char", vocab_size=16), texts).chars == ["a", "b", "c"]
    assert CharTokenizer.of(TextTokenizerConfig(type="char", vocab_size=16, character_coverage=0.7), texts).chars == [
        "a",
        "b",
    ]


# --- streams and documents ---
def test_streams_are_contiguous_rows_whose_inputs_are_the_previous_tokens():
    ids = list(range(10, 33))  # 23 tokens, 3 streams of 7: the last 2 tokens are left out
    streams = Streams(ids, streams=3, bptt=3, n_chars=23)
    assert streams.targets.tolist() == [ids[0:7], ids[7:14], ids[14:21]]
    assert streams.inputs[0].tolist() == [BOS, *ids[0:6]]
    assert streams.inputs[1].tolist() == ids[6:13]  # a stream after the first reads the token before it
    batches = streams.batches(64, False, None)
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]  # segment by segment, every stream in each
    assert [streams.batch(b).first for b in batches] == [True, False, False]
    assert streams.batch(batches[2]).targets.tolist() == [[ids[6]], [ids[13]], [ids[20]]]  # a short last segment
    assert streams.n_chars == 21


def test_documents_are_read_from_bos_to_eos():
    batch = Documents([[5, 6], [7]], chars=[3, 2]).batch([0, 1])
    assert batch.inputs.tolist() == [[BOS, 5, 6], [BOS, 7, PAD]]
    assert batch.targets.tolist() == [[5, 6, EOS], [7, EOS, PAD]]
    assert batch.carry is None and batch.n_predictions == 5


def small_language_model(cell: str) -> LanguageModel:
    torch.manual_seed(0)
    config = LanguageModelConfig(cell=cell, embedding_size=16, hidden_size=16, layers=2, dropout=0.0)
    return LanguageModel(12, config).double().eval()


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_segments_with_the_state_carried_score_a_stream_as_reading_it_in_one_piece(cell):
    model = small_language_model(cell)
    ids = torch.randint(4, 12, (61,), generator=torch.Generator().manual_seed(1)).tolist()
    whole = Streams(ids, streams=1, bptt=61, n_chars=61)
    in_segments = Streams(ids, streams=1, bptt=5, n_chars=61)
    assert in_segments.segments == 13
    one_piece = validation_loss(model, whole, 8, CPU, None)
    assert validation_loss(model, in_segments, 8, CPU, None) == pytest.approx(one_piece, abs=1e-6)  # fp32 losses
    ids_in, state = whole.inputs, model.rnn.zero_state(1, whole.inputs)
    outputs = []
    for start in range(0, 61, 5):  # the states themselves, in fp64
        out, state = model.run(ids_in[:, start : start + 5], state)
        outputs.append(out)
    torch.testing.assert_close(torch.cat(outputs, 1), model.run(ids_in, model.rnn.zero_state(1, ids_in))[0])


def test_without_the_carried_state_segments_score_the_stream_differently():
    model = small_language_model("gru")
    ids = torch.randint(4, 12, (60,), generator=torch.Generator().manual_seed(1)).tolist()
    streams = Streams(ids, streams=1, bptt=5, n_chars=60)
    carried = validation_loss(model, streams, 8, CPU, None)
    segments = streams.iterate(streams.batches(8, False, None))
    each_from_zero = [model(TextBatch(b.inputs, b.targets, b.indices)) for b in segments]
    assert float(torch.stack(each_from_zero).mean().detach()) != pytest.approx(carried, abs=1e-6)


def test_a_training_segment_carries_its_final_state_but_not_its_gradient():
    model = small_language_model("gru").train()
    streams = Streams(list(range(4, 12)) * 8, streams=2, bptt=4, n_chars=64)
    first, second = list(streams.iterate(streams.batches(2, False, None)))[:2]
    model(first).backward()
    carried = streams.carry.hidden
    assert carried.shape == (2, 2, 16) and not carried.requires_grad
    model.zero_grad()
    model(second).backward()  # goes on from the carried state; no graph of the first segment is kept
    assert streams.carry.hidden is not carried


# --- recipe rules ---
def lm_recipe(tmp_path, **changes) -> dict:
    tree = toy_language_model_recipe(tmp_path)
    for key, value in changes.items():
        section, name = key.split("__")
        tree.setdefault(section, {})[name] = value
    return tree


def test_a_stream_cannot_be_read_by_sentencepiece(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", lm_recipe(tmp_path, tokenizer__type="unigram"))
    with pytest.raises(RecipeError, match="tokenizer.type: a stream is modelled with its line breaks"):
        load_recipe(recipe)


def test_tied_embeddings_need_equal_sizes(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", lm_recipe(tmp_path, model__embedding_size=24))
    with pytest.raises(RecipeError, match="model.tie_embeddings: tied embeddings need embedding_size == hidden_size"):
        load_recipe(recipe)


def test_bptt_belongs_to_language_model_recipes_only(tmp_path, tiny_recipe_file):
    with pytest.raises(RecipeError, match="train.bptt"):
        load_recipe(tiny_recipe_file, ["train.bptt=32"])
    tree = lm_recipe(tmp_path)
    tree["data"]["valid"] = {"path": tree["data"]["train"]["path"]}
    with pytest.raises(RecipeError, match="data.valid_tail: give either a valid split or valid_tail"):
        load_recipe(write_recipe(tmp_path / "r.yaml", tree))


def test_the_default_score_of_a_language_model_ranks_lower_first(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", lm_recipe(tmp_path)))
    assert recipe.train.keep_best_by == "bits_per_char" and recipe.lower_is_better("bits_per_char")


# --- sampling ---
def test_top_k_and_top_p_keep_only_the_most_likely_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert restrict(logits, 2, None).isfinite().tolist() == [[True, True, False, False]]
    assert restrict(logits, None, 0.8).isfinite().tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reach 0.8
    assert restrict(logits, None, 0.81).isfinite().tolist() == [[True, True, True, False]]
    assert restrict(logits, None, 0.1).isfinite().tolist() == [[True, False, False, False]]  # the best is always kept


@pytest.mark.parametrize("settings", [{"top_k": 3}, {"top_p": 0.5}, {"top_k": 5, "top_p": 0.9}])
def test_sampling_never_emits_a_token_outside_top_k_or_top_p(settings):
    torch.manual_seed(0)
    logits = torch.randn(400, 12)
    logits[:, [PAD, BOS]] = float("-inf")  # never outputs
    log_probs = logits.log_softmax(-1)
    allowed = restrict(log_probs, settings.get("top_k"), settings.get("top_p")).isfinite()
    _, drawn = Sampling(temperature=1.0, seed=3, **settings).chooser(CPU)(log_probs)
    assert allowed.gather(1, drawn[:, None]).all()
    assert len(set(drawn.tolist())) > 1


def generator_of(model: LanguageModel) -> TextGenerator:
    tokenizer = CharTokenizer(list("abcdefgh"))
    return TextGenerator(model.float(), tokenizer, load_recipe_defaults().eval)


def load_recipe_defaults():
    from s2s.config import LanguageModelRecipe

    return LanguageModelRecipe(task="language_model", data={"train": {"path": "x"}, "valid_tail": 0.1})


def test_sampling_with_a_seed_draws_the_same_text_every_time():
    generator = generator_of(small_language_model("gru"))
    first = generator.generate("abc", 40, Sampling(seed=7), count=3)
    assert generator.generate("abc", 40, Sampling(seed=7), count=3) == first
    assert generator.generate("abc", 40, Sampling(seed=8), count=3) != first
    assert len(set(first)) > 1  # three different samples


def test_temperature_zero_is_greedy_search():
    model = small_language_model("lstm").float()
    memory = model.read(torch.tensor([[BOS, 4, 5]]))
    limit, start = torch.tensor([30]), torch.tensor([6])
    greedy = greedy_search(model, memory, limit, start=start)
    sampled = sample_search(model, memory, limit, Sampling(temperature=0.0), count=2, start=start)[0]
    assert [h.tokens for h in sampled] == [greedy[0].tokens] * 2
    assert sampled[0].score == pytest.approx(greedy[0].score)


def test_a_prompt_is_read_before_generation_goes_on_from_its_last_character():
    model = small_language_model("gru").float()
    generator = generator_of(model)
    after_prompt = generator.generate("abc", 10, Sampling(temperature=0.0))[0]
    ids = [BOS, *generator.tokenizer.encode(["abc"])[0]]
    memory = model.read(torch.tensor([ids[:-1]]))
    expected = greedy_search(model, memory, torch.tensor([11]), start=torch.tensor([ids[-1]]))[0]
    assert after_prompt == generator.tokenizer.decode([expected.tokens])[0]
    assert len(generator.generate("", 10, Sampling(temperature=0.0))[0]) == 10  # an empty prompt is allowed


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_prompts_of_different_lengths_drawn_together_give_what_each_gives_alone(cell):
    generator = generator_of(small_language_model(cell))
    prompts, lengths, greedy = ["abc", "", "cab", "abc"], [12, 5, 9, 3], Sampling(temperature=0.0)
    together = generator.generate_each(prompts, lengths, greedy)
    assert together == [generator.generate(p, n, greedy)[0] for p, n in zip(prompts, lengths, strict=True)]
    assert [len(text) for text in together] == lengths


def test_streamed_increments_of_each_row_add_up_to_its_text():
    generator = generator_of(small_language_model("gru"))
    pieces = {0: [], 1: []}
    increments = TextIncrements(generator.tokenizer, 2, lambda row, text: pieces[row].append(text))
    texts = generator.generate_each(["ab", "c"], [15, 8], Sampling(seed=3), emit=increments.emit)
    assert ["".join(pieces[0]), "".join(pieces[1])] == texts
    assert all(len(piece) == 1 for piece in pieces[0])  # a character model's text grows a character at a time


def test_a_prompt_with_characters_the_model_never_saw_is_refused_naming_them():
    generator = generator_of(small_language_model("gru"))
    with pytest.raises(UsageError, match=r"--prompt: characters the model never saw in training: 'z' \(U\+007A\)"):
        generator.generate("abz", 10, None)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"temperature": -1.0}, "temperature: must be 0 or more"),
        ({"top_k": 0}, "top_k: must be at least 1"),
        ({"top_p": 0.0}, r"top_p: must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p: must be in \(0, 1\]"),
    ],
)
def test_impossible_sampling_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**settings)


# --- reading text ---
def test_a_stream_holds_out_the_end_of_its_text_and_documents_their_last_ones(tmp_path):
    from s2s.config import LanguageModelText
    from s2s.data.text import load_documents

    play = write_text(tmp_path / "play.txt", "ROMEO:\nhello\n\nJULIET:\nbye\n")
    stream = LanguageModelText.of(format="stream", train={"path": str(play)}, valid_tail=0.25)
    train, valid = load_documents(stream, "train"), load_documents(stream, "valid")
    assert train[0] + valid[0] == play.read_text() and valid[0] == ":\nbye\n"  # the last quarter of 26 characters
    lines = LanguageModelText.of(format="lines", train={"path": str(play)}, valid_tail=0.25)
    assert load_documents(lines, "train") == ["ROMEO:", "hello", "JULIET:"]  # blank lines are no documents
    assert load_documents(lines, "valid") == ["bye"]
    (tmp_path / "docs").mkdir()
    for name in ("b.txt", "a.txt", "c.md"):
        write_text(tmp_path / "docs" / name, name)
    files = LanguageModelText.of(format="files", train={"folder": str(tmp_path / "docs")}, valid_tail=0.5)
    assert load_documents(files, "train") == ["a.txt"] and load_documents(files, "valid") == ["b.txt"]


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    from s2s.config import LanguageModelText
    from s2s.data.text import load_documents
    from s2s.errors import DataError

    (tmp_path / "bad.txt").write_bytes(b"good\nbad \xff\n")
    stream = LanguageModelText.of(format="stream", train={"path": str(tmp_path / "bad.txt")}, valid_tail=0.5)
    with pytest.raises(DataError, match=r"bad.txt:2: not valid UTF-8"):
        load_documents(stream, "train")


def test_a_model_of_documents_trains_on_lines_with_sentencepiece_and_scores_a_text(tmp_path):
    from s2s.pipelines import EvalSource
    from s2s.runs import load_run
    from s2s.train import Trainer

    lines = write_text(tmp_path / "lines.txt", toy_play(200, 2).replace("\n\n", "\n"))
    tree = toy_language_model_recipe(tmp_path)
    tree["data"] = {"format": "lines", "train": {"path": str(lines)}, "valid_tail": 0.1, "max_length": 40}
    tree["tokenizer"] = {"type": "unigram", "vocab_size": 60}
    tree["train"].update(max_steps=20, validate_every=20)
    Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", tree)), tmp_path / "run").run()
    run = load_run(tmp_path / "run", task="language_model")
    text = write_text(tmp_path / "other.txt", "ROMEO:\ngood night, good night.\n")
    scores = run.pipeline.evaluate(run.predictor, EvalSource(files={"text": text}), {}, tmp_path / "eval").scores
    assert scores["n_chars"] == len("ROMEO:") + 1 + len("good night, good night.") + 1  # each line and its end
    assert scores["n_tokens"] < scores["n_chars"]  # pieces are longer than characters
    assert scores["bits_per_char"] == pytest.approx(
        scores["loss"] * scores["n_tokens"] / scores["n_chars"] / 0.6931, rel=1e-3
    )


def test_a_run_stopped_in_the_middle_of_an_epoch_resumes_with_its_streams_state(tmp_path):
    import json

    from s2s.train import Trainer

    tree = toy_language_model_recipe(tmp_path)
    tree["model"]["dropout"] = 0.1  # the random state must come back too
    tree["train"].update(max_steps=16, validate_every=4)
    whole = write_recipe(tmp_path / "whole.yaml", tree)
    Trainer(load_recipe(whole), tmp_path / "whole").run()
    Trainer(load_recipe(whole, ["train.max_steps=6"]), tmp_path / "resumed").run()  # stops within the first epoch
    Trainer(load_recipe(whole), tmp_path / "resumed", resume=True).run()

    def losses(run):
        records = map(json.loads, (run / "log.jsonl").read_text().splitlines())
        return {r["step"]: r["loss"] for r in records if r["event"] == "valid"}

    whole_losses, resumed = losses(tmp_path / "whole"), losses(tmp_path / "resumed")
    assert resumed.keys() == {*whole_losses, 6}  # and the validation that ended the first part
    assert {step: resumed[step] for step in whole_losses} == pytest.approx(whole_losses, abs=1e-5)


def test_training_says_how_many_characters_fell_outside_the_vocabulary(tmp_path):
    from s2s.pipelines import pipeline_for

    class Told:
        def __init__(self):
            self.lines = []

        def message(self, text):
            self.lines.append(text)

    tree = toy_language_model_recipe(tmp_path)
    tree["tokenizer"] = {"type": "char", "vocab_size": 20}  # 16 characters: the rarest of the play's are left out
    pipeline = pipeline_for(load_recipe(write_recipe(tmp_path / "r.yaml", tree)))
    told = Told()
    splits = pipeline.read_splits(told)
    (tmp_path / "run").mkdir()
    tokenizer = pipeline.prepare_assets(tmp_path / "run", splits, told)
    pipeline.examples(tokenizer, splits, told)
    left_out = tokenizer.unknown(splits[0])
    assert left_out and told.lines[0].startswith(f"train: {sum(left_out.values()):,} characters read as unknown (")

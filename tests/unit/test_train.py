"""Training: the loss goes down, the run directory holds everything needed to reproduce and use the run."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

import s2s
from s2s.allocator import HeapWatch
from s2s.checkpoint import load_state
from s2s.config import load_recipe
from s2s.errors import RecipeError, RunError
from s2s.models import autocast_dtype, bf16_fallback, count_parameters, cpu_has_bf16
from s2s.runs import load_run
from s2s.train import Events, Trainer, clip_and_step
from tests.helpers import TINY, write_recipe


class Recorder(Events):
    def __init__(self):
        self.steps, self.validations, self.messages = [], [], []

    def step(self, record):
        self.steps.append(record)

    def validated(self, record):
        self.validations.append(record)

    def message(self, text):
        self.messages.append(text)


def log_records(run_dir, event):
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_a_short_training_run_lowers_the_loss(trained_run):
    train = log_records(trained_run, "train")
    assert train[-1]["loss"] < 0.7 * train[0]["loss"]
    valid = log_records(trained_run, "valid")
    assert [v["step"] for v in valid] == [20, 40]
    assert all(k in valid[0] for k in ("loss", "ppl", "bleu", "chrf", "exact_match", "signature"))


def test_the_log_reports_the_gradient_norm_before_clipping_and_the_share_of_clipped_steps(trained_run):
    clip = load_recipe(trained_run / "recipe.yaml").train.clip_norm
    for record in log_records(trained_run, "train"):
        assert record["grad_norm"] > 0 and 0 <= record["clipped"] <= 1
        assert record["clipped"] > 0 or record["grad_norm"] <= clip  # a mean above the limit: some step clipped


def test_the_heap_watch_releases_free_pages_only_after_memory_grew_by_its_margin():
    readings, released = iter([100, 150, 180, 260, 120, 130, 50, 130, 160, 40]), []
    watch = HeapWatch(margin=100, resident=lambda: next(readings), release=lambda: released.append(True))
    # 100 base; 150, 180 within the margin; 260 grew by 160: release, then 120 is the new base; 130 within;
    # 50 below the base becomes the base; 130 within; 160 grew by 110: release
    assert [watch.check() for _ in range(8)] == [False, False, False, True, False, False, False, True]
    assert len(released) == 2 and watch.base == 40


def test_the_trainer_looks_at_its_heap_after_every_step(tmp_path, monkeypatch):
    looks = []
    monkeypatch.setattr(HeapWatch, "check", lambda self: looks.append(True))
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", {**TINY, "train": {**TINY["train"], "max_steps": 12}}))
    Trainer(recipe, tmp_path / "run").run()
    assert len(looks) == 12


def test_the_run_directory_holds_recipe_tokenizer_checkpoints_and_log(trained_run):
    for name in (
        "recipe.yaml",
        "tokenizer/joint.model",
        "best.safetensors",
        "last.safetensors",
        "last.state.pt",
        "log.jsonl",
    ):
        assert (trained_run / name).is_file(), name
    again = load_recipe(trained_run / "recipe.yaml")
    assert again.model.encoder.hidden_size == TINY["model"]["encoder"]["hidden_size"]
    assert again.train.max_steps == TINY["train"]["max_steps"]


def test_dropped_training_pairs_are_counted_in_the_log(tmp_path):
    tree = {**TINY, "data": {**TINY["data"], "max_length": 12}, "train": {**TINY["train"], "max_steps": 1}}
    events = Recorder()
    Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", tree)), tmp_path / "run", events).run()
    (message,) = [m for m in events.messages if m.startswith("training pairs")]
    kept, dropped = message.split(": ")[1].split(" kept, ")
    assert int(kept.replace(",", "")) < 3000
    assert "over 12 tokens dropped" in dropped and not dropped.startswith("0 empty and 0 ")


def test_a_run_directory_is_never_overwritten_and_resume_continues_it(tmp_path):
    recipe_file = write_recipe(
        tmp_path / "r.yaml", {**TINY, "train": {**TINY["train"], "max_steps": 10, "validate_every": 10}}
    )
    run_dir = tmp_path / "run"
    Trainer(load_recipe(recipe_file), run_dir).run()
    tokenizer_bytes = (run_dir / "tokenizer" / "joint.model").read_bytes()
    with pytest.raises(RunError, match="already holds a run; use --resume"):
        Trainer(load_recipe(recipe_file), run_dir).run()
    longer = load_recipe(recipe_file, ["train.max_steps=20"])
    summary = Trainer(longer, run_dir, resume=True).run()
    assert summary["steps"] == 20
    assert (run_dir / "tokenizer" / "joint.model").read_bytes() == tokenizer_bytes
    assert [r["step"] for r in log_records(run_dir, "valid")] == [10, 20]


def test_resume_needs_a_run(tmp_path):
    with pytest.raises(RunError, match="empty: no such run directory"):
        Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", TINY)), tmp_path / "empty", resume=True).run()


def test_resuming_a_finished_run_trains_no_further_step(tmp_path):
    recipe_file = write_recipe(tmp_path / "r.yaml", {**TINY, "train": {**TINY["train"], "max_steps": 10}})
    run_dir = tmp_path / "run"
    Trainer(load_recipe(recipe_file), run_dir).run()
    weights = (run_dir / "last.safetensors").read_bytes()
    summary = Trainer(load_recipe(recipe_file), run_dir, resume=True).run()
    assert (summary["stop"], summary["steps"]) == ("max_steps", 10)
    assert (run_dir / "last.safetensors").read_bytes() == weights
    assert [r["step"] for r in log_records(run_dir, "valid")] == [10]


def test_the_log_starts_with_a_signature_of_what_ran(tmp_path):
    run_dir = tmp_path / "run"
    recipe_file = write_recipe(tmp_path / "r.yaml", {**TINY, "train": {**TINY["train"], "max_steps": 1}})
    Trainer(load_recipe(recipe_file), run_dir).run()
    first = json.loads((run_dir / "log.jsonl").read_text().splitlines()[0])
    assert first["event"] == "run"
    assert first["s2s"] == s2s.__version__ and first["torch"] == torch.__version__
    assert (first["device"], first["threads"], first["precision"]) == ("cpu", 1, "fp32")
    assert first["parameters"] == count_parameters(load_run(run_dir).predictor.model)
    assert first["recipe_sha256"] == hashlib.sha256((run_dir / "recipe.yaml").read_bytes()).hexdigest()
    assert isinstance(first["kernels"], bool) and first["resumed_at"] == 0


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (AVX-512 or AMX)")
def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", TINY), ["train.precision=bf16", "train.max_steps=20"])
    events = Recorder()
    trainer = Trainer(recipe, tmp_path / "run", events)
    assert trainer.dtype == torch.bfloat16
    trainer.run()
    assert events.steps[-1]["loss"] < events.steps[0]["loss"]
    assert log_records(tmp_path / "run", "run")[0]["precision"] == "bf16"


def test_bf16_trains_in_fp32_and_says_so_on_a_cpu_without_it(tmp_path, monkeypatch):
    """Without oneDNN's bf16 (an AVX2-only CPU) bf16 products run in scalar loops and an LSTM cannot run at all."""
    monkeypatch.setattr("s2s.models.cpu_has_bf16", lambda: False)
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", TINY), ["train.precision=bf16", "train.max_steps=2"])
    events = Recorder()
    trainer = Trainer(recipe, tmp_path / "run", events)
    assert trainer.dtype is None
    cpu = torch.backends.cpu.get_cpu_capability()
    assert events.messages == [f"train.precision: bf16 runs as fp32 here: this CPU ({cpu}) has no AVX-512 or AMX"]
    trainer.run()
    assert log_records(tmp_path / "run", "run")[0]["precision"] == "fp32"


def test_bf16_is_bf16_on_a_cpu_with_it(monkeypatch):
    monkeypatch.setattr("s2s.models.cpu_has_bf16", lambda: True)
    assert autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert bf16_fallback(torch.device("cpu")) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="device auto picks the GPU here")
def test_fp16_is_refused_when_device_auto_finds_no_gpu(tmp_path):
    """With train.device: cpu the recipe is refused at load (tests/test_bad_recipes.py); with auto, only the
    machine that trains knows."""
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", TINY), ["train.precision=fp16", "train.device=auto"])
    with pytest.raises(RecipeError, match="train.precision: fp16 needs a CUDA device"):
        Trainer(recipe, tmp_path / "run")


def test_training_stops_at_max_epochs(tmp_path):
    tree = {
        **TINY,
        "data": {**TINY["data"], "generator": {**TINY["data"]["generator"], "train_size": 64}},
        "train": {**TINY["train"], "max_steps": None, "max_epochs": 2, "batch_size": 32},
    }
    summary = Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", tree)), tmp_path / "run").run()
    assert (summary["stop"], summary["epochs"], summary["steps"]) == ("max_epochs", 2, 4)


def test_early_stopping_after_patience_validations_without_improvement(tmp_path):
    tree = {
        **TINY,
        "train": {
            **TINY["train"],
            "lr": 1e-9,
            "min_lr": 0,
            "max_steps": 200,
            "validate_every": 2,
            "patience": 2,
            "keep_best_by": "exact_match",
        },
    }
    summary = Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", tree)), tmp_path / "run").run()
    assert summary["stop"] == "patience"
    assert summary["steps"] == 6


@pytest.mark.parametrize(("average_bleu", "kept"), [(100.0, True), (-1.0, False)], ids=["better", "worse"])
def test_average_last_keeps_the_average_of_the_last_checkpoints_only_when_it_validates_better(
    tmp_path, monkeypatch, average_bleu, kept
):
    tree = {**TINY, "train": {**TINY["train"], "max_steps": 30, "validate_every": 10, "average_last": 3}}
    run, averaging = tmp_path / "run", Trainer.keep_average_if_better

    def average_scoring(self, session):  # the average validates better, or worse, than any checkpoint can
        self.score_valid = lambda _: (1.0, {"bleu": average_bleu}, average_bleu)
        averaging(self, session)

    monkeypatch.setattr(Trainer, "keep_average_if_better", average_scoring)
    summary = Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", tree)), run).run()
    (averaged,) = log_records(run, "averaged")
    assert averaged["checkpoints"] == ["step-00000010", "step-00000020", "step-00000030"]
    assert averaged["kept"] is kept
    best_single = max(record["bleu"] for record in log_records(run, "valid"))
    assert summary["best"] == (average_bleu if kept else best_single)
    best, average = load_file(str(run / "best.safetensors")), load_file(str(run / "averaged.safetensors"))
    assert all(torch.equal(best[name], average[name]) for name in best) is kept


def test_a_resumed_run_keeps_a_kept_average_unless_it_validates_better(tmp_path, monkeypatch):
    tree = {**TINY, "train": {**TINY["train"], "max_steps": 20, "validate_every": 10, "average_last": 2}}
    run, averaging = tmp_path / "run", Trainer.keep_average_if_better

    def average_scoring_100(self, session):  # the average validates better than any checkpoint can
        self.score_valid = lambda _: (1.0, {"bleu": 100.0}, 100.0)
        averaging(self, session)

    monkeypatch.setattr(Trainer, "keep_average_if_better", average_scoring_100)
    Trainer(load_recipe(write_recipe(tmp_path / "r.yaml", tree)), run).run()
    assert load_state(run / "last.state.pt")["progress"]["best"] == 100.0
    kept = load_file(str(run / "best.safetensors"))
    monkeypatch.undo()
    longer = load_recipe(write_recipe(tmp_path / "r.yaml", tree), ["train.max_steps=30", "train.average_last=0"])
    summary = Trainer(longer, run, resume=True).run()
    assert summary["steps"] == 30 and summary["best"] == 100.0  # step 30's validation is compared with the average
    best = load_file(str(run / "best.safetensors"))
    assert all(torch.equal(best[name], kept[name]) for name in kept)


def test_average_last_cannot_exceed_the_checkpoints_kept(tmp_path):
    with pytest.raises(RecipeError, match="train.average_last: 6 checkpoints, but train.keep_last keeps only 5"):
        load_recipe(write_recipe(tmp_path / "r.yaml", TINY), ["train.average_last=6"])


@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clipped", "within"])
def test_a_fused_optimizer_clips_gradients_as_clip_grad_norm_does(max_norm):
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(4)]
    grads = [[torch.randn_like(w) * scale for w in start] for scale in (1.0, 10.0, 0.1)]  # three steps

    def train(clip) -> list[torch.Tensor]:
        params = [torch.nn.Parameter(w.clone()) for w in start]
        optimizer = torch.optim.Adam(params, lr=0.1, fused=True)
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            clip(optimizer, params)
        assert not hasattr(optimizer, "grad_scale")  # nothing left for a later step
        return [p.detach() for p in params]

    def reference(optimizer, params):
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()

    fused = train(lambda optimizer, _: clip_and_step(optimizer, max_norm))
    for got, expected in zip(fused, train(reference), strict=True):
        torch.testing.assert_close(got, expected)
    unclipped = train(lambda optimizer, _: optimizer.step())
    assert any(not torch.allclose(a, b) for a, b in zip(fused, unclipped, strict=True)) == (max_norm < 1e3)

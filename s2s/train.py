"""The trainer: recipe → pipeline (data, tokenizer, model) → optimisation, validation and checkpoints in a run
directory. One loop for every pipeline: what differs between translation and classification lives in
``s2s.pipelines``.

Presentation is not done here: the trainer reports through ``Events`` (the CLI draws progress bars from them) and
appends every log line and validation to ``log.jsonl`` in the run directory.
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from s2s.allocator import HeapWatch, keep_freed_memory
from s2s.checkpoint import (
    average_checkpoints,
    keep_newest,
    load_state,
    load_weights,
    save_state,
    save_weights,
    step_checkpoint,
    step_checkpoints,
)
from s2s.config import Recipe, TrainConfig, dump_recipe
from s2s.distributed import Processes
from s2s.errors import RecipeError, RunError, TrainingError
from s2s.models import autocast, autocast_dtype, bf16_fallback, count_parameters, precision_name
from s2s.pipelines import Examples, Pipeline, Stage, final_stage, pipeline_for, validation_loss
from s2s.runs import is_run, require_run, run_signature
from s2s.weight_average import WeightAverage


class Events:
    """What the trainer tells the outside world; the default says nothing."""

    def start(self, info: dict) -> None: ...
    def step(self, record: dict) -> None: ...
    def validated(self, record: dict) -> None: ...
    def message(self, text: str) -> None: ...
    def work(self, what: str, done: int, total: int) -> None: ...  # a preparation step (e.g. extracting features)
    def end(self, summary: dict) -> None: ...


@dataclass
class Progress:
    """Counters saved in the trainer state, so a resumed run continues where it stopped."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float | None = None
    bad_validations: int = 0
    lr_scale: float = 1.0
    skipped_steps: int = 0  # steps whose loss was not finite (no update was made)
    nonfinite_in_row: int = 0
    stage: int = 0  # 1 once the recipe's final stage (captioning's self-critical one) has started
    stage_best: float | None = None  # the best validation of the current stage: what lr plateaus and patience count


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM ask training to stop at the next step boundary and save a checkpoint;
    a second Ctrl-C interrupts at once. Outside the main thread signals cannot be caught, and are left alone."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: str | None = None
        self.previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self.handle) for sig in self.SIGNALS}
        return self

    def handle(self, signum, frame) -> None:
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Step(NamedTuple):
    """What one update reports: its loss, the tokens it trained on (0: a non-finite loss skipped it) and the
    gradients' norm before clipping (None when skipped)."""

    loss: float
    tokens: int
    grad_norm: float | None


@dataclass
class Window:
    """Training figures since the last log line."""

    loss: float = 0.0
    tokens: int = 0
    steps: int = 0
    norm_sum: float = 0.0  # of the finite gradient norms before clipping
    norms: int = 0  # steps with a finite norm
    clipped: int = 0  # steps whose gradients clipping scaled down
    since: float = field(default_factory=time.monotonic)

    def add(self, step: Step, clip_norm: float) -> None:
        self.loss, self.tokens, self.steps = self.loss + step.loss, self.tokens + step.tokens, self.steps + 1
        if step.grad_norm is not None and math.isfinite(step.grad_norm):
            self.norm_sum, self.norms = self.norm_sum + step.grad_norm, self.norms + 1
            self.clipped += step.grad_norm > clip_norm


@dataclass
class Session:
    """Everything one training run works on; what ``save`` writes and ``restore`` reads back."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train: Examples
    valid: Examples
    progress: Progress
    assets: object  # what the pipeline prepared (tokenizers, labels): validation decodes with them
    window: Window = field(default_factory=Window)
    validation_seconds: float = 0.0
    resumed_at: int = 0  # the step this process started from
    trained: nn.Module | None = None  # what the step runs: the model, or its DDP wrapper across processes
    average: WeightAverage | None = None  # train.ema_decay: what validation scores and the best checkpoint keeps
    stage: Stage | None = None  # the recipe's final stage (started when ``progress.stage`` is 1), if it has one

    def objective(self) -> nn.Module:
        """What a step's loss comes from: the model itself, or the started stage's objective around it."""
        return self.stage.objective(self.model) if self.progress.stage else self.model

    def validated_weights(self) -> AbstractContextManager:
        """The weights validation scores: the moving average when there is one, else the model's own."""
        return self.average.applied() if self.average else nullcontext()


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError("train.device: 'cuda' was asked for but no CUDA device is available")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


FINISHED = ("max_steps", "max_time", "max_epochs", "patience")  # why a run can end that is not an interruption
NEXT_STAGE = "the final stage is due"  # why an epoch ends early without ending the run


class Trainer:
    def __init__(self, recipe: Recipe, run_dir: Path, events: Events | None = None, resume: bool = False):
        self.recipe, self.config = recipe, recipe.train
        self.pipeline: Pipeline = pipeline_for(recipe)
        self.run_dir, self.events, self.resume = Path(run_dir), events or Events(), resume
        self.processes = Processes.from_env()
        if not self.processes.main:
            self.events = Events()  # one process speaks for all
        self.device = self.processes.device(resolve_device(self.config.device))
        self.dtype = autocast_dtype(self.config.precision, self.device)
        if self.config.precision == "bf16" and (why := bf16_fallback(self.device)):
            self.events.message(f"train.precision: {why}")
        keep_freed_memory()  # every step frees and allocates the same large buffers again
        self.heap = HeapWatch()  # ... unless batches change shape, which fragments that kept heap

    def run(self) -> dict:
        """Train until a budget, early stopping or a signal ends the run; return a summary."""
        started = time.monotonic()
        self.processes.start(self.device)
        try:
            return self.train_to_the_end(started)
        finally:
            self.processes.end()

    def train_to_the_end(self, started: float) -> dict:
        session = self.start()
        stop = self.finished(session.progress)
        with StopSignals() as signals:
            while stop is None:
                stage = session.stage if session.progress.stage else None
                batches = epoch_batches(self.config, session.train, session.progress.epoch, stage)
                stop = self.train_epoch(session, batches[session.progress.batch_in_epoch :], signals, started)
                if stop == NEXT_STAGE:
                    self.begin_stage(session)
                    stop = None
            if signals.received:
                self.save(session)  # at once, without a validation
            elif stop in FINISHED and session.progress.step > session.resumed_at:
                self.keep_average_if_better(session)
        summary = {
            "stop": stop,
            "run_dir": str(self.run_dir),
            "steps": session.progress.step,
            "epochs": session.progress.epoch,
            "best": session.progress.best,
            "keep_best_by": self.config.keep_best_by,
            "seconds": round(time.monotonic() - started, 1),
        }
        self.log({"event": "end", **summary})
        self.events.end(summary)
        return summary

    def start(self) -> Session:
        """Run directory, data, assets, model and optimizer, fresh or restored from the last checkpoint."""
        config = self.config
        self.check_run_dir()
        splits = self.pipeline.read_splits(self.events)  # before anything is written: bad data leaves no run directory
        if self.processes.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_recipe(self.recipe, self.run_dir / "recipe.yaml")
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        assets = self.assets(splits)
        train, valid = self.pipeline.examples(assets, splits, self.events)
        model = self.pipeline.build_model(assets).to(self.device)
        if self.processes.world > 1:
            torch.manual_seed(config.seed + self.processes.rank)  # the same start, different dropout
        optimizer = make_optimizer(model, config)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        stage = final_stage(self.pipeline, assets, train)
        session = Session(model, optimizer, scaler, train, valid, Progress(), assets, stage=stage)
        if config.ema_decay:
            session.average = WeightAverage(model, config.ema_decay)
        if self.resume:
            self.restore(session)
        session.resumed_at = session.progress.step
        session.trained = self.processes.wrap(session.objective(), self.device)
        self.log(run_signature(self.run_dir, model, self.device, self.dtype, session.resumed_at))
        self.events.start(
            {
                "parameters": count_parameters(model),
                "device": str(self.device),
                "precision": precision_name(self.dtype),
                "train_examples": len(train),
                "scores": self.recipe.SCORES,
                "max_steps": config.max_steps,
                "resumed_at": session.progress.step,
            }
        )
        return session

    def assets(self, splits):
        """A new run's main process prepares the assets (a tokenizer is trained once); a resumed run, and the
        other processes once the main one is done, read them from the run directory."""
        made = None
        if self.processes.main and not self.resume:
            made = self.pipeline.prepare_assets(self.run_dir, splits, self.events)
        self.processes.barrier()
        return made if made is not None else self.pipeline.load_assets(self.run_dir)

    def train_epoch(
        self, session: Session, batches: list[list[int]], signals: StopSignals, started: float
    ) -> str | None:
        """Train on ``batches`` (the rest of an epoch), validating on schedule; return why to stop, if so."""
        config, progress, train, processes = self.config, session.progress, session.train, self.processes
        shares = [processes.share(batch) for batch in batches]
        for (_, counts), batch in zip(shares, train.iterate([mine for mine, _ in shares]), strict=True):
            step = self.train_step(
                session.trained, session.optimizer, session.scaler, batch.to(self.device), progress, counts
            )
            progress.step += 1
            progress.batch_in_epoch += 1
            if step.tokens:
                session.window.add(step, config.clip_norm)
                if session.average:
                    session.average.update()
            if progress.step % config.log_every == 0:
                self.log_window(session)
            self.heap.check()
            if processes.any(signals.received is not None, self.device):
                return signals.received or "stopped by another process"
            stop = self.budget_spent(progress, started, session.validation_seconds)
            if processes.any(stop is not None, self.device):  # the main process's clock decides for all
                stop = stop or "max_time"
            elif self.stage_due(session, started):
                stop = NEXT_STAGE
            every = session.stage.validate_every if progress.stage else config.validate_every
            if progress.step % every == 0 or stop:
                stopped_early = self.validate_and_save(session)  # a budget's last step is validated too
                stop = stop or stopped_early
            if stop:
                return stop
        progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0
        if config.max_epochs and progress.epoch >= config.max_epochs:
            self.validate_and_save(session)
            return "max_epochs"
        return None

    def stage_due(self, session: Session, started: float) -> bool:
        """Whether the recipe's final stage, not yet started, is due now (in any process: its clock decides)."""
        stage, progress = session.stage, session.progress
        if stage is None or progress.stage:  # the same in every process: nothing to agree on
            return False
        return self.processes.any(stage.due(progress.step, time.monotonic() - started), self.device)

    def begin_stage(self, session: Session) -> None:
        """Start the final stage (the last weights validated and saved just before): its examples, its objective
        and a fresh optimizer at its lr. The lr plateaus and patience count against the stage's own best validation;
        the run's best score carries over, so the stage's weights replace the kept ones only when they validate
        better."""
        progress, stage = session.progress, session.stage
        progress.stage, progress.batch_in_epoch, progress.lr_scale, progress.bad_validations = 1, 0, 1.0, 0
        progress.stage_best = None  # the stage improves on its own first weights before it can beat the best
        self.enter_stage(session)
        session.trained = self.processes.wrap(session.objective(), self.device)
        self.log({"event": "stage", "step": progress.step, "name": stage.name, "lr": stage.lr})
        self.events.message(
            f"step {progress.step:,}: the {stage.name} stage starts ({len(stage.examples):,} examples, "
            f"batches of {stage.batch_size}, lr {stage.lr:g})"
        )

    def enter_stage(self, session: Session) -> None:
        """The started stage's examples and optimizer (the optimizer's state is the stage's own)."""
        session.train = session.stage.examples
        session.optimizer = make_optimizer(session.model, self.config, session.stage.lr)

    def validate_and_save(self, session: Session) -> str | None:
        """Validate, checkpoint, and return 'patience' when early stopping ends the run."""
        tick = time.monotonic()
        patience_out = False
        if self.processes.main:
            patience_out = self.validate(session)
            self.save(session)
        patience_out = self.processes.any(patience_out, self.device)
        session.validation_seconds = time.monotonic() - tick
        session.window.since += session.validation_seconds  # validation time is not training speed
        return "patience" if patience_out else None

    def budget_spent(self, progress: Progress, started: float, validation_seconds: float) -> str | None:
        """Why training must stop now, if it must: the step budget, or the time budget less a final validation."""
        config = self.config
        if config.max_steps and progress.step >= config.max_steps:
            return "max_steps"
        validations_left = 2 if config.average_last else 1  # the last one, and the average's
        if (
            config.max_time
            and time.monotonic() - started + 1.1 * validations_left * validation_seconds >= config.max_time
        ):
            return "max_time"
        return None

    def check_run_dir(self) -> None:
        if self.resume:
            require_run(self.run_dir)
            if not (self.run_dir / "last.state.pt").is_file():
                raise RunError(f"{self.run_dir}: nothing to resume (no checkpoint saved yet)")
        elif is_run(self.run_dir):
            raise RunError(
                f"{self.run_dir}: already holds a run; use --resume to continue it, --overwrite to replace it, "
                "or another --run-dir"
            )

    def finished(self, progress: Progress) -> str | None:
        """Why a resumed run has nothing left to do, if so: its step or epoch budget is already spent."""
        config = self.config
        if config.max_steps and progress.step >= config.max_steps:
            return "max_steps"
        if config.max_epochs and progress.epoch >= config.max_epochs:
            return "max_epochs"
        return None

    def train_step(self, model: nn.Module, optimizer, scaler, batch, progress: Progress, counts: bool = True) -> Step:
        """One update, the same in all processes. ``counts`` False: this process's share of the batch is a
        stand-in of weight zero."""
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(self.config, progress, optimizer.defaults["lr"]) * group.get("lr_scale", 1.0)
        with autocast(self.device, self.dtype):
            loss = model(batch, self.config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        mine = batch.n_predictions if counts else 0
        everyone, tokens, nonfinite = self.processes.sum(
            [mine, batch.n_tokens if counts else 0, float(not torch.isfinite(loss))], self.device
        )
        if nonfinite:  # on any process: every process skips, or DDP would wait for the missing gradients
            self.skip_nonfinite(progress)
            return Step(0.0, 0, None)
        progress.nonfinite_in_row = 0
        reported = loss.detach()
        if self.processes.world > 1:  # DDP averages over processes; the mean must be over the whole batch
            loss = loss * (mine * self.processes.world / max(1.0, everyone))
        norm = backward_and_step(optimizer, scaler, loss, self.config.clip_norm)
        return Step(float(reported), int(tokens), float(norm))

    def skip_nonfinite(self, progress: Progress) -> None:
        progress.skipped_steps += 1
        progress.nonfinite_in_row += 1
        self.log({"event": "skipped", "step": progress.step + 1, "reason": "non-finite loss"})
        if progress.nonfinite_in_row >= self.config.max_nonfinite_steps:
            raise TrainingError(
                f"the loss was not finite for {progress.nonfinite_in_row} steps in a row (at step "
                f"{progress.step + 1}); the last good checkpoint is in {self.run_dir}. Lower train.lr, or train in fp32"
            )

    def log_window(self, session: Session) -> None:
        window, progress = session.window, session.progress
        loss = window.loss / max(1, window.steps)
        record = {
            "event": "train",
            "step": progress.step,
            "epoch": progress.epoch,
            "loss": round(loss, 4),
            "ppl": round(math.exp(min(loss, 50)), 2),
            "lr": session.optimizer.param_groups[0]["lr"],
            "tokens_per_s": round(window.tokens / max(1e-9, time.monotonic() - window.since)),
            # the gradients' norm before clipping (mean over the window) and the share of steps clipping scaled down:
            # what vanishing or exploding gradients look like from outside
            "grad_norm": round(window.norm_sum / window.norms, 4) if window.norms else None,
            "clipped": round(window.clipped / window.norms, 4) if window.norms else None,
        }
        if progress.stage:  # the stage's loss is its own objective's, not a cross-entropy
            del record["ppl"]
        self.log(record)
        self.events.step(record)
        session.window = Window()

    def validate(self, session: Session) -> bool:
        """Score the valid split, keep the best weights, adjust the lr on plateaus; True to stop (patience)."""
        config, started, progress = self.config, time.monotonic(), session.progress
        with session.validated_weights():
            loss, scores, value = self.score_valid(session)
            improved = self.better(value, progress.best)
            if improved:
                save_weights(session.model, self.run_dir / "best.safetensors")
        if improved:
            progress.best = value
        if self.better(value, progress.stage_best):
            progress.stage_best, progress.bad_validations = value, 0
        else:
            progress.bad_validations += 1
            if config.lr_patience and progress.bad_validations % (config.lr_patience + 1) == 0:
                progress.lr_scale *= config.lr_decay
        record = {
            "event": "valid",
            "step": progress.step,
            "loss": round(loss, 4),
            "ppl": round(math.exp(min(loss, 50)), 2),
            **scores,
            "best": progress.best,
            "improved": improved,
            "lr": session.optimizer.param_groups[0]["lr"],
            "seconds": round(time.monotonic() - started, 1),
        }
        self.log(record)
        self.events.validated(record)
        return bool(config.patience and progress.bad_validations >= config.patience)

    def score_valid(self, session: Session) -> tuple[float, dict, float]:
        """Validation loss, scores, and the value ``keep_best_by`` ranks by, of the model's current weights."""
        loss = validation_loss(session.model, session.valid, self.recipe.eval.batch_size, self.device, self.dtype)
        predictor = self.pipeline.predictor(session.model, session.assets, self.device, self.dtype)
        scores = self.pipeline.score(predictor, session.valid, loss)
        return loss, scores, loss if self.config.keep_best_by == "loss" else scores[self.config.keep_best_by]

    def better(self, value: float, best: float | None) -> bool:
        return best is None or (value < best if self.recipe.lower_is_better(self.config.keep_best_by) else value > best)

    def keep_average_if_better(self, session: Session) -> None:
        """``train.average_last``: the mean of the newest N step checkpoints becomes the best weights when it
        validates better than the best single checkpoint. Checked once, when training ends; the last weights and
        the trainer state stay as they were (but for the best score), so a resumed run goes on from them."""
        count, progress = self.config.average_last, session.progress
        chosen = step_checkpoints(self.run_dir)[-count:] if count else []
        if len(chosen) < 2 or not self.processes.main:
            return
        averaged = self.run_dir / "averaged.safetensors"
        average_checkpoints(chosen, averaged)
        last = {name: tensor.clone() for name, tensor in session.model.state_dict().items()}
        load_weights(session.model, averaged)
        loss, scores, value = self.score_valid(session)
        kept = self.better(value, progress.best)
        if kept:
            progress.best = value
            save_weights(session.model, self.run_dir / "best.safetensors")
            self.record_best(value)
        session.model.load_state_dict(last)
        record = {"event": "averaged", "checkpoints": [p.stem for p in chosen], "loss": round(loss, 4), **scores}
        self.log({**record, "kept": kept, "best": progress.best})
        verdict = "kept as the best weights" if kept else "not better than the best checkpoint"
        self.events.message(
            f"average of the last {len(chosen)} checkpoints: {self.config.keep_best_by} {value:.2f}, {verdict}"
        )

    def record_best(self, best: float) -> None:
        """The saved trainer state learns a best score found after it was written (the kept average), so that a
        resumed run compares its validations with that score and cannot replace the average with a worse checkpoint."""
        path = self.run_dir / "last.state.pt"
        state = load_state(path)
        state["progress"]["best"] = best
        save_state(state, path)

    def save(self, session: Session) -> None:
        if not self.processes.main:
            return
        save_weights(session.model, self.run_dir / "last.safetensors")
        save_weights(session.model, step_checkpoint(self.run_dir, session.progress.step))
        keep_newest(self.run_dir, self.config.keep_last)
        state = {
            "optimizer": session.optimizer.state_dict(),
            "scaler": session.scaler.state_dict(),
            "progress": vars(session.progress),
            "torch_rng": torch.get_rng_state(),
            "train_reading": session.train.state(),
        }
        if session.average:
            state["weight_average"] = session.average.state_dict()
        save_state(state, self.run_dir / "last.state.pt")

    def restore(self, session: Session) -> None:
        load_weights(session.model, self.run_dir / "last.safetensors")
        state = load_state(self.run_dir / "last.state.pt")
        known, saved = Progress.__dataclass_fields__, state["progress"]
        session.progress = Progress(**{k: v for k, v in saved.items() if k in known})
        if "stage_best" not in saved:  # saved before training had stages: its one stage's best is the best
            session.progress.stage_best = session.progress.best
        if session.progress.stage:
            if session.stage is None:
                raise RunError(f"{self.run_dir}: saved in a final training stage that the recipe no longer has")
            self.enter_stage(session)
        if session.average:
            self.restore_average(session.average, state)
        session.optimizer.load_state_dict(state["optimizer"])
        session.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if self.processes.world == 1:  # what one process saved is its own: across processes, reading starts afresh
            session.train.restore(state.get("train_reading", {}))

    def restore_average(self, average: WeightAverage, state: dict) -> None:
        """The saved moving average; a run saved without one (ema_decay added on resume) starts it from the
        restored weights."""
        if "weight_average" not in state:
            average.restart()
            return
        try:
            average.load_state_dict(state["weight_average"])
        except ValueError as error:
            path = self.run_dir / "last.state.pt"
            raise RunError(f"{path}: the saved weight average does not fit the model ({error})") from None

    def log(self, record: dict) -> None:
        if not self.processes.main:
            return
        with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def epoch_batches(config: TrainConfig, examples: Examples, epoch: int, stage: Stage | None = None) -> list[list[int]]:
    """The batches of one epoch (of the final ``stage``, once started: in its batch size, counted in examples); the
    same for a given seed and epoch, so a resumed run draws them again."""
    rng = random.Random(config.seed * 100_003 + epoch)
    if stage is not None:
        return examples.batches(stage.batch_size, False, rng)
    return examples.batches(config.batch_size, config.batch_by == "tokens", rng)


def make_optimizer(model: nn.Module, config: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """The recipe's optimizer at ``lr`` (default: ``config.lr``); a parameter with an ``lr_scale`` attribute learns
    at that fraction of the lr."""
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    # the fused update is one kernel over all parameters, much faster than foreach on the CPU
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in model.parameters())
    scales: dict[float, list[nn.Parameter]] = {1.0: []}  # the model's own first: its lr is the one logged
    for parameter in model.parameters():
        scales.setdefault(getattr(parameter, "lr_scale", 1.0), []).append(parameter)
    groups = [{"params": params, "lr_scale": scale} for scale, params in scales.items() if params]
    return kind(groups, lr=lr or config.lr, weight_decay=config.weight_decay, fused=fused, foreach=not fused)


def backward_and_step(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss: torch.Tensor, max_norm: float
) -> torch.Tensor:
    """Backpropagate ``loss`` and update, the gradients clipped to ``max_norm``; with fp16, through the scaler,
    which skips steps whose gradients overflowed. Returns the gradients' norm before clipping."""
    scaler.scale(loss).backward()
    if not scaler.is_enabled():
        return clip_and_step(optimizer, max_norm)
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_norm)
    scaler.step(optimizer)
    scaler.update()
    return norm


def clip_and_step(optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_(max_norm)`` then ``optimizer.step()``; returns the gradients' norm before clipping. A fused
    optimizer takes the clipping factor as its ``grad_scale`` (which it divides every gradient by as it reads it, as
    GradScaler's unscaling does), so the gradients are not rewritten first: one pass over every gradient less a
    step."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not optimizer.defaults.get("fused") or not params:
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
        return norm
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0)  # clip_grad_norm_'s factor, inverted
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale
    return norm


def learning_rate(config: TrainConfig, progress: Progress, base: float | None = None) -> float:
    """Linear warm-up to the ``base`` lr (default: ``config.lr``), then scaled down on validation plateaus, never
    below ``min_lr``."""
    warmup = min(1.0, (progress.step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    return max(config.min_lr, (base or config.lr) * warmup * progress.lr_scale)

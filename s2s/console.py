"""Terminal presentation of training: a rich progress bar and one line per validation."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from s2s.train import Events


class RichEvents(Events):
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            transient=False,
        )
        self.task = None
        self.scores: tuple[str, ...] = ()
        self.working: Progress | None = None  # the bar of a preparation step, while one runs

    def start(self, info: dict) -> None:
        self.console.print(
            f"model: {info['parameters']:,} parameters on {info['device']} ({info['precision']}); "
            f"{info['train_examples']:,} training examples"
        )
        self.scores = info["scores"]
        self.progress.start()
        self.task = self.progress.add_task("train", total=info["max_steps"], completed=info["resumed_at"], stats="")

    def step(self, record: dict) -> None:
        perplexity = f"ppl {record['ppl']:.1f}  " if "ppl" in record else ""  # not in a final stage's own objective
        stats = (
            f"loss {record['loss']:.3f}  {perplexity}lr {record['lr']:.2e}  "
            f"{record['tokens_per_s']:,} tok/s  epoch {record['epoch']}"
        )
        if record.get("grad_norm") is not None:
            stats += f"  |grad| {record['grad_norm']:.3g}, {record['clipped']:.0%} clipped"

        self.progress.update(self.task, completed=record["step"], stats=stats)

    def validated(self, record: dict) -> None:
        mark = "*" if record["improved"] else " "
        scores = "  ".join(f"{name} {record[name]:.2f}" for name in self.scores)
        self.progress.console.print(
            f"{mark} step {record['step']:>6}  valid loss {record['loss']:.3f}  {scores}  ({record['seconds']:.0f} s)"
        )

    def message(self, text: str) -> None:
        self.console.print(text)

    def work(self, what: str, done: int, total: int) -> None:
        if self.working is None:
            if done >= total:
                return  # nothing to do: no bar
            self.working = Progress(
                TextColumn(f"[bold]{what}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.working.start()
            self.working.add_task(what, total=total)
        self.working.update(self.working.task_ids[0], completed=done, total=total)
        if done >= total:
            self.working.stop()
            self.working = None

    def end(self, summary: dict) -> None:
        self.progress.stop()
        if summary["stop"] in ("SIGINT", "SIGTERM"):
            self.console.print(
                f"{summary['stop']}: checkpoint saved at step {summary['steps']:,}; "
                f"continue with: s2s train --resume {summary['run_dir']}"
            )
            return
        best = summary["best"]
        self.console.print(
            f"stopped ({summary['stop']}) after {summary['steps']:,} steps, {summary['seconds']:.0f} s; "
            f"best valid {summary['keep_best_by']}: {'none' if best is None else f'{best:.4g}'}"
        )

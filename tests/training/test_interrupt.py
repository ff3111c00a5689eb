"""Training stops cleanly: Ctrl-C saves a resumable checkpoint, a resume logs every step once, and a missing
warm-start file is one line naming the run that writes it."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from training import train as T
from training.data import AugmentConfig


def _config(coco_train, out: Path, **kw) -> T.TrainConfig:
    images, ann = coco_train
    cfg = T.TrainConfig(
        model={"backbone": {"embed_dim": 32, "depth": 2, "num_heads": 2, "ffn_dim": 64},
               "deconv_channels": [16, 16], "branch_channels": 16},
        data=T.DataConfig(train_ann=str(ann), train_images=str(images), val_ann="", max_people=12, num_workers=0),
        augment=AugmentConfig(crop_prob=0.5, color_jitter=0.2), optim=T.OptimConfig(lr=1e-3, warmup_iters=2),
        epochs=3, batch_size=4, eval_interval=0, checkpoint_interval=0, log_interval=1, out_dir=str(out),
        device="cpu", seed=0, amp="off", threads=1)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_ctrl_c_saves_a_resumable_checkpoint_and_resume_logs_each_step_once(coco_train, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = T.Trainer(_config(coco_train, out, max_steps=5), quiet=True)
    step = T.Trainer.train_step

    def interrupted_at_2(self, batch):
        rec = step(self, batch)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # as a Ctrl-C in the terminal
        return rec

    monkeypatch.setattr(T.Trainer, "train_step", interrupted_at_2)
    handler = signal.getsignal(signal.SIGINT)
    trainer.fit()
    assert trainer.interrupted and trainer.step == 2 and signal.getsignal(signal.SIGINT) is handler
    assert _steps(out) == [1, 2]
    monkeypatch.setattr(T.Trainer, "train_step", step)
    resumed = T.Trainer(_config(coco_train, out, max_steps=5), resume=out / "last.pt", quiet=True)
    assert resumed.step == 2
    resumed.fit()
    assert not resumed.interrupted and resumed.step == 5 and _steps(out) == [1, 2, 3, 4, 5]


def test_resuming_an_older_checkpoint_does_not_repeat_logged_steps(coco_train, tmp_path):
    out = tmp_path / "run"
    T.Trainer(_config(coco_train, out, max_steps=2), quiet=True).fit()
    shutil.copy(out / "last.pt", tmp_path / "step2.pt")
    T.Trainer(_config(coco_train, out, max_steps=4), resume=out / "last.pt", quiet=True).fit()
    assert _steps(out) == [1, 2, 3, 4]
    # back to the step-2 checkpoint: steps 3-4 are trained (and logged) again, once
    T.Trainer(_config(coco_train, out, max_steps=4), resume=tmp_path / "step2.pt", quiet=True).fit()
    assert _steps(out) == [1, 2, 3, 4]


def _cli_args(config: Path, **kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    T.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", "--config", str(config), *[a for k, v in kw.items()
                                                                 for a in (f"--{k.replace('_', '-')}", str(v))]])


def test_cli_ctrl_c_is_one_line_and_exit_130(coco_train, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(T, "load_config", lambda path: _config(coco_train, tmp_path / "run", max_steps=4))
    step = T.Trainer.train_step

    def interrupted(self, batch):
        rec = step(self, batch)
        os.kill(os.getpid(), signal.SIGINT)
        return rec

    monkeypatch.setattr(T.Trainer, "train_step", interrupted)
    assert T._run(_cli_args(tmp_path / "c.toml")) == 130
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("interrupted at step 1: saved ") and "--resume" in out[-1]
    assert "Traceback" not in capsys.readouterr().err


def test_missing_init_checkpoint_is_one_line_naming_the_run_that_writes_it(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.toml"
    src = (Path(T.__file__).resolve().parents[1] / "configs" / "tiny_test.toml").read_text()
    cfg.write_text(src.replace('seed = 0', f'seed = 0\ninit_from = "{tmp_path / "nowhere" / "last.pt"}"', 1))
    assert T._run(_cli_args(cfg, out=tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: init_from checkpoint") and "does not exist" in err[0]
    # a warm start that an earlier stage writes: the message names that stage's config
    monkeypatch.chdir(tmp_path)  # no runs/ here
    message = T._missing_init_message(Path("runs/demo_pretrain_more/last.pt"))
    assert "python -m training --config configs/demo_pretrain_more.toml` first" in message
    with pytest.raises(T.CheckpointError, match="does not exist"):
        T.init_weights(T.build_model("probpose", _config(("", ""), tmp_path).model), "runs/x/last.pt")

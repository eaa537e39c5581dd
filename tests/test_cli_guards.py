"""`needle train` refuses nonsense before doing any work, and never loses a finished run.

Bad arguments: one line `needle: error: ...` naming the flag and the value, exit status 2,
and no recipe is built (the build functions are replaced by ones that fail the test).
Finished work: checkpoints are not overwritten by accident, survive Ctrl-C and a writer
killed mid-write, carry a checksum that catches flipped bytes; the summary is out before
the plot is drawn; a non-finite loss stops the run at once with the summary so far.
"""
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import needle as ndl
from needle import serialization
from needle.train import cli, recipes

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    rc = cli.main(["train", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def no_build(monkeypatch):
    """Every recipe's build fails the test: the run must be refused before any work."""
    def refuse(args):
        raise AssertionError("a recipe was built although the arguments are invalid")

    for name, recipe in list(recipes.RECIPES.items()):
        monkeypatch.setitem(recipes.RECIPES, name, dataclasses.replace(recipe, build=refuse))


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("needle: error: "), err
    assert "Traceback" not in err
    return lines[0]


def flip_tensor_byte(path: Path, where: float = 0.5) -> None:
    """Flip the bits of one byte inside the tensor data of a safetensors file (not its header)."""
    raw = bytearray(path.read_bytes())
    header = int.from_bytes(raw[:8], "little")
    start = 8 + header
    i = start + int((len(raw) - start) * where)
    raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


# ============================================================================ bad arguments

BAD_VALUES = [
    (["--epochs", "0"], "--epochs", "0"),
    (["--epochs", "-3"], "--epochs", "-3"),
    (["--epochs", "two"], "--epochs", "two"),
    (["--batch-size", "0"], "--batch-size", "0"),
    (["--limit", "0"], "--limit", "0"),
    (["lm", "--seq-len", "0"], "--seq-len", "0"),
    (["--hidden", "0"], "--hidden", "0"),
    (["lm", "--layers", "0"], "--layers", "0"),
    (["--lr", "0"], "--lr", "0"),
    (["--lr", "-0.1"], "--lr", "-0.1"),
    (["--lr", "nan"], "--lr", "nan"),
    (["--lr", "inf"], "--lr", "inf"),
    (["--momentum", "1"], "--momentum", "1"),
    (["--momentum", "-0.5"], "--momentum", "-0.5"),
    (["--dropout", "1.0"], "--dropout", "1.0"),
    (["--dropout", "-0.1"], "--dropout", "-0.1"),
    (["--weight-decay", "-1"], "--weight-decay", "-1"),
    (["--lr-decay", "0"], "--lr-decay", "0"),
    (["--seed", "-1"], "--seed", "-1"),
    (["lm", "--clip", "0"], "--clip", "0"),
    (["--device", "gpu"], "--device", "gpu"),
    (["--optimizer", "rmsprop"], "--optimizer", "rmsprop"),
]


@pytest.mark.parametrize("argv, flag, value", BAD_VALUES, ids=[" ".join(c[0]) for c in BAD_VALUES])
def test_bad_value_is_one_line_naming_flag_and_value(capsys, no_build, argv, flag, value):
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    line = one_error_line(err)
    assert flag in line and value in line
    assert out == ""


def test_bad_value_in_a_subprocess_exits_2_without_usage_text():
    proc = subprocess.run([sys.executable, "-m", "needle", "train", "--epochs", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "needle: error: argument --epochs: must be at least 1, got 0\n"
    assert proc.stdout == ""


def test_values_at_the_edges_are_accepted(capsys, tmp_path):
    """The closed ends of the ranges are valid: momentum 0, dropout 0, weight decay 0, seed 0."""
    rc, _, err = run(capsys, "--epochs", 1, "--samples", 40, "--momentum", 0, "--weight-decay", 0, "--seed", 0,
                     "--optimizer", "sgd", "--lr", "1e-3", "--no-progress")
    assert rc == 0, err


def test_device_that_is_not_available(capsys, no_build):
    if ndl.cuda().enabled():
        pytest.skip("a CUDA device is available here")
    rc, _, err = run(capsys, "--device", "cuda")
    assert rc == 2
    line = one_error_line(err)
    assert "--device cuda" in line and "not available" in line


@pytest.mark.parametrize("recipe, flag", [("mlp", "--data"), ("cnn", "--data"), ("resnet9", "--data"),
                                          ("lm", "--text")])
def test_missing_data_path_is_refused_before_loading(capsys, tmp_path, no_build, recipe, flag):
    missing = tmp_path / "nowhere"
    rc, out, err = run(capsys, recipe, flag, missing)
    assert rc == 2
    line = one_error_line(err)
    assert f"{flag} {missing}" in line and recipe in line
    assert out == ""


def test_missing_default_data_names_the_recipe_and_the_fix(capsys, tmp_path, monkeypatch, no_build):
    missing = str(tmp_path / "fashion-mnist")
    monkeypatch.setitem(recipes.RECIPES, "mlp", dataclasses.replace(recipes.RECIPES["mlp"], default_data=missing))
    rc, _, err = run(capsys, "mlp")
    line = one_error_line(err)
    assert rc == 2 and missing in line and "mlp" in line
    assert "apt-get install -y dataset-fashion-mnist" in line and "--data" in line


def test_data_flag_of_another_recipe_is_refused(capsys, tmp_path, no_build):
    rc, _, err = run(capsys, "toy", "--text", tmp_path)
    line = one_error_line(err)
    assert rc == 2 and "--text" in line and "lm" in line


def test_text_must_be_a_file_and_data_a_folder(capsys, tmp_path, no_build):
    rc, _, err = run(capsys, "lm", "--text", tmp_path)
    assert rc == 2 and "not a file" in one_error_line(err)
    f = tmp_path / "x.txt"
    f.write_text("abc")
    rc, _, err = run(capsys, "mlp", "--data", f)
    assert rc == 2 and "not a folder" in one_error_line(err)


def test_help_has_a_line_for_every_flag_and_shows_each_default_once():
    import argparse

    parser = cli.build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    for action in train._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help"
    text = train.format_help()
    assert "(default: None)" not in text and "default: False" not in text
    # one entry per option: the help of each option mentions "default" at most once
    entries = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-"):
            current = stripped.split()[0].rstrip(",")
            entries[current] = stripped
        elif current and line.startswith(" " * 10):
            entries[current] += " " + stripped
    for entry in entries.values():
        assert entry.count("default") <= 1, entry
    # the recipe-dependent defaults come from the recipes' declarations
    assert f"mlp {recipes.RECIPES['mlp'].defaults['epochs']}" in entries["--epochs"]
    for model, d in recipes.RECIPES["lm"].model_defaults.items():
        assert f"{model} {d['lr']}" in entries["--lr"]


@pytest.mark.parametrize("argv, flag", [
    (["--checkpoint", ""], "--checkpoint"),
    (["--summary", ""], "--summary"),
    (["--plot", ""], "--plot"),
    (["mlp", "--data", ""], "--data"),
    (["lm", "--text", ""], "--text"),
], ids=["checkpoint", "summary", "plot", "data", "text"])
def test_empty_path_is_refused_naming_the_flag(capsys, no_build, argv, flag):
    rc, out, err = run(capsys, *argv, "--no-progress")
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert flag in line and "empty" in line


def _valid_values(tmp_path):
    """A value each recipe-specific flag accepts (so only the recipe check can refuse it)."""
    text = tmp_path / "t.txt"
    text.write_text("abc " * 100)
    return {"--dataset": "xor", "--samples": "40", "--classes": "2", "--hidden": "8", "--blocks": "2",
            "--dropout": "0.2", "--data": str(tmp_path), "--text": str(text), "--level": "word", "--model": "rnn",
            "--embedding": "8", "--layers": "2", "--seq-len": "8", "--clip": "1", "--sample": "0", "--limit": "10",
            "--block-size": "8", "--n-layer": "1", "--n-head": "2", "--n-embd": "8", "--iters": "2", "--min-lr": "0",
            "--warmup-iters": "1", "--lr-decay-iters": "2", "--beta2": "0.9", "--grad-clip": "1",
            "--eval-interval": "1", "--eval-iters": "1", "--bias": None}  # None: a switch without a value


def test_every_recipe_specific_flag_is_refused_by_a_recipe_that_does_not_read_it(capsys, tmp_path, no_build):
    values = _valid_values(tmp_path)
    specific = frozenset().union(*(r.flags for r in recipes.RECIPES.values()))
    assert set(values) == specific  # a new recipe-specific flag needs a value here
    checked = 0
    for flag in sorted(specific):
        readers = [r.name for r in recipes.RECIPES.values() if flag in r.flags]
        for name, recipe in recipes.RECIPES.items():
            if flag in recipe.flags:
                continue
            given = [flag] if values[flag] is None else [flag, values[flag]]
            rc, out, err = run(capsys, name, *given, "--no-progress")
            assert rc == 2 and out == "", (name, flag, err)
            line = one_error_line(err)
            assert f"{flag} is only read by the {', '.join(readers)} recipe(s), not by {name}" in line, line
            checked += 1
    assert checked >= 30


@pytest.mark.parametrize("argv, flag", [
    (["toy", "--model", "lstm"], "--model"),  # the default value, but given: still refused
    (["lm", "--dataset", "xor"], "--dataset"),
    (["toy", "--limit", "100"], "--limit"),
    (["cnn", "--hidden", "32"], "--hidden"),
    (["resnet9", "--blocks", "2"], "--blocks"),
])
def test_flag_of_another_recipe_is_refused_as_given_on_the_command_line(capsys, no_build, argv, flag):
    rc, _, err = run(capsys, *argv)
    line = one_error_line(err)
    assert rc == 2 and line.startswith(f"needle: error: {flag} is only read by") and argv[0] in line


def test_defaults_of_other_recipes_flags_are_not_refused(capsys):
    """Only flags the user passed are checked: the toy recipe runs with lm's --model default in args."""
    rc, _, err = run(capsys, "toy", "--epochs", 1, "--samples", 40, "--hidden", 8, "--no-progress")
    assert rc == 0, err


def test_lm_text_that_is_not_utf8_names_the_flag_and_the_file(capsys, tmp_path):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"some text\n" * 50 + bytes([0xEF, 0xFF, 0x00, 0xC3]) * 10)
    rc, out, err = run(capsys, "lm", "--text", binary, "--no-progress")
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert f"--text {binary}" in line and "not UTF-8 text" in line


def test_lm_limit_too_small_names_limit_and_batch_size(capsys):
    rc, out, err = run(capsys, "lm", "--limit", 10, "--no-progress")
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert "--limit 10" in line and "--batch-size 32" in line


# ============================================================================ outputs checked first

def test_plot_without_matplotlib_is_refused_before_training(capsys, tmp_path, monkeypatch, no_build):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    rc, _, err = run(capsys, "--plot", tmp_path / "c.png")
    line = one_error_line(err)
    assert rc == 2 and "--plot" in line and 'pip install -e ".[plot]"' in line


@pytest.mark.parametrize("flag", ["--plot", "--summary"])
def test_output_whose_folder_cannot_exist_is_refused(capsys, tmp_path, no_build, flag):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "sub" / "out.png"  # its folder would have to be inside a regular file
    rc, _, err = run(capsys, flag, target)
    line = one_error_line(err)
    assert rc == 2 and f"{flag} {target}" in line


@pytest.mark.parametrize("flag", ["--plot", "--summary"])
def test_output_that_is_a_folder_is_refused(capsys, tmp_path, no_build, flag):
    rc, _, err = run(capsys, flag, tmp_path)
    assert rc == 2 and "is a folder" in one_error_line(err)


@pytest.mark.parametrize("flag", ["--plot", "--summary"])
def test_output_folder_is_created(capsys, tmp_path, flag):
    target = tmp_path / "new" / "deeper" / ("c.png" if flag == "--plot" else "s.json")
    rc, _, err = run(capsys, "--epochs", 1, "--samples", 40, "--no-progress", flag, target)
    assert rc == 0, err
    assert target.exists()


UNWRITABLE = [p for p in ("/proc", "/sys") if os.path.isdir(p)]


@pytest.mark.skipif(not UNWRITABLE, reason="no /proc or /sys here")
@pytest.mark.parametrize("flag, name", [("--summary", "s.json"), ("--plot", "c.png"), ("--checkpoint", None)])
@pytest.mark.parametrize("folder", UNWRITABLE)
def test_output_folder_where_no_file_can_be_made_is_refused_before_training(capsys, no_build, flag, name, folder):
    """os.access says yes to root anywhere and to anyone for /proc and /sys: a file is really made there."""
    target = folder if name is None else os.path.join(folder, name)
    rc, out, err = run(capsys, flag, target, "--no-progress")
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert f"{flag} {target}" in line and "cannot write" in line
    assert ".needle-probe" not in line


def test_the_writability_probe_leaves_nothing_behind(capsys, tmp_path):
    rc, _, err = run(capsys, "--epochs", 1, "--samples", 40, "--no-progress", "--summary", tmp_path / "s.json",
                     "--checkpoint", tmp_path / "ck")
    assert rc == 0, err
    assert sorted(os.listdir(tmp_path)) == ["ck", "s.json"]
    assert os.listdir(tmp_path / "ck") == ["last.safetensors"]


def test_summary_that_cannot_be_written_after_training_names_the_flag_and_the_file(capsys, tmp_path, monkeypatch):
    """The folder goes away during training: the summary is still printed, the line names --summary and the file."""
    import shutil

    folder = tmp_path / "out"
    target = folder / "s.json"
    real = recipes.RECIPES["toy"]

    def build_then_remove(args):
        task = real.build(args)
        shutil.rmtree(folder)
        return task

    monkeypatch.setitem(recipes.RECIPES, "toy", dataclasses.replace(real, build=build_then_remove))
    rc, out, err = run(capsys, "--epochs", 1, "--samples", 40, "--no-progress", "--summary", target)
    assert rc == 1
    line = one_error_line(err)
    assert f"--summary {target}" in line and ".tmp-" not in line
    assert json.loads(out.strip().splitlines()[-1])["epochs"] == 1


def test_checkpoint_that_cannot_be_written_during_training_names_the_flag_and_the_file(capsys, tmp_path,
                                                                                       monkeypatch):
    from needle.train import loop

    def full_disk(path, *args, **kwargs):
        raise serialization.WriteError(28, "No space left on device", path)

    monkeypatch.setattr(loop, "save_checkpoint", full_disk)
    ckpt = tmp_path / "ck"
    rc, out, err = run(capsys, "--epochs", 2, "--samples", 40, "--no-progress", "--checkpoint", ckpt)
    assert rc == 1
    line = one_error_line(err)
    assert f"--checkpoint {ckpt}" in line and str(ckpt / "last.safetensors") in line and "No space left" in line
    assert "epoch 1" in line
    assert json.loads(out.strip().splitlines()[-1])["epochs"] == 1


def test_atomic_write_failure_names_the_target_not_the_temporary(tmp_path):
    target = tmp_path / "gone" / "x.bin"
    with pytest.raises(serialization.WriteError) as caught:
        serialization.atomic_write_bytes(str(target), b"x")
    assert caught.value.filename == str(target) and isinstance(caught.value, OSError)


def test_checkpoint_that_is_a_regular_file_is_refused(capsys, tmp_path, no_build):
    f = tmp_path / "ckpt"
    f.write_bytes(b"keep me")
    rc, _, err = run(capsys, "--checkpoint", f)
    line = one_error_line(err)
    assert rc == 2 and f"--checkpoint {f}" in line and "file" in line
    assert f.read_bytes() == b"keep me"


def test_existing_checkpoint_is_never_silently_overwritten(capsys, tmp_path):
    ckpt = tmp_path / "ckpt"
    rc, _, _ = run(capsys, "--epochs", 1, "--samples", 40, "--no-progress", "--checkpoint", ckpt)
    assert rc == 0
    before = (ckpt / "last.safetensors").read_bytes()
    rc, out, err = run(capsys, "--epochs", 1, "--samples", 40, "--no-progress", "--checkpoint", ckpt, "--seed", 9)
    line = one_error_line(err)
    assert rc == 2 and "--resume" in line and "--overwrite" in line and str(ckpt) in line
    assert out == "" and (ckpt / "last.safetensors").read_bytes() == before
    # --overwrite starts again from scratch: a new run (other seed, other weights)
    rc, _, err = run(capsys, "--epochs", 1, "--samples", 40, "--no-progress", "--checkpoint", ckpt, "--seed", 9,
                     "--overwrite")
    assert rc == 0, err
    from safetensors.numpy import load

    after = load_file(str(ckpt / "last.safetensors"))
    assert not np.array_equal(after["model/0.weight"], load(before)["model/0.weight"])


def test_resume_and_overwrite_together_are_refused(capsys, tmp_path, no_build):
    rc, _, err = run(capsys, "--checkpoint", tmp_path, "--resume", "--overwrite")
    line = one_error_line(err)
    assert rc == 2 and "--resume" in line and "--overwrite" in line


def test_resume_without_a_checkpoint_file_is_refused_before_loading(capsys, tmp_path, no_build):
    rc, _, err = run(capsys, "mlp", "--data", tmp_path, "--checkpoint", tmp_path / "empty", "--resume")
    line = one_error_line(err)
    assert rc == 2 and "--resume" in line and str(tmp_path / "empty") in line


def test_resume_with_fewer_epochs_than_the_checkpoint_has_is_refused(capsys, tmp_path):
    ckpt = tmp_path / "ckpt"
    rc, _, err = run(capsys, "--epochs", 3, "--samples", 40, "--no-progress", "--checkpoint", ckpt)
    assert rc == 0, err
    before = (ckpt / "last.safetensors").read_bytes()
    rc, out, err = run(capsys, "--epochs", 2, "--samples", 40, "--no-progress", "--checkpoint", ckpt, "--resume")
    assert rc == 2 and out == ""
    line = one_error_line(err)
    assert "--epochs 2" in line and "already has 3 epochs" in line and str(ckpt) in line
    assert (ckpt / "last.safetensors").read_bytes() == before


def test_resume_of_a_finished_run_says_there_is_nothing_left_to_train(capsys, tmp_path):
    ckpt = tmp_path / "ckpt"
    rc, _, err = run(capsys, "--epochs", 1, "--samples", 40, "--no-progress", "--checkpoint", ckpt)
    assert rc == 0, err
    rc, out, err = run(capsys, "--epochs", 1, "--samples", 40, "--no-progress", "--checkpoint", ckpt, "--resume")
    assert rc == 0, err
    assert "nothing left to train: the checkpoint already has 1 epochs and --epochs is 1" in out


# ============================================================================ finished work is kept

def test_summary_is_out_before_a_failing_plot(capsys, tmp_path, monkeypatch):
    import needle.viz

    def broken(*args, **kwargs):
        raise RuntimeError("the plotting library fell over")

    monkeypatch.setattr(needle.viz, "plot_history", broken)
    summary = tmp_path / "s.json"
    rc, out, err = run(capsys, "--epochs", 2, "--samples", 40, "--no-progress", "--summary", summary,
                       "--plot", tmp_path / "c.png")
    assert rc == 1
    line = one_error_line(err)
    assert "--plot" in line and "fell over" in line
    printed = json.loads(out.strip().splitlines()[-1])
    written = json.loads(summary.read_text())
    assert printed["epochs"] == written["epochs"] == 2 and len(written["history"]) == 2
    assert not (tmp_path / "c.png").exists()


def test_non_finite_loss_stops_at_once_with_the_summary_so_far(capsys, tmp_path):
    summary = tmp_path / "s.json"
    rc, out, err = run(capsys, "--epochs", 5, "--optimizer", "sgd", "--lr", "1e30", "--no-progress",
                       "--summary", summary)
    assert rc == 1
    line = one_error_line(err)
    assert "epoch 1" in line and "step" in line and "--lr" in line
    step = int(line.split("step ")[1].split(";")[0])
    assert 1 <= step <= 12  # 1200 samples in batches of 100: within the first epoch
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["epochs"] == 0 and "stopped" in printed
    assert json.loads(summary.read_text())["history"] == []


def test_non_finite_loss_after_good_epochs_keeps_them(capsys, tmp_path, monkeypatch):
    """Epochs finished before the loss went bad stay in the summary and in the checkpoint."""
    from needle.train import epoch as training

    real_add = training.EpochStats.add
    calls = {"n": 0}

    def poisoned(self, correct, loss, n):
        calls["n"] += 1
        real_add(self, correct, loss, n)
        if calls["n"] == 15 * 2 + 3:  # epoch 3, step 3 (12 train + 3 test batches per epoch)
            self.loss_sum = float("nan")

    monkeypatch.setattr(training.EpochStats, "add", poisoned)
    ckpt = tmp_path / "ckpt"
    rc, out, err = run(capsys, "--epochs", 5, "--no-progress", "--checkpoint", ckpt, "--batch-size", 100,
                       "--samples", 1200)
    assert rc == 1
    line = one_error_line(err)
    assert "epoch 3, step" in line
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["epochs"] == 2
    assert json.loads(load_meta(ckpt / "last.safetensors"))["epoch"] == 2


def load_meta(path):
    return serialization.read_safetensors(str(path))[1]["needle_checkpoint"]


def test_ctrl_c_is_one_line_status_130_and_keeps_the_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "needle", "train", "--epochs", "100000", "--samples", "400", "--no-progress",
         "--checkpoint", str(ckpt)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = ckpt / "last.safetensors"
    deadline = time.time() + 120
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists(), "no checkpoint was written"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    # "during epoch N" with an older checkpoint, or "after epoch N" once N's checkpoint is written
    assert line.startswith("needle: interrupted during epoch ") or line.startswith("needle: interrupted after epoch ")
    current = int(line.split(" epoch ")[1].split(";")[0])
    last = int(line.split("last checkpoint: epoch ")[1].split(" at ")[0])
    assert line.endswith(f" at {path}")
    assert 1 <= last < current if "during" in line else last == current
    # the checkpoint on disk is that epoch's, whole and with a valid checksum
    meta = json.loads(load_meta(path))
    assert meta["epoch"] == last
    arrays = serialization.read_safetensors(str(path))[0]
    serialization.verify_digest(str(path), arrays, meta["sha256"])
    epoch_lines = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    assert len(epoch_lines) >= last


KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    from needle import serialization

    def stuck(fd):  # the data is written, the process dies before the rename
        print("writing", flush=True)
        time.sleep(600)

    serialization.os.fsync = stuck
    serialization.atomic_write_bytes(sys.argv[1], b"half-written" * 1000)
""")


def kill_a_writer_of(path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait(timeout=30)


def test_a_killed_writer_leaves_the_checkpoint_whole_and_its_temporary_is_removed(capsys, tmp_path):
    ckpt = tmp_path / "ckpt"
    rc, _, _ = run(capsys, "--epochs", 1, "--samples", 40, "--no-progress", "--checkpoint", ckpt)
    assert rc == 0
    path = ckpt / "last.safetensors"
    before = path.read_bytes()
    kill_a_writer_of(path)
    leftovers = [n for n in os.listdir(ckpt) if n.startswith(".tmp-")]
    assert len(leftovers) == 1 and leftovers[0].endswith("last.safetensors")
    assert path.read_bytes() == before  # the killed write never touched the checkpoint
    # the next successful write (resuming for a second epoch) removes the leftover
    rc, _, err = run(capsys, "--epochs", 2, "--samples", 40, "--no-progress", "--checkpoint", ckpt, "--resume")
    assert rc == 0, err
    assert sorted(os.listdir(ckpt)) == ["last.safetensors"]
    assert json.loads(load_meta(path))["epoch"] == 2


def test_temporaries_of_other_files_are_left_alone(tmp_path):
    other = tmp_path / ".tmp-abc123other.bin"
    other.write_bytes(b"x")
    kill_a_writer_of(tmp_path / "target.bin")
    serialization.atomic_write_bytes(str(tmp_path / "target.bin"), b"done")
    assert sorted(os.listdir(tmp_path)) == [".tmp-abc123other.bin", "target.bin"]


@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_flipped_bytes_in_a_checkpoint_are_caught_on_resume(capsys, tmp_path, where):
    ckpt = tmp_path / "ckpt"
    rc, _, _ = run(capsys, "--epochs", 1, "--samples", 40, "--no-progress", "--checkpoint", ckpt)
    assert rc == 0
    path = ckpt / "last.safetensors"
    flip_tensor_byte(path, where)
    rc, out, err = run(capsys, "--epochs", 2, "--samples", 40, "--no-progress", "--checkpoint", ckpt, "--resume")
    assert rc == 2
    line = one_error_line(err)
    assert str(path) in line and "corrupted" in line
    assert out == ""


def test_needle_load_verifies_the_checksum(tmp_path):
    path = tmp_path / "w.safetensors"
    ndl.save({"w": ndl.Tensor(np.arange(64, dtype=np.float32)), "b": ndl.Tensor(np.ones(3))}, str(path))
    loaded = ndl.load(str(path))
    np.testing.assert_array_equal(loaded["w"].numpy(), np.arange(64, dtype=np.float32))
    flip_tensor_byte(path, 0.3)
    with pytest.raises(ValueError, match="corrupted") as info:
        ndl.load(str(path))
    assert str(path) in str(info.value)


def test_files_from_other_tools_load_without_a_checksum(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"x": np.arange(5, dtype=np.float32)}, str(path))
    np.testing.assert_array_equal(ndl.load(str(path))["x"].numpy(), np.arange(5, dtype=np.float32))


def test_checksum_covers_names_dtypes_and_shapes():
    a = np.arange(6, dtype=np.float32)
    digest = serialization.tensor_digest({"a": a})
    assert digest != serialization.tensor_digest({"b": a})
    assert digest != serialization.tensor_digest({"a": a.reshape(2, 3)})
    assert digest != serialization.tensor_digest({"a": a.view(np.int32)})
    assert digest == serialization.tensor_digest({"a": a.copy()})
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_reserved_metadata_key_is_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        ndl.save({"x": ndl.Tensor([1.0])}, str(tmp_path / "x.st"), metadata={"needle_sha256": "0" * 64})


# ============================================================================ lm recipes out of the box

@pytest.mark.parametrize("model", ["lstm", "rnn", "transformer"])
def test_lm_recipe_defaults_train_each_model(capsys, model):
    """Each sequence model, with its recipe's default optimizer and learning rate, on the embedded
    text, ends a few hundred steps below the loss of a uniform guess (ln vocabulary)."""
    text = Path(recipes.TINY_SHAKESPEARE).read_text(encoding="utf-8")[:24000]
    vocab = len(set(text))
    rc, out, err = run(capsys, "lm", "--model", model, "--epochs", 1, "--batch-size", 8, "--seq-len", 8,
                       "--limit", 24000, "--hidden", 32, "--embedding", 32, "--sample", 0, "--no-progress")
    assert rc == 0, err
    header = out.splitlines()[0]
    steps = int(header.split(" batches per epoch")[0].rsplit(" ", 1)[1])
    assert steps >= 300
    final = json.loads(out.strip().splitlines()[-1])["final"]
    assert final["train_loss"] < math.log(vocab) - 1.0
    assert final["test_loss"] < math.log(vocab) - 1.0


def test_lm_default_text_does_not_depend_on_the_current_directory(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "needle", "train", "lm", "--epochs", "1", "--limit", "3000",
                           "--batch-size", "4", "--seq-len", "8", "--hidden", "8", "--embedding", "8",
                           "--sample", "5", "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tinyshakespeare.txt" in proc.stdout.splitlines()[0]

"""End to end through the command line, and every bad input: one clear line, a non-zero
exit, no traceback, and nothing written or overwritten."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY, assert_clean_error, make_text, run, snapshot


def test_prepare_train_sample(corpus, workdir):
    r = run("prepare", corpus)
    assert r.exit_code == 0, r.output
    assert "vocabulary:" in r.output and "splits: train 18,000  val 2,000" in r.output
    r = run("train", "data/corpus", *TINY)
    assert r.exit_code == 0, r.output
    assert "device: cpu" in r.output and "stopped at step 20 (max_steps)" in r.output
    assert "training characters" in r.output  # the sizing line
    run_dir = workdir / "runs" / "latest"
    assert {p.name for p in run_dir.iterdir()} >= {"config.toml", "metrics.jsonl", "best.pt", "last.pt"}
    r = run("sample", "-n", "50", "--seed", "1", "-p", "The ")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("The ") and len(r.stdout) == len("The ") + 50 + 1
    assert r.stderr.startswith("model: runs/")  # which model answered, apart from the text
    again = run("sample", run_dir, "-n", "50", "--seed", "1", "-p", "The ")
    assert again.stdout == r.stdout
    r = run("sample", run_dir / "last.pt", "-n", "20", "--num-samples", "3", "-t", "0")
    assert r.exit_code == 0 and r.stdout.count("--- sample") == 3


def test_train_raw_text_and_resume(corpus, workdir):
    r = run("train", corpus, *TINY, "--name", "r")
    assert r.exit_code == 0, r.output
    assert (workdir / "data" / "corpus" / "meta.json").exists()
    r = run("train", "--resume", "runs/r", "--max-steps", "30")
    assert r.exit_code == 0, r.output
    assert "stopped at step 30" in r.output
    r = run("train", "--resume", "runs/r", "--max-steps", "40", "--hidden-size", "64")
    assert_clean_error(r, "model.hidden_size is 32 in the checkpoint, 64 given")


def test_python_dash_m(corpus, workdir):
    out = subprocess.run([sys.executable, "-m", "charrnn", "prepare", str(corpus)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "vocabulary" in out.stdout


@pytest.mark.parametrize("command", [[], ["prepare"], ["train"], ["sample"]])
def test_help(command):
    r = run(*command, "--help")
    assert r.exit_code == 0 and "Usage:" in r.output


# ----------------------------------------------------------------------------------------


def test_bad_inputs_to_prepare(workdir):
    (workdir / "empty.txt").write_bytes(b"")
    (workdir / "newlines.txt").write_bytes(b"\n" * 100)
    (workdir / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (workdir / "adir").mkdir()
    before = snapshot(workdir)
    assert_clean_error(run("prepare", "missing.txt"), "corpus not found: missing.txt")
    assert_clean_error(run("prepare", "empty.txt"), "corpus is empty")
    assert_clean_error(run("prepare", "newlines.txt"), "only whitespace")
    assert_clean_error(run("prepare", "binary.bin"), "binary.bin looks like a binary file")
    (workdir / "latin.txt").write_bytes(b"caf\xe9 au lait\n" * 10)
    assert_clean_error(run("prepare", "latin.txt"), "offset 3", "--encoding")
    (workdir / "latin.txt").unlink()
    assert_clean_error(run("prepare", "adir"), "no files matching")
    assert_clean_error(run("prepare", "newlines.txt", "--val-frac", "1.5"), "--val-frac")
    assert snapshot(workdir) == before


@pytest.fixture
def trained(corpus, workdir):
    r = run("train", corpus, *TINY, "--name", "good")
    assert r.exit_code == 0, r.output
    return workdir / "runs" / "good"


TRAIN_CASES = [
    (["train", "missing.txt"], "corpus not found"),
    (["train", "adir"], "not a prepared dataset"),
    (["train", "corpus.txt", "--set", "model.hiden=3"], "unknown config key model.hiden"),
    (["train", "corpus.txt", "--set", "train.lr=fast"], "train.lr must be of type float"),
    (["train", "corpus.txt", "-c", "bad.toml"], "malformed TOML"),
    (["train", "corpus.txt", "--hidden-size", "0"], "model.hidden_size must be > 0"),
    (["train", "corpus.txt", "--batch-size", "-1"], "train.batch_size must be > 0"),
    (["train", "corpus.txt", "--lr", "0"], "train.lr must be > 0"),
    (["train", "corpus.txt", "--dropout", "1"], "model.dropout must be in [0, 1)"),
    (["train", "corpus.txt", "--val-frac", "0"], "--val-frac"),
    (["train", "corpus.txt", "--seq-len", "5000"], "corpus too short"),
    (["train", "corpus.txt", "--device", "cuda:0"] if not torch.cuda.is_available()
     else ["train", "corpus.txt", "--device", "cuda:99"], "--device cuda"),
    (["train", "--resume", "runs/nothing"], "not a run directory"),
    (["train", "odd.txt", "--init-from", "runs/good"], "pass --unk CHAR"),
    (["train", "corpus.txt", "--init-from", "runs/good", "--hidden-size", "64"],
     "leave out model.hidden_size"),
    (["train", "corpus.txt", "--init-from", "runs/nothing"], "not found"),
    (["train", "corpus.txt", "--unk", "?"], "--unk only applies with --init-from"),
]


@pytest.mark.parametrize("args, message", TRAIN_CASES, ids=[c[1] for c in TRAIN_CASES])
def test_bad_inputs_to_train(trained, workdir, args, message):
    (workdir / "adir").mkdir(exist_ok=True)
    (workdir / "bad.toml").write_text("[model\n")
    (workdir / "odd.txt").write_text(make_text(3000) + "Zebra€\n", encoding="utf-8")
    before = snapshot(workdir)
    assert_clean_error(run(*args), message)
    assert snapshot(workdir) == before


def test_fine_tuning_from_a_run(trained, workdir):
    from charrnn.core.checkpoint import load_checkpoint

    source = load_checkpoint(trained / "best.pt")
    (workdir / "new.txt").write_text(make_text(8000, seed=5) + "#\n", encoding="utf-8")
    r = run("train", "new.txt", *TINY, "--init-from", trained, "--unk", ".", "--name", "ft",
            "--max-steps", "4")
    assert r.exit_code == 0, r.output
    assert f"weights from {trained}" in r.output
    tuned = load_checkpoint(workdir / "runs" / "ft" / "last.pt")
    assert tuned["vocab"]["chars"] == source["vocab"]["chars"]
    assert f'init_from = "{trained}"' in (workdir / "runs" / "ft" / "config.toml").read_text()
    # The same alphabet through prepare: --vocab takes a run directory (or checkpoint).
    r = run("prepare", "new.txt", "-o", "data/new2", "--vocab", trained, "--unk", ".")
    assert r.exit_code == 0, r.output
    r = run("train", "data/new2", *TINY, "--init-from", trained / "best.pt", "--name", "ft2",
            "--max-steps", "2")
    assert r.exit_code == 0, r.output
    # A prepared directory with an alphabet of its own is refused, with the way out.
    run("prepare", "new.txt", "-o", "data/own")
    before = snapshot(workdir)
    assert_clean_error(run("train", "data/own", *TINY, "--init-from", trained),
                       "--vocab")
    assert snapshot(workdir) == before


SAMPLE_CASES = [
    (["sample", "runs/good", "--length", "-1"], "--length"),
    (["sample", "runs/good", "--temperature", "-0.5"], "--temperature"),
    (["sample", "runs/good", "--top-k", "-1"], "--top-k"),
    (["sample", "runs/good", "-t", "nan"], "--temperature"),
    (["sample", "runs/good", "-t", "1e-300"], "--temperature"),
    (["sample", "runs/good", "--stop", "\\x"], "--stop"),
    (["sample", "runs/good", "--stop", "€"], "can never be generated"),
    (["sample", "runs/good", "-p", "Zebra€"], "'Z', '€'"),
    (["sample", "runs/empty"], "has no checkpoint"),
    (["sample", "runs/nothing"], "not found"),
    (["sample", "cut.pt"], "not a readable checkpoint"),
    (["sample", "corpus.txt"], "not a readable checkpoint"),
    (["sample", "future.pt"], "newer charrnn"),
]


@pytest.mark.parametrize("args, message", SAMPLE_CASES, ids=[c[1] for c in SAMPLE_CASES])
def test_bad_inputs_to_sample(trained, workdir, args, message):
    (workdir / "runs" / "empty").mkdir()
    data = (trained / "last.pt").read_bytes()
    (workdir / "cut.pt").write_bytes(data[: len(data) // 3])
    torch.save({"kind": "charrnn", "format_version": 99}, workdir / "future.pt")
    before = snapshot(workdir)
    assert_clean_error(run(*args), message)
    assert snapshot(workdir) == before


def test_unwritable_output_directory(corpus, workdir):
    if os.geteuid() == 0:
        # root writes anywhere: use a path under a regular file instead
        (workdir / "file").write_text("x")
        target = "file/runs"
    else:
        (workdir / "ro").mkdir(mode=0o500)
        target = "ro/runs"
    r = run("train", corpus, *TINY, "--out", target)
    assert_clean_error(r, "cannot create run directory")
    r = run("prepare", corpus, "-o", target)
    assert_clean_error(r, "cannot write to output directory")


def test_prime_is_transliterated_like_the_training_text(corpus, workdir):
    (workdir / "fr.txt").write_text(make_text(8000).replace("e", "é"), encoding="utf-8")
    r = run("train", "fr.txt", "--unidecode", *TINY, "--name", "fr")
    assert r.exit_code == 0, r.output
    r = run("sample", "runs/fr", "-p", "quiét", "-n", "5")  # the model's own options apply
    assert r.exit_code == 0 and r.stdout.startswith("quiet")
    r = run("train", "corpus.txt", *TINY, "--name", "ascii")
    assert r.exit_code == 0, r.output
    assert_clean_error(run("sample", "runs/ascii", "-p", "quiét"), "'é'", "add --unidecode")
    r = run("sample", "runs/ascii", "-p", "quiét", "--unidecode", "-n", "5")
    assert r.exit_code == 0 and r.stdout.startswith("quiet")


def test_sample_stops_after_a_stop_string(trained, workdir):
    free = run("sample", trained, "-n", "400", "--seed", "3", "-p", "The ")
    assert free.exit_code == 0, free.output
    generated = free.stdout[len("The "):-1]
    assert "\n" in generated
    r = run("sample", trained, "-n", "400", "--seed", "3", "-p", "The ", "--stop", "\\n")
    assert r.exit_code == 0, r.output
    assert r.stdout == "The " + generated[:generated.index("\n") + 1] + "\n"

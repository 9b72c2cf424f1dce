"""charrnn plot, and the curves training keeps up to date."""

import json
import subprocess
import sys

import pytest
from conftest import TINY, assert_clean_error, run

from charrnn.training.plot import CurveRefresher, read_curves

matplotlib = pytest.importorskip("matplotlib")  # the test extra installs it

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def two_runs(corpus, workdir):
    for name in ("a", "b"):
        r = run("train", corpus, *TINY, "--name", name, "--lr", "0.01" if name == "a" else "0.002")
        assert r.exit_code == 0, r.output
    return workdir / "runs"


def image(path):
    from matplotlib import image as mpimg

    assert path.read_bytes()[:8] == PNG
    return mpimg.imread(path)


def test_plot_draws_several_runs_into_a_png(two_runs, workdir):
    r = run("plot", two_runs / "a", two_runs / "b", "--output", "both.png")
    assert r.exit_code == 0, r.output
    assert "2 run(s)" in r.output
    height, width, _ = image(workdir / "both.png").shape
    assert width > height > 100


def test_a_runs_directory_and_a_glob_name_each_run_once(two_runs, workdir):
    r = run("plot", two_runs / "a", two_runs / "b", two_runs / "latest", "--out", "glob.png")
    assert r.exit_code == 0 and "2 run(s)" in r.output
    r = run("plot", two_runs)  # its latest run, into ./curves.png
    assert r.exit_code == 0 and "1 run(s)" in r.output and (workdir / "curves.png").exists()


def test_training_keeps_curves_png_up_to_date(two_runs):
    curves = two_runs / "a" / "curves.png"
    image(curves)
    read, reader = read_curves(two_runs / "a")
    assert reader.damaged == reader.out_of_range == 0 and [s for s, _, _ in read["val"]] == [10, 20]
    assert all(b > 0 for _, _, b in read["train"])


def test_refreshes_cost_at_most_one_percent(two_runs):
    refresher = CurveRefresher(two_runs / "b")
    (two_runs / "b" / "curves.png").unlink()
    refresher()
    first = (two_runs / "b" / "curves.png").stat().st_mtime_ns
    refresher()  # at once: within 100x the time the first refresh took
    assert (two_runs / "b" / "curves.png").stat().st_mtime_ns == first


def test_the_curves_are_drawn_once_more_at_the_end_of_a_run(two_runs):
    refresher = CurveRefresher(two_runs / "b")
    refresher()
    first = (two_runs / "b" / "curves.png").stat().st_mtime_ns
    refresher.final()  # the throttle does not hold back the last picture of a run
    assert (two_runs / "b" / "curves.png").stat().st_mtime_ns > first
    # A run's own last refresh came after its last metrics record.
    run_dir = two_runs / "a"
    assert (run_dir / "curves.png").stat().st_mtime_ns >= \
        (run_dir / "metrics.jsonl").stat().st_mtime_ns


def test_bad_plot_inputs(two_runs, workdir):
    assert_clean_error(run("plot", "nowhere"), "not a run directory")
    (workdir / "empty").mkdir()
    assert_clean_error(run("plot", "empty"), "no metrics.jsonl")


def test_without_matplotlib_one_line_names_the_install(two_runs, workdir):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from charrnn.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, "plot", str(two_runs / "a")],
                          capture_output=True, text=True, cwd=workdir)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("Error: charrnn plot needs matplotlib: pip install -e '.[plot]' in "
                                    "charrnn's checkout, or pip install matplotlib")


# ----------------------------------------------------------------------------------------
# metrics.jsonl: one record type, written and read


def test_a_record_writes_the_lines_runs_always_wrote_and_reads_them_back(tmp_path):
    from charrnn.training.metrics_file import MetricsLog, MetricsReader, MetricsRecord

    train = MetricsRecord(step=20, epoch=0.5, train_loss=2.1, lr=0.003, chars_per_s=1234.5,
                          elapsed=3.25, skipped=0)
    val = MetricsRecord(step=20, val_loss=2.0, elapsed=3.5)
    assert json.loads(train.to_json()) == {"step": 20, "epoch": 0.5, "train_loss": 2.1,
                                           "lr": 0.003, "chars_per_s": 1234.5,
                                           "elapsed": 3.25, "skipped": 0}
    assert list(json.loads(val.to_json())) == ["step", "val_loss", "val_bpc", "elapsed"]
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        log.write(train)
        log.write(val)
    assert list(MetricsReader(path)) == [train, val]


def test_lines_of_older_and_edited_files_still_read(tmp_path):
    from charrnn.training.metrics_file import MetricsReader, MetricsRecord

    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join([
        '{"step": 10, "train_loss": 2.5}',  # no elapsed: an early format
        '{"step": 10.0, "val_loss": 2.4, "val_bpc": 3.46, "note": "kept by hand"}',
        '{"step": 11, "train_loss": "2.3", "elapsed": true}',  # not numbers: left out
        '{"step": 12, "train_loss": Infinity}',  # damaged
        '{"train_loss": 2.0}',  # no step: damaged
    ]) + "\n")
    reader = MetricsReader(path)
    assert list(reader) == [MetricsRecord(step=10, train_loss=2.5),
                            MetricsRecord(step=10, val_loss=2.4),
                            MetricsRecord(step=11)]
    assert reader.damaged == 2

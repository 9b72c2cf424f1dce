"""`charrnn neurons`: the features against hand-labelled strings, the step-by-step cell
against PyTorch's fused modules, the streaming correlations against numpy's corrcoef, and
the command end to end on a tiny random model."""

import json
import sys

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, make_text, random_model_file, run

from charrnn.core.model import CharRNN
from charrnn.corpus.vocab import Vocab
from charrnn.neurons.features import feature_table
from charrnn.neurons.record import Cells
from charrnn.neurons.scan import scan_cells
from charrnn.neurons.stats import Correlations, Saturation

B, T, V, H = 3, 11, 7, 6


def labels(text, name, **regexes):
    """A feature as a string of digits, one per character ('+' for 10 or more)."""
    values = feature_table(text, regexes)[name]
    return "".join(str(int(v)) if v < 10 else "+" for v in values)


# ---- features: state after reading each character -----------------------------------

def test_quotes_open_on_the_quote_and_close_after_it():
    assert labels('a "bc" d', "quote") == "00111000"
    assert labels("say “hi” x", "quote") == "0000111000"
    assert labels(r'"a\"b" c', "quote") == "11111000"  # an escaped quote does not close
    assert labels('"open\n\nnext', "quote") == "11111100000"  # a blank line ends it


def test_brackets_and_depth():
    text = "f(a[b]) {x}) y"
    assert labels(text, "depth") == "01122100110000"
    assert labels(text, "bracket") == "01111100110000"  # a stray ")" stays at depth 0


def test_comments_c_and_python():
    assert labels("a /* b */ c", "comment") == "00011111000"
    assert labels("x // y\nz", "comment") == "00011100"
    assert labels("x # (y\nz(", "comment") == "001111000"
    assert labels("/*/ a */", "comment") == "01111110"  # "/*/" does not close
    # C's preprocessor lines are code, with or without a space after the "#".
    c_lines = "#define A\n# define B\n#  if C\n#x ## y"
    assert labels(c_lines, "comment") == "0" * len(c_lines)
    assert labels("#!sh\n#\n", "comment") == "1111010"
    # Quotes and brackets inside a comment do not count, nor comment marks in a string.
    assert labels('/* "( */', "quote") == "00000000"
    assert labels('/* "( */', "depth") == "00000000"
    assert labels('"#" x', "comment") == "00000"


def test_column_word_start_and_capitals():
    text = "Ab c\nDe-f"
    assert labels(text, "column") == "123401234"
    assert labels(text, "word_start") == "100101001"
    assert labels(text, "capital") == "100001000"


def test_a_user_regex_marks_each_match():
    text = "a <b> c <d e>"
    assert labels(text, "tag", tag="<[^>]*>") == "0011100011111"


@pytest.mark.parametrize("spec, fragment", [
    ("tag=<[^>", "bad regular expression"),
    ("tag=x*", "matches the empty string"),
    ("tag", "write NAME=REGEX"),
    ("quote=x", "a built-in feature has that name"),
    ("my tag=x", "the name must be a word"),
])
def test_bad_features_are_one_line_errors(model_file, text_file, spec, fragment):
    assert_clean_error(run("neurons", model_file, text_file, "--feature", spec), fragment)


# ---- the step-by-step cell against the fused modules ----------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_step_by_step_matches_the_fused_module(cell):
    torch.manual_seed(0)
    model = CharRNN(V, H, 2, cell).eval()
    idx = torch.randint(0, V, (B, T))
    with torch.no_grad():
        out, hidden = model.rnn(model.encode(idx))  # out (B, T, H): the top layer's h
    cells = Cells(model)
    first, _, carried = cells.run(idx[:, :4])
    rest, gates, carried = cells.run(idx[:, 4:], carried)  # the state carries over
    values = torch.cat([first, rest], dim=1)  # (B, T, C)
    top_h = cells.index(2, "h", 0)
    torch.testing.assert_close(values[:, :, top_h:top_h + H], out, atol=1e-5, rtol=1e-5)
    h_n = hidden[0] if cell == "lstm" else hidden
    for layer in (1, 2):
        h = cells.index(layer, "h", 0)
        torch.testing.assert_close(values[:, -1, h:h + H], h_n[layer - 1], atol=1e-5, rtol=1e-5)
        if cell == "lstm":
            c = cells.index(layer, "c", 0)
            torch.testing.assert_close(values[:, -1, c:c + H], hidden[1][layer - 1],
                                       atol=1e-5, rtol=1e-5)
    assert cells.count == 2 * (2 if cell == "lstm" else 1) * H
    names = {"lstm": {"input", "forget", "output"}, "gru": {"reset", "update"}, "rnn": set()}
    assert {g for _, g in gates} == names[cell]
    assert all(((g >= 0) & (g <= 1)).all() for g in gates.values())


# ---- streaming statistics ---------------------------------------------------------------

def test_merged_chunks_give_numpy_corrcoef():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4)) * [1, 100, 0.01, 5] + [0, 1e4, 3, -2]  # far-off means
    y = np.stack([x[:, 0] + rng.normal(size=500), rng.random(500) < 0.3], axis=1)
    sums = Correlations(4, 2)
    for start in (0, 1, 7, 100, 333):  # uneven chunks, one of a single row
        end = {0: 1, 1: 7, 7: 100, 100: 333, 333: 500}[start]
        sums.update(torch.from_numpy(x[start:end]), torch.from_numpy(y[start:end]))
    expected = np.corrcoef(x.T, y.T)[:4, 4:]
    np.testing.assert_allclose(sums.r(), expected, atol=1e-10)


def test_a_constant_side_has_no_correlation():
    sums = Correlations(2, 1)
    sums.update(torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]), torch.tensor([[0.0]] * 3))
    assert np.isnan(sums.r()).all()


def test_scan_matches_corrcoef_on_each_half():
    """A random model over a text: the streamed r of the chosen cells equals corrcoef of the
    full activation matrix on each half, and the cells chosen are the best on the first."""
    torch.manual_seed(1)
    text = 'He said "Go" (now) and Left.\n' * 20 + 'She "Ran" [up].\n' * 20
    vocab = Vocab.from_text(text)
    ids = np.array(vocab.encode(text))
    model = CharRNN(len(vocab), H, 2, "lstm")
    scan = scan_cells(model, text, ids, {"said": "said"}, top=2, batch_size=4, seq_len=9)
    cells = Cells(model)
    full = np.zeros((len(ids), cells.count))
    for chunk in cells.stream(ids, batch_size=4, seq_len=9):
        keep = chunk.position >= 0
        full[chunk.position[keep].numpy()] = chunk.values[keep].numpy()
    table = feature_table(text, {"said": "said"})
    half = len(ids) // 2
    for f in scan.features:
        y = table[f.name]
        with np.errstate(invalid="ignore", divide="ignore"):
            r_first = [np.corrcoef(full[:half, c], y[:half])[0, 1] for c in range(cells.count)]
        if not f.best:  # no comment in this text: nothing to correlate with
            assert f.name == "comment" and np.isnan(r_first).all()
            continue
        assert f.best[0].cell == int(np.nanargmax(np.abs(r_first))), f.name
        for c in f.best:
            assert c.r_select == pytest.approx(r_first[c.cell], abs=1e-6)
            assert c.r_heldout == pytest.approx(
                np.corrcoef(full[half:, c.cell], y[half:])[0, 1], abs=1e-6)


def test_the_pass_never_holds_more_than_a_chunk(monkeypatch):
    """Memory stays bounded: the sums see one chunk of rows at a time, however long the
    text, and keep only (cells x features) numbers."""
    seen = []
    update = Correlations.update
    monkeypatch.setattr(Correlations, "update",
                        lambda self, x, y: (seen.append(x.shape[0]), update(self, x, y)))
    text = make_text(6000)
    vocab = Vocab.from_text(text)
    model = CharRNN(len(vocab), H, 2, "gru")
    scan = scan_cells(model, text, np.array(vocab.encode(text)), batch_size=4, seq_len=16)
    assert max(seen) <= 4 * 16 and sum(seen) == len(text)
    assert scan.chars == len(text)


def test_saturation_counts_gates_near_0_and_1():
    sat = Saturation()
    g = torch.tensor([[[0.05, 0.5], [0.95, 0.99]], [[0.2, 0.01], [0.5, 0.5]]])  # (B, T, H)
    sat.update({(1, "forget"): g}, torch.tensor([[True, True], [True, False]]))
    (row,) = sat.table()
    assert row["gates"]["forget"] == {"left": 2 / 6, "right": 2 / 6}
    assert row["saturated"] == pytest.approx(4 / 6)


# ---- the command ----------------------------------------------------------------------

TEXT = "".join(make_text(150, seed=i) + '\n"quoted" (text) /* a comment */ <b>bold</b>\n'
               for i in range(20))


@pytest.fixture
def model_file(tmp_path):
    return random_model_file(tmp_path / "m.pt", Vocab.from_text(TEXT), "lstm", 16, 2,
                             step=1, best_val_loss=2.0)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_command_prints_every_feature_and_the_saturation(model_file, text_file):
    r = run("neurons", model_file, text_file, "--feature", "tag=<[^>]*>", "--top", "2")
    assert r.exit_code == 0, r.output
    for name in ("quote", "bracket", "depth", "comment", "column", "word_start", "capital",
                 "tag*", "layer 1:", "layer 2:", "held-out"):
        assert name in r.stdout, name


def test_json_holds_cells_features_and_gates(model_file, text_file):
    r = run("neurons", model_file, text_file, "--feature", "tag=<[^>]*>", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["cells"] == 2 * 2 * 16 and out["half"] == out["chars"] // 2
    tag = next(f for f in out["features"] if f["name"] == "tag")
    assert tag["pattern"] == "<[^>]*>" and len(tag["best"]) == 3
    assert {"layer", "state", "unit", "r_select", "r_heldout"} <= set(tag["best"][0])
    assert [row["layer"] for row in out["saturation"]] == [1, 2]
    assert set(out["saturation"][0]["gates"]) == {"input", "forget", "output"}


def test_html_and_png_are_written(model_file, text_file, tmp_path):
    page = tmp_path / "cells.html"
    r = run("neurons", model_file, text_file, "--html", page, "--show", 500)
    assert r.exit_code == 0, r.output
    html = page.read_text()
    assert '<script type="application/json" id="data">' in html and "http" not in html
    assert tmp_path.joinpath("cells.png").read_bytes()[:4] == b"\x89PNG"


def test_without_matplotlib_the_page_is_written_and_one_line_says_what_to_install(
        model_file, text_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    page = tmp_path / "cells.html"
    r = run("neurons", model_file, text_file, "--html", page, "-q")
    assert r.exit_code == 0, r.output
    assert page.exists() and not tmp_path.joinpath("cells.png").exists()
    (line,) = [x for x in r.stderr.splitlines() if "PNG" in x]
    assert "pip install" in line and "matplotlib" in line


@pytest.mark.parametrize("args, fragment", [
    (("missing.txt",), "not found"),
    (("a.txt", "b.txt"), "give one text file"),
])
def test_bad_input_is_one_line(model_file, text_file, args, fragment):
    assert_clean_error(run("neurons", model_file, *args), fragment)


def test_html_never_replaces_the_text_it_reads(model_file, text_file, tmp_path):
    before = text_file.read_bytes()
    assert_clean_error(run("neurons", model_file, text_file, "--html", text_file), "reads")
    assert_clean_error(run("neurons", model_file, text_file, "--html", tmp_path / "x.txt"),
                       "ending in .html")
    assert text_file.read_bytes() == before


def test_help_renders():
    r = run("neurons", "--help")
    assert r.exit_code == 0 and "[TARGET] FILE" in r.output and "--feature" in r.output


def test_text_outside_the_vocabulary_is_one_line(model_file, tmp_path):
    odd = tmp_path / "odd.txt"
    odd.write_text("zzz ☃ zzz", encoding="utf-8")
    assert_clean_error(run("neurons", model_file, odd))


def test_too_short_a_text_is_one_line(model_file, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("the", encoding="utf-8")
    assert_clean_error(run("neurons", model_file, short), "at least 4")

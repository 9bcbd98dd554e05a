"""The demonstrations (unrollgraph.demos, `unrollgraph demo NAME`) at small sizes: what they
measure, and that their pictures are written."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import unrollgraph as ug  # noqa: E402
from unrollgraph import demos  # noqa: E402
from unrollgraph.cli import main  # noqa: E402


def quiet(_line):
    pass


def _pictures(result):
    from matplotlib.image import imread

    assert result["files"]
    for path in result["files"]:
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = imread(str(path))
        assert img[..., :3].std() > 0.05, f"{path} looks blank"


def test_vanishing_decays_monotonically_going_back(tmp_path):
    r = demos.vanishing(tmp_path, steps=25, hidden=8, say=quiet)
    g = r["grad_norms"]
    assert np.all(np.diff(g) > 0)  # larger at later t: it shrinks going back in time
    assert r["flow"].regime == "vanishing" and r["factor_per_step"] <= 0.8 + 1e-9
    _pictures(r)


def test_exploding_grows_and_clipping_rescues_training(tmp_path):
    r = demos.exploding(tmp_path, steps=30, hidden=8, epochs=12, say=quiet)
    g = r["grad_norms"]
    assert np.all(np.diff(g) < 0)  # larger at earlier t: it grows going back in time
    assert r["flow"].regime == "may explode"
    none, clip, norm = (r["training"][k] for k in ("none", "clip", "normalise"))
    assert not np.isfinite(none[0][-1])  # diverged
    assert np.all(np.isfinite(clip[0])) and clip[0][-1] < clip[0][0] / 10
    assert np.all(np.isfinite(norm[0])) and np.all(np.diff(norm[0]) < 0)  # steady descent
    assert np.all(clip[2] <= 1.0 + 1e-6) and np.all(clip[1] > 1.0)  # clipped to the threshold
    assert np.allclose(norm[2], 0.5)  # normalised to exactly 0.5
    _pictures(r)


def test_remedies_keep_more_gradient_than_the_tanh_rnn(tmp_path):
    r = demos.remedies(tmp_path, steps=20, hidden=6, say=quiet)
    ratio = {k: v["grad_ratio"] for k, v in r["cells"].items()}
    for k in ("residual RNN", "LSTM (forget bias +3)", "GRU (update bias +3)"):
        assert ratio[k] > 100 * ratio["tanh RNN"]
    _pictures(r)


def test_truncation(tmp_path):
    r = demos.truncation(tmp_path, steps=16, k=4, hidden=4, say=quiet)
    err = r["in_graph"]
    assert 0 < err.relative_error["weight_hh"] < 1.5
    assert np.allclose(err.missing_norms["weight_hh"][12:], 0, atol=1e-12)
    s = r["streaming"]
    assert s[(16, 16)] < 1e-10  # one window: full BPTT
    assert s[(4, 4)] > s[(2, 8)] > 0  # a longer reach back loses less
    _pictures(r)


def test_memory_is_measured(tmp_path):
    r = demos.memory(tmp_path, lengths=(10, 40, 160), hidden=4, batch=2, say=quiet)
    assert np.all(np.diff(r["peak_bytes"]) > 0)
    per_step = r["peak_bytes"] / r["lengths"]
    assert per_step[-1] < 2 * per_step[1]  # linear, not quadratic
    _pictures(r)


def test_bptt_steps(tmp_path):
    lines = []
    r = demos.bptt_steps(tmp_path, say=lines.append)
    text = "\n".join(lines)
    for k, word in enumerate(("unroll", "forward", "loss per step", "backward", "accumulate",
                              "update"), 1):
        assert f"{k}. {word}" in text
    assert r["sum_gap"] < 1e-12 and r["losses"][1] < r["losses"][0]
    _pictures({"files": [f for f in r["files"] if f.suffix == ".png"]})


def test_command_line(tmp_path, capsys):
    assert main(["demo", "vanishing", "-o", str(tmp_path / "v"), "--steps", "10"]) == 0
    assert "sufficient for vanishing" in capsys.readouterr().out
    assert (tmp_path / "v" / "vanishing.png").exists()
    assert main(["demo", "memory", "--steps", "5"]) == 2
    assert "--max-steps" in capsys.readouterr().err
    assert main(["demo", "vanishing", "--max-steps", "100"]) == 2
    assert main(["demo", "nonsense"]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["demo", "vanishing", "-o", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_run_demo_names():
    with pytest.raises(ug.UnrollGraphError, match="the demos are vanishing"):
        demos.run_demo("nope")


def test_bptt_steps_draws_the_run_it_prints(tmp_path, monkeypatch):
    """The diagram is of the run whose loss the demo prints, before the update."""
    drawn = []
    real = ug.render

    def spy(net, loss=None, **kw):
        drawn.append(float(loss.data))
        return real(net, loss=loss, **kw)

    monkeypatch.setattr(ug, "render", spy)
    lines = []
    r = demos.bptt_steps(tmp_path, say=lines.append)
    if not any("no diagram" in line for line in lines):
        assert drawn == [r["losses"][0]]
        text = "\n".join(lines)
        assert text.index("unrolled.png") < text.index("6. update")

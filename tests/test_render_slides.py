"""Pictures for slides and papers: the print theme, sizes, one colour scale for several
pictures, two runs side by side."""

import re
import subprocess

import numpy as np
import pytest

import unrollgraph as ug
from unrollgraph.errors import RenderError
from unrollgraph.render import _prefixed


def _pair(T=6):
    xs = np.random.default_rng(0).standard_normal((T, 1, 2))
    out = []
    for tr in (None, 2):
        net = ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=T, truncate=tr)
        outs, _ = net(xs)
        loss = (outs * outs).mean()
        loss.backward()
        out.append((net, loss))
    return out


def _fills(text):
    return set(re.findall(r'fillcolor="(#[0-9a-f]{6})"', text))


def test_print_theme_is_black_on_white_with_colour_only_on_the_gradient_scale():
    (net, loss), _ = _pair()
    light = ug.to_dot(net, loss=loss, detail="textbook")
    text = ug.to_dot(net, loss=loss, detail="textbook", theme="print")
    # borders, edges and type are black or grey; colours appear only as gradient fills
    colours = set(re.findall(r'(?<!fill)color="(#[0-9a-f]{6})"', text))
    grey = {c for c in colours if c[1:3] == c[3:5] == c[5:7]}
    scale_cells = set(re.findall(r'bgcolor="(#[0-9a-f]{6})"', text))
    assert colours - grey <= _fills(text) | scale_cells
    assert "#1d4ed8" in light and "#1d4ed8" not in text  # the light theme's blue is gone
    # larger type and thicker lines than the light theme
    sizes = [float(x) for x in re.findall(r'point-size="([0-9.]+)"', text)]
    light_sizes = [float(x) for x in re.findall(r'point-size="([0-9.]+)"', light)]
    assert min(sizes) > min(light_sizes) and max(sizes) > max(light_sizes)
    pens = [float(x) for x in re.findall(r'penwidth="([0-9.]+)"', text)]
    assert min(pens) > 1.2


def test_fontsize_and_scale_grow_every_type_size():
    (net, loss), _ = _pair(T=3)
    base = ug.to_dot(net, loss=loss)
    big = ug.to_dot(net, loss=loss, fontsize=24)
    a = [float(x) for x in re.findall(r'point-size="([0-9.]+)"', base)]
    b = [float(x) for x in re.findall(r'point-size="([0-9.]+)"', big)]
    assert len(a) == len(b) and all(np.isclose(y, 2 * x, rtol=0.01) for x, y in zip(a, b))
    s2 = ug.to_dot(net, loss=loss, scale=2)
    assert [float(x) for x in re.findall(r'point-size="([0-9.]+)"', s2)] == b
    for bad in (0, -1, float("nan"), "big", True):
        with pytest.raises(RenderError, match="must be a positive number"):
            ug.to_dot(net, scale=bad)


def test_one_colour_scale_from_another_render_or_given():
    (full, lf), (cut, lc) = _pair()
    a = ug.render(full, loss=lf, detail="textbook")
    assert a.color_scale is not None and a.color_scale[0] < a.color_scale[1]
    b_own = ug.render(cut, loss=lc, detail="textbook")
    b = ug.render(cut, loss=lc, detail="textbook", color_scale=a)
    assert b.color_scale == a.color_scale
    # the last step's state has the same gradient in both runs: one scale gives one colour
    g = full.graph
    nid = g.id(full.state_nodes["h"][-1])

    def fill(src, i):
        line = next(x for x in src.splitlines() if x.strip().startswith(f'"{i}" ['))
        return re.search(r'fillcolor="([^"]+)"', line).group(1)

    assert np.allclose(full.last_run.state_grads()[-1], cut.last_run.state_grads()[-1])
    assert fill(a.source, nid) == fill(b.source, cut.graph.id(cut.state_nodes["h"][-1]))
    wide = ug.render(cut, loss=lc, detail="textbook", color_scale=(1e-6, 10.0))
    cid = cut.graph.id(cut.state_nodes["h"][-1])
    assert wide.color_scale == (1e-6, 10.0)
    assert fill(wide.source, cid) != fill(b_own.source, cid)  # the given scale is used
    lo, hi = a.color_scale
    t = ug.to_dot(cut, loss=lc, color_scale=(lo, hi))
    assert t == ug.to_dot(cut, loss=lc, color_scale=a)
    for bad in ((1, 0.5), (0, 1), (-1, 2), "x", (1,), (1, float("inf"))):
        with pytest.raises(RenderError, match="color_scale"):
            ug.to_dot(cut, color_scale=bad)
    no_grads = ug.render(ug.unroll(ug.nn.RNNCell(2, 3, seed=0), steps=2))
    with pytest.raises(RenderError, match="no gradient scale"):
        ug.to_dot(cut, color_scale=no_grads)


def test_side_by_side_two_runs_one_scale_no_id_clash():
    (full, lf), (cut, lc) = _pair()
    g = ug.render_side_by_side(full, cut, labels=("full BPTT", "truncated"),
                               loss=(lf, lc), detail="textbook")
    src = g.source
    # each picture in a subgraph of its own, under its caption; no cluster wraps them
    # (dot lays out clusters within clusters badly: see test_render_sides.py)
    assert len(re.findall(r"^  subgraph side[01] \{", src, flags=re.M)) == 2
    assert "subgraph cluster_side" not in src
    for k in range(2):
        assert len(re.findall(rf'^\s*"s{k}_caption" \[', src, flags=re.M)) == 1
    assert "<b>full BPTT</b>" in src and "<b>truncated</b>" in src
    ids = re.findall(r'^\s*"([^"]+)" \[', src, flags=re.M)
    assert len(ids) == len(set(ids))
    assert all(i.startswith(("s0_", "s1_")) for i in ids)
    # each picture's legend (its parameters' totals differ) captioned with its label
    assert src.count('"s0_legend" [') == 1 and src.count('"s1_legend" [') == 1
    assert "legend: full BPTT" in src and "legend: truncated" in src
    a = ug.render(full, loss=lf, detail="textbook").color_scale
    b = ug.render(cut, loss=lc, detail="textbook").color_scale
    assert g.color_scale == (min(a[0], b[0]), max(a[1], b[1]))
    subprocess.run(["dot", "-Tsvg"], input=src.encode(), check=True, capture_output=True)
    with pytest.raises(RenderError, match="labels"):
        ug.render_side_by_side(full, cut, labels="ab")


def test_prefixing_ids_leaves_attribute_values_and_names_alone():
    line = '"n1" -> "n2" [label=<<b>"x"</b>> tooltip="a \\" b" + "c"]\n'
    assert _prefixed(line, "p_") == \
        '"p_n1" -> "p_n2" [label=<<b>"x"</b>> tooltip="a \\" b" + "c"]\n'


@pytest.mark.dot
def test_resizing_leaves_names_that_look_like_sizes_alone():
    name, other = 'fontsize=3 penwidth="5" <b>', 'point-size="4"'
    x = ug.tensor(1.0, requires_grad=True, name=name)
    w = ug.tensor(2.0, requires_grad=True, name=other)
    y = x * w
    y.backward()
    text = ug.to_dot(y, scale=2, theme="print")
    import xml.etree.ElementTree as ET

    svg = ET.fromstring(subprocess.run(["dot", "-Tsvg"], input=text.encode(), check=True,
                                       capture_output=True).stdout)
    texts = [(e.text or "").replace("\xa0", " ")
             for e in svg.iter("{http://www.w3.org/2000/svg}text")]
    tips = [v.replace("\xa0", " ") for e in svg.iter() for k, v in e.attrib.items()
            if k.endswith("}title")]
    assert name in texts and f"{name} = leaf()  # shape ()" in tips
    assert other in texts and f"{other} = leaf()  # shape ()" in tips


def test_side_by_side_op_level_pictures_keep_their_own_clusters():
    (full, lf), (cut, lc) = _pair(T=3)
    src = ug.render_side_by_side(full, cut, loss=(lf, lc), detail="ops").source
    names = re.findall(r"subgraph (cluster_\w+) \{", src)
    assert len(names) == len(set(names)) == 2 * 3  # one per step, no cluster round them
    subprocess.run(["dot", "-Tsvg"], input=src.encode(), check=True, capture_output=True)

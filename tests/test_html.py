"""The HTML stepper of a narrated backward walk: self-contained, escaped, and stepping in a
real headless browser (Debian's chromium driven by selenium through /usr/bin/chromedriver)."""

import html
import json
import re
import shutil

import numpy as np
import pytest

import unrollgraph as ug

pytestmark = pytest.mark.dot

CHROMEDRIVER = "/usr/bin/chromedriver"
HOSTILE = '<script>alert("x")</script>&</pre>'


def _rnn_explanation(name_x="xs"):
    cell = ug.nn.RNNCell(1, 1, seed=0)
    net = ug.unroll(cell, steps=3)
    xs = ug.tensor(np.linspace(-1, 1, 3).reshape(3, 1, 1), requires_grad=True, name=name_x)
    out, h = net(xs)
    loss = (out * out).sum()
    return ug.explain(loss)


def test_page_is_self_contained(tmp_path):
    ex = _rnn_explanation()
    path = tmp_path / "walk.html"
    text = ex.to_html(path)
    assert path.read_text(encoding="utf-8") == text
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text
    # nothing fetched: no external source, stylesheet or link
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", text)
    assert "<link" not in text and "@import" not in text
    assert text.count("<script") == 2  # the data, and the stepper's own code
    assert ex._repr_html_().startswith('<div class="ugx"')


def test_hostile_names_are_escaped():
    x = ug.tensor(0.5, requires_grad=True, name=HOSTILE)
    w = ug.tensor(2.0, requires_grad=True, name="</script><img src=x onerror=alert(1)>")
    y = ug.tanh(x * w)
    text = ug.explain(y).to_html()
    assert "<script>alert" not in text
    assert "<img" not in text
    assert text.count("</script>") == 2 and text.count("</pre>") == 1
    assert "&lt;script&gt;alert" in text  # shown, as text, in the picture


def _driver(size="1400,1000"):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-headless-shell")
    assert binary and shutil.which(CHROMEDRIVER), (
        "the browser test needs Debian's chromium and chromium-driver: ./dev test installs "
        "them (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={size}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_stepper_steps_in_a_real_browser(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ex = _rnn_explanation(name_x=HOSTILE)
    path = tmp_path / "walk.html"
    ex.to_html(path)
    driver = _driver()
    try:
        driver.get(path.as_uri())
        from selenium.common.exceptions import NoAlertPresentException

        with pytest.raises(NoAlertPresentException):
            _ = driver.switch_to.alert  # the hostile name's script did not run

        def state():
            current = driver.find_elements(By.CSS_SELECTOR, "g.node.current")
            assert len(current) == 1
            return (current[0].get_attribute("id"), driver.find_element(By.TAG_NAME, "pre").text,
                    driver.find_element(By.CSS_SELECTOR, ".where").text)

        first = state()
        assert first[1].startswith("[0] ") and first[2] == f"record [0] of [0]–[{len(ex) - 1}]"
        frames = ex.frames()

        def shown_gradients():
            return sorted(e.text for e in driver.find_elements(By.CSS_SELECTOR, "text.grad")
                          if e.is_displayed())

        def frame_gradients(k):
            return sorted(html.unescape(g) for g in re.findall(r"∇ [^<]*", frames[k].source))

        assert shown_gradients() == frame_gradients(0)  # the loss's own, no other
        nxt = driver.find_element(By.CSS_SELECTOR, "button.next")
        seen = [first]
        for k in range(1, 4):
            nxt.click()
            seen.append(state())
            assert shown_gradients() == frame_gradients(k)
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
        seen.append(state())
        assert [s[1].split("]")[0] for s in seen] == ["[0", "[1", "[2", "[3", "[4"]
        assert len({s[0] for s in seen}) == 5  # the highlighted node moved every time
        assert seen[4][1].startswith(f"[4] {ex._reader_name(ex[4].node)} = ")
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
        assert state() == seen[3]
        driver.find_element(By.CSS_SELECTOR, "button.prev").click()
        assert state() == seen[2]
        # the hostile name shows as text, not markup, and ran nothing
        assert driver.find_elements(By.CSS_SELECTOR, ".pic script") == []
        done = driver.find_elements(By.CSS_SELECTOR, "g.edge.done")
        assert done, "traversed edges are drawn solid"
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    import io

    from matplotlib.image import imread

    img = imread(io.BytesIO(png), format="png")
    assert img.shape[0] > 500 and img.shape[1] > 800
    flat = img[..., :3].reshape(-1, 3)
    assert flat.std(axis=0).max() > 0.05  # not a blank page
    red = (flat[:, 0] > 0.7) & (flat[:, 1] < 0.3) & (flat[:, 2] < 0.3)
    assert red.sum() > 50  # the highlighted node's red border is on screen


def _lstm_explanation(steps=12):
    cell = ug.nn.LSTMCell(1, 1, seed=0)
    net = ug.unroll(cell, steps=steps)
    out, *_ = net(np.ones((steps, 1, 1)))
    return ug.explain((out * out).sum())


def test_a_wide_walk_keeps_its_edge_labels():
    page = _lstm_explanation().to_html()
    width = float(re.search(r'<svg width="([0-9.]+)pt"', page).group(1))
    assert width > 1800
    assert 'xlabel' not in page and re.search(r'class="edge".*?<text', page, re.S)


def test_every_text_of_the_page_is_readable_in_a_real_browser(tmp_path):
    """Every text of the picture is at least 12 pixels at the default zoom, a small walk's
    and a wide one's alike (a 3-step RNN's was fitted to the pane: 5 to 6 pixels), and so is
    the record's text; a picture wider than its pane scrolls."""
    driver = _driver()
    try:
        for k, ex in enumerate((_rnn_explanation(), _lstm_explanation())):
            path = tmp_path / f"walk{k}.html"
            ex.to_html(path)
            driver.get(path.as_uri())
            sizes = driver.execute_script("""
              var svg = document.querySelector('.pic svg');
              var scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
              var out = [];
              svg.querySelectorAll('text').forEach(function (t) {
                out.push(parseFloat(t.getAttribute('font-size')) * scale); });
              var pre = parseFloat(getComputedStyle(document.querySelector('pre')).fontSize);
              var pic = document.querySelector('.pic');
              return [out, pre, pic.scrollWidth > pic.clientWidth];""")
            texts, pre, scrolls = sizes
            assert texts and min(texts) >= 12 - 1e-6, (k, min(texts))
            assert pre >= 12
            assert scrolls  # (both are wider than the pane of a 1400-pixel window)
    finally:
        driver.quit()


def test_the_page_shows_the_diagrams_names_never_an_internal_id():
    """A reader sees the names the diagrams draw (``h_next₂``; an op by its symbol, its
    step beside it), with the node's record number where two would read the same
    (``+@2 [4]``), in the picture, the record text, the title and the skipped list; the
    ids (``+@2#n12``) stay the elements' own (``ugx-n12``), which the script uses."""
    ex = _rnn_explanation()
    assert "+@2#n12" in [ex.name(n) for n in ex.nodes]  # the text's name for it
    page = ex.to_html()
    data = json.loads(re.search(r'<script type="application/json">(.*?)</script>', page,
                                re.S).group(1))
    svg = page[page.index("<svg"):page.index("</svg>")]
    drawn = html.unescape("\n".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg)))
    pane = "\n".join(f["text"] for f in data["frames"])
    internal = re.compile(r"#[ne]\d+")
    for where, text in (("picture", drawn), ("pane", pane), ("title", page[:page.index("<svg")])):
        assert not internal.search(text), (where, internal.search(text))
    assert "h_next₂" in drawn and "add · step 2" in drawn
    (rec,) = [r for r in ex if ex.name(r.node) == "+@2#n12"]
    assert f"[{rec.index}] +@2 [{rec.index}] = add  step 2" in pane
    assert f"[{rec.index}]" in drawn  # the tag beside the + it names
    assert all(re.fullmatch(r"ugx-[ne]\d+", i) for i in data["nodes"] + data["edges"])
    groups = re.findall(r'<g id="ugx-n\d+" class="node"', svg.replace("&#45;", "-"))
    assert len(groups) == len(ex.nodes)


def _node_groups(svg):
    """id -> the SVG group of each node."""
    return dict(re.findall(r'<g id="([^"]+)" class="node">(.*?)</g>', svg, re.S))


@pytest.mark.parametrize("kind", ["scalar", "rnn"])
def test_each_stepper_frame_shows_exactly_what_the_frame_shows(kind):
    """The page's picture, with the classes its script sets at frame k, shows a node's
    gradient exactly where ex.frames()[k] does (never one not reached yet)."""
    import json

    if kind == "scalar":
        x = ug.tensor(0.5, requires_grad=True, name="x")
        w = ug.tensor(2.0, requires_grad=True, name="w")
        c = x * w
        c.name = "c"
        ex = ug.explain(ug.tanh(c) * ug.tanh(c))
    else:
        ex = _rnn_explanation()
    page = ex.to_html()
    data = json.loads(re.search(r'<script type="application/json">(.*?)</script>', page,
                                re.S).group(1))
    svg = page[page.index("<svg"):page.index("</svg>")]
    groups = _node_groups(svg.replace("&#45;", "-"))
    frames = ex.frames()
    for k, f in enumerate(data["frames"]):
        shown, drawn = [], []
        for i, nid in enumerate(data["nodes"]):
            todo = i != f["node"] and i not in f["done_nodes"]
            body = groups[nid]
            if 'class="grad"' in body and not todo:
                shown.append(html.unescape(
                    re.search(r'class="grad"[^>]*>([^<]*)<', body).group(1)))
        for label in re.findall(r"label=<(.*?)>\s*(?:\w+=|\])", frames[k].source):
            drawn.extend(html.unescape(g) for g in re.findall(r"∇ [^<]*", label))
        assert sorted(shown) == sorted(drawn), k
        assert len(drawn) == k + 1  # the nodes visited so far, each once


def _cli_page(tmp_path, steps=3):
    """The page ``unrollgraph explain rnn --format html`` writes."""
    from unrollgraph.cli import main

    path = tmp_path / f"rnn{steps}.html"
    assert main(["explain", "rnn", "--steps", str(steps), "--format", "html",
                 "-o", str(path)]) == 0
    return path


_GEOMETRY = """
  function box(e) { var r = e.getBoundingClientRect();
                    return [r.left, r.top, r.right, r.bottom]; }
  var root = document.querySelector('.ugx'), pic = root.querySelector('.pic');
  var svg = pic.querySelector('svg'), p = pic.getBoundingClientRect();
  var steps = [];
  root.querySelectorAll('g.step').forEach(function (g) {
    steps.push([g.id, box(g.querySelector('rect')), g.querySelector('text').textContent]); });
  var nodes = {};
  root.querySelectorAll('g.node').forEach(function (g) {
    nodes[g.id] = box(g.querySelector('path, polygon, ellipse')); });
  var cur = root.querySelector('g.node.current');
  return {scale: parseFloat(root.getAttribute('data-scale')), svg: box(svg),
          pane: [p.left + pic.clientLeft, p.top + pic.clientTop,
                 p.left + pic.clientLeft + pic.clientWidth,
                 p.top + pic.clientTop + pic.clientHeight],
          steps: steps, nodes: nodes, current: cur ? box(cur) : null};"""


def _area(b):
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _cut(a, b):
    return [max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])]


def test_the_stepper_fits_a_lecture_screen_with_a_box_per_step(tmp_path):
    """At 1600 x 1000 the page of ``unrollgraph explain rnn`` shows most of the picture at a
    readable size (three quarters or more; a quarter, at its own size, before), the whole of
    it after "Fit", a box round each step, left to right in time order, holding its step's
    nodes and no other, and the current node in view at every record."""
    from selenium.webdriver.common.by import By

    ex = _rnn_explanation()
    path = tmp_path / "walk.html"
    ex.to_html(path)
    driver = _driver("1600,1000")
    try:
        for page in (_cli_page(tmp_path), path):  # the command's page, then ex.to_html's
            driver.get(page.as_uri())
            g = driver.execute_script(_GEOMETRY)
            assert g["scale"] >= 0.9  # its smallest type 12 pixels or more
            seen = _area(_cut(g["svg"], g["pane"])) / _area(g["svg"])
            assert seen >= 0.75, (page.name, seen)  # (a quarter, at its own size, before)
        # a box per step, in time order, round its own nodes only
        assert [s[2] for s in g["steps"]] == ["t = 0", "t = 1", "t = 2"]
        boxes = [s[1] for s in g["steps"]]
        for left, right in zip(boxes, boxes[1:]):
            assert left[2] < right[0], (left, right)  # side by side, apart
        step_of = {f"ugx-n{i}": n.step for i, n in enumerate(ex.nodes)}
        for nid, b in g["nodes"].items():
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            inside = [t for t, box in enumerate(boxes)
                      if box[0] <= cx <= box[2] and box[1] <= cy <= box[3]]
            if step_of[nid] is None:
                assert inside == [], nid
            else:
                box = boxes[step_of[nid]]
                assert inside == [step_of[nid]], nid
                assert box[0] <= b[0] and b[2] <= box[2] and box[1] <= b[1] \
                    and b[3] <= box[3], nid
        # the current node in view at every record
        nxt = driver.find_element(By.CSS_SELECTOR, "button.next")
        for k in range(len(ex)):
            g = driver.execute_script(_GEOMETRY)
            cur, pane = g["current"], g["pane"]
            assert _area(_cut(cur, pane)) >= 0.99 * _area(cur), k
            nxt.click()
        # "Fit": the whole picture in the pane; "+" and "100%" zoom back in
        driver.find_element(By.CSS_SELECTOR, "button.fit").click()
        g = driver.execute_script(_GEOMETRY)
        assert g["scale"] < 0.9
        assert _area(_cut(g["svg"], g["pane"])) >= 0.999 * _area(g["svg"])
        fitted = g["scale"]
        driver.find_element(By.CSS_SELECTOR, "button.larger").click()
        assert driver.execute_script(_GEOMETRY)["scale"] == pytest.approx(fitted * 1.25, abs=2e-4)
        driver.find_element(By.CSS_SELECTOR, "button.actual").click()
        assert driver.execute_script(_GEOMETRY)["scale"] == 1
        driver.save_screenshot(str(tmp_path / "stepper.png"))
    finally:
        driver.quit()

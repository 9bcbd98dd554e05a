"""A self-contained HTML page that steps through a narrated backward walk
(:meth:`Explanation.to_html <unrollgraph.explain.Explanation.to_html>`).

The graph is laid out once by Graphviz and inlined as SVG; each step of the walk only changes
which elements are marked current, traversed or still to come (CSS classes set by a few lines
of inline JavaScript). Nothing is fetched: the page works opened from disk, offline, or
embedded in a notebook. An unrolled graph's steps stand side by side in time order, each in
a box (``t = 0``, ``t = 1``...). The picture is shown whole where it fits the pane at a
readable size (its smallest type, 10 points, at least 12 pixels), else at that size, scrolling
to keep the current node in view; buttons shrink it, fit it whole to the pane, show it at its
own size or enlarge it. Nodes are named as the diagrams name them
(``h_next₂``; an op by its symbol, its step beside it), followed, where two would read the
same, by the number of the node's record (``+@2 [4]``, where the printed walk writes
``+@2#n12``); the ids stay the elements' own. Every name from the user's graph reaches the
page escaped (in the SVG by Graphviz, in the record text as JSON read with ``textContent``),
so no name can inject markup or script.
"""

from __future__ import annotations

import html as _html
import itertools
import json
import re

__all__ = ["stepper"]

_COUNTER = itertools.count()

_CSS = """
.ugx { font-family: Helvetica, Arial, sans-serif; color: #1f2328; }
.ugx h2 { font-size: 1.25em; margin: .2em 0; }
.ugx .bar { display: flex; flex-wrap: wrap; gap: .6em; align-items: center; margin: .3em 0; }
.ugx button { font-size: 1em; padding: .2em .8em; }
.ugx .zoom button { padding: .2em .5em; }
.ugx .panes { display: flex; gap: .6em; align-items: flex-start; }
.ugx .pic { flex: 1 1 auto; min-width: 0; overflow: auto; max-height: 85vh;
            border: 1px solid #d0d7de; }
.ugx .pic svg { display: block; max-width: none; }
.ugx pre { flex: 0 0 25em; white-space: pre-wrap; font-size: 12px; background: #f6f8fa;
           padding: .6em; margin: 0; }
.ugx g.node.todo, .ugx g.edge.todo { opacity: .22; }
.ugx g.edge.todo text, .ugx g.node.todo text.grad { display: none; }
.ugx g.node.current polygon, .ugx g.node.current path, .ugx g.node.current ellipse {
  stroke: #cf222e; stroke-width: 4; fill: #ffebe9; }
.ugx g.edge.done path { stroke: #0969da; stroke-width: 2; }
.ugx g.edge.done polygon { stroke: #0969da; fill: #0969da; }
.ugx g.edge.done text { fill: #0969da; }
"""

_JS = """
(function () {
  var root = document.getElementById(%(uid)s);
  var data = JSON.parse(root.querySelector('script[type="application/json"]').textContent);
  var frames = data.frames, k = 0;
  var slider = root.querySelector('input[type=range]');
  var text = root.querySelector('pre');
  var where = root.querySelector('.where');
  var pic = root.querySelector('.pic');
  var svg = pic.querySelector('svg');
  var shown = root.querySelector('.scale');
  // the picture's own size (points: 4/3 pixel each at full size); its smallest type, 10 points,
  // is 12 pixels at the scale 0.9 (a hair over it: the browser lays out in 64ths of a
  // pixel), below which the picture is shrunk only when asked
  var W = svg.viewBox.baseVal.width * 4 / 3, H = svg.viewBox.baseVal.height * 4 / 3;
  var READABLE = 0.901, scale = 1;
  function zoom(z) {
    scale = Math.max(0.1, Math.min(4, z));
    // (rounded up: the readable scale never lands a hair under its 12 pixels)
    svg.setAttribute('width', (Math.ceil(W * scale * 1000) / 1000) + 'px');
    svg.setAttribute('height', (Math.ceil(H * scale * 1000) / 1000) + 'px');
    shown.textContent = Math.round(scale * 100) + '%%';
    root.setAttribute('data-scale', scale.toFixed(4));
  }
  if (!root.hasAttribute('data-embedded')) {  // a page: the pane down to the window's foot
    pic.style.maxHeight = Math.max(200, window.innerHeight - pic.getBoundingClientRect().top
                                        - window.scrollY - 12) + 'px';
  }
  function fit() {  // the whole picture in the pane (inside its border and scroll bars)
    var high = parseFloat(pic.style.maxHeight) || 0.85 * window.innerHeight;
    return Math.min(pic.clientWidth / W, (high - 2) / H);
  }
  // at first: the whole picture when it fits at a readable size, else the readable size
  // (the picture scrolls, the current node kept in view); never larger than its own size
  zoom(Math.min(1, Math.max(fit(), READABLE)));
  function el(id) { return document.getElementById(id); }
  function show(n) {
    k = Math.max(0, Math.min(frames.length - 1, n));
    var f = frames[k];
    data.nodes.forEach(function (id, i) {
      var e = el(id); if (!e) return;
      e.classList.remove('current', 'done', 'todo');
      e.classList.add(i === f.node ? 'current' : (f.done_nodes.indexOf(i) >= 0 ? 'done'
                                                                               : 'todo'));
    });
    data.edges.forEach(function (id, i) {
      var e = el(id); if (!e) return;
      e.classList.remove('done', 'todo');
      e.classList.add(data.edge_frame[i] <= k ? 'done' : 'todo');
    });
    var cur = el(data.nodes[f.node]);
    if (cur) {  // keep the current node in view inside the picture's scrolling box
      var r = cur.getBoundingClientRect(), b = pic.getBoundingClientRect();
      if (r.top < b.top || r.bottom > b.bottom)
        pic.scrollTop += r.top - b.top - pic.clientHeight / 2;
      if (r.left < b.left || r.right > b.right)
        pic.scrollLeft += r.left - b.left - pic.clientWidth / 2;
    }
    text.textContent = f.text;
    slider.value = k;
    // numbered as the records are in the text: [0] to [N - 1]
    where.textContent = 'record [' + k + '] of [0]\u2013[' + (frames.length - 1) + ']';
    root.setAttribute('data-frame', k);
  }
  root.querySelector('.smaller').addEventListener('click', function () {
    zoom(scale / 1.25); show(k); });
  root.querySelector('.larger').addEventListener('click', function () {
    zoom(scale * 1.25); show(k); });
  root.querySelector('.fit').addEventListener('click', function () { zoom(fit()); show(k); });
  root.querySelector('.actual').addEventListener('click', function () { zoom(1); show(k); });
  root.querySelector('.prev').addEventListener('click', function () { show(k - 1); });
  root.querySelector('.next').addEventListener('click', function () { show(k + 1); });
  slider.addEventListener('input', function () { show(parseInt(slider.value, 10)); });
  root.addEventListener('keydown', function (ev) {
    if (ev.key === 'ArrowRight') { show(k + 1); ev.preventDefault(); }
    if (ev.key === 'ArrowLeft') { show(k - 1); ev.preventDefault(); }
  });
  document.addEventListener('keydown', function (ev) {
    if (document.activeElement === document.body) {
      if (ev.key === 'ArrowRight') show(k + 1);
      if (ev.key === 'ArrowLeft') show(k - 1);
    }
  });
  show(0);
})();
"""


def _diagram(ex, prefix: str):
    """The stepper's picture of explanation ``ex``, every element drawn (the page switches
    them per frame), as a diagram to lay out."""
    from .render import _diagram_class

    source = ex._dot(None, prefix=prefix)
    body = source.split("\n", 1)[1].rsplit("}", 1)[0]
    return _diagram_class()(name="explain", body=[line + "\n" for line in body.splitlines()])


def _svg(ex, prefix: str) -> str:
    from .explain import GRAD_COLOUR

    svg = _diagram(ex, prefix).pipe(format="svg", encoding="utf-8")
    # a node's gradient line, shown only once the walk has reached the node (as the frames)
    svg = re.sub(r'<text ([^>]*fill="%s")' % re.escape(GRAD_COLOUR),
                 r'<text class="grad" \1', svg)
    return _step_boxes(svg[svg.index("<svg"):], ex, prefix)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_GROUP = re.compile(r'<g id="([^"]+)" class="(node|edge)">(.*?)</g>', re.S)
_TEXT = re.compile(r'<text[^>]*?text-anchor="(\w+)" x="([-\d.]+)" y="([-\d.]+)"[^>]*?'
                   r'font-size="([\d.]+)"[^>]*>([^<]*)</text>')
#: the room round a step's nodes inside its box, and under them for its name (points)
_PAD, _NAME_ROOM = 8.0, 15.0


def _step_boxes(svg: str, ex, prefix: str) -> str:
    """``svg`` with a box drawn behind each unrolled step (``t = 0``, ``t = 1``...), as the
    other unrolled pictures group a step: round the step's nodes and the gradients on its
    own edges, its name in its lower left corner. Graphviz lays the steps out side by side
    (:meth:`Explanation._step_order`), the box is drawn from where it put them."""
    step_of = {f"{prefix}n{i}": n.step for i, n in enumerate(ex.nodes) if n.step is not None}
    edge_step = {f"{prefix}e{i}": a.step for i, (a, b, _) in enumerate(ex.edges)
                 if a.step is not None and a.step == b.step}
    if not step_of:
        return svg
    box: dict = {}

    def take(t, x0, y0, x1, y1):
        b = box.setdefault(t, [x0, y0, x1, y1])
        b[:] = [min(b[0], x0), min(b[1], y0), max(b[2], x1), max(b[3], y1)]

    for gid, kind, body in _GROUP.findall(svg.replace("&#45;", "-")):
        if kind == "node" and gid in step_of:
            shape = " ".join(re.findall(r'(?:points|d)="([^"]*)"', body))
            xy = [float(v) for v in _NUMBER.findall(shape)]
            if len(xy) >= 2:
                take(step_of[gid], min(xy[0::2]), min(xy[1::2]), max(xy[0::2]),
                     max(xy[1::2]))
        elif kind == "edge" and gid in edge_step:
            for anchor, x, y, size, text in _TEXT.findall(body):
                x, y, size = float(x), float(y), float(size)
                width = 0.6 * size * len(_html.unescape(text))  # (an upper estimate)
                x0 = {"start": x, "end": x - width}.get(anchor, x - width / 2)
                take(edge_step[gid], x0, y - size, x0 + width, y + 0.3 * size)
    rects = []
    for t in sorted(box):
        x0, y0, x1, y1 = box[t]
        x0, y0, x1, y1 = x0 - _PAD, y0 - _PAD, x1 + _PAD, y1 + _PAD + _NAME_ROOM
        rects.append(
            f'<g id="{prefix}step{t}" class="step"><rect x="{x0:.1f}" y="{y0:.1f}" '
            f'width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" rx="8" fill="#f6f8fa" '
            f'stroke="#d0d7de"/><text x="{x0 + 7:.1f}" y="{y1 - 5:.1f}" '
            'font-family="Helvetica,sans-Serif" font-size="11.00" fill="#57606a">'
            f"t = {t}</text></g>")
    # behind everything: right after the graph's background
    at = svg.index(">", svg.index("<polygon", svg.index('class="graph"'))) + 1
    return svg[:at] + "\n" + "\n".join(rects) + svg[at:]


def _script_json(obj) -> str:
    """JSON safe inside a <script> element: no "<", ">" or "&" can close or open a tag."""
    text = json.dumps(obj, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def stepper(ex, title: str | None = None, embed: bool = False) -> str:
    """The HTML of a stepper through explanation ``ex``.

    Parameters
    ----------
    ex : Explanation
    title : str, optional
        The page title (by default names the loss).
    embed : bool
        Return a fragment (a ``<div>`` with its style and script) for a notebook, rather
        than a whole page.

    Returns
    -------
    str

    Raises
    ------
    RenderError
        When Graphviz's ``dot`` program is missing or fails.

    Examples
    --------
    >>> import unrollgraph as ug
    >>> x = ug.tensor(0.5, requires_grad=True, name="x")
    >>> fragment = stepper(ug.explain(x * x), embed=True)
    >>> fragment.startswith('<div class="ugx'), fragment.endswith("</script></div>")
    (True, True)
    """
    # a page holds one stepper (a fixed id keeps a written page the same from run to run);
    # fragments embedded in one notebook need ids of their own
    uid = f"ugx{next(_COUNTER)}" if embed else "ugx"
    prefix = uid + "-"
    index = {id(n): i for i, n in enumerate(ex.nodes)}
    edge_index = {(id(a), id(b), k): i for i, (a, b, k) in enumerate(ex.edges)}
    edge_frame = [len(ex.records)] * len(ex.edges)
    frames = []
    done: list[int] = []
    for k, r in enumerate(ex.records):
        done.append(index[id(r.node)])
        for loc in r.locals:
            for key in ex.edge_keys(r, loc):
                e = edge_index.get(key)
                if e is not None:
                    edge_frame[e] = min(edge_frame[e], k)
        frames.append({"node": index[id(r.node)], "done_nodes": list(done),
                       "text": "\n".join(r.lines(ex._reader_name, rename=True))})
    data = {"nodes": [f"{prefix}n{i}" for i in range(len(ex.nodes))],
            "edges": [f"{prefix}e{i}" for i in range(len(ex.edges))],
            "edge_frame": edge_frame, "frames": frames}
    # the picture's scale is set by the page's script (see _JS): the whole of it where it
    # fits at a readable size, else a readable size that scrolls, the current node in view
    svg = _svg(ex, prefix)
    skipped = "".join(f"<li>{_html.escape(ex._reader_name(s.node))}: "
                      f"{_html.escape(s.reason)}</li>" for s in ex.skipped)
    title = title or f"Backward walk from {ex._reader_name(ex.loss)}"
    body = (
        f'<div class="ugx" id="{uid}" tabindex="0"{" data-embedded" if embed else ""}>'
        f"<style>{_CSS}</style>"
        f"<h2>{_html.escape(title)}</h2>"
        '<div class="bar"><button class="prev" type="button">&#8592; Previous</button>'
        '<button class="next" type="button">Next &#8594;</button>'
        f'<input type="range" min="0" max="{max(len(frames) - 1, 0)}" value="0" '
        'aria-label="record">'
        '<span class="where"></span>'
        '<span class="zoom"><button class="smaller" type="button" title="smaller">&#8722;'
        '</button> <button class="fit" type="button" title="the whole picture">Fit</button> '
        '<button class="actual" type="button" title="its own size">100%</button> '
        '<button class="larger" type="button" title="larger">+</button> '
        '<span class="scale"></span></span></div>'
        f'<div class="panes"><div class="pic">{svg}</div><pre></pre></div>'
        + (f"<p>Skipped:</p><ul>{skipped}</ul>" if skipped else "")
        + f'<script type="application/json">{_script_json(data)}</script>'
        f"<script>{_JS % {'uid': json.dumps(uid)}}</script></div>"
    )
    if embed:
        return body
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_html.escape(title)}</title></head><body>{body}</body></html>\n")

"""A self-contained HTML page that steps through a narrated backward walk
(:meth:`Explanation.to_html <unrollgraph.explain.Explanation.to_html>`).

The graph is laid out once by Graphviz and inlined as SVG; each step of the walk only changes
which elements are marked current, traversed or still to come (CSS classes set by a few lines
of inline JavaScript). Nothing is fetched: the page works opened from disk, offline, or
embedded in a notebook. The picture is shown at its own size, its smallest type (10 points)
13 pixels at the default zoom, and scrolls. Nodes are named as the diagrams name them
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
.ugx .bar { display: flex; gap: .6em; align-items: center; margin: .4em 0; }
.ugx button { font-size: 1em; padding: .2em .8em; }
.ugx .panes { display: flex; gap: 1em; align-items: flex-start; }
.ugx .pic { flex: 3; overflow: auto; max-height: 85vh; border: 1px solid #d0d7de; }
.ugx .pic svg { max-width: none; }
.ugx pre { flex: 2; white-space: pre-wrap; font-size: 12px; background: #f6f8fa;
           padding: .6em; margin: 0; min-width: 20em; }
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
    them per frame), as a diagram to lay out. Edges stand further apart than dot's default:
    the gradients two edges into one node carry (``x * x``: the same number twice) are
    labels side by side, which would touch."""
    from .render import _diagram_class

    source = ex._dot(None, prefix=prefix)
    body = source.split("\n", 1)[1].rsplit("}", 1)[0]
    lines = ["  nodesep=0.6;\n"] + [line + "\n" for line in body.splitlines()]
    return _diagram_class()(name="explain", body=lines)


def _svg(ex, prefix: str) -> str:
    from .explain import GRAD_COLOUR

    svg = _diagram(ex, prefix).pipe(format="svg", encoding="utf-8")
    # a node's gradient line, shown only once the walk has reached the node (as the frames)
    svg = re.sub(r'<text ([^>]*fill="%s")' % re.escape(GRAD_COLOUR),
                 r'<text class="grad" \1', svg)
    return svg[svg.index("<svg"):]


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
    # the picture at its own size, never shrunk to the pane (its smallest type, 9 points,
    # is 12 pixels so): a larger one scrolls, the current node kept in view
    svg = _svg(ex, prefix)
    skipped = "".join(f"<li>{_html.escape(ex._reader_name(s.node))}: "
                      f"{_html.escape(s.reason)}</li>" for s in ex.skipped)
    title = title or f"Backward walk from {ex._reader_name(ex.loss)}"
    body = (
        f'<div class="ugx" id="{uid}" tabindex="0">'
        f"<style>{_CSS}</style>"
        f"<h2>{_html.escape(title)}</h2>"
        '<div class="bar"><button class="prev" type="button">&#8592; Previous</button>'
        '<button class="next" type="button">Next &#8594;</button>'
        f'<input type="range" min="0" max="{max(len(frames) - 1, 0)}" value="0" '
        'aria-label="record">'
        '<span class="where"></span></div>'
        f'<div class="panes"><div class="pic">{svg}</div><pre></pre></div>'
        + (f"<p>Skipped:</p><ul>{skipped}</ul>" if skipped else "")
        + f'<script type="application/json">{_script_json(data)}</script>'
        f"<script>{_JS % {'uid': json.dumps(uid)}}</script></div>"
    )
    if embed:
        return body
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_html.escape(title)}</title></head><body>{body}</body></html>\n")

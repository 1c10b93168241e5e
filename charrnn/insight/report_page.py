"""The HTML page of the report: one self-contained file (its style, script and data inline; it
loads nothing, so it opens without a network or a server). charrnn/insight/report.py fills it in.

The surprisal view is plain HTML (coloured spans), readable with scripts off; the script adds
the top-5 guesses on hover or focus (arrow keys move through the text), the state view (picking
a character draws, per layer, the state that made its guesses and an LSTM's gates, as strips of
units), the neuron browser (activations stored as 8-bit codes, base64) and the clickable list of
correlated units. The gradient curves are an inline SVG, one log axis for all of them.
"""
from __future__ import annotations

import html
import json
import math
import re

BITS_SCALE = 8.0      # surprisal shown at full red from this many bits
MIN_DECADES = 10      # the gradient axis spans at least this many powers of ten
CURVE_COLOURS = ("#c00", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px}
.meta{color:#555}.notes li{color:#8a4b00}
.text{font:13px/1.6 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-all;
 border:1px solid #ccc;padding:10px;max-height:420px;overflow:auto;outline:none}
.text:focus{border-color:#36c;box-shadow:0 0 0 2px #cde}
.text span.cur{outline:2px solid #36c}
.unk{background:repeating-linear-gradient(45deg,#ddd 0 3px,#fff 3px 6px)!important;color:#777}
.legend{display:inline-block;width:200px;height:10px;vertical-align:middle;border:1px solid #ccc}
#tip{position:fixed;display:none;background:#fff;border:1px solid #888;padding:6px 8px;
 box-shadow:0 2px 8px #0003;font-size:12px;z-index:9;pointer-events:none;min-width:170px}
#tip table{border-collapse:collapse;margin-top:3px}#tip td{padding:0 6px 0 0}
#tip tr.actual td{font-weight:bold;color:#a00}
.controls label{margin-right:14px}#unit{width:6em}#msg{color:#a00;margin-left:8px}
#hits button{font:inherit;border:1px solid #ccc;background:#f7f7f7;border-radius:4px;
 padding:2px 8px;margin:2px 0;cursor:pointer;text-align:left;width:100%}
#hits button.on{border-color:#36c;background:#e8f0ff}
.cols{display:grid;grid-template-columns:1fr 320px;gap:16px;align-items:start}
svg text{font:11px system-ui,sans-serif}
#state{border:1px solid #ccc;padding:6px 10px;margin-top:8px;overflow-x:auto}
#state .layer{margin:4px 0 2px;font-weight:bold}
#state .strip{display:flex;align-items:center;height:16px;margin:1px 0}
#state .strip span{width:120px;flex:none;font-size:12px;color:#444}
#state canvas{flex:none;image-rendering:pixelated;cursor:crosshair;border:1px solid #ddd}
#stateat,#stateunit{margin:2px 0;min-height:1.4em}
"""

SCRIPT = r"""
const D = JSON.parse(document.getElementById('data').textContent);
const $ = id => document.getElementById(id);
const chars = Array.from(D.text), T = chars.length, tip = document.getElementById('tip');
const esc = s => s.replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'})[c]);
const show = c => c === '\n' ? '\u21b5' : c === ' ' ? '\u2423' : c === '\t' ? '\u21e5' : c === '' ? '<unk>' : c;
function tipHtml(i, extra) {
  let h = '<b>' + esc(show(chars[i])) + '</b> (character ' + (i + 1) + '): ' +
    (D.unknown[i] ? 'not in the vocabulary, read as &lt;unk&gt;' : D.bits[i].toFixed(2) + ' bits');
  if (extra) h += '<br>' + extra;
  h += '<br>the model\'s top 5 guesses:<table class="guesses">';
  for (let j = 0; j < 5; j++) {
    const p = D.top_probs[i * 5 + j]; if (!p) continue;
    const c = D.vocab[D.top_ids[i * 5 + j]];
    h += '<tr' + (c === chars[i] ? ' class="actual"' : '') + '><td>' + esc(show(c)) +
         '</td><td>' + (100 * p).toFixed(1) + '%</td></tr>';
  }
  return h + '</table>';
}
function place(el) {
  const r = el.getBoundingClientRect();
  tip.style.left = Math.max(4, Math.min(r.left, innerWidth - 240)) + 'px';
  tip.style.top = (r.bottom + 220 > innerHeight ? r.top - tip.offsetHeight - 6 : r.bottom + 6) + 'px';
}
function hook(box, extra) {           // hover, click and keyboard focus on a text of spans
  const spans = Array.from(box.children); let cur = 0;
  spans.forEach((s, i) => s.i = i);
  const open = i => { tip.innerHTML = tipHtml(i, extra(i)); tip.style.display = 'block'; place(spans[i]); };
  box.addEventListener('mouseover', e => { if (e.target.i !== undefined) open(e.target.i); });
  box.addEventListener('mouseleave', () => { if (document.activeElement !== box) tip.style.display = 'none'; });
  const move = i => { spans[cur].classList.remove('cur'); cur = Math.max(0, Math.min(T - 1, i));
    spans[cur].classList.add('cur'); spans[cur].scrollIntoView({block: 'nearest'}); open(cur);
    pickState(cur); };
  box.addEventListener('click', e => { if (e.target.i !== undefined) move(e.target.i); });
  box.addEventListener('focus', () => move(cur));
  box.addEventListener('blur', () => { spans[cur].classList.remove('cur'); tip.style.display = 'none'; });
  box.addEventListener('keydown', e => {
    const step = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: 40, ArrowUp: -40}[e.key];
    if (step) { move(cur + step); e.preventDefault(); }
    else if (e.key === 'Home') move(0); else if (e.key === 'End') move(T - 1);
    else if (e.key === 'Escape') tip.style.display = 'none';
  });
  return spans;
}
// Stored values are 8-bit codes of values in [-1, 1], base64, unit-major: one row of T a unit.
const codes = new Map();
function decode(b, field) {
  if (!codes.has(b)) codes.set(b, {});
  const got = codes.get(b);
  if (!got[field]) { const s = atob(b[field]), a = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i); got[field] = a; }
  return got[field];
}
function block(layer, kind) { return D.blocks.find(b => b.layer === layer && b.kind === kind); }
function row(b, unit) {
  const k = b.units.indexOf(unit); if (k < 0) return null;
  return decode(b, 'codes').subarray(k * T, (k + 1) * T);
}
const value = code => code * 2 / 255 - 1;
function colour(v) {                 // blue (-1), white (0), red (+1); text stays readable
  const w = Math.round(255 * (1 - 0.75 * Math.abs(v)));
  return v >= 0 ? 'rgb(255,' + w + ',' + w + ')' : 'rgb(' + w + ',' + w + ',255)';
}
function green(v) {                  // a gate in [0, 1]: white (shut) to green (open)
  const t = Math.max(0, Math.min(1, v));
  return 'rgb(' + Math.round(255 - 229 * t) + ',' + Math.round(255 - 117 * t) + ',' + Math.round(255 - 197 * t) + ')';
}
// The state view: per layer, strips of units (unit u at column u), redrawn for each character
// picked: the state after the character before it (after the start character for the first),
// which made its guesses, and an LSTM's gates at that step. Grey: a unit not stored.
// A canvas holds one pixel a unit, drawn cw CSS pixels wide (at least 1, at most 12).
const rows = [], cw = Math.max(1, Math.min(12, 900 / D.hidden_size));
let stateShown = null, picked = -1;
for (let l = 0; l < D.layers; l++) {
  const title = document.createElement('div'); title.className = 'layer';
  title.textContent = 'layer ' + l; $('strips').appendChild(title);
  const add = (label, get, paint, kind) => {
    const line = document.createElement('div'), name = document.createElement('span');
    const canvas = document.createElement('canvas');
    line.className = 'strip'; name.textContent = label;
    canvas.width = D.hidden_size; canvas.height = 1;
    canvas.style.width = D.hidden_size * cw + 'px'; canvas.style.height = '14px';
    line.append(name, canvas); $('strips').appendChild(line);
    const r = {layer: l, label, get, paint, kind, canvas}; rows.push(r);
    canvas.addEventListener('mousemove', e => {
      const u = Math.floor(e.offsetX / cw), v = stateShown && stateShown[rows.indexOf(r)][u];
      $('stateunit').textContent = u >= D.hidden_size ? '' : 'layer ' + l + ', ' + label + ', unit ' + u + ': ' +
        (v === undefined || v === null ? '-' : Number.isNaN(v) ? 'not stored' : v.toFixed(3)) +
        (kind && !Number.isNaN(v) ? ' (click: show it in the neuron view)' : ''); });
    if (kind) canvas.addEventListener('click', e => { choose(l, kind, Math.floor(e.offsetX / cw));
      $('neuron').scrollIntoView({block: 'nearest'}); });
  };
  D.kinds.forEach(kind => { const b = block(l, kind);
    if (b) add(kind === 'cell' ? 'cell tanh(c)' : 'hidden h', i => {
      const out = new Float64Array(D.hidden_size).fill(NaN);
      const all = decode(b, 'codes'), start = decode(b, 'start');
      b.units.forEach((u, k) => out[u] = value(i === 0 ? start[k] : all[k * T + i - 1]));
      return out; }, colour, kind); });
  D.gates.filter(g => g.layer === l).forEach(g => add(g.gate, i => {
    const out = new Float64Array(D.hidden_size).fill(NaN), all = decode(g, 'codes');
    g.units.forEach((u, k) => out[u] = value(all[k * T + i]));
    return out; }, g.gate === 'cell candidate' ? colour : green, null));
}
function pickState(i) {
  if (i === picked) return; picked = i;
  stateShown = rows.map(r => {
    const values = r.get(i), ctx = r.canvas.getContext('2d');
    values.forEach((v, u) => { ctx.fillStyle = Number.isNaN(v) ? '#ddd' : r.paint(v);
      ctx.fillRect(u, 0, 1, 1); });
    return Array.from(values, v => Number.isNaN(v) ? NaN : v);
  });
  $('stateat').innerHTML = 'The guesses for <b>' + esc(show(chars[i])) + '</b> (character ' + (i + 1) +
    ') came from this state: ' + (i === 0 ? 'after the start character, before the text' :
    'after reading <b>' + esc(show(chars[i - 1])) + '</b> (character ' + i + ')') + '.';
}
hook(document.getElementById('surprisal'), () => '');
pickState(0);
const box = document.getElementById('neuron');
chars.forEach(c => { const s = document.createElement('span');
  s.textContent = c === '\n' ? '\u21b5\n' : c; box.appendChild(s); });
let active = null;
const nspans = hook(box, i => active ? 'activation ' + value(active[i]).toFixed(3) : '');
function paint() {
  const layer = +$('layer').value, kind = $('kind').value, unit = Number($('unit').value);
  const msg = $('msg'); msg.textContent = '';
  if (!Number.isInteger(unit) || unit < 0 || unit >= D.hidden_size) {
    msg.textContent = 'unit ' + $('unit').value + ' does not exist: give 0 to ' + (D.hidden_size - 1); return; }
  active = row(block(layer, kind), unit);
  if (!active) { msg.textContent = 'unit ' + unit + ' is not stored in this report (' + D.units_note + ')'; return; }
  nspans.forEach((s, i) => s.style.background = colour(value(active[i])));
  const hit = D.hits.find(h => h.layer === layer && h.kind === kind && h.unit === unit);
  $('which').textContent = 'layer ' + layer + ', ' + kind + ' state, unit ' + unit +
    (hit ? ' (r = ' + hit.r.toFixed(2) + ' with ' + hit.name + ')' : '');
  document.querySelectorAll('#hits button').forEach(b => b.classList.toggle('on',
    +b.dataset.layer === layer && b.dataset.kind === kind && +b.dataset.unit === unit));
}
function choose(layer, kind, unit) { $('layer').value = layer; $('kind').value = kind; $('unit').value = unit; paint(); }
for (let l = 0; l < D.layers; l++) $('layer').add(new Option('layer ' + l, l));
D.kinds.forEach(k => $('kind').add(new Option(k, k)));
$('unit').max = D.hidden_size - 1;
['layer', 'kind', 'unit'].forEach(id => $(id).addEventListener('change', paint));
$('unit').addEventListener('input', paint);
D.hits.forEach(h => { const b = document.createElement('button');
  Object.assign(b.dataset, {layer: h.layer, kind: h.kind, unit: h.unit});
  b.innerHTML = '<b>' + esc(h.name) + '</b>: layer ' + h.layer + ' ' + h.kind + ' ' + h.unit +
    ', r = ' + (h.r >= 0 ? '+' : '') + h.r.toFixed(2);
  b.title = h.what; b.addEventListener('click', () => choose(h.layer, h.kind, h.unit));
  $('hits').appendChild(b); });
choose(D.initial.layer, D.initial.kind, D.initial.unit);
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>@TITLE@</title><style>@STYLE@</style></head><body>
<h1>@TITLE@</h1><div class="meta">@META@</div>@NOTES@
<h2>Surprisal</h2>
<p>Each character coloured by how surprised the model was to see it: -log<sub>2</sub> p, in
bits (<span class="legend" style="background:linear-gradient(90deg,#fff,#f00)"></span>
0 to @SCALE@+ bits). Mean <b>@MEAN@ bits per character</b> over @KNOWN@ characters.
Hover a character, or click into the text and use the arrow keys, to see the model's top 5
guesses for it.</p>
<div id="surprisal" class="text" tabindex="0" aria-label="the text, coloured by surprisal">@SPANS@</div>
<h2>The state behind each guess</h2>
<p>Click a character above, or move through the text with the arrow keys, to see the state
the guesses for it came from: the network's state after reading the character before it. Each
strip is one layer's units, unit 0 on the left: the hidden state h, and for an LSTM the cell
state tanh(c) (<span class="legend" style="background:linear-gradient(90deg,#00f,#fff,#f00)">
</span> -1 to +1).@GATES@ Grey: a unit not stored. Watch which units hold their colour from
character to character: that is what the network remembers. Point at a unit for its value;
click an h or c unit to follow it in the neuron view below.</p>
<div id="state"><p id="stateat"></p><div id="strips"></div><p id="stateunit"></p></div>
<h2>Neurons</h2>
<p>One unit's activation after each character: <span class="legend"
style="background:linear-gradient(90deg,#00f,#fff,#f00)"></span> -1 to +1 (h for the hidden
state, tanh(c) for an LSTM's cell state). @UNITS@</p>
<div class="cols"><div>
<div class="controls"><label>Layer <select id="layer"></select></label>
<label>State <select id="kind"></select></label><label>Unit <input id="unit" type="number"
min="0" step="1"></label><span id="msg"></span></div>
<p id="which"></p>
<div id="neuron" class="text" tabindex="0" aria-label="the text, coloured by the unit's activation"></div>
</div><div><b>Units most correlated with properties of the text</b> (Pearson's r; click one):
<div id="hits"></div>@ABSENT@</div></div>
<h2>Memory and gradients</h2>
@CURVE@
<div id="tip" role="tooltip"></div>
<script type="application/json" id="data">@DATA@</script>
<script>@SCRIPT@</script>
</body></html>
"""


def heat(bits: float) -> str:
    """The surprisal colour: white at 0 bits to red at BITS_SCALE bits and above (#rrggbb)."""
    level = round(255 * (1 - min(max(bits, 0.0) / BITS_SCALE, 1.0)))
    return f"#ff{level:02x}{level:02x}"


def spans(text: str, bits, unknown) -> str:
    """The text as one span per character (a newline shown as a visible mark), coloured."""
    out = []
    for char, b, unk in zip(text, bits, unknown):
        shown = "\u21b5\n" if char == "\n" else html.escape(char)
        out.append(f'<span class="unk">{shown}</span>' if unk else
                   f'<span style="background:{heat(b)}">{shown}</span>')
    return "".join(out)


def curve_axis(curves, least: int = MIN_DECADES) -> tuple[int, int]:
    """The log axis (lowest, highest power of ten) that holds every curve (sequences of
    positive floats): whole decades, at least ``least`` of them, the top one just above the
    largest value, so that a curve falling by a factor of 100 looks as flat in one report as
    in another."""
    logs = [math.log10(max(v, 1e-300)) for curve in curves for v in curve]
    high = math.ceil(max(logs))
    return min(math.floor(min(logs)), high - least), high


def curve_svg(curves, width: int = 640, height: int = 260) -> str:
    """Gradient norms against distance k = 1..K as an inline SVG of lines on one log axis
    (``curve_axis``): ``curves`` is a list of (label, values [K]), the first drawn on top of
    the others; a legend names them when there are several."""
    left, right, top, bottom = 64, 12, 12, 36
    low, high = curve_axis([values for _, values in curves])
    longest = max(len(values) for _, values in curves)
    x = lambda k: left + (width - left - right) * (k - 1) / max(1, longest - 1)
    y = lambda v: top + (height - top - bottom) * (high - v) / (high - low)
    parts = [f'<svg id="curves" width="{width}" height="{height}" role="img" aria-label='
             f'"gradient norm against distance, log scale, 1e{low} to 1e{high}">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="'
             f'{height - top - bottom}" fill="none" stroke="#999"/>']
    decades = range(low, high + 1, max(1, (high - low + 5) // 6))
    for decade in decades:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(decade):.1f}" '
                     f'y2="{y(decade):.1f}" stroke="#eee"/><text x="{left - 6}" '
                     f'y="{y(decade) + 4:.1f}" text-anchor="end">1e{decade}</text>')
    for k in sorted({1, *range(10, longest + 1, 10), longest}):
        parts.append(f'<text x="{x(k):.1f}" y="{height - bottom + 16}" '
                     f'text-anchor="middle">{k}</text>')
    for index, (label, values) in reversed(list(enumerate(curves))):
        colour = CURVE_COLOURS[index % len(CURVE_COLOURS)]
        logs = [math.log10(max(v, 1e-300)) for v in values]
        points = " ".join(f"{x(k + 1):.1f},{y(v):.1f}" for k, v in enumerate(logs))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                     f'stroke-width="2"><title>{html.escape(label)}</title></polyline>')
        if len(curves) > 1:
            row = top + 16 + 16 * index
            parts.append(f'<line x1="{width - right - 200}" x2="{width - right - 180}" '
                         f'y1="{row - 4}" y2="{row - 4}" stroke="{colour}" stroke-width="2"/>'
                         f'<text x="{width - right - 174}" y="{row}">{html.escape(label)}'
                         '</text>')
    parts.append(f'<text x="{(left + width) / 2}" y="{height - 4}" text-anchor="middle">k, '
                 'characters back</text></svg>')
    return "".join(parts)


def render(fields: dict, data: dict) -> str:
    """The page: ``fields`` (already HTML) fill the @NAME@ marks; ``data`` goes in as JSON,
    with "<" escaped so that no text can close the script element."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    values = {**fields, "STYLE": STYLE, "SCRIPT": SCRIPT, "SCALE": f"{BITS_SCALE:g}",
              "DATA": payload}
    # One pass over the template: text filled in is never scanned for marks again.
    return re.sub(r"@([A-Z]+)@", lambda mark: values[mark.group(1)], PAGE)

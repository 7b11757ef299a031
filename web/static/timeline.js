// dxtrace timeline: draws what /api/traces/{key}/timeline returns for the visible
// window. The server decides between raw spans and per-bucket summaries, so the page
// never holds more than about one item per pixel per lane.
(function () {
  'use strict';
  const cv = document.getElementById('timeline');
  if (!cv) return;
  const ctx = cv.getContext('2d');
  const href = cv.dataset.href;
  const span = Number(cv.dataset.span);
  const LABEL_W = 170, AXIS_H = 22, TRACK_H = 34, LANE_H = 22, GAP = 6;
  const TRACKS = [['ioctls/s', 'ioctls', '#2f6fde'], ['bytes/s', 'bytes', '#7a4fd0'], ['VMBus msgs/s', 'vmbus', '#1f9d74']];
  const st = { t0: Number(cv.dataset.t0), t1: Number(cv.dataset.t1), data: null, sel: null, detail: null, seq: 0, rects: [] };
  // exposed for the end-to-end test and for debugging in the console
  window.dxtrace = { st, draws: 0, loads: 0, idle: () => !st.pending && !!st.data, rects: () => st.rects, hit: (x, y) => hit(x, y) };

  function plotW() { return Math.max(50, cv.clientWidth - LABEL_W); }
  function x(t) { return LABEL_W + (t - st.t0) / (st.t1 - st.t0) * plotW(); }
  function lanesTop() { return AXIS_H + TRACKS.length * (TRACK_H + 2) + GAP; }
  function color(kind, c) {
    const h = (c * 137.508 + (kind === 'vmbus' ? 170 : 20)) % 360;
    return kind === 'vmbus' ? `hsl(${h},45%,52%)` : `hsl(${h},65%,55%)`;
  }
  function fmtNs(n) {
    n = Math.round(n);
    if (n < 1e3) return n + ' ns';
    if (n < 1e6) return (n / 1e3).toFixed(2) + ' µs';
    if (n < 1e9) return (n / 1e6).toFixed(2) + ' ms';
    return (n / 1e9).toFixed(3) + ' s';
  }
  function fmtNum(v) {
    if (v >= 1e9) return (v / 1e9).toFixed(1) + 'G';
    if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (v >= 1e3) return (v / 1e3).toFixed(1) + 'k';
    return v.toFixed(0);
  }
  function esc(s) { return String(s).replace(/[&<>"]/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c])); }

  function resize() {
    const lanes = st.data ? st.data.lanes.length : 4;
    const h = lanesTop() + lanes * LANE_H + 10;
    const dpr = window.devicePixelRatio || 1;
    cv.style.height = h + 'px';
    cv.width = Math.round(cv.clientWidth * dpr);
    cv.height = Math.round(h * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  let timer = null;
  function schedule() { st.pending = true; clearTimeout(timer); timer = setTimeout(load, 60); draw(); updateUrl(); }
  async function load() {
    const seq = ++st.seq;
    const t0 = Math.max(0, Math.floor(st.t0)), t1 = Math.max(t0 + 1, Math.ceil(st.t1));
    const buckets = Math.min(8192, Math.max(1, Math.floor(plotW())));
    const r = await fetch(`/api/traces/${href}/timeline?t0=${t0}&t1=${t1}&buckets=${buckets}`);
    if (seq !== st.seq) return;
    if (!r.ok) { showError((await r.json().catch(() => ({}))).error || r.statusText); return; }
    const lanesBefore = st.data ? st.data.lanes.length : -1;
    const data = await r.json();
    if (seq !== st.seq) return;
    st.data = data;
    st.pending = false;
    window.dxtrace.loads++;
    if (st.data.lanes.length !== lanesBefore) resize();
    draw();
  }
  function showError(msg) { document.getElementById('detail').innerHTML = `<p class="error">${esc(msg)}</p>`; }

  function draw() {
    const W = cv.clientWidth, H = cv.clientHeight;
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, W, H);
    st.rects = [];
    document.getElementById('tl-window').textContent = `${fmtNs(st.t0)} – ${fmtNs(st.t1)}  (${fmtNs(st.t1 - st.t0)})`;
    drawAxis(W);
    const d = st.data;
    if (!d) { ctx.fillStyle = '#6b7385'; ctx.fillText('loading…', LABEL_W + 10, lanesTop() + 14); return; }
    const bw = d.bucket_ns;
    // throughput tracks
    TRACKS.forEach(([label, key, col], k) => {
      const y0 = AXIS_H + k * (TRACK_H + 2);
      ctx.fillStyle = '#f4f6fa'; ctx.fillRect(LABEL_W, y0, W - LABEL_W, TRACK_H);
      const vals = d.throughput[key];
      let max = 0; for (const v of vals) if (v > max) max = v;
      ctx.fillStyle = col;
      vals.forEach((v, b) => {
        if (!v) return;
        const xa = x(d.t0 + b * bw), xb = x(d.t0 + (b + 1) * bw);
        const h = Math.max(1, v / max * (TRACK_H - 4));
        ctx.fillRect(xa, y0 + TRACK_H - h, Math.max(1, xb - xa), h);
      });
      ctx.fillStyle = '#1d2330'; ctx.font = '11px system-ui';
      ctx.fillText(label, 6, y0 + 13);
      ctx.fillStyle = '#6b7385';
      ctx.fillText('max ' + fmtNum(max / (bw / 1e9)), 6, y0 + 27);
    });
    // lanes
    const top = lanesTop();
    d.lanes.forEach((l, k) => {
      const y = top + k * LANE_H;
      const kind = l.kind.kind;
      ctx.fillStyle = k % 2 ? '#fafbfd' : '#fff'; ctx.fillRect(LABEL_W, y, W - LABEL_W, LANE_H);
      ctx.fillStyle = kind === 'vmbus' ? '#1f6d54' : '#1d2330'; ctx.font = '12px system-ui';
      ctx.fillText(l.label.slice(0, 26), 6, y + 15);
      if (l.mode === 'spans') {
        for (const s of l.spans) {
          const xa = x(s.t), xb = x(s.t + s.d);
          const w = Math.max(2, xb - xa);
          ctx.fillStyle = color(kind, s.c);
          ctx.fillRect(xa, y + 3, w, LANE_H - 6);
          if (s.e) { ctx.fillStyle = '#d3263a'; ctx.fillRect(xa, y + 1, w, 3); ctx.fillRect(xa, y + LANE_H - 4, w, 3); }
          st.rects.push({ x: xa, y: y + 2, w, h: LANE_H - 4, lane: l.lane, i: s.i, t: s.t, d: s.d, name: names(kind)[s.c], e: s.e });
        }
      } else {
        let maxN = 1; for (const b of l.buckets) if (b.n > maxN) maxN = b.n;
        for (const b of l.buckets) {
          const xa = x(d.t0 + b.b * bw), xb = x(d.t0 + (b.b + 1) * bw);
          const w = Math.max(1, xb - xa);
          ctx.globalAlpha = 0.35 + 0.65 * Math.min(1, Math.log1p(b.n) / Math.log1p(maxN));
          ctx.fillStyle = color(kind, b.c);
          ctx.fillRect(xa, y + 3, w, LANE_H - 6);
          ctx.globalAlpha = 1;
          if (b.e) { ctx.fillStyle = '#d3263a'; ctx.fillRect(xa, y + 1, w, 3); }
          st.rects.push({ x: xa, y: y + 2, w, h: LANE_H - 4, lane: l.lane, i: b.i, t: d.t0 + b.b * bw, d: b.d, n: b.n, name: names(kind)[b.c], e: b.e > 0 });
        }
      }
    });
    const bottom = top + d.lanes.length * LANE_H;
    // damaged regions and drops span every lane
    for (const g of d.gaps) {
      ctx.fillStyle = 'rgba(211,38,58,0.15)';
      ctx.fillRect(x(g.t0), AXIS_H, Math.max(2, x(g.t1) - x(g.t0)), bottom - AXIS_H);
    }
    ctx.strokeStyle = 'rgba(211,38,58,0.8)'; ctx.lineWidth = 1;
    for (const dr of d.drops) {
      const xx = Math.round(x(dr.t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(xx, AXIS_H); ctx.lineTo(xx, bottom); ctx.stroke();
      ctx.fillStyle = '#d3263a';
      ctx.beginPath(); ctx.moveTo(xx - 4, AXIS_H); ctx.lineTo(xx + 4, AXIS_H); ctx.lineTo(xx, AXIS_H + 6); ctx.fill();
    }
    drawSelection(d, top);
    window.dxtrace.draws++;
  }
  function names(kind) { return kind === 'vmbus' ? st.data.vm_names : st.data.io_names; }
  function laneY(lane) {
    const k = st.data.lanes.findIndex(l => l.lane === lane);
    return k < 0 ? null : lanesTop() + k * LANE_H;
  }
  function drawSelection(d, top) {
    const det = st.detail;
    if (!det) return;
    const y = laneY(det.lane);
    if (y === null) return;
    const xa = x(det.t), xb = Math.max(xa + 2, x(det.t + det.d));
    ctx.strokeStyle = '#000'; ctx.lineWidth = 2; ctx.strokeRect(xa - 1, y + 1, xb - xa + 2, LANE_H - 2);
    // links from the call to the VMBus messages it caused (and back)
    ctx.setLineDash([4, 3]); ctx.strokeStyle = '#1f6d54'; ctx.lineWidth = 1.5;
    const ends = det.messages.filter(m => m.span).map(m => [m.t, m.span[0]]);
    if (det.caused_by) ends.push([null, det.caused_by[0]]);
    for (const [t, lane] of ends) {
      const y2 = laneY(lane);
      if (y2 === null) continue;
      const tx = t === null ? det.t : t;
      ctx.beginPath(); ctx.moveTo((xa + xb) / 2, y + LANE_H / 2); ctx.lineTo(x(tx), y2 + LANE_H / 2); ctx.stroke();
      ctx.beginPath(); ctx.arc(x(tx), y2 + LANE_H / 2, 3, 0, 7); ctx.stroke();
    }
    ctx.setLineDash([]);
  }
  function drawAxis(W) {
    ctx.fillStyle = '#f1f3f8'; ctx.fillRect(0, 0, W, AXIS_H);
    const dt = st.t1 - st.t0;
    const step = Math.pow(10, Math.floor(Math.log10(dt / 6)));
    const mult = dt / step > 30 ? 5 : dt / step > 12 ? 2 : 1;
    const s = step * mult;
    ctx.fillStyle = '#6b7385'; ctx.font = '11px system-ui'; ctx.strokeStyle = '#dde1ea';
    for (let t = Math.ceil(st.t0 / s) * s; t <= st.t1; t += s) {
      const xx = Math.round(x(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(xx, 14); ctx.lineTo(xx, AXIS_H); ctx.stroke();
      ctx.fillText(fmtNs(t), xx + 3, 12);
    }
  }

  function hit(px, py) {
    let best = null;
    for (const r of st.rects) {
      if (py >= r.y && py <= r.y + r.h && px >= r.x - 2 && px <= r.x + r.w + 2) {
        if (!best || r.w < best.w) best = r;
      }
    }
    return best;
  }

  async function select(lane, i) {
    const r = await fetch(`/api/traces/${href}/events/${lane}/${i}`);
    const j = await r.json().catch(() => ({ error: r.statusText }));
    if (!r.ok) { showError(j.error); return; }
    st.sel = [lane, i]; st.detail = j;
    renderDetail(j); draw(); updateUrl();
  }

  function treeRows(f, depth, out) {
    out.push(`<tr><td style="padding-left:${depth * 16 + 4}px">${esc(f.name)}</td><td class="dim">@${f.offset}+${f.size}</td><td class="dim">${esc(f.ty)}</td><td>${esc(f.rendered)}</td></tr>`);
    for (const c of (f.children || [])) treeRows(c, depth + 1, out);
  }
  function renderDetail(j) {
    const out = [];
    out.push(`<h2 id="detail-name">${esc(j.name)}</h2>`);
    out.push(`<p><a href="/traces/${href}/events/${j.lane}/${j.i}">open as a page</a> · ${esc(j.kind)} · start ${fmtNs(j.t)} · duration ${fmtNs(j.d)} · pid/tid ${j.pid}/${j.tid}</p>`);
    if (j.ioctl) {
      const io = j.ioctl;
      out.push(`<p>id ${io.id} · code ${esc(io.code)} · fd ${io.fd} · return <b class="${io.ret < 0 ? 'error' : ''}">${esc(io.ret_rendered)}</b></p>`);
      for (const n of io.decoded.notes) out.push(`<p class="note">${esc(n)}</p>`);
      const rows = []; treeRows(io.decoded.arg, 0, rows);
      for (const b of io.decoded.buffers) treeRows(b, 0, rows);
      out.push(`<table class="tree">${rows.join('')}</table>`);
      for (const b of io.buffers) out.push(`<h3>${esc(b.role)} ${esc(b.path)} at ${esc(b.addr)}: ${b.captured} of ${b.len} bytes${b.truncated ? ' (truncated)' : ''}</h3><pre class="hex">${esc(b.hex)}</pre>`);
    }
    if (j.caused_by) out.push(`<p>caused by <a href="#" data-sel="${j.caused_by[0]}:${j.caused_by[1]}">ioctl ${j.caused_by[1]} on lane ${j.caused_by[0]}</a></p>`);
    out.push(`<h3>VMBus messages (${j.messages.length})</h3>`);
    for (const m of j.messages) {
      const rows = []; for (const f of m.decoded.fields) treeRows(f, 0, rows);
      out.push(`<h3>${esc(m.dir)} ${esc(m.decoded.name)} at ${fmtNs(m.t)}${m.status !== null ? ' · status ' + m.status : ''}</h3><table class="tree">${rows.join('')}</table><pre class="hex">${esc(m.hex)}</pre>`);
    }
    const el = document.getElementById('detail');
    el.innerHTML = out.join('');
    el.querySelectorAll('a[data-sel]').forEach(a => a.addEventListener('click', e => {
      e.preventDefault(); const [l, i] = a.dataset.sel.split(':').map(Number); select(l, i);
    }));
  }

  function updateUrl() {
    const p = new URLSearchParams({ t0: Math.floor(st.t0), t1: Math.ceil(st.t1) });
    if (st.sel) p.set('ev', st.sel.join(':'));
    history.replaceState(null, '', `${location.pathname}?${p}`);
  }

  function zoom(f, at) {
    const w = st.t1 - st.t0;
    const nw = Math.min(span, Math.max(1000, w * f));
    const c = at === undefined ? (st.t0 + st.t1) / 2 : at;
    const r = (c - st.t0) / w;
    st.t0 = c - r * nw; st.t1 = st.t0 + nw;
    clamp(); schedule();
  }
  function pan(dt) { st.t0 += dt; st.t1 += dt; clamp(); schedule(); }
  function clamp() {
    const w = st.t1 - st.t0;
    if (st.t0 < 0) { st.t0 = 0; st.t1 = w; }
    if (st.t1 > span) { st.t1 = span; st.t0 = Math.max(0, span - w); }
  }
  function tAt(px) { return st.t0 + (px - LABEL_W) / plotW() * (st.t1 - st.t0); }

  cv.addEventListener('wheel', e => {
    e.preventDefault();
    const r = cv.getBoundingClientRect();
    if (e.shiftKey) { pan((st.t1 - st.t0) * Math.sign(e.deltaY) * 0.1); return; }
    zoom(e.deltaY < 0 ? 0.8 : 1.25, tAt(e.clientX - r.left));
  }, { passive: false });
  let drag = null;
  cv.addEventListener('mousedown', e => { drag = { x: e.clientX, t0: st.t0, t1: st.t1, moved: false }; cv.focus({ preventScroll: true }); });
  window.addEventListener('mousemove', e => {
    const tip = document.getElementById('tl-tip');
    if (drag) {
      const dx = e.clientX - drag.x;
      if (Math.abs(dx) > 3) drag.moved = true;
      if (drag.moved) {
        const dt = -dx / plotW() * (drag.t1 - drag.t0);
        st.t0 = drag.t0 + dt; st.t1 = drag.t1 + dt; clamp(); schedule();
      }
      return;
    }
    const r = cv.getBoundingClientRect();
    const h = (e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom) ? hit(e.clientX - r.left, e.clientY - r.top) : null;
    if (h) {
      tip.style.display = 'block'; tip.style.left = (e.clientX + 12) + 'px'; tip.style.top = (e.clientY + 12) + 'px';
      tip.textContent = h.n ? `${h.n} events; longest ${h.name} ${fmtNs(h.d)}` : `${h.name} ${fmtNs(h.d)}${h.e ? ' (failed)' : ''}`;
    } else tip.style.display = 'none';
  });
  window.addEventListener('mouseup', e => {
    if (drag && !drag.moved) {
      const r = cv.getBoundingClientRect();
      const h = hit(e.clientX - r.left, e.clientY - r.top);
      window.dxtrace.lastHit = h;
      if (h) select(h.lane, h.i);
    }
    drag = null;
  });
  cv.addEventListener('keydown', e => {
    const w = st.t1 - st.t0;
    if (e.key === 'ArrowLeft') pan(-w * 0.1);
    else if (e.key === 'ArrowRight') pan(w * 0.1);
    else if (e.key === '+' || e.key === '=') zoom(0.5);
    else if (e.key === '-' || e.key === '_') zoom(2);
    else if (e.key === '0') { st.t0 = 0; st.t1 = span; schedule(); }
    else return;
    e.preventDefault();
  });
  document.getElementById('tl-zoom-in').onclick = () => zoom(0.5);
  document.getElementById('tl-zoom-out').onclick = () => zoom(2);
  document.getElementById('tl-reset').onclick = () => { st.t0 = 0; st.t1 = span; schedule(); };
  window.addEventListener('resize', () => { resize(); schedule(); });

  resize();
  load();
  const ev = cv.dataset.ev;
  if (ev) { const [l, i] = ev.split(':').map(Number); select(l, i); }
})();

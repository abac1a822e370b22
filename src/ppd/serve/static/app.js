// ppd serve: the page. Plain JS, no build step. Coordinates sent to the API are image pixels
// of the image as the server decoded it (EXIF rotation applied), which is what is drawn here.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  session: null, image: null, img: null,          // click mode: the open image
  points: [], labels: [], history: [],            // prompts and the undo stack
  before: null, defended: null, view: "after",    // SAM's mask for the points; the defender's answer
  seq: 0,                                         // request counter: stale answers are dropped
  samples: [], busy: 0,
};

// ---------------------------------------------------------------- API
async function api(path, opts = {}) {
  const init = { method: opts.method || "POST", headers: {} };
  if (opts.json !== undefined) { init.body = JSON.stringify(opts.json); init.headers["Content-Type"] = "application/json"; }
  if (opts.form !== undefined) init.body = opts.form;
  if (opts.method === "GET") init.method = "GET";
  const r = await fetch(path, init);
  let data = null;
  try { data = await r.json(); } catch (e) { data = { error: `${r.status} ${r.statusText}` }; }
  if (!r.ok) throw new Error(data && data.error ? data.error : `${r.status} ${r.statusText}`);
  return data;
}
const sess = (p) => `/api/sessions/${S.session}${p}`;

function status(text, error = false) {
  const el = $("status"); el.textContent = text; el.classList.toggle("error", error);
}
async function busy(text, fn) {
  S.busy++; document.body.dataset.busy = "1"; status(text);
  try { return await fn(); }
  catch (e) { status(e.message, true); throw e; }
  finally { S.busy--; if (!S.busy) document.body.dataset.busy = "0"; }
}

// ---------------------------------------------------------------- images and masks
function loadImg(url) {
  return new Promise((ok, bad) => { const im = new Image(); im.onload = () => ok(im); im.onerror = () => bad(new Error("cannot load " + url)); im.src = url; });
}
const tinted = new Map();  // mask data URL + colour -> canvas with the mask tinted
async function tint(url, rgba) {
  const key = url + rgba;
  if (tinted.has(key)) return tinted.get(key);
  const im = await loadImg(url);
  const c = document.createElement("canvas"); c.width = im.width; c.height = im.height;
  const g = c.getContext("2d"); g.drawImage(im, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height), p = d.data;
  for (let i = 0; i < p.length; i += 4) {
    const on = p[i] > 127;
    p[i] = rgba[0]; p[i + 1] = rgba[1]; p[i + 2] = rgba[2]; p[i + 3] = on ? rgba[3] : 0;
  }
  g.putImageData(d, 0, 0);
  if (tinted.size > 64) tinted.clear();
  tinted.set(key, c);
  return c;
}
const MASK_RGBA = [30, 144, 255, 110];

function dot(g, x, y, r, fill, stroke = "#fff", lw = 2) {
  g.beginPath(); g.arc(x, y, r, 0, 2 * Math.PI);
  if (fill) { g.fillStyle = fill; g.fill(); }
  if (stroke) { g.lineWidth = lw; g.strokeStyle = stroke; g.stroke(); }
}
function cross(g, x, y, r, colour = "#ffd600", lw = 3) {
  g.lineWidth = lw; g.strokeStyle = colour; g.beginPath();
  g.moveTo(x - r, y - r); g.lineTo(x + r, y + r); g.moveTo(x + r, y - r); g.lineTo(x - r, y + r); g.stroke();
}
const radius = (c) => Math.max(4, Math.round(Math.max(c.width, c.height) / 110));
const LABEL_COLOUR = { 1: "#2e7d32", 0: "#c62828" };

// ---------------------------------------------------------------- click mode
async function openImage(info) {
  S.image = info; S.img = await loadImg(info.url);
  S.points = []; S.labels = []; S.history = []; S.before = null; S.defended = null;
  for (const c of [$("canvas"), $("canvas-after")]) { c.width = info.width; c.height = info.height; }
  status(`${info.name}: ${info.width}×${info.height}, embedded in ${info.embed_s.toFixed(2)} s — click on the object`);
  await redraw();
}

async function openSample(name) {
  await ensureSession();
  const info = await busy(`embedding ${name}…`, () => api(sess(`/samples/${encodeURIComponent(name)}`)));
  await openImage(info);
}

async function upload(file, path = "/images") {
  await ensureSession();
  const form = new FormData(); form.append("file", file, file.name);
  return busy(`uploading and embedding ${file.name}…`, () => api(sess(path), { form }));
}

function toImage(e, canvas) {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height,
          canvas.width / r.width];
}

function nearest(list, x, y, maxDist) {
  let best = -1, bd = maxDist;
  list.forEach(([px, py], i) => { const d = Math.hypot(px - x, py - y); if (d <= bd) { bd = d; best = i; } });
  return best;
}

function onCanvasClick(e, negative) {
  if (!S.image) return;
  e.preventDefault();
  const [x, y, scale] = toImage(e, $("canvas"));
  S.history.push([S.points.slice(), S.labels.slice()]);
  const hit = nearest(S.points, x, y, 10 * scale);
  if (hit >= 0) { S.points.splice(hit, 1); S.labels.splice(hit, 1); }
  else { S.points.push([Math.round(x * 10) / 10, Math.round(y * 10) / 10]); S.labels.push(negative ? 0 : 1); }
  promptsChanged();
}

async function promptsChanged() {
  S.defended = null;
  const seq = ++S.seq;
  if (!S.points.length) { S.before = null; await redraw(); status("no points: click on the object"); return; }
  const t0 = performance.now();
  try {
    const r = await api(sess(`/images/${S.image.image}/predict`), { json: { points: S.points, labels: S.labels } });
    if (seq !== S.seq) return;  // a newer click is on its way
    S.before = r;
    status(`SAM mask: ${r.area} px, predicted IoU ${r.iou.toFixed(3)} (${Math.round(performance.now() - t0)} ms)`);
  } catch (e) { if (seq === S.seq) status(e.message, true); }
  await redraw();
}

async function defend() {
  if (!S.image || !S.points.length) { status("click some points first", true); return; }
  const seq = S.seq;
  const r = await busy("defending…", () => api(sess(`/images/${S.image.image}/defend`),
    { json: { points: S.points, labels: S.labels, use_reference: true, check_labels: $("check-labels").checked } }));
  if (seq !== S.seq) return;
  S.defended = r; S.before = { mask: r.before.mask, iou: r.before.iou, area: null };
  const flipped = r.relabeled.filter(Boolean).length;
  status(`defender: kept ${r.status.filter((s) => s === "kept").length} of ${r.points.length} in ${r.defend_s.toFixed(2)} s`
         + (flipped ? `, ${flipped} label(s) flipped` : "") + (r.used_reference ? " (with the one-shot reference)" : ""));
  await redraw();
}

async function drawScene(canvas, maskUrl, showDefence) {
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  if (!S.img) return;
  g.drawImage(S.img, 0, 0);
  if (maskUrl) g.drawImage(await tint(maskUrl, MASK_RGBA), 0, 0);
  const rr = radius(canvas), d = showDefence ? S.defended : null;
  S.points.forEach(([x, y], i) => {
    const sup = d && d.status[i] === "suppressed";
    dot(g, x, y, rr, sup ? "rgba(0,0,0,.35)" : LABEL_COLOUR[d ? d.labels[i] : S.labels[i]]);  // a label hypothesis may relabel
    if (sup) cross(g, x, y, rr * 1.4);
  });
  canvas.dataset.maskArea = maskUrl ? "1" : "0";
}

async function redraw() {
  const d = S.defended, side = S.view === "side" && d;
  const mainMask = d && S.view === "after" ? d.after.mask : (S.before ? S.before.mask : null);
  await drawScene($("canvas"), mainMask, d && S.view === "after");
  $("fig-after").hidden = !side;
  if (side) await drawScene($("canvas-after"), d.after.mask, true);
  $("cap-main").textContent = d ? (S.view === "after" ? "after the defender" : "before (all points)") : "SAM on your points";
  $("canvas").dataset.maskDrawn = mainMask ? "1" : "0";
  $("iou-before").textContent = S.before ? S.before.iou.toFixed(3) : "–";
  $("iou-after").textContent = d ? d.after.iou.toFixed(3) : "–";
  $("npoints").textContent = S.points.length;
  $("stop-reason").textContent = d ? `· ${d.stop_reason}` : "";
  fillLists();
  downloads(mainMask);
}

function fillLists() {
  const kept = $("kept-list"), sup = $("suppressed-list"), d = S.defended;
  kept.innerHTML = ""; sup.innerHTML = "";
  if (!d) return;
  const item = (i) => {
    const li = document.createElement("li"), [x, y] = d.points[i];
    li.dataset.x = x; li.dataset.y = y; li.dataset.label = d.labels[i]; li.dataset.index = i;
    li.textContent = `${d.labels[i] ? "+" : "−"} (${x.toFixed(1)}, ${y.toFixed(1)})` + (d.relabeled[i] ? " flipped" : "");
    li.dataset.relabeled = d.relabeled[i] ? "1" : "0";
    return li;
  };
  d.status.forEach((s, i) => { if (s === "kept") kept.appendChild(item(i)); });
  d.removal_order.forEach((i, n) => {
    const li = item(i);
    li.textContent += ` #${n + 1}, Q = ${d.q_value[i].toFixed(3)}`;
    li.title = `removed ${n + 1}. with Q-value ${d.q_value[i].toFixed(4)}`;
    sup.appendChild(li);
  });
}

function downloads(maskUrl) {
  const m = $("dl-mask"), p = $("dl-prompts");
  m.classList.toggle("disabled", !maskUrl);
  if (maskUrl) m.href = maskUrl;
  const body = S.defended || { points: S.points, labels: S.labels };
  p.classList.toggle("disabled", !S.points.length);
  if (p.dataset.url) URL.revokeObjectURL(p.dataset.url);
  p.href = p.dataset.url = URL.createObjectURL(new Blob([JSON.stringify(body, null, 1)], { type: "application/json" }));
}

function onHover(e) {
  const tip = $("tooltip"), d = S.defended;
  if (!d || S.view === "before") { tip.hidden = true; return; }
  const canvas = e.currentTarget, [x, y, scale] = toImage(e, canvas);
  const i = nearest(d.points, x, y, 12 * scale);
  if (i < 0 || d.status[i] !== "suppressed") { tip.hidden = true; return; }
  tip.textContent = `suppressed #${d.removal_order.indexOf(i) + 1} · Q = ${d.q_value[i].toFixed(3)}`;
  tip.style.left = `${e.clientX + 12}px`; tip.style.top = `${e.clientY + 12}px`; tip.hidden = false;
}

// ---------------------------------------------------------------- one-shot mode
const O = { ref: null, refImg: null };

async function setReference(body, img) {
  const r = await busy("setting the reference…", () => api(sess("/reference"), { json: body }));
  O.ref = r; O.refImg = img;
  const c = $("ref-canvas"); c.width = img.width; c.height = img.height;
  const g = c.getContext("2d"); g.drawImage(img, 0, 0); g.drawImage(await tint(r.mask, [46, 125, 50, 120]), 0, 0);
  $("ref-info").textContent = `reference: ${r.area} px from ${r.source}; ${r.objects} object(s) → mode ${r.mode}`;
  status("reference set — pick targets and press Run");
}

async function refFromSample(name) {
  await ensureSession();
  const info = await busy(`embedding ${name}…`, () => api(sess(`/samples/${encodeURIComponent(name)}`)));
  await setReference({ image: info.image }, await loadImg(info.url));
}

async function runOneshot() {
  if (!O.ref) { status("set a reference first", true); return; }
  const picked = [...document.querySelectorAll("#target-samples input:checked")].map((el) => el.value);
  const files = [...$("target-upload").files];
  if (!picked.length && !files.length) { status("pick or upload targets", true); return; }
  $("targets").innerHTML = "";
  const k = parseInt($("k").value, 10) || 10;
  const jobs = picked.map((n) => ({ name: n, open: () => api(sess(`/samples/${encodeURIComponent(n)}`)) }))
    .concat(files.map((f) => ({ name: f.name, open: () => upload(f) })));
  let n = 0;
  for (const job of jobs) {
    n++;
    const card = document.createElement("div"); card.className = "card"; card.dataset.target = job.name;
    card.textContent = `${job.name}: embedding…`; $("targets").appendChild(card);
    try {
      const info = await busy(`target ${n}/${jobs.length}: ${job.name}…`, job.open);
      const adapt = $("adapt").checked;
      const what = adapt && n === 1 ? "one-shot (a new reference: the defender is adapted to it first, about a minute)" : "one-shot";
      const r = await busy(`target ${n}/${jobs.length}: ${what}…`, () => api(sess(`/images/${info.image}/oneshot`), { json: { k, adapt } }));
      await drawCard(card, info, r, await loadImg(info.url));
    } catch (e) { card.classList.add("error"); card.textContent = `${job.name}: ${e.message}`; }
  }
  status(`one-shot done on ${jobs.length} target(s)`);
}

async function drawCard(card, info, r, img) {
  card.innerHTML = "";
  const c = document.createElement("canvas"); c.width = img.width; c.height = img.height;
  const g = c.getContext("2d"), rr = radius(c);
  g.drawImage(img, 0, 0); g.drawImage(await tint(r.final.mask, MASK_RGBA), 0, 0);
  r.candidates.points.forEach(([x, y], i) => dot(g, x, y, rr * .35, r.candidates.labels[i] ? "#80deea" : "#f48fb1", null));
  r.points.forEach(([x, y], i) => {
    if (r.status[i] === "suppressed") cross(g, x, y, rr);
    else dot(g, x, y, rr * .8, null, LABEL_COLOUR[r.labels[i]], 3);
  });
  const kept = r.status.filter((s) => s === "kept").length;
  const stats = document.createElement("div"); stats.className = "stats";
  const dice = r.dice ? ` · Dice start ${r.dice.start.toFixed(3)} → final ${r.dice.final.toFixed(3)}` : "";
  stats.textContent = `${info.name}: ${r.candidates.points.length} candidates → start set ${r.points.length} → kept ${kept}`
    + ` (${r.mode}) · SAM IoU ${r.start.iou.toFixed(3)} → ${r.final.iou.toFixed(3)}${dice} · ${r.oneshot_s.toFixed(2)} s`
    + (r.adapted ? ` · defender adapted to the reference${r.adapted.reused ? "" : ` (${r.adapted.seconds.toFixed(0)} s)`}` : "");
  const a = document.createElement("a"); a.href = r.final.mask; a.download = `${info.name}.mask.png`;
  a.textContent = "mask PNG"; a.className = "button";
  card.dataset.kept = kept; card.dataset.done = "1"; card.dataset.adapted = r.adapted ? "1" : "0";
  card.append(c, stats, a);
}

// ---------------------------------------------------------------- wiring
async function ensureSession() {
  if (!S.session) S.session = (await api("/api/sessions")).session;
}

function setMode(mode) {
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.mode === mode));
  $("click-mode").hidden = mode !== "click"; $("oneshot-mode").hidden = mode !== "oneshot";
}

async function init() {
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => setMode(b.dataset.mode)));
  const canvas = $("canvas");
  canvas.addEventListener("click", (e) => onCanvasClick(e, e.shiftKey));
  canvas.addEventListener("contextmenu", (e) => onCanvasClick(e, true));
  canvas.addEventListener("mousemove", onHover);
  $("canvas-after").addEventListener("mousemove", onHover);
  canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  $("undo").addEventListener("click", () => {
    if (!S.history.length) return;
    [S.points, S.labels] = S.history.pop(); promptsChanged();
  });
  $("clear").addEventListener("click", () => { S.history.push([S.points, S.labels]); S.points = []; S.labels = []; promptsChanged(); });
  $("defend").addEventListener("click", () => defend().catch(() => {}));
  document.querySelectorAll("input[name=view]").forEach((r) => r.addEventListener("change", () => { S.view = r.value; redraw(); }));
  $("sample").addEventListener("change", (e) => e.target.value && openSample(e.target.value).catch(() => {}));
  $("upload").addEventListener("change", async (e) => {
    const f = e.target.files[0]; if (!f) return;
    try { await openImage(await upload(f)); } catch (err) { /* shown in the status line */ }
    e.target.value = "";
  });
  $("ref-sample").addEventListener("change", (e) => e.target.value && refFromSample(e.target.value).catch(() => {}));
  $("ref-upload").addEventListener("change", async (e) => {
    const f = e.target.files[0]; if (!f) return;
    try { O.pending = await upload(f); O.pendingImg = await loadImg(O.pending.url); status("now upload its mask, or use “from my clicks”"); }
    catch (err) { /* shown */ }
  });
  $("ref-mask-upload").addEventListener("change", async (e) => {
    const f = e.target.files[0]; if (!f) return;
    if (!O.pending) { status("upload the reference image first", true); return; }
    try {
      await upload(f, `/images/${O.pending.image}/mask`);
      await setReference({ image: O.pending.image }, O.pendingImg);
    } catch (err) { /* shown */ }
  });
  $("ref-from-clicks").addEventListener("click", () => {
    if (!S.image || !S.points.length) { status("open an image in the Click tab and click the object first", true); return; }
    setReference({ image: S.image.image, points: S.points, labels: S.labels }, S.img).catch(() => {});
  });
  $("run-oneshot").addEventListener("click", () => runOneshot().catch(() => {}));

  try {
    S.samples = await api("/api/samples", { method: "GET" });
    for (const s of S.samples) {
      const o = document.createElement("option"); o.value = s.name; o.textContent = s.name; o.title = s.group;
      $("sample").appendChild(o);
      if (s.has_mask) { const r = o.cloneNode(true); $("ref-sample").appendChild(r); }
      if (s.role === "target") {
        const l = document.createElement("label");
        l.innerHTML = `<input type="checkbox" value="${s.name}"> ${s.name}`;
        $("target-samples").appendChild(l);
      }
    }
    await ensureSession();
    status("ready: pick a sample or upload an image");
  } catch (e) { status(e.message, true); }
}
init();

// nnlab doodle demo: draw on the canvas, the model guesses while you draw.
//
// Strokes are kept in a 0..256 "board" space (independent of the canvas' on-screen size) with
// t in milliseconds since the drawing's first point, and sent as Google's raw format
// [[x...], [y...], [t...]]; the server simplifies them (Google's algorithm) before guessing.
"use strict";

(() => {
  const BOARD = 256;            // board units across the canvas
  const INK_WIDTH = 5.5;        // stroke width on screen, in board units
  const MIN_STEP = 0.75;        // ignore pointer moves shorter than this (board units)
  const DEBOUNCE_MS = 150;      // guess this long after the drawing last changed...
  const MAX_WAIT_MS = 450;      // ...and at least this often while it keeps changing

  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const guessItems = Array.from($("guesses").children);

  let strokes = [];             // [{x: [], y: [], t: []}] in board units
  let current = null;           // the stroke being drawn (also in strokes)
  let activePointer = null;
  let t0 = null;                // time of the drawing's first point
  let sample = null;            // a validation drawing being shown: {word, drawing, predictions, lines}
  let animation = null;
  let classes = [];
  // The server's limits, from /api/health; until then (or without it) none here: the server refuses beyond them.
  let limits = {strokes: Infinity, points: Infinity};

  // ------------------------------------------------------------------ canvas

  function resize() {
    const rect = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(rect.width * dpr));
    canvas.height = Math.max(1, Math.round(rect.height * dpr));
    redraw();
  }

  function setupContext() {
    ctx.setTransform(canvas.width / BOARD, 0, 0, canvas.height / BOARD, 0, 0);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = INK_WIDTH;
  }

  function drawPolyline(xs, ys, count, colour) {
    if (!count) return;
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    if (count === 1) {
      ctx.beginPath();
      ctx.arc(xs[0], ys[0], INK_WIDTH / 2, 0, 2 * Math.PI);
      ctx.fill();
      return;
    }
    ctx.beginPath();
    ctx.moveTo(xs[0], ys[0]);
    for (let i = 1; i < count; i++) ctx.lineTo(xs[i], ys[i]);
    ctx.stroke();
  }

  function redraw(progress = 1) {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    setupContext();
    if (sample) {
      drawSample(progress);
    } else {
      for (const s of strokes) drawPolyline(s.x, s.y, s.x.length, "#1f2430");
    }
    $("hint").classList.toggle("hidden", strokes.length > 0 || sample !== null);
    $("undo").disabled = strokes.length === 0 || sample !== null;
    $("clear").disabled = strokes.length === 0 && sample === null;
  }

  // A sample is in Google's simplified space (0..255, aligned to the top-left): centre it on the
  // board with a margin.
  function sampleStrokes(drawing) {
    const xs = drawing.flatMap((s) => s[0]), ys = drawing.flatMap((s) => s[1]);
    const x0 = Math.min(...xs), y0 = Math.min(...ys);
    const w = Math.max(...xs) - x0, h = Math.max(...ys) - y0;
    const pad = 36, scale = (BOARD - 2 * pad) / Math.max(w, h, 64);
    const dx = (BOARD - w * scale) / 2 - x0 * scale, dy = (BOARD - h * scale) / 2 - y0 * scale;
    return drawing.map(([sx, sy]) => ({x: sx.map((v) => dx + v * scale), y: sy.map((v) => dy + v * scale)}));
  }

  function drawSample(progress) {
    const total = sample.lines.reduce((n, s) => n + s.x.length, 0);
    let budget = Math.ceil(progress * total);
    for (const s of sample.lines) {
      const n = Math.min(budget, s.x.length);
      drawPolyline(s.x, s.y, n, "#2d5bd7");
      budget -= n;
      if (budget <= 0) break;
    }
  }

  // ------------------------------------------------------------------ pointer input (mouse, pen, touch)

  function boardPoint(event) {
    const rect = canvas.getBoundingClientRect();
    return [(event.clientX - rect.left) / rect.width * BOARD, (event.clientY - rect.top) / rect.height * BOARD];
  }

  function pointCount() {
    return strokes.reduce((n, s) => n + s.x.length, 0);
  }

  function addPoint(event) {
    const [x, y] = boardPoint(event);
    const n = current.x.length;
    if (n && Math.hypot(x - current.x[n - 1], y - current.y[n - 1]) < MIN_STEP) return false;
    if (pointCount() >= limits.points) {
      setStatus("That's a lot of ink! Clear the canvas to start again.", true);
      return false;
    }
    current.x.push(x);
    current.y.push(y);
    current.t.push(Math.max(0, Math.round(event.timeStamp - t0)));
    return true;
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (activePointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    if (sample) clearAll();
    if (strokes.length >= limits.strokes) {
      setStatus(`At most ${limits.strokes} strokes; clear the canvas to start again.`, true);
      return;
    }
    activePointer = event.pointerId;
    try {
      canvas.setPointerCapture(event.pointerId);  // keep the stroke when the pointer leaves the canvas
    } catch (err) {
      // a pointer the browser no longer tracks: the stroke still works inside the canvas
    }
    if (t0 === null) t0 = event.timeStamp;
    current = {x: [], y: [], t: []};
    strokes.push(current);
    addPoint(event);
    redraw();
    schedule();
  });

  canvas.addEventListener("pointermove", (event) => {
    if (event.pointerId !== activePointer || !current) return;
    event.preventDefault();
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    let changed = false;
    for (const e of (events.length ? events : [event])) changed = addPoint(e) || changed;
    if (changed) {
      redraw();
      schedule();
    }
  });

  function endStroke(event) {
    if (event.pointerId !== activePointer) return;
    activePointer = null;
    current = null;
    schedule();
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  // ------------------------------------------------------------------ guessing (debounced, in order)

  let debounceTimer = null, maxWaitTimer = null;
  let generation = 0;           // bumped by clear/undo/sample: older answers are dropped
  let inFlight = false, dirty = false;

  function schedule() {
    dirty = true;
    clearTimeout(debounceTimer);
    debounceTimer = setTimeout(flush, DEBOUNCE_MS);
    if (maxWaitTimer === null) maxWaitTimer = setTimeout(flush, MAX_WAIT_MS);
  }

  function payload() {
    const round = (v) => Math.round(v * 10) / 10;
    return strokes.filter((s) => s.x.length > 0).map((s) => [s.x.map(round), s.y.map(round), s.t.slice()]);
  }

  async function flush() {
    clearTimeout(debounceTimer);
    clearTimeout(maxWaitTimer);
    debounceTimer = maxWaitTimer = null;
    if (!dirty || inFlight) return;     // a busy request reschedules itself when it returns
    dirty = false;
    const drawing = payload();
    if (!drawing.length) {
      showGuesses([]);
      setVerdict("Waiting for a doodle…");
      return;
    }
    const mine = generation;
    inFlight = true;
    try {
      const response = await fetch("/api/predict", {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({drawing, top_k: 3}),
      });
      const body = await response.json();
      if (mine !== generation) return;
      if (!response.ok) {
        setStatus(`The server refused the drawing: ${body.detail || response.status}`, true);
        return;
      }
      showGuesses(body.predictions);
      setVerdict(verdictFor(body.predictions));
      setStatus("");
    } catch (err) {
      if (mine === generation) setStatus(`Cannot reach the model (${err.message}).`, true);
    } finally {
      inFlight = false;
      if (dirty) schedule();
    }
  }

  // ------------------------------------------------------------------ guesses and words

  function article(word) {
    return /^[aeiou]/i.test(word) ? "an" : "a";
  }

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  }

  function verdictFor(predictions) {
    if (!predictions.length) return "Waiting for a doodle…";
    const [first, second] = predictions;
    const w = escapeHtml(first.word);
    if (first.probability >= 0.6) return `It's ${article(first.word)} <b>${w}</b>!`;
    if (first.probability >= 0.3) return `I think it's ${article(first.word)} <b>${w}</b>.`;
    return second ? `Hmm… <b>${w}</b>? Or <b>${escapeHtml(second.word)}</b>?` : `Hmm… <b>${w}</b>?`;
  }

  function setVerdict(html) {
    $("verdict").innerHTML = html;
  }

  function setStatus(text, isError = false) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  function showGuesses(predictions) {
    guessItems.forEach((li, i) => {
      const p = predictions[i];
      li.classList.toggle("empty", !p);
      li.classList.toggle("filled", !!p);
      li.querySelector(".word").textContent = p ? p.word : "—";
      li.querySelector(".pct").textContent = p ? `${(100 * p.probability).toFixed(1)}%` : "";
      li.querySelector(".bar i").style.width = p ? `${Math.max(1, 100 * p.probability).toFixed(1)}%` : "0";
    });
  }

  function suggest() {
    if (!classes.length) return;
    $("suggest").textContent = classes[Math.floor(Math.random() * classes.length)];
  }

  // ------------------------------------------------------------------ buttons and keys

  function stopAnimation() {
    if (animation !== null) cancelAnimationFrame(animation);
    animation = null;
  }

  function clearAll() {
    generation++;
    stopAnimation();
    strokes = [];
    current = null;
    activePointer = null;
    t0 = null;
    sample = null;
    dirty = false;
    $("sample-label").hidden = true;
    showGuesses([]);
    setVerdict("Waiting for a doodle…");
    setStatus("");
    redraw();
  }

  function undo() {
    if (sample || !strokes.length) return;
    generation++;
    strokes.pop();
    current = null;
    activePointer = null;
    if (!strokes.length) t0 = null;
    redraw();
    schedule();
  }

  async function showSample() {
    const button = $("sample");
    button.disabled = true;
    try {
      const response = await fetch("/api/sample");
      const body = await response.json();
      if (!response.ok) {
        setStatus(body.detail || `No sample (${response.status})`, true);
        return;
      }
      clearAll();
      sample = {...body, lines: sampleStrokes(body.drawing)};  // board coordinates, once per sample
      const label = $("sample-label");
      label.textContent = `A validation drawing of ${article(body.word || "")} ${body.word || "?"}`;
      label.hidden = false;
      const start = performance.now();
      const step = (now) => {
        const progress = Math.min(1, (now - start) / 700);
        redraw(progress);
        animation = progress < 1 ? requestAnimationFrame(step) : null;
        if (progress >= 1) {
          showGuesses(body.predictions);
          const top = body.predictions[0];
          const right = top && top.word === body.word;
          setVerdict(`${verdictFor(body.predictions)}<br><span class="${right ? "right" : "wrong"}">` +
                     `${right ? "✓ right" : `✗ it was ${article(body.word || "")} ${escapeHtml(body.word || "?")}`}</span>`);
        }
      };
      animation = requestAnimationFrame(step);
    } catch (err) {
      setStatus(`Cannot reach the model (${err.message}).`, true);
    } finally {
      button.disabled = false;
    }
  }

  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearAll);
  $("sample").addEventListener("click", showSample);
  $("suggest").addEventListener("click", suggest);
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") {
      event.preventDefault();
      undo();
    } else if (event.key === "Escape") {
      clearAll();
    }
  });
  window.addEventListener("resize", resize);

  // ------------------------------------------------------------------ start

  async function start() {
    resize();
    try {
      const [health, cls] = await Promise.all([fetch("/api/health").then((r) => r.json()),
                                               fetch("/api/classes").then((r) => r.json())]);
      classes = cls.classes;
      if (health.limits) limits = health.limits;
      $("model-info").textContent = `${health.model} · ${health.classes} words`;
      $("backend").textContent = `backend: ${health.backend}`;
      $("class-count").textContent = `(${classes.length})`;
      const list = $("class-list");
      for (const word of classes) {
        const li = document.createElement("li");
        li.textContent = word;
        list.appendChild(li);
      }
      suggest();
    } catch (err) {
      setStatus(`Cannot reach the model (${err.message}).`, true);
    }
  }

  start();
})();

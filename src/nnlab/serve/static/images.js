// The image demo: pick or drop an image, POST the file itself to /api/predict (classifier: top-k)
// or /api/identify (embedding model with a gallery: who each face is, or unknown, with a box drawn
// on every face of a photo). No external assets.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOP_K = 3;
  let health = null;

  function status(text, error = false) {
    $("status").textContent = text;
    $("status").classList.toggle("error", error);
  }

  function row(label, value, fraction) {
    const li = document.createElement("li");
    li.className = "guess filled";
    const word = document.createElement("span");
    word.className = "word";
    word.textContent = label;
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = value;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("i");
    fill.style.width = `${Math.max(1, 100 * Math.max(0, Math.min(1, fraction))).toFixed(1)}%`;
    bar.appendChild(fill);
    li.append(word, pct, bar);
    return li;
  }

  function showPredictions(answer) {
    const list = $("results");
    list.replaceChildren(...answer.predictions.map(
      (p) => row(p.label, `${(100 * p.probability).toFixed(1)}%`, p.probability)));
    const top = answer.predictions[0];
    $("verdict").replaceChildren("It looks like ", Object.assign(document.createElement("b"),
      { textContent: top.label }));
  }

  function drawFaces(answer) {
    // one box per face, placed in percent of the photo so that it follows the image's displayed size
    const boxes = answer.faces.filter((f) => f.box !== null).map((f) => {
      const [x0, y0, x1, y1] = f.box;
      const el = document.createElement("span");
      el.className = f.accepted ? "face-box" : "face-box unknown";
      el.style.left = `${(100 * x0 / answer.width).toFixed(2)}%`;
      el.style.top = `${(100 * y0 / answer.height).toFixed(2)}%`;
      el.style.width = `${(100 * (x1 - x0) / answer.width).toFixed(2)}%`;
      el.style.height = `${(100 * (y1 - y0) / answer.height).toFixed(2)}%`;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = `${f.identity} ${f.similarity.toFixed(2)}`;
      if (x1 > 0.75 * answer.width) name.classList.add("end");  // near the right edge: align it to the box's right
      el.appendChild(name);
      return el;
    });
    $("boxes").replaceChildren(...boxes);
  }

  function showFaces(answer) {
    drawFaces(answer);
    $("results").replaceChildren(...answer.faces.map(
      (f, i) => row(`${i + 1}. ${f.identity}`, `cosine ${f.similarity.toFixed(3)}`, f.similarity)));
    const names = answer.faces.map((f) => {
      const b = document.createElement("b");
      b.className = f.accepted ? "face-name" : "face-name unknown";
      b.textContent = f.identity;
      return b;
    });
    const parts = [`${answer.faces.length} faces: `];
    names.forEach((b, i) => parts.push(...(i ? [", ", b] : [b])));
    $("verdict").replaceChildren(...parts);
    status(`threshold ${answer.threshold.toFixed(3)}: a face below it is unknown`);
  }

  function showIdentity(answer) {
    if (answer.faces.length > 1) { showFaces(answer); return; }
    drawFaces(answer);
    const list = $("results");
    const rows = [row(answer.best, `cosine ${answer.similarity.toFixed(3)}`, answer.similarity)];
    if (answer.runner_up !== null) {
      rows.push(row(answer.runner_up, `cosine ${answer.runner_up_similarity.toFixed(3)}`, answer.runner_up_similarity));
    }
    list.replaceChildren(...rows);
    const b = document.createElement("b");
    b.id = "identity";
    b.textContent = answer.identity;
    if (!answer.accepted) b.className = "unknown";
    $("verdict").replaceChildren(answer.accepted ? "This is " : "Not someone I know: ", b);
    status(`threshold ${answer.threshold.toFixed(3)}: ${answer.accepted ? "accepted" : "below it, so unknown"}`);
  }

  async function send(file) {
    const reader = new FileReader();
    reader.onload = () => { $("preview").src = reader.result; $("preview").hidden = false; $("drop-hint").hidden = true; };
    reader.readAsDataURL(file);
    $("boxes").replaceChildren();
    const identify = health && health.task === "embedding";
    const url = identify ? "/api/identify" : `/api/predict?top_k=${Math.min(TOP_K, health ? health.classes : TOP_K)}`;
    status("thinking…");
    try {
      const response = await fetch(url, { method: "POST", body: file,
        headers: { "Content-Type": file.type || "application/octet-stream" } });
      const answer = await response.json();
      if (!response.ok) {
        $("results").replaceChildren();
        $("verdict").textContent = "That did not work";
        status(`${response.status}: ${answer.detail}`, true);
        return;
      }
      status("");
      if (identify) showIdentity(answer); else showPredictions(answer);
    } catch (err) {
      status(`the server did not answer (${err})`, true);
    }
  }

  async function load() {
    try {
      health = await (await fetch("/api/health")).json();
      const classes = (await (await fetch("/api/classes")).json()).classes;
      const identify = health.task === "embedding";
      $("mode").textContent = identify ? "faces" : "images";
      $("model-info").textContent = identify
        ? `${health.model} · ${health.gallery.people} people enrolled · search ${health.gallery.search}`
        : `${health.model} · ${health.classes} classes`;
      $("backend").textContent = `backend: ${health.backend}`;
      $("classes-title").firstChild.textContent = identify ? "Who is enrolled? " : "What does it know? ";
      $("class-count").textContent = `(${classes.length})`;
      $("class-list").replaceChildren(...classes.map((c) => Object.assign(document.createElement("li"), { textContent: c })));
    } catch (err) {
      status(`cannot reach the model (${err})`, true);
    }
  }

  const drop = $("drop");
  $("file").addEventListener("change", (e) => { if (e.target.files.length) send(e.target.files[0]); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
  });
  load();
})();

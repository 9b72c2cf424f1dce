// The exported page: reads site.json, starts the model in a Web Worker (worker.js), and
// wires the form to it. Its settings live in the query string as well as in the form:
// index.html?prime=ROMEO%3A&temperature=0&length=200&seed=1&run=1 fills the form and
// generates at once, and the address bar follows every change, so a link shares a sample.
// Model text is only ever set as textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const FIELDS = { prime: "prime", temperature: "temperature", top_k: "top-k", length: "length", seed: "seed" };

let site = null;     // site.json
let worker = null;
let running = false; // a generation is in progress
const calls = new Map(); // id -> {resolve, reject, onText}
let nextId = 1;

// Scripts and tests drive the page through this too: charrnn.logits(text), charrnn.last.
window.charrnn = { ready: null, last: null, logits: (text) => call("logits", { text }) };

function setStatus(id, text, isError) {
  $(id).textContent = text;
  $(id).classList.toggle("error", !!isError);
}

// -- the worker --------------------------------------------------------------------------

function call(type, body, onText) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    calls.set(id, { resolve, reject, onText });
    worker.postMessage({ ...body, type, id });
  });
}

function fromWorker(event) {
  const m = event.data, c = calls.get(m.id);
  if (!c) return;
  if (m.type === "text") return c.onText && c.onText(m.text);
  calls.delete(m.id);
  if (m.type === "error") c.reject(new Error(m.message));
  else c.resolve(m.result);
}

async function start() {
  const response = await fetch("site.json");
  if (!response.ok) throw new Error(`site.json: HTTP ${response.status}`);
  site = await response.json();
  const m = site.model.model, v = site.validation;
  $("model").textContent = `${m.num_layers}×${m.hidden_size} ${m.cell.toUpperCase()}, ` +
    `${m.vocab_size} characters` + (v ? `, validation ${v.bits.toFixed(3)} bits/char` : "") +
    (site.model.step != null ? `, step ${site.model.step.toLocaleString()}` : "") +
    (site.quantized ? `, ${site.quantized.type} weights` : "");
  $("length").max = site.max_length;
  worker = new Worker("worker.js", { type: "module" });
  worker.onmessage = fromWorker;
  worker.onerror = (e) => setStatus("gen-status", e.message || "the worker failed", true);
  const info = await call("init", { site });
  const rt = site.runtime;
  $("runtime").textContent = `The model runs in this page, in onnxruntime-web ${rt.version} ` +
    `(${info.backend}, ${rt.local ? "served with it" : "from " + new URL(rt.script.url).host}); ` +
    "nothing you type leaves it. The address bar holds the settings, to share a sample.";
  $("generate").disabled = $("score").disabled = false;
}

// -- settings and the address bar --------------------------------------------------------

function settings() {
  const number = (id, name, min, max, integer) => {
    const text = $(id).value.trim(), x = Number(text);
    if (text === "" || !Number.isFinite(x) || x < min || x > max || (integer && !Number.isInteger(x)))
      throw new Error(`${name} must be ${integer ? "a whole number" : "a number"} from ${min} to ${max}`);
    return x;
  };
  const s = {
    prime: $("prime").value,
    temperature: number("temperature", "temperature", 0, 1000, false),
    top_k: number("top-k", "top-k", 0, 1e9, true),
    length: number("length", "length", 1, site.max_length, true),
    seed: $("seed").value.trim() === "" ? null : number("seed", "seed", 0, Number.MAX_SAFE_INTEGER, true),
  };
  if (s.temperature > 0 && s.temperature < 1e-3) throw new Error("temperature must be 0 or at least 0.001");
  return s;
}

function readQuery() {
  // Fill the form from the query string; true when it asks to run at once.
  const q = new URLSearchParams(location.search);
  for (const [name, id] of Object.entries(FIELDS)) {
    if (q.has(name)) $(id).value = q.get(name);
  }
  return q.get("run") === "1";
}

function writeQuery(s, run) {
  // The address bar follows the form; after a run it holds the seed used and run=1.
  const q = new URLSearchParams();
  for (const name of Object.keys(FIELDS)) {
    const value = s ? s[name] : $(FIELDS[name]).value;
    if (value !== "" && value !== null && value !== undefined) q.set(name, String(value));
  }
  if (run) q.set("run", "1");
  history.replaceState(null, "", "?" + q.toString().replace(/\+/g, "%20"));
}

// -- generate ----------------------------------------------------------------------------

function randomSeed() {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

async function generate() {
  if (running || !site) return;
  let s;
  try {
    s = settings();
  } catch (e) {
    return setStatus("gen-status", e.message, true);
  }
  s.seed = s.seed ?? randomSeed();
  writeQuery(s, true);
  const stops = $("stops").value.split("\n").filter((x) => x !== "").map(unescapeStop);
  const text = document.createTextNode("");
  $("prime-shown").textContent = s.prime;
  $("output").replaceChildren(text);
  running = true;
  $("generate").disabled = true;
  $("stop").disabled = false;
  $("sample").classList.add("running");
  setStatus("gen-status", "starting…");
  try {
    const done = await call("generate", { ...s, stops }, (piece) => {
      text.appendData(piece);
      setStatus("gen-status", `${text.length.toLocaleString()} characters`);
    });
    window.charrnn.last = done;
    const rate = Math.round(done.chars / Math.max(done.seconds, 1e-9)).toLocaleString();
    setStatus("gen-status", `${done.finish === "stopped" ? "stopped" : "done: " + done.finish} ` +
      `(${done.chars.toLocaleString()} characters, ${rate}/s, seed ${s.seed})`);
  } catch (e) {
    setStatus("gen-status", e.message, true);
  } finally {
    running = false;
    $("sample").classList.remove("running");
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

// -- score -------------------------------------------------------------------------------

async function score() {
  setStatus("score-status", "scoring…");
  $("score").disabled = true;
  try {
    const result = await call("score", { text: $("score-text").value });
    surprisal.render($("scored"), result.characters);
    $("scored").dataset.bitsPerChar = result.bits_per_char;
    setStatus("score-status", `${result.scored.toLocaleString()} characters scored: ` +
      `${result.bits_per_char.toFixed(3)} bits per character`);
  } catch (e) {
    setStatus("score-status", e.message, true);
  } finally {
    $("score").disabled = false;
  }
}

// -- wiring ------------------------------------------------------------------------------

function selectTab(name) {
  for (const view of ["generate", "score"]) {
    $("tab-" + view).setAttribute("aria-selected", String(view === name));
    $("view-" + view).hidden = view !== name;
  }
  surprisal.hideTip();
}

document.addEventListener("DOMContentLoaded", () => {
  $("tab-generate").addEventListener("click", () => selectTab("generate"));
  $("tab-score").addEventListener("click", () => selectTab("score"));
  for (const id of Object.values(FIELDS)) $(id).addEventListener("input", () => writeQuery(null, false));
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", () => running && worker.postMessage({ type: "stop" }));
  $("prime").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate();
  });
  $("score").addEventListener("click", score);
  surprisal.wire($("scored"));
  const run = readQuery();
  window.charrnn.ready = start().then(() => run && generate()).catch((e) => {
    $("model").textContent = "The model did not load: " + e.message;
    $("model").classList.add("error");
  });
});

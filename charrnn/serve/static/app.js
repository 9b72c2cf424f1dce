// The charrnn playground: generate (streamed over server-sent events read from fetch, so
// that the request can be a POST and can be stopped) and score (every character coloured by
// its surprisal, the model's top 5 guesses on hover or tap: surprisal.js); with the novelty box ticked,
// the text copied from the training text is marked once the sample is done. Model text is
// only ever set as textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let running = null; // the AbortController of the generation in progress

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function errorOf(response) {
  // The server answers every refusal with {"error": "..."}.
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return `HTTP ${response.status}`;
}

function setStatus(id, text, isError) {
  $(id).textContent = text;
  $(id).classList.toggle("error", !!isError);
}

function wantKey(message) {
  $("key-box").open = true;
  $("model").textContent = message + " Enter the API key below.";
}

// -- the model ---------------------------------------------------------------------------

async function loadModel() {
  const response = await fetch("/v1/model", { headers: headers() });
  if (response.status === 401) return wantKey("This server wants an API key.");
  if (!response.ok) return ($("model").textContent = await errorOf(response));
  const m = await response.json();
  const loss = m.best_val_loss ? `, validation ${m.best_val_loss.bits.toFixed(3)} bits/char` : "";
  const step = m.step != null ? `, step ${m.step.toLocaleString()}` : "";
  $("model").textContent = `${m.num_layers}×${m.hidden_size} ${m.cell.toUpperCase()}, ` +
    `${m.vocab_size} characters${loss}${step}`;
  $("length").max = m.limits.max_length;
  if ($("length").value === "") $("length").value = m.defaults.length;
  const novelty = !!m.novelty;
  $("novelty").disabled = !novelty;
  if (!novelty) $("novelty").checked = false;
  $("novelty-hint").textContent = novelty ? "" : "(start the server with --novelty)";
  const documents = !!m.end_of_document;
  $("stop-at-end").disabled = !documents;
  if (!documents) $("stop-at-end").checked = false;
  $("stop-at-end-hint").textContent = documents ? "" : "(a model trained on many files)";
}

// -- generate ----------------------------------------------------------------------------

function generateRequest() {
  const body = {
    prime: $("prime").value,
    temperature: Number($("temperature").value),
    top_k: Number($("top-k").value) || 0,
    length: Number($("length").value) || undefined,  // none: the server's default
    stop: $("stops").value.split("\n").filter((s) => s !== "").map(unescapeStop),
    stream: true,
  };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  if ($("novelty").checked) body.novelty = true;
  if ($("stop-at-end").checked) body.stop_at_end = true;
  return body;
}

function* sseEvents(buffer) {
  // Complete events of the buffer, each {event, data}; the rest stays for the next read.
  let end;
  while ((end = buffer.text.indexOf("\n\n")) >= 0) {
    const block = buffer.text.slice(0, end);
    buffer.text = buffer.text.slice(end + 2);
    let event = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    yield { event, data: data ? JSON.parse(data) : null };
  }
}

async function generate() {
  if (running) return;
  const output = $("output"), generated = output.querySelector(".generated");
  let body;
  try {
    body = generateRequest();
  } catch (e) {
    return setStatus("gen-status", e.message, true);
  }
  output.querySelector(".prime").textContent = body.prime;
  generated.textContent = "";
  $("novelty-summary").hidden = true;
  running = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  output.classList.add("running");
  setStatus("gen-status", "starting…");
  const started = performance.now();
  let chars = 0;
  try {
    const response = await fetch("/v1/generate", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: running.signal,
    });
    if (response.status === 401) wantKey("This server wants an API key.");
    if (!response.ok) throw new Error(await errorOf(response));
    const reader = response.body.getReader(), decoder = new TextDecoder();
    const buffer = { text: "" };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer.text += decoder.decode(value, { stream: true });
      for (const { event, data } of sseEvents(buffer)) {
        if (event === "text") {
          generated.textContent += data.text;
          chars += data.text.length;
          const seconds = (performance.now() - started) / 1000;
          setStatus("gen-status", `${chars} characters, ${Math.round(chars / seconds)}/s`);
        } else if (event === "done") {
          const why = data.samples.map((s) => s.finish_reason).join(", ");
          setStatus("gen-status", `done: ${why} (${chars} characters, seed ${data.seed})`);
          if (data.samples[0].novelty) showCopied(generated, data.samples[0].novelty);
        } else if (event === "error") {
          throw new Error(data.error);
        }
      }
    }
  } catch (e) {
    if (e.name === "AbortError") setStatus("gen-status", `stopped after ${chars} characters`);
    else setStatus("gen-status", e.message, true);
  } finally {
    running = null;
    output.classList.remove("running");
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

// -- novelty ----------------------------------------------------------------------------

function showCopied(generated, report) {
  // The report's spans count characters as Python does (code points), which a JavaScript
  // string index does not (UTF-16 units): slice an array of code points instead.
  const chars = Array.from(generated.textContent);
  const fragment = document.createDocumentFragment();
  let at = 0;
  for (const [start, end] of report.copied_spans) {
    if (start > at) fragment.append(chars.slice(at, start).join(""));
    const mark = document.createElement("mark");
    mark.className = "copied";
    mark.title = `${end - start} characters found in the training text`;
    mark.textContent = chars.slice(start, end).join("");
    fragment.append(mark);
    at = end;
  }
  if (at < chars.length) fragment.append(chars.slice(at).join(""));
  generated.textContent = "";
  generated.append(fragment);
  const n = report.copied_spans_min;
  const share = (100 * (report.shares[n] || 0)).toFixed(1);
  const where = report.line != null ? ` (line ${report.line.toLocaleString()} of the training text)` : "";
  const summary = $("novelty-summary");
  summary.textContent = report.longest >= n
    ? `Longest copied span: ${report.longest.toLocaleString()}${report.at_least ? "+" : ""} ` +
      `characters${where} · ${share}% of the text in copied spans of ${n}+`
    : `Nothing copied: no span of ${n}+ characters is in the training text ` +
      `(longest copied span: ${report.longest})`;
  summary.title = report.verdict;
  summary.hidden = false;
}

function stop() {
  if (running) running.abort(); // the server sees the client go and drops the stream
}

// -- score -------------------------------------------------------------------------------

async function score() {
  const text = $("score-text").value;
  setStatus("score-status", "scoring…");
  $("score").disabled = true;
  try {
    const response = await fetch("/v1/score", {
      method: "POST", headers: headers(), body: JSON.stringify({ text }),
    });
    if (response.status === 401) wantKey("This server wants an API key.");
    if (!response.ok) throw new Error(await errorOf(response));
    const result = await response.json();
    surprisal.render($("scored"), result.characters);
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
  for (const view of ["generate", "score", "cells"]) {
    $("tab-" + view).setAttribute("aria-selected", String(view === name));
    $("view-" + view).hidden = view !== name;
  }
  surprisal.hideTip();
}

document.addEventListener("DOMContentLoaded", () => {
  $("tab-generate").addEventListener("click", () => selectTab("generate"));
  $("tab-score").addEventListener("click", () => selectTab("score"));
  $("tab-cells").addEventListener("click", () => selectTab("cells"));
  cells.wire(headers, errorOf, setStatus, wantKey);
  $("temperature").addEventListener("input", () => {
    $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
  });
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", stop);
  $("prime").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate();
  });
  $("score").addEventListener("click", score);
  surprisal.wire($("scored"));
  $("api-key").addEventListener("change", loadModel);
  loadModel().catch((e) => ($("model").textContent = e.message));
});

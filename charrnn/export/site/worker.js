// The model, in a Web Worker so that the page never freezes: onnxruntime-web's wasm backend
// on one thread (no cross-origin isolation needed), model.onnx with its recurrent state as
// explicit inputs and outputs, so that each generated character costs one step.
//
// Messages in: {type: "init", site} | "generate" | "score" | "logits" | "stop", each with an
// id; out: {id, type: "text", text} while generating, then {id, type: "result", result} or
// {id, type: "error", message}. Work runs one request at a time; "stop" jumps the queue.
//
// Sampling follows charrnn's (inference/sample.py): the prime (or a new line) in one pass,
// then per character a draw from logits / temperature by the Gumbel-max trick, over the
// top-k logits if asked; temperature 0 takes the argmax, which is exact and so gives the
// same text as `charrnn sample -t 0`. The seeded random numbers are this page's own.
"use strict";

let ort = null, session = null, meta = null, ids = null, maxLength = 0;
let stopping = false;
let queue = Promise.resolve();

self.onmessage = (event) => {
  const m = event.data;
  if (m.type === "stop") return void (stopping = true);
  queue = queue.then(() => handle(m));
};

async function handle(m) {
  try {
    const result = await HANDLERS[m.type](m);
    self.postMessage({ id: m.id, type: "result", result });
  } catch (e) {
    self.postMessage({ id: m.id, type: "error", message: e.message || String(e) });
  }
}

// -- loading -----------------------------------------------------------------------------

async function fetchChecked(file) {
  // Subresource Integrity by fetch's own `integrity`: a byte off, and the browser refuses it.
  let response;
  try {
    response = await fetch(file.url, { integrity: file.integrity });
  } catch (e) { // the browser says only "Failed to fetch", whichever it was
    throw new Error(`${file.url}: not loaded (a network error, or not the bytes its integrity hash names)`);
  }
  if (!response.ok) throw new Error(`${file.url}: HTTP ${response.status}`);
  return response;
}

async function init({ site }) {
  const rt = site.runtime;
  const [script, wasm, model] = await Promise.all([
    fetchChecked(rt.script), fetchChecked(rt.wasm), fetch("model.onnx")]);
  if (!model.ok) throw new Error(`model.onnx: HTTP ${model.status}`);
  // import() has no integrity option: import the checked bytes from a blob instead.
  const url = URL.createObjectURL(new Blob([await script.text()], { type: "text/javascript" }));
  ort = await import(url);
  ort.env.logLevel = "error";
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmBinary = await wasm.arrayBuffer();
  session = await ort.InferenceSession.create(new Uint8Array(await model.arrayBuffer()),
    { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  meta = site.model;
  maxLength = site.max_length;
  // The end-of-document mark shows as a line break: a typed "\n" is the line break itself.
  ids = new Map(meta.vocab.map((ch, i) => [ch, i]).filter(([, i]) => i !== meta.end_of_document));
  return { backend: "wasm, 1 thread" };
}

// -- the model ---------------------------------------------------------------------------

function zeroState() {
  const { num_layers: L, hidden_size: H } = meta.model;
  return meta.state.map(() => new ort.Tensor("float32", new Float32Array(L * H), [L, 1, H]));
}

async function run(idList, state) {
  // (1, T) ids and the state in; the logits (T * V, row-major) and the new state out.
  const feeds = { ids: new ort.Tensor("int64", BigInt64Array.from(idList, BigInt), [1, idList.length]) };
  meta.state.forEach((name, i) => (feeds[name] = state[i]));
  const out = await session.run(feeds);
  return { logits: out.logits.data, state: meta.outputs.slice(1).map((name) => out[name]) };
}

function modelText(text, what) {
  // The model's text options, as `charrnn sample` applies them to a prime.
  const o = meta.text_options;
  if (!o.keep_crlf) text = text.replace(/\r\n/g, "\n");
  if (o.lower) text = text.toLowerCase();
  const chars = Array.from(text);
  const unknown = [...new Set(chars.filter((c) => !ids.has(c)))];
  if (unknown.length) {
    throw new Error(`the ${what} has characters the model does not know: ` +
      unknown.slice(0, 20).map((c) => JSON.stringify(c)).join(", ") +
      (o.unidecode ? " (this page cannot transliterate them as charrnn does)" : ""));
  }
  return chars;
}

const CHUNK = 2048; // characters per model call when reading a prime or a text

async function read(chars, state, each) {
  // Run the characters through the model a chunk at a time, carrying the state;
  // each(logits, start, T) sees every chunk's logits. Returns the state left.
  for (let start = 0; start < chars.length; start += CHUNK) {
    const part = chars.slice(start, start + CHUNK);
    const out = await run(part.map((c) => (typeof c === "number" ? c : ids.get(c))), state); // a number: an id
    state = out.state;
    if (each) each(out.logits, start, part.length);
  }
  return state;
}

// -- sampling ----------------------------------------------------------------------------

function random(seed) {
  // sfc32 seeded from the seed's two 32-bit halves: uniform floats in [0, 1).
  let a = seed >>> 0, b = Math.floor(seed / 2 ** 32) >>> 0, c = 0x9e3779b9, d = 1;
  const next = () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 16; i++) next();
  return next;
}

function pick(logits, temperature, topK, rand) {
  // The next id from logits (V): argmax at temperature 0 (the first of equals, as torch's),
  // else argmax(logits / T + Gumbel noise) over the top-k logits.
  const V = logits.length;
  let kth = -Infinity;
  if (temperature > 0 && topK > 0 && topK < V) kth = Float32Array.from(logits).sort()[V - topK];
  let best = 0, bestScore = -Infinity;
  for (let i = 0; i < V; i++) {
    if (logits[i] < kth) continue;
    const score = temperature === 0 ? logits[i]
      : logits[i] / temperature - Math.log(-Math.log(1 - rand())); // 1 - u: never log(0)
    if (score > bestScore) (best = i), (bestScore = score);
  }
  return best;
}

const breath = () => new Promise((resolve) => {
  // A macrotask, so that a "stop" message is seen; MessageChannel has no setTimeout clamp.
  const channel = new MessageChannel();
  channel.port1.onmessage = resolve;
  channel.port2.postMessage(null);
});

async function generate(m) {
  const { temperature, top_k, length, seed, id } = m;
  stopping = false; // a stop from here on ends this generation, even during the prime
  const stops = m.stops.filter((s) => s).map((s) => modelText(s, "stop string").join(""));
  const rand = random(seed);
  let prime = modelText(m.prime, "prime");
  // No prime: as `charrnn sample`, after the end-of-document mark (a document's start),
  // else after a line break, else after a random character.
  if (!prime.length) prime = meta.end_of_document != null ? [meta.end_of_document]
    : ids.has("\n") ? ["\n"] : [meta.vocab[Math.floor(rand() * meta.vocab.length)]];
  const V = meta.vocab.length;
  let logits = null;
  let state = await read(prime, zeroState(), (out, start, T) => (logits = out.subarray((T - 1) * V)));
  const started = performance.now();
  const keep = Math.max(0, ...stops.map((s) => s.length));
  let text = "", tail = "", shown = 0, made = 0, finish = "length", flushed = started;
  for (;;) {
    if (stopping) {
      finish = "stopped";
      break;
    }
    const next = pick(logits, temperature, top_k, rand);
    text += meta.vocab[next];
    made += 1;
    if (keep) {
      // Checked after every character, the first stop string generated is the one it ends.
      tail = (tail + meta.vocab[next]).slice(-keep);
      if (stops.some((s) => tail.endsWith(s))) finish = "stop";
    }
    if (finish === "stop" || made === length) break;
    const out = await run([next], state);
    logits = out.logits;
    state = out.state;
    if (performance.now() - flushed > 50) { // a stream of pieces, not a message per character
      self.postMessage({ id, type: "text", text: text.slice(shown) });
      shown = text.length;
      await breath();
      flushed = performance.now();
    }
  }
  const seconds = (performance.now() - started) / 1000;
  if (text.length > shown) self.postMessage({ id, type: "text", text: text.slice(shown) });
  return { finish, chars: made, seconds, seed };
}

// -- scoring -----------------------------------------------------------------------------

async function score({ text }) {
  // Every next-character prediction of the text, read from the start in one stream:
  // its bits and the model's top 5 guesses (what the playground's /v1/score returns).
  const chars = modelText(text, "text");
  if (chars.length < 2) throw new Error("nothing to score: give at least 2 characters");
  if (chars.length > maxLength) throw new Error(`at most ${maxLength.toLocaleString()} characters can be scored here`);
  const V = meta.vocab.length;
  const characters = [{ char: chars[0], bits: null, top: [] }];
  let nats = 0;
  await read(chars, zeroState(), (logits, start, T) => {
    for (let t = 0; t < T && start + t + 1 < chars.length; t++) {
      const row = logits.subarray(t * V, (t + 1) * V);
      const target = chars[start + t + 1];
      let max = -Infinity, sum = 0;
      for (let i = 0; i < V; i++) max = Math.max(max, row[i]);
      for (let i = 0; i < V; i++) sum += Math.exp(row[i] - max);
      const lse = max + Math.log(sum), loss = lse - row[ids.get(target)];
      nats += loss;
      const top = Array.from(row.keys()).sort((i, j) => row[j] - row[i]).slice(0, 5)
        .map((i) => [meta.vocab[i], Math.exp(row[i] - lse)]);
      characters.push({ char: target, bits: loss / Math.LN2, top });
    }
  });
  const scored = chars.length - 1;
  return { characters, scored, nats_per_char: nats / scored, bits_per_char: nats / scored / Math.LN2 };
}

async function logits({ text }) {
  // The logits after each character of the text, from the zero state: rows of V numbers.
  const chars = modelText(text, "text"), V = meta.vocab.length, rows = [];
  await read(chars, zeroState(), (out, start, T) => {
    for (let t = 0; t < T; t++) rows.push(Array.from(out.subarray(t * V, (t + 1) * V)));
  });
  return rows;
}

const HANDLERS = { init, generate, score, logits };

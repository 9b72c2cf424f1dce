// The Cells view of the playground: POST /v1/cells with a text (and a cell number, once one
// is picked) and colour each character by that cell's value, blue at its lowest in the text
// through white to red at its highest. Text is only ever set as textContent.
"use strict";

const cells = (() => {
  const $ = (id) => document.getElementById(id);
  let api = null; // {headers, errorOf, setStatus, wantKey} from app.js

  function colour(v, low, high) {
    const x = high > low ? (2 * (v - low)) / (high - low) - 1 : 0; // -1 .. 1
    const end = x < 0 ? [44, 95, 214] : [214, 44, 44];
    const [r, g, b] = end.map((e) => Math.round(255 + (e - 255) * Math.abs(x)));
    return `rgb(${r},${g},${b})`;
  }

  function render(result) {
    const out = $("cells-out");
    out.textContent = "";
    const low = Math.min(...result.values), high = Math.max(...result.values);
    const fragment = document.createDocumentFragment();
    [...result.text].forEach((ch, i) => {
      const span = document.createElement("span");
      span.textContent = ch;
      span.style.background = colour(result.values[i], low, high);
      span.title = `${result.name}: ${result.values[i].toFixed(3)}`;
      fragment.appendChild(span);
    });
    out.appendChild(fragment);
    $("cell-number").max = result.count - 1;
    $("cell-number").value = result.cell;
    $("cells-name").textContent = `(${result.name} of ${result.count})`;
    const select = $("cells-ranked");
    select.textContent = "";
    for (const c of result.ranked) {
      const option = document.createElement("option");
      option.value = String(c.cell);
      option.textContent = `${c.name}: ${c.feature}, r = ${c.r >= 0 ? "+" : ""}${c.r.toFixed(2)}`;
      select.appendChild(option);
    }
    if (result.ranked.some((c) => c.cell === result.cell)) select.value = String(result.cell);
    else select.selectedIndex = -1;
  }

  async function read(cell) {
    const body = { text: $("cells-text").value };
    if (cell !== undefined) body.cell = cell;
    api.setStatus("cells-status", "reading…");
    $("cells-read").disabled = true;
    try {
      const response = await fetch("/v1/cells", {
        method: "POST", headers: api.headers(), body: JSON.stringify(body),
      });
      if (response.status === 401) api.wantKey("This server wants an API key.");
      if (!response.ok) throw new Error(await api.errorOf(response));
      const result = await response.json();
      render(result);
      api.setStatus("cells-status", `cell ${result.name} over ${result.values.length.toLocaleString()} characters`);
    } catch (e) {
      api.setStatus("cells-status", e.message, true);
    } finally {
      $("cells-read").disabled = false;
    }
  }

  function wire(headers, errorOf, setStatus, wantKey) {
    api = { headers, errorOf, setStatus, wantKey };
    $("cells-read").addEventListener("click", () => read());
    $("cells-ranked").addEventListener("change", () => read(Number($("cells-ranked").value)));
    $("cell-number").addEventListener("change", () => read(Number($("cell-number").value)));
  }

  return { wire };
})();

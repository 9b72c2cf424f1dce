// Surprisal, drawn: every character of a scored text coloured by how surprised the model
// was to see it, with the model's top 5 guesses on hover or tap. One renderer for the
// playground (`charrnn serve`) and the exported page (`charrnn export --web`); both load it
// with style.css. A character is {char, bits (null for the first), top: [[char, p], ...]}.
// Model text is only ever set as textContent, never parsed as HTML.
"use strict";

const surprisal = (() => {
  let scored = [];

  function render(out, characters) {
    scored = characters;
    hideTip();
    out.textContent = "";
    const fragment = document.createDocumentFragment();
    characters.forEach((c, i) => {
      const span = document.createElement("span");
      span.textContent = c.char;
      span.dataset.i = i;
      if (c.bits !== null) {
        span.className = "c";
        span.style.setProperty("--bits", c.bits.toFixed(2));
      }
      fragment.appendChild(span);
    });
    out.appendChild(fragment);
  }

  function shown(ch) {
    return { "\n": "↵", " ": "␣", "\t": "⇥" }[ch] || ch;
  }

  function showTip(span) {
    const c = scored[Number(span.dataset.i)], tip = document.getElementById("tip");
    document.querySelectorAll(".c.active").forEach((s) => s.classList.remove("active"));
    span.classList.add("active");
    tip.textContent = "";
    const head = document.createElement("div");
    head.textContent = `“${shown(c.char)}”: ${c.bits.toFixed(2)} bits`;
    const table = document.createElement("table");
    for (const [ch, p] of c.top) {
      const row = table.insertRow();
      row.className = ch === c.char ? "hit" : "";
      row.insertCell().textContent = shown(ch);
      row.insertCell().textContent = (100 * p).toFixed(1) + "%";
    }
    tip.append(head, table);
    tip.hidden = false;
    const box = span.getBoundingClientRect();
    const left = Math.min(box.left + window.scrollX, window.scrollX + document.documentElement.clientWidth - tip.offsetWidth - 8);
    tip.style.left = Math.max(8, left) + "px";
    tip.style.top = box.bottom + window.scrollY + 6 + "px";
  }

  function hideTip() {
    const tip = document.getElementById("tip");
    if (tip) tip.hidden = true;
    document.querySelectorAll(".c.active").forEach((s) => s.classList.remove("active"));
  }

  // Hover and tap on `out`'s characters, and the legend's colour swatches.
  function wire(out) {
    out.addEventListener("mouseover", (e) => { if (e.target.classList.contains("c")) showTip(e.target); });
    out.addEventListener("mouseleave", hideTip);
    out.addEventListener("click", (e) => { if (e.target.classList.contains("c")) showTip(e.target); });
    document.querySelectorAll(".swatch").forEach((s) => s.style.setProperty("--bits", s.dataset.bits));
  }

  return { render, hideTip, wire };
})();

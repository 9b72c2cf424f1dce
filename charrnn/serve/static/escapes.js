// Stop strings as typed in a text box: one renderer of escapes for the playground
// (`charrnn serve`) and the exported page (`charrnn export --web`).
"use strict";

// The escapes `charrnn sample --stop` understands (Python's string escapes), so that a stop
// string typed here is the one the command line reads. \N{name} needs Unicode's names, which
// a browser does not have: it is refused with the way out, as a bad escape is.
const SIMPLE_ESCAPES = {
  "\\": "\\", "'": "'", '"': '"', a: "\x07", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t", v: "\v",
};
const ESCAPE = /\\(?:([\\'"abfnrtv])|([0-7]{1,3})|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(N\{[^}]+\})|(.?))/gs;

function unescapeStop(line) {
  return line.replace(ESCAPE, (escape, simple, octal, x, u, U, named, bad) => {
    if (simple) return SIMPLE_ESCAPES[simple];
    if (octal) return String.fromCodePoint(parseInt(octal, 8));
    const code = x || u || U;
    if (code && parseInt(code, 16) <= 0x10ffff) return String.fromCodePoint(parseInt(code, 16));
    if (named) throw new Error(`stop '${line}': \\${named} is not understood here; write the ` +
                               "character itself, or \\u and its code");
    throw new Error(`stop '${line}': bad escape at '${escape}'; write \\\\ for a backslash`);
  });
}

"""Sample from a model exported by `charrnn export`, with numpy and onnxruntime only.

    charrnn export runs/latest -o model.onnx
    python examples/onnx_sample.py model.onnx -p "ROMEO:" -n 500 -t 0.8 --top-k 10 --seed 1

The file carries its vocabulary and text options (metadata key "charrnn"). The prime goes in
as one chunk; then each character is fed back with the state the last call returned.
Temperature 0 always takes the likeliest character: the same text as `charrnn sample -t 0`.
"""

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort


def load(path):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session, json.loads(session.get_modelmeta().custom_metadata_map["charrnn"])


def prepare_prime(prime, options):
    """The prime through the training text's options, as charrnn sample does."""
    if not options["keep_crlf"]:
        prime = prime.replace("\r\n", "\n")
    if options["unidecode"] and not prime.isascii():
        from unidecode import unidecode  # needed only for such a model and prime
        prime = unidecode(prime)
    return prime.lower() if options["lower"] else prime


def generate(session, meta, prime, length, temperature=1.0, top_k=0, rng=None):
    """Yield `length` characters after `prime`; a blank prime starts after a newline."""
    chars, m = meta["vocab"], meta["model"]
    index = {c: i for i, c in enumerate(chars)}
    rng = rng or np.random.default_rng()
    ids = [index[c] for c in prime or ("\n" if "\n" in index else chars[rng.integers(len(chars))])]
    state = {name: np.zeros((m["num_layers"], 1, m["hidden_size"]), np.float32)
             for name in meta["state"]}
    for _ in range(length):
        logits, *new_state = session.run(None, {"ids": np.array([ids], np.int64), **state})
        state = dict(zip(meta["state"], new_state))
        logits = logits[0, -1].astype(np.float64)  # (V,) after the last character fed
        if temperature == 0:
            i = int(np.argmax(logits))
        else:
            if 0 < top_k < len(logits):
                logits[logits < np.sort(logits)[-top_k]] = -np.inf
            p = np.exp((logits - logits.max()) / temperature)
            i = int(rng.choice(len(p), p=p / p.sum()))
        ids = [i]
        yield chars[i]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("-p", "--prime", default="")
    ap.add_argument("-n", "--length", type=int, default=500)
    ap.add_argument("-t", "--temperature", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--seed", type=int)
    args = ap.parse_args()
    session, meta = load(args.model)
    prime = prepare_prime(args.prime, meta["text_options"])
    unknown = sorted(set(prime) - set(meta["vocab"]))
    if unknown:
        sys.exit(f"error: the model does not know {', '.join(map(repr, unknown))}")
    out = sys.stdout
    out.write(prime)
    for char in generate(session, meta, prime, args.length, args.temperature, args.top_k,
                         np.random.default_rng(args.seed)):
        out.write(char)
    out.write("\n")


if __name__ == "__main__":
    main()

"""Stop strings: each sampled stream ends right after the first one it generates.

    stops = StopStrings(["\\n\\n"], num_samples=4)
    pieces = stops.cut(pieces)     # per stream, the new text up to its end ("" once ended)
"""

from __future__ import annotations


class StopStrings:
    """Ends each stream right after the first stop string in its generated text.

    `cut(pieces)` takes the new text of each stream and returns it cut where a stream ends
    (and "" for streams already ended); a stop string may span pieces.
    """

    def __init__(self, stops, num_samples: int):
        self.stops = [s for s in stops if s]
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.tails = [""] * num_samples  # the last few generated characters of each stream
        self.ended = [False] * num_samples

    @property
    def all_ended(self) -> bool:
        return bool(self.stops) and all(self.ended)

    def cut(self, pieces: list[str]) -> list[str]:
        if not self.stops:
            return pieces
        out = []
        for b, piece in enumerate(pieces):
            if self.ended[b]:
                out.append("")
                continue
            text = self.tails[b] + piece
            ends = [text.find(s) + len(s) for s in self.stops if s in text]
            if ends:
                self.ended[b] = True
                piece = piece[:min(ends) - len(self.tails[b])]
            self.tails[b] = text[len(text) - self.keep:] if self.keep else ""
            out.append(piece)
        return out

"""The novelty check: how much of a text is copied from the training text.

    from charrnn.novelty import open_index, novelty_report
    index = open_index(PreparedData("data/corpus"))      # built once, cached in data/corpus/novelty/
    print("\\n".join(novelty_report(index, sample).lines()))

index.py (the cached suffix index), build.py (its arrays, in blocks), matching.py (matching
statistics), report.py (the report, and the copied stretches to highlight), redraw.py
(sampling that refuses copies).
"""

from .index import SuffixIndex, in_memory_index, open_index
from .matching import matching_statistics, naive_matching_statistics
from .report import SPANS, NoveltyReport, copied_spans, novelty_report

__all__ = ["SPANS", "NoveltyReport", "SuffixIndex", "copied_spans", "in_memory_index",
           "matching_statistics", "naive_matching_statistics", "novelty_report", "open_index"]

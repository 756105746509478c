"""The paper's results table, as Markdown and LaTeX (booktabs), from the stats dict.

Rows are metrics, columns are systems. Each cell is the mean over prompts with its bootstrap CI;
the best system per row is bold; † marks a Holm-corrected Wilcoxon p < alpha against polychromic.
Below the metrics: the minimum detectable Pass@10 difference of polychromic against the column's
system (power analysis, `lib.power`), and the judge row, polychromic's judge score (win + tie/2)
against the column's system with the win/tie/loss counts (polychromic's own column shows —); a
judge that decided no pair says so in words.

`rows` builds the cells, `notes` the footnotes, `render` the two formats, `headline` the DVC
metrics.
"""

from lib.report.headline import HEADLINE, headline
from lib.report.notes import footnotes, instruments
from lib.report.render import to_latex, to_markdown
from lib.report.rows import build_rows
from lib.schemas import SYSTEM_LABELS

__all__ = [
    "HEADLINE",
    "SYSTEM_LABELS",
    "build_rows",
    "footnotes",
    "headline",
    "instruments",
    "to_latex",
    "to_markdown",
]

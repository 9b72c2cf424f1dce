"""What the cells of a trained model track: `charrnn neurons` and the playground's Cells
view. features -> record (every cell, step by step) -> stats (running sums) -> scan (chosen
on one half, r on the other) -> report / page."""

"""Figures and explorers: the palette (`theme`), pure figure builders (`viz`), the live explorer (`explore`, drawing
into one `panel.FigurePanel`) and the explorer without a kernel (`static_explorer`). Imports `labkit.core`,
`labkit.sla`, `labkit.data` and `labkit.training` (to open trained runs)."""

"""Click commands grouped by pipeline step; `raiox.cli` registers them on the `raiox` command."""

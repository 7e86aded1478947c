"""Click commands grouped by pipeline step; `raiox.tools.cli` registers them on the `raiox` command."""

"""Tooling no function imports: the CLI, demo, dev server, simulator, benchmarks, quality, deploy build."""

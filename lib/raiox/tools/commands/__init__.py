"""The `raiox` subcommands, grouped by what they serve; tools.cli registers them."""

"""All SQL Raiox runs, one module per aggregate (cases, images, findings, matches, audit, catalog, decisions, jobs,
reviewers, heartbeats, reconciliation, objects, migrations); rows come back as frozen records (`rows`)."""

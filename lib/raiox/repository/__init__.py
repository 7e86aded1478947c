"""All SQL Raiox runs, one module per aggregate: migrations, catalog, cases, jobs."""

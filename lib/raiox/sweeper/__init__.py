"""The sweeper: one round of every step's due work, so a lost poke never stalls a case, and the handlers of the
functions that run it (webhook's and notify's scheduled triggers, embed's poke).

It sits between the steps and tooling: it may import every step, no step imports it, and it is the only place
that knows the order of a round. Where a module may load depends on what its function holds:

- `round`: the rounds themselves (no object storage, no torch when it is imported: notify loads it);
- `stored`: the share of a round that needs object storage (the outage inbox, fetch jobs, erased objects);
- `webhook`, `notify`, `embed`: each function as the platform adapters serve it (`raiox.web.http.Function`): the
  step's route table plus the sweeper's round.
"""

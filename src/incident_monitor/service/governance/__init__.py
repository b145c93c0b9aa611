"""Governance evidence: what the agents can do, where they can publish, and whether that is safe.

inventory.py collects the authority inventory (redacted by construction: names, scopes, states and
policies, never credentials, hashes or destination config values); posture.py runs deterministic
rules over it and recent decisions; probes.py runs dry-run checks of the controls against an
in-memory copy; report.py and cards.py turn all of it into a report and deployment cards.
"""

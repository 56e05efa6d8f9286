"""`metrolab run whitepaper`: each of the white paper's quantitative claims, run on the scenario
that tests it and written into one report (claims.py: the claims; run.py: the run)."""

"""Watch programs: the REST watch and the simulated watch behind a bridge."""

"""Normalizing flows: `forward(x) -> (z, logdet)`, `inverse(z) -> (x, logdet)`, `log_prob(x)`."""

"""FFJORD: a continuous normalizing flow trained with Hutchinson's trace estimator.

  python experiments/ffjord.py --flagfile=experiments/configs/ffjord_toy2d.flags
  python experiments/ffjord.py --flagfile=experiments/configs/ffjord_digits.flags
  python experiments/ffjord.py --flagfile=experiments/configs/ffjord_mnist.flags

Training uses the stochastic trace (an unbiased estimate of the loss); evaluation uses
the exact trace, so the reported eval nll is the model's exact log-likelihood (up to
the ODE solver's tolerances and, for images, the dequantization bound). On MNIST the
field is convolutional and evaluation uses the stochastic trace too
(`--eval_trace=hutchinson`): an unbiased estimate of the eval nll.

`--kinetic_weight` and `--jacobian_weight` (RNODE, Finlay et al. 2020) penalise the
fields' kinetic energy and Jacobian norm, which keeps the adaptive solver's step count,
and so the cost of a step, from growing as training goes; the train log reports both
penalties and `ode_steps`.
"""

from dulx import cli

if __name__ == '__main__':
  cli.run('ffjord')

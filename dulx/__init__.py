"""dulx: a JAX/Flax model zoo for deep unsupervised learning.

    model, state, config = dulx.restore(workdir)
    log_p = model.apply(state.variables(), x, method='log_prob')       # [B] nats
    x = dulx.sample(model, state.variables(), jax.random.PRNGKey(0), 16)
"""

from dulx.sampling import sample
from dulx.train import Config
from dulx.train import restore
from dulx.train import train_and_evaluate

__version__ = '0.1.0'

__all__ = ['Config', 'restore', 'sample', 'train_and_evaluate', '__version__']

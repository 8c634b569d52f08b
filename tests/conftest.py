"""Test set-up: four fake CPU devices, so jit-over-a-mesh and pmap run as on a multi-device host.

XLA reads the flag when the backend starts, so it is set before anything imports jax.
Subprocesses started by tests (the CLI tests) inherit it.
"""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

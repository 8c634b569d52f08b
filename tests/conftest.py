"""Test set-up: four fake CPU devices, so jit-over-a-mesh and pmap run as on a multi-device host.

The suite's tiny models spend most of their time in XLA's CPU compiler, not in
running: LLVM's optimisation passes are skipped (`--xla_backend_optimization_level=0`,
which cut a CLI test on digits from 85 to 31 s on 2 cores; a parameter
initialiser's random-bit kernels are the worst case). Compiled programs compute
the same operations; only their machine code is less tuned.

XLA reads the flags when the backend starts, so they are set before anything
imports jax. Subprocesses started by tests (the CLI tests) inherit them.
"""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4'
                           ' --xla_backend_optimization_level=0').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

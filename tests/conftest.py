"""Test set-up: four fake CPU devices, so jit-over-a-mesh and pmap run as on a multi-device host.

The suite's tiny models spend most of their time in XLA's CPU compiler, not in
running: LLVM's optimisation passes are skipped (`--xla_backend_optimization_level=0`,
which cut a CLI test on digits from 85 to 31 s on 2 cores; a parameter
initialiser's random-bit kernels are the worst case). Compiled programs compute
the same operations; only their machine code is less tuned.

Compiled programs are also shared through JAX's persistent compilation cache, in a
directory of this run's own (removed at exit), so a program compiled once is not
compiled again by the other xdist worker, by another test building the same model, or
by a CLI test's subprocess rerunning a script (a program's key covers its HLO, its
compile options and the jax version, so nothing stale can be read). Every program is
cached, however quick: half of the suite's compiles are single eager operations, and
reading one back costs less than compiling it. Set JAX_COMPILATION_CACHE_DIR to keep a
cache across runs.

XLA and JAX read these variables when they start, so they are set before anything
imports jax. Subprocesses started by tests (the CLI tests), and the xdist workers,
inherit them.
"""

import atexit
import os
import shutil
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4'
                           ' --xla_backend_optimization_level=0').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:  # Set by the xdist controller for its workers.
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='dulx-tests-jax-cache-')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

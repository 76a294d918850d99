# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How torch_install and torch_artifact_key run commands, and the one error they report.

Every command goes through ``AnsibleModule.run_command``, wrapped in a small runner object so
that unit tests can replace each command with a fake. Plain Python 3.8+ (it runs on the managed host).
"""

from __future__ import annotations

import os
import shutil
import threading

from ansible_collections.rnn_bootstrap.char_rnn.plugins.module_utils.host import usable_cpus

# A build step's output goes to the build log as it is written (a play or a user follows the log
# during a step of minutes): run_command keeps output in memory until the end, so the step runs
# under `sh`, which appends it to the log. $1 is the log; the rest is the step's argv, unquoted by exec.
STREAM_TO_LOG = 'log=$1; shift; exec "$@" >>"$log" 2>&1'


class TorchError(Exception):
    """Something failed: which step, why, and what the module reports with it (rc, log tail, more)."""

    def __init__(self, step, msg, rc=None, output="", **extra):
        super().__init__(msg)
        self.step = step
        self.msg = msg
        self.rc = rc
        self.output = output
        self.extra = extra


class Runner:
    """Runs commands through ``module.run_command``. Replaced by a fake in unit tests.

    No command may wait for an answer: run_command gives a child the module's own stdin unless
    it writes ``data`` (and then a newline too), and cannot pass /dev/null. So the runner points
    the module's fd 0 at /dev/null once, before any command; every child inherits that (over SSH
    with a tty, fd 0 could otherwise be a terminal). run_command has no timeout either: ``capture``
    kills a probe that outlives its timeout (from before_communicate_callback).
    """

    def __init__(self, module):
        self.module = module
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)

    def _run_command(self, argv, cwd, env, **kwargs):
        """run_command with ``env`` as the whole environment: it can only add to the module's own,
        so names ``env`` drops (MAKELEVEL) leave os.environ for the call."""
        dropped = {}
        if env is not None:
            dropped = {name: os.environ.pop(name) for name in list(os.environ) if name not in env}
        try:
            return self.module.run_command(
                argv,
                cwd=cwd,
                environ_update=env,
                expand_user_and_vars=False,
                handle_exceptions=False,
                **kwargs,
            )
        finally:
            os.environ.update(dropped)

    def run(self, argv, cwd, env, log_path):
        """A build step, its output (stdout and stderr) appended to ``log_path``; returns its rc."""
        try:
            rc, _out, _err = self._run_command(["/bin/sh", "-c", STREAM_TO_LOG, "sh", log_path, *argv], cwd, env)
        except OSError as exc:
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"cannot run {argv[0]}: {exc}\n")
            return 127
        return rc

    def capture(self, argv, cwd=None, env=None, timeout=600):
        """A short probe: (rc, stdout and stderr). 127 when it cannot start, 124 when it timed out."""
        fired = []
        timers = []

        def arm(proc):
            def kill():
                fired.append(True)
                proc.kill()

            timer = threading.Timer(timeout, kill)
            timer.daemon = True
            timers.append(timer)
            timer.start()

        try:
            rc, out, err = self._run_command(argv, cwd, env, before_communicate_callback=arm, errors="replace")
        except OSError as exc:
            return 127, str(exc)
        finally:
            for timer in timers:
                timer.cancel()
        if fired:
            return 124, f"timed out after {timeout} s"
        return rc, out + err

    def which(self, name, path=None):
        return shutil.which(name, path=path)

    def exists(self, path):
        return os.path.exists(path)

    def is_executable(self, path):
        return os.path.isfile(path) and os.access(path, os.X_OK)

    def cpu_count(self):
        return usable_cpus()

"""Build llama-cpp-python once, with visible progress, for the LLM stand-in's local model.

``make run`` calls this. PyPI has no binary wheel of llama-cpp-python, so it is compiled from
the sdist (a few minutes on two cores), once: the wheel is kept in ``<data_dir>/wheels`` and a
later run only installs it (seconds). If the build fails, the failure is recorded, a plain
message says the LLM stand-in will use scripted replies, and the exit status stays 0 so the
stack still starts; delete ``<data_dir>/llama-build.failed`` to try again.

Built portable (AVX2, no -march=native): the native build of 0.3.36 crashes in ``decode`` on
CPUs with AMX/AVX-512 (seen on this project's CI machines), and a portable wheel can be reused.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

VERSION = "0.3.36"
CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
)
STEP = re.compile(rb"\[(\d+)/(\d+)\]")


def _say(msg: str) -> None:
    print(f"callmeback: {msg}", flush=True)


def _install(wheel: Path) -> bool:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=False,
    )
    return r.returncode == 0


def _bar(done: int, total: int, started: float) -> str:
    width = 30
    filled = width * done // max(1, total)
    return (
        f"\r  compiling llama.cpp [{'#' * filled}{'.' * (width - filled)}] "
        f"{done}/{total} steps, {time.monotonic() - started:4.0f} s"
    )


def build(data_dir: Path) -> int:
    if importlib.util.find_spec("llama_cpp") is not None:
        return 0
    wheels = data_dir / "wheels"
    failed = data_dir / "llama-build.failed"
    cached = sorted(wheels.glob(f"llama_cpp_python-{VERSION}-*.whl"))
    if cached:
        _say(f"installing the cached llama.cpp build ({cached[-1].name})")
        if _install(cached[-1]):
            return 0
    if failed.exists():
        _say(
            f"llama.cpp could not be built earlier (see {data_dir / 'llama-build.log'}): the LLM "
            f"stand-in uses scripted replies. Delete {failed} to try again."
        )
        return 0
    wheels.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "llama-build.log"
    _say(
        f"building llama.cpp (llama-cpp-python {VERSION}) once; it takes about 5-10 minutes on "
        f"2 cores and is cached for later runs. Full log: {log_path}"
    )
    env = {
        **os.environ,
        "CMAKE_ARGS": CMAKE_ARGS,
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
    }
    cmd = [
        # --no-cache-dir: pip's wheel cache is keyed by the sdist, not by CMAKE_ARGS, and would
        # hand back a wheel built with other flags (a native build that crashes on AMX CPUs).
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-binary", "llama-cpp-python",
        "--no-cache-dir",
        "--disable-pip-version-check", "-v", f"llama-cpp-python=={VERSION}", "-w", str(wheels),
    ]  # fmt: skip
    started = time.monotonic()
    tty = sys.stdout.isatty()
    last_shown = -1
    with (
        log_path.open("wb") as log,
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            m = STEP.search(line)
            if m:
                done, total = int(m[1]), int(m[2])
                # On a terminal: one bar redrawn in place; in a log: a line every 10 %.
                if tty:
                    print(_bar(done, total, started), end="", flush=True)
                elif done * 10 // total != last_shown:
                    last_shown = done * 10 // total
                    print(_bar(done, total, started).strip(), flush=True)
        code = proc.wait()
    if tty:
        print(flush=True)
    built = sorted(wheels.glob(f"llama_cpp_python-{VERSION}-*.whl"))
    if code != 0 or not built or not _install(built[-1]):
        failed.write_text(f"pip wheel exited with {code}\n")
        _say(
            f"llama.cpp could not be built (exit {code}; see {log_path}). The stack starts "
            "anyway: the LLM stand-in answers with scripted replies."
        )
        return 0
    _say(f"llama.cpp built in {time.monotonic() - started:.0f} s and cached in {wheels}")
    return 0


if __name__ == "__main__":
    from voice_pipeline.settings import Settings

    sys.exit(build(Settings.from_env().data_dir))

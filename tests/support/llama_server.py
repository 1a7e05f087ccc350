"""llama.cpp's ``llama-server`` (and ``llama-batched-bench``) for the real-server test and the
bench: built once per machine from the llama.cpp sources vendored in PyPI's
``llama-cpp-python`` sdist, into a cache outside the clone, and started on a free local port.

Cache: ``$SPHERE_LLAMA_CPP_CACHE`` (default ``~/.cache/sphere/llama.cpp``)``/<version>/``:
the unpacked sdist, ``build/`` (``build/bin/llama-server``), ``build.log``; the sdist itself
under ``sdist/``. A file lock makes a second process wait for the first one's build; a build
that finished writes ``build/SPHERE_BUILD_OK`` (an interrupted one is resumed by cmake).
Needs cmake and a C++ compiler (``missing_toolchain`` says which is absent) and, for the first
build only, the sdist from the package index (``pip download``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Self

import httpx

from sphere_core.locks import file_lock

VERSION = "0.3.36"  # llama-cpp-python; vendors llama.cpp (ggml 0.25.3)
TARGETS = ("llama-server", "llama-batched-bench")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
)
OK_MARKER = "SPHERE_BUILD_OK"


def cache_root() -> Path:
    default = Path.home() / ".cache" / "sphere" / "llama.cpp"
    return Path(os.environ.get("SPHERE_LLAMA_CPP_CACHE") or default)


def version_dir(version: str = VERSION) -> Path:
    return cache_root() / version


def bin_dir(version: str = VERSION) -> Path:
    return version_dir(version) / "build" / "bin"


def missing_toolchain() -> str | None:
    """Why llama.cpp cannot be built here (None: cmake and a C++ compiler are present)."""
    if shutil.which("cmake") is None:
        return "cmake is not installed (needed to build llama.cpp's llama-server)"
    if not any(shutil.which(c) for c in (os.environ.get("CXX") or "c++", "g++", "clang++")):
        return "no C++ compiler (c++, g++ or clang++) is installed (needed to build llama-server)"
    return None


def is_built(version: str = VERSION) -> bool:
    build = version_dir(version) / "build"
    return (build / OK_MARKER).is_file() and all((build / "bin" / t).is_file() for t in TARGETS)


def _sdist(version: str, log) -> Path:
    folder = cache_root() / "sdist"
    found = sorted(folder.glob(f"llama_cpp_python-{version}.tar.gz"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    log(f"downloading the llama-cpp-python=={version} sdist into {folder}")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={version}",
            "-d",
            str(folder),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return folder / f"llama_cpp_python-{version}.tar.gz"


def source_dir(version: str = VERSION, log=print) -> Path:
    """The vendored llama.cpp sources of the sdist (unpacked once)."""
    root = version_dir(version)
    src = root / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (src / "CMakeLists.txt").is_file():
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(_sdist(version, log)) as tar:
            tar.extractall(root, filter="data")
    return src


def build(version: str = VERSION, jobs: int | None = None, log=print) -> Path:
    """Build ``llama-server`` and ``llama-batched-bench`` once; returns their directory."""
    root = version_dir(version)
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".build.lock"):
        if is_built(version):
            return bin_dir(version)
        src, build_dir = source_dir(version, log), root / "build"
        jobs = jobs or os.cpu_count() or 2
        log(f"building llama.cpp ({', '.join(TARGETS)}) in {build_dir}; log: {root / 'build.log'}")
        started = time.monotonic()
        with open(root / "build.log", "a") as out:
            for cmd in (
                ["cmake", "-S", str(src), "-B", str(build_dir), *CMAKE_FLAGS],
                ["cmake", "--build", str(build_dir), f"-j{jobs}", "--target", *TARGETS],
            ):
                subprocess.run(
                    ["nice", "-n", "10", *cmd], check=True, stdout=out, stderr=subprocess.STDOUT
                )
        (build_dir / OK_MARKER).write_text(f"built in {time.monotonic() - started:.0f} s\n")
    return bin_dir(version)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``llama-server`` on 127.0.0.1 serving one GGUF with ``slots`` parallel sequences."""

    def __init__(
        self,
        gguf: Path,
        *,
        slots: int = 8,
        ctx_per_slot: int = 2048,
        threads: int | None = None,
        log_path: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.gguf, self.slots, self.ctx_per_slot = Path(gguf), slots, ctx_per_slot
        self.threads = threads or os.cpu_count() or 2
        self.port = free_port()
        self.log_path = log_path or version_dir() / f"server-{self.port}.log"
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            str(bin_dir() / "llama-server"),
            "-m",
            str(self.gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "-np",
            str(self.slots),
            "-c",
            str(self.slots * self.ctx_per_slot),
            "-t",
            str(self.threads),
            *self.extra,
        ]

    def __enter__(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(timeout_s=180)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"llama-server exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"llama-server not ready within {timeout_s:g} s; see {self.log_path}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

"""Builds luab_fast._C with CMake (pybind11's cmake_example pattern); metadata lives in pyproject.toml.

Environment knobs: LUAB_FAST_DEBUG=1 builds with debug symbols and no optimisation;
LUAB_FAST_BUILD_TYPE=RelWithDebInfo keeps symbols in an optimised build (for perf);
LUAB_FAST_NATIVE=0 builds for any x86-64 CPU instead of the building one (-march=native is the default:
a wheel built that way may not run on an older CPU);
CMAKE_BUILD_PARALLEL_LEVEL sets the number of compile jobs (default: all cores).
"""

import os
import subprocess
import sys
from pathlib import Path

import pybind11
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: str = "") -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        extdir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        cfg = "Debug" if os.environ.get("LUAB_FAST_DEBUG") == "1" else os.environ.get("LUAB_FAST_BUILD_TYPE", "Release")
        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY_{cfg.upper()}={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={cfg}",
            # always passed: CMake caches options, so an unset variable would keep the last build's choice
            f"-DLUAB_FAST_NATIVE={'OFF' if os.environ.get('LUAB_FAST_NATIVE') == '0' else 'ON'}",
        ]
        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.run(["cmake", ext.sourcedir, *cmake_args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", "--config", cfg, "-j", jobs], cwd=build_temp, check=True)


setup(ext_modules=[CMakeExtension("luab_fast._C")], cmdclass={"build_ext": CMakeBuild})

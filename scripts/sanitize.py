#!/usr/bin/env python3
"""The patched llama.cpp under ASan + UBSan: test-sparse-ops, and the loader fuzzer (fuzz/).

    python scripts/sanitize.py build              # the sanitizer build; prints where its programs are
    python scripts/sanitize.py check [SECONDS]    # build, then test-sparse-ops, the fuzzer over the seed
                                                  # corpus and the regression files, and SECONDS (120) of
                                                  # fuzzing; exit 1 on any failure or sanitizer report
    python scripts/sanitize.py fuzz [ARGS...]     # a long run: libFuzzer's ARGS (-max_total_time=3600),
                                                  # the corpus kept in the cache

The build is its own CMake project (fuzz/CMakeLists.txt) over the patched tree that
`ggufsparse build-runtime` prepares (its _prepare_source), compiled with clang at -O1, with
ASan, UBSan (-fno-sanitize-recover: a report ends the run) and libFuzzer's coverage, static
libraries, the CPU backend only, the portable CPU flags of build-runtime; ccache is shared with it.
It lives in the cache (sanitize-<hash of the compiler, fuzz/CMakeLists.txt and the flags>), built
from scratch when absent, incrementally otherwise. See docs/fuzzing.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.paths import PATCHES_DIR, SPARSE_OPS_DIR, cache_dir
from ggufsparse.runtime import build, sdist, source

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"

# The seed corpus and the regression files are generated (fuzz/make_corpus.py), never kept in git:
# written once into the cache, keyed by the generator's bytes.
def seeds() -> tuple[Path, Path]:
    """(corpus folder, regression folder), made first if absent."""
    key = hashlib.sha256((FUZZ / "make_corpus.py").read_bytes()).hexdigest()[:12]
    base = cache_dir() / f"fuzz-seeds-{key}"
    corpus, regressions = base / "corpus", base / "regressions"
    if not (base / "done").is_file():
        _say(f"writing the seed corpus and regression files into {base} (fuzz/make_corpus.py, about a minute)")
        subprocess.run([sys.executable, str(FUZZ / "make_corpus.py"), str(corpus), "--regressions", str(regressions)],
                       check=True, stdout=subprocess.DEVNULL)
        (base / "done").write_text("ok\n")
    return corpus, regressions

TARGETS = ("test-sparse-ops", "fuzz-load")
CC, CXX = "clang", "clang++"

# A report stops the program with a non-zero exit. Huge allocations that a fuzzed shape asks for fail
# as they would without ASan (bad_alloc, which the loader turns into an error), not as a report. A
# 16 MB quarantine (default 256) still holds a load's freed memory, and halves the fuzzer's time
# spent faulting in fresh pages. The leak suppressions are for stock llama.cpp (fuzz/lsan.supp).
ENV = {
    "ASAN_OPTIONS": "halt_on_error=1:abort_on_error=0:detect_leaks=1:allocator_may_return_null=1:quarantine_size_mb=16",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    "LSAN_OPTIONS": f"suppressions={FUZZ / 'lsan.supp'}:print_suppressions=0",
}
REPORT_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "ERROR: libFuzzer",
                "SUMMARY: UndefinedBehaviorSanitizer")


def _say(msg: str) -> None:
    print(f"[sanitize] {msg}", file=sys.stderr, flush=True)


def cmake_args(llama: Path) -> list[str]:
    return [f"-DLLAMA_SOURCE={llama}", f"-DCMAKE_C_COMPILER={CC}", f"-DCMAKE_CXX_COMPILER={CXX}",
            "-DGGML_NATIVE=OFF", *build._portable_cpu_args()]


def work_dir() -> Path:
    if shutil.which(CXX) is None:
        raise UserError(f"{CXX} not found: the sanitizer build needs clang and its sanitizer runtimes "
                        "(bash scripts/setup.sh installs them)")
    compiler = subprocess.run([CXX, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([compiler, (FUZZ / "CMakeLists.txt").read_text(),
                                    *cmake_args(Path("-"))]).encode()).hexdigest()[:12]
    return cache_dir() / f"sanitize-{key}"


def build_all(jobs: int) -> Path:
    """Prepare the patched tree and build the targets; returns the folder of the programs."""
    work = work_dir()
    start = time.monotonic()
    # the tree build-runtime compiles: the sdist, patches/ applied, ggml-sparse/ copied in, the build id
    work.mkdir(parents=True, exist_ok=True)
    build._prepare_source(work, sdist.fetch(cache_dir()), build.BuildFlags(),
                          source.patch_hash(PATCHES_DIR, SPARSE_OPS_DIR))
    llama = work / "src" / source.LLAMA_DIR
    log = work / "build.log"
    log.write_text("")
    launchers, env = build._ccache_env(cache_dir())
    args = [*cmake_args(llama), *launchers]
    stamp = work / "configured"
    if not (work / "build" / "CMakeCache.txt").exists() or not stamp.exists() or stamp.read_text() != json.dumps(args):
        _say("configuring with CMake")
        build._run_logged(["cmake", "-S", str(FUZZ), "-B", str(work / "build"), "-G", "Ninja", *args], log, env)
        stamp.write_text(json.dumps(args))
    _say(f"building {', '.join(TARGETS)} with {jobs} jobs (log: {log})")
    build._run_logged(["cmake", "--build", str(work / "build"), "-j", str(jobs), "--target", *TARGETS], log, env,
                      progress=sys.stderr.isatty())
    _say(f"built in {time.monotonic() - start:.0f} s: {work / 'build' / 'bin'}")
    return work / "build" / "bin"


def _run(name: str, cmd: list[str], timeout: float | None = None) -> bool:
    """Run a sanitized program, its output passed through; False on a non-zero exit or a report."""
    _say(f"{name}: {' '.join(cmd)}")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=dict(os.environ, **ENV), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    assert proc.stdout is not None
    reported = False
    for line in proc.stdout:
        reported = reported or any(mark in line for mark in REPORT_MARKS)
        sys.stdout.write(line)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    ok = rc == 0 and not reported
    _say(f"{name}: {'ok' if ok else 'FAILED'} (exit {rc}, {time.monotonic() - start:.0f} s)")
    return ok


def inputs(folder: Path) -> list[str]:
    return [str(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != "README.md"] \
        if folder.is_dir() else []


def check(jobs: int, fuzz_seconds: int) -> bool:
    bin_dir = build_all(jobs)
    fuzzer = str(bin_dir / "fuzz-load")
    ok = _run("test-sparse-ops (every case)", [str(bin_dir / "test-sparse-ops")])
    corpus, regressions = seeds()
    files = inputs(corpus) + inputs(regressions)
    ok = _run(f"fuzz-load over {len(files)} seed and regression files", [fuzzer, *files]) and ok
    if fuzz_seconds > 0:
        with tempfile.TemporaryDirectory() as tmp:
            # new inputs go to the first folder (a temporary one); the committed corpus is only read
            ok = _run(f"fuzz-load, {fuzz_seconds} s", [
                fuzzer, f"-max_total_time={fuzz_seconds}", "-timeout=30", "-print_final_stats=1",
                f"-artifact_prefix={tmp}/", tmp, str(corpus)], timeout=fuzz_seconds + 300) and ok
            for crash in Path(tmp).glob("crash-*"):
                kept = work_dir() / "artifacts" / crash.name
                kept.parent.mkdir(exist_ok=True)
                shutil.copyfile(crash, kept)
                _say(f"reproducer: {kept}")
    return ok


def fuzz(jobs: int, extra: list[str]) -> bool:
    """A long run: one process (the machine's other cores are left alone unless -jobs says so),
    its corpus kept in the cache between runs, reproducers in artifacts/."""
    bin_dir = build_all(jobs)
    work = work_dir()
    corpus = work / "corpus"
    corpus.mkdir(exist_ok=True)
    (work / "artifacts").mkdir(exist_ok=True)
    seed_corpus, _ = seeds()
    return _run("fuzz-load", [str(bin_dir / "fuzz-load"), "-timeout=30", "-reload=0", "-print_final_stats=1",
                              f"-artifact_prefix={work / 'artifacts'}/", *extra, str(corpus), str(seed_corpus)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    jobs = argparse.ArgumentParser(add_help=False)
    jobs.add_argument("-j", "--jobs", type=int, default=2, help="compile jobs (default 2)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", parents=[jobs], help="build test-sparse-ops and fuzz-load with ASan + UBSan")
    c = sub.add_parser("check", parents=[jobs], help="build and run everything once; exit 1 on a failure or a report")
    c.add_argument("seconds", nargs="?", type=int, default=120, help="seconds of fuzzing (default 120; 0: none)")
    sub.add_parser("fuzz", parents=[jobs], help="fuzz the loader; further arguments go to libFuzzer (-max_total_time=...)")
    args, libfuzzer = parser.parse_known_args(argv)
    if libfuzzer and args.cmd != "fuzz":
        parser.error(f"unrecognized arguments: {' '.join(libfuzzer)}")
    try:
        if args.cmd == "build":
            print(build_all(args.jobs))
            return 0
        if args.cmd == "check":
            ok = check(args.jobs, args.seconds)
        else:
            ok = fuzz(args.jobs, libfuzzer)
    except UserError as e:
        print(f"sanitize: error: {e}", file=sys.stderr)
        return 2
    _say("all clean" if ok else "FAILED: see the reports above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

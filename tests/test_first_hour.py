"""A researcher's first hour: each mistake seen in the wild is one line and exit code 2, before any
model loads; sweeps attempt every job; paths resolve against the repository; README commands parse.

Every test runs the real command as a subprocess from a foreign folder (tmp_path), so the
project root, not the cwd, must anchor the defaults. None starts an engine.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import REPO

def run(module: str, *args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The failure's single line: no traceback, nothing else on stderr."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


def one_logged_error(done: subprocess.CompletedProcess) -> str:
    """Inside a job the error goes through Hydra's job logging (the console handler is stdout)."""
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, output
    return errors[0]


@pytest.mark.parametrize("args,message", [
    (["model=finetuned_8b"],
     "model.path is required with model=finetuned_8b: add model.path=/path/to/checkpoint"),
    (["experiment=dmsc_8b_tp4"],
     "model.path is required with experiment=dmsc_8b_tp4 (model=finetuned_8b): add model.path="),
    (["dataset=custom"], "dataset.path is required with dataset=custom: add dataset.path="),
    (["sampling.temprature=0.5"], "did you mean sampling.temperature? (sampling.temperature=0.5)"),
    (["+sampling.temprature=0.5"],
     "sampling.temprature is not a setting of sampling=default: did you mean sampling.temperature?"),
    (["+dataset.stops=[x]"], "dataset.stops is not a setting of dataset=Chameleons: did you mean dataset.stop?"),
    (["+max_user=3"], "max_user is not a setting: did you mean max_users?"),
    (["+engine.max_num_seq=64"],
     "engine.max_num_seq is not a vLLM engine argument (engine=vllm)"),
    (["engine=hf", "+engine.max_batch_token=5"],
     "engine.max_batch_token is not a setting of engine=hf: did you mean engine.max_batch_tokens?"),
    (["model.tokenizer=/ckpt/tok"], "model.tokenizer is not a setting"),
    (["model=finetuned_8b", "model.path=/ckpt/x", "+model.chat_template_kwargs.enable_thinking=false"],
     "model.chat_template_kwargs.enable_thinking is already in the config: drop the +"),
    (["model.chat_template_kwargs.enable_thinking=false"],
     "add it with +model.chat_template_kwargs.enable_thinking=false"),
    (["ablation=profile_only,history_only"], "add -m to sweep over them"),
])
@pytest.mark.slow
def test_config_mistakes_are_one_line_and_exit_2(tmp_path, args, message):
    done = run("inference_vllm", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in one_error_line(done)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_vllm_arguments_pass_and_both_thinking_forms_compose(tmp_path):
    for args in (["+engine.max_logprobs=5"], ["++model.chat_template_kwargs.enable_thinking=false"],
                 ["+model.chat_template_kwargs.enable_thinking=false"],
                 ["model=finetuned_8b", "model.path=/ckpt/x",
                  "model.chat_template_kwargs.enable_thinking=false"],
                 ["model=finetuned_8b", "model.path=/ckpt/x",
                  "++model.chat_template_kwargs.enable_thinking=false"]):
        done = run("inference_vllm", *args, "--cfg", "job", cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)


@pytest.mark.slow
def test_a_hub_id_says_only_local_folders_work_and_how_to_get_one(tmp_path):
    done = run("inference_vllm", "model.path=Qwen/Qwen3-8B", f"output_dir={tmp_path / 'out'}",
               cwd=tmp_path)
    assert done.returncode == 2
    line = one_logged_error(done)
    assert "only local folders work" in line
    assert "huggingface-cli download Qwen/Qwen3-8B --local-dir /ckpt/Qwen3-8B" in line


@pytest.mark.slow
def test_a_checkpoint_without_tokenizer_files_is_one_line(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_bytes(orjson.dumps({"max_position_embeddings": 2048}))
    done = run("inference_vllm", f"model.path={ckpt}", f"output_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert done.returncode == 2
    assert "has no tokenizer files (tokenizer.json" in one_logged_error(done)


@pytest.mark.slow
def test_defaults_resolve_against_the_repository_from_another_folder(tmp_path):
    done = run("inference_vllm", "--cfg", "job", "--resolve", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"path: {REPO / 'data' / 'Chameleons'}" in done.stdout
    assert f"output_dir: {REPO / 'outputs' / 'Chameleons'}" in done.stdout
    assert f"cache_dir: {REPO / '.cache'}" in done.stdout


@pytest.mark.slow
def test_a_sweep_attempts_every_job_and_names_the_failures(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = run("inference_vllm", "-m", "sampling.num_samples=0,-1", f"hydra.sweep.dir={sweep_dir}",
               "output_dir=runs/n${sampling.num_samples}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sweep: 2 job(s) failed: #0 (sampling.num_samples=0")
    assert "#1 (sampling.num_samples=-1" in last and "must be at least 1" in last
    for n in ("0", "-1"):  # each job's .hydra/ and log land in its own output_dir
        assert (tmp_path / "runs" / f"n{n}" / ".hydra" / "config.yaml").is_file()
        assert (tmp_path / "runs" / f"n{n}" / "run.log").is_file()


@pytest.mark.slow
def test_a_sweep_with_a_typo_stops_before_its_first_job(tmp_path):
    done = run("inference_vllm", "-m", "dataset=Chameleons,custom", cwd=tmp_path)
    assert done.returncode == 2
    assert "(sweep job dataset=custom)" in one_error_line(done)


@pytest.mark.parametrize("module,args", [
    ("inference_core.merge", ["/no/such/run"]),
    ("inference_core.evaluate", ["/no/such/run"]),
    ("inference_core.report", ["/no/such/run"]),
    ("inference_core.leaderboard", ["/no/such/root"]),
    ("inference_core.convert", ["dmsc", "/no/such.csv", "/tmp/never"]),
    ("inference_core.convert", []),
])
@pytest.mark.slow
def test_every_command_exits_2_with_one_line_on_bad_input(tmp_path, module, args):
    done = run(module, *args, cwd=tmp_path)
    assert done.returncode == 2
    assert "/no/such" in one_error_line(done) or "required" in one_error_line(done)


@pytest.mark.parametrize("module,words", [
    ("inference_vllm", "generate num_samples continuations"),
    ("inference_hf", "generate num_samples continuations"),
    ("inference_core.quantize", "4-bit AWQ"),
    ("inference_core.merge", "build a run folder's final files"),
    ("inference_core.evaluate", "recompute metrics.json"),
    ("inference_core.report", "report.html"),
    ("inference_core.leaderboard", "build the leaderboard"),
    ("inference_core.convert", "convert a raw public corpus"),
])
@pytest.mark.slow
def test_help_says_what_the_command_does_in_its_first_line(tmp_path, module, words):
    done = run(module, "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert words in done.stdout.splitlines()[0]


# --- README commands: every documented run command composes (no engine) ---------------------

HYDRA_ENTRY = re.compile(r"python -m (inference_vllm|inference_hf|inference_core\.quantize)(?=\s|$)(.*)")


def readme_commands() -> list[str]:
    """Commands in README.md's fenced blocks, continuation lines joined, `# no-check` left out."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    blocks, block, language = [], None, ""
    for line in lines:
        if line.startswith("```"):
            if block is None:
                block, language = [], line[3:].strip()
            else:
                if language in ("", "bash", "sh", "shell"):
                    blocks.append("\n".join(block))
                block = None
        elif block is not None:
            block.append(line)
    commands = []
    for text in blocks:
        for line in text.replace("\\\n", " ").splitlines():
            if re.search(r"#\s*no-check\s*$", line):
                continue
            line = line.split(" #")[0].strip()
            if re.match(r"(make |python -m inference_(vllm|hf)(\s|$))", line):
                commands.append(line)
    return commands


def hydra_invocations(command: str) -> list[tuple[str, list[str]]]:
    """(module, overrides) of a README line; a make line through `make -n`, as make would run it."""
    if command.startswith("make "):
        done = subprocess.run(["make", "-n", "-s", *shlex.split(command)[1:]], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        found = HYDRA_ENTRY.findall(done.stdout.replace("\\\n", " "))
        pieces = [(m, re.split(r";|\|\||&&", tail)[0]) for m, tail in found]
    else:
        pieces = [HYDRA_ENTRY.match(command).groups()]
    return [(module, shlex.split(tail)) for module, tail in pieces]


def jobs_to_check(module: str, args: list[str]) -> list[list[str]]:
    """`--cfg job` takes no -m: a sweep is checked at its first and last job, as Hydra expands it."""
    from inference_core.config_check import CommandLine, job_overrides

    overrides = [a for a in args if a not in ("-m", "--multirun")]
    if len(overrides) == len(args):
        return [overrides]
    name = {"inference_hf": "config_hf", "inference_core.quantize": "quantize"}.get(module, "config")
    jobs = job_overrides(CommandLine(tuple(overrides), True, name, False))
    return [jobs[0], jobs[-1]]


@pytest.mark.slow
@pytest.mark.parametrize("command", readme_commands() or ["(README has no commands)"])
def test_readme_commands_compose(tmp_path, command):
    if command.startswith("("):
        pytest.skip(command)
    for module, overrides in hydra_invocations(command):
        if any("..." in a or a.isupper() for a in overrides):
            pytest.skip(f"placeholder in {command!r}: mark it # no-check")
        for job in jobs_to_check(module, overrides):
            done = run(module, *job, "--cfg", "job", cwd=tmp_path)
            assert done.returncode == 0, f"{command}\n{done.stderr}"

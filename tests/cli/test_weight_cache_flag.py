"""--weight-cache on the command line: generate writes it into the stack (both engines), and a
spec it cannot work with is refused in one line, exit 2."""

from __future__ import annotations

import json

import yaml

from servestack.cli.main import main

MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def test_generate_puts_the_cache_in_the_pulumi_stack(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--cloud", "gcp", "--stack", "prod", "--weight-cache"]) == 0
    config = yaml.safe_load((tmp_path / "stacks" / "Pulumi.prod.yaml").read_text())["config"]
    cache = config["servestack:deployment"]["weight_cache"]
    assert cache["scheme"] == "gs" and cache["path"] == f"models/{MODEL}"


def test_generate_puts_the_bucket_in_the_terraform_stack(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--format", "terraform", "--stack", "tf", "--cloud", "aws",
                 "--weight-cache"]) == 0
    main_tf = json.loads((tmp_path / "stacks" / "tf" / "main.tf.json").read_text())
    assert "weight_cache" in main_tf["resource"]["aws_s3_bucket"]


def test_a_spec_the_cache_cannot_serve_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "serve.yaml"
    spec.write_text(
        "envs:\n  MODEL_NAME: " + MODEL + "\nresources:\n  accelerators: A100:4\n"
        "  ports: 8000\n  image_id: docker:vllm/vllm-openai:v0.9.2\n"
        "service:\n  readiness_probe: /health\n"
        "run: vllm serve $MODEL_NAME --port 8000\n")
    assert main(["generate", str(spec), "--weight-cache", "--stack", "x"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--weight-cache with image_id: docker:IMAGE" in errors[0]
    assert not (tmp_path / "stacks").exists()

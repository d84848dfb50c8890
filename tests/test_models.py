"""What servestack reads from a spec's vLLM command line."""

from __future__ import annotations

import pytest

from servestack.models import vllm_port


@pytest.mark.parametrize("run, port", [
    ("vllm serve m --port 8081", (8081, True)),
    ("python -m vllm.entrypoints.openai.api_server --model m --port=9000", (9000, True)),
    ("vllm serve m \\\n  --host 0.0.0.0 --port 8082", (8082, True)),
    ("vllm serve m", (8000, False)),
    # only the vLLM command's words count: not a web UI next to it, nor ray, nor comments
    ("vllm serve m & python gradio.py --port 8811 --model-url http://localhost:8000/v1",
     (8000, False)),
    ("ray start --head --port=6379\nvllm serve m", (8000, False)),
    ("# Mistral's model, on our port\nvllm serve m --port 8081\n# vLLM's server", (8081, True)),
    # no plain answer: no check
    ("# was: vllm serve m\npython -m sglang.launch_server --model m", None),
    ('echo "then vllm serve m"', None),
    ("vllm serve m --port $PORT", None),
    ("vllm serve a --port 1 & vllm serve b --port 2", None),
])
def test_the_port_of_the_runs_vllm_command(run, port):
    assert vllm_port(run) == port

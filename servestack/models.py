"""Does a model fit a VM's GPUs under vLLM? Weights + KV cache vs. GPU memory, and TP shape.

The check mirrors how vLLM sizes itself: it may use `gpu_memory_utilization` (0.9 by default)
of each GPU; the weights are split evenly over the tensor-parallel GPUs; what remains after the
weights and a fixed reserve for activations, CUDA graphs and NCCL buffers holds the KV cache,
which must hold at least one sequence of the context length served. Tensor parallelism must
divide the attention heads, and the KV heads (or be a multiple of them).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import UserError

GIB = 1024**3
MIB_PER_GIB = 1024
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default
RESERVE_GIB_PER_GPU = 2.0  # activations at profiling, CUDA graphs, NCCL buffers (heuristic)
USEFUL_CONTEXT_TOKENS = 4096  # the context a plan must at least hold when none is given
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "auto": 2}
FIT_FLAGS = ("--max-model-len", "--gpu-memory-utilization", "--dtype", "--quantization")
# Token-count suffixes. vLLM reads lowercase ones as powers of 1000; a plan-time estimate takes
# both cases as powers of 1024 (under 10 % apart), so 16k and 16K plan alike.
TOKEN_SUFFIXES = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
HF_NAME_MAX = 96  # Hugging Face's limit for an org and a repo name
HF_MODEL_ID = re.compile(r"(?:[\w.-]{1,96}/)?[\w.-]{1,96}")
NAME_MAX, PATH_MAX = 255, 4096  # Linux limits for one path component and a whole path
QUANT_BYTES = {"awq": 0.5, "gptq": 0.5, "bitsandbytes": 0.5, "fp8": 1, "int8": 1,
               "awq_marlin": 0.5, "gptq_marlin": 0.5, "compressed-tensors": 1}


@dataclass(frozen=True, slots=True)
class ModelFacts:
    name: str
    params: float
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    head_dim: int
    max_position_embeddings: int
    bytes_per_param: float = 2.0
    context_tokens: int = USEFUL_CONTEXT_TOKENS
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION

    @property
    def weights_gib(self) -> float:
        return self.params * self.bytes_per_param / GIB

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * 2


@dataclass(frozen=True, slots=True)
class Fit:
    ok: bool
    reason: str = ""


@cache
def known_models() -> dict[str, dict]:
    data = json.loads((Path(__file__).parent / "models.json").read_text())
    data.pop("_comment", None)
    return data


def facts_from_config(name: str, config: dict) -> ModelFacts:
    """Architecture facts from a Hugging Face config.json (or our shipped subset of one)."""
    try:
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        intermediate = int(config["intermediate_size"])
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"model config for {name} lacks a usable field: {exc}") from None
    head_dim = int(config.get("head_dim") or hidden // heads)
    experts = int(config.get("num_local_experts") or config.get("num_experts") or 1)
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * intermediate * experts + (hidden * experts if experts > 1 else 0)
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return ModelFacts(
        name=name, params=float(layers * (attention + mlp) + embeddings),
        num_attention_heads=heads, num_key_value_heads=kv_heads, num_hidden_layers=layers,
        head_dim=head_dim, max_position_embeddings=int(config.get("max_position_embeddings", 4096)),
        bytes_per_param=DTYPE_BYTES.get(str(config.get("torch_dtype", "bfloat16")), 2),
    )


def lookup(name: str, config_path: str | None = None) -> ModelFacts | None:
    """Facts for `name`: from a local config.json if given or if `name` is a local folder."""
    path = Path(config_path) if config_path else Path(name) / "config.json"
    if config_path or _is_file(path):
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read model config: {exc}", file=str(path)) from None
        return facts_from_config(name, config)
    for known, config in known_models().items():
        if known.lower() == name.lower():
            return facts_from_config(known, config)
    return None


def is_gated(name: str) -> bool:
    """Whether Hugging Face serves `name` only with a token (models.json's `gated` fact)."""
    return any(known.lower() == name.lower() and bool(config.get("gated"))
               for known, config in known_models().items())


# A whole word that is one variable: $NAME or ${NAME}.
ENV_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def model_from_command(command: str | None) -> str | None:
    """The model a vLLM command line serves: `vllm serve M` or `--model M`."""
    if not command:
        return None
    text = command.replace("\\\n", " ")
    match = re.search(r"vllm\s+serve\s+([^\s|;&]+)", text) or \
        re.search(r"--model(?:=|\s+)([^\s|;&]+)", text)
    return match.group(1).strip("'\"") if match else None


VLLM_DEFAULT_PORT = 8000  # vllm/entrypoints/openai/cli_args.py: --port default
VLLM_SERVER = re.compile(r"vllm\s+serve\b|vllm\.entrypoints\.openai\.api_server")
SHELL_OPERATOR = re.compile(r"[;&|()<>]+")


def vllm_port(command: str | None) -> tuple[int, bool] | None:
    """The port a command's vLLM server listens on, and whether its `--port` says so (else
    vLLM's default). Only the vLLM command's own words count, not other commands on the line
    (`vllm serve M & app.py --port 7860`) nor comments. None when that is not plain: no vLLM
    server, two of them, a line the shell lexer cannot read, or a `$` resolved on the VM."""
    servers = [words for words in _commands(command or "") if _starts_vllm(words)]
    if len(servers) != 1:
        return None
    given = {value for key, value in _flag_pairs(servers[0]) if key == "--port"}
    if not given:
        return VLLM_DEFAULT_PORT, False
    text = given.pop()
    return (int(text), True) if not given and text.isdigit() else None


def _commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script, as words: lines (with their continuations
    joined) split at ; & | && || and parentheses, comments dropped. [] when a line does not
    lex (a quote left open, as in a heredoc): no guess is made then."""
    commands: list[list[str]] = []
    for line in script.replace("\\\r\n", " ").replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        try:
            for token in lexer:
                if SHELL_OPERATOR.fullmatch(token):
                    commands.append(current)
                    current = []
                else:
                    current.append(token)
        except ValueError:
            return []
        commands.append(current)
    return [words for words in commands if words]


def _starts_vllm(words: list[str]) -> bool:
    pairs = zip(words, words[1:], strict=False)
    return any(a == "vllm" and b == "serve" for a, b in pairs) or \
        "vllm.entrypoints.openai.api_server" in words


def model_variable(run: str | None, model: str) -> str | None:
    """How `--model MODEL` changes what the spec serves: the env variable through which `run`
    names its model (`vllm serve $MODEL_NAME`, SkyPilot's usual form), which --model then sets
    for run, the readiness probe and everything else that reads it; None when there is no `run`
    (the default command serves MODEL) or `run` already serves MODEL. servestack never rewrites a
    user's `run`: one that names another model literally, or no model, is refused."""
    if not run:
        return None
    named = model_from_command(run)
    if named is None:
        raise UserError(f"--model {_clip(model)}: the spec's run names no model (no `vllm serve "
                        "NAME` or `--model NAME`), so servestack cannot change what it serves; "
                        "name the model in run, or drop --model")
    variable = ENV_VARIABLE.fullmatch(named)
    if variable:
        return variable.group(1) or variable.group(2)
    if named != model:
        raise UserError(f"--model {_clip(model)}: the spec's run serves {_clip(named)}, and "
                        "servestack does not rewrite your run; edit it, or name the model "
                        "through an env (`vllm serve $MODEL_NAME` with envs: MODEL_NAME) that "
                        "--model then sets")
    return None


def model_name_problem(name: str) -> str | None:
    """Why vLLM could never load `name`, or None: it must be a Hugging Face id or a path."""
    if HF_MODEL_ID.fullmatch(name) or "$" in name:
        return None
    parts = name.encode().split(b"/")
    if len(name.encode()) <= PATH_MAX and all(len(p) <= NAME_MAX for p in parts) \
            and "\0" not in name:
        return None  # may be a folder on the VM
    return (f"model {_clip(name)} ({len(name)} characters) is neither a Hugging Face id "
            f"(org/name, at most {HF_NAME_MAX} characters each) nor a file path (at most "
            f"{NAME_MAX} bytes a component)")


def vllm_flags(command: str | None) -> dict:
    """The fit-relevant vLLM flags of `command`, checked as vLLM checks them at start.

    Values holding `$` are resolved only on the VM and are left out. A value vLLM would
    refuse raises UserError naming the flag.
    """
    if not command:
        return {}
    try:
        words = shlex.split(command.replace("\\\n", " "), comments=False)
    except ValueError:
        words = command.split()
    flags = {k: v for k, v in _flag_pairs(words) if k in FIT_FLAGS and "$" not in v}
    parsed: dict = {}
    if "--max-model-len" in flags:
        parsed["max_model_len"] = _max_model_len(flags["--max-model-len"])
    if "--gpu-memory-utilization" in flags:
        parsed["gpu_memory_utilization"] = _utilization(flags["--gpu-memory-utilization"])
    if flags.get("--dtype") in DTYPE_BYTES:
        parsed["bytes_per_param"] = DTYPE_BYTES[flags["--dtype"]]
    if flags.get("--quantization") in QUANT_BYTES:
        parsed["bytes_per_param"] = QUANT_BYTES[flags["--quantization"]]
    return parsed


def apply_flags(facts: ModelFacts, command: str | None) -> ModelFacts:
    """Honour --max-model-len, --dtype, --quantization, --gpu-memory-utilization if given."""
    flags = vllm_flags(command)
    changes: dict = {}
    if "max_model_len" in flags:
        changes["context_tokens"] = flags["max_model_len"] or facts.max_position_embeddings
    if "gpu_memory_utilization" in flags:
        changes["gpu_memory_utilization"] = flags["gpu_memory_utilization"]
    if "bytes_per_param" in flags:
        changes["bytes_per_param"] = flags["bytes_per_param"]
    if not changes:
        return facts
    from dataclasses import replace

    return replace(facts, **changes)


def check_fit(facts: ModelFacts, gpu_memory_mib: int, gpu_count: int) -> Fit:
    """`gpu_memory_mib` is one GPU's memory as the driver reports it, which is what vLLM's
    `gpu_memory_utilization` is a share of (not the vendor's rounder GB figure)."""
    heads, kv_heads = facts.num_attention_heads, facts.num_key_value_heads
    if heads % gpu_count:
        return Fit(False, f"tensor parallel size {gpu_count} does not divide the model's "
                   f"{heads} attention heads")
    if kv_heads % gpu_count and gpu_count % kv_heads:
        return Fit(False, f"tensor parallel size {gpu_count} does not divide the model's "
                   f"{kv_heads} KV heads")
    context = min(facts.context_tokens, facts.max_position_embeddings)
    gpu_gib = gpu_memory_mib / MIB_PER_GIB
    budget = gpu_gib * facts.gpu_memory_utilization
    weights = facts.weights_gib / gpu_count
    kv = context * facts.kv_bytes_per_token / GIB / gpu_count
    need = weights + RESERVE_GIB_PER_GPU + kv
    if need > budget:
        total = facts.weights_gib
        return Fit(False, f"{facts.name} needs {total:.0f} GiB for weights plus "
                   f"{context} tokens of KV cache; {gpu_count} x {gpu_gib:g} GiB at "
                   f"{facts.gpu_memory_utilization:.0%} leaves {budget:.1f} GiB per GPU, "
                   f"{need:.1f} GiB needed")
    return Fit(True)


def _flag_pairs(words: list[str]):
    for i, word in enumerate(words):
        if word.startswith("--"):
            if "=" in word:
                key, value = word.split("=", 1)
                yield key, value
            elif i + 1 < len(words):
                yield word, words[i + 1]


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for a path, or with a NUL byte
        return False


def _max_model_len(text: str) -> int:
    """A token count as vLLM takes it (4096, 32k, 2.5k); -1 or auto: the model's maximum (0)."""
    text = text.strip()
    if text in ("-1", "auto"):
        return 0
    match = re.fullmatch(r"(\d{1,9}(?:\.\d{1,6})?)([kmgtKMGT]?)", text)
    number, suffix = match.groups() if match else ("", "")
    if not match or "." in number and not suffix:
        raise UserError(f"--max-model-len {_clip(text)}: not a token count; vLLM takes a whole "
                        "number such as 4096 or 32k, or -1 for the model's maximum")
    tokens = int(float(number) * TOKEN_SUFFIXES[suffix.lower()])
    if tokens < 1:
        raise UserError(f"--max-model-len {_clip(text)}: vLLM needs at least 1 token, or -1 "
                        "for the model's maximum")
    return tokens


def _utilization(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:  # also false for nan
        raise UserError(f"--gpu-memory-utilization {_clip(text)}: vLLM takes a fraction of "
                        "each GPU's memory above 0 and at most 1, e.g. 0.9")
    return value


def _clip(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit] + "...")

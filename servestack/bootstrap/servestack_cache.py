"""servestack's weight cache on a replica (--weight-cache; see servestack.deployment.cache).

Run by /opt/servestack/bin/servestack-cache in its own venv, which holds the cloud's storage
SDK (clouds.<cloud>.cache_packages); the bootstrap writes only this cloud's part of it.

    check  - servestack-start, before vLLM starts: when the bucket holds the model's completion
             marker, write $SERVESTACK_STATE/cache.env (the bucket's URI, and what the Run:ai
             streamer needs to reach it), which turns `vllm serve MODEL` into
             `vllm serve <uri> --load-format runai_streamer`; else remove it (the hub, as
             without the cache).
    fill   - servestack-cache-fill.service: once vLLM answers /health, and the marker is not
             there, upload the Hugging Face snapshot this replica downloaded, under a lock
             taken by a conditional create (S3 PutObject If-None-Match: *, GCS
             ifGenerationMatch=0, Azure Blob If-None-Match: *) so two replicas do not fill at
             once; the marker is written last, so a half-filled bucket is never served.

The bucket's name is the deployment's prefix and a digest of the account (AWS account id, GCP
project id, Azure subscription id), as the engines name it. Only this bucket is reachable: the
VMs' identity may read and write it and nothing else.
"""

import hashlib
import json
import os
import shlex
import sys
import time
import urllib.request
from pathlib import Path

HEALTH_POLL_SECONDS = 30
# A lock older than this is a filler that died (an upload of ~100 GB inside a region takes
# well under an hour): it is removed and taken again.
LOCK_STALE_SECONDS = 4 * 3600
ACCOUNT_DIGEST = 10  # servestack.deployment.model.ACCOUNT_DIGEST
MARKERS = "servestack"


def log(text: str) -> None:
    print(f"servestack-cache: {text}", file=sys.stderr, flush=True)


def bucket_name(settings: dict, account: str) -> str:
    digest = hashlib.sha256(account.encode()).hexdigest()[:ACCOUNT_DIGEST]
    return settings["SERVESTACK_CACHE_PREFIX"] + digest


def marker_key(settings: dict) -> str:
    """Beside the model's folder, not in it: vLLM pulls every non-weight file of the folder."""
    return f"{MARKERS}/{settings['SERVESTACK_MODEL']}.complete"


def lock_key(settings: dict) -> str:
    return f"{MARKERS}/{settings['SERVESTACK_MODEL']}.lock"


def metadata(url: str, headers: dict) -> str:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.read().decode().strip()


class Aws:
    """S3 with the instance profile's credentials; every call names the bucket's expected
    owner (this account), so a bucket of that name in another account is never used."""

    def __init__(self, settings: dict) -> None:
        import boto3
        region = settings["SERVESTACK_REGION"]
        self.account = boto3.client("sts", region_name=region).get_caller_identity()["Account"]
        self.bucket = bucket_name(settings, self.account)
        self.s3 = boto3.client("s3", region_name=region)
        self.region = region

    def env(self, path: str) -> dict:
        return {"SERVESTACK_CACHE_URI": f"s3://{self.bucket}/{path}",
                "AWS_DEFAULT_REGION": self.region}

    def _args(self, key: str) -> dict:
        return {"Bucket": self.bucket, "Key": key, "ExpectedBucketOwner": self.account}

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError
        try:
            self.s3.head_object(**self._args(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def create_only(self, key: str, body: bytes) -> bool:
        from botocore.exceptions import ClientError
        try:
            self.s3.put_object(**self._args(key), Body=body, IfNoneMatch="*")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in (
                    "PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def age(self, key: str) -> float:
        found = self.s3.head_object(**self._args(key))
        return time.time() - found["LastModified"].timestamp()

    def upload(self, key: str, path: Path) -> None:
        self.s3.upload_file(str(path), self.bucket, key,
                            ExtraArgs={"ExpectedBucketOwner": self.account})

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(**self._args(key), Body=body)

    def delete(self, key: str) -> None:
        self.s3.delete_object(**self._args(key))


class Gcp:
    """GCS with the VM service account's credentials (the metadata server's)."""

    def __init__(self, settings: dict) -> None:
        from google.cloud import storage
        project = metadata("http://metadata.google.internal/computeMetadata/v1/project/"
                           "project-id", {"Metadata-Flavor": "Google"})
        self.name = bucket_name(settings, project)
        self.bucket = storage.Client(project=project).bucket(self.name)

    def env(self, path: str) -> dict:
        return {"SERVESTACK_CACHE_URI": f"gs://{self.name}/{path}"}

    def exists(self, key: str) -> bool:
        return self.bucket.blob(key).exists()

    def create_only(self, key: str, body: bytes) -> bool:
        from google.api_core.exceptions import PreconditionFailed
        try:
            self.bucket.blob(key).upload_from_string(body, if_generation_match=0)
        except PreconditionFailed:
            return False
        return True

    def age(self, key: str) -> float:
        return time.time() - self.bucket.get_blob(key).updated.timestamp()

    def upload(self, key: str, path: Path) -> None:
        self.bucket.blob(key).upload_from_filename(str(path))

    def put(self, key: str, body: bytes) -> None:
        self.bucket.blob(key).upload_from_string(body)

    def delete(self, key: str) -> None:
        self.bucket.blob(key).delete()


class Azure:
    """Blob storage with the scale set's managed identity (shared keys are off)."""

    def __init__(self, settings: dict) -> None:
        from azure.identity import ManagedIdentityCredential
        from azure.storage.blob import ContainerClient
        subscription = metadata("http://169.254.169.254/metadata/instance/compute/"
                                "subscriptionId?api-version=2021-02-01&format=text",
                                {"Metadata": "true"})
        self.account = bucket_name(settings, subscription)
        self.name = settings["SERVESTACK_CACHE_CONTAINER"]
        self.container = ContainerClient(f"https://{self.account}.blob.core.windows.net",
                                         self.name, credential=ManagedIdentityCredential())

    def env(self, path: str) -> dict:
        return {"SERVESTACK_CACHE_URI": f"az://{self.name}/{path}",
                "AZURE_STORAGE_ACCOUNT_NAME": self.account}

    def exists(self, key: str) -> bool:
        return self.container.get_blob_client(key).exists()

    def create_only(self, key: str, body: bytes) -> bool:
        from azure.core.exceptions import ResourceExistsError
        try:  # overwrite=False sends If-None-Match: *
            self.container.get_blob_client(key).upload_blob(body, overwrite=False)
        except ResourceExistsError:
            return False
        return True

    def age(self, key: str) -> float:
        found = self.container.get_blob_client(key).get_blob_properties()
        return time.time() - found.last_modified.timestamp()

    def upload(self, key: str, path: Path) -> None:
        with path.open("rb") as data:
            self.container.get_blob_client(key).upload_blob(data, overwrite=True,
                                                            max_concurrency=8)

    def put(self, key: str, body: bytes) -> None:
        self.container.get_blob_client(key).upload_blob(body, overwrite=True)

    def delete(self, key: str) -> None:
        self.container.get_blob_client(key).delete_blob()


def store_for(settings: dict):
    """This cloud's store (the bootstrap keeps only its class)."""
    return globals()[settings["SERVESTACK_CLOUD"].capitalize()](settings)


def hub_cache(env: dict) -> Path:
    """Where huggingface_hub keeps its downloads (its HF_HUB_CACHE / HF_HOME rules)."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    home = env.get("HF_HOME") or os.path.join(env.get("HOME", "/root"), ".cache/huggingface")
    return Path(home) / "hub"


def snapshot(env: dict, model: str) -> Path | None:
    """The folder of the model's downloaded snapshot (refs/main's revision), or None."""
    repo = hub_cache(env) / ("models--" + model.replace("/", "--"))
    ref = repo / "refs" / "main"
    if not ref.is_file():
        return None
    folder = repo / "snapshots" / ref.read_text().strip()
    return folder if folder.is_dir() else None


def snapshot_files(folder: Path) -> list[Path]:
    """Every file of the snapshot (its links resolve to the downloaded blobs)."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


def check(store, settings: dict, state: Path) -> int:
    target = state / "cache.env"
    if not store.exists(marker_key(settings)):
        target.unlink(missing_ok=True)
        log("the cache holds no complete copy yet: this replica downloads from the hub")
        return 0
    lines = [f"{name}={shlex.quote(value)}\n" for name, value in
             store.env(settings["SERVESTACK_CACHE_PATH"]).items()]
    target.write_text("".join(lines))
    log(f"the cache holds the model: {lines[0].strip()}")
    return 0


def take_lock(store, settings: dict, now: float) -> bool:
    key = lock_key(settings)
    body = json.dumps({"taken": now, "by": os.uname().nodename}).encode()
    if store.create_only(key, body):
        return True
    if store.age(key) < LOCK_STALE_SECONDS:
        log("another replica is filling the cache")
        return False
    log("removing a stale fill lock")
    store.delete(key)
    return store.create_only(key, body)


def fill(store, settings: dict, env: dict) -> int:
    if store.exists(marker_key(settings)):
        log("the cache is filled already")
        return 0
    folder = snapshot(env, settings["SERVESTACK_MODEL"])
    if folder is None:
        log("no downloaded snapshot of the model on this replica: nothing to fill")
        return 0
    files = snapshot_files(folder)
    if not any(p.suffix == ".safetensors" for p in files):
        log("the snapshot has no safetensors, which the streamer needs: not filling")
        return 0
    if not take_lock(store, settings, time.time()):
        return 0
    try:
        upload(store, settings, folder, files)
    finally:
        store.delete(lock_key(settings))
    return 0


def upload(store, settings: dict, folder: Path, files: list[Path]) -> None:
    path = settings["SERVESTACK_CACHE_PATH"]
    for number, file in enumerate(files, 1):
        log(f"uploading {number}/{len(files)}: {file.relative_to(folder)}")
        store.upload(f"{path}/{file.relative_to(folder).as_posix()}", file)
    names = [p.relative_to(folder).as_posix() for p in files]
    store.put(marker_key(settings), json.dumps({"revision": folder.name, "files": names,
                                                "filled": time.time()}).encode())
    log(f"the cache is filled: {len(files)} files, revision {folder.name}")


def wait_healthy(port: str) -> None:
    """Until vLLM answers /health (which needs no API key) on this VM."""
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health",  # noqa: S310
                                        timeout=10) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(HEALTH_POLL_SECONDS)


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    if len(argv) != 2 or argv[1] not in ("check", "fill"):
        log("usage: servestack_cache.py check|fill")
        return 2
    if argv[1] == "fill":
        wait_healthy(env["SERVESTACK_PORT"])
    store = store_for(env)
    if argv[1] == "check":
        return check(store, env, Path(env["SERVESTACK_STATE"]))
    return fill(store, env, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

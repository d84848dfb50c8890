#!/bin/bash
# servestack: `image_id: docker:IMAGE`, as SkyPilot runs a task in its docker image. Exec'd by
# servestack-start on the VM once the secrets are fetched: install Docker and the NVIDIA
# Container Toolkit where the VM's image lacks them, pull IMAGE, and run
# servestack-start again inside IMAGE, where it runs the spec's setup and run (or the default
# `vllm serve`) with SkyPilot's variables, exactly as it would on the VM.
# - all GPUs (`--gpus all`, the NVIDIA Container Toolkit);
# - the host's network: the service port, the readiness gate's iptables chain and the load
#   balancer's health checks see the container's server as the VM's own;
# - `--ipc host`: vLLM's tensor-parallel workers share memory through /dev/shm, which Docker
#   otherwise caps at 64 MB (vLLM's Docker guide asks for --ipc=host or a large --shm-size);
# - the Hugging Face cache on the VM's disk, so a restarted container does not download the
#   model again;
# - servestack's files and settings read-only; the secrets only as the mounted secret.env
#   (0600, root), never on docker's command line.
# Stopping the unit stops the container (docker run forwards SIGTERM to it); --rm removes it.
set -euo pipefail
# shellcheck source=/dev/null
. "${SERVESTACK_HOME:-/opt/servestack}/lib/common.sh"

# install_docker: Docker with the NVIDIA runtime, for `docker run --gpus all`. The default GPU
# images differ: AWS's Deep Learning AMI ships Docker and the toolkit; on the others whatever
# is missing is installed here (Ubuntu's docker.io; the toolkit from NVIDIA's repository, as
# its install guide says: docs.nvidia.com/datacenter/cloud-native/container-toolkit).
install_docker() {
    if ! command -v docker >/dev/null 2>&1; then
        pkg_install docker.io
        systemctl enable --now docker
    fi
    if ! command -v nvidia-ctk >/dev/null 2>&1; then
        add_nvidia_repository
        pkg_install nvidia-container-toolkit
    fi
    if ! docker info --format '{{json .Runtimes}}' | grep -q '"nvidia"'; then
        log "configuring Docker's NVIDIA runtime"
        nvidia-ctk runtime configure --runtime=docker
        systemctl restart docker
    fi
}

add_nvidia_repository() {
    local url=https://nvidia.github.io/libnvidia-container
    need curl
    if command -v apt-get >/dev/null 2>&1; then
        need gpg gnupg
        curl -fsSL --retry 5 "$url/gpgkey" |
            gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit.gpg
        curl -fsSL --retry 5 "$url/stable/deb/nvidia-container-toolkit.list" |
            sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit.gpg] https://#' \
                >/etc/apt/sources.list.d/nvidia-container-toolkit.list
    else
        curl -fsSL --retry 5 -o /etc/yum.repos.d/nvidia-container-toolkit.repo \
            "$url/stable/rpm/nvidia-container-toolkit.repo"
    fi
}

name=servestack-replica
image="$SERVESTACK_CONTAINER_IMAGE"
cache="$SERVESTACK_STATE/huggingface"
mkdir -p "$cache"
install_docker

# A container left by a crash of this unit would hold the name and the port.
docker rm -f "$name" >/dev/null 2>&1 || true
if ! docker image inspect "$image" >/dev/null 2>&1; then
    for try in 1 2 3 4 5; do
        log "pulling $image (try $try)"
        docker pull -q "$image" && break
        [ "$try" -lt 5 ] || die "could not pull $image"
        sleep $((try * 15))
    done
fi

mounts=(-v "$SERVESTACK_HOME:$SERVESTACK_HOME:ro" -v "$SERVESTACK_ETC:$SERVESTACK_ETC:ro"
    -v "$cache:/root/.cache/huggingface")
# SKYPILOT_SERVE_REPLICA_ID is the cloud-init instance id where there is one.
if [ -d /var/lib/cloud/data ]; then
    mounts+=(-v /var/lib/cloud/data:/var/lib/cloud/data:ro)
fi
log "starting $image with all GPUs on the host's network"
exec docker run --rm --name "$name" --gpus all --network host --ipc host \
    "${mounts[@]}" -e SERVESTACK_IN_CONTAINER=1 -e HF_HOME=/root/.cache/huggingface \
    -e SERVESTACK_HOME -e SERVESTACK_ETC --entrypoint /bin/bash \
    "$image" "$SERVESTACK_HOME/bin/servestack-start"

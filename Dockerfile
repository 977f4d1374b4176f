# okc on a CUDA machine, with Jupyter Lab and TensorBoard (and SSH when given a public key):
#
#   docker build -t okc --build-arg SSH_PUBLIC_KEY="$(cat ~/.ssh/id_ed25519.pub)" .
#   docker run -d --name "$USER"_okc --gpus=all -v "$PWD":/workdir \
#       -p 2222:22 -p 8888:8888 -p 6006:6006 okc
#
# Omit SSH_PUBLIC_KEY (and -p ...:22) for no SSH. Runs, data and the inductor cache go to
# /workdir/okc (OKC_HOME), so they outlive the container; TensorBoard shows /workdir/okc/logs.
# Jupyter Lab's token is printed by `docker logs <container>`.
# The requirements are pyproject.toml's (tests/test_install_files.py keeps them equal); they
# are installed before okc's code is copied, so editing the code does not reinstall torch.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ARG SSH_PUBLIC_KEY=""
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    OKC_HOME=/workdir/okc \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv openssh-server git \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh \
    && if [ -n "$SSH_PUBLIC_KEY" ]; then \
         echo "$SSH_PUBLIC_KEY" > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys; \
       fi

RUN pip install \
    "torch>=2.5" \
    "torchvision>=0.20" \
    "timm>=1.0" \
    "kornia>=0.7.4" \
    "torchmetrics>=1.4" \
    "pycocotools>=2.0.7" \
    "scipy>=1.9" \
    "torchdata>=0.10" \
    "attrs>=23.1" \
    "cattrs>=24.1" \
    "tomli>=2.0; python_version < '3.11'" \
    "onnx>=1.16" \
    "onnxruntime>=1.18" \
    "onnxscript>=0.1" \
    "rich>=13" \
    "pyyaml>=6" \
    "tensorboard>=2.14" \
    "matplotlib>=3.7" \
    jupyterlab

COPY pyproject.toml README.md /opt/okc/
COPY okc /opt/okc/okc
COPY experiments /opt/okc/experiments
RUN pip install --no-deps -e /opt/okc

WORKDIR /workdir
EXPOSE 22 8888 6006
CMD ["bash", "-c", "mkdir -p \"$OKC_HOME/logs\" \
  && if [ -s /root/.ssh/authorized_keys ]; then /usr/sbin/sshd; fi \
  && (tensorboard --logdir \"$OKC_HOME/logs\" --bind_all --port 6006 &) \
  && exec jupyter lab --ip 0.0.0.0 --port 8888 --no-browser --allow-root --notebook-dir /workdir"]

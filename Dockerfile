# syntax=docker/dockerfile:1
# Celeris on CPU: `celeris serve` by default (`celeris live ...` with another command).
#
#   docker build -t celeris:0.1.0 .
#   docker run --rm -p 8000:8000 -v celeris:/var/lib/celeris celeris:0.1.0 serve --model btc@production
#
# Two stages: `build` resolves everything through constraints.txt (the lock `make test` passed
# with) into a virtual environment; the runtime stage copies only that environment onto a fresh
# slim Python, runs as an unprivileged user and warms numba's cache. See docs/deploy.md.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/celeris/venv/bin:$PATH
RUN python -m venv /opt/celeris/venv
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
# torch first and from PyTorch's CPU index: PyPI's Linux torch is the CUDA build (~2.5 GB more,
# no use without a GPU). The lock pins torch==2.13.0, which 2.13.0+cpu satisfies.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        -c constraints.txt "torch==2.13.0"
# The dependencies in their own layer (a placeholder package stands in for the source), so an
# edit to src/ rebuilds only the last, seconds-long layer.
RUN mkdir -p src/celeris && touch src/celeris/__init__.py \
    && pip install --no-cache-dir -c constraints.txt ".[serve,models,exchange]" \
    && pip uninstall --yes celeris
COPY src ./src
RUN pip install --no-cache-dir --no-deps -c constraints.txt .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="celeris" \
      org.opencontainers.image.description="Celeris: signal serving and the live loop (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# NUMBA_CPU_NAME=generic: numba keys its cache by CPU model, so a cache compiled for the build
# machine's CPU would be ignored (recompiled) on a node with another one. Generic code forgoes
# AVX-512 in the numba kernels; build with --build-arg NUMBA_CPU_NAME=host-cpu-name (an LLVM
# name such as skylake-avx512) for a fleet of identical nodes.
ARG NUMBA_CPU_NAME=generic
ENV PATH=/opt/celeris/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/opt/celeris/numba-cache \
    NUMBA_CPU_NAME=${NUMBA_CPU_NAME} \
    OMP_NUM_THREADS=1 \
    CELERIS_HOME=/var/lib/celeris \
    CELERIS_SERVE_HOST=0.0.0.0 \
    CELERIS_SERVE_PORT=8000 \
    CELERIS_SERVE_REGISTRY=/var/lib/celeris/registry
RUN groupadd --system --gid 10001 celeris \
    && useradd --system --uid 10001 --gid celeris --home-dir /var/lib/celeris --shell /usr/sbin/nologin celeris \
    && mkdir -p /var/lib/celeris/registry /opt/celeris/numba-cache \
    && chown -R celeris:celeris /var/lib/celeris
COPY --from=build /opt/celeris/venv /opt/celeris/venv
# constraints.txt: what `celeris doctor --lock /opt/celeris/constraints.txt` compares with.
COPY constraints.txt deploy/docker/healthcheck.py deploy/docker/warm_numba.py /opt/celeris/
# Compiled here, in the final stage, so the cache's source timestamps are those the image runs.
RUN python /opt/celeris/warm_numba.py && chown -R celeris:celeris /opt/celeris/numba-cache
USER 10001:10001
WORKDIR /var/lib/celeris
VOLUME ["/var/lib/celeris"]
EXPOSE 8000 9108
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/celeris/healthcheck.py", "/healthz"]
ENTRYPOINT ["celeris"]
CMD ["serve"]

# The companion push server: one stateless node. Configure it with COMPANION_* variables
# (README.md, "Configuration"); several nodes need COMPANION_BROKER=redis://… and
# COMPANION_STORE=dynamodb (deploy/).
#
# The base image is pinned by its exact version tag (the Python the constraints were
# generated and tested with, on Debian bookworm). It is not pinned by digest: the digest
# can only be read from the registry, which the machine this file was written on cannot
# reach. Pin it where you build: `docker buildx imagetools inspect python:3.11.7-slim-bookworm`
# prints it; append `@sha256:…` to the FROM line (docs/operations.md, "Deploy").
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    COMPANION_DATA_DIR=/data \
    COMPANION_PORT=8000

RUN groupadd --system --gid 10001 companion \
    && useradd --system --uid 10001 --gid companion --home-dir /data --no-create-home companion \
    && mkdir -p /data \
    && chown companion:companion /data

WORKDIR /app

# 1. The dependencies, before any source: this layer is rebuilt only when pyproject.toml or
#    the pins change, not on every code change. pyproject.toml's dependency list is
#    installed under deploy/constraints.txt (the runtime closure, pinned exactly).
COPY pyproject.toml deploy/constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --requirement requirements.txt --constraint constraints.txt \
    && rm requirements.txt

# 2. The source, installed without touching the dependencies; `pip check` fails the build
#    if the pins no longer satisfy what pyproject.toml asks for.
COPY README.md ./
COPY server ./server
COPY brain ./brain
COPY clients ./clients
RUN pip install --no-deps . && pip check && rm -rf /app/build

USER companion
VOLUME ["/data"]
EXPOSE 8000

# Liveness only; readiness (store and broker reachable) is /readyz, which the load balancer
# checks. It follows the configured port, COMPANION_PORT: change the port with that
# variable, not with `serve --port`, so the server and its health check agree.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('COMPANION_PORT', '8000'), timeout=2).status == 200 else 1)"]

# uvicorn handles SIGTERM gracefully: stop accepting, close WebSockets with 1012, flush
# pending frames, close the store. Exec form so the server is PID 1 and gets the signal.
STOPSIGNAL SIGTERM
ENTRYPOINT ["companion"]
CMD ["serve", "--host", "0.0.0.0"]

# The companion push server: one stateless node. Configure it with COMPANION_* variables
# (README.md, "Configuration"); several nodes need COMPANION_BROKER=redis://… and
# COMPANION_STORE=dynamodb (deploy/).
FROM python:3.11-slim

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
COPY pyproject.toml README.md ./
COPY server ./server
COPY brain ./brain
COPY clients ./clients
RUN pip install . && rm -rf /app/build

USER companion
VOLUME ["/data"]
EXPOSE 8000

# Liveness only; readiness (store reachable) is /readyz, which the load balancer checks.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('COMPANION_PORT', '8000'), timeout=2).status == 200 else 1)"]

# uvicorn handles SIGTERM gracefully: stop accepting, close WebSockets with 1012, flush
# pending frames, close the store. Exec form so the server is PID 1 and gets the signal.
STOPSIGNAL SIGTERM
ENTRYPOINT ["companion"]
CMD ["serve", "--host", "0.0.0.0"]

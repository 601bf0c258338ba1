# lightkeeper's container image: Debian's Python 3.11, a virtualenv built in a builder stage, a non-root user.
#   podman build --format docker -t lightkeeper .    (docker build -t lightkeeper .)
# `--format docker` keeps the HEALTHCHECK (podman's default OCI format drops it). scripts/test-deploy builds and
# runs this image, and measures its size.

FROM debian:bookworm-slim AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/lightkeeper
COPY pyproject.toml README.md /src/
COPY src /src/src
# Wheels first (lightkeeper's own is built here; its dependencies ship as binary wheels), then an install
# from those wheels alone, then pip and setuptools out: nothing in the final stage installs anything.
RUN /opt/lightkeeper/bin/pip wheel --no-cache-dir --wheel-dir /wheels /src \
 && /opt/lightkeeper/bin/pip install --no-cache-dir --no-index --find-links /wheels lightkeeper \
 && /opt/lightkeeper/bin/pip uninstall --yes pip setuptools \
 && find /opt/lightkeeper -name '*.dist-info' -path '*/pip-*' -prune -exec rm -rf {} +
# The label below must say the version the package says (`lightkeeper --version`): refuse to build otherwise.
# scripts/test-deploy passes pyproject.toml's version (--build-arg); tests/deploy checks this default against it.
ARG LIGHTKEEPER_VERSION=0.1.0
RUN installed="$(/opt/lightkeeper/bin/python -c 'from importlib.metadata import version; print(version("lightkeeper"))')" \
 && if [ "$installed" != "$LIGHTKEEPER_VERSION" ]; then \
      echo "ARG LIGHTKEEPER_VERSION=$LIGHTKEEPER_VERSION, but the package is $installed: update the Dockerfile" >&2; \
      exit 1; \
    fi

FROM debian:bookworm-slim
ARG LIGHTKEEPER_VERSION=0.1.0
LABEL org.opencontainers.image.title="lightkeeper" \
      org.opencontainers.image.description="Keeps Lightspeed Retail OAuth connections alive." \
      org.opencontainers.image.version="${LIGHTKEEPER_VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# Debian's Python (no compiler, no pip), CA certificates for Lightspeed's TLS; a fixed uid for volume ownership.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log \
 && groupadd --system --gid 10001 lightkeeper \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin lightkeeper \
 && mkdir /data \
 && chown 10001:10001 /data
COPY --from=builder /opt/lightkeeper /opt/lightkeeper
# Runtime settings only: secrets (LIGHTSPEED_CLIENT_SECRET, TOKEN_ENCRYPTION_KEY, ...) come at run time.
ENV PATH=/opt/lightkeeper/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    DATABASE_URL=sqlite:////data/lightkeeper.db
WORKDIR /data
VOLUME /data
USER 10001:10001
EXPOSE 8000
# /healthz answers 200 when the database and the scheduler loop are fine, 503 naming what is not.
# It finds serve's --port (a worker's --metrics-port) in PID 1's command line.
COPY deploy/container/healthcheck.py /usr/local/lib/lightkeeper/healthcheck.py
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/bin/python3", "-I", "/usr/local/lib/lightkeeper/healthcheck.py"]
ENTRYPOINT ["lightkeeper"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

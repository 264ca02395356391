# distgray: one image for the master (with its status page) and for workers.
#   docker build -t distgray .
#   docker run --rm -e NUM_WORKERS=4 -p 5003:5003 -p 5006:5006 -v "$PWD/test_images:/data" \
#       distgray master --image /data/sample_4k.jpg
#   docker run --rm -e MASTER_HOST=<master> -e DISTGRAY_TOKEN=<token> distgray worker --tls-fingerprint=<sha256>
# (the master prints the worker command with its fingerprint; docker-compose.yml shares a certificate instead)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# wheelhouse/ is empty in a normal build (pip downloads from PyPI). A build without network
# passes wheels made elsewhere: `pip wheel -w wheelhouse .` then --build-arg PIP_INSTALL_ARGS=--no-index.
ARG PIP_INSTALL_ARGS=""
WORKDIR /src
COPY wheelhouse/ /tmp/wheelhouse/
COPY pyproject.toml README.md ./
COPY distgray/ distgray/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install ${PIP_INSTALL_ARGS} --find-links /tmp/wheelhouse . \
    && rm -rf /tmp/wheelhouse /src

WORKDIR /
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin distgray \
    && mkdir -p /data/results /tls \
    && chown -R distgray:distgray /data /tls
USER 1000:1000
WORKDIR /data
ENV PATH=/opt/venv/bin:$PATH \
    MASTER_PORT=5003 \
    FLASK_PORT=5006 \
    DASHBOARD_HOST=0.0.0.0 \
    NUM_WORKERS=0

EXPOSE 5003 5006
HEALTHCHECK --interval=10s --timeout=6s --start-period=20s --retries=3 CMD ["python", "-m", "distgray", "health"]
# Python is PID 1 and handles SIGTERM itself: `docker stop` makes the master say BYE to its
# workers and a worker finish its strip and leave.
ENTRYPOINT ["python", "-m", "distgray"]
CMD ["master", "--help"]

# One image for the three programs: `docker run IMAGE` (the edge), `docker run IMAGE flusher`, `docker run IMAGE forwarder`.
# Two stages: the build stage (with compilers) makes wheels of the project and of its runtime dependencies; the
# runtime stage installs only those wheels into a slim Python. The embedded Redis and Postgres of `tracker run`
# and the tests (the `embedded` extra, about 49 MB) stay out: deploy/runtime_requirements.py leaves that extra's
# packages out of the wheel set. deploy/compose.yaml runs it with Redis and Postgres.

FROM python:3.11-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY deploy/runtime_requirements.py ./deploy/
# Dependencies first: this layer is rebuilt only when pyproject.toml changes, not with every code change.
RUN python deploy/runtime_requirements.py pyproject.toml > requirements.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt
COPY tracker ./tracker
COPY edge ./edge
COPY flusher ./flusher
COPY forwarder ./forwarder
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TRACKER_SPOOL_DIR=/var/lib/tracker/spool
# --no-deps: the wheel set is complete without the embedded servers, which pip would otherwise fetch.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --no-deps /wheels/*.whl \
    && useradd --system --uid 10001 tracker \
    && mkdir -p /var/lib/tracker/spool && chown -R tracker /var/lib/tracker
COPY --chmod=0755 deploy/healthcheck.py /usr/local/bin/tracker-healthcheck
USER tracker
WORKDIR /var/lib/tracker
VOLUME ["/var/lib/tracker/spool"]
EXPOSE 8000
# Whichever program runs: the edge answers GET /health, the flusher and the forwarder their --check (a live heartbeat).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["tracker-healthcheck"]
CMD ["edge", "--host", "0.0.0.0", "--port", "8000"]

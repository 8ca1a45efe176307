# One image for the three programs: `docker run IMAGE` (the edge), `docker run IMAGE flusher`, `docker run IMAGE forwarder`.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TRACKER_SPOOL_DIR=/var/lib/tracker/spool
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tracker ./tracker
COPY edge ./edge
COPY flusher ./flusher
COPY forwarder ./forwarder
RUN pip install --no-cache-dir . && useradd --system --uid 10001 tracker \
    && mkdir -p /var/lib/tracker/spool && chown -R tracker /var/lib/tracker
USER tracker
VOLUME ["/var/lib/tracker/spool"]
EXPOSE 8000
CMD ["edge", "--host", "0.0.0.0", "--port", "8000"]

# illbridge: API by default; run a worker by overriding the command (`illbridge worker`).
# Migrations run on start when ILLBRIDGE_MIGRATE_ON_START=true (the default), or as a step of
# their own: `docker run … illbridge migrate`.

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install .

FROM python:3.11-slim AS runtime
RUN groupadd --system illbridge && useradd --system --gid illbridge --home-dir /srv illbridge
WORKDIR /srv
COPY --from=build /opt/venv /opt/venv
COPY alembic.ini ./
COPY migrations ./migrations
COPY docker/entrypoint.sh /usr/local/bin/illbridge-entrypoint
RUN mkdir -p /srv/var && chown illbridge:illbridge /srv/var \
    && chmod 0755 /usr/local/bin/illbridge-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ILLBRIDGE_MIGRATE_ON_START=true
USER illbridge
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"
ENTRYPOINT ["illbridge-entrypoint"]
CMD ["illbridge", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]

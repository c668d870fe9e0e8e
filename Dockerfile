# One image for every part: `docker run switchboard broker`, `... service room`, `... gateway`.
# Every option comes from an argument or a SWITCHBOARD_* environment variable (see
# docker-compose.yml). Build: `docker build -t switchboard .`
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/switchboard
WORKDIR /src
# Every dependency ships manylinux wheels, so no compiler is needed here.
COPY pyproject.toml ./
COPY broker/ broker/
COPY gateway/ gateway/
COPY services/ services/
COPY shared/ shared/
COPY switchboard/ switchboard/
# The web pages and the vendored socket.io-client bundle are package data (web/vendor/).
COPY web/static/ web/static/
COPY web/vendor/ web/vendor/
RUN /opt/switchboard/bin/pip install . \
 && /opt/switchboard/bin/switchboard --help >/dev/null

FROM python:${PYTHON_VERSION}-slim
ENV PATH=/opt/switchboard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 switchboard \
 && useradd --system --uid 10001 --gid switchboard --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin switchboard \
 && mkdir -p /data \
 && chown switchboard:switchboard /data
COPY --from=build /opt/switchboard /opt/switchboard
# SQLite files (room, moderation) go to /data: mount a volume there (docker-compose.yml does).
WORKDIR /data
USER switchboard:switchboard
# gateway (HTTP + WebSocket), broker (XSUB, XPUB), services (ROUTER), metrics
EXPOSE 3000 5550 5551 5560 5561 5562 5563 9100
ENTRYPOINT ["switchboard"]
CMD ["--help"]

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY wfsched ./wfsched
COPY plugins ./plugins
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /data --create-home wfsched
# The embedded default keeps its SQLite file in the working directory: /data is the volume.
WORKDIR /data
USER wfsched
ENV WFSCHED_PLUGINS_DIR=/app/plugins
# The management API needs WFSCHED_API_TOKEN on this non-loopback bind (403 without it).
EXPOSE 8003
# Follows PORT (the port the daemon listens on when it is set).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD python -c "import os,sys,urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8003'), timeout=4).status != 200)"
CMD ["wfsched", "serve", "--host", "0.0.0.0"]

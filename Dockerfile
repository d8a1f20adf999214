# syntax=docker/dockerfile:1
# One image definition, two targets:
#   web    – FastAPI/uvicorn, no torch (small, starts fast)
#   worker – Celery GPU worker with CUDA-enabled torch, diffusers and transformers
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN useradd --create-home --uid 10001 studio
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY workers ./workers
COPY bench ./bench
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY examples ./examples

FROM base AS web
RUN pip install --no-cache-dir -e .
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4)"]
CMD ["perfusion-studio", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# PyPI's Linux torch wheels are the CUDA builds; the driver comes from the host
# (NVIDIA Container Toolkit).
RUN pip install --no-cache-dir "torch==2.13.0" && pip install --no-cache-dir -e ".[worker]"
ENV HF_HOME=/models/huggingface
RUN mkdir -p /models && chown studio /models
USER 10001
CMD ["perfusion-studio", "worker"]

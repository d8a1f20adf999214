#!/usr/bin/env bash
# Fetch, on this (networked) machine, the wheels bench/gpu_check.sh needs on the lent GPU
# machine into .wheels-gpu/ (git-ignored; name it in the run's `carry`). That machine's image
# has Python 3.12 with torch and transformers but not diffusers nor the studio's web stack.
# The list: perfusion-studio[worker]'s dependency closure minus the packages that image
# holds, pinned to the versions in this checkout's .venv when it was written (re-pin when
# pyproject.toml's dependencies change). Pure-Python wheels fit any platform; compiled ones
# are asked for as CPython 3.12 manylinux x86-64.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .wheels-gpu
python="${PYTHON:-.venv/bin/python}"
packages=(
    alembic==1.20.1 amqp==5.4.2 annotated-types==0.8.0 argon2-cffi==25.1.0
    argon2-cffi-bindings==26.2.0 billiard==4.3.2 celery==5.7.0 cffi==2.1.1
    click-didyoumean==0.3.1 click-plugins==1.1.1.2 click-repl==0.4.1 diffusers==0.42.1
    fastapi==0.165.0 fastapi-offline==1.7.7 httptools==0.9.0 importlib-metadata==10.2.0
    kombu==5.7.0 mako==1.4.3 prompt-toolkit==3.0.53 psycopg==3.3.9 psycopg-binary==3.3.9
    pycparser==3.12 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3
    python-dotenv==1.2.4 python-multipart==0.0.34 redis==8.1.0 sqlalchemy==2.1.9
    standardwebhooks==1.1.0 starlette==1.10.0 typing-inspection==0.4.5 tzlocal==5.4.5
    uvicorn==0.54.0 vine==5.1.0
    watchfiles==1.3.0 wcwidth==0.9.4 websockets==17.4
)
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .wheels-gpu "${packages[@]}"
du -sh .wheels-gpu

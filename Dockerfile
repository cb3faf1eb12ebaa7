# One image for every component: the entry point is the `bytefreezer` command and the chart
# picks the component by its first argument (receiver, piper, packer, control, proxy, up).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bytefreezer ./bytefreezer
COPY ingress ./ingress
COPY transforms ./transforms
COPY pipelines ./pipelines
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 10001 --user-group --home-dir /data --create-home bytefreezer
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
# Arrow allocates from the C library's malloc in every process of the image, Beam workers too
# (the `bytefreezer` command chooses it as well; see bytefreezer/memory.py).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp BYTEFREEZER_DATA_DIR=/data \
    ARROW_DEFAULT_MEMORY_POOL=system
WORKDIR /data
EXPOSE 8080 8081 8082 8083 9091 9092 9093
ENTRYPOINT ["bytefreezer"]
CMD ["up", "--data-dir", "/data"]

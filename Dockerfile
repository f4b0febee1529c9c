# Tandem server image. Not built by CI (no Docker engine there); kept minimal.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir .
ENV TANDEM_HOST=0.0.0.0 TANDEM_PORT=8080 TANDEM_DATA_DIR=/data
EXPOSE 8080
CMD ["tandem", "serve"]

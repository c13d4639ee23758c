# trackrelay container image: build the release binary, run it as an unprivileged user.
#   docker build -t trackrelay .
#   docker run -p 8088:8088 -v trackrelay-data:/var/lib/trackrelay trackrelay
# See docs/operations.md, "Running in Docker".

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin trackrelay

FROM debian:bookworm-slim
# ca-certificates: TLS to SMTP servers, Telegram and webhooks. curl: the HEALTHCHECK below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 trackrelay \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/trackrelay \
        --no-create-home --shell /usr/sbin/nologin trackrelay \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/trackrelay
COPY --from=builder /src/target/release/trackrelay /usr/local/bin/trackrelay
COPY rules/ /etc/trackrelay/rules/
COPY trackrelay.example.yaml /etc/trackrelay/trackrelay.example.yaml
# The built-in config and trackrelay.example.yaml both read these two variables.
# NO_COLOR: plain log lines in `docker logs`.
ENV TRACKRELAY_DATA_DIR=/var/lib/trackrelay \
    TRACKRELAY_LISTEN=0.0.0.0:8088 \
    NO_COLOR=1
VOLUME ["/var/lib/trackrelay"]
EXPOSE 8088
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8088/healthz > /dev/null || exit 1
ENTRYPOINT ["trackrelay"]
CMD ["serve"]

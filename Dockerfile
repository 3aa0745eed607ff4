# Build: the whole workspace, release profile.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY openapi ./openapi
RUN cargo build --release --locked && strip target/release/metricgate

# Run: a small image, as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home metricgate
COPY --from=build /src/target/release/metricgate /usr/local/bin/metricgate
COPY config/default.toml /etc/metricgate/default.toml
USER 10001
# The admin listener (admin.listen, 127.0.0.1:8081) stays on the container's loopback: not
# exposed; `docker exec <container> curl -s 127.0.0.1:8081/internal/cache`.
EXPOSE 8080
ENV METRICGATE__SERVER__LISTEN=0.0.0.0:8080
HEALTHCHECK --interval=10s --timeout=2s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["metricgate"]
CMD ["serve"]

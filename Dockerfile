# roomcast: multi-stage build on Debian 12 (bookworm), FFmpeg 5.1 from Debian.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      pkg-config clang libclang-dev zlib1g-dev \
      libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev \
      libswscale-dev libswresample-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates zlib1g \
      libavcodec59 libavformat59 libavutil57 libavfilter8 libavdevice59 libswscale6 libswresample4 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/roomcast --create-home roomcast
COPY --from=build /src/target/release/roomcast /usr/local/bin/roomcast
COPY profiles /etc/roomcast/profiles
USER roomcast
WORKDIR /var/lib/roomcast
ENV ROOMCAST_DATA_DIR=/var/lib/roomcast/data \
    ROOMCAST_PROFILES_DIR=/etc/roomcast/profiles
EXPOSE 1935 8080 50000-50100/udp
ENTRYPOINT ["roomcast"]
CMD ["serve"]

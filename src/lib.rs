//! onair: a live audio broadcast packager.
//!
//! Host feeds (RTMP and WHIP publishers, files) are decoded, mixed on one 48 kHz
//! program clock, encoded to Opus and AAC-LC, packaged as CMAF Low-Latency HLS
//! and published to object storage, from where stateless origins serve
//! listeners. See `docs/ARCHITECTURE.md` for the map of modules.
#![forbid(unsafe_code)]

pub mod audio;
pub mod cli;
pub mod cmaf;
pub mod control;
pub mod encode;
pub mod hls;
pub mod ingest;
pub mod origin;
pub mod packager;
pub mod pipeline;
pub mod publish;
pub mod reload;
pub mod returns;
pub mod run;
pub mod studio;
#[cfg(test)]
mod testing;
pub mod time;
pub mod tls;
pub mod web;

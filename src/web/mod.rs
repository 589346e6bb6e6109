//! The HTTP surface every layer shares, and nothing of any one layer.
//!
//! - [`Routes`]: how a layer that serves HTTP resources (the control API,
//!   WHIP ingest and its host page) hands them to the server, which knows
//!   only this trait. The origin's server takes routes from their owners
//!   and never imports them.
//! - [`input`]: untrusted request input: bearer credentials compared in
//!   constant time, request bodies read with a bound.
//! - [`page`]: the kit the built-in pages are made with: template filling,
//!   escaping for HTML, JSON-in-script and URL path segments, and the shared
//!   style.

pub mod attempts;
pub mod forwarded;
pub mod input;
pub mod page;
pub mod per_address;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

/// A complete response body.
pub type Body = Full<Bytes>;

/// The answer of [`Routes::handle`]: a response, once ready.
pub type ResponseFuture<'a> = Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>;

/// HTTP resources a layer serves on a shared server, beside the listener
/// routes of the origin.
///
/// Contract: the server asks each owner's [`claims`](Routes::claims), in the
/// order the owners were added, before it looks at a request itself, and
/// hands the whole request (method, headers and unread body) to the first
/// owner that claims it. An owner sets every header of its responses (CORS,
/// `Cache-Control`), because it alone knows who may call it and whether a
/// CDN may keep the answer. Requests nobody claims are the server's own.
pub trait Routes: Send + Sync + std::fmt::Debug {
    /// Whether this owner answers `method` on `path` (the request path as
    /// received, not percent-decoded).
    fn claims(&self, method: &Method, path: &str) -> bool;

    /// Answers a request this owner claimed.
    fn handle(&self, req: Request<Incoming>) -> ResponseFuture<'_>;
}

//! The HTTP surface both hosts share: which route a request names, its body parsed into typed
//! values, the response envelopes of both dialects, and the OpenAPI document that describes them.
//!
//! A host reads method, path and headers, calls [`route::match_route`] and
//! [`request::check_content`], parses the body with a `from_*` parser, runs the core's flow and
//! sends the [`envelope::Reply`] it is given, so both hosts answer byte for byte alike.

pub mod envelope;
pub mod openapi;
pub mod request;
pub mod route;

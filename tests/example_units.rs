//! The unit tests written inside examples: `eval_server`'s expression
//! evaluator and `http_server`'s request handling over loopback.
//!
//! Each example's file is included here as a module, with its
//! `#[cfg(test)] mod tests`, so the examples themselves stay plain
//! programs: `cargo test` builds them once, with everything else, and the
//! tests that start them as processes (`tests/util/example.rs`) find them
//! built instead of building them on the first call.

#[cfg(all(feature = "workers", feature = "line"))]
#[path = "../examples/eval_server.rs"]
#[allow(dead_code)] // its `main`, and what only `main` uses
mod eval_server;

#[path = "../examples/http_server.rs"]
#[allow(dead_code)]
mod http_server;

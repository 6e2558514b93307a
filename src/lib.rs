//! `packet`: event-driven network programming in the EventMachine style.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
pub mod timer;

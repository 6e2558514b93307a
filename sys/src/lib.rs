//! The OS layer of `packet` (to be written).

//! Timer wheel (to be written).

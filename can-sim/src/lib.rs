//! can-sim

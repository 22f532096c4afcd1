//! rt-host

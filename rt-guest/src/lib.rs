//! rt-guest

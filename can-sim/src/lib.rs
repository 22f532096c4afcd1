//! `can-sim`: virtual CAN ECUs with measured frame-reception determinism.
//!
//! - [`timing`]: frame lengths as the kernel's `include/linux/can/length.h` counts them,
//!   frame times, bus load, and worst-case response times per Davis et al. 2007;
//! - [`schedule`]: a profile's CAN matrix -> per-ECU release schedules;
//! - [`payload`]: the sequence number and release time each frame carries;
//! - [`metrics`]: receiver statistics (loss, duplicates, order, latency, jitter, deadlines);
//! - [`canlog`]: candump log writing, reading and replay timing;
//! - [`dbc`]: a CAN matrix from a DBC file;
//! - [`transport`]: SocketCAN sockets, kernel RX timestamps, error frames, netlink set-up;
//! - [`run`]: the sender and receiver threads of `can-sim run`;
//! - [`analyze`]: the per-message report of `can-sim analyze`.

pub mod analyze;
pub mod canlog;
pub mod dbc;
pub mod metrics;
pub mod payload;
pub mod run;
pub mod schedule;
pub mod timing;
pub mod transport;

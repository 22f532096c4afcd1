//! `can-sim`: virtual CAN ECUs with measured frame-reception determinism.
//!
//! - [`timing`]: frame lengths as the kernel's `include/linux/can/length.h` counts them,
//!   frame times and bus load;
//! - [`rta`]: worst-case response times per Davis et al. 2007;
//! - [`schedule`]: a profile's CAN matrix -> per-ECU release schedules;
//! - [`payload`]: the test payload (sequence number and release time) of messages
//!   without signals;
//! - [`signal`]: signals encoded as a DBC says, and their value generators;
//! - [`e2e`]: AUTOSAR E2E protection (profiles 1, 2, 5, 11) and its receiver check;
//! - [`metrics`]: receiver statistics (loss, duplicates, order, latency, jitter, deadlines);
//! - [`canlog`]: candump log writing, reading (streamed) and replay timing;
//! - [`replay`]: `can-sim replay`, a log played back with its timing;
//! - [`dbc`]: a CAN matrix from a DBC file;
//! - [`transport`]: SocketCAN sockets, kernel RX timestamps, error frames, netlink set-up;
//! - [`run`]: the sender and receiver threads of `can-sim run`;
//! - [`clock`]: the receiver's time base when sender and receiver run on two clocks;
//! - [`analyze`]: the per-message report of `can-sim analyze`.

pub mod analyze;
pub mod canlog;
pub mod clock;
pub mod dbc;
pub mod e2e;
pub mod metrics;
pub mod payload;
pub mod replay;
pub mod rta;
pub mod run;
pub mod schedule;
pub mod signal;
pub mod timing;
pub mod transport;

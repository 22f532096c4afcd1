//! SocketCAN transport: `AF_CAN`/`CAN_RAW` sockets (classic and FD) through the socketcan
//! crate, kernel RX timestamps (`SO_TIMESTAMPNS`, `CLOCK_REALTIME`, delivered as
//! `SCM_TIMESTAMPNS` with each frame of a `recvmmsg`), error frames (`CAN_RAW_ERR_FILTER`), transmit
//! back-off on `ENOBUFS` (full device queue), and interface set-up over rtnetlink
//! (`IFLA_CAN_BITTIMING`, vcan creation, link up).
//! See <https://docs.kernel.org/networking/can.html>.

use std::io;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders};
use socketcan::{
    CanAnyFrame, CanFdSocket, CanFrame, CanInterface, CanSocket, EmbeddedFrame, Frame, Socket,
    SocketOptions,
};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// Errors of the transport; each names the interface.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The kernel has no SocketCAN.
    #[error("AF_CAN not supported by this kernel (socket(AF_CAN) failed with EAFNOSUPPORT): run can-sim in a guest with SocketCAN (the lab guest), or load the can/can-raw modules")]
    NoAfCan,
    /// The interface does not exist.
    #[error("CAN interface {iface:?} does not exist (use --setup to create vcan interfaces, or check `ip link`)")]
    NoInterface {
        /// Interface name.
        iface: String,
    },
    /// Opening or configuring a socket failed.
    #[error("Cannot {what} on CAN interface {iface:?}")]
    Socket {
        /// What was attempted.
        what: &'static str,
        /// Interface name.
        iface: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// FD frames on an interface whose MTU only carries classic frames.
    #[error("CAN interface {iface:?} carries only classic frames (MTU 16) and the profile has CAN FD messages: use --setup, or `ip link set {iface} mtu 72` (vcan) / `ip link set {iface} type can fd on dbitrate N` (controllers)")]
    NotFd {
        /// Interface name.
        iface: String,
    },
    /// A netlink request failed.
    #[error("Cannot {what} CAN interface {iface:?} over netlink: {reason}")]
    Netlink {
        /// What was attempted.
        what: &'static str,
        /// Interface name.
        iface: String,
        /// The netlink error.
        reason: String,
    },
}

/// Check that the kernel has `AF_CAN` (`socket(AF_CAN, SOCK_RAW, CAN_RAW)`).
pub fn check_af_can() -> Result<(), TransportError> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
    match socket(
        AddressFamily::Can,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::CanRaw,
    ) {
        Ok(_fd) => Ok(()),
        Err(nix::errno::Errno::EAFNOSUPPORT) | Err(nix::errno::Errno::EPROTONOSUPPORT) => {
            Err(TransportError::NoAfCan)
        }
        // Anything else (EPERM, EMFILE) shows up again, named, when the socket is opened.
        Err(_) => Ok(()),
    }
}

fn open_err<'a>(
    iface: &'a str,
    what: &'static str,
) -> impl FnOnce(io::Error) -> TransportError + 'a {
    move |source| {
        if source.raw_os_error() == Some(libc::ENODEV) {
            TransportError::NoInterface {
                iface: iface.to_string(),
            }
        } else if source.raw_os_error() == Some(libc::EAFNOSUPPORT) {
            TransportError::NoAfCan
        } else {
            TransportError::Socket {
                what,
                iface: iface.to_string(),
                source,
            }
        }
    }
}

fn deep_rx_queue(sock: &impl SocketOptions) {
    if sock
        .set_socket_option_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RX_BUFFER_BYTES)
        .is_err()
    {
        let _ = sock.set_socket_option_int(libc::SOL_SOCKET, libc::SO_RCVBUF, RX_BUFFER_BYTES);
    }
}

/// Receive buffer asked for (bytes; the kernel doubles it for bookkeeping).
pub const RX_BUFFER_BYTES: i32 = 8 << 20;

/// A received frame.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// The frame.
    pub frame: CanAnyFrame,
    /// Receive time, ns since the epoch.
    pub ts_ns: u64,
    /// True when the time is the kernel's socket timestamp.
    pub kernel: bool,
}

/// A raw CAN socket, classic or FD.
pub enum CanSock {
    /// Classic frames only.
    Classic(CanSocket),
    /// Classic and FD frames.
    Fd(CanFdSocket),
}

impl CanSock {
    /// Open a socket on `iface` (`fd`: accept and send FD frames).
    pub fn open(iface: &str, fd: bool) -> Result<CanSock, TransportError> {
        check_af_can()?;
        let s = if fd {
            CanSock::Fd(CanFdSocket::open(iface).map_err(open_err(iface, "open an FD socket"))?)
        } else {
            CanSock::Classic(CanSocket::open(iface).map_err(open_err(iface, "open a socket"))?)
        };
        Ok(s)
    }

    /// Open a sending socket: like [`Self::open`], with an empty receive filter, so the
    /// kernel never queues other senders' frames on a socket nobody reads (each would be a
    /// clone per frame in the sender's context, per sending socket on the bus).
    pub fn open_tx(iface: &str, fd: bool) -> Result<CanSock, TransportError> {
        let s = CanSock::open(iface, fd)?;
        let r = match &s {
            CanSock::Classic(c) => c.set_filter_drop_all(),
            CanSock::Fd(c) => c.set_filter_drop_all(),
        };
        r.map_err(open_err(iface, "set an empty receive filter"))?;
        Ok(s)
    }

    /// Open a receiving socket: kernel RX timestamps on, error frames on, 100 ms read
    /// timeout so the receiver can notice a stop request.
    pub fn open_rx(iface: &str, fd: bool) -> Result<CanSock, TransportError> {
        let s = CanSock::open(iface, fd)?;
        let e = |what| open_err(iface, what);
        // A deep receive queue, so a receiver that falls behind for a while (a TCG guest,
        // a flood) loses nothing: SO_RCVBUFFORCE (root) beyond net.core.rmem_max, else
        // SO_RCVBUF up to that limit. Best effort.
        match &s {
            CanSock::Classic(c) => deep_rx_queue(c),
            CanSock::Fd(c) => deep_rx_queue(c),
        }
        match &s {
            CanSock::Classic(c) => {
                c.set_recv_timestamp(true)
                    .map_err(e("enable SO_TIMESTAMPNS"))?;
                c.set_error_filter_accept_all()
                    .map_err(e("enable error frames"))?;
                c.set_read_timeout(Duration::from_millis(100))
                    .map_err(e("set a read timeout"))?;
            }
            CanSock::Fd(c) => {
                c.set_recv_timestamp(true)
                    .map_err(e("enable SO_TIMESTAMPNS"))?;
                c.set_error_filter_accept_all()
                    .map_err(e("enable error frames"))?;
                c.set_read_timeout(Duration::from_millis(100))
                    .map_err(e("set a read timeout"))?;
            }
        }
        Ok(s)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            CanSock::Classic(c) => c.as_fd(),
            CanSock::Fd(c) => c.as_fd(),
        }
    }

    /// Receive what is queued, up to [`RX_BATCH`] frames with one `recvmmsg(2)` (waiting
    /// for the first as long as the read timeout allows), each with its kernel timestamp;
    /// read them with [`RxBatch::frames`]. `Ok(0)` when the read timed out.
    pub fn recv_batch(&self, batch: &mut RxBatch) -> io::Result<usize> {
        let fd = self.fd();
        batch.n = 0;
        match rt_sys::net::recv_batch(fd, &mut batch.bufs, &mut batch.got) {
            Ok(n) => {
                batch.n = n;
                Ok(n)
            }
            Err(e) if timed_out(&e) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Write one frame once (no retry).
    pub fn write_once(&self, frame: &CanAnyFrame) -> io::Result<()> {
        match (self, frame) {
            (CanSock::Classic(c), CanAnyFrame::Normal(f)) => c.write_frame(f),
            (CanSock::Classic(c), CanAnyFrame::Remote(f)) => c.write_frame(f),
            (CanSock::Classic(c), CanAnyFrame::Error(f)) => c.write_frame(&CanFrame::from(*f)),
            (CanSock::Classic(_), CanAnyFrame::Fd(_)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an FD frame needs an FD socket",
            )),
            (CanSock::Fd(c), CanAnyFrame::Normal(f)) => c.write_frame(f),
            (CanSock::Fd(c), CanAnyFrame::Remote(f)) => c.write_frame(f),
            (CanSock::Fd(c), CanAnyFrame::Error(f)) => c.write_frame(&CanFrame::from(*f)),
            (CanSock::Fd(c), CanAnyFrame::Fd(f)) => c.write_frame(f),
        }
    }

    /// Write a frame; on `ENOBUFS` (the device queue is full) count the event, wait for
    /// POLLOUT (at most 1 ms, then 100 us sleeps) and retry while `keep_going()` says so.
    /// Returns the number of `ENOBUFS` retries; `Err` only for other errors (or when told
    /// to stop while the queue stays full: `ErrorKind::Interrupted`).
    pub fn write_backoff(
        &self,
        frame: &CanAnyFrame,
        keep_going: impl Fn() -> bool,
    ) -> io::Result<u64> {
        let mut enobufs = 0;
        loop {
            match self.write_once(frame) {
                Ok(()) => return Ok(enobufs),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    enobufs += 1;
                    if !keep_going() {
                        return Err(io::Error::new(
                            io::ErrorKind::Interrupted,
                            "stopped while the TX queue was full",
                        ));
                    }
                    self.wait_writable();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Send every frame of `batch` in order, with as few `sendmmsg(2)` calls as the queue
    /// allows: `sent(tag)` for each frame the kernel accepted, `failed(err)` for one it
    /// refused (that frame is dropped, the rest go on); on `ENOBUFS` wait as
    /// [`Self::write_backoff`] does while `keep_going()`. Returns the ENOBUFS retries.
    pub fn send_batch(
        &self,
        batch: &mut TxBatch,
        keep_going: impl Fn() -> bool,
        mut sent: impl FnMut(usize),
        mut failed: impl FnMut(&io::Error),
    ) -> u64 {
        let fd = self.fd().as_raw_fd();
        let mut enobufs = 0;
        let mut done = 0;
        while done < batch.n {
            let slices: [[IoSlice; 1]; BATCH] = std::array::from_fn(|i| {
                let j = (done + i).min(BATCH - 1);
                [IoSlice::new(&batch.bufs[j][..batch.lens[j]])]
            });
            let left = batch.n - done;
            let addrs = [None::<()>; BATCH];
            let r = sendmmsg(
                fd,
                &mut batch.headers,
                slices[..left].iter(),
                &addrs[..left],
                [] as [ControlMessage; 0],
                MsgFlags::empty(),
            )
            .map(|res| res.count());
            match r {
                Ok(k) => {
                    for j in done..done + k {
                        sent(batch.tags[j]);
                    }
                    done += k;
                }
                Err(nix::errno::Errno::ENOBUFS) => {
                    enobufs += 1;
                    if !keep_going() {
                        break;
                    }
                    self.wait_writable();
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    failed(&io::Error::from(e));
                    done += 1;
                }
            }
        }
        batch.n = 0;
        enobufs
    }

    fn wait_writable(&self) {
        let fd = self.fd();
        let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
        // CAN_RAW reports POLLOUT from the socket's send buffer, not the device queue, so it
        // is usually ready at once: the short sleep is what actually lets the queue drain.
        let _ = poll(&mut fds, PollTimeout::from(1u8));
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// A read that only timed out (or was interrupted): no frame, no error.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Frames received with one `recvmmsg(2)` at most.
pub const RX_BATCH: usize = rt_sys::net::MAX_BATCH;

/// The buffers of [`CanSock::recv_batch`]: the frames of one `recvmmsg(2)`, as the kernel
/// structs (`can_frame`, 16 bytes, or `canfd_frame`, 72) with their receive times.
pub struct RxBatch {
    bufs: [[u8; 72]; RX_BATCH],
    got: [rt_sys::net::Datagram; RX_BATCH],
    n: usize,
}

impl Default for RxBatch {
    fn default() -> Self {
        RxBatch {
            bufs: [[0; 72]; RX_BATCH],
            got: [rt_sys::net::Datagram::default(); RX_BATCH],
            n: 0,
        }
    }
}

impl RxBatch {
    /// The frames of the last [`CanSock::recv_batch`], in the order received. A frame
    /// without a kernel timestamp gets the user-space time of the batch (`kernel` false);
    /// a datagram that is no CAN frame (neither `CAN_MTU` nor `CANFD_MTU` bytes) is
    /// `ErrorKind::InvalidData`.
    pub fn frames(&self) -> impl Iterator<Item = io::Result<Received>> + '_ {
        let mut user_ns = None;
        self.got[..self.n]
            .iter()
            .zip(&self.bufs)
            .map(move |(g, buf)| {
                let frame = (!g.truncated)
                    .then(|| frame_from_bytes(&buf[..g.len]))
                    .flatten()
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "a datagram of {} bytes{} is no CAN frame (16 or 72 bytes)",
                                g.len,
                                if g.truncated { " (truncated)" } else { "" }
                            ),
                        )
                    })?;
                Ok(match g.ts_ns {
                    Some(ts_ns) => Received {
                        frame,
                        ts_ns,
                        kernel: true,
                    },
                    None => Received {
                        frame,
                        ts_ns: *user_ns.get_or_insert_with(rt_sys::rt::realtime_ns),
                        kernel: false,
                    },
                })
            })
    }
}

/// The frame in a kernel struct as [`frame_bytes`] writes it: 16 bytes (`can_frame`) or
/// 72 (`canfd_frame`); None for any other length.
pub fn frame_from_bytes(b: &[u8]) -> Option<CanAnyFrame> {
    let id = u32::from_ne_bytes(b.get(..4)?.try_into().ok()?);
    match b.len() {
        16 => {
            let mut f = socketcan::frame::can_frame_default();
            f.can_id = id;
            f.can_dlc = b[4];
            f.len8_dlc = b[7];
            f.data.copy_from_slice(&b[8..16]);
            Some(CanAnyFrame::from(f))
        }
        72 => {
            let mut f = socketcan::frame::canfd_frame_default();
            f.can_id = id;
            f.len = b[4];
            f.flags = b[5];
            f.data.copy_from_slice(&b[8..72]);
            Some(CanAnyFrame::from(f))
        }
        _ => None,
    }
}

/// Frames sent with one `sendmmsg(2)` at most.
pub const BATCH: usize = 64;

/// Frames a sender has due at once (a late wake-up, a flood), written with one
/// `sendmmsg(2)` instead of one `write(2)` each: the same frames in the same order, fewer
/// system calls. Preallocated; pushing and sending do not allocate.
pub struct TxBatch {
    bufs: Box<[[u8; 72]; BATCH]>,
    lens: [usize; BATCH],
    tags: [usize; BATCH],
    n: usize,
    headers: MultiHeaders<()>,
}

impl Default for TxBatch {
    fn default() -> Self {
        TxBatch {
            bufs: Box::new([[0u8; 72]; BATCH]),
            lens: [0; BATCH],
            tags: [0; BATCH],
            n: 0,
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }
}

/// The bytes `CAN_RAW` takes for a frame: `struct can_frame` (16 bytes: id with flags,
/// length, padding, data) or `struct canfd_frame` (72: id, length, flags, data).
pub fn frame_bytes(frame: &CanAnyFrame, out: &mut [u8; 72]) -> usize {
    out.fill(0);
    let (id, data, fd_flags) = match frame {
        CanAnyFrame::Normal(f) => (f.id_word(), f.data(), None),
        CanAnyFrame::Remote(f) => (
            f.id_word(),
            &[][..],
            Some(u8::try_from(f.dlc()).unwrap_or(0)),
        ),
        CanAnyFrame::Error(f) => (f.id_word(), f.data(), None),
        CanAnyFrame::Fd(f) => (f.id_word(), f.data(), None),
    };
    out[..4].copy_from_slice(&id.to_ne_bytes());
    if let CanAnyFrame::Fd(f) = frame {
        out[4] = u8::try_from(data.len()).unwrap_or(64);
        out[5] = f.flags().bits();
        out[8..8 + data.len()].copy_from_slice(data);
        return 72;
    }
    // A remote frame's length is its DLC, with no data.
    out[4] = fd_flags.unwrap_or(u8::try_from(data.len()).unwrap_or(8));
    out[8..8 + data.len()].copy_from_slice(data);
    16
}

impl TxBatch {
    /// Add a frame (`tag`: the caller's, handed back when it is sent); false when full.
    pub fn push(&mut self, frame: &CanAnyFrame, tag: usize) -> bool {
        if self.n == BATCH {
            return false;
        }
        self.lens[self.n] = frame_bytes(frame, &mut self.bufs[self.n]);
        self.tags[self.n] = tag;
        self.n += 1;
        true
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when no frame waits.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Describe an error frame (`CAN_ERR_*` classes of `linux/can/error.h`): every cause,
/// e.g. "bus off", "controller problem: receive error passive", with the error counters
/// when the driver reports them.
pub fn describe_error_frame(frame: &socketcan::CanErrorFrame) -> String {
    frame.into_error().to_string()
}

/// Check that `iface` can carry FD frames (MTU 72). Unknown MTU (netlink refused) passes:
/// the first write will tell.
pub fn check_fd_mtu(iface: &str) -> Result<(), TransportError> {
    let Ok(ifc) = CanInterface::open(iface) else {
        return Ok(());
    };
    match ifc.details() {
        Ok(d) if d.mtu == Some(socketcan::nl::Mtu::Standard) => Err(TransportError::NotFd {
            iface: iface.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Bring `iface` up for the run: a missing `vcan*` is created (MTU 72 when `fd`); a real
/// controller gets its bitrate (and FD mode with the data bitrate) while down, then is
/// brought up.
pub fn setup(
    iface: &str,
    bitrate: u32,
    data_bitrate: Option<u32>,
    fd: bool,
) -> Result<String, TransportError> {
    check_af_can()?;
    let nl = |what: &'static str| {
        move |e: socketcan::Error| TransportError::Netlink {
            what,
            iface: iface.to_string(),
            reason: e.to_string(),
        }
    };
    let exists = nix::net::if_::if_nametoindex(iface).is_ok();
    if iface.starts_with("vcan") {
        let ifc = if exists {
            CanInterface::open(iface).map_err(|e| TransportError::Netlink {
                what: "open",
                iface: iface.to_string(),
                reason: e.to_string(),
            })?
        } else {
            CanInterface::create_vcan(iface, None).map_err(nl("create"))?
        };
        if fd {
            // vcan refuses an MTU change while up.
            ifc.bring_down().map_err(nl("bring down"))?;
            ifc.set_mtu(socketcan::nl::Mtu::Fd)
                .map_err(nl("set MTU 72 (CAN FD) on"))?;
        }
        ifc.bring_up().map_err(nl("bring up"))?;
        return Ok(format!(
            "{iface}: {} and up (vcan: no bit timing)",
            if exists { "present" } else { "created" }
        ));
    }
    if !exists {
        return Err(TransportError::NoInterface {
            iface: iface.to_string(),
        });
    }
    let ifc = CanInterface::open(iface).map_err(|e| TransportError::Netlink {
        what: "open",
        iface: iface.to_string(),
        reason: e.to_string(),
    })?;
    ifc.bring_down().map_err(nl("bring down"))?;
    ifc.set_bitrate(bitrate, None)
        .map_err(nl("set the bitrate of"))?;
    if fd {
        ifc.set_ctrlmode(socketcan::CanCtrlMode::Fd, true)
            .map_err(nl("enable FD mode of"))?;
        if let Some(d) = data_bitrate {
            ifc.set_data_bitrate(d, None)
                .map_err(nl("set the data bitrate of"))?;
        }
    }
    // Restart automatically after bus-off so a long run survives it (and reports it).
    let _ = ifc.set_restart_ms(100);
    ifc.bring_up().map_err(nl("bring up"))?;
    Ok(format!(
        "{iface}: bitrate {bitrate}{} and up",
        data_bitrate
            .map(|d| format!(", data bitrate {d}"))
            .unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_af_can_or_interface_is_a_clear_error() {
        match CanSock::open("rtvirt-nonexistent0", false) {
            Err(TransportError::NoAfCan) => {
                let e = TransportError::NoAfCan.to_string();
                assert!(e.starts_with("AF_CAN not supported by this kernel"), "{e}");
            }
            Err(e @ TransportError::NoInterface { .. }) => {
                assert!(e.to_string().contains("rtvirt-nonexistent0"), "{e}");
            }
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("an interface named rtvirt-nonexistent0 exists?"),
        }
    }

    #[test]
    fn error_frames_are_named() {
        // CAN_ERR_BUSOFF (0x40) and CAN_ERR_CRTL (0x04) with data[1] = CAN_ERR_CRTL_RX_PASSIVE.
        let f =
            socketcan::CanErrorFrame::new_error(0x40 | 0x04, &[0, 0x10, 0, 0, 0, 0, 0, 0]).unwrap();
        let s = describe_error_frame(&f);
        assert!(s.contains("bus off"), "{s}");
        assert!(s.contains("passive"), "{s}");
    }

    /// The bytes of `struct can_frame` / `struct canfd_frame` as the kernel lays them out.
    #[test]
    fn frame_bytes_are_the_kernel_structs() {
        use socketcan::id::FdFlags;
        use socketcan::{CanDataFrame, CanFdFrame, CanRemoteFrame, ExtendedId, StandardId};
        let mut b = [0u8; 72];
        let f = CanAnyFrame::Normal(
            CanDataFrame::new(StandardId::new(0x123).unwrap(), &[1, 2, 3]).unwrap(),
        );
        assert_eq!(frame_bytes(&f, &mut b), 16);
        assert_eq!(
            b[..16],
            [0x23, 0x01, 0, 0, 3, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0, 0]
        );
        let e = CanAnyFrame::Normal(
            CanDataFrame::new(ExtendedId::new(0x18FF5021).unwrap(), &[9]).unwrap(),
        );
        frame_bytes(&e, &mut b);
        assert_eq!(
            u32::from_ne_bytes(b[..4].try_into().unwrap()),
            0x18FF5021 | libc::CAN_EFF_FLAG
        );
        let r = CanAnyFrame::Remote(
            CanRemoteFrame::new_remote(StandardId::new(0x7FF).unwrap(), 4).unwrap(),
        );
        frame_bytes(&r, &mut b);
        assert_eq!(
            u32::from_ne_bytes(b[..4].try_into().unwrap()),
            0x7FF | libc::CAN_RTR_FLAG
        );
        assert_eq!(b[4], 4);
        let fd = CanAnyFrame::Fd(
            CanFdFrame::with_flags(StandardId::new(0x10).unwrap(), &[0xAA; 12], FdFlags::BRS)
                .unwrap(),
        );
        assert_eq!(frame_bytes(&fd, &mut b), 72);
        assert_eq!(
            (b[4], b[5] & 0x01, b[8], b[19], b[20]),
            (12, 0x01, 0xAA, 0xAA, 0)
        );
    }

    /// What `frame_bytes` writes, `frame_from_bytes` reads back: data frames (standard,
    /// extended), a remote frame's DLC, an error frame, an FD frame's flags and 64 bytes.
    #[test]
    fn frames_read_back_from_the_kernel_structs() {
        use socketcan::id::FdFlags;
        use socketcan::{
            CanDataFrame, CanErrorFrame, CanFdFrame, CanRemoteFrame, ExtendedId, StandardId,
        };
        let frames = [
            CanAnyFrame::Normal(
                CanDataFrame::new(StandardId::new(0x123).unwrap(), &[1, 2, 3]).unwrap(),
            ),
            CanAnyFrame::Normal(
                CanDataFrame::new(ExtendedId::new(0x18FF5021).unwrap(), &[9; 8]).unwrap(),
            ),
            CanAnyFrame::Remote(
                CanRemoteFrame::new_remote(StandardId::new(0x7FF).unwrap(), 4).unwrap(),
            ),
            CanAnyFrame::Error(CanErrorFrame::new_error(0x004, &[0, 8, 0, 0, 0, 0, 0, 0]).unwrap()),
            CanAnyFrame::Fd(
                CanFdFrame::with_flags(
                    ExtendedId::new(0x1ABCDE).unwrap(),
                    &[0x5A; 64],
                    FdFlags::BRS,
                )
                .unwrap(),
            ),
        ];
        let (mut a, mut b) = ([0u8; 72], [0u8; 72]);
        for f in &frames {
            let n = frame_bytes(f, &mut a);
            let back = frame_from_bytes(&a[..n]).expect("a kernel struct");
            assert_eq!(
                std::mem::discriminant(f),
                std::mem::discriminant(&back),
                "{f:?} came back as {back:?}"
            );
            assert_eq!(frame_bytes(&back, &mut b), n);
            assert_eq!(a[..n], b[..n], "{f:?} came back as {back:?}");
        }
        assert!(frame_from_bytes(&a[..15]).is_none());
        assert!(frame_from_bytes(&a[..3]).is_none());
    }

    #[test]
    fn a_batch_holds_64_frames() {
        let f = CanAnyFrame::Normal(
            socketcan::CanDataFrame::new(socketcan::StandardId::new(1).unwrap(), &[0]).unwrap(),
        );
        let mut b = TxBatch::default();
        for i in 0..BATCH {
            assert!(b.push(&f, i));
        }
        assert!(!b.push(&f, 99));
        assert_eq!(b.len(), BATCH);
    }
}
